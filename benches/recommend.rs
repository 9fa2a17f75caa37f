//! In-process ranking latency on the completejourney model: criterion timings per surface, and
//! a percentile pass (HdrHistogram over many real requests) for p50/p99, with the cheapest
//! possible recommender (copying the global top-k) as the same-run baseline.
//!
//! Needs ../shared/data/completejourney (skipped with a notice otherwise):
//!   cargo bench --bench recommend
//!
//! A cold pass follows: the same requests with the core's caches evicted before each, the state
//! a server's request finds them in. For instruction and cache-miss counts that do not depend on
//! the machine's load, run that pass alone on a built model under callgrind:
//!   RECOMMEND_BENCH_COLD=40 RECOMMEND_BENCH_MODELS=models valgrind --tool=callgrind \
//!     --cache-sim=yes --toggle-collect='*rank_into*' target/release/deps/recommend-<hash> --bench
//! (`RECOMMEND_BENCH_COLD` requests per surface, from the model `CURRENT` names in
//! `RECOMMEND_BENCH_MODELS`; benches/RESULTS.md, session 7.)

#![allow(clippy::print_stdout)] // a bench reports its percentile table on the terminal

mod common;

use std::hint::black_box;
use std::time::Instant;

use cobuy::model::Model;
use cobuy::rank::recommend;
use cobuy::rank::request::{ContextEntry, FilterSpec, RecommendQuery, Surface};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};

const SEED: u64 = 7;
const REQUESTS_PER_SURFACE: usize = 2_000;
const PERCENTILE_ROUNDS: usize = 10;
const K: usize = 10;
/// The cold pass walks this much memory before each request, evicting the core's L1 and L2 as a
/// server's network stack does between two calls (in process, a request's lists otherwise stay
/// cached from the one before, and ranking looks about half as costly as in the server).
const EVICT_BYTES: usize = 4 << 20;

fn load_model() -> Option<Model> {
    common::completejourney_model("recommend").map(|data| Model::new("bench".into(), data))
}

/// Real requests: known customers with their last order as context (ORDER_TRACKING, CART), one
/// item of it (PRODUCT_PAGE) or none (HOME, FOLLOW_UP_EMAIL, REPLENISHMENT_REMINDER).
fn requests(model: &Model, surface: Surface, n: usize) -> Vec<RecommendQuery> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
    let customers = &model.data.customers;
    (0..n)
        .map(|_| {
            let c = cobuy::ids::CustomerIdx(rng.random_range(0..customers.len() as u32));
            let last = customers.last_order_items(c);
            let context: Vec<u32> = match surface {
                Surface::OrderTracking | Surface::Cart => last.to_vec(),
                Surface::ProductPage => last.first().copied().into_iter().collect(),
                _ => Vec::new(),
            };
            RecommendQuery {
                customer_id: Some(customers.ids[c.ix()].clone()),
                surface,
                context: context
                    .into_iter()
                    .map(|i| ContextEntry {
                        item_id: model.data.items.ids[i as usize].clone(),
                        quantity: 1.0,
                        price: None,
                    })
                    .collect(),
                k: K,
                filters: FilterSpec::default(),
                as_of: None,
            }
        })
        .collect()
}

fn baseline_top_k(model: &Model) -> Vec<u32> {
    model.data.popularity.top.iter().take(K).copied().collect()
}

fn percentiles(model: &Model) {
    println!(
        "\nin-process latency, {REQUESTS_PER_SURFACE} real requests x {PERCENTILE_ROUNDS} rounds per surface (µs)"
    );
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>8}",
        "surface", "p50", "p99", "p99.9", "max"
    );
    let mut baseline = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..REQUESTS_PER_SURFACE * PERCENTILE_ROUNDS {
        let t = Instant::now();
        black_box(baseline_top_k(black_box(model)));
        baseline
            .record(t.elapsed().as_nanos() as u64)
            .expect("record");
    }
    let row = |name: &str, h: &hdrhistogram::Histogram<u64>| {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<24} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            name,
            us(0.5),
            us(0.99),
            us(0.999),
            h.max() as f64 / 1000.0
        );
    };
    row("baseline: global top-k", &baseline);
    for surface in Surface::ALL {
        let batch = requests(model, surface, REQUESTS_PER_SURFACE);
        let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        for _ in 0..PERCENTILE_ROUNDS {
            for q in &batch {
                let t = Instant::now();
                black_box(recommend(model, black_box(q)));
                h.record(t.elapsed().as_nanos() as u64).expect("record");
            }
        }
        row(&format!("{surface:?}"), &h);
    }
    cold_percentiles(model, REQUESTS_PER_SURFACE);
}

/// `n` requests per surface with the caches evicted before each one (see [`EVICT_BYTES`]); the
/// walk itself is not timed. The last row covers every surface's requests.
fn cold_percentiles(model: &Model, n: usize) {
    println!(
        "\ncold caches ({} MiB walked before each request), µs",
        EVICT_BYTES >> 20
    );
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>8}",
        "surface", "p50", "p99", "mean", "max"
    );
    let mut evict = vec![0u64; EVICT_BYTES / 8];
    let mut walk = |round: u64| {
        for (i, x) in evict.iter_mut().enumerate().step_by(8) {
            *x = x.wrapping_add(round ^ i as u64);
        }
        black_box(&evict);
    };
    let row = |name: &str, h: &hdrhistogram::Histogram<u64>| {
        let us = |ns: f64| ns / 1000.0;
        println!(
            "{:<24} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            name,
            us(h.value_at_quantile(0.5) as f64),
            us(h.value_at_quantile(0.99) as f64),
            us(h.mean()),
            us(h.max() as f64)
        );
    };
    let mut all = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let mut round = 0;
    for surface in Surface::ALL {
        let batch = requests(model, surface, n);
        let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        for q in &batch {
            round += 1;
            walk(round);
            let t = Instant::now();
            black_box(recommend(model, black_box(q)));
            let ns = t.elapsed().as_nanos() as u64;
            h.record(ns).expect("record");
            all.record(ns).expect("record");
        }
        row(&format!("{surface:?}"), &h);
    }
    row("all surfaces", &all);
}

fn bench(c: &mut Criterion) {
    if let Ok(n) = std::env::var("RECOMMEND_BENCH_COLD") {
        let n: usize = n
            .parse()
            .expect("RECOMMEND_BENCH_COLD: requests per surface");
        let dir = std::env::var("RECOMMEND_BENCH_MODELS").unwrap_or_else(|_| "models".into());
        let model = cobuy::model::store::load_current(std::path::Path::new(&dir))
            .expect("RECOMMEND_BENCH_MODELS: a models directory");
        cold_percentiles(&model, n);
        return;
    }
    let Some(model) = load_model() else { return };
    percentiles(&model);
    let mut group = c.benchmark_group("recommend");
    group.bench_function("baseline_global_top_k", |b| {
        b.iter(|| black_box(baseline_top_k(black_box(&model))))
    });
    for surface in Surface::ALL {
        let batch = requests(&model, surface, 256);
        let mut i = 0;
        group.bench_function(format!("{surface:?}"), |b| {
            b.iter(|| {
                i = (i + 1) % batch.len();
                black_box(recommend(&model, black_box(&batch[i])))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
