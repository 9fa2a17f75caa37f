//! Build-side benches on the real datasets: ingest parse rate (Parquet and gzip CSV), each
//! build stage on completejourney, and model load. Skipped with a notice when
//! ../shared/data is absent.
//!
//!   cargo bench --bench build

use std::hint::black_box;
use std::path::{Path, PathBuf};

use cobuy::build::baskets::Baskets;
use cobuy::build::{cooccur, history, model_from_log};
use cobuy::config::BuildConfig;
use cobuy::ingest::{IngestOptions, IngestReport, OrderLog, read_orders};
use cobuy::mapping::Mapping;
use cobuy::model::store;
use cobuy::progress::{Progress, StageClock};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const DATA: &str = "../shared/data";
const SAMPLES: usize = 10;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn ingest(orders: &Path, mapping: &str) -> OrderLog {
    let mapping = Mapping::from_file(&root().join(mapping)).expect("mapping");
    let mut report = IngestReport::default();
    read_orders(
        &[orders.to_path_buf()],
        &mapping,
        IngestOptions::default(),
        &Progress::hidden(),
        &mut report,
    )
    .expect("ingest")
}

fn bench(c: &mut Criterion) {
    let data = root().join(DATA);
    let cj = data.join("completejourney/transactions.parquet");
    let retail = data.join("online_retail/online_retail.csv.gz");
    if !cj.exists() || !retail.exists() {
        eprintln!(
            "notice: {} not found; skipping the build benches",
            data.display()
        );
        return;
    }
    let mut group = c.benchmark_group("ingest");
    group.sample_size(SAMPLES);
    group.throughput(Throughput::Elements(1_469_307));
    group.bench_function("completejourney_parquet_rows", |b| {
        b.iter(|| black_box(ingest(&cj, "examples/datasets/completejourney.toml")))
    });
    group.throughput(Throughput::Elements(541_909));
    group.bench_function("online_retail_csv_gz_rows", |b| {
        b.iter(|| black_box(ingest(&retail, "examples/datasets/online_retail.toml")))
    });
    group.finish();

    let log = ingest(&cj, "examples/datasets/completejourney.toml");
    let cfg = BuildConfig::default();
    let baskets = Baskets::new(&log);
    let counts = baskets.order_counts();
    let end = log.orders.iter().map(|o| o.timestamp).max().unwrap_or(0);
    let hidden = Progress::hidden().stage("bench", 0);
    let mut group = c.benchmark_group("build_stage");
    group.sample_size(SAMPLES);
    group.bench_function("index_baskets", |b| {
        b.iter(|| black_box(Baskets::new(&log)))
    });
    group.bench_function("bought_together", |b| {
        b.iter(|| black_box(cooccur::bought_together(&baskets, &counts, &cfg, &hidden)))
    });
    group.bench_function("next_order", |b| {
        b.iter(|| black_box(cooccur::next_order(&baskets, &counts, &cfg, &hidden)))
    });
    group.bench_function("history", |b| {
        b.iter(|| black_box(history::compute(&log, &baskets, end, &cfg)))
    });
    group.bench_function("all_stages", |b| {
        b.iter(|| {
            black_box(model_from_log(
                &log,
                &[],
                &cfg,
                &mut StageClock::default(),
                &Progress::hidden(),
            ))
        })
    });
    group.finish();

    let dir = tempfile::tempdir().expect("tempdir");
    let data = model_from_log(
        &log,
        &[],
        &cfg,
        &mut StageClock::default(),
        &Progress::hidden(),
    );
    let version = store::publish(
        dir.path(),
        &data,
        serde_json::json!({}),
        &Default::default(),
    )
    .expect("publish");
    let mut group = c.benchmark_group("model");
    group.sample_size(SAMPLES);
    group.bench_function("load_and_verify_completejourney", |b| {
        b.iter(|| black_box(store::load_version(&version).expect("load")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
