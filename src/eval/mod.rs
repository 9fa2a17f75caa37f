//! `cobuy eval`: recommendation quality on real orders, against strong simple baselines, with
//! the ranking code the server runs (`rank::recommend_with` on a model built by
//! `build::model_from_log` from the training part of the same log).
//!
//! Protocols (see `PRODUCT.md` and README "Quality"):
//! - **next basket** (Li et al., "A Next Basket Recommendation Reality Check", TOIS 2023): items
//!   in fewer than T baskets dropped, users with 3..=50 baskets, the last basket the target,
//!   users split 72/8/20 train/validation/test by a seeded shuffle; cobuy answers as the HOME
//!   surface for the customer at the target's time;
//! - **second purchase**: users with at least two baskets; validation and test users' first
//!   basket only is known, the second is the target; cobuy answers as FOLLOW_UP_EMAIL for the
//!   customer, whose history is that first order (no context items: the email is sent days
//!   after delivery, and context items are never returned, which would hide every repeat);
//! - **bought together**: test users are held out of training whole; each of their baskets with
//!   2+ items (a seeded sample of `bt_max_cases` per fold when there are more) loses one random
//!   item, ranked from the rest by the `BoughtTogether` RPC's ranking; reported also where the
//!   held-out item has few training orders, and where every context item has.
//!
//! Weights are tuned on validation users only ([`tune`]); the test users of each fold score
//! every method. Folds differ by the split seed.

pub mod baselines;
pub mod dataset;
pub mod metrics;
pub mod report;
pub mod tune;

use std::collections::BTreeMap;
use std::time::Instant;

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::build::model_from_log;
use crate::config::BuildConfig;
use crate::ids::ItemIdx;
use crate::ingest::{CatalogEntry, OrderLog};
use crate::model::similar::SimilarIndex;
use crate::model::{Model, ModelData, NONE};
use crate::progress::{Progress, StageClock};
use crate::rank::blend::bought_together_with_similar;
use crate::rank::request::{
    ContextEntry, FilterSpec, MAX_CONTEXT_ITEMS, PurchasedPolicy, RecommendQuery, Surface,
};
use crate::rank::{Blend, recommend_with};
use baselines::{CooccurrenceCount, TifuKnn, TifuParams};
use dataset::{Basket, UserBaskets};
use metrics::{BasketMeans, MeanStd, basket_scores, reciprocal_rank};

/// Cut-offs of the basket metrics; the longest list ranked is the largest.
pub const KS: [usize; 2] = [10, 20];
const MAX_K: usize = 20;
/// Cut-off of the bought-together metrics.
const BT_K: usize = 10;

/// The protocols, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    NextBasket,
    SecondPurchase,
    BoughtTogether,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [
        Protocol::NextBasket,
        Protocol::SecondPurchase,
        Protocol::BoughtTogether,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Protocol::NextBasket => "next basket",
            Protocol::SecondPurchase => "second purchase",
            Protocol::BoughtTogether => "bought together",
        }
    }

    /// The metrics cobuy must win on.
    pub fn headline(self) -> &'static [&'static str] {
        match self {
            Protocol::NextBasket | Protocol::SecondPurchase => &["recall@10", "ndcg@10"],
            Protocol::BoughtTogether => &["hit@10"],
        }
    }
}

/// What `cobuy eval` runs.
#[derive(Debug, Clone, Serialize)]
pub struct EvalConfig {
    pub protocols: Vec<Protocol>,
    pub folds: usize,
    /// Fold `f` splits users with seed `seed + f`.
    pub seed: u64,
    /// T: items found in fewer baskets are dropped (next basket and second purchase).
    pub min_item_baskets: u32,
    pub min_user_baskets: usize,
    pub max_user_baskets: usize,
    pub tifu: TifuParams,
    /// Bought-together items with at most this many training orders count as "few orders".
    pub few_orders: u32,
    /// Bought together: at most this many test baskets per fold (a seeded sample).
    pub bt_max_cases: usize,
    /// Tune the surface's weights on validation users (otherwise use the configured ones).
    pub tune: bool,
    /// Also score cobuy with its embedding signals on, and the explore shelves (basket
    /// protocols), beside the same ranking without them.
    pub ablation: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            protocols: Protocol::ALL.to_vec(),
            folds: 5,
            seed: 2023,
            min_item_baskets: 17,
            min_user_baskets: 3,
            max_user_baskets: 50,
            tifu: TifuParams::default(),
            few_orders: 20,
            bt_max_cases: 10_000,
            tune: true,
            ablation: true,
        }
    }
}

/// One method's results over the folds.
#[derive(Debug, Clone, Serialize)]
pub struct MethodResult {
    pub method: String,
    pub metrics: BTreeMap<String, MeanStd>,
    pub per_fold: Vec<BTreeMap<String, f64>>,
    /// Mean Recall@K over folds for K = 1..=20 (basket protocols).
    pub recall_curve: Vec<f64>,
    /// Hit rate of target items at K = 10 by top-level category: (category, hits, targets),
    /// summed over folds.
    pub category_hits: Vec<(String, u64, u64)>,
}

/// cobuy against the best baseline on one metric.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub metric: String,
    pub best_baseline: String,
    pub cobuy: MeanStd,
    pub baseline: MeanStd,
    /// `(cobuy − baseline) / max(std_cobuy, std_baseline)`: the win against the spread of
    /// each method's score over folds (which mostly reflects which users a fold tests).
    pub margin_in_std: f64,
    /// Per fold `cobuy − baseline` on the same test users: mean and std over folds.
    pub paired_difference: MeanStd,
    /// `paired_difference.mean / paired_difference.std`: how many of its own fold-to-fold
    /// standard deviations the win is (the paired test's statistic, before `√folds`).
    pub paired_margin_in_std: f64,
}

/// One protocol's results.
#[derive(Debug, Clone, Serialize)]
pub struct ProtocolResult {
    pub protocol: Protocol,
    /// Users (or test baskets per fold, for bought together) after the filters.
    pub users: usize,
    pub test_cases_per_fold: Vec<usize>,
    pub validation_cases_per_fold: Vec<usize>,
    pub methods: Vec<MethodResult>,
    /// The weights cobuy ranked the test users with, per fold.
    pub blends: Vec<Blend>,
    pub surface: Option<&'static str>,
    pub comparisons: Vec<Comparison>,
    pub seconds: f64,
}

/// Everything `cobuy eval` measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub dataset: String,
    pub config: EvalConfig,
    pub protocols: Vec<ProtocolResult>,
}

/// The method names, as reported.
pub const COBUY: &str = "cobuy";
pub const COBUY_UNTUNED: &str = "cobuy (configured weights)";
/// cobuy with the embedding signals that are off by default on, on the fold's model with thin
/// lists backfilled from embedding neighbours: cobuy's tuned weights plus the customer-vector
/// explore signal, its weight tuned from 0.1 on validation users (basket protocols), or the
/// context-centroid neighbours at weight 0.1 (bought together).
pub const COBUY_WITH_EMBEDDINGS: &str = "cobuy + embedding signals";
/// cobuy (with the same weights, on the basket protocols) on the fold's model without
/// backfilled lists: the ranking without embeddings, against which the backfill the build does
/// by default is measured.
pub const COBUY_WITHOUT_EMBEDDINGS: &str = "cobuy without embeddings";
/// cobuy's list with every previously bought item excluded (`PurchasedPolicy::ExcludeAll`): the
/// explore shelf of the surface, where only new items compete (basket protocols).
pub const COBUY_EXPLORE: &str = "cobuy explore shelf";
/// [`COBUY_EXPLORE`] with the customer-vector signal at a weight tuned from 0.1 on the
/// validation users' explore shelves.
pub const COBUY_EXPLORE_WITH_EMBEDDINGS: &str = "cobuy explore shelf + customer vector";
/// Starting weight of the explore signal in the embedding variant.
const HISTORY_SIMILAR_START: f32 = 0.1;
/// Context-centroid neighbours' weight (against 1 for co-occurrence) in the embedding variant.
const CONTEXT_SIMILAR_WEIGHT: f32 = 0.1;
pub const G_TOP_FREQ: &str = "G-TopFreq";
pub const P_TOP_FREQ: &str = "P-TopFreq";
pub const GP_TOP_FREQ: &str = "GP-TopFreq";
pub const TIFU_KNN: &str = "TIFU-KNN";
pub const COOCCURRENCE: &str = "co-occurrence count";

/// Runs the configured protocols on a cleaned log.
pub fn run(
    dataset: &str,
    log: &OrderLog,
    catalog: &[Option<CatalogEntry>],
    build: &BuildConfig,
    cfg: &EvalConfig,
    progress: &Progress,
) -> EvalReport {
    let protocols = cfg
        .protocols
        .iter()
        .map(|&p| {
            let span = tracing::info_span!("eval", protocol = p.title());
            let _entered = span.enter();
            let started = Instant::now();
            let mut result = match p {
                Protocol::NextBasket | Protocol::SecondPurchase => {
                    basket_protocol(p, log, catalog, build, cfg, progress)
                }
                Protocol::BoughtTogether => bought_together(log, catalog, build, cfg, progress),
            };
            result.seconds = started.elapsed().as_secs_f64();
            result.comparisons = compare(&result);
            tracing::info!(seconds = result.seconds, "protocol done");
            result
        })
        .collect();
    EvalReport {
        dataset: dataset.to_owned(),
        config: cfg.clone(),
        protocols,
    }
}

/// One user to predict: what is known and what is to be found.
struct Case<'a> {
    customer: &'a str,
    history: Vec<&'a [u32]>,
    /// Items bought before the target, sorted.
    bought: Vec<u32>,
    target: &'a [u32],
    time: i64,
}

impl<'a> Case<'a> {
    fn new(
        log: &'a OrderLog,
        user: &'a UserBaskets,
        known: &'a [Basket],
        target: &'a Basket,
    ) -> Self {
        let history: Vec<&[u32]> = known.iter().map(|b| b.items.as_slice()).collect();
        let mut bought: Vec<u32> = history.iter().flat_map(|b| b.iter().copied()).collect();
        bought.sort_unstable();
        bought.dedup();
        Case {
            customer: log.customers.name(user.customer),
            history,
            bought,
            target: &target.items,
            time: target.time,
        }
    }
}

/// Per-fold scores of one method.
#[derive(Debug, Default)]
struct FoldScores {
    metrics: BTreeMap<String, f64>,
    curve: Vec<f64>,
    category: FxHashMap<u32, (u64, u64)>,
}

fn basket_protocol(
    protocol: Protocol,
    log: &OrderLog,
    catalog: &[Option<CatalogEntry>],
    build: &BuildConfig,
    cfg: &EvalConfig,
    progress: &Progress,
) -> ProtocolResult {
    let mut users = dataset::user_baskets(log);
    let kept = dataset::drop_rare_items(&mut users, log.items.len(), cfg.min_item_baskets);
    let (min, max) = match protocol {
        Protocol::NextBasket => (cfg.min_user_baskets, cfg.max_user_baskets),
        _ => (2, usize::MAX),
    };
    dataset::keep_users(&mut users, min, max);
    let surface = match protocol {
        Protocol::NextBasket => Surface::Home,
        _ => Surface::FollowUpEmail,
    };
    let configured = build.blend.get(surface);
    let tuned_names: &[&str] = &[
        "like_customers",
        "like_customers_repeat",
        "repeat",
        "buy_again",
        "history_next_order",
        "history_bought_together",
        "popular",
    ];
    let bar = progress.stage(protocol.title(), cfg.folds as u64);
    let mut result = empty_result(protocol, users.len(), Some(surface.config_name()));
    let mut folds: BTreeMap<&str, Vec<FoldScores>> = BTreeMap::new();
    for fold in 0..cfg.folds {
        let split = dataset::split_users(users.len(), cfg.seed + fold as u64);
        let mut role = vec![Role::Train; users.len()];
        split
            .validation
            .iter()
            .for_each(|&u| role[u] = Role::Validation);
        split.test.iter().for_each(|&u| role[u] = Role::Test);
        // Known baskets: all of a training user's; a held-out user's up to the target.
        let known = |u: usize| -> &[Basket] {
            let b = &users[u].baskets;
            match (role[u], protocol) {
                (Role::Train, _) => b,
                (_, Protocol::NextBasket) => &b[..b.len() - 1],
                _ => &b[..1],
            }
        };
        let target_of = |u: usize| -> &Basket {
            let b = &users[u].baskets;
            match protocol {
                Protocol::NextBasket => &b[b.len() - 1],
                _ => &b[1],
            }
        };
        let train_log = dataset::training_log(
            log,
            (0..users.len()).flat_map(|u| known(u).iter()),
            &kept,
            false,
        );
        let (base, backfilled) = fold_models(fold, &train_log, catalog, build, cfg.ablation);
        let model = served_model(&base, backfilled.as_ref(), build);
        let cases = |ids: &[usize]| -> Vec<Case<'_>> {
            ids.iter()
                .map(|&u| Case::new(log, &users[u], known(u), target_of(u)))
                .collect()
        };
        let validation = cases(&split.validation);
        let test = cases(&split.test);
        let global = baselines::global_top(
            split
                .train
                .iter()
                .flat_map(|&u| users[u].baskets.iter().map(|b| &b.items)),
            log.items.len(),
        );
        let tifu = TifuKnn::new(
            split
                .train
                .iter()
                .map(|&u| {
                    let h: Vec<&[u32]> = users[u]
                        .baskets
                        .iter()
                        .map(|b| b.items.as_slice())
                        .collect();
                    baselines::tifu_vector(&h, &cfg.tifu)
                })
                .collect(),
            cfg.tifu,
        );
        let include = PurchasedPolicy::Include;
        let cobuy = |blend: &Blend, c: &Case<'_>| cobuy_list(model, surface, include, blend, c);
        let tuned = |model: &Model,
                     purchased: PurchasedPolicy,
                     start: Blend,
                     names: &[&str],
                     what: &str|
         -> Blend {
            if !cfg.tune {
                return start;
            }
            let (blend, score) = tune::bagged_coordinate_ascent(start, names, |b| {
                per_user_objective(&validation, |c| cobuy_list(model, surface, purchased, b, c))
            });
            tracing::info!(
                fold,
                model = what,
                validation_objective = score,
                ?blend,
                "weights tuned on validation users"
            );
            blend
        };
        let blend = tuned(model, include, configured, tuned_names, "built-in signals");
        let p = cfg.tifu;
        let mut add = |name: &'static str, scores: FoldScores| {
            folds.entry(name).or_default().push(scores);
        };
        add(
            G_TOP_FREQ,
            score_cases(&test, |_| baselines::g_top_freq(&global, MAX_K), model),
        );
        add(
            P_TOP_FREQ,
            score_cases(&test, |c| baselines::p_top_freq(&c.history, MAX_K), model),
        );
        add(
            GP_TOP_FREQ,
            score_cases(
                &test,
                |c| baselines::gp_top_freq(&c.history, &global, MAX_K),
                model,
            ),
        );
        add(
            TIFU_KNN,
            score_cases(
                &test,
                |c| tifu.recommend(&baselines::tifu_vector(&c.history, &p), MAX_K),
                model,
            ),
        );
        if cfg.tune {
            add(
                COBUY_UNTUNED,
                score_cases(&test, |c| cobuy(&configured, c), model),
            );
        }
        let scores = score_cases(&test, |c| cobuy(&blend, c), model);
        tracing::info!(
            fold,
            recall_10 = scores.metrics["recall@10"],
            ndcg_10 = scores.metrics["ndcg@10"],
            "fold scored"
        );
        add(COBUY, scores);
        if cfg.ablation {
            // The same weights on the model without backfilled lists: cobuy without embeddings.
            add(
                COBUY_WITHOUT_EMBEDDINGS,
                score_cases(
                    &test,
                    |c| cobuy_list(&base, surface, include, &blend, c),
                    &base,
                ),
            );
            // cobuy's tuned weights plus the customer-vector signal, its weight tuned on the
            // validation users from a small start: what adding that signal gains.
            let backfilled = backfilled.as_ref().unwrap_or(model);
            let start = Blend {
                history_similar: HISTORY_SIMILAR_START,
                ..blend
            };
            let with_embeddings = tuned(
                backfilled,
                include,
                start,
                &["history_similar"],
                "with embedding signals",
            );
            add(
                COBUY_WITH_EMBEDDINGS,
                score_cases(
                    &test,
                    |c| cobuy_list(backfilled, surface, include, &with_embeddings, c),
                    model,
                ),
            );
            // The explore shelf: the same surface with every bought item excluded, ranked by
            // the tuned weights alone, then with the customer-vector signal added at a weight
            // tuned on the validation users' shelves.
            let explore = PurchasedPolicy::ExcludeAll;
            add(
                COBUY_EXPLORE,
                score_cases(
                    &test,
                    |c| cobuy_list(model, surface, explore, &blend, c),
                    model,
                ),
            );
            let start = Blend {
                history_similar: HISTORY_SIMILAR_START,
                ..blend
            };
            let with_vector = tuned(
                model,
                explore,
                start,
                &["history_similar"],
                "explore shelf with the customer vector",
            );
            add(
                COBUY_EXPLORE_WITH_EMBEDDINGS,
                score_cases(
                    &test,
                    |c| cobuy_list(model, surface, explore, &with_vector, c),
                    model,
                ),
            );
        }
        result.blends.push(blend);
        result.test_cases_per_fold.push(test.len());
        result.validation_cases_per_fold.push(validation.len());
        if fold == 0 {
            result.category_names = category_names(model);
        }
        bar.add(1);
    }
    bar.finish(cfg.folds as u64);
    result.methods = summarise(folds, &result.category_names);
    result.into_public()
}

/// The models of one fold's training data: built without backfilled lists, and the same with
/// thin lists backfilled from embedding neighbours when the build configuration or the ablation
/// rows need it (the backfill is applied to the built model, which gives what a build with
/// `backfill_min_list` set gives, without building the rest twice). Similar items come from an
/// exact scan: eval measures the ranking, not the approximation of the HNSW graph (whose recall
/// `cobuy inspect --check-recall` measures), and building a graph per fold would cost more than
/// the scans.
fn fold_models(
    fold: usize,
    train_log: &OrderLog,
    catalog: &[Option<CatalogEntry>],
    build: &BuildConfig,
    ablation: bool,
) -> (Model, Option<Model>) {
    let without = BuildConfig {
        backfill_min_list: 0,
        ..build.clone()
    };
    let data = model_from_log(
        train_log,
        catalog,
        &without,
        &mut StageClock::default(),
        &Progress::hidden(),
    );
    let index = SimilarIndex::exact_for(&data.embeddings);
    let base = Model::with_index(format!("eval-fold-{fold}"), data, index);
    let min_list = match build.backfill_min_list {
        // The ablation rows still need a backfilled model: the build's default threshold.
        0 => BuildConfig::default().backfill_min_list,
        configured => configured,
    };
    let backfilled =
        (build.backfill_min_list > 0 || ablation).then(|| backfilled_model(&base, min_list));
    (base, backfilled)
}

/// The model the configured build serves: the backfilled one when the configuration backfills.
fn served_model<'m>(
    base: &'m Model,
    backfilled: Option<&'m Model>,
    build: &BuildConfig,
) -> &'m Model {
    match backfilled {
        Some(model) if build.backfill_min_list > 0 => model,
        _ => base,
    }
}

/// `model` with lists shorter than `min_list` backfilled from embedding neighbours.
fn backfilled_model(model: &Model, min_list: usize) -> Model {
    let cfg = BuildConfig {
        backfill_min_list: min_list,
        ..model.data.config.clone()
    };
    let (bought_together, next_order) = crate::build::backfill_thin_lists(
        &model.data.embeddings,
        &model.data.similar_items,
        &model.data.bought_together,
        &model.data.next_order,
        &model.data.items.order_count,
        &cfg,
    );
    let data = ModelData {
        config: cfg,
        bought_together,
        next_order,
        ..model.data.clone()
    };
    let index = SimilarIndex::exact_for(&data.embeddings);
    Model::with_index(format!("{}-backfilled", model.version), data, index)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Train,
    Validation,
    Test,
}

/// The request a storefront sends for the slot: previously bought items allowed
/// (`PurchasedPolicy::Include`), or never-bought items only for an explore shelf
/// (`PurchasedPolicy::ExcludeAll`).
fn cobuy_list(
    model: &Model,
    surface: Surface,
    purchased: PurchasedPolicy,
    blend: &Blend,
    case: &Case<'_>,
) -> Vec<u32> {
    let query = RecommendQuery {
        customer_id: Some(case.customer.to_owned()),
        surface,
        context: Vec::new(),
        k: MAX_K,
        filters: FilterSpec {
            purchased,
            ..FilterSpec::default()
        },
        as_of: Some(case.time),
    };
    recommend_with(model, &query, blend)
        .items
        .into_iter()
        .map(|r| r.item.0)
        .collect()
}

fn context_entries(model: &Model, items: &[u32]) -> Vec<ContextEntry> {
    items
        .iter()
        .take(MAX_CONTEXT_ITEMS)
        .map(|&i| ContextEntry {
            item_id: model.item_id(ItemIdx(i)).to_owned(),
            quantity: 1.0,
            price: None,
        })
        .collect()
}

/// The tuning objective, per case: Recall@10 + NDCG@10 of the case's list.
fn per_user_objective(cases: &[Case<'_>], rank: impl Fn(&Case<'_>) -> Vec<u32> + Sync) -> Vec<f64> {
    cases
        .par_iter()
        .map(|case| {
            let s = basket_scores(&rank(case), case.target, 10, |_| false);
            s.recall + s.ndcg
        })
        .collect()
}

/// Scores every case's list (computed in parallel) at each K.
fn score_cases(
    cases: &[Case<'_>],
    rank: impl Fn(&Case<'_>) -> Vec<u32> + Sync,
    model: &Model,
) -> FoldScores {
    let lists: Vec<Vec<u32>> = cases.par_iter().map(&rank).collect();
    let mut out = FoldScores {
        curve: vec![0.0; MAX_K],
        ..Default::default()
    };
    for k in KS {
        let mut means = BasketMeans::default();
        for (case, list) in cases.iter().zip(&lists) {
            let bought = |i: u32| case.bought.binary_search(&i).is_ok();
            means.add(&basket_scores(list, case.target, k, bought));
        }
        out.metrics.insert(format!("recall@{k}"), means.recall());
        out.metrics.insert(format!("ndcg@{k}"), means.ndcg());
        out.metrics.insert(format!("phr@{k}"), means.phr());
        out.metrics
            .insert(format!("recall_repeat@{k}"), means.recall_repeat());
        out.metrics
            .insert(format!("recall_explore@{k}"), means.recall_explore());
        out.metrics
            .insert(format!("explore_hit_share@{k}"), means.explore_hit_share());
    }
    for (case, list) in cases.iter().zip(&lists) {
        for k in 1..=MAX_K {
            let hits = list
                .iter()
                .take(k)
                .filter(|i| case.target.contains(i))
                .count();
            out.curve[k - 1] += hits as f64 / case.target.len().max(1) as f64 / cases.len() as f64;
        }
        for &item in case.target {
            let entry = out.category.entry(top_category(model, item)).or_default();
            entry.1 += 1;
            if list.iter().take(10).any(|&i| i == item) {
                entry.0 += 1;
            }
        }
    }
    out
}

fn top_category(model: &Model, item: u32) -> u32 {
    let leaf = model
        .data
        .items
        .category
        .get(item as usize)
        .copied()
        .unwrap_or(NONE);
    model.data.categories.lineage(leaf).last().unwrap_or(NONE)
}

fn category_names(model: &Model) -> FxHashMap<u32, String> {
    let mut names: FxHashMap<u32, String> = model
        .data
        .categories
        .paths
        .iter()
        .enumerate()
        .map(|(c, p)| (c as u32, p.clone()))
        .collect();
    names.insert(NONE, "(no category)".into());
    names
}

fn bought_together(
    log: &OrderLog,
    catalog: &[Option<CatalogEntry>],
    build: &BuildConfig,
    cfg: &EvalConfig,
    progress: &Progress,
) -> ProtocolResult {
    let users = dataset::user_baskets(log);
    let every_item = vec![true; log.items.len()];
    let bar = progress.stage("bought together", cfg.folds as u64);
    let mut result = empty_result(Protocol::BoughtTogether, users.len(), None);
    let mut folds: BTreeMap<&str, Vec<FoldScores>> = BTreeMap::new();
    for fold in 0..cfg.folds {
        let seed = cfg.seed + fold as u64;
        let split = dataset::split_users(users.len(), seed);
        // Test users are held out whole: every basket of theirs is a test basket.
        let mut held_out = vec![false; users.len()];
        split.test.iter().for_each(|&u| held_out[u] = true);
        let train_log = dataset::training_log(
            log,
            (0..users.len())
                .filter(|&u| !held_out[u])
                .flat_map(|u| users[u].baskets.iter()),
            &every_item,
            true,
        );
        let (base, backfilled) = fold_models(fold, &train_log, catalog, build, cfg.ablation);
        let model = served_model(&base, backfilled.as_ref(), build);
        let ranges = dataset::order_line_ranges(&train_log);
        let train_baskets: Vec<Vec<u32>> = ranges
            .iter()
            .map(|r| train_log.lines[r.clone()].iter().map(|l| l.item).collect())
            .collect();
        let mut counts = CooccurrenceCount::new(train_baskets, log.items.len());
        let cases = dataset::bought_together_cases(
            &users,
            &split.test,
            cfg.bt_max_cases,
            MAX_CONTEXT_ITEMS,
            seed,
        );
        counts.memoize(
            cases
                .iter()
                .flat_map(|(context, _)| context.iter().copied()),
        );
        let few = |item: u32| model.data.items.order_count[item as usize] <= cfg.few_orders;
        let mut score = |name: &'static str, lists: Vec<Vec<u32>>| {
            let (mut hit, mut rr, mut n) = (0.0, 0.0, 0usize);
            let (mut few_hit, mut few_rr, mut few_n) = (0.0, 0.0, 0usize);
            let (mut thin_hit, mut thin_n) = (0.0, 0usize);
            let mut category: FxHashMap<u32, (u64, u64)> = FxHashMap::default();
            for ((context, held), list) in cases.iter().zip(&lists) {
                let r = reciprocal_rank(list, *held);
                let h = if list.iter().take(BT_K).any(|i| i == held) {
                    1.0
                } else {
                    0.0
                };
                hit += h;
                rr += r;
                n += 1;
                if few(*held) {
                    few_hit += h;
                    few_rr += r;
                    few_n += 1;
                }
                if context.iter().all(|&i| few(i)) {
                    thin_hit += h;
                    thin_n += 1;
                }
                let entry = category.entry(top_category(model, *held)).or_default();
                entry.1 += 1;
                entry.0 += h as u64;
            }
            let mean = |s: f64, n: usize| if n == 0 { 0.0 } else { s / n as f64 };
            let metrics = BTreeMap::from([
                ("hit@10".to_owned(), mean(hit, n)),
                ("recall@10".to_owned(), mean(hit, n)),
                ("mrr".to_owned(), mean(rr, n)),
                ("hit@10 few orders".to_owned(), mean(few_hit, few_n)),
                ("mrr few orders".to_owned(), mean(few_rr, few_n)),
                ("few-order cases".to_owned(), few_n as f64),
                (
                    "hit@10 few-order context".to_owned(),
                    mean(thin_hit, thin_n),
                ),
                ("few-order context cases".to_owned(), thin_n as f64),
            ]);
            folds.entry(name).or_default().push(FoldScores {
                metrics,
                curve: Vec::new(),
                category,
            });
        };
        let cooc: Vec<Vec<u32>> = cases
            .par_iter()
            .map(|(c, _)| counts.recommend(c, BT_K))
            .collect();
        score(COOCCURRENCE, cooc);
        let ranked = |model: &Model, similar_weight: f32| -> Vec<Vec<u32>> {
            cases
                .par_iter()
                .map(|(c, _)| {
                    bought_together_with_similar(
                        model,
                        None,
                        context_entries(model, c),
                        BT_K,
                        FilterSpec::default(),
                        similar_weight,
                    )
                    .items
                    .into_iter()
                    .map(|r| r.item.0)
                    .collect()
                })
                .collect()
        };
        score(COBUY, ranked(model, 0.0));
        if cfg.ablation {
            score(COBUY_WITHOUT_EMBEDDINGS, ranked(&base, 0.0));
            let backfilled = backfilled.as_ref().unwrap_or(model);
            score(
                COBUY_WITH_EMBEDDINGS,
                ranked(backfilled, CONTEXT_SIMILAR_WEIGHT),
            );
        }
        result.test_cases_per_fold.push(cases.len());
        result.validation_cases_per_fold.push(0);
        if fold == 0 {
            result.category_names = category_names(model);
        }
        bar.add(1);
    }
    bar.finish(cfg.folds as u64);
    result.methods = summarise(folds, &result.category_names);
    result.into_public()
}

/// A result being filled, with the fold-0 category names for the per-category table.
struct Partial {
    protocol: Protocol,
    users: usize,
    surface: Option<&'static str>,
    test_cases_per_fold: Vec<usize>,
    validation_cases_per_fold: Vec<usize>,
    blends: Vec<Blend>,
    methods: Vec<MethodResult>,
    category_names: FxHashMap<u32, String>,
}

fn empty_result(protocol: Protocol, users: usize, surface: Option<&'static str>) -> Partial {
    Partial {
        protocol,
        users,
        surface,
        test_cases_per_fold: Vec::new(),
        validation_cases_per_fold: Vec::new(),
        blends: Vec::new(),
        methods: Vec::new(),
        category_names: FxHashMap::default(),
    }
}

impl Partial {
    fn into_public(self) -> ProtocolResult {
        ProtocolResult {
            protocol: self.protocol,
            users: self.users,
            test_cases_per_fold: self.test_cases_per_fold,
            validation_cases_per_fold: self.validation_cases_per_fold,
            methods: self.methods,
            blends: self.blends,
            surface: self.surface,
            comparisons: Vec::new(),
            seconds: 0.0,
        }
    }
}

/// The baselines, in report order.
const BASELINES: [&str; 5] = [G_TOP_FREQ, P_TOP_FREQ, GP_TOP_FREQ, TIFU_KNN, COOCCURRENCE];
/// cobuy's rows, in report order after the baselines (cobuy itself last).
const COBUY_ROWS: [&str; 6] = [
    COBUY_EXPLORE,
    COBUY_EXPLORE_WITH_EMBEDDINGS,
    COBUY_UNTUNED,
    COBUY_WITHOUT_EMBEDDINGS,
    COBUY_WITH_EMBEDDINGS,
    COBUY,
];

/// A method's place in reports: baselines first, cobuy last.
fn report_position(method: &str) -> usize {
    let position = |rows: &[&str]| rows.iter().position(|&r| r == method);
    position(&BASELINES)
        .or_else(|| position(&COBUY_ROWS).map(|p| BASELINES.len() + p))
        .unwrap_or(BASELINES.len() + COBUY_ROWS.len())
}

fn summarise(
    folds: BTreeMap<&str, Vec<FoldScores>>,
    names: &FxHashMap<u32, String>,
) -> Vec<MethodResult> {
    let mut methods: Vec<MethodResult> = folds
        .into_iter()
        .map(|(method, scores)| {
            let keys: Vec<String> = scores[0].metrics.keys().cloned().collect();
            let metrics = keys
                .iter()
                .map(|k| {
                    let values: Vec<f64> = scores.iter().map(|s| s.metrics[k]).collect();
                    (k.clone(), MeanStd::of(&values))
                })
                .collect();
            let n = scores.len() as f64;
            let curve_len = scores[0].curve.len();
            let recall_curve = (0..curve_len)
                .map(|k| scores.iter().map(|s| s.curve[k]).sum::<f64>() / n)
                .collect();
            let mut category: FxHashMap<u32, (u64, u64)> = FxHashMap::default();
            for s in &scores {
                for (&c, &(h, t)) in &s.category {
                    let e = category.entry(c).or_default();
                    e.0 += h;
                    e.1 += t;
                }
            }
            let mut category_hits: Vec<(String, u64, u64)> = category
                .into_iter()
                .map(|(c, (h, t))| {
                    let name = names.get(&c).cloned().unwrap_or_else(|| format!("#{c}"));
                    (name, h, t)
                })
                .collect();
            category_hits.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
            MethodResult {
                method: method.to_owned(),
                metrics,
                per_fold: scores.into_iter().map(|s| s.metrics).collect(),
                recall_curve,
                category_hits,
            }
        })
        .collect();
    methods.sort_by_key(|m| report_position(&m.method));
    methods
}

fn is_baseline(method: &str) -> bool {
    BASELINES.contains(&method)
}

fn compare(result: &ProtocolResult) -> Vec<Comparison> {
    let Some(ours) = result.methods.iter().find(|m| m.method == COBUY) else {
        return Vec::new();
    };
    result
        .protocol
        .headline()
        .iter()
        .filter_map(|&metric| {
            let best = result
                .methods
                .iter()
                .filter(|m| is_baseline(&m.method))
                .max_by(|a, b| a.metrics[metric].mean.total_cmp(&b.metrics[metric].mean))?;
            let (c, b) = (ours.metrics[metric], best.metrics[metric]);
            let differences: Vec<f64> = ours
                .per_fold
                .iter()
                .zip(&best.per_fold)
                .map(|(o, b)| o[metric] - b[metric])
                .collect();
            let paired = MeanStd::of(&differences);
            Some(Comparison {
                metric: metric.to_owned(),
                best_baseline: best.method.clone(),
                cobuy: c,
                baseline: b,
                margin_in_std: margin(c.mean - b.mean, c.std.max(b.std)),
                paired_difference: paired,
                paired_margin_in_std: margin(paired.mean, paired.std),
            })
        })
        .collect()
}

/// `difference / spread`, signed infinity when there is no spread (one fold).
fn margin(difference: f64, spread: f64) -> f64 {
    if spread > 0.0 {
        difference / spread
    } else if difference > 0.0 {
        f64::INFINITY
    } else {
        f64::NEG_INFINITY
    }
}

/// The baselines `method` does not beat on the protocol's headline metrics (mean over folds).
pub fn not_beaten(result: &ProtocolResult, baselines: &[String]) -> Vec<String> {
    let Some(ours) = result.methods.iter().find(|m| m.method == COBUY) else {
        return baselines.to_vec();
    };
    let mut failures = Vec::new();
    for name in baselines {
        let Some(base) = result.methods.iter().find(|m| &m.method == name) else {
            continue;
        };
        for &metric in result.protocol.headline() {
            if ours.metrics[metric].mean <= base.metrics[metric].mean {
                failures.push(format!(
                    "{}: {metric} {:.4} does not beat {name} {:.4}",
                    result.protocol.title(),
                    ours.metrics[metric].mean,
                    base.metrics[metric].mean
                ));
            }
        }
    }
    failures
}
