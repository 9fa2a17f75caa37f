//! Customers like them: each customer's nearest customers by purchase history, and what those
//! customers buy, precomputed so a request reads one list.
//!
//! A customer's vector is their time-decayed item frequencies (the history weights), scaled to
//! unit length; similarity is the cosine, computed through an inverted index over items, as
//! TIFU-KNN does with its (differently decayed) vectors (Hu et al., "Modeling Personalized Item
//! Frequency Information for Next-basket Recommendation", SIGIR 2020). Each customer's list is
//! `score(i) = Σ_n sim(c, n) · v_n(i)` over their [`NEIGHBOURS`] nearest customers, the top
//! [`ITEMS_PER_CUSTOMER`] kept; items they bought themselves are included (neighbours re-buying
//! an item is evidence it will be re-bought).
//!
//! Cost: for each customer, the postings of their items. Items held by more than
//! [`MAX_POSTINGS`] customers are skipped when finding neighbours (like stop words, they say
//! little about taste and would make the cost quadratic in customers).

use rayon::prelude::*;

use crate::ids::CustomerIdx;
use crate::lists::{flatten, keep_best, keep_best_unordered};
use crate::model::{CustomerTable, NeighbourItem};

/// Nearest customers per customer.
pub const NEIGHBOURS: usize = 50;
/// Items kept per customer.
pub const ITEMS_PER_CUSTOMER: usize = 100;
/// Items bought by more customers than this do not count towards similarity.
const MAX_POSTINGS: usize = 20_000;

/// Per customer, the items their nearest customers buy, best first, each marked when the
/// customer bought it too: CSR offsets and entries.
pub fn neighbour_items(
    customers: &CustomerTable,
    n_items: usize,
) -> (Vec<u32>, Vec<NeighbourItem>) {
    let n = customers.len();
    let norms: Vec<f32> = (0..n)
        .map(|c| {
            customers
                .history(CustomerIdx(c as u32))
                .iter()
                .map(|h| h.weight * h.weight)
                .sum::<f32>()
                .sqrt()
        })
        .collect();
    let mut postings: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n_items];
    for (c, &norm) in norms.iter().enumerate() {
        if norm <= 0.0 {
            continue;
        }
        for h in customers.history(CustomerIdx(c as u32)) {
            postings[h.item as usize].push((c as u32, h.weight / norm));
        }
    }
    let lists: Vec<Vec<NeighbourItem>> = (0..n)
        .into_par_iter()
        .map_init(
            || {
                (
                    vec![0.0f32; n],
                    Vec::<u32>::new(),
                    vec![0.0f32; n_items],
                    Vec::<u32>::new(),
                )
            },
            |(sims, touched, scores, items), c| {
                if norms[c] <= 0.0 {
                    return Vec::new();
                }
                for h in customers.history(CustomerIdx(c as u32)) {
                    let list = &postings[h.item as usize];
                    if list.len() > MAX_POSTINGS {
                        continue;
                    }
                    let mine = h.weight / norms[c];
                    for &(other, theirs) in list {
                        if other as usize == c {
                            continue;
                        }
                        if sims[other as usize] == 0.0 {
                            touched.push(other);
                        }
                        sims[other as usize] += mine * theirs;
                    }
                }
                let mut nearest: Vec<(u32, f32)> =
                    touched.iter().map(|&o| (o, sims[o as usize])).collect();
                for &o in touched.iter() {
                    sims[o as usize] = 0.0;
                }
                touched.clear();
                let closer =
                    |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
                keep_best_unordered(&mut nearest, NEIGHBOURS, closer);
                for &(other, sim) in &nearest {
                    let o = other as usize;
                    for h in customers.history(CustomerIdx(other)) {
                        let i = h.item as usize;
                        if scores[i] == 0.0 {
                            items.push(h.item);
                        }
                        scores[i] += sim * h.weight / norms[o];
                    }
                }
                let mut list: Vec<(u32, f32)> =
                    items.iter().map(|&i| (i, scores[i as usize])).collect();
                for &i in items.iter() {
                    scores[i as usize] = 0.0;
                }
                items.clear();
                keep_best(&mut list, ITEMS_PER_CUSTOMER, closer);
                let own = customers.history(CustomerIdx(c as u32));
                list.into_iter()
                    .map(|(item, score)| NeighbourItem {
                        item,
                        score,
                        bought: own.binary_search_by_key(&item, |h| h.item).is_ok(),
                    })
                    .collect()
            },
        )
        .collect();
    flatten(lists)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HistoryEntry;

    fn table(histories: &[&[u32]]) -> CustomerTable {
        let mut t = CustomerTable::default();
        t.history_offsets.push(0);
        for (c, items) in histories.iter().enumerate() {
            t.ids.push(format!("c{c}"));
            for &item in *items {
                t.history.push(HistoryEntry {
                    item,
                    purchases: 1,
                    weight: 1.0,
                    last_purchase: 0,
                    interval_days: f32::NAN,
                });
            }
            t.history_offsets.push(t.history.len() as u32);
        }
        t
    }

    #[test]
    fn customers_get_what_customers_with_their_taste_buy() {
        // Tea drinkers (0, 1, 2) also buy biscuits (3); coffee drinkers (10, 11) buy cake (13).
        let t = table(&[
            &[0, 1, 3],
            &[0, 2, 3],
            &[1, 2, 3],
            &[10, 11, 13],
            &[10, 11],
            &[0, 1],
        ]);
        let (offsets, items) = neighbour_items(&t, 14);
        assert_eq!(offsets.len(), 7);
        let of = |c: usize| &items[offsets[c] as usize..offsets[c + 1] as usize];
        let last = of(5);
        assert_eq!(
            last.first().map(|e| e.item),
            Some(3),
            "biscuits first: {last:?}"
        );
        assert!(
            last.iter().all(|e| e.item < 10),
            "nothing from the coffee side"
        );
        assert!(
            last.windows(2).all(|w| w[0].score >= w[1].score),
            "best first"
        );
        assert!(
            of(4).iter().any(|e| e.item == 13),
            "cake for the coffee drinker"
        );
    }
}
