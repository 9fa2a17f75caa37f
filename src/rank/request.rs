//! Ranking requests and answers as plain domain types, with the limits every caller shares.
//! Field names in errors are the gRPC request's, so a client can find what it sent wrong.

use crate::error::RequestError;
use crate::ids::ItemIdx;

pub const DEFAULT_K: usize = 10;
pub const MAX_K: usize = 100;
pub const MAX_CONTEXT_ITEMS: usize = 100;
pub const MAX_FILTER_VALUES: usize = 1000;
pub const DEFAULT_HORIZON_DAYS: f32 = 14.0;
pub const MAX_HORIZON_DAYS: f32 = 365.0;
pub const DEFAULT_MAX_CATEGORY_SHARE: f32 = 0.5;
pub const DEFAULT_UPSELL_MAX_RATIO: f32 = 2.0;

/// Where the list is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Surface {
    OrderTracking,
    FollowUpEmail,
    ReplenishmentReminder,
    ProductPage,
    Cart,
    Home,
}

impl Surface {
    pub const ALL: [Surface; 6] = [
        Surface::OrderTracking,
        Surface::FollowUpEmail,
        Surface::ReplenishmentReminder,
        Surface::ProductPage,
        Surface::Cart,
        Surface::Home,
    ];

    /// The surface's name in configuration files (`[model.blend.<name>]`).
    pub fn config_name(self) -> &'static str {
        match self {
            Surface::OrderTracking => "order_tracking",
            Surface::FollowUpEmail => "follow_up_email",
            Surface::ReplenishmentReminder => "replenishment_reminder",
            Surface::ProductPage => "product_page",
            Surface::Cart => "cart",
            Surface::Home => "home",
        }
    }
}

/// Why an item is recommended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    BoughtTogether,
    NextOrder,
    Upsell,
    BuyAgain,
    Similar,
    Popular,
    /// Bought by the customers most like this one.
    LikeCustomers,
}

/// What to do with items the customer bought before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PurchasedPolicy {
    /// Exclude unless re-purchasable and due within the horizon.
    #[default]
    ExcludeUnlessDue,
    ExcludeAll,
    Include,
}

/// An item in view.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextEntry {
    pub item_id: String,
    pub quantity: f64,
    pub price: Option<f64>,
}

/// Filters as requested, before resolution against a model.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterSpec {
    pub include_categories: Vec<String>,
    pub exclude_categories: Vec<String>,
    pub include_brands: Vec<String>,
    pub exclude_brands: Vec<String>,
    pub include_item_ids: Vec<String>,
    pub exclude_item_ids: Vec<String>,
    pub min_price: Option<f64>,
    pub max_price: Option<f64>,
    pub available_only: bool,
    pub purchased: PurchasedPolicy,
    pub max_category_share: f32,
}

impl Default for FilterSpec {
    fn default() -> Self {
        Self {
            include_categories: Vec::new(),
            exclude_categories: Vec::new(),
            include_brands: Vec::new(),
            exclude_brands: Vec::new(),
            include_item_ids: Vec::new(),
            exclude_item_ids: Vec::new(),
            min_price: None,
            max_price: None,
            available_only: true,
            purchased: PurchasedPolicy::ExcludeUnlessDue,
            max_category_share: DEFAULT_MAX_CATEGORY_SHARE,
        }
    }
}

impl FilterSpec {
    pub fn validate(&self) -> Result<(), RequestError> {
        let lists = [
            ("filters.include_categories", &self.include_categories),
            ("filters.exclude_categories", &self.exclude_categories),
            ("filters.include_brands", &self.include_brands),
            ("filters.exclude_brands", &self.exclude_brands),
            ("filters.include_item_ids", &self.include_item_ids),
            ("filters.exclude_item_ids", &self.exclude_item_ids),
        ];
        for (field, list) in lists {
            if list.len() > MAX_FILTER_VALUES {
                return Err(invalid(
                    field,
                    format!("{} values, at most {MAX_FILTER_VALUES}", list.len()),
                ));
            }
        }
        for (field, bound) in [
            ("filters.min_price", self.min_price),
            ("filters.max_price", self.max_price),
        ] {
            if bound.is_some_and(|p| !p.is_finite() || p < 0.0) {
                return Err(invalid(field, "must be a finite price >= 0".into()));
            }
        }
        if let (Some(lo), Some(hi)) = (self.min_price, self.max_price)
            && lo > hi
        {
            return Err(invalid(
                "filters.min_price",
                format!("{lo} is above filters.max_price {hi}"),
            ));
        }
        if !(self.max_category_share > 0.0 && self.max_category_share <= 1.0) {
            return Err(invalid(
                "filters.max_category_share",
                "must be in (0, 1]".into(),
            ));
        }
        Ok(())
    }
}

pub fn invalid(field: &'static str, what: String) -> RequestError {
    RequestError::Invalid { field, what }
}

/// `k` as sent (0 = default), checked.
pub fn validate_k(k: u32) -> Result<usize, RequestError> {
    match k as usize {
        0 => Ok(DEFAULT_K),
        k if k <= MAX_K => Ok(k),
        k => Err(invalid("k", format!("{k} is above the maximum {MAX_K}"))),
    }
}

pub fn validate_context(field: &'static str, context: &[ContextEntry]) -> Result<(), RequestError> {
    if context.len() > MAX_CONTEXT_ITEMS {
        return Err(invalid(
            field,
            format!("{} items, at most {MAX_CONTEXT_ITEMS}", context.len()),
        ));
    }
    for entry in context {
        if entry.item_id.is_empty() {
            return Err(invalid(field, "an item_id is empty".into()));
        }
        if !entry.quantity.is_finite() || entry.quantity < 0.0 {
            return Err(invalid(
                field,
                format!("item {:?} has quantity {}", entry.item_id, entry.quantity),
            ));
        }
    }
    Ok(())
}

/// A `Recommend` request.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendQuery {
    pub customer_id: Option<String>,
    pub surface: Surface,
    pub context: Vec<ContextEntry>,
    pub k: usize,
    pub filters: FilterSpec,
    pub as_of: Option<i64>,
}

/// Numbers behind a recommendation, for quoting.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Evidence {
    pub support: u32,
    pub confidence: f32,
    pub lift: f32,
    pub interval_days: f32,
    pub due_at: i64,
    pub price_ratio: f32,
    /// Cosine similarity of the item's and the source's embeddings.
    pub similarity: f32,
}

/// One ranked item.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub item: ItemIdx,
    pub score: f32,
    pub reason: Reason,
    pub sources: Vec<ItemIdx>,
    pub evidence: Evidence,
}

/// A ranked list and what was ignored on the way.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RankedList {
    pub items: Vec<Recommendation>,
    pub unknown_item_ids: Vec<String>,
    pub cold_start: bool,
}
