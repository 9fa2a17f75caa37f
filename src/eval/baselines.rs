//! The baselines `cobuy eval` reports beside cobuy, computed from the same training data:
//! G-TopFreq, P-TopFreq, GP-TopFreq (as in Li et al., TOIS 2023), TIFU-KNN (Hu et al., "Modeling
//! Personalized Item Frequency Information for Next-basket Recommendation", SIGIR 2020) and the
//! plain co-occurrence count for bought-together.

use std::cell::RefCell;

use rustc_hash::FxHashMap;
use serde::Serialize;

/// Items by the number of training baskets holding them, most first (ties by index).
pub fn global_top(baskets: impl Iterator<Item = impl AsRef<[u32]>>, n_items: usize) -> Vec<u32> {
    let mut count = vec![0u32; n_items];
    for b in baskets {
        for &i in b.as_ref() {
            count[i as usize] += 1;
        }
    }
    let mut items: Vec<u32> = (0..n_items as u32)
        .filter(|&i| count[i as usize] > 0)
        .collect();
    items.sort_by(|&a, &b| count[b as usize].cmp(&count[a as usize]).then(a.cmp(&b)));
    items
}

/// G-TopFreq: the K most popular items.
pub fn g_top_freq(global: &[u32], k: usize) -> Vec<u32> {
    global.iter().take(k).copied().collect()
}

/// P-TopFreq: the user's K most frequent items (baskets holding them), ties broken by the most
/// recent purchase, then index. Shorter than K when the user bought fewer items.
pub fn p_top_freq(history: &[&[u32]], k: usize) -> Vec<u32> {
    let mut stats: FxHashMap<u32, (u32, usize)> = FxHashMap::default();
    for (at, basket) in history.iter().enumerate() {
        for &i in *basket {
            let e = stats.entry(i).or_insert((0, 0));
            e.0 += 1;
            e.1 = at;
        }
    }
    let mut items: Vec<(u32, (u32, usize))> = stats.into_iter().collect();
    items.sort_by(|a, b| (b.1.0, b.1.1).cmp(&(a.1.0, a.1.1)).then(a.0.cmp(&b.0)));
    items.into_iter().take(k).map(|(i, _)| i).collect()
}

/// GP-TopFreq: P-TopFreq filled up to K with G-TopFreq.
pub fn gp_top_freq(history: &[&[u32]], global: &[u32], k: usize) -> Vec<u32> {
    let mut list = p_top_freq(history, k);
    for &i in global {
        if list.len() >= k {
            break;
        }
        if !list.contains(&i) {
            list.push(i);
        }
    }
    list
}

/// TIFU-KNN settings; defaults are the paper's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TifuParams {
    pub neighbours: usize,
    pub within_decay: f32,
    pub group_decay: f32,
    pub alpha: f32,
    pub groups: usize,
}

impl Default for TifuParams {
    fn default() -> Self {
        Self {
            neighbours: 300,
            within_decay: 0.9,
            group_decay: 0.7,
            alpha: 0.7,
            groups: 7,
        }
    }
}

/// A sparse vector sorted by item.
pub type SparseVec = Vec<(u32, f32)>;

/// The TIFU user vector: the history (oldest first) cut into `groups` consecutive groups (one
/// per basket when there are fewer baskets; earlier groups are the smaller ones when the count
/// does not divide); a group is the mean of its baskets' multi-hot vectors, the j-th of `m`
/// weighted `within_decay^(m − j)`; the user vector is the mean of the groups, the i-th of `G`
/// weighted `group_decay^(G − i)`.
pub fn tifu_vector(history: &[&[u32]], p: &TifuParams) -> SparseVec {
    let n = history.len();
    if n == 0 {
        return Vec::new();
    }
    let groups = p.groups.max(1).min(n);
    let base = n / groups;
    let larger = n % groups;
    let mut acc: FxHashMap<u32, f32> = FxHashMap::default();
    let mut start = 0;
    for g in 0..groups {
        let size = if g >= groups - larger { base + 1 } else { base };
        let group_weight = p.group_decay.powi((groups - 1 - g) as i32) / groups as f32;
        for (j, basket) in history[start..start + size].iter().enumerate() {
            let w = group_weight * p.within_decay.powi((size - 1 - j) as i32) / size as f32;
            for &i in *basket {
                *acc.entry(i).or_insert(0.0) += w;
            }
        }
        start += size;
    }
    let mut v: SparseVec = acc.into_iter().collect();
    v.sort_unstable_by_key(|e| e.0);
    v
}

/// TIFU-KNN over a pool of (training) user vectors: Euclidean nearest neighbours, then
/// `alpha · own + (1 − alpha) · mean(neighbours)`.
#[derive(Debug)]
pub struct TifuKnn {
    vectors: Vec<SparseVec>,
    norms2: Vec<f32>,
    postings: FxHashMap<u32, Vec<(u32, f32)>>,
    params: TifuParams,
}

impl TifuKnn {
    pub fn new(vectors: Vec<SparseVec>, params: TifuParams) -> Self {
        let norms2 = vectors
            .iter()
            .map(|v| v.iter().map(|e| e.1 * e.1).sum())
            .collect();
        let mut postings: FxHashMap<u32, Vec<(u32, f32)>> = FxHashMap::default();
        for (u, v) in vectors.iter().enumerate() {
            for &(i, w) in v {
                postings.entry(i).or_default().push((u as u32, w));
            }
        }
        Self {
            vectors,
            norms2,
            postings,
            params,
        }
    }

    /// The top `k` items for a user with vector `own`.
    pub fn recommend(&self, own: &SparseVec, k: usize) -> Vec<u32> {
        let n = self.vectors.len();
        let mut dots = vec![0.0f32; n];
        for &(i, w) in own {
            if let Some(list) = self.postings.get(&i) {
                for &(u, x) in list {
                    dots[u as usize] += w * x;
                }
            }
        }
        let own_norm2: f32 = own.iter().map(|e| e.1 * e.1).sum();
        let mut dist: Vec<(f32, u32)> = (0..n)
            .map(|u| (own_norm2 + self.norms2[u] - 2.0 * dots[u], u as u32))
            .collect();
        let kn = self.params.neighbours.min(n);
        if kn < n && kn > 0 {
            dist.select_nth_unstable_by(kn - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        }
        dist.truncate(kn);
        let alpha = self.params.alpha;
        let mut score: FxHashMap<u32, f32> = FxHashMap::default();
        for &(i, w) in own {
            *score.entry(i).or_insert(0.0) += alpha * w;
        }
        if kn > 0 {
            let each = (1.0 - alpha) / kn as f32;
            for &(_, u) in &dist {
                for &(i, w) in &self.vectors[u as usize] {
                    *score.entry(i).or_insert(0.0) += each * w;
                }
            }
        }
        let mut ranked: Vec<(u32, f32)> = score.into_iter().filter(|e| e.1 > 0.0).collect();
        let by_score = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        crate::lists::keep_best(&mut ranked, k, by_score);
        ranked.into_iter().map(|e| e.0).collect()
    }
}

/// Plain co-occurrence counts over training baskets: an item's score for a basket is the number
/// of training baskets holding it together with each basket item, summed over the basket.
#[derive(Debug)]
pub struct CooccurrenceCount {
    baskets: Vec<Vec<u32>>,
    postings: Vec<Vec<u32>>,
    global: Vec<u32>,
    /// Each item's counts with every item, for items whose baskets hold at least
    /// [`MEMO_MIN_LINES`] lines (see [`CooccurrenceCount::memoize`]).
    memo: FxHashMap<u32, Vec<(u32, u32)>>,
}

/// Items whose baskets hold at least this many lines get their counts summed once by
/// [`CooccurrenceCount::memoize`]: a popular item (milk, bananas) is in tens of thousands of
/// baskets, and walking them again for each of the thousands of cases it appears in was half of
/// the bought-together protocol's time on completejourney.
const MEMO_MIN_LINES: usize = 2_000;

impl CooccurrenceCount {
    pub fn new(baskets: Vec<Vec<u32>>, n_items: usize) -> Self {
        let mut postings = vec![Vec::new(); n_items];
        for (b, items) in baskets.iter().enumerate() {
            for &i in items {
                postings[i as usize].push(b as u32);
            }
        }
        let global = global_top(baskets.iter(), n_items);
        Self {
            baskets,
            postings,
            global,
            memo: FxHashMap::default(),
        }
    }

    /// Sums, once and in parallel, the counts of the `items` (the contexts' items) that are in
    /// many baskets, so that [`CooccurrenceCount::recommend`] adds one list per such item
    /// instead of walking its baskets. Answers are unchanged.
    pub fn memoize(&mut self, items: impl IntoIterator<Item = u32>) {
        self.memoize_above(items, MEMO_MIN_LINES);
    }

    fn memoize_above(&mut self, items: impl IntoIterator<Item = u32>, min_lines: usize) {
        use rayon::prelude::*;
        let mut heavy: Vec<u32> = items
            .into_iter()
            .filter(|&c| self.lines_of(c) >= min_lines && !self.memo.contains_key(&c))
            .collect();
        heavy.sort_unstable();
        heavy.dedup();
        let n_items = self.postings.len();
        let this = &*self;
        let lists: Vec<(u32, Vec<(u32, u32)>)> = heavy
            .par_iter()
            .map_init(
                || vec![0u32; n_items],
                |count, &c| {
                    let mut touched = Vec::new();
                    this.add_walk(c, count, &mut touched);
                    let list = touched
                        .iter()
                        .map(|&i| (i, std::mem::take(&mut count[i as usize])))
                        .collect();
                    (c, list)
                },
            )
            .collect();
        self.memo.extend(lists);
    }

    /// Lines in the baskets holding `item`: the work of walking them.
    fn lines_of(&self, item: u32) -> usize {
        self.postings.get(item as usize).map_or(0, |p| {
            p.iter().map(|&b| self.baskets[b as usize].len()).sum()
        })
    }

    /// Adds `item`'s co-occurrence counts into `count` by walking its baskets, recording each
    /// item whose count leaves zero in `touched`.
    fn add_walk(&self, item: u32, count: &mut [u32], touched: &mut Vec<u32>) {
        for &b in self
            .postings
            .get(item as usize)
            .map_or(&[][..], Vec::as_slice)
        {
            for &i in &self.baskets[b as usize] {
                tally(count, touched, i, 1);
            }
        }
    }

    /// The top `k` items for `context` (never a context item), ties by index, filled up with
    /// popular items. Counts go into a per-thread dense array (reset through the touched
    /// items), since a context of popular items walks hundreds of thousands of basket lines.
    pub fn recommend(&self, context: &[u32], k: usize) -> Vec<u32> {
        thread_local! {
            static COUNTS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
        }
        COUNTS.with_borrow_mut(|count| {
            count.resize(self.postings.len(), 0);
            let mut touched: Vec<u32> = Vec::new();
            for &c in context {
                match self.memo.get(&c) {
                    Some(list) => {
                        for &(i, n) in list {
                            tally(count, &mut touched, i, n);
                        }
                    }
                    None => self.add_walk(c, count, &mut touched),
                }
            }
            let mut ranked: Vec<(u32, u32)> = touched
                .iter()
                .map(|&i| (i, std::mem::take(&mut count[i as usize])))
                .filter(|(i, _)| !context.contains(i))
                .collect();
            crate::lists::keep_best(&mut ranked, k, |a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut list: Vec<u32> = ranked.into_iter().map(|e| e.0).collect();
            for &i in &self.global {
                if list.len() >= k {
                    break;
                }
                if !context.contains(&i) && !list.contains(&i) {
                    list.push(i);
                }
            }
            list
        })
    }
}

/// Adds `n` to `item`'s count, recording the item in `touched` when its count leaves zero.
fn tally(count: &mut [u32], touched: &mut Vec<u32>, item: u32, n: u32) {
    let c = &mut count[item as usize];
    if *c == 0 {
        touched.push(item);
    }
    *c += n;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_freq_baselines() {
        let baskets: Vec<Vec<u32>> = vec![vec![1, 2], vec![2, 3], vec![2], vec![4]];
        let global = global_top(baskets.iter(), 5);
        assert_eq!(global, [2, 1, 3, 4]);
        assert_eq!(g_top_freq(&global, 2), [2, 1]);
        let history: Vec<&[u32]> = vec![&[3, 4], &[4], &[1]];
        // 4 twice; then 1 (more recent) before 3.
        assert_eq!(p_top_freq(&history, 10), [4, 1, 3]);
        assert_eq!(gp_top_freq(&history, &global, 4), [4, 1, 3, 2]);
    }

    #[test]
    fn tifu_vector_follows_the_paper_weights() {
        let p = TifuParams {
            groups: 2,
            within_decay: 0.5,
            group_decay: 0.5,
            ..Default::default()
        };
        // Three baskets in two groups: [b0], [b1, b2] (the later group is the larger).
        let history: Vec<&[u32]> = vec![&[1], &[1, 2], &[3]];
        let v = tifu_vector(&history, &p);
        // Group 0 = {1: 1}, weight 0.5/2. Group 1 = (0.5·{1,2} + 1·{3}) / 2, weight 1/2.
        let expect = [(1, 0.25 + 0.125), (2, 0.125), (3, 0.25)];
        assert_eq!(v.len(), 3);
        for ((i, w), (ei, ew)) in v.iter().zip(expect) {
            assert_eq!(*i, ei);
            assert!((w - ew).abs() < 1e-6, "{i}: {w} vs {ew}");
        }
    }

    #[test]
    fn tifu_knn_mixes_own_and_nearest_neighbours() {
        let p = TifuParams {
            neighbours: 1,
            alpha: 0.5,
            ..Default::default()
        };
        // The nearest pool user to {1} is {1, 5}, not {7, 8, 9}.
        let knn = TifuKnn::new(
            vec![vec![(1, 1.0), (5, 1.0)], vec![(7, 1.0), (8, 1.0), (9, 1.0)]],
            p,
        );
        let ranked = knn.recommend(&vec![(1, 1.0)], 10);
        assert_eq!(ranked, [1, 5]);
    }

    #[test]
    fn cooccurrence_counts_sum_over_the_basket_and_skip_it() {
        let baskets = vec![vec![1, 2], vec![1, 2, 3], vec![3, 4], vec![1, 4], vec![4]];
        let cc = CooccurrenceCount::new(baskets, 5);
        // Context {1}: 2 twice, 3 once, 4 once; then popularity fills.
        assert_eq!(cc.recommend(&[1], 3), [2, 3, 4]);
        // Context {1, 3}: 2 → 2 + 1 = 3, 4 → 1 + 1 = 2.
        assert_eq!(cc.recommend(&[1, 3], 2), [2, 4]);
    }

    #[test]
    fn memoized_counts_answer_exactly_as_walking_the_baskets() {
        // 300 baskets of 1-8 items out of 40, drawn by a fixed linear congruential sequence.
        let mut state = 7u64;
        let mut next = |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % m) as u32
        };
        let baskets: Vec<Vec<u32>> = (0..300)
            .map(|_| {
                let mut b: Vec<u32> = (0..=next(8)).map(|_| next(40)).collect();
                b.sort_unstable();
                b.dedup();
                b
            })
            .collect();
        let contexts: Vec<Vec<u32>> = (0..200)
            .map(|_| (0..=next(4)).map(|_| next(42)).collect())
            .collect();
        let walked = CooccurrenceCount::new(baskets.clone(), 40);
        let mut memoized = CooccurrenceCount::new(baskets, 40);
        memoized.memoize_above(contexts.iter().flatten().copied(), 0);
        assert!(
            memoized.memo.len() >= 30,
            "{} items memoized",
            memoized.memo.len()
        );
        for context in &contexts {
            assert_eq!(
                memoized.recommend(context, 10),
                walked.recommend(context, 10),
                "{context:?}"
            );
        }
    }
}
