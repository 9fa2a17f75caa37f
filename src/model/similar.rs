//! Nearest neighbours in the item-embedding space: an HNSW graph (hnsw_rs; Malkov and Yashunin,
//! "Efficient and robust approximate nearest neighbor search using Hierarchical Navigable Small
//! World graphs", TPAMI 2020) for large catalogues, an exact scan for small ones, where it is
//! as fast (README "Similar items" has the measurement behind `hnsw_min_items`).
//!
//! The graph is built by `cobuy build`, dumped beside `model.bin` and loaded with it. A loaded
//! hnsw_rs graph borrows the `HnswIo` that read it, so [`LoadedGraph`] owns both in one
//! self-referential cell: dropping the model drops both, and a model swap leaks nothing.
//!
//! Filters: the graph is first searched without the filter for `4k` (at least `EF_SEARCH`)
//! neighbours, filtered afterwards; when that leaves fewer than `k` (a selective filter), the
//! filter is applied inside the graph walk (hnsw_rs keeps only allowed items in its result heap
//! and keeps walking until it has enough), and when even that comes back short, an exact scan
//! of the allowed items answers. So `k` results come back whenever `k` allowed items have
//! vectors. The filtered walk is not the first try because hnsw_rs then gives up its early
//! exit and visits much of the graph: 2-3 ms on completejourney against ~0.1 ms.

use std::path::{Path, PathBuf};

use hnsw_rs::prelude::{DataId, Distance, Hnsw, HnswIo};

use super::{Embeddings, VectorSource, dot};
use crate::error::StoreError;
use crate::ids::ItemIdx;

/// Base name of the dumped graph: `items.hnsw.graph` and `items.hnsw.data`.
pub const HNSW_BASENAME: &str = "items";
/// Files of a dumped graph, as named in the manifest.
pub const HNSW_FILES: [&str; 2] = ["items.hnsw.graph", "items.hnsw.data"];
/// Links per node (hnsw_rs's `max_nb_connection`; layer 0 keeps twice as many). With
/// `EF_CONSTRUCTION` this builds the completejourney graph (68k items) in about 15 s on two
/// cores; 24 and 200 reached recall 0.978 at ef 64 but took 37 s.
const MAX_CONNECTIONS: usize = 16;
/// Candidate list while building: larger builds a better graph, slower.
const EF_CONSTRUCTION: usize = 100;
/// hnsw_rs can dump only graphs created with its maximum of 16 layers.
const MAX_LAYERS: usize = 16;
/// Candidate list while searching. On completejourney's 36k indexed items (`cargo bench --bench
/// similar`): recall@10 against exact search 0.984 at 48 (p50 348 µs) and 0.994 at 96 (p50
/// 862 µs) with item vectors as queries; with rare items' derived vectors among the queries
/// (`cobuy inspect --check-recall`, which CI holds at 0.95) 48 gave 0.955 and 64 0.948-0.955,
/// while 96 gave 0.985-0.995 over several builds.
pub const EF_SEARCH: usize = 96;
/// The unfiltered first search asks for this many times `k` neighbours ...
const OVERFETCH: usize = 4;
/// ... and at most this many.
const MAX_OVERFETCH: usize = 400;

/// `1 − cos` of unit vectors, clamped at 0: hnsw_rs's `DistDot` asserts `dot <= 1`, which
/// rounding breaks when a query equals an item, and a request must never panic.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

type Graph<'a> = Hnsw<'a, f32, UnitCosine>;

self_cell::self_cell!(
    /// A graph read from disk together with the reader it borrows.
    pub struct LoadedGraph {
        owner: HnswIo,
        #[not_covariant]
        dependent: Graph,
    }
);

impl std::fmt::Debug for LoadedGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadedGraph")
    }
}

/// How similarity search is answered for a model.
pub enum SimilarIndex {
    /// No item has a vector (embeddings off, or too few items).
    Empty,
    /// A scan over the indexed items' vectors, copied into one contiguous block.
    Exact(ExactIndex),
    /// A graph built in this process.
    Built(Box<Graph<'static>>),
    /// A graph read from a model directory.
    Loaded(LoadedGraph),
}

impl std::fmt::Debug for SimilarIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SimilarIndex::Empty => "SimilarIndex::Empty",
            SimilarIndex::Exact(_) => "SimilarIndex::Exact",
            SimilarIndex::Built(_) => "SimilarIndex::Built",
            SimilarIndex::Loaded(_) => "SimilarIndex::Loaded",
        })
    }
}

/// One neighbour: the item and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similar {
    pub item: ItemIdx,
    pub similarity: f32,
}

impl SimilarIndex {
    /// The index a model of these embeddings uses: a graph from `hnsw_min_items` embedded
    /// items on, an exact scan below.
    pub fn build(embeddings: &Embeddings, hnsw_min_items: usize) -> SimilarIndex {
        let embedded = embeddings.indexed_count();
        if embedded == 0 {
            return SimilarIndex::Empty;
        }
        if embedded < hnsw_min_items {
            return SimilarIndex::Exact(ExactIndex::new(embeddings));
        }
        SimilarIndex::Built(Box::new(build_graph(embeddings)))
    }

    /// An exact scan (or nothing, without vectors), whatever the catalogue size: the oracle.
    pub fn exact_for(embeddings: &Embeddings) -> SimilarIndex {
        if embeddings.indexed_count() == 0 {
            SimilarIndex::Empty
        } else {
            SimilarIndex::Exact(ExactIndex::new(embeddings))
        }
    }

    /// Whether this index is a graph (to dump with the model).
    pub fn is_graph(&self) -> bool {
        matches!(self, SimilarIndex::Built(_) | SimilarIndex::Loaded(_))
    }

    /// Writes a built graph's files into `dir`; returns their paths (none for other indexes).
    pub fn dump(&self, dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
        let SimilarIndex::Built(graph) = self else {
            return Ok(Vec::new());
        };
        use hnsw_rs::api::AnnT as _;
        let name = graph
            .file_dump(dir, HNSW_BASENAME)
            .map_err(|e| StoreError::Encode {
                path: dir.to_path_buf(),
                what: format!("hnsw dump: {e}"),
            })?;
        if name != HNSW_BASENAME {
            return Err(StoreError::Encode {
                path: dir.to_path_buf(),
                what: format!("hnsw dump chose the name {name:?}: files were in the way"),
            });
        }
        Ok(HNSW_FILES.iter().map(|f| dir.join(f)).collect())
    }

    /// Reads a dumped graph (its files' checksums are verified by the caller first).
    pub fn load(dir: &Path, embeddings: &Embeddings) -> Result<SimilarIndex, StoreError> {
        let reader = HnswIo::new(dir, HNSW_BASENAME);
        let graph =
            LoadedGraph::try_new(reader, |io| io.load_hnsw_with_dist(UnitCosine)).map_err(|e| {
                StoreError::Decode {
                    path: dir.join(HNSW_FILES[0]),
                    what: format!("hnsw graph: {e}"),
                }
            })?;
        let points = graph.with_dependent(|_, g| g.get_nb_point());
        if points != embeddings.indexed_count() {
            return Err(StoreError::Invalid {
                path: dir.join(HNSW_FILES[0]),
                what: format!(
                    "the graph holds {points} items, the model {} embedded ones",
                    embeddings.indexed_count()
                ),
            });
        }
        Ok(SimilarIndex::Loaded(graph))
    }

    /// The `k` items most similar to `query` that `allow` lets through, most similar first.
    pub fn search(
        &self,
        embeddings: &Embeddings,
        query: &[f32],
        k: usize,
        allow: &(dyn Fn(ItemIdx) -> bool + Sync),
    ) -> Vec<Similar> {
        if k == 0 || query.len() != embeddings.dim {
            return Vec::new();
        }
        let graph_search = |graph: &Graph<'_>| {
            let to_similar = |n: &hnsw_rs::prelude::Neighbour| Similar {
                item: ItemIdx(n.d_id as u32),
                similarity: 1.0 - n.distance,
            };
            // First the plain search, over-fetching and filtering after: cheap, and enough
            // unless the filter rejects most neighbours.
            let over = (OVERFETCH * k).max(EF_SEARCH).min(MAX_OVERFETCH.max(k));
            let mut found: Vec<Similar> = graph
                .search(query, over, EF_SEARCH.max(over))
                .iter()
                .map(to_similar)
                .filter(|s| allow(s.item))
                .collect();
            if found.len() >= k {
                found.truncate(k);
                return found;
            }
            // A selective filter: search with it applied inside the graph walk, which keeps
            // walking until it has `ef` allowed candidates (slower: it may visit much of the
            // graph).
            let filter = |id: &DataId| allow(ItemIdx(*id as u32));
            found = graph
                .search_filter(query, k, EF_SEARCH.max(k), Some(&filter))
                .iter()
                .map(to_similar)
                .collect();
            found
        };
        let found = match self {
            SimilarIndex::Empty => return Vec::new(),
            SimilarIndex::Exact(index) => return index.search(query, k, allow),
            SimilarIndex::Built(graph) => graph_search(graph),
            SimilarIndex::Loaded(graph) => graph.with_dependent(|_, g| graph_search(g)),
        };
        if found.len() < k {
            // A selective filter: the allowed items are few, so scanning them is cheap.
            return exact(embeddings, query, k, allow);
        }
        found
    }
}

/// The indexed items and their vectors, contiguous: a scan reads only what it scores.
#[derive(Debug)]
pub struct ExactIndex {
    items: Vec<u32>,
    dim: usize,
    vectors: Vec<f32>,
}

impl ExactIndex {
    pub fn new(embeddings: &Embeddings) -> Self {
        let dim = embeddings.dim;
        let items: Vec<u32> = (0..embeddings.source.len() as u32)
            .filter(|&i| embeddings.indexed(ItemIdx(i)))
            .collect();
        let mut vectors = Vec::with_capacity(items.len() * dim);
        for &i in &items {
            vectors
                .extend_from_slice(&embeddings.vectors[i as usize * dim..(i as usize + 1) * dim]);
        }
        Self {
            items,
            dim,
            vectors,
        }
    }

    /// Every indexed item scored, the best `k` allowed ones kept, most similar first.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allow: &(dyn Fn(ItemIdx) -> bool + Sync),
    ) -> Vec<Similar> {
        let mut scored: Vec<Similar> = self
            .items
            .iter()
            .zip(self.vectors.chunks_exact(self.dim.max(1)))
            .filter(|&(&i, _)| allow(ItemIdx(i)))
            .map(|(&i, v)| Similar {
                item: ItemIdx(i),
                similarity: dot(query, v),
            })
            .collect();
        keep_best(&mut scored, k);
        scored
    }
}

/// Keeps the `k` most similar (ties: lower index), sorted best first.
fn keep_best(scored: &mut Vec<Similar>, k: usize) {
    let best = |a: &Similar, b: &Similar| {
        b.similarity
            .total_cmp(&a.similarity)
            .then(a.item.cmp(&b.item))
    };
    crate::lists::keep_best(scored, k, best);
}

fn build_graph(embeddings: &Embeddings) -> Graph<'static> {
    let points: Vec<(Vec<f32>, usize)> = (0..embeddings.source.len())
        .filter(|&i| embeddings.indexed(ItemIdx(i as u32)))
        .filter_map(|i| embeddings.of(ItemIdx(i as u32)).map(|v| (v.to_vec(), i)))
        .collect();
    let graph = Hnsw::new(
        MAX_CONNECTIONS,
        points.len(),
        MAX_LAYERS,
        EF_CONSTRUCTION,
        UnitCosine,
    );
    let refs: Vec<(&Vec<f32>, usize)> = points.iter().map(|(v, i)| (v, *i)).collect();
    graph.parallel_insert(&refs);
    graph
}

/// The exact answer: every item with a vector scored, the best `k` allowed ones kept.
pub fn exact(
    embeddings: &Embeddings,
    query: &[f32],
    k: usize,
    allow: &(dyn Fn(ItemIdx) -> bool + Sync),
) -> Vec<Similar> {
    let dim = embeddings.dim.max(1);
    // Serial on purpose: this runs on request threads, which must not fan out into a shared
    // pool; catalogues large enough for that to matter are searched through the graph.
    let mut scored: Vec<Similar> = embeddings
        .vectors
        .chunks_exact(dim)
        .enumerate()
        .filter_map(|(i, v)| {
            let item = ItemIdx(i as u32);
            (embeddings.source[i] == VectorSource::Orders && allow(item)).then(|| Similar {
                item,
                similarity: dot(query, v),
            })
        })
        .collect();
    keep_best(&mut scored, k);
    scored
}

/// Similarity margin within which two answers count as tied in [`recall_against_exact`].
const TIE_MARGIN: f32 = 1e-4;

/// How well the index's answers match exact search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recall {
    /// Mean share of the exact top `k` that the index returned.
    pub recall: f64,
    pub queries: usize,
    pub k: usize,
    pub ef: usize,
}

/// Recall@k of the index against exact search, with the vectors of `queries` items with a
/// vector (a seeded sample, derived vectors included) as queries and each query's own item
/// excluded from both answers.
pub fn recall_against_exact(
    index: &SimilarIndex,
    embeddings: &Embeddings,
    queries: usize,
    k: usize,
    seed: u64,
) -> Recall {
    use rand::SeedableRng;
    use rand::seq::IndexedRandom;
    let embedded: Vec<u32> = (0..embeddings.source.len() as u32)
        .filter(|&i| embeddings.source[i as usize] != VectorSource::None)
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let sample: Vec<u32> = embedded
        .choose_multiple(&mut rng, queries.min(embedded.len()))
        .copied()
        .collect();
    let mut found = 0usize;
    let mut expected = 0usize;
    for &q in &sample {
        let Some(query) = embeddings.of(ItemIdx(q)) else {
            continue;
        };
        let not_self = |i: ItemIdx| i.0 != q;
        let truth = exact(embeddings, query, k, &not_self);
        let got = index.search(embeddings, query, k, &not_self);
        // As ann-benchmarks counts it: a returned item is right when it is at least as similar
        // as the exact k-th (less a rounding margin), so ties among equally similar items (rare
        // items share their basket mates' or category's vector) do not count as misses.
        let Some(threshold) = truth.last().map(|t| t.similarity - TIE_MARGIN) else {
            continue;
        };
        expected += truth.len();
        found += got
            .iter()
            .filter(|g| g.similarity >= threshold)
            .count()
            .min(truth.len());
    }
    Recall {
        recall: if expected == 0 {
            1.0
        } else {
            found as f64 / expected as f64
        },
        queries: sample.len(),
        k,
        ef: EF_SEARCH,
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::build::embed::normalise;

    /// `n` unit vectors in `dim` dimensions around `clusters` random centres.
    fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Embeddings {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..clusters)
            .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let mut vectors = Vec::with_capacity(n * dim);
        for i in 0..n {
            let mut v: Vec<f32> = centres[i % clusters]
                .iter()
                .map(|c| c + rng.random_range(-0.3..0.3))
                .collect();
            normalise(&mut v);
            vectors.extend(v);
        }
        Embeddings {
            dim,
            vectors,
            source: vec![VectorSource::Orders; n],
        }
    }

    #[test]
    fn the_graph_finds_at_least_95_percent_of_the_exact_top_10() {
        // Budget: ef = EF_SEARCH, k = 10, 3,000 items in 32 dimensions, 200 queries.
        let embeddings = clustered(3_000, 32, 40, 1);
        let graph = SimilarIndex::build(&embeddings, 0);
        assert!(graph.is_graph());
        let r = recall_against_exact(&graph, &embeddings, 200, 10, 2);
        assert!(r.recall >= 0.95, "recall@10 {}", r.recall);
        // The exact index is its own oracle.
        let exact_index = SimilarIndex::build(&embeddings, usize::MAX);
        assert!(matches!(exact_index, SimilarIndex::Exact(_)));
        assert_eq!(
            recall_against_exact(&exact_index, &embeddings, 50, 10, 2).recall,
            1.0
        );
    }

    #[test]
    fn a_selective_filter_still_returns_k_allowed_items_best_first() {
        let embeddings = clustered(2_000, 16, 20, 3);
        let graph = SimilarIndex::build(&embeddings, 0);
        let query = embeddings.of(ItemIdx(0)).expect("vector").to_vec();
        // One item in 97 is allowed: far fewer than the search's candidate list holds.
        let allow = |i: ItemIdx| i.0 % 97 == 5;
        let found = graph.search(&embeddings, &query, 10, &allow);
        assert_eq!(found.len(), 10);
        assert!(found.iter().all(|s| allow(s.item)));
        assert!(found.windows(2).all(|w| w[0].similarity >= w[1].similarity));
        let truth = exact(&embeddings, &query, 10, &allow);
        let ids = |v: &[Similar]| v.iter().map(|s| s.item).collect::<Vec<_>>();
        assert_eq!(
            ids(&found),
            ids(&truth),
            "the widened search (or the scan) is exact here"
        );
        // Nothing allowed: nothing returned, and no panic.
        assert!(graph.search(&embeddings, &query, 10, &|_| false).is_empty());
    }

    #[test]
    fn a_dumped_graph_loads_and_answers_like_the_built_one() {
        let embeddings = clustered(1_500, 16, 15, 4);
        let graph = SimilarIndex::build(&embeddings, 0);
        let dir = tempfile::tempdir().expect("tempdir");
        let files = graph.dump(dir.path()).expect("dump");
        assert_eq!(files.len(), 2);
        let loaded = SimilarIndex::load(dir.path(), &embeddings).expect("load");
        assert!(matches!(loaded, SimilarIndex::Loaded(_)));
        for q in [0u32, 77, 1_234] {
            let query = embeddings.of(ItemIdx(q)).expect("vector");
            let a = graph.search(&embeddings, query, 10, &|_| true);
            let b = loaded.search(&embeddings, query, 10, &|_| true);
            assert_eq!(a, b);
        }
        // A graph that does not match the model's items is refused.
        let other = clustered(1_400, 16, 15, 4);
        let err = SimilarIndex::load(dir.path(), &other).expect_err("mismatch");
        assert!(err.to_string().contains("1500"), "{err}");
    }

    #[test]
    fn only_items_with_their_own_vector_are_answers() {
        let mut embeddings = clustered(200, 8, 4, 5);
        embeddings.source[4] = VectorSource::Baskets;
        embeddings.source[8] = VectorSource::Category;
        let query = embeddings.of(ItemIdx(0)).expect("vector").to_vec();
        let found = exact(&embeddings, &query, 200, &|_| true);
        assert_eq!(found.len(), 198);
        assert!(
            found
                .iter()
                .all(|s| s.item != ItemIdx(4) && s.item != ItemIdx(8))
        );
        // Derived vectors still serve as queries.
        assert!(embeddings.of(ItemIdx(4)).is_some());
    }
}
