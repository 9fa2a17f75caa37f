//! The item table: catalog attributes joined with what the orders say (titles on order lines,
//! median paid price), the category tree, brands, and the replenishable flag.

use rustc_hash::FxHashMap;

use super::history::median_iqr;
use crate::config::BuildConfig;
use crate::ingest::{CatalogEntry, OrderLog};
use crate::model::{CategoryTable, ItemTable, NONE, RepurchaseStats};

pub struct ItemsOutput {
    pub items: ItemTable,
    pub categories: CategoryTable,
    pub brands: Vec<String>,
}

pub fn compute(
    log: &OrderLog,
    catalog: &[Option<CatalogEntry>],
    order_count: Vec<u32>,
    repurchase: &[RepurchaseStats],
    cfg: &BuildConfig,
) -> ItemsOutput {
    let n_items = log.items.len();
    let entry = |i: usize| catalog.get(i).and_then(Option::as_ref);

    let mut categories = CategoryTable::default();
    let mut category_index: FxHashMap<String, u32> = FxHashMap::default();
    let mut brands: Vec<String> = Vec::new();
    let mut brand_index: FxHashMap<String, u32> = FxHashMap::default();
    let paid = median_paid_prices(log);

    let mut items = ItemTable {
        ids: log.items.names().to_vec(),
        titles: Vec::with_capacity(n_items),
        category: Vec::with_capacity(n_items),
        brand: Vec::with_capacity(n_items),
        price: Vec::with_capacity(n_items),
        available: Vec::with_capacity(n_items),
        replenishable: Vec::with_capacity(n_items),
        order_count,
    };
    items.order_count.resize(n_items, 0);
    for (i, &paid_price) in paid.iter().enumerate() {
        let e = entry(i);
        let title = e
            .and_then(|e| e.title.clone())
            .or_else(|| log.line_titles.get(i).cloned().flatten());
        items.titles.push(title.unwrap_or_default());
        let category = e.and_then(|e| e.category.as_deref()).map_or(NONE, |path| {
            intern_category(path, &mut categories, &mut category_index)
        });
        items.category.push(category);
        let brand = e.and_then(|e| e.brand.as_deref()).map_or(NONE, |b| {
            *brand_index.entry(b.to_owned()).or_insert_with(|| {
                brands.push(b.to_owned());
                (brands.len() - 1) as u32
            })
        });
        items.brand.push(brand);
        items
            .price
            .push(e.and_then(|e| e.price).unwrap_or(paid_price));
        items
            .available
            .push(e.and_then(|e| e.available).unwrap_or(true));
        let stats = repurchase.get(i).copied().unwrap_or_default();
        let observed = stats.repeat_buyers >= cfg.replenish_min_repeat_buyers
            && stats.repeat_share() >= cfg.replenish_min_share
            && stats.median_interval_days.is_finite();
        items
            .replenishable
            .push(e.and_then(|e| e.replenishable).unwrap_or(observed));
    }
    ItemsOutput {
        items,
        categories,
        brands,
    }
}

/// Adds `A > B > C` and its prefixes; returns the leaf's index.
fn intern_category(
    path: &str,
    table: &mut CategoryTable,
    index: &mut FxHashMap<String, u32>,
) -> u32 {
    if let Some(&c) = index.get(path) {
        return c;
    }
    let mut parent = NONE;
    let mut prefix = String::new();
    for part in path.split(" > ") {
        if !prefix.is_empty() {
            prefix.push_str(" > ");
        }
        prefix.push_str(part.trim());
        parent = match index.get(&prefix) {
            Some(&c) => c,
            None => {
                table.paths.push(prefix.clone());
                table.parent.push(parent);
                let c = (table.paths.len() - 1) as u32;
                index.insert(prefix.clone(), c);
                c
            }
        };
    }
    parent
}

/// Median unit price paid per item (NaN when no line has a price).
fn median_paid_prices(log: &OrderLog) -> Vec<f32> {
    let mut pairs: Vec<(u32, f32)> = log
        .lines
        .iter()
        .filter(|l| !l.unit_price.is_nan())
        .map(|l| (l.item, l.unit_price))
        .collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut out = vec![f32::NAN; log.items.len()];
    let mut scratch = Vec::new();
    for group in pairs.chunk_by(|a, b| a.0 == b.0) {
        scratch.clear();
        scratch.extend(group.iter().map(|g| g.1));
        out[group[0].0 as usize] = median_iqr(&mut scratch).0;
    }
    out
}
