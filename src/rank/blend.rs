//! Per-surface blending: each surface mixes the signals with its own weights, documented in the
//! README table "Surfaces". Every signal's scores are first divided by that signal's best score
//! in this request, so the weights compare like with like.

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::buy_again::{DueItem, DueWindow, best_due_items, buy_again, due_at};
use super::filter::ItemFilter;
use super::request::{
    ContextEntry, DEFAULT_HORIZON_DAYS, DEFAULT_UPSELL_MAX_RATIO, Evidence, RankedList, Reason,
    RecommendQuery, Recommendation, Surface,
};
use super::upsell::upsell;
use crate::ids::{CustomerIdx, ItemIdx};
use crate::model::{Model, NONE, NeighbourLists, dot};

/// Signal weights of one surface. A zero weight skips the signal's work entirely.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blend {
    /// Bought together with the context items.
    pub context_bought_together: f32,
    /// Next-order items of the context items.
    pub context_next_order: f32,
    /// Bought together with the customer's last order.
    pub history_bought_together: f32,
    /// Next-order items of the customer's recent and frequent items.
    pub history_next_order: f32,
    /// Re-purchasable items, scored by confidence and timing (see `buy_again`).
    pub buy_again: f32,
    /// The customer's own time-decayed purchase frequency, any item bought before.
    pub repeat: f32,
    pub upsell: f32,
    /// Popularity in the context's categories, then overall; also fills short lists.
    pub popular: f32,
    /// Items near the customer's history in the embedding space that they never bought: an
    /// explore signal for HOME and FOLLOW_UP_EMAIL. Built-in weight 0: `cobuy eval` tunes it
    /// per shop, and on the bundled datasets it did not raise recall (README "Quality").
    #[serde(default)]
    pub history_similar: f32,
    /// Items near the context items' centroid in the embedding space. Off on every built-in
    /// surface: on the bought-together protocol of `cobuy eval` it lowered Hit@10 (README
    /// "Quality").
    #[serde(default)]
    pub context_similar: f32,
    /// What the customer's nearest customers buy (`build::neighbours`) that the customer has
    /// not bought: the explore half of "customers like them".
    #[serde(default)]
    pub like_customers: f32,
    /// The same neighbours' weight on items the customer has bought: a personal re-purchase
    /// prior in the spirit of TIFU-KNN's neighbour term (an item the customer's look-alikes keep
    /// buying is likelier to be bought again). Scores only the customer's own items.
    #[serde(default)]
    pub like_customers_repeat: f32,
}

impl Blend {
    /// The built-in weights of a surface (used when the model's config sets none).
    pub fn for_surface(surface: Surface) -> Blend {
        let b = |cbt, cno, hbt, hno, ba, rep, up, pop, sim| Blend {
            context_similar: 0.0,
            like_customers: 0.0,
            like_customers_repeat: 0.0,
            context_bought_together: cbt,
            context_next_order: cno,
            history_bought_together: hbt,
            history_next_order: hno,
            buy_again: ba,
            repeat: rep,
            upsell: up,
            popular: pop,
            history_similar: sim,
        };
        match surface {
            Surface::OrderTracking => b(1.0, 0.5, 0.0, 0.3, 0.0, 0.0, 0.0, 0.05, 0.0),
            Surface::FollowUpEmail => b(0.5, 0.5, 0.1, 0.3, 0.3, 1.0, 0.3, 0.2, 0.0),
            Surface::ReplenishmentReminder => b(0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0),
            Surface::ProductPage => b(1.0, 0.3, 0.0, 0.2, 0.0, 0.0, 0.6, 0.05, 0.0),
            Surface::Cart => b(1.0, 0.4, 0.0, 0.2, 0.3, 0.0, 0.0, 0.05, 0.0),
            Surface::Home => b(0.3, 0.3, 0.0, 0.3, 0.5, 1.0, 0.0, 0.05, 0.0),
        }
    }

    /// The weights by name, for tuning and reports.
    pub fn weights_mut(&mut self) -> [(&'static str, &mut f32); 12] {
        [
            ("context_bought_together", &mut self.context_bought_together),
            ("context_next_order", &mut self.context_next_order),
            ("history_bought_together", &mut self.history_bought_together),
            ("history_next_order", &mut self.history_next_order),
            ("buy_again", &mut self.buy_again),
            ("repeat", &mut self.repeat),
            ("upsell", &mut self.upsell),
            ("popular", &mut self.popular),
            ("history_similar", &mut self.history_similar),
            ("context_similar", &mut self.context_similar),
            ("like_customers", &mut self.like_customers),
            ("like_customers_repeat", &mut self.like_customers_repeat),
        ]
    }

    /// The weights by name, by value.
    pub fn weights(&self) -> [(&'static str, f32); 12] {
        let mut copy = *self;
        copy.weights_mut().map(|(name, w)| (name, *w))
    }

    fn check(&self, surface: &str) -> Result<(), String> {
        for (name, w) in self.weights() {
            if !w.is_finite() || w < 0.0 {
                return Err(format!(
                    "model.blend.{surface}.{name} must be a finite weight >= 0"
                ));
            }
        }
        Ok(())
    }
}

/// Per-surface weights set in a mapping's `[model.blend.<surface>]` tables (written by
/// `cobuy eval --write-blend` after tuning on validation users); unset surfaces use
/// [`Blend::for_surface`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SurfaceBlends {
    pub order_tracking: Option<Blend>,
    pub follow_up_email: Option<Blend>,
    pub replenishment_reminder: Option<Blend>,
    pub product_page: Option<Blend>,
    pub cart: Option<Blend>,
    pub home: Option<Blend>,
}

impl SurfaceBlends {
    pub fn get(&self, surface: Surface) -> Blend {
        self.slot(surface)
            .unwrap_or_else(|| Blend::for_surface(surface))
    }

    pub fn set(&mut self, surface: Surface, blend: Blend) {
        *self.slot_mut(surface) = Some(blend);
    }

    fn slot(&self, surface: Surface) -> Option<Blend> {
        match surface {
            Surface::OrderTracking => self.order_tracking,
            Surface::FollowUpEmail => self.follow_up_email,
            Surface::ReplenishmentReminder => self.replenishment_reminder,
            Surface::ProductPage => self.product_page,
            Surface::Cart => self.cart,
            Surface::Home => self.home,
        }
    }

    fn slot_mut(&mut self, surface: Surface) -> &mut Option<Blend> {
        match surface {
            Surface::OrderTracking => &mut self.order_tracking,
            Surface::FollowUpEmail => &mut self.follow_up_email,
            Surface::ReplenishmentReminder => &mut self.replenishment_reminder,
            Surface::ProductPage => &mut self.product_page,
            Surface::Cart => &mut self.cart,
            Surface::Home => &mut self.home,
        }
    }

    /// Every set weight is finite and non-negative.
    pub fn validate(&self) -> Result<(), String> {
        for surface in Surface::ALL {
            if let Some(b) = self.slot(surface) {
                b.check(surface.config_name())?;
            }
        }
        Ok(())
    }
}

/// Anchors from a customer's history: the last order's items, then the most frequent items.
const MAX_HISTORY_ANCHORS: usize = 20;
// Anchors skip the last order's items, so the precomputed heaviest list holds twice as many.
const _: () = assert!(crate::model::HEAVIEST_HISTORY_ITEMS >= 2 * MAX_HISTORY_ANCHORS);
/// Re-purchasable items considered per request; due items score highest, so this bounds the
/// work for customers with thousands of items without losing due ones.
const MAX_DUE_ITEMS: usize = 200;
/// Popular candidates considered per request.
const POPULAR_CANDIDATES: usize = 200;

/// Source items kept per candidate, inline (no allocation per candidate).
const MAX_SOURCES: usize = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Sources {
    items: [u32; MAX_SOURCES],
    len: u8,
}

impl Sources {
    fn as_slice(&self) -> &[u32] {
        &self.items[..self.len as usize]
    }

    fn add(&mut self, item: ItemIdx) {
        if (self.len as usize) < MAX_SOURCES && !self.as_slice().contains(&item.0) {
            self.items[self.len as usize] = item.0;
            self.len += 1;
        }
    }
}

#[derive(Debug, Clone)]
struct Candidate {
    item: ItemIdx,
    total: f32,
    best: f32,
    reason: Reason,
    sources: Sources,
    evidence: Evidence,
}

/// Accumulates weighted, normalised contributions per item.
#[derive(Debug)]
struct Pool<'s> {
    /// Dense item → candidate slot map (`u32::MAX` = none), borrowed from the per-thread
    /// [`Buffers`] and reset through `candidates` when the pool is dropped.
    slots: &'s mut Vec<u32>,
    /// Borrowed from the per-thread [`Buffers`] as well, and cleared on drop.
    candidates: &'s mut Vec<Candidate>,
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        for c in self.candidates.iter() {
            self.slots[c.item.ix()] = u32::MAX;
        }
        self.candidates.clear();
    }
}

/// A ranking thread's working memory, reused from request to request: its capacity stays, so a
/// request neither allocates nor copies a growing candidate list, and it touches memory the
/// previous request left warm.
#[derive(Default)]
struct Buffers {
    slots: Vec<u32>,
    candidates: Vec<Candidate>,
    /// One signal's contributions at a time, for the signals computed before they are added
    /// (model lists go straight into the pool, see [`Pool::add_each`]).
    scratch: Vec<Contribution>,
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::new(Buffers::default());
}

#[derive(Clone, Copy)]
struct Contribution {
    item: ItemIdx,
    raw: f32,
    source: Option<ItemIdx>,
    evidence: Evidence,
}

impl Contribution {
    /// A search hit, scored by its cosine (negative ones count as 0).
    fn similar(hit: &crate::model::similar::Similar, source: Option<ItemIdx>) -> Self {
        Contribution {
            item: hit.item,
            raw: hit.similarity.max(0.0),
            source,
            evidence: Evidence {
                similarity: hit.similarity,
                ..Default::default()
            },
        }
    }
}

impl Pool<'_> {
    fn add_signal(&mut self, weight: f32, reason: Reason, contributions: &[Contribution]) {
        self.add_each(weight, reason, contributions.iter().copied());
    }

    /// [`Pool::add_signal`] over contributions made on the fly (from a model list, say), so
    /// that none is written to memory: the iterator runs twice, first for the largest
    /// contribution, which normalises.
    fn add_each(
        &mut self,
        weight: f32,
        reason: Reason,
        contributions: impl Iterator<Item = Contribution> + Clone,
    ) {
        let max = contributions.clone().map(|c| c.raw).fold(0.0f32, f32::max);
        if weight <= 0.0 || max <= 0.0 {
            return;
        }
        for c in contributions {
            self.add(weight * c.raw / max, reason, c.item, c.source, &c.evidence);
        }
    }

    /// One signal read straight from the anchors' neighbour lists (each anchor's head, the
    /// budget shared as [`neighbours_per_anchor`] says), with the same sums as
    /// [`Pool::add_signal`] over those entries but without writing them out as contributions
    /// and reading them back; the largest contribution, which normalises, comes from each
    /// head's ends. Confidence and lift are filled in later, for returned items only (see
    /// [`select`]).
    fn add_neighbours(
        &mut self,
        weight: f32,
        reason: Reason,
        lists: &NeighbourLists,
        anchors: &[(ItemIdx, f32)],
    ) {
        let per_anchor = neighbours_per_anchor(anchors.len());
        let head = |anchor: ItemIdx| {
            let list = lists.entries_of(anchor);
            &list[..list.len().min(per_anchor)]
        };
        // Lists are sorted best first (checked at load) and `w * score` is monotone in the
        // score, so each head's largest contribution is at one of its two ends: the same
        // maximum as over every entry, from two reads per anchor.
        let max = anchors
            .iter()
            .filter_map(|&(anchor, w)| {
                let head = head(anchor);
                Some(f32::max(w * head.first()?.score, w * head.last()?.score))
            })
            .fold(0.0f32, f32::max);
        if weight <= 0.0 || max <= 0.0 {
            return;
        }
        for &(anchor, w) in anchors {
            for e in head(anchor) {
                let evidence = Evidence {
                    support: e.support,
                    ..Default::default()
                };
                self.add(
                    weight * (w * e.score) / max,
                    reason,
                    ItemIdx(e.item),
                    Some(anchor),
                    &evidence,
                );
            }
        }
    }

    #[inline(always)]
    fn add(
        &mut self,
        value: f32,
        reason: Reason,
        item: ItemIdx,
        source: Option<ItemIdx>,
        evidence: &Evidence,
    ) {
        let mut slot = self.slots[item.ix()] as usize;
        if slot == u32::MAX as usize {
            slot = self.candidates.len();
            self.slots[item.ix()] = slot as u32;
            self.candidates.push(Candidate {
                item,
                total: 0.0,
                best: 0.0,
                reason,
                sources: Sources::default(),
                evidence: Evidence::default(),
            });
        }
        let cand = &mut self.candidates[slot];
        cand.total += value;
        if value > cand.best {
            cand.best = value;
            cand.reason = reason;
            cand.evidence = *evidence;
            cand.sources = Sources::default();
        }
        if cand.reason == reason
            && let Some(source) = source
        {
            cand.sources.add(source);
        }
    }
}

/// Neighbours read per request and signal, spread over the anchors: with many anchors each
/// contributes only the head of its list (at least [`MIN_NEIGHBOURS_PER_ANCHOR`]), which bounds
/// the work of a 100-item basket without changing one-item answers.
const NEIGHBOUR_BUDGET: usize = 300;
const MIN_NEIGHBOURS_PER_ANCHOR: usize = 10;

/// Neighbours each anchor contributes when `anchors` share the budget.
fn neighbours_per_anchor(anchors: usize) -> usize {
    (NEIGHBOUR_BUDGET / anchors.max(1)).max(MIN_NEIGHBOURS_PER_ANCHOR)
}

/// Resolves context ids; unknown ones are returned separately.
pub fn resolve_context(model: &Model, context: &[ContextEntry]) -> (Vec<ItemIdx>, Vec<String>) {
    let mut known = Vec::with_capacity(context.len());
    let mut unknown = Vec::new();
    for entry in context {
        match model.item(&entry.item_id) {
            Some(item) if !known.contains(&item) => known.push(item),
            Some(_) => {}
            None => unknown.push(entry.item_id.clone()),
        }
    }
    (known, unknown)
}

/// The customer's known index, history items (sorted) and items due again, for the filter.
pub struct CustomerView<'m> {
    pub customer: Option<CustomerIdx>,
    /// The customer's history, sorted by item.
    pub bought: &'m [crate::model::HistoryEntry],
    /// Which bought items are due within the horizon: what the default purchased-item policy
    /// lets through.
    pub due: DueWindow<'m>,
}

pub fn customer_view<'m>(
    model: &'m Model,
    customer_id: Option<&str>,
    as_of: i64,
    horizon_days: f32,
) -> CustomerView<'m> {
    let customer = customer_id.and_then(|id| model.customer(id));
    let Some(c) = customer else {
        return CustomerView {
            customer: None,
            bought: &[],
            due: DueWindow::NONE,
        };
    };
    CustomerView {
        customer,
        bought: model.data.customers.history(c),
        due: DueWindow::new(model, c, as_of, horizon_days),
    }
}

/// Ranks for a surface. Shared by the server, `cobuy eval` and batch jobs.
pub fn recommend(model: &Model, query: &RecommendQuery) -> RankedList {
    recommend_with(model, query, &model.data.config.blend.get(query.surface))
}

/// [`recommend`] with explicit weights (for tuning and evaluation).
pub fn recommend_with(model: &Model, query: &RecommendQuery, blend: &Blend) -> RankedList {
    BUFFERS.with_borrow_mut(|buffers| {
        let Buffers {
            slots,
            candidates,
            scratch,
        } = buffers;
        if slots.len() < model.n_items() {
            slots.resize(model.n_items(), u32::MAX);
        }
        rank_into(model, query, blend, Pool { slots, candidates }, scratch)
    })
}

fn rank_into(
    model: &Model,
    query: &RecommendQuery,
    blend: &Blend,
    mut pool: Pool<'_>,
    scratch: &mut Vec<Contribution>,
) -> RankedList {
    let data = &model.data;
    let as_of = query.as_of.unwrap_or(data.time.last_order);
    let (context, unknown_item_ids) = resolve_context(model, &query.context);
    let view = customer_view(
        model,
        query.customer_id.as_deref(),
        as_of,
        DEFAULT_HORIZON_DAYS,
    );
    let filter = ItemFilter::new(model, &query.filters, &context, view.bought, view.due);

    let context_anchors: Vec<(ItemIdx, f32)> = context.iter().map(|&i| (i, 1.0)).collect();
    if blend.context_bought_together > 0.0 && !context_anchors.is_empty() {
        pool.add_neighbours(
            blend.context_bought_together,
            Reason::BoughtTogether,
            &data.bought_together,
            &context_anchors,
        );
    }
    if blend.context_similar > 0.0 && !context.is_empty() {
        context_similar_contributions(model, &context, &filter, scratch);
        pool.add_signal(blend.context_similar, Reason::Similar, scratch);
    }
    if blend.context_next_order > 0.0 && !context_anchors.is_empty() {
        pool.add_neighbours(
            blend.context_next_order,
            Reason::NextOrder,
            &data.next_order,
            &context_anchors,
        );
    }
    if let Some(customer) = view.customer {
        if blend.history_bought_together > 0.0 {
            let anchors: Vec<(ItemIdx, f32)> = data
                .customers
                .last_order_items(customer)
                .iter()
                .take(MAX_HISTORY_ANCHORS)
                .map(|&i| (ItemIdx(i), 1.0))
                .collect();
            pool.add_neighbours(
                blend.history_bought_together,
                Reason::BoughtTogether,
                &data.bought_together,
                &anchors,
            );
        }
        if blend.history_next_order > 0.0 {
            let anchors = history_anchors(model, customer);
            pool.add_neighbours(
                blend.history_next_order,
                Reason::NextOrder,
                &data.next_order,
                &anchors,
            );
        }
        if blend.repeat > 0.0 {
            repeat_contributions(model, customer, scratch);
            pool.add_signal(blend.repeat, Reason::BuyAgain, scratch);
        }
        if blend.like_customers > 0.0 || blend.like_customers_repeat > 0.0 {
            // Look-alike customers' items in two signals: new to the customer, and owned.
            let items = data.customers.neighbour_items(customer);
            let like = |bought: bool| {
                items
                    .iter()
                    .filter(move |e| e.bought == bought)
                    .map(|e| Contribution {
                        item: ItemIdx(e.item),
                        raw: e.score,
                        source: None,
                        evidence: Evidence::default(),
                    })
            };
            pool.add_each(blend.like_customers, Reason::LikeCustomers, like(false));
            pool.add_each(
                blend.like_customers_repeat,
                Reason::LikeCustomers,
                like(true),
            );
        }
        if blend.history_similar > 0.0 {
            history_similar_contributions(model, customer, view.bought, &filter, scratch);
            pool.add_signal(blend.history_similar, Reason::Similar, scratch);
        }
        if blend.buy_again > 0.0 {
            let due = best_due_items(model, customer, as_of, DEFAULT_HORIZON_DAYS, MAX_DUE_ITEMS);
            let contributions = due.iter().map(|d| Contribution {
                item: d.item,
                raw: d.score,
                source: Some(d.item),
                evidence: Evidence {
                    support: d.purchases,
                    confidence: d.confidence,
                    interval_days: d.interval_days,
                    due_at: d.due_at,
                    ..Default::default()
                },
            });
            pool.add_each(blend.buy_again, Reason::BuyAgain, contributions);
        }
    }
    if blend.upsell > 0.0 {
        scratch.clear();
        for &anchor in &context {
            for u in upsell(model, anchor, DEFAULT_UPSELL_MAX_RATIO, query.k, |i| {
                filter.allows(i)
            }) {
                scratch.push(Contribution {
                    item: u.item,
                    raw: u.score,
                    source: Some(anchor),
                    evidence: Evidence {
                        price_ratio: u.price_ratio,
                        similarity: u.similarity,
                        ..Default::default()
                    },
                });
            }
        }
        pool.add_signal(blend.upsell, Reason::Upsell, scratch);
    }
    if blend.popular > 0.0 {
        popular_contributions(
            model,
            &context,
            &filter,
            POPULAR_CANDIDATES.min(4 * query.k).max(20),
            scratch,
        );
        pool.add_signal(blend.popular, Reason::Popular, scratch);
    }
    let items = select(
        model,
        &pool,
        &filter,
        query.k,
        query.filters.max_category_share,
    );
    RankedList {
        items,
        unknown_item_ids,
        cold_start: view.customer.is_none(),
    }
}

/// History items (heaviest first) averaged into the customer's vector.
const MAX_VECTOR_ITEMS: usize = 100;
/// History items a similar candidate is attributed to (its source, for the explanation).
const MAX_SIMILAR_SOURCES: usize = 20;
/// Candidates the context-vector search returns.
const SIMILAR_CANDIDATES: usize = 50;
/// Candidates the customer-vector search returns, before they are weighed by popularity.
const CUSTOMER_VECTOR_CANDIDATES: usize = 200;

/// Explore candidates: the items nearest to the customer's vector (the time-decayed weighted
/// mean of their history items' vectors) that they never bought and the filter allows, scored
/// by cosine times `ln(1 + time-decayed orders)`: among items about as close to the customer's taste,
/// the ones many others buy now are the likelier next purchase (cosine alone does not tell a
/// staple from an item three customers bought; README "Quality", session 14). Each is
/// attributed to the heaviest history item it is most similar to.
fn history_similar_contributions(
    model: &Model,
    customer: CustomerIdx,
    bought: &[crate::model::HistoryEntry],
    filter: &ItemFilter<'_>,
    out: &mut Vec<Contribution>,
) {
    out.clear();
    let embeddings = &model.data.embeddings;
    if embeddings.dim == 0 {
        return;
    }
    let mut heaviest: Vec<&crate::model::HistoryEntry> = model
        .data
        .customers
        .history(customer)
        .iter()
        .filter(|h| embeddings.of(ItemIdx(h.item)).is_some())
        .collect();
    crate::lists::keep_best(&mut heaviest, MAX_VECTOR_ITEMS, |a, b| a.heavier_first(b));
    let mut query = vec![0.0f32; embeddings.dim];
    for h in &heaviest {
        if let Some(v) = embeddings.of(ItemIdx(h.item)) {
            query
                .iter_mut()
                .zip(v)
                .for_each(|(q, x)| *q += h.weight * x);
        }
    }
    if !crate::build::embed::normalise(&mut query) {
        return;
    }
    let never_bought =
        |i: ItemIdx| bought.binary_search_by_key(&i.0, |h| h.item).is_err() && filter.allows(i);
    for s in model.similar.search(
        embeddings,
        &query,
        CUSTOMER_VECTOR_CANDIDATES,
        &never_bought,
    ) {
        let Some(candidate) = embeddings.of(s.item) else {
            continue;
        };
        let source = heaviest
            .iter()
            .take(MAX_SIMILAR_SOURCES)
            .filter_map(|h| {
                embeddings
                    .of(ItemIdx(h.item))
                    .map(|v| (h.item, dot(v, candidate)))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(item, _)| ItemIdx(item));
        let mut contribution = Contribution::similar(&s, source);
        contribution.raw *= model.data.popularity.log_recent(s.item);
        out.push(contribution);
    }
}

/// Candidates near the centroid of the context items' vectors, scored by cosine, each
/// attributed to the context item it is most similar to.
fn context_similar_contributions(
    model: &Model,
    context: &[ItemIdx],
    filter: &ItemFilter<'_>,
    out: &mut Vec<Contribution>,
) {
    out.clear();
    let embeddings = &model.data.embeddings;
    let vectors: Vec<(ItemIdx, &[f32])> = context
        .iter()
        .filter_map(|&i| embeddings.of(i).map(|v| (i, v)))
        .collect();
    if vectors.is_empty() {
        return;
    }
    let mut query = vec![0.0f32; embeddings.dim];
    for (_, v) in &vectors {
        query.iter_mut().zip(*v).for_each(|(q, x)| *q += x);
    }
    if !crate::build::embed::normalise(&mut query) {
        return;
    }
    for s in model
        .similar
        .search(embeddings, &query, SIMILAR_CANDIDATES, &|i| {
            filter.allows(i)
        })
    {
        let Some(candidate) = embeddings.of(s.item) else {
            continue;
        };
        let source = vectors
            .iter()
            .max_by(|a, b| dot(a.1, candidate).total_cmp(&dot(b.1, candidate)))
            .map(|(i, _)| *i);
        out.push(Contribution::similar(&s, source));
    }
}

/// The customer's precomputed repeat candidates (see `build::history::repeat_lists` for the
/// estimate), quoting their personal rhythm when there is one.
fn repeat_contributions(model: &Model, customer: CustomerIdx, out: &mut Vec<Contribution>) {
    out.clear();
    out.extend(
        model
            .data
            .customers
            .repeat_candidates(customer)
            .map(|(h, probability)| {
                let (interval_days, due_at) = if h.interval_days.is_finite() {
                    let interval = h.interval_days.max(1.0);
                    (interval, due_at(h.last_purchase, interval))
                } else {
                    (0.0, 0)
                };
                Contribution {
                    item: ItemIdx(h.item),
                    raw: probability,
                    source: Some(ItemIdx(h.item)),
                    evidence: Evidence {
                        support: h.purchases,
                        interval_days,
                        due_at,
                        ..Default::default()
                    },
                }
            }),
    );
}

/// The last order's items (weight 1) and the most frequent history items (weight up to 0.5).
fn history_anchors(model: &Model, customer: CustomerIdx) -> Vec<(ItemIdx, f32)> {
    let customers = &model.data.customers;
    let mut anchors: Vec<(ItemIdx, f32)> = customers
        .last_order_items(customer)
        .iter()
        .take(MAX_HISTORY_ANCHORS)
        .map(|&i| (ItemIdx(i), 1.0))
        .collect();
    // The heaviest entry comes first (the weights are never NaN).
    let max_weight = customers
        .heaviest(customer)
        .next()
        .map_or(0.0, |h| h.weight.max(0.0));
    if max_weight > 0.0 && anchors.len() < MAX_HISTORY_ANCHORS {
        for h in customers.heaviest(customer) {
            if anchors.len() >= MAX_HISTORY_ANCHORS {
                break;
            }
            if !anchors.iter().any(|a| a.0.0 == h.item) {
                anchors.push((ItemIdx(h.item), 0.5 * h.weight / max_weight));
            }
        }
    }
    anchors
}

/// Popular items in the context's categories (leaf first, then ancestors), then overall.
fn popular_contributions(
    model: &Model,
    context: &[ItemIdx],
    filter: &ItemFilter<'_>,
    limit: usize,
    out: &mut Vec<Contribution>,
) {
    let data = &model.data;
    out.clear();
    let mut seen: FxHashSet<u32> = FxHashSet::default();
    let mut push = |item: u32, closeness: f32, out: &mut Vec<Contribution>| {
        if !seen.insert(item) || !filter.allows(ItemIdx(item)) {
            return;
        }
        out.push(Contribution {
            item: ItemIdx(item),
            raw: closeness * data.popularity.log_recent(ItemIdx(item)),
            source: None,
            evidence: Evidence {
                support: data.items.order_count[item as usize],
                ..Default::default()
            },
        });
    };
    let leaves: Vec<u32> = context
        .iter()
        .map(|a| data.items.category[a.ix()])
        .filter(|&c| c != NONE)
        .collect();
    'levels: for depth in 0..4 {
        for &leaf in &leaves {
            let Some(category) = data.categories.lineage(leaf).nth(depth) else {
                continue;
            };
            let closeness = 1.0 / (1.0 + depth as f32);
            for &item in data.popularity.top_in_category(category) {
                if out.len() >= limit {
                    break 'levels;
                }
                push(item, closeness, out);
            }
        }
    }
    for &item in &data.popularity.top {
        if out.len() >= limit {
            break;
        }
        push(item, 0.1, out);
    }
}

/// Candidates ordered up front per requested item (see [`select`]).
const SELECT_HEAD_PER_K: usize = 8;

/// A candidate's place in selection order as one integer (larger = better): the score's bits
/// mapped so that unsigned order is `f32::total_cmp` order, then the item index inverted, so a
/// tie goes to the lower index.
fn selection_key(score: f32, item: ItemIdx) -> u64 {
    let bits = score.to_bits();
    let ordered = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    };
    (u64::from(ordered) << 32) | u64::from(!item.0)
}

/// Best-first selection under the filter, at most `ceil(k · share)` per leaf category.
fn select(
    model: &Model,
    pool: &Pool<'_>,
    filter: &ItemFilter<'_>,
    k: usize,
    max_category_share: f32,
) -> Vec<Recommendation> {
    let candidates = &pool.candidates;
    // One integer per candidate, larger = better: a higher score, then the lower item index.
    // The partial selection below then compares plain integers, its main cost when a request
    // pools thousands of candidates.
    let mut order: Vec<u64> = candidates
        .iter()
        .map(|c| selection_key(c.total, c.item))
        .collect();
    // Most walks end within the first few k candidates: order only those, and the rest if the
    // filter and the category cap use them up (requests pool hundreds to thousands).
    let best_first = |a: &u64, b: &u64| b.cmp(a);
    let head = (SELECT_HEAD_PER_K * k).min(order.len());
    if head < order.len() {
        order.select_nth_unstable_by(head, best_first);
    }
    order[..head].sort_unstable_by(best_first);
    let mut rest_sorted = head == order.len();
    let per_category = ((k as f32 * max_category_share).ceil() as usize).max(1);
    let mut taken: FxHashMap<u32, usize> = FxHashMap::default();
    let mut chosen: Vec<usize> = Vec::with_capacity(k);
    let mut deferred: Vec<usize> = Vec::new();
    let mut at = 0;
    while at < order.len() {
        if at == head && !rest_sorted {
            order[head..].sort_unstable_by(best_first);
            rest_sorted = true;
        }
        let item = !(order[at] as u32);
        let slot = pool.slots[item as usize];
        at += 1;
        if chosen.len() >= k {
            break;
        }
        if !filter.allows(ItemIdx(item)) {
            continue;
        }
        let category = model.data.items.category[item as usize];
        if category != NONE {
            let count = taken.entry(category).or_insert(0);
            if *count >= per_category {
                deferred.push(slot as usize);
                continue;
            }
            *count += 1;
        }
        chosen.push(slot as usize);
    }
    // Diversity yields to length: a short list is filled from what the cap held back.
    let room = k.saturating_sub(chosen.len());
    chosen.extend(deferred.into_iter().take(room));
    chosen
        .into_iter()
        .map(|slot| {
            let c = &candidates[slot];
            let mut evidence = c.evidence;
            if let (Reason::BoughtTogether | Reason::NextOrder, Some(&anchor)) =
                (c.reason, c.sources.as_slice().first())
            {
                let (confidence, lift) =
                    model.pair_evidence(ItemIdx(anchor), evidence.support, c.item);
                evidence.confidence = confidence;
                // Lift compares co-occurrence in one order with chance; it has no meaning across orders.
                evidence.lift = if c.reason == Reason::BoughtTogether {
                    lift
                } else {
                    0.0
                };
            }
            Recommendation {
                item: c.item,
                score: c.total,
                reason: c.reason,
                sources: c.sources.as_slice().iter().map(|&s| ItemIdx(s)).collect(),
                evidence,
            }
        })
        .collect()
}

/// `BoughtTogether`: complements of one item or a whole basket, nothing else mixed in.
pub fn bought_together_list(
    model: &Model,
    customer_id: Option<String>,
    items: Vec<ContextEntry>,
    k: usize,
    filters: super::request::FilterSpec,
) -> RankedList {
    bought_together_with_similar(model, customer_id, items, k, filters, 0.0)
}

/// [`bought_together_list`] with the `context_similar` signal at `similar_weight` (against 1 for
/// co-occurrence): how `cobuy eval` measures what embedding neighbours add.
pub fn bought_together_with_similar(
    model: &Model,
    customer_id: Option<String>,
    items: Vec<ContextEntry>,
    k: usize,
    filters: super::request::FilterSpec,
    similar_weight: f32,
) -> RankedList {
    let blend = Blend {
        context_bought_together: 1.0,
        context_next_order: 0.0,
        history_bought_together: 0.0,
        history_next_order: 0.0,
        buy_again: 0.0,
        repeat: 0.0,
        upsell: 0.0,
        popular: 0.0,
        history_similar: 0.0,
        context_similar: similar_weight,
        like_customers: 0.0,
        like_customers_repeat: 0.0,
    };
    let query = RecommendQuery {
        customer_id,
        surface: Surface::Cart,
        context: items,
        k,
        filters,
        as_of: None,
    };
    recommend_with(model, &query, &blend)
}

/// `Upsell`: pricier alternatives to one item.
pub fn upsell_list(
    model: &Model,
    customer_id: Option<&str>,
    item_id: &str,
    k: usize,
    filters: &super::request::FilterSpec,
    max_ratio: f32,
) -> RankedList {
    anchored_list(
        model,
        customer_id,
        item_id,
        filters,
        Reason::Upsell,
        |anchor, filter| {
            upsell(model, anchor, max_ratio, k, |i| filter.allows(i))
                .into_iter()
                .map(|u| {
                    let evidence = Evidence {
                        price_ratio: u.price_ratio,
                        similarity: u.similarity,
                        ..Default::default()
                    };
                    (u.item, u.score, evidence)
                })
                .collect()
        },
    )
}

/// `SimilarItems`: the item's nearest neighbours in the embedding space that pass the filters
/// (applied during the search, so a selective filter still fills the list when it can).
pub fn similar_list(
    model: &Model,
    customer_id: Option<&str>,
    item_id: &str,
    k: usize,
    filters: &super::request::FilterSpec,
) -> RankedList {
    anchored_list(
        model,
        customer_id,
        item_id,
        filters,
        Reason::Similar,
        |anchor, filter| {
            model
                .similar_to(anchor, k, true, &|i| filter.allows(i))
                .into_iter()
                .map(|s| {
                    let evidence = Evidence {
                        similarity: s.similarity,
                        ..Default::default()
                    };
                    (s.item, s.similarity, evidence)
                })
                .collect()
        },
    )
}

/// A list about one anchor item: an unknown anchor answers empty (listed as unknown); the
/// request's filters and the customer's purchases shape what `rank` may return, as (item,
/// score, evidence) best first; each becomes a `reason` recommendation with the anchor as its
/// source.
fn anchored_list(
    model: &Model,
    customer_id: Option<&str>,
    item_id: &str,
    filters: &super::request::FilterSpec,
    reason: Reason,
    rank: impl FnOnce(ItemIdx, &ItemFilter<'_>) -> Vec<(ItemIdx, f32, Evidence)>,
) -> RankedList {
    let Some(anchor) = model.item(item_id) else {
        return RankedList {
            items: Vec::new(),
            unknown_item_ids: vec![item_id.to_owned()],
            cold_start: true,
        };
    };
    let view = customer_view(
        model,
        customer_id,
        model.data.time.last_order,
        DEFAULT_HORIZON_DAYS,
    );
    let filter = ItemFilter::new(model, filters, &[anchor], view.bought, view.due);
    let items = rank(anchor, &filter)
        .into_iter()
        .map(|(item, score, evidence)| Recommendation {
            item,
            score,
            reason,
            sources: vec![anchor],
            evidence,
        })
        .collect();
    RankedList {
        items,
        unknown_item_ids: Vec::new(),
        cold_start: view.customer.is_none(),
    }
}

/// `BuyAgain`: the customer's re-purchasable items under the request's filters (the
/// purchased-item policy does not apply: these are all bought before).
pub fn buy_again_list(
    model: &Model,
    customer: CustomerIdx,
    as_of: i64,
    horizon_days: f32,
    k: usize,
    filters: &super::request::FilterSpec,
) -> Vec<DueItem> {
    let mut spec = filters.clone();
    spec.purchased = super::request::PurchasedPolicy::Include;
    let filter = ItemFilter::new(model, &spec, &[], &[], DueWindow::NONE);
    let mut due = buy_again(model, customer, as_of, horizon_days, usize::MAX);
    due.retain(|d| filter.allows(d.item));
    due.truncate(k);
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::model_from_log;
    use crate::config::BuildConfig;
    use crate::ids::Interner;
    use crate::ingest::{OrderHeader, OrderLine, OrderLog};
    use crate::progress::{Progress, StageClock};
    use crate::rank::request::FilterSpec;

    #[test]
    fn selection_keys_order_as_score_then_lower_item() {
        let scores = [
            f32::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            1e-30,
            0.3,
            0.3,
            7.0,
            f32::INFINITY,
        ];
        let mut pairs: Vec<(f32, u32)> = Vec::new();
        for (i, &s) in scores.iter().enumerate() {
            pairs.push((s, i as u32));
            pairs.push((s, 100 - i as u32));
        }
        let mut by_key = pairs.clone();
        by_key.sort_by_key(|&(s, i)| std::cmp::Reverse(selection_key(s, ItemIdx(i))));
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        assert_eq!(by_key, pairs);
        assert_eq!(by_key[0], (f32::INFINITY, 8));
        assert_eq!(
            !(selection_key(0.3, ItemIdx(42)) as u32),
            42,
            "the item comes back"
        );
    }

    /// A log of one line per (order, item), quantity 1 at price 1; orders are `(customer,
    /// week, items)`.
    fn order_log(items: &[&str], customers: usize, orders: &[(u32, i64, &[u32])]) -> OrderLog {
        let mut log = OrderLog {
            items: Interner::from_names(items.iter().map(|&i| i.to_owned()).collect()),
            customers: Interner::from_names((0..customers).map(|c| format!("c{c}")).collect()),
            ..Default::default()
        };
        for &(customer, week, lines) in orders {
            let o = log.orders.len() as u32;
            log.orders.push(OrderHeader {
                customer,
                timestamp: week * 7 * 86_400,
            });
            log.lines.extend(lines.iter().map(|&item| OrderLine {
                order: o,
                item,
                quantity: 1.0,
                unit_price: 1.0,
            }));
        }
        log.line_titles = vec![None; items.len()];
        log
    }

    fn built(log: &OrderLog) -> crate::model::ModelData {
        model_from_log(
            log,
            &[],
            &BuildConfig::default(),
            &mut StageClock::default(),
            &Progress::hidden(),
        )
    }

    /// Items: 0 = milk, 1 = lamp, 2 = bread. Customers 0..10 buy milk and bread in each of three
    /// weekly orders and a lamp once; customer 10 ("new") placed one order {milk, lamp};
    /// customer 11 ("lamps") bought a lamp in twelve weekly orders, then milk once.
    fn model() -> Model {
        let mut orders: Vec<(u32, i64, &[u32])> = Vec::new();
        for c in 0..10 {
            orders.extend([(c, 0, &[0, 1, 2][..]), (c, 1, &[0, 2]), (c, 2, &[0, 2])]);
        }
        orders.push((10, 3, &[0, 1]));
        orders.extend((0..12).map(|week| (11, week, &[1][..])));
        orders.push((11, 12, &[0]));
        let log = order_log(&["milk", "lamp", "bread"], 12, &orders);
        Model::new("test".into(), built(&log))
    }

    /// Items: 0 = tea, 1 = honey (a staple: bought by customers 1..=8), 2 = rare jam (bought
    /// once, by customer 9). Customer 0 bought only tea. The vectors are set by hand: jam sits
    /// closer to tea (cosine 0.95) than honey does (0.90).
    fn taste_model() -> Model {
        let mut orders: Vec<(u32, i64, &[u32])> = vec![(0, 0, &[0]), (0, 1, &[0])];
        for c in 1..=8 {
            orders.extend([(c, 0, &[1][..]), (c, 1, &[1])]);
        }
        orders.push((9, 1, &[2]));
        let mut data = built(&order_log(&["tea", "honey", "jam"], 10, &orders));
        let jam_sin = (1.0f32 - 0.95 * 0.95).sqrt();
        let honey_sin = (1.0f32 - 0.90 * 0.90).sqrt();
        data.embeddings = crate::model::Embeddings {
            dim: 2,
            vectors: vec![1.0, 0.0, 0.90, honey_sin, 0.95, jam_sin],
            source: vec![crate::model::VectorSource::Orders; 3],
        };
        let index = crate::model::similar::SimilarIndex::exact_for(&data.embeddings);
        Model::with_index("taste".into(), data, index)
    }

    #[test]
    fn the_customer_vector_prefers_the_staple_among_items_about_as_close() {
        let model = taste_model();
        let recent = &model.data.popularity.recent;
        assert!(
            recent[1] > 4.0 * recent[2],
            "honey is the staple: {recent:?}"
        );
        let customer = model.customer("c0").expect("known");
        let filters = FilterSpec {
            purchased: super::super::request::PurchasedPolicy::ExcludeAll,
            ..FilterSpec::default()
        };
        let view = customer_view(&model, Some("c0"), 2 * 7 * 86_400, 14.0);
        let filter = ItemFilter::new(&model, &filters, &[], view.bought, view.due);
        let mut out = Vec::new();
        history_similar_contributions(&model, customer, view.bought, &filter, &mut out);
        let score = |item: u32| {
            out.iter()
                .find(|c| c.item == ItemIdx(item))
                .map(|c| c.raw)
                .expect("a candidate")
        };
        assert!(out.iter().all(|c| c.item != ItemIdx(0)), "tea was bought");
        // Cosine alone would rank the jam first (0.95 against 0.90).
        assert!(
            score(1) > score(2),
            "honey {} vs jam {}",
            score(1),
            score(2)
        );
        let expected = 0.90 * (1.0 + recent[1]).ln();
        assert!(
            (score(1) - expected).abs() < 1e-3,
            "{} vs {expected}",
            score(1)
        );
        let ranked = ranked_with(&model, "c0", &only("history_similar"), filters);
        assert_eq!(
            ranked.first().map(String::as_str),
            Some("honey"),
            "{ranked:?}"
        );
    }

    /// The blend with every weight 0 but `name`'s.
    fn only(name: &str) -> Blend {
        let mut blend = Blend::for_surface(Surface::Home);
        for (n, w) in blend.weights_mut() {
            *w = if n == name { 1.0 } else { 0.0 };
        }
        blend
    }

    fn repeat_only(model: &Model, customer: &str) -> Vec<String> {
        ranked(model, customer, &only("repeat"))
    }

    fn ranked(model: &Model, customer: &str, blend: &Blend) -> Vec<String> {
        let filters = FilterSpec {
            purchased: super::super::request::PurchasedPolicy::Include,
            ..FilterSpec::default()
        };
        ranked_with(model, customer, blend, filters)
    }

    fn ranked_with(
        model: &Model,
        customer: &str,
        blend: &Blend,
        filters: FilterSpec,
    ) -> Vec<String> {
        let query = RecommendQuery {
            customer_id: Some(customer.into()),
            surface: Surface::Home,
            context: Vec::new(),
            k: 10,
            filters,
            as_of: None,
        };
        recommend_with(model, &query, blend)
            .items
            .iter()
            .map(|r| model.item_id(r.item).to_owned())
            .collect()
    }

    #[test]
    fn the_default_policy_lets_a_bought_item_through_only_when_it_is_due() {
        let model = model();
        let c0 = model.customer("c0").expect("known");
        let week_2 = 2 * 7 * 86_400;
        let home = |horizon_days: f32| {
            let filters = FilterSpec::default();
            let view = customer_view(&model, Some("c0"), week_2, horizon_days);
            let filter = ItemFilter::new(&model, &filters, &[], view.bought, view.due);
            (0..3)
                .filter(|&i| filter.allows(ItemIdx(i)))
                .collect::<Vec<u32>>()
        };
        for horizon_days in [1.0, 14.0] {
            // The per-item check agrees with the scored list's flag.
            let window = DueWindow::new(&model, c0, week_2, horizon_days);
            let history = model.data.customers.history(c0);
            let mut checked: Vec<u32> = (0..history.len())
                .filter(|&k| window.is_due(k, &history[k]))
                .map(|k| history[k].item)
                .collect();
            checked.sort_unstable();
            let mut flagged: Vec<u32> = buy_again(&model, c0, week_2, horizon_days, usize::MAX)
                .iter()
                .filter(|d| d.due_within_horizon)
                .map(|d| d.item.0)
                .collect();
            flagged.sort_unstable();
            assert_eq!(checked, flagged);
        }
        // Milk and bread are weekly for c0, due a week after its last order: within a 14-day
        // horizon, not within one day. The lamp (bought once) never is.
        assert_eq!(home(14.0), [0, 2]);
        assert_eq!(home(1.0), Vec::<u32>::new());
    }

    #[test]
    fn customers_like_them_split_into_new_items_and_own_items() {
        let model = model();
        // c10 bought milk and the lamp; its look-alikes (c0..c9) also buy item 2.
        let new = ranked(&model, "c10", &only("like_customers"));
        let own = ranked(&model, "c10", &only("like_customers_repeat"));
        assert_eq!(
            new,
            [model.item_id(ItemIdx(2))],
            "only what c10 never bought"
        );
        assert!(!own.is_empty(), "c10 has look-alikes");
        assert!(
            own.iter().all(|i| i == "milk" || i == "lamp"),
            "only c10's own items: {own:?}"
        );
    }

    #[test]
    fn after_one_order_the_items_others_rebuy_come_first() {
        let model = model();
        // Milk follows itself in the next order 20 of 20 times; the lamp only for the lamp lover
        // (11 of its 12 orders), never for the ten others.
        let stats = &model.data.repurchase;
        assert_eq!(
            (stats[0].next_order_repeats, stats[0].next_order_exposures),
            (20, 20)
        );
        assert_eq!(
            (stats[1].next_order_repeats, stats[1].next_order_exposures),
            (11, 22)
        );
        assert_eq!(repeat_only(&model, "c10"), ["milk", "lamp"]);
    }

    #[test]
    fn after_a_dozen_orders_a_customers_own_habit_outweighs_the_population_rate() {
        let model = model();
        assert_eq!(repeat_only(&model, "c11"), ["lamp", "milk"]);
    }
}
