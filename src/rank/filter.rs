//! Filters resolved against one model: names become index sets once per request, so checking a
//! candidate is a few comparisons.

use rustc_hash::FxHashSet;

use super::buy_again::DueWindow;
use super::request::{FilterSpec, PurchasedPolicy};
use crate::ids::ItemIdx;
use crate::model::{HistoryEntry, Model, NONE};

/// A request's filters, bound to a model.
#[derive(Debug)]
pub struct ItemFilter<'m> {
    model: &'m Model,
    spec: &'m FilterSpec,
    include_categories: Vec<u32>,
    exclude_categories: Vec<u32>,
    include_brands: FxHashSet<u32>,
    exclude_brands: FxHashSet<u32>,
    include_items: FxHashSet<u32>,
    exclude_items: FxHashSet<u32>,
    /// The customer's history, sorted by item (binary-searched: heavy customers have
    /// thousands of items, too many to hash per request).
    bought: &'m [HistoryEntry],
    /// Which bought items are due again, which the default policy lets through.
    due: DueWindow<'m>,
    /// True when `include_*` named only unknown values: nothing can match.
    impossible: bool,
}

fn category_ids(model: &Model, prefixes: &[String]) -> Vec<u32> {
    if prefixes.is_empty() {
        return Vec::new();
    }
    let paths = &model.data.categories.paths;
    (0..paths.len() as u32)
        .filter(|&c| {
            prefixes.iter().any(|p| {
                paths[c as usize] == *p || paths[c as usize].starts_with(&format!("{p} > "))
            })
        })
        .collect()
}

fn brand_ids(model: &Model, names: &[String]) -> FxHashSet<u32> {
    let brands = &model.data.brands;
    (0..brands.len() as u32)
        .filter(|&b| names.iter().any(|n| *n == brands[b as usize]))
        .collect()
}

fn item_ids(model: &Model, ids: &[String]) -> FxHashSet<u32> {
    ids.iter()
        .filter_map(|id| model.item(id))
        .map(|i| i.0)
        .collect()
}

impl<'m> ItemFilter<'m> {
    /// `context` items are always excluded. `bought` is the customer's history (sorted by item)
    /// and `due` says which of them are due again, for the purchased-item policy.
    pub fn new(
        model: &'m Model,
        spec: &'m FilterSpec,
        context: &[ItemIdx],
        bought: &'m [HistoryEntry],
        due: DueWindow<'m>,
    ) -> Self {
        let include_categories = category_ids(model, &spec.include_categories);
        let include_brands = brand_ids(model, &spec.include_brands);
        let include_items = item_ids(model, &spec.include_item_ids);
        let impossible = (!spec.include_categories.is_empty() && include_categories.is_empty())
            || (!spec.include_brands.is_empty() && include_brands.is_empty())
            || (!spec.include_item_ids.is_empty() && include_items.is_empty());
        let mut exclude_items = item_ids(model, &spec.exclude_item_ids);
        exclude_items.extend(context.iter().map(|i| i.0));
        debug_assert!(bought.windows(2).all(|w| w[0].item < w[1].item));
        Self {
            model,
            spec,
            include_categories,
            exclude_categories: category_ids(model, &spec.exclude_categories),
            include_brands,
            exclude_brands: brand_ids(model, &spec.exclude_brands),
            include_items,
            exclude_items,
            bought,
            due,
            impossible,
        }
    }

    fn blocked_as_purchased(&self, item: ItemIdx) -> bool {
        let entry = || self.bought.binary_search_by_key(&item.0, |h| h.item);
        match self.spec.purchased {
            PurchasedPolicy::Include => false,
            PurchasedPolicy::ExcludeAll => entry().is_ok(),
            PurchasedPolicy::ExcludeUnlessDue => {
                entry().is_ok_and(|k| !self.due.is_due(k, &self.bought[k]))
            }
        }
    }

    /// Whether `item` may be returned.
    pub fn allows(&self, item: ItemIdx) -> bool {
        if self.impossible {
            return false;
        }
        let i = item.ix();
        let items = &self.model.data.items;
        if self.exclude_items.contains(&item.0) || self.blocked_as_purchased(item) {
            return false;
        }
        if !self.include_items.is_empty() && !self.include_items.contains(&item.0) {
            return false;
        }
        if self.spec.available_only && !items.available[i] {
            return false;
        }
        // Each item table is read only when a filter asks about it: a request without filters
        // checks dozens of items, and each read of a table is a likely cache miss.
        if self.spec.min_price.is_some() || self.spec.max_price.is_some() {
            let price = f64::from(items.price[i]);
            if self
                .spec
                .min_price
                .is_some_and(|lo| price.is_nan() || price < lo)
            {
                return false;
            }
            if self
                .spec
                .max_price
                .is_some_and(|hi| price.is_nan() || price > hi)
            {
                return false;
            }
        }
        if !self.include_brands.is_empty() || !self.exclude_brands.is_empty() {
            let brand = items.brand[i];
            if !self.include_brands.is_empty() && !self.include_brands.contains(&brand) {
                return false;
            }
            if brand != NONE && self.exclude_brands.contains(&brand) {
                return false;
            }
        }
        if self.include_categories.is_empty() && self.exclude_categories.is_empty() {
            return true;
        }
        let category = items.category[i];
        let in_any = |set: &[u32]| category != NONE && set.binary_search(&category).is_ok();
        if !self.include_categories.is_empty() && !in_any(&self.include_categories) {
            return false;
        }
        !in_any(&self.exclude_categories)
    }
}
