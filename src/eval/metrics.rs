//! Ranking metrics of `cobuy eval`, as defined in "A Next Basket Recommendation Reality Check"
//! (Li et al., TOIS 2023), and their aggregation over users and folds.
//!
//! For one user with ranked list `P` (best first) and target basket `T`:
//! - `Recall@K = |P[..K] ∩ T| / |T|`;
//! - `PHR@K` (personal hit ratio) is 1 when `P[..K] ∩ T` is not empty;
//! - `NDCG@K = DCG@K / IDCG`, `DCG@K = Σ_{i<K, P[i] ∈ T} 1 / log2(i + 2)` and the ideal DCG sums
//!   over the whole target basket, `IDCG = Σ_{i < |T|} 1 / log2(i + 2)`, not only its first K
//!   items: a list cannot reach NDCG 1 when the basket holds more than K items;
//! - repeat / explore recall: `T` splits into items the user bought before (`T_rep`) and new ones
//!   (`T_expl`); `Recall_rep@K = |P[..K] ∩ T_rep| / |T_rep|`, averaged over users whose target
//!   has repeat items (likewise explore). `explore_hit_share` is the share of all hits that are
//!   explore items.
//!
//! Bought-together hold-out (one target item): `Hit@K` (equal to `Recall@K` with one target),
//! and the reciprocal rank `1 / (rank + 1)` (0 when the item is not ranked at all).

use serde::Serialize;

/// Metrics of one user's list at one cut-off.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BasketScores {
    pub recall: f64,
    pub ndcg: f64,
    pub phr: f64,
    /// `None` when the target has no repeat items.
    pub recall_repeat: Option<f64>,
    /// `None` when the target has no explore items.
    pub recall_explore: Option<f64>,
    pub hits: usize,
    pub explore_hits: usize,
}

/// Scores `ranked[..k]` against `target`; `bought_before` says whether the user bought an
/// item before the target basket. `target` must hold distinct items.
pub fn basket_scores(
    ranked: &[u32],
    target: &[u32],
    k: usize,
    bought_before: impl Fn(u32) -> bool,
) -> BasketScores {
    if target.is_empty() {
        return BasketScores::default();
    }
    let top = &ranked[..k.min(ranked.len())];
    let mut dcg = 0.0;
    let (mut hits, mut repeat_hits, mut explore_hits) = (0usize, 0usize, 0usize);
    for (rank, item) in top.iter().enumerate() {
        if target.contains(item) {
            hits += 1;
            dcg += discount(rank);
            if bought_before(*item) {
                repeat_hits += 1;
            } else {
                explore_hits += 1;
            }
        }
    }
    let idcg: f64 = (0..target.len()).map(discount).sum();
    let repeats = target.iter().filter(|&&i| bought_before(i)).count();
    let explores = target.len() - repeats;
    let share = |hits: usize, of: usize| (of > 0).then(|| hits as f64 / of as f64);
    BasketScores {
        recall: hits as f64 / target.len() as f64,
        ndcg: dcg / idcg,
        phr: if hits > 0 { 1.0 } else { 0.0 },
        recall_repeat: share(repeat_hits, repeats),
        recall_explore: share(explore_hits, explores),
        hits,
        explore_hits,
    }
}

fn discount(rank: usize) -> f64 {
    1.0 / ((rank + 2) as f64).log2()
}

/// Reciprocal rank of `target` in `ranked` (0 when absent).
pub fn reciprocal_rank(ranked: &[u32], target: u32) -> f64 {
    ranked
        .iter()
        .position(|&i| i == target)
        .map_or(0.0, |r| 1.0 / (r + 1) as f64)
}

/// Means of [`BasketScores`] over users: repeat / explore recall over the users that have such
/// target items.
#[derive(Debug, Clone, Copy, Default)]
pub struct BasketMeans {
    n: usize,
    recall: f64,
    ndcg: f64,
    phr: f64,
    repeat: (f64, usize),
    explore: (f64, usize),
    hits: usize,
    explore_hits: usize,
}

impl BasketMeans {
    pub fn add(&mut self, s: &BasketScores) {
        self.n += 1;
        self.recall += s.recall;
        self.ndcg += s.ndcg;
        self.phr += s.phr;
        if let Some(r) = s.recall_repeat {
            self.repeat.0 += r;
            self.repeat.1 += 1;
        }
        if let Some(r) = s.recall_explore {
            self.explore.0 += r;
            self.explore.1 += 1;
        }
        self.hits += s.hits;
        self.explore_hits += s.explore_hits;
    }

    pub fn users(&self) -> usize {
        self.n
    }

    fn mean(sum: f64, n: usize) -> f64 {
        if n == 0 { 0.0 } else { sum / n as f64 }
    }

    pub fn recall(&self) -> f64 {
        Self::mean(self.recall, self.n)
    }

    pub fn ndcg(&self) -> f64 {
        Self::mean(self.ndcg, self.n)
    }

    pub fn phr(&self) -> f64 {
        Self::mean(self.phr, self.n)
    }

    pub fn recall_repeat(&self) -> f64 {
        Self::mean(self.repeat.0, self.repeat.1)
    }

    pub fn recall_explore(&self) -> f64 {
        Self::mean(self.explore.0, self.explore.1)
    }

    pub fn explore_hit_share(&self) -> f64 {
        Self::mean(self.explore_hits as f64, self.hits)
    }
}

/// Mean and sample standard deviation over folds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

impl MeanStd {
    pub fn of(values: &[f64]) -> MeanStd {
        let n = values.len();
        if n == 0 {
            return MeanStd {
                mean: 0.0,
                std: 0.0,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        MeanStd { mean, std }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn recall_phr_and_ndcg_with_the_whole_basket_as_ideal() {
        // Target {1, 2, 3}; ranked [1, 9, 3, 8]; K = 2: one hit at rank 0.
        let before = |i: u32| i == 1;
        let s = basket_scores(&[1, 9, 3, 8], &[1, 2, 3], 2, before);
        assert!(close(s.recall, 1.0 / 3.0));
        assert!(close(s.phr, 1.0));
        // DCG = 1/log2(2) = 1; IDCG over all three target items, not only K = 2 of them.
        let idcg = 1.0 + 1.0 / 3f64.log2() + 1.0 / 4f64.log2();
        assert!(close(s.ndcg, 1.0 / idcg));
        assert!(s.ndcg < 1.0 / (1.0 + 1.0 / 3f64.log2()) + 1e-12);
        // K = 4: hits at ranks 0 and 2.
        let s = basket_scores(&[1, 9, 3, 8], &[1, 2, 3], 4, before);
        assert!(close(s.recall, 2.0 / 3.0));
        assert!(close(s.ndcg, (1.0 + 1.0 / 4f64.log2()) / idcg));
    }

    #[test]
    fn a_perfect_list_scores_one_and_a_miss_zero() {
        let s = basket_scores(&[5, 6], &[6, 5], 10, |_| false);
        assert!(close(s.recall, 1.0) && close(s.ndcg, 1.0) && close(s.phr, 1.0));
        let s = basket_scores(&[7, 8], &[6, 5], 10, |_| false);
        assert!(close(s.recall, 0.0) && close(s.ndcg, 0.0) && close(s.phr, 0.0));
    }

    #[test]
    fn repeat_and_explore_recall_split_the_target() {
        // Items 1, 2 bought before (repeat), 3, 4 new (explore). Ranked hits 1 and 3 and 4.
        let before = |i: u32| i <= 2;
        let s = basket_scores(&[1, 3, 4, 7], &[1, 2, 3, 4], 10, before);
        assert_eq!(s.recall_repeat, Some(0.5));
        assert_eq!(s.recall_explore, Some(1.0));
        assert_eq!((s.hits, s.explore_hits), (3, 2));
        // A target without explore items has no explore recall, and the mean skips it.
        let t = basket_scores(&[1], &[1], 10, before);
        assert_eq!(t.recall_explore, None);
        let mut m = BasketMeans::default();
        m.add(&s);
        m.add(&t);
        assert!(close(m.recall_explore(), 1.0));
        assert!(close(m.recall_repeat(), 0.75));
        assert!(close(m.explore_hit_share(), 2.0 / 4.0));
        assert!(close(m.recall(), (0.75 + 1.0) / 2.0));
    }

    #[test]
    fn reciprocal_rank_and_fold_statistics() {
        assert!(close(reciprocal_rank(&[4, 5, 6], 6), 1.0 / 3.0));
        assert!(close(reciprocal_rank(&[4, 5, 6], 9), 0.0));
        let m = MeanStd::of(&[1.0, 2.0, 3.0]);
        assert!(close(m.mean, 2.0) && close(m.std, 1.0));
        assert!(close(MeanStd::of(&[0.5]).std, 0.0));
    }
}
