//! Similar-item search on the completejourney embeddings: latency of the HNSW graph against the
//! exact scan for catalogues of growing size (the measurement behind `hnsw_min_items`), with
//! the graph's recall@10 in the same run, then criterion timings on the full catalogue.
//!
//! Needs ../shared/data/completejourney (skipped with a notice otherwise):
//!   cargo bench --bench similar

#![allow(clippy::print_stdout)] // a bench reports its tables on the terminal

mod common;

use std::hint::black_box;
use std::time::Instant;

use cobuy::ids::ItemIdx;
use cobuy::model::similar::{SimilarIndex, recall_against_exact};
use cobuy::model::{Embeddings, Model, ModelData, VectorSource};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::seq::SliceRandom;

const SEED: u64 = 11;
const SIZES: [usize; 5] = [2_000, 5_000, 10_000, 20_000, usize::MAX];
const QUERIES: usize = 2_000;
const K: usize = 10;

fn model_data() -> Option<ModelData> {
    common::completejourney_model("similar")
}

/// A catalogue of `n` of the indexed items (a seeded sample), compacted: only their rows.
fn subset(all: &Embeddings, n: usize) -> Embeddings {
    let mut indexed: Vec<usize> = (0..all.source.len())
        .filter(|&i| all.source[i] == VectorSource::Orders)
        .collect();
    indexed.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(SEED));
    indexed.truncate(n);
    let dim = all.dim;
    Embeddings {
        dim,
        vectors: indexed
            .iter()
            .flat_map(|&i| all.vectors[i * dim..(i + 1) * dim].iter().copied())
            .collect(),
        source: vec![VectorSource::Orders; indexed.len()],
    }
}

fn queries(e: &Embeddings) -> Vec<Vec<f32>> {
    let mut items: Vec<u32> = (0..e.source.len() as u32)
        .filter(|&i| e.indexed(ItemIdx(i)))
        .collect();
    items.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(SEED + 1));
    items
        .iter()
        .cycle()
        .take(QUERIES)
        .filter_map(|&i| e.of(ItemIdx(i)).map(<[f32]>::to_vec))
        .collect()
}

fn latency(index: &SimilarIndex, e: &Embeddings, qs: &[Vec<f32>]) -> (f64, f64) {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for q in qs {
        let t = Instant::now();
        black_box(index.search(e, black_box(q), K, &|_| true));
        h.record(t.elapsed().as_nanos() as u64).expect("record");
    }
    (
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

fn bench(c: &mut Criterion) {
    let Some(data) = model_data() else { return };
    let all = data.embeddings.clone();
    println!("\nsimilar items, k = {K}, {QUERIES} item vectors as queries, one thread (µs)");
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>12}",
        "items", "exact p50", "exact p99", "hnsw p50", "hnsw p99", "recall", "hnsw build s"
    );
    let mut full = None;
    for n in SIZES {
        let e = subset(&all, n);
        let qs = queries(&e);
        let exact = SimilarIndex::build(&e, usize::MAX);
        let started = Instant::now();
        let graph = SimilarIndex::build(&e, 0);
        let build_s = started.elapsed().as_secs_f64();
        let (ep50, ep99) = latency(&exact, &e, &qs);
        let (hp50, hp99) = latency(&graph, &e, &qs);
        let recall = recall_against_exact(&graph, &e, 1_000, K, SEED).recall;
        println!(
            "{:>8} {ep50:>10.1} {ep99:>10.1} {hp50:>10.1} {hp99:>10.1} {recall:>9.4} {build_s:>12.1}",
            e.indexed_count()
        );
        if n == usize::MAX {
            full = Some((e, qs, exact, graph));
        }
    }
    let Some((e, qs, exact, graph)) = full else {
        return;
    };
    // What a SimilarItems request for a known item costs: its precomputed list, filtered.
    // Items are picked in the model's own index space (`e` is compacted: its indexes differ).
    let model = Model::new("bench".into(), data);
    let known: Vec<ItemIdx> = (0..all.source.len() as u32)
        .map(ItemIdx)
        .filter(|&i| all.indexed(i))
        .take(QUERIES)
        .collect();
    let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for &item in &known {
        let t = Instant::now();
        black_box(model.similar_to(black_box(item), K, true, &|i| i.0 % 2 == 0));
        h.record(t.elapsed().as_nanos() as u64).expect("record");
    }
    println!(
        "precomputed list of a known item, half the catalogue filtered out: p50 {:.1} µs, p99 {:.1} µs",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0
    );
    let mut group = c.benchmark_group("similar");
    let mut j = 0;
    group.bench_function("list_known_item", |b| {
        b.iter(|| {
            j = (j + 1) % known.len();
            black_box(model.similar_to(black_box(known[j]), K, true, &|_| true))
        })
    });
    let mut i = 0;
    group.bench_function("hnsw_full_catalogue", |b| {
        b.iter(|| {
            i = (i + 1) % qs.len();
            black_box(graph.search(&e, black_box(&qs[i]), K, &|_| true))
        })
    });
    group.bench_function("exact_full_catalogue", |b| {
        b.iter(|| {
            i = (i + 1) % qs.len();
            black_box(exact.search(&e, black_box(&qs[i]), K, &|_| true))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
