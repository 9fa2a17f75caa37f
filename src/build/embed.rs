//! Item embeddings from order baskets: a truncated eigendecomposition of the item-item matrix
//! of positive pointwise mutual information (PPMI), computed with ndarray.
//!
//! The method is the count-based counterpart of word2vec's skip-gram with negative sampling
//! (Levy and Goldberg, "Neural word embedding as implicit matrix factorization", NeurIPS 2014),
//! applied to baskets as item2vec applies SGNS to them (Barkan and Koenigstein, "Item2Vec",
//! MLSP 2016), with the hyper-parameters Levy, Goldberg and Dagan found to matter ("Improving
//! distributional similarity with lessons learned from word embeddings", TACL 2015): context
//! distribution smoothing with exponent 0.75 and eigenvalue weighting `p = 0.5`.
//!
//! 1. Items in at least `embedding_min_orders` orders form the vocabulary. `C_ij` counts the
//!    orders holding both (a basket of `n > basket_cap` items adds `basket_cap / (n − 1)`, as in
//!    `cooccur`); `c_i = Σ_j C_ij`, `D = Σ_i c_i`, `s_i = c_i^0.75`, `S = Σ_i s_i`.
//! 2. `PPMI_ij = max(0, ln(C_ij / D) − ln(s_i / S) − ln(s_j / S))`, the `embedding_row_entries`
//!    largest per item kept, made symmetric (an entry kept by either item is kept for both).
//! 3. The top `embedding_dim` eigenpairs of that symmetric sparse matrix by the randomised
//!    range finder with power iterations (Halko, Martinsson and Tropp, "Finding structure with
//!    randomness", SIAM Review 2011, algorithms 4.4 and 5.3): `Y = M Ω` with a seeded random
//!    `Ω`, orthonormalised and multiplied by `M` again `embedding_power_iterations` times, then
//!    the small matrix `Qᵀ M Q` decomposed exactly (nalgebra). The item vector is
//!    `U_i · sqrt(max(λ, 0))`, scaled to unit length for cosine search.
//! 4. Rarer items get the normalised mean of the vectors of the items they were bought with
//!    ([`VectorSource::Baskets`]); items bought only with other rare items get the centroid of
//!    their category, or its nearest ancestor that has one ([`VectorSource::Category`]); the rest,
//!    and catalogue items nobody ordered, have none and are never returned by similarity search.
//!
//! Deterministic for a given log, configuration and seed: rows are computed independently and
//! summed in a fixed order, and the random projection comes from a seeded ChaCha generator.

use nalgebra::{DMatrix, SymmetricEigen};
use ndarray::{Array2, ArrayView2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::baskets::Baskets;
use crate::config::BuildConfig;
use crate::model::{CategoryTable, Embeddings, NONE, VectorSource};
use crate::progress::StageProgress;

/// Extra random directions beyond the requested dimension (Halko et al. recommend 5 to 10 at
/// least; more makes the leading eigenvectors more accurate for little cost).
const OVERSAMPLING: usize = 16;
/// Context distribution smoothing exponent (Levy et al. 2015).
const SMOOTHING: f64 = 0.75;
/// Directions whose Gram eigenvalue falls below this share of the largest are dropped when
/// orthonormalising (they are numerically dependent).
const RANK_TOLERANCE: f64 = 1e-10;

/// Computes every item's vector (see the module documentation).
pub fn compute(
    baskets: &Baskets,
    counts: &[u32],
    item_category: &[u32],
    categories: &CategoryTable,
    cfg: &BuildConfig,
    progress: &StageProgress,
) -> Embeddings {
    let n_items = baskets.n_items();
    let dim = cfg.embedding_dim;
    let mut out = Embeddings {
        dim,
        vectors: vec![0.0; n_items * dim],
        source: vec![VectorSource::None; n_items],
    };
    if dim == 0 {
        return out;
    }
    let vocabulary: Vec<u32> = (0..n_items as u32)
        .filter(|&i| counts[i as usize] >= cfg.embedding_min_orders)
        .collect();
    // Fewer items than dimensions: nothing worth factorising.
    if vocabulary.len() <= dim {
        return out;
    }
    let mut position = vec![NONE; n_items];
    for (k, &i) in vocabulary.iter().enumerate() {
        position[i as usize] = k as u32;
    }
    let ppmi = ppmi_matrix(baskets, &vocabulary, &position, cfg, progress);
    let vectors = leading_eigenvectors(&ppmi, dim, cfg);
    for (k, &item) in vocabulary.iter().enumerate() {
        let row = vectors.row(k);
        let target = &mut out.vectors[item as usize * dim..(item as usize + 1) * dim];
        for (t, v) in target.iter_mut().zip(row.iter()) {
            *t = *v as f32;
        }
        if normalise(target) {
            out.source[item as usize] = VectorSource::Orders;
        }
    }
    derive_rare_vectors(baskets, counts, item_category, categories, &mut out);
    out
}

/// A symmetric sparse matrix in CSR form over the vocabulary's positions.
struct SparseSymmetric {
    offsets: Vec<usize>,
    columns: Vec<u32>,
    /// f32: the matrix dominates the stage's memory; products accumulate in f64.
    values: Vec<f32>,
}

impl SparseSymmetric {
    fn n(&self) -> usize {
        self.offsets.len() - 1
    }

    /// `self · x` for a dense row-major `x` with `k` columns.
    fn times(&self, x: ArrayView2<'_, f64>) -> Array2<f64> {
        let k = x.ncols();
        let mut out = Array2::<f64>::zeros((self.n(), k));
        let x = x.as_standard_layout();
        let x_flat = x.as_slice().unwrap_or(&[]);
        if let Some(flat) = out.as_slice_mut() {
            flat.par_chunks_mut(k).enumerate().for_each(|(row, acc)| {
                for e in self.offsets[row]..self.offsets[row + 1] {
                    let col = self.columns[e] as usize;
                    let v = f64::from(self.values[e]);
                    for (a, b) in acc.iter_mut().zip(&x_flat[col * k..(col + 1) * k]) {
                        *a += v * b;
                    }
                }
            });
        }
        out
    }
}

/// Basket weight: 1, or `cap / (n − 1)` for baskets larger than `cap`; 0 beyond the maximum.
fn basket_weight(n: usize, cfg: &BuildConfig) -> f64 {
    if n > cfg.max_basket_items {
        0.0
    } else {
        (cfg.basket_cap as f64 / n.saturating_sub(1).max(1) as f64).min(1.0)
    }
}

fn ppmi_matrix(
    baskets: &Baskets,
    vocabulary: &[u32],
    position: &[u32],
    cfg: &BuildConfig,
    progress: &StageProgress,
) -> SparseSymmetric {
    let n = vocabulary.len();
    // c_i in closed form: every order holding i adds its weight once per other vocabulary item.
    let marginal: Vec<f64> = vocabulary
        .par_iter()
        .map(|&i| {
            baskets
                .orders_with(i)
                .iter()
                .map(|&o| {
                    let items = baskets.order_items(o);
                    let others = items
                        .iter()
                        .filter(|&&j| j != i && position[j as usize] != NONE)
                        .count();
                    basket_weight(items.len(), cfg) * others as f64
                })
                .sum()
        })
        .collect();
    let total: f64 = marginal.iter().sum();
    let smoothed: Vec<f64> = marginal.iter().map(|c| c.powf(SMOOTHING)).collect();
    let smoothed_total: f64 = smoothed.iter().sum();
    let log_share: Vec<f64> = smoothed
        .iter()
        .map(|s| (s / smoothed_total).max(f64::MIN_POSITIVE).ln())
        .collect();
    let log_total = total.max(f64::MIN_POSITIVE).ln();

    // One dense accumulator per thread; each row's kept entries as (row, column, value).
    let rows: Vec<Vec<(u32, u32, f32)>> = (0..n)
        .into_par_iter()
        .map_init(
            || (vec![0.0f64; n], Vec::<u32>::new()),
            |(acc, touched), k| {
                let i = vocabulary[k];
                for &o in baskets.orders_with(i) {
                    let items = baskets.order_items(o);
                    let w = basket_weight(items.len(), cfg);
                    if w == 0.0 {
                        continue;
                    }
                    for &j in items {
                        let p = position[j as usize];
                        if j == i || p == NONE {
                            continue;
                        }
                        if acc[p as usize] == 0.0 {
                            touched.push(p);
                        }
                        acc[p as usize] += w;
                    }
                }
                let mut row: Vec<(u32, u32, f32)> = touched
                    .iter()
                    .filter_map(|&p| {
                        let pmi =
                            acc[p as usize].ln() - log_total - log_share[k] - log_share[p as usize];
                        (pmi > 0.0).then_some((k as u32, p, pmi as f32))
                    })
                    .collect();
                for &p in touched.iter() {
                    acc[p as usize] = 0.0;
                }
                touched.clear();
                let keep = cfg.embedding_row_entries;
                let larger = |a: &(u32, u32, f32), b: &(u32, u32, f32)| {
                    b.2.total_cmp(&a.2).then(a.1.cmp(&b.1))
                };
                crate::lists::keep_best_unordered(&mut row, keep, larger);
                if k % 1024 == 1023 {
                    progress.add(1024);
                }
                row
            },
        )
        .collect();

    // Symmetrise: an entry kept by either row is kept for both (PMI itself is symmetric).
    let mut entries: Vec<(u32, u32, f32)> = rows
        .into_iter()
        .flatten()
        .flat_map(|(r, c, v)| [(r, c, v), (c, r, v)])
        .collect();
    entries.par_sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    entries.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let mut offsets = vec![0usize; n + 1];
    for e in &entries {
        offsets[e.0 as usize + 1] += 1;
    }
    for r in 0..n {
        offsets[r + 1] += offsets[r];
    }
    SparseSymmetric {
        offsets,
        columns: entries.iter().map(|e| e.1).collect(),
        values: entries.iter().map(|e| e.2).collect(),
    }
}

/// An orthonormal basis of the column space of `y` (columns of numerically zero weight
/// dropped), from the eigendecomposition of its Gram matrix, applied twice for accuracy (as
/// CholeskyQR2 does).
fn orthonormal_basis(y: Array2<f64>) -> Array2<f64> {
    let mut q = y;
    for _ in 0..2 {
        let gram = q.t().dot(&q);
        let k = gram.nrows();
        let eigen = SymmetricEigen::new(DMatrix::from_fn(k, k, |r, c| gram[[r, c]]));
        let largest = eigen.eigenvalues.iter().copied().fold(0.0f64, f64::max);
        let kept: Vec<usize> = (0..k)
            .filter(|&c| eigen.eigenvalues[c] > RANK_TOLERANCE * largest)
            .collect();
        let transform = Array2::from_shape_fn((k, kept.len()), |(r, c)| {
            eigen.eigenvectors[(r, kept[c])] / eigen.eigenvalues[kept[c]].sqrt()
        });
        q = q.dot(&transform);
    }
    q
}

/// The leading `dim` eigenvectors of `m`, each scaled by the square root of its (positive)
/// eigenvalue: one row per vocabulary item.
fn leading_eigenvectors(m: &SparseSymmetric, dim: usize, cfg: &BuildConfig) -> Array2<f64> {
    let n = m.n();
    let k = (dim + OVERSAMPLING).min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.embedding_seed);
    let omega = Array2::from_shape_fn((n, k), |_| rng.random_range(-1.0..1.0));
    let mut q = orthonormal_basis(m.times(omega.view()));
    for _ in 0..cfg.embedding_power_iterations {
        q = orthonormal_basis(m.times(q.view()));
    }
    let mq = m.times(q.view());
    let small = q.t().dot(&mq);
    let r = small.nrows();
    // Symmetrise away rounding before the exact decomposition.
    let eigen = SymmetricEigen::new(DMatrix::from_fn(r, r, |a, b| {
        0.5 * (small[[a, b]] + small[[b, a]])
    }));
    let mut order: Vec<usize> = (0..r).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    order.truncate(dim);
    let scaled = Array2::from_shape_fn((r, order.len()), |(row, c)| {
        eigen.eigenvectors[(row, order[c])] * eigen.eigenvalues[order[c]].max(0.0).sqrt()
    });
    let vectors = q.dot(&scaled);
    // A rank-deficient matrix yields fewer directions: pad with zero columns.
    let vectors = if vectors.ncols() < dim {
        Array2::from_shape_fn((n, dim), |(row, c)| {
            if c < vectors.ncols() {
                vectors[[row, c]]
            } else {
                0.0
            }
        })
    } else {
        vectors
    };
    debug_assert_eq!(vectors.len_of(Axis(1)), dim);
    vectors
}

/// Scales `v` to unit length; false (and unchanged) when it is zero.
pub fn normalise(v: &mut [f32]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm <= f32::EPSILON || !norm.is_finite() {
        v.iter_mut().for_each(|x| *x = 0.0);
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
}

/// Vectors for items outside the vocabulary: the mean over their orders of the vocabulary
/// items bought with them, else their category's (or nearest ancestor's) centroid.
fn derive_rare_vectors(
    baskets: &Baskets,
    counts: &[u32],
    item_category: &[u32],
    categories: &CategoryTable,
    out: &mut Embeddings,
) {
    let dim = out.dim;
    let n_items = out.source.len();
    let mut derived: Vec<(u32, Vec<f32>)> = (0..n_items as u32)
        .into_par_iter()
        .filter(|&i| out.source[i as usize] == VectorSource::None)
        .filter_map(|i| {
            let mut sum = vec![0.0f32; dim];
            for &o in baskets.orders_with(i) {
                for &j in baskets.order_items(o) {
                    if out.source[j as usize] == VectorSource::Orders {
                        let v = &out.vectors[j as usize * dim..(j as usize + 1) * dim];
                        sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
                    }
                }
            }
            normalise(&mut sum).then_some((i, sum))
        })
        .collect();
    for (i, v) in derived.drain(..) {
        out.vectors[i as usize * dim..(i as usize + 1) * dim].copy_from_slice(&v);
        out.source[i as usize] = VectorSource::Baskets;
    }

    // Category centroids of the items embedded so far, summed up the category tree.
    let n_categories = categories.paths.len();
    let mut centroid = vec![0.0f32; n_categories * dim];
    for i in 0..n_items {
        if out.source[i] == VectorSource::None || item_category.get(i).is_none_or(|&c| c == NONE) {
            continue;
        }
        for c in categories.lineage(item_category[i]) {
            let target = &mut centroid[c as usize * dim..(c as usize + 1) * dim];
            let v = &out.vectors[i * dim..(i + 1) * dim];
            target.iter_mut().zip(v).for_each(|(s, x)| *s += x);
        }
    }
    let has_centroid: Vec<bool> = centroid.chunks_mut(dim).map(normalise).collect();
    for (i, &orders) in counts.iter().enumerate().take(n_items) {
        let leaf = item_category.get(i).copied().unwrap_or(NONE);
        // Catalogue items nobody ordered stay without: they would all share their category's
        // centroid, and a graph of many identical points is slow to build and to search.
        if out.source[i] != VectorSource::None || leaf == NONE || orders == 0 {
            continue;
        }
        if let Some(c) = categories.lineage(leaf).find(|&c| has_centroid[c as usize]) {
            let (from, to) = (c as usize * dim, (c as usize + 1) * dim);
            out.vectors[i * dim..(i + 1) * dim].copy_from_slice(&centroid[from..to]);
            out.source[i] = VectorSource::Category;
        }
    }
}

/// Rows of item vectors multiplied per block in [`nearest_indexed`]: a block's scores against
/// 100k items take `BLOCK × 100k × 4` bytes.
const BLOCK: usize = 512;

/// The `k` most similar items with their own vector (see `Embeddings::indexed`) for each of
/// `queries`, each query's own item excluded; exact, by blocked matrix products (ndarray), so
/// build stages can ask for tens of thousands of items at once.
pub fn nearest_indexed(embeddings: &Embeddings, queries: &[u32], k: usize) -> Vec<Vec<(u32, f32)>> {
    let dim = embeddings.dim;
    let indexed: Vec<u32> = (0..embeddings.source.len() as u32)
        .filter(|&i| embeddings.source[i as usize] == VectorSource::Orders)
        .collect();
    if dim == 0 || indexed.is_empty() || k == 0 {
        return vec![Vec::new(); queries.len()];
    }
    let row = |i: u32| &embeddings.vectors[i as usize * dim..(i as usize + 1) * dim];
    let targets = Array2::from_shape_fn((dim, indexed.len()), |(d, t)| row(indexed[t])[d]);
    queries
        .par_chunks(BLOCK)
        .flat_map_iter(|block| {
            let q = Array2::from_shape_fn((block.len(), dim), |(r, d)| row(block[r])[d]);
            let scores = q.dot(&targets);
            block
                .iter()
                .enumerate()
                .map(|(r, &item)| {
                    // A sorted top-k by insertion: k is small, and a full candidate vector per
                    // query would cost gigabytes over tens of thousands of queries.
                    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
                    for (&s, &t) in scores.row(r).iter().zip(&indexed) {
                        if t == item || (best.len() == k && s <= best[k - 1].1) {
                            continue;
                        }
                        let at = best.partition_point(|b| b.1 >= s);
                        best.insert(at, (t, s));
                        best.truncate(k);
                    }
                    best
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::seq::IndexedRandom;

    use crate::build::model_from_log;
    use crate::config::BuildConfig;
    use crate::ids::{Interner, ItemIdx};
    use crate::ingest::{OrderHeader, OrderLine, OrderLog};
    use crate::model::{ModelData, VectorSource, dot};
    use crate::progress::{Progress, StageClock};

    /// Two themes of 60 items each (0..60 and 60..120); every basket holds 4 items of one theme.
    /// Item 120 was bought once, with theme-A items; item 121 is in the catalogue only.
    fn themed(seed: u64) -> ModelData {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut log = OrderLog {
            items: Interner::from_names((0..122).map(|i| format!("i{i}")).collect()),
            customers: Interner::from_names(vec!["c".into()]),
            ..Default::default()
        };
        let add = |items: &mut Vec<u32>, log: &mut OrderLog| {
            items.sort_unstable();
            items.dedup();
            let o = log.orders.len() as u32;
            log.orders.push(OrderHeader {
                customer: crate::ingest::GUEST,
                timestamp: o as i64,
            });
            log.lines.extend(items.iter().map(|&item| OrderLine {
                order: o,
                item,
                quantity: 1.0,
                unit_price: 1.0,
            }));
        };
        let theme_a: Vec<u32> = (0..60).collect();
        let theme_b: Vec<u32> = (60..120).collect();
        for b in 0..1_500 {
            let theme = if b % 2 == 0 { &theme_a } else { &theme_b };
            let mut items: Vec<u32> = (0..4)
                .map(|_| *theme.choose(&mut rng).expect("items"))
                .collect();
            add(&mut items, &mut log);
        }
        add(&mut vec![120, 1, 2, 3], &mut log);
        log.line_titles = vec![None; 122];
        let cfg = BuildConfig {
            embedding_dim: 8,
            ..BuildConfig::default()
        };
        model_from_log(
            &log,
            &[],
            &cfg,
            &mut StageClock::default(),
            &Progress::hidden(),
        )
    }

    #[test]
    fn items_of_one_theme_are_closer_than_items_of_two() {
        let data = themed(1);
        let e = &data.embeddings;
        let v = |i: u32| e.of(ItemIdx(i)).expect("vector");
        let mean = |pairs: &[(u32, u32)]| {
            pairs.iter().map(|&(a, b)| dot(v(a), v(b))).sum::<f32>() / pairs.len() as f32
        };
        let within: Vec<(u32, u32)> = (0..50)
            .map(|i| (i, i + 1))
            .chain((60..110).map(|i| (i, i + 1)))
            .collect();
        let across: Vec<(u32, u32)> = (0..50).map(|i| (i, i + 60)).collect();
        let (w, a) = (mean(&within), mean(&across));
        assert!(w > a + 0.3, "within {w} vs across {a}");
        // Vectors are unit length.
        assert!((dot(v(7), v(7)) - 1.0).abs() < 1e-4);
    }

    #[test]
    fn rare_items_borrow_their_basket_mates_vectors_and_unsold_ones_get_none() {
        let data = themed(1);
        let e = &data.embeddings;
        assert_eq!(e.source[5], VectorSource::Orders);
        assert_eq!(e.source[120], VectorSource::Baskets);
        assert_eq!(e.source[121], VectorSource::None);
        let rare = e.of(ItemIdx(120)).expect("derived vector");
        let to_a = dot(rare, e.of(ItemIdx(10)).expect("a"));
        let to_b = dot(rare, e.of(ItemIdx(70)).expect("b"));
        assert!(to_a > to_b, "{to_a} vs {to_b}");
    }

    #[test]
    fn the_same_orders_and_seed_give_the_same_vectors() {
        assert_eq!(themed(1).embeddings.vectors, themed(1).embeddings.vectors);
    }
}
