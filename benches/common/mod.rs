//! What the benches share: the completejourney model built from `../shared/data`.

use std::path::Path;

use cobuy::build::{BuildInputs, build};
use cobuy::ingest::IngestOptions;
use cobuy::mapping::Mapping;
use cobuy::model::ModelData;
use cobuy::progress::Progress;

pub const DATA: &str = "../shared/data/completejourney";

/// The completejourney model, or `None` with a notice naming `bench` when the data is absent
/// (benches are not tests: they skip).
pub fn completejourney_model(bench: &str) -> Option<ModelData> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = root.join(DATA);
    if !data.join("transactions.parquet").exists() {
        eprintln!(
            "notice: {} not found; skipping the {bench} bench",
            data.display()
        );
        return None;
    }
    let inputs = BuildInputs {
        orders: vec![data.join("transactions.parquet")],
        catalog: Some(data.join("products.parquet")),
        mapping: Mapping::from_file(&root.join("examples/datasets/completejourney.toml"))
            .expect("mapping"),
        ingest: IngestOptions::default(),
    };
    let (model, _) = build(&inputs, &Progress::hidden()).expect("build");
    Some(model)
}
