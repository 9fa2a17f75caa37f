//! The batch build: ingest → clean → index baskets → neighbours, history, popularity → a
//! [`ModelData`] ready to publish. Pure computation; writing to disk is `model::store`'s job.

pub mod baskets;
pub mod cooccur;
pub mod embed;
pub mod history;
mod items;
pub mod neighbours;
mod popularity;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::BuildConfig;
use crate::error::IngestError;
use crate::ids::ItemIdx;
use crate::ingest::{self, CatalogEntry, IngestOptions, IngestReport, OrderLog};
use crate::mapping::Mapping;
use crate::model::{Embeddings, ModelData, NeighbourLists, TimeSpan};
use crate::progress::{Progress, StageClock, StageTiming};
use baskets::Baskets;

/// What to build from.
#[derive(Debug, Clone)]
pub struct BuildInputs {
    pub orders: Vec<PathBuf>,
    pub catalog: Option<PathBuf>,
    pub mapping: Mapping,
    pub ingest: IngestOptions,
}

/// What the build did, for the manifest and the summary table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildReport {
    pub ingest: IngestReport,
    pub stages: Vec<StageTiming>,
    pub items: u64,
    pub customers: u64,
    pub orders: u64,
    pub bought_together_pairs: u64,
    pub next_order_pairs: u64,
    pub replenishable_items: u64,
}

/// Reads, cleans and models the inputs.
pub fn build(
    inputs: &BuildInputs,
    progress: &Progress,
) -> Result<(ModelData, BuildReport), IngestError> {
    let mut clock = StageClock::default();
    let mut report = BuildReport::default();
    let (log, catalog) = read_inputs(inputs, progress, &mut clock, &mut report.ingest)?;
    let data = model_from_log(&log, &catalog, &inputs.mapping.model, &mut clock, progress);
    report.stages = clock.timings;
    report.items = data.items.len() as u64;
    report.customers = data.customers.len() as u64;
    report.orders = data.total_orders as u64;
    report.bought_together_pairs = data.bought_together.entries.len() as u64;
    report.next_order_pairs = data.next_order.entries.len() as u64;
    report.replenishable_items = data.items.replenishable.iter().filter(|&&r| r).count() as u64;
    Ok((data, report))
}

/// Reads and cleans the order files and the catalog (joined by item id).
pub fn read_inputs(
    inputs: &BuildInputs,
    progress: &Progress,
    clock: &mut StageClock,
    report: &mut IngestReport,
) -> Result<(OrderLog, Vec<Option<CatalogEntry>>), IngestError> {
    let mut log = clock.run("ingest orders", || {
        ingest::read_orders(
            &inputs.orders,
            &inputs.mapping,
            inputs.ingest,
            progress,
            report,
        )
    })?;
    let catalog = match (&inputs.catalog, &inputs.mapping.catalog) {
        (Some(path), Some(columns)) => clock.run("ingest catalog", || {
            ingest::read_catalog(
                path,
                columns,
                &mut log.items,
                inputs.ingest,
                progress,
                report,
            )
        })?,
        (Some(path), None) => {
            return Err(IngestError::Mapping(crate::error::MappingError::Invalid(
                format!(
                    "--catalog {} given but the mapping has no [catalog] table",
                    path.display()
                ),
            )));
        }
        (None, _) => Vec::new(),
    };
    log.line_titles.resize(log.items.len(), None);
    Ok((log, catalog))
}

/// Embedding neighbours whose lists back a thin item's lists (30 measured better than 10 on
/// completejourney bought-together contexts of few-order items: README "Quality").
const BACKFILL_NEIGHBOURS: usize = 30;

/// The bought-together and next-order lists with every item that has a vector and fewer than
/// `cfg.backfill_min_list` entries in either list backed by its embedding neighbours' lists
/// ([`cooccur::backfill`]). An item's neighbours come from its similar-items list when that
/// holds enough of them (the same exact search, already done), from a search otherwise.
/// `order_count` holds the order counts the lists were scored with.
pub fn backfill_thin_lists(
    embeddings: &Embeddings,
    similar_items: &NeighbourLists,
    bought_together: &NeighbourLists,
    next_order: &NeighbourLists,
    order_count: &[u32],
    cfg: &BuildConfig,
) -> (NeighbourLists, NeighbourLists) {
    let thin: Vec<u32> = (0..embeddings.source.len() as u32)
        .filter(|&i| {
            embeddings.of(ItemIdx(i)).is_some()
                && (bought_together.len_of(ItemIdx(i)) < cfg.backfill_min_list
                    || next_order.len_of(ItemIdx(i)) < cfg.backfill_min_list)
        })
        .collect();
    let (listed, unlisted): (Vec<u32>, Vec<u32>) = thin
        .into_iter()
        .partition(|&i| similar_items.len_of(ItemIdx(i)) >= BACKFILL_NEIGHBOURS);
    let searched = embed::nearest_indexed(embeddings, &unlisted, BACKFILL_NEIGHBOURS);
    // Order does not matter: each thin item's list is filled on its own.
    let thin: Vec<(u32, Vec<(u32, f32)>)> = listed
        .into_iter()
        .map(|i| {
            let neighbours = similar_items
                .of(ItemIdx(i))
                .take(BACKFILL_NEIGHBOURS)
                .map(|n| (n.item.0, n.score))
                .collect();
            (i, neighbours)
        })
        .chain(unlisted.into_iter().zip(searched))
        .collect();
    let scale = cooccur::confidence_scale(order_count, cfg.alpha);
    (
        cooccur::backfill(bought_together, &thin, &scale, cfg.top_n),
        cooccur::backfill(next_order, &thin, &scale, cfg.top_n),
    )
}

/// Computes every model table from a cleaned log. Also used by `cobuy eval` on training splits,
/// so evaluation scores exactly what production builds.
pub fn model_from_log(
    log: &OrderLog,
    catalog: &[Option<CatalogEntry>],
    cfg: &BuildConfig,
    clock: &mut StageClock,
    progress: &Progress,
) -> ModelData {
    let time = TimeSpan {
        first_order: log.orders.iter().map(|o| o.timestamp).min().unwrap_or(0),
        last_order: log.orders.iter().map(|o| o.timestamp).max().unwrap_or(0),
        relative: log.relative_time,
    };
    let baskets = clock.run("index baskets", || Baskets::new(log));
    let counts = baskets.order_counts();
    let n_items = baskets.n_items() as u64;
    let bought_together = clock.run("bought together", || {
        let bar = progress.stage("bought together", n_items);
        let lists = cooccur::bought_together(&baskets, &counts, cfg, &bar);
        bar.finish(n_items);
        lists
    });
    let next_order = clock.run("next order", || {
        let bar = progress.stage("next order", n_items);
        let lists = cooccur::next_order(&baskets, &counts, cfg, &bar);
        bar.finish(n_items);
        lists
    });
    let history = clock.run("history", || {
        history::compute(log, &baskets, time.last_order, cfg)
    });
    let items = clock.run("items", || {
        items::compute(log, catalog, counts, &history.repurchase, cfg)
    });
    let mut history = history;
    let (due_offsets, due) = history::due_candidates(
        &history.customers,
        &history.repurchase,
        &items.items.replenishable,
    );
    history.customers.due_offsets = due_offsets;
    history.customers.due = due;
    let (offsets, entries) = clock.run("customer neighbours", || {
        neighbours::neighbour_items(&history.customers, items.items.len())
    });
    history.customers.neighbour_offsets = offsets;
    history.customers.neighbour_items = entries;
    let popularity = clock.run("popularity", || {
        popularity::compute(log, &items.items, &items.categories, time.last_order, cfg)
    });
    let embeddings = clock.run("embeddings", || {
        let bar = progress.stage("embeddings", n_items);
        let vectors = embed::compute(
            &baskets,
            &items.items.order_count,
            &items.items.category,
            &items.categories,
            cfg,
            &bar,
        );
        bar.finish(n_items);
        vectors
    });
    let similar_items = clock.run("similar items", || {
        // Exact lists cost `indexed²·dim`: beyond the graph threshold, requests search the
        // graph instead, and rare items (derived vectors) always do.
        let indexed: Vec<u32> = (0..embeddings.source.len() as u32)
            .filter(|&i| embeddings.indexed(ItemIdx(i)))
            .collect();
        let with_vector = if indexed.len() < cfg.hnsw_min_items {
            indexed
        } else {
            Vec::new()
        };
        let mut lists = vec![Vec::new(); embeddings.source.len()];
        for (item, neighbours) in
            with_vector
                .iter()
                .zip(embed::nearest_indexed(&embeddings, &with_vector, cfg.top_n))
        {
            lists[*item as usize] = neighbours.into_iter().map(|(j, s)| (j, s, 0)).collect();
        }
        NeighbourLists::from_lists(lists)
    });
    let (bought_together, next_order) = if cfg.backfill_min_list == 0 {
        (bought_together, next_order)
    } else {
        clock.run("backfill thin lists", || {
            backfill_thin_lists(
                &embeddings,
                &similar_items,
                &bought_together,
                &next_order,
                &items.items.order_count,
                cfg,
            )
        })
    };
    let mut repurchase = history.repurchase;
    repurchase.resize(items.items.len(), Default::default());
    ModelData {
        config: cfg.clone(),
        time,
        total_orders: baskets.n_orders() as u32,
        items: items.items,
        categories: items.categories,
        brands: items.brands,
        bought_together,
        next_order,
        repurchase,
        next_order_repeat_prior: history.next_order_repeat_prior,
        popularity,
        customers: history.customers,
        embeddings,
        similar_items,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ids::{Interner, ItemIdx};
    use crate::ingest::{OrderHeader, OrderLine};

    /// A log of `baskets` over items "0".."n", one customer per 3 orders, a day apart.
    fn log_from(baskets: &[Vec<u32>], n_items: u32) -> OrderLog {
        let mut log = OrderLog {
            items: Interner::from_names((0..n_items).map(|i| i.to_string()).collect()),
            customers: Interner::from_names(
                (0..baskets.len().div_ceil(3))
                    .map(|c| format!("c{c}"))
                    .collect(),
            ),
            ..Default::default()
        };
        for (o, basket) in baskets.iter().enumerate() {
            log.orders.push(OrderHeader {
                customer: (o / 3) as u32,
                timestamp: o as i64 * 86_400,
            });
            let mut items = basket.clone();
            items.sort_unstable();
            items.dedup();
            for item in items {
                log.lines.push(OrderLine {
                    order: o as u32,
                    item,
                    quantity: 1.0,
                    unit_price: 1.0,
                });
            }
        }
        log.line_titles = vec![None; n_items as usize];
        log
    }

    fn baskets_strategy() -> impl Strategy<Value = Vec<Vec<u32>>> {
        prop::collection::vec(prop::collection::vec(0u32..12, 1..6), 3..40)
    }

    proptest! {
        #[test]
        fn bought_together_scores_keep_their_invariants(baskets in baskets_strategy(), min_support in 1u32..3) {
            let log = log_from(&baskets, 12);
            // Observed co-occurrence only: backfilled entries (support 0) are tested apart.
            let cfg = BuildConfig { min_support, top_n: 1000, backfill_min_list: 0, ..BuildConfig::default() };
            let data = model_from_log(&log, &[], &cfg, &mut StageClock::default(), &Progress::hidden());
            let lists = &data.bought_together;
            for i in 0..12u32 {
                let neighbours: Vec<_> = lists.of(ItemIdx(i)).collect();
                prop_assert!(neighbours.windows(2).all(|w| w[0].score >= w[1].score), "sorted by score");
                for n in &neighbours {
                    prop_assert_ne!(n.item, ItemIdx(i), "no item is its own neighbour");
                    prop_assert!(n.support >= min_support, "support threshold respected");
                    let together = baskets.iter().filter(|b| b.contains(&i) && b.contains(&n.item.0)).count() as u32;
                    prop_assert_eq!(n.support, together, "support is the number of shared orders");
                    // Co-occurrence counts are symmetric: j lists i with the same support.
                    let back = lists.of(n.item).find(|m| m.item == ItemIdx(i));
                    prop_assert_eq!(back.map(|m| m.support), Some(n.support));
                }
            }
            for n in data.next_order.of(ItemIdx(0)) {
                prop_assert_ne!(n.item, ItemIdx(0));
                prop_assert!(n.support >= min_support);
            }
        }
    }

    #[test]
    fn top_n_truncates_and_sorts() {
        let baskets: Vec<Vec<u32>> = (0..10).map(|k| vec![0, 1 + k % 5]).collect();
        let log = log_from(&baskets, 6);
        let cfg = BuildConfig {
            top_n: 2,
            min_support: 1,
            backfill_min_list: 0,
            ..BuildConfig::default()
        };
        let data = model_from_log(
            &log,
            &[],
            &cfg,
            &mut StageClock::default(),
            &Progress::hidden(),
        );
        assert_eq!(data.bought_together.len_of(ItemIdx(0)), 2);
        assert_eq!(data.bought_together.len_of(ItemIdx(1)), 1);
    }

    #[test]
    fn a_huge_basket_cannot_dominate() {
        // Item 0 appears with item 1 in 5 small baskets, and with 2..=400 in one huge basket.
        let mut baskets: Vec<Vec<u32>> = (0..5).map(|_| vec![0, 1]).collect();
        baskets.push((0..400).collect());
        baskets.push(vec![2, 3]);
        let log = log_from(&baskets, 400);
        let cfg = BuildConfig {
            min_support: 1,
            top_n: 5,
            ..BuildConfig::default()
        };
        let data = model_from_log(
            &log,
            &[],
            &cfg,
            &mut StageClock::default(),
            &Progress::hidden(),
        );
        let top = data
            .bought_together
            .of(ItemIdx(0))
            .next()
            .expect("neighbour");
        assert_eq!(top.item, ItemIdx(1));
    }

    #[test]
    fn a_default_build_backfills_an_item_without_co_purchases_below_observed_entries() {
        // Items 0..4 are bought together again and again; item 5 once each with 0, 1 and 2,
        // so no pair of it reaches the support of 2 and its own list is empty.
        let mut baskets: Vec<Vec<u32>> = Vec::new();
        for _ in 0..6 {
            baskets.extend([
                vec![0, 1, 2],
                vec![1, 2, 3],
                vec![0, 2, 3],
                vec![0, 1, 3, 4],
            ]);
        }
        baskets.extend([vec![5, 0], vec![5, 1], vec![5, 2]]);
        let log = log_from(&baskets, 6);
        let build = |cfg: &BuildConfig| {
            model_from_log(
                &log,
                &[],
                cfg,
                &mut StageClock::default(),
                &Progress::hidden(),
            )
        };
        // A catalogue of six items has room for a few dimensions only.
        let default = BuildConfig {
            embedding_dim: 4,
            ..BuildConfig::default()
        };
        let without = build(&BuildConfig {
            backfill_min_list: 0,
            ..default.clone()
        });
        assert_eq!(without.bought_together.len_of(ItemIdx(5)), 0);
        let data = build(&default);
        assert!(
            data.embeddings.of(ItemIdx(5)).is_some(),
            "item 5 has a vector"
        );
        let filled: Vec<_> = data.bought_together.of(ItemIdx(5)).collect();
        assert!(
            !filled.is_empty(),
            "the default build backfills the empty list"
        );
        assert!(
            filled
                .iter()
                .all(|n| n.support == 0 && n.item != ItemIdx(5))
        );
        // Observed entries stay first, in their order; inferred ones only follow them.
        let observed: Vec<_> = without.bought_together.of(ItemIdx(2)).collect();
        let kept: Vec<_> = data
            .bought_together
            .of(ItemIdx(2))
            .take(observed.len())
            .collect();
        assert_eq!(kept, observed);
    }
}
