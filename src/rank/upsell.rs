//! Upsell: a better, pricier alternative to an item. Candidates come from the anchor's leaf
//! category first and widen to its ancestors only when the leaf has too few; each must cost
//! strictly more than the anchor and at most `max_ratio` times as much.
//!
//! Score = category closeness (leaf 1, parent 0.6, grandparent 0.35, ...) × popularity
//! (log of recent orders, normalised) × a mild preference for small steps up the price ladder
//! × 1.1 for the same brand. Items without a known price are never upsells.

use crate::ids::ItemIdx;
use crate::model::{Model, NONE};

/// One upsell candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpsellCandidate {
    pub item: ItemIdx,
    pub score: f32,
    pub price_ratio: f32,
}

const CLOSENESS: [f32; 4] = [1.0, 0.6, 0.35, 0.2];

/// Pricier alternatives to `anchor`, best first, at most `limit`, each passing `allow`.
pub fn upsell(
    model: &Model,
    anchor: ItemIdx,
    max_ratio: f32,
    limit: usize,
    allow: impl Fn(ItemIdx) -> bool,
) -> Vec<UpsellCandidate> {
    let data = &model.data;
    let items = &data.items;
    let anchor_price = items.price[anchor.ix()];
    let leaf = items.category[anchor.ix()];
    if anchor_price.is_nan() || anchor_price <= 0.0 || leaf == NONE {
        return Vec::new();
    }
    let max_log_pop = data
        .popularity
        .recent
        .iter()
        .copied()
        .fold(0.0f32, f32::max)
        .ln_1p()
        .max(1e-6);
    let anchor_brand = items.brand[anchor.ix()];
    let mut out: Vec<UpsellCandidate> = Vec::new();
    for (depth, category) in data.categories.lineage(leaf).enumerate() {
        let closeness = CLOSENESS.get(depth).copied().unwrap_or(0.1);
        for &c in data.popularity.top_in_category(category) {
            let candidate = ItemIdx(c);
            let price = items.price[candidate.ix()];
            let ratio = price / anchor_price;
            if candidate == anchor
                || !(ratio > 1.0 && ratio <= max_ratio)
                || out.iter().any(|o| o.item == candidate)
            {
                continue;
            }
            if !allow(candidate) {
                continue;
            }
            let popularity = data.popularity.recent[candidate.ix()].ln_1p() / max_log_pop;
            let step = 1.0 - 0.5 * (ratio - 1.0) / (max_ratio - 1.0).max(1e-6);
            let brand = if anchor_brand != NONE && items.brand[candidate.ix()] == anchor_brand {
                1.1
            } else {
                1.0
            };
            out.push(UpsellCandidate {
                item: candidate,
                score: closeness * (0.2 + popularity) * step * brand,
                price_ratio: ratio,
            });
        }
        if out.len() >= limit {
            break;
        }
    }
    out.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
    out.truncate(limit);
    out
}
