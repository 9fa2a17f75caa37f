//! Upsell: a better, pricier alternative to an item. Every candidate costs strictly more than
//! the anchor and at most `max_ratio` times as much; items without a known price never qualify.
//!
//! Candidates come from two places:
//! - the anchor's category: its leaf's popular items first, widening to ancestors only when the
//!   leaf has too few;
//! - the anchor's nearest neighbours in the embedding space (the same kind of thing, by what
//!   it is bought with), kept to the anchor's leaf or parent category when the catalogue has
//!   categories, from anywhere when it has none (a shop without a catalogue still gets upsells).
//!
//! Score = category closeness (leaf 1, parent 0.4, grandparent 0.2, ...; 1 without categories)
//! × similarity (`0.5 + 0.5 · max(cos, 0)`; 0.75 when either item has no vector) × popularity
//! (`0.2 +` log of recent orders, normalised) × a mild preference for small steps up the price
//! ladder × 1.1 for the same brand.

use crate::ids::ItemIdx;
use crate::model::{Model, NONE, dot};

/// One upsell candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpsellCandidate {
    pub item: ItemIdx,
    pub score: f32,
    pub price_ratio: f32,
    /// Cosine similarity to the anchor; 0 when either has no vector.
    pub similarity: f32,
}

const CLOSENESS: [f32; 4] = [1.0, 0.4, 0.2, 0.1];
/// Similarity factor of candidates without a vector: between an unrelated and a twin item.
const UNKNOWN_SIMILARITY: f32 = 0.75;
/// Embedding neighbours considered per requested upsell.
const NEIGHBOURS_PER_RESULT: usize = 3;
/// Embedding candidates must share the anchor's category down to this depth from the leaf
/// (0 = the leaf itself, 1 = its parent).
const MAX_NEIGHBOUR_DEPTH: usize = 1;

/// Pricier alternatives to `anchor`, best first, at most `limit`, each passing `allow`.
pub fn upsell(
    model: &Model,
    anchor: ItemIdx,
    max_ratio: f32,
    limit: usize,
    allow: impl Fn(ItemIdx) -> bool + Sync,
) -> Vec<UpsellCandidate> {
    let data = &model.data;
    let items = &data.items;
    let anchor_price = items.price[anchor.ix()];
    if anchor_price.is_nan() || anchor_price <= 0.0 || limit == 0 {
        return Vec::new();
    }
    let in_band = |candidate: ItemIdx| {
        let ratio = items.price[candidate.ix()] / anchor_price;
        candidate != anchor && ratio > 1.0 && ratio <= max_ratio
    };
    let leaf = items.category[anchor.ix()];
    let lineage: Vec<u32> = data.categories.lineage(leaf).collect();
    // Depth of the closest category `candidate` shares with the anchor, if any.
    let shared_depth = |candidate: ItemIdx| -> Option<usize> {
        let theirs = items.category[candidate.ix()];
        data.categories
            .lineage(theirs)
            .find_map(|c| lineage.iter().position(|&a| a == c))
    };
    // `top` is sorted by recent popularity: its head is the maximum (no scan per request).
    let max_log_pop = data
        .popularity
        .top
        .first()
        .map_or(0.0, |&i| data.popularity.recent[i as usize])
        .ln_1p()
        .max(1e-6);
    let embeddings = &data.embeddings;
    let anchor_vector = embeddings.of(anchor);
    let anchor_brand = items.brand[anchor.ix()];
    let score = |candidate: ItemIdx, depth: usize| -> UpsellCandidate {
        let ratio = items.price[candidate.ix()] / anchor_price;
        let closeness = if leaf == NONE {
            1.0
        } else {
            CLOSENESS.get(depth).copied().unwrap_or(0.1)
        };
        let similarity = match (anchor_vector, embeddings.of(candidate)) {
            (Some(a), Some(c)) => dot(a, c),
            _ => 0.0,
        };
        let similar = if anchor_vector.is_some() && embeddings.of(candidate).is_some() {
            0.5 + 0.5 * similarity.max(0.0)
        } else {
            UNKNOWN_SIMILARITY
        };
        let popularity = data.popularity.recent[candidate.ix()].ln_1p() / max_log_pop;
        let step = 1.0 - 0.5 * (ratio - 1.0) / (max_ratio - 1.0).max(1e-6);
        let brand = if anchor_brand != NONE && items.brand[candidate.ix()] == anchor_brand {
            1.1
        } else {
            1.0
        };
        UpsellCandidate {
            item: candidate,
            score: closeness * similar * (0.2 + popularity) * step * brand,
            price_ratio: ratio,
            similarity,
        }
    };

    let mut out: Vec<UpsellCandidate> = Vec::new();
    if anchor_vector.is_some() {
        let neighbour_ok = |candidate: ItemIdx| {
            in_band(candidate)
                && (leaf == NONE
                    || shared_depth(candidate).is_some_and(|d| d <= MAX_NEIGHBOUR_DEPTH))
                && allow(candidate)
        };
        // With categories, the precomputed list only: a price band and a category are a
        // selective filter, and the category candidates below fill what the list lacks.
        // Without, the neighbours are the only candidates: search beyond the list.
        let beyond_list = leaf == NONE;
        for s in model.similar_to(
            anchor,
            NEIGHBOURS_PER_RESULT * limit,
            beyond_list,
            &neighbour_ok,
        ) {
            let depth = if leaf == NONE {
                0
            } else {
                shared_depth(s.item).unwrap_or(CLOSENESS.len())
            };
            out.push(score(s.item, depth));
        }
    }
    for (depth, &category) in lineage.iter().enumerate() {
        for &c in data.popularity.top_in_category(category) {
            let candidate = ItemIdx(c);
            if !in_band(candidate) || out.iter().any(|o| o.item == candidate) || !allow(candidate) {
                continue;
            }
            out.push(score(candidate, depth));
        }
        if out.len() >= limit {
            break;
        }
    }
    out.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
    out.truncate(limit);
    out
}
