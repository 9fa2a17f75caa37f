//! The batch build: ingest → clean → index baskets → neighbours, history, popularity → a
//! [`ModelData`] ready to publish. Pure computation; writing to disk is `model::store`'s job.

pub mod baskets;
pub mod cooccur;
pub mod history;
mod items;
mod popularity;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::BuildConfig;
use crate::error::IngestError;
use crate::ingest::{self, CatalogEntry, IngestOptions, IngestReport, OrderLog};
use crate::mapping::Mapping;
use crate::model::{ModelData, TimeSpan};
use crate::progress::{Progress, StageClock, StageTiming};
use baskets::Baskets;

/// What to build from.
#[derive(Debug, Clone)]
pub struct BuildInputs {
    pub orders: Vec<PathBuf>,
    pub catalog: Option<PathBuf>,
    pub mapping: Mapping,
    pub ingest: IngestOptions,
}

/// What the build did, for the manifest and the summary table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildReport {
    pub ingest: IngestReport,
    pub stages: Vec<StageTiming>,
    pub items: u64,
    pub customers: u64,
    pub orders: u64,
    pub bought_together_pairs: u64,
    pub next_order_pairs: u64,
    pub replenishable_items: u64,
}

/// Reads, cleans and models the inputs.
pub fn build(
    inputs: &BuildInputs,
    progress: &Progress,
) -> Result<(ModelData, BuildReport), IngestError> {
    let mut clock = StageClock::default();
    let mut report = BuildReport::default();
    let mut log = clock.run("ingest orders", || {
        ingest::read_orders(
            &inputs.orders,
            &inputs.mapping,
            inputs.ingest,
            progress,
            &mut report.ingest,
        )
    })?;
    let catalog = match (&inputs.catalog, &inputs.mapping.catalog) {
        (Some(path), Some(columns)) => clock.run("ingest catalog", || {
            ingest::read_catalog(
                path,
                columns,
                &mut log.items,
                inputs.ingest,
                progress,
                &mut report.ingest,
            )
        })?,
        (Some(path), None) => {
            return Err(IngestError::Mapping(crate::error::MappingError::Invalid(
                format!(
                    "--catalog {} given but the mapping has no [catalog] table",
                    path.display()
                ),
            )));
        }
        (None, _) => Vec::new(),
    };
    log.line_titles.resize(log.items.len(), None);
    let data = model_from_log(&log, &catalog, &inputs.mapping.model, &mut clock);
    report.stages = clock.timings;
    report.items = data.items.len() as u64;
    report.customers = data.customers.len() as u64;
    report.orders = data.total_orders as u64;
    report.bought_together_pairs = data.bought_together.items.len() as u64;
    report.next_order_pairs = data.next_order.items.len() as u64;
    report.replenishable_items = data.items.replenishable.iter().filter(|&&r| r).count() as u64;
    Ok((data, report))
}

/// Computes every model table from a cleaned log. Also used by `cobuy eval` on training splits,
/// so evaluation scores exactly what production builds.
pub fn model_from_log(
    log: &OrderLog,
    catalog: &[Option<CatalogEntry>],
    cfg: &BuildConfig,
    clock: &mut StageClock,
) -> ModelData {
    let time = TimeSpan {
        first_order: log.orders.iter().map(|o| o.timestamp).min().unwrap_or(0),
        last_order: log.orders.iter().map(|o| o.timestamp).max().unwrap_or(0),
        relative: log.relative_time,
    };
    let baskets = clock.run("index baskets", || Baskets::new(log));
    let counts = baskets.order_counts();
    let bought_together = clock.run("bought together", || {
        cooccur::bought_together(&baskets, &counts, cfg)
    });
    let next_order = clock.run("next order", || cooccur::next_order(&baskets, &counts, cfg));
    let history = clock.run("history", || {
        history::compute(log, &baskets, time.last_order, cfg)
    });
    let items = clock.run("items", || {
        items::compute(log, catalog, counts, &history.repurchase, cfg)
    });
    let popularity = clock.run("popularity", || {
        popularity::compute(log, &items.items, &items.categories, time.last_order, cfg)
    });
    let mut repurchase = history.repurchase;
    repurchase.resize(items.items.len(), Default::default());
    ModelData {
        config: cfg.clone(),
        time,
        total_orders: baskets.n_orders() as u32,
        items: items.items,
        categories: items.categories,
        brands: items.brands,
        bought_together,
        next_order,
        repurchase,
        popularity,
        customers: history.customers,
    }
}
