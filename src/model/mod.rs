//! The model: everything `cobuy build` computes and the server reads, immutable once loaded.
//!
//! Tables are struct-of-arrays or CSR (offsets + flat values) indexed by [`ItemIdx`] and
//! [`CustomerIdx`], so a request touches a few contiguous slices and never allocates to look up.

mod pod;
pub mod similar;
pub mod store;

use bytemuck::{Pod, Zeroable};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::config::BuildConfig;
use crate::ids::{CustomerIdx, ItemIdx};
use crate::lists;
use similar::SimilarIndex;

/// Marks "no category" / "no brand" / "no parent".
pub const NONE: u32 = u32::MAX;

pub const SECONDS_PER_DAY: f64 = 86_400.0;

/// Item attributes, by item index.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ItemTable {
    pub ids: Vec<String>,
    /// Empty when neither the catalog nor the order lines name the item.
    pub titles: Vec<String>,
    /// Leaf category index, or [`NONE`].
    #[serde(with = "pod")]
    pub category: Vec<u32>,
    /// Brand index into [`ModelData::brands`], or [`NONE`].
    #[serde(with = "pod")]
    pub brand: Vec<u32>,
    /// Unit price: the catalog's, else the median paid in orders; NaN when unknown.
    #[serde(with = "pod")]
    pub price: Vec<f32>,
    pub available: Vec<bool>,
    /// Bought again by enough of its buyers to remind them (or flagged so in the catalog).
    pub replenishable: Vec<bool>,
    /// Orders containing the item.
    #[serde(with = "pod")]
    pub order_count: Vec<u32>,
}

impl ItemTable {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Category paths (`A > B > C`), every prefix of a catalog path included.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CategoryTable {
    pub paths: Vec<String>,
    /// Parent category, or [`NONE`] for a top-level one.
    #[serde(with = "pod")]
    pub parent: Vec<u32>,
}

impl CategoryTable {
    /// The category and its ancestors, nearest first.
    pub fn lineage(&self, category: u32) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors((category != NONE).then_some(category), |&c| {
            let p = self.parent[c as usize];
            (p != NONE).then_some(p)
        })
    }
}

/// One precomputed neighbour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub item: ItemIdx,
    pub score: f32,
    /// Number of orders (bought together) or order-to-next-order transitions (next order) in
    /// which the pair occurred.
    pub support: u32,
}

/// Top-N neighbour lists of every item, best first, in CSR form.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NeighbourLists {
    #[serde(with = "pod")]
    pub offsets: Vec<u32>,
    /// Every list's entries, back to back. One array of structs rather than three arrays: a
    /// request reads the item, score and support of each entry together, starting at a random
    /// list, so one array costs one cache miss per list start where three cost three.
    #[serde(with = "pod")]
    pub entries: Vec<NeighbourEntry>,
}

/// One stored list entry (see [`Neighbour`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Pod, Zeroable)]
#[repr(C)]
pub struct NeighbourEntry {
    pub item: u32,
    pub score: f32,
    pub support: u32,
}

impl NeighbourLists {
    pub fn from_lists(rows: Vec<Vec<(u32, f32, u32)>>) -> Self {
        let (offsets, entries) = lists::flatten(rows.into_iter().map(|list| {
            list.into_iter()
                .map(|(item, score, support)| NeighbourEntry {
                    item,
                    score,
                    support,
                })
                .collect()
        }));
        Self { offsets, entries }
    }

    pub fn of(&self, item: ItemIdx) -> impl ExactSizeIterator<Item = Neighbour> + '_ {
        self.entries_of(item).iter().map(|e| Neighbour {
            item: ItemIdx(e.item),
            score: e.score,
            support: e.support,
        })
    }

    /// The item's stored entries, best first (a loaded model's lists are checked to be).
    pub fn entries_of(&self, item: ItemIdx) -> &[NeighbourEntry] {
        self.entries
            .get(lists::row_range(&self.offsets, item.ix()))
            .unwrap_or(&[])
    }

    /// Whether every list is sorted best first, without NaN scores.
    pub fn sorted_best_first(&self) -> bool {
        self.offsets.windows(2).all(|w| {
            self.entries
                .get(w[0] as usize..w[1] as usize)
                .is_some_and(|list| {
                    list.iter().all(|e| !e.score.is_nan())
                        && list.windows(2).all(|p| p[0].score >= p[1].score)
                })
        })
    }

    pub fn len_of(&self, item: ItemIdx) -> usize {
        self.entries_of(item).len()
    }
}

/// How often an item's buyers buy it again, and after how long.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct RepurchaseStats {
    pub buyers: u32,
    /// Buyers with purchases on at least two different days.
    pub repeat_buyers: u32,
    /// Median days between one buyer's consecutive purchases; NaN without repeats.
    pub median_interval_days: f32,
    /// Interquartile range of those intervals, in days; NaN without repeats.
    pub interval_iqr_days: f32,
    /// Orders holding the item that the same customer followed with another order ...
    pub next_order_exposures: u32,
    /// ... and how many of those next orders hold the item again.
    pub next_order_repeats: u32,
}

impl RepurchaseStats {
    pub fn repeat_share(&self) -> f32 {
        if self.buyers == 0 {
            0.0
        } else {
            self.repeat_buyers as f32 / self.buyers as f32
        }
    }

    /// P(the item is in a customer's next order | it is in this one), shrunk towards `prior`
    /// (the rate over all items) with `prior_weight` pseudo-observations, so an item seen in
    /// two orders does not get a rate of 0 or 1.
    pub fn next_order_repeat_rate(&self, prior: f32, prior_weight: f32) -> f32 {
        (self.next_order_repeats as f32 + prior_weight * prior)
            / (self.next_order_exposures as f32 + prior_weight)
    }
}

/// How an item got its embedding (see `build::embed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VectorSource {
    /// None: the item is never a similarity neighbour.
    None,
    /// Its own row of the factorised PPMI matrix (enough orders).
    Orders,
    /// The mean of the vectors of the items it was bought with (a rare item).
    Baskets,
    /// Its category's centroid (a rare item bought only with other rare items).
    Category,
}

/// Unit-length item vectors, row-major by item index; zero rows where the source is `None`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Embeddings {
    pub dim: usize,
    #[serde(with = "pod")]
    pub vectors: Vec<f32>,
    pub source: Vec<VectorSource>,
}

impl Embeddings {
    /// The item's vector, if it has one.
    pub fn of(&self, item: ItemIdx) -> Option<&[f32]> {
        match self.source.get(item.ix()) {
            Some(VectorSource::None) | None => None,
            Some(_) => Some(&self.vectors[item.ix() * self.dim..(item.ix() + 1) * self.dim]),
        }
    }

    /// Whether the item is a possible answer of similarity search: only items with a vector of
    /// their own. Derived vectors (rare items) serve as queries; as answers they would be
    /// near-copies of the popular items they were bought with.
    pub fn indexed(&self, item: ItemIdx) -> bool {
        self.source.get(item.ix()) == Some(&VectorSource::Orders)
    }

    /// Items that similarity search can return.
    pub fn indexed_count(&self) -> usize {
        self.source
            .iter()
            .filter(|&&s| s == VectorSource::Orders)
            .count()
    }
}

/// Cosine similarity of two unit vectors (their dot product). Eight independent partial sums:
/// one running sum is a chain of dependent float additions that the compiler may not reorder,
/// which made a 64-dimension product four times slower and kept it out of SIMD registers.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Popularity signals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Popularity {
    /// Time-decayed order count (half-life `recent_half_life_days`), by item.
    #[serde(with = "pod")]
    pub recent: Vec<f32>,
    /// Most popular items overall, best first (recent-weighted).
    #[serde(with = "pod")]
    pub top: Vec<u32>,
    /// Most popular items per category (including descendants), CSR by category index.
    #[serde(with = "pod")]
    pub top_by_category_offsets: Vec<u32>,
    #[serde(with = "pod")]
    pub top_by_category: Vec<u32>,
}

impl Popularity {
    /// `ln(1 + time-decayed orders)`: the damped popularity the popular and customer-vector
    /// signals scale their candidates by.
    pub fn log_recent(&self, item: ItemIdx) -> f32 {
        (1.0 + self.recent[item.ix()]).ln()
    }

    pub fn top_in_category(&self, category: u32) -> &[u32] {
        let c = category as usize;
        match (
            self.top_by_category_offsets.get(c),
            self.top_by_category_offsets.get(c + 1),
        ) {
            (Some(&a), Some(&b)) => &self.top_by_category[a as usize..b as usize],
            _ => &[],
        }
    }
}

/// What the model remembers of one customer's purchases of one item.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct HistoryEntry {
    /// Time of the last purchase, seconds. (First: the widest field, so no padding.)
    pub last_purchase: i64,
    pub item: u32,
    /// Orders (purchase days) containing the item.
    pub purchases: u32,
    /// Time-decayed purchase frequency (half-life `history_half_life_days`) at the model's end time.
    pub weight: f32,
    /// This customer's median days between purchases of the item; NaN with one purchase.
    pub interval_days: f32,
}

impl HistoryEntry {
    /// The heavier entry (higher decayed frequency) first, then the lower item: the order of
    /// [`CustomerTable::heaviest`] and of the customer vector's items.
    pub fn heavier_first(&self, other: &Self) -> std::cmp::Ordering {
        other
            .weight
            .total_cmp(&self.weight)
            .then(self.item.cmp(&other.item))
    }
}

/// Per-customer history summaries, CSR by customer index; entries sorted by item.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CustomerTable {
    pub ids: Vec<String>,
    #[serde(with = "pod")]
    pub orders: Vec<u32>,
    /// Time-decayed order count, with the half-life and end time of [`HistoryEntry::weight`]:
    /// `weight / order_weight` is the decayed share of the customer's orders holding the item.
    #[serde(with = "pod")]
    pub order_weight: Vec<f32>,
    #[serde(with = "pod")]
    pub first_order: Vec<i64>,
    #[serde(with = "pod")]
    pub last_order: Vec<i64>,
    #[serde(with = "pod")]
    pub history_offsets: Vec<u32>,
    #[serde(with = "pod")]
    pub history: Vec<HistoryEntry>,
    /// Items of the customer's most recent order, CSR by customer index.
    #[serde(with = "pod")]
    pub last_order_offsets: Vec<u32>,
    #[serde(with = "pod")]
    pub last_order_items: Vec<u32>,
    /// Repeat candidates, most likely first, CSR by customer index (`build::history`).
    #[serde(with = "pod")]
    pub repeat_offsets: Vec<u32>,
    #[serde(with = "pod")]
    pub repeat: Vec<RepeatEntry>,
    /// The customer's [`HEAVIEST_HISTORY_ITEMS`] heaviest history entries (by decayed
    /// frequency, then item), as indices into their history, CSR by customer index: the
    /// history anchors of a request, precomputed because a heavy customer's history holds
    /// thousands of entries and the choice depends on nothing a request says.
    #[serde(with = "pod")]
    pub heaviest_offsets: Vec<u32>,
    #[serde(with = "pod")]
    pub heaviest: Vec<u32>,
    /// Re-purchasable history items with their interval and confidence, CSR by customer index
    /// (`build::history::due_candidates`).
    #[serde(with = "pod")]
    pub due_offsets: Vec<u32>,
    #[serde(with = "pod")]
    pub due: Vec<DueCandidate>,
    /// What the customer's nearest customers buy, best first, CSR by customer index
    /// (`build::neighbours`).
    #[serde(with = "pod")]
    pub neighbour_offsets: Vec<u32>,
    pub neighbour_items: Vec<NeighbourItem>,
}

/// Heaviest history entries kept per customer (see [`CustomerTable::heaviest`]).
pub const HEAVIEST_HISTORY_ITEMS: usize = 40;

/// An item a customer's nearest customers buy.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct NeighbourItem {
    pub item: u32,
    /// Σ similarity × the neighbour's decayed frequency of the item.
    pub score: f32,
    /// The customer bought it too.
    pub bought: bool,
}

/// A re-purchasable item of a customer, everything but the request's time worked out.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct DueCandidate {
    /// Index into the customer's history.
    pub entry: u32,
    pub interval_days: f32,
    pub confidence: f32,
    pub spread_days: f32,
    /// Confidence times the damped purchase frequency: the score when exactly due.
    pub strength: f32,
}

/// One repeat candidate of a customer: an index into their history and the chance their next
/// order holds that item again.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct RepeatEntry {
    pub entry: u32,
    pub probability: f32,
}

impl CustomerTable {
    pub fn history(&self, customer: CustomerIdx) -> &[HistoryEntry] {
        let c = customer.ix();
        &self.history[self.history_offsets[c] as usize..self.history_offsets[c + 1] as usize]
    }

    /// What customers like this one buy, best first.
    pub fn neighbour_items(&self, customer: CustomerIdx) -> &[NeighbourItem] {
        &self.neighbour_items[lists::row_range(&self.neighbour_offsets, customer.ix())]
    }

    /// The customer's re-purchasable items, in history order (`entry` ascending).
    pub fn due_row(&self, customer: CustomerIdx) -> &[DueCandidate] {
        &self.due[lists::row_range(&self.due_offsets, customer.ix())]
    }

    /// The customer's re-purchasable items with their history entries.
    pub fn due_candidates(
        &self,
        customer: CustomerIdx,
    ) -> impl Iterator<Item = (&HistoryEntry, &DueCandidate)> + '_ {
        let history = self.history(customer);
        self.due_row(customer)
            .iter()
            .filter_map(move |d| history.get(d.entry as usize).map(|h| (h, d)))
    }

    /// The customer's repeat candidates, most likely first, with their history entries.
    pub fn repeat_candidates(
        &self,
        customer: CustomerIdx,
    ) -> impl Iterator<Item = (&HistoryEntry, f32)> + '_ {
        let history = self.history(customer);
        self.repeat[lists::row_range(&self.repeat_offsets, customer.ix())]
            .iter()
            .filter_map(move |r| history.get(r.entry as usize).map(|h| (h, r.probability)))
    }

    /// The customer's heaviest history entries, heaviest first (at most
    /// [`HEAVIEST_HISTORY_ITEMS`]).
    pub fn heaviest(&self, customer: CustomerIdx) -> impl Iterator<Item = &HistoryEntry> + '_ {
        let history = self.history(customer);
        self.heaviest[lists::row_range(&self.heaviest_offsets, customer.ix())]
            .iter()
            .filter_map(move |&e| history.get(e as usize))
    }

    pub fn last_order_items(&self, customer: CustomerIdx) -> &[u32] {
        let c = customer.ix();
        &self.last_order_items
            [self.last_order_offsets[c] as usize..self.last_order_offsets[c + 1] as usize]
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The span of time the model was built from.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct TimeSpan {
    pub first_order: i64,
    pub last_order: i64,
    /// Timestamps are relative day numbers, not calendar time.
    pub relative: bool,
}

/// The serialized body of a model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelData {
    pub config: BuildConfig,
    pub time: TimeSpan,
    pub total_orders: u32,
    pub items: ItemTable,
    pub categories: CategoryTable,
    pub brands: Vec<String>,
    pub bought_together: NeighbourLists,
    pub next_order: NeighbourLists,
    #[serde(with = "pod")]
    pub repurchase: Vec<RepurchaseStats>,
    /// Next-order repeat rate over all items (repeats / exposures): the prior of
    /// [`RepurchaseStats::next_order_repeat_rate`].
    pub next_order_repeat_prior: f32,
    pub popularity: Popularity,
    pub customers: CustomerTable,
    pub embeddings: Embeddings,
    /// Each indexed item's `top_n` nearest indexed items, by cosine (exact, computed at build
    /// time; support is 0): a request for such an item reads its list instead of searching.
    /// Empty for rare items, and for every item in catalogues past `hnsw_min_items`.
    pub similar_items: NeighbourLists,
}

/// A loaded model with its lookup indexes.
#[derive(Debug)]
pub struct Model {
    pub version: String,
    pub data: ModelData,
    /// Nearest neighbours in the embedding space.
    pub similar: SimilarIndex,
    item_index: FxHashMap<String, u32>,
    customer_index: FxHashMap<String, u32>,
}

impl Model {
    /// A model over freshly computed tables; builds its similarity index (seconds for a large
    /// catalogue).
    pub fn new(version: String, data: ModelData) -> Self {
        let similar = SimilarIndex::build(&data.embeddings, data.config.hnsw_min_items);
        Self::with_index(version, data, similar)
    }

    /// A model with an index built or loaded beforehand.
    pub fn with_index(version: String, data: ModelData, similar: SimilarIndex) -> Self {
        let item_index = data
            .items
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        let customer_index = data
            .customers
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        Self {
            version,
            data,
            similar,
            item_index,
            customer_index,
        }
    }

    pub fn item(&self, id: &str) -> Option<ItemIdx> {
        self.item_index.get(id).map(|&i| ItemIdx(i))
    }

    pub fn customer(&self, id: &str) -> Option<CustomerIdx> {
        self.customer_index.get(id).map(|&i| CustomerIdx(i))
    }

    pub fn item_id(&self, item: ItemIdx) -> &str {
        &self.data.items.ids[item.ix()]
    }

    pub fn n_items(&self) -> usize {
        self.data.items.len()
    }

    /// The `k` items most similar to `item` that `allow` lets through, most similar first: from
    /// the item's precomputed list, and when the filter leaves fewer than `k` there and
    /// `search_beyond_list` is set, from the similarity index.
    pub fn similar_to(
        &self,
        item: ItemIdx,
        k: usize,
        search_beyond_list: bool,
        allow: &(dyn Fn(ItemIdx) -> bool + Sync),
    ) -> Vec<similar::Similar> {
        let listed: Vec<similar::Similar> = self
            .data
            .similar_items
            .of(item)
            .filter(|n| allow(n.item))
            .take(k)
            .map(|n| similar::Similar {
                item: n.item,
                similarity: n.score,
            })
            .collect();
        if listed.len() >= k || !search_beyond_list {
            return listed;
        }
        match self.data.embeddings.of(item) {
            Some(query) => self
                .similar
                .search(&self.data.embeddings, query, k, &|i| i != item && allow(i)),
            None => listed,
        }
    }

    /// Confidence P(j | i) and lift of a bought-together pair, for quoting.
    pub fn pair_evidence(&self, anchor: ItemIdx, support: u32, other: ItemIdx) -> (f32, f32) {
        let items = &self.data.items;
        let n_anchor = items.order_count[anchor.ix()].max(1) as f32;
        let n_other = items.order_count[other.ix()].max(1) as f32;
        let confidence = support as f32 / n_anchor;
        let lift = support as f32 * self.data.total_orders.max(1) as f32 / (n_anchor * n_other);
        (confidence, lift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_best_first_row_by_row() {
        // A row may start above the previous row's last score.
        let sorted = NeighbourLists::from_lists(vec![
            vec![(1, 0.9, 3), (2, 0.2, 1)],
            vec![(0, 0.5, 2)],
            vec![],
        ]);
        assert!(sorted.sorted_best_first());
        let ties = NeighbourLists::from_lists(vec![vec![(1, 0.5, 3), (2, 0.5, 1)]]);
        assert!(ties.sorted_best_first());
        let rising = NeighbourLists::from_lists(vec![vec![(1, 0.2, 3), (2, 0.9, 1)]]);
        assert!(!rising.sorted_best_first());
        let nan = NeighbourLists::from_lists(vec![vec![(1, f32::NAN, 3)]]);
        assert!(!nan.sorted_best_first());
    }
}
