//! Build configuration: the knobs of the model computation, with production defaults. Read from
//! the `[model]` table of a mapping file and stored in every model's manifest.

use serde::{Deserialize, Serialize};

use crate::error::MappingError;
use crate::rank::blend::SurfaceBlends;

/// How the model is computed. Every field has a default; see README "Model" for the formulas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildConfig {
    /// Neighbours kept per item in each precomputed list.
    pub top_n: usize,
    /// Minimum number of orders (or transitions) a pair needs to be listed.
    pub min_support: u32,
    /// Exponent on the anchor's count in the asymmetric cosine score; 0.5 is the cosine,
    /// 1.0 the confidence P(j|i) (which echoes popularity).
    pub alpha: f32,
    /// Support shrinkage: scores are multiplied by `support / (support + shrinkage)`.
    pub shrinkage: f32,
    /// Baskets larger than this contribute `basket_cap / (n - 1)` per pair instead of 1,
    /// so one huge order cannot dominate.
    pub basket_cap: usize,
    /// Baskets larger than this are left out of pair counting altogether.
    pub max_basket_items: usize,
    /// How many following orders count as "next order" (weights 1, 1/2, 1/3, ...).
    pub next_order_window: usize,
    /// Half-life of a purchase in a customer's history weights.
    pub history_half_life_days: f32,
    /// Half-life of an order in recent popularity.
    pub recent_half_life_days: f32,
    /// Purchases closer than this count as one purchase occasion for intervals.
    pub min_interval_days: f32,
    /// An item is replenishable when at least this share of its buyers re-buy it ...
    pub replenish_min_share: f32,
    /// ... and at least this many buyers do.
    pub replenish_min_repeat_buyers: u32,
    /// Items kept per category in the popularity lists.
    pub top_per_category: usize,
    /// Item embedding dimension (0 turns embeddings, the similar-items index and the signals
    /// built on them off).
    pub embedding_dim: usize,
    /// Items in at least this many orders get a vector of their own; rarer ones one derived
    /// from the items they were bought with, or their category (see `build::embed`).
    pub embedding_min_orders: u32,
    /// Positive-PMI entries kept per item before the factorisation.
    pub embedding_row_entries: usize,
    /// Power iterations of the randomised eigendecomposition (more: closer to the exact one).
    pub embedding_power_iterations: usize,
    /// Seed of the random projection: the same orders and seed give the same vectors.
    pub embedding_seed: u64,
    /// Items whose bought-together or next-order list is shorter than this get it extended with
    /// their embedding neighbours' lists (entries with support 0, ranked below observed ones);
    /// 0 turns this off. The default, 10, answers for items whose own lists are empty or
    /// nearly so: on completejourney it raises bought-together Hit@10 on contexts of
    /// few-order items by 0.0063 (+2.0 paired std) and moves the basket protocols by no more
    /// than 0.0001 (README "Quality"; `cobuy eval`'s "cobuy without embeddings" row is the
    /// same ranking without it).
    pub backfill_min_list: usize,
    /// Catalogues with at least this many indexed items are searched through an HNSW graph;
    /// smaller ones by an exact scan. Measured on completejourney vectors (`cargo bench --bench
    /// similar`, README "Similar items"): the scan costs about 17 µs per 1,000 items (600 µs at
    /// 36k); the graph at the ef that holds recall@10 above 0.95 (96) 570-860 µs from 10k to
    /// 36k items, growing slowly: they cross near 50k.
    pub hnsw_min_items: usize,
    /// Ranking weights per surface (`[model.blend.home]`, ...); unset surfaces use the built-in
    /// weights. `cobuy eval --write-blend` writes weights tuned on validation users.
    pub blend: SurfaceBlends,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            top_n: 50,
            min_support: 2,
            alpha: 0.5,
            shrinkage: 2.0,
            basket_cap: 30,
            max_basket_items: 500,
            next_order_window: 2,
            history_half_life_days: 90.0,
            recent_half_life_days: 30.0,
            min_interval_days: 1.0,
            replenish_min_share: 0.1,
            replenish_min_repeat_buyers: 3,
            top_per_category: 100,
            embedding_dim: 64,
            embedding_min_orders: 3,
            embedding_row_entries: 200,
            embedding_power_iterations: 3,
            embedding_seed: 2023,
            backfill_min_list: 10,
            hnsw_min_items: 50_000,
            blend: SurfaceBlends::default(),
        }
    }
}

impl BuildConfig {
    pub fn validate(self) -> Result<Self, MappingError> {
        let bad = |what: &str| Err(MappingError::Invalid(format!("model.{what}")));
        if self.top_n == 0 || self.top_n > 1000 {
            return bad("top_n must be in 1..=1000");
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return bad("alpha must be in [0, 1]");
        }
        if self.shrinkage < 0.0 || !self.shrinkage.is_finite() {
            return bad("shrinkage must be >= 0");
        }
        if self.basket_cap < 2 || self.max_basket_items < 2 {
            return bad("basket_cap and max_basket_items must be >= 2");
        }
        if self.history_half_life_days <= 0.0 || self.recent_half_life_days <= 0.0 {
            return bad("half-lives must be > 0 days");
        }
        if self.min_support == 0 {
            return bad("min_support must be >= 1");
        }
        if self.embedding_dim > 512 {
            return bad("embedding_dim must be <= 512");
        }
        if self.embedding_min_orders == 0 || self.embedding_row_entries == 0 {
            return bad("embedding_min_orders and embedding_row_entries must be >= 1");
        }
        self.blend.validate().map_err(MappingError::Invalid)?;
        Ok(self)
    }
}
