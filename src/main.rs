//! The `cobuy` binary: parses flags, sets up logging, and calls the library. Errors become
//! `anyhow` here, at the edge.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cobuy::build::{BuildInputs, BuildReport};
use cobuy::ingest::IngestOptions;
use cobuy::mapping::Mapping;
use cobuy::model::store;
use cobuy::progress::Progress;

#[derive(Debug, Parser)]
#[command(
    name = "cobuy",
    version,
    about = "Order-history recommendations: build, inspect, serve, evaluate"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `cobuy=debug`.
    #[arg(long, global = true, env = "COBUY_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a model from order (and catalog) exports and publish it under the model directory.
    Build(BuildArgs),
    /// Show what a model holds, an item's neighbours, or a customer's history.
    Inspect(InspectArgs),
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// Order-line files (CSV/TSV/JSON Lines, optionally .gz, or Parquet).
    #[arg(long, required = true, num_args = 1..)]
    orders: Vec<PathBuf>,
    /// Catalog file (needs a [catalog] table in the mapping).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Mapping TOML naming the columns, cleaning rules and [model] settings.
    #[arg(long)]
    mapping: PathBuf,
    /// Model directory; the new version is published under it and CURRENT switched.
    #[arg(long, default_value = "models")]
    out: PathBuf,
    /// Keep only the newest N versions after publishing (0 keeps all).
    #[arg(long, default_value_t = 0)]
    keep: usize,
    /// Skip up to N malformed rows (listed in the report) instead of failing on the first.
    #[arg(long, default_value_t = 0)]
    max_bad_rows: u64,
    /// Also write the build report as JSON to this file.
    #[arg(long)]
    report_json: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// Model directory (with CURRENT) or one version directory.
    #[arg(default_value = "models")]
    models: PathBuf,
    /// Show this item's attributes and neighbour lists.
    #[arg(long)]
    item: Option<String>,
    /// Show this customer's history summary and due re-purchases.
    #[arg(long)]
    customer: Option<String>,
    /// Rows per list.
    #[arg(long, default_value_t = 10)]
    k: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &str) {
    // h2/hyper/tower are noisy at debug; keep them at warn unless asked for by name.
    let filter = format!("warn,cobuy={filter},h2=warn,hyper=warn,tower=warn");
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build(args) => build(args),
        Command::Inspect(args) => inspect(args),
    }
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let mapping = Mapping::from_file(&args.mapping)?;
    let inputs = BuildInputs {
        orders: args.orders,
        catalog: args.catalog,
        mapping: mapping.clone(),
        ingest: IngestOptions {
            max_bad_rows: args.max_bad_rows,
        },
    };
    let started = std::time::Instant::now();
    let (data, mut report) = cobuy::build::build(&inputs, &Progress::detect())
        .context("build failed; nothing was published")?;
    let mut config = serde_json::to_value(&mapping)?;
    config["mapping_file"] = serde_json::Value::String(args.mapping.display().to_string());
    let write_started = std::time::Instant::now();
    store::publish(&args.out, &data, config.clone(), &report)
        .context("publishing the model failed")?;
    report.stages.push(cobuy::progress::StageTiming {
        stage: "write + publish".into(),
        seconds: write_started.elapsed().as_secs_f64(),
        peak_rss_mib: cobuy::progress::peak_rss_mib(),
    });
    if args.keep > 0 {
        for dir in store::prune(&args.out, args.keep)? {
            tracing::info!(dir = %dir.display(), "pruned old model version");
        }
    }
    print_report(&report, started.elapsed().as_secs_f64());
    if let Some(path) = args.report_json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let version = store::current_version(&args.out)?;
    let mut out = std::io::stdout().lock();
    use std::io::Write as _;
    writeln!(out, "published {}/{version}", args.out.display())?;
    Ok(())
}

fn print_report(report: &BuildReport, total_seconds: f64) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let c = &report.ingest.counts;
    let rows: [(&str, u64); 20] = [
        ("rows read", c.rows_read),
        ("bad rows skipped", c.bad_rows_skipped),
        ("non-product lines", c.non_product_lines),
        ("zero-quantity lines", c.zero_quantity_lines),
        ("negative-price lines", c.negative_price_lines),
        ("cancellation lines", c.cancellation_lines),
        ("return lines", c.return_lines),
        ("lines fully offset", c.lines_fully_offset),
        ("unmatched cancellations", c.unmatched_cancellations),
        ("duplicate lines", c.duplicate_lines),
        ("merged lines", c.merged_lines),
        ("guest lines", c.guest_lines),
        ("orders emptied", c.orders_emptied),
        ("kept lines", c.kept_lines),
        ("orders", c.orders),
        ("guest orders", c.guest_orders),
        ("customers", c.customers),
        ("items in orders", c.items_in_orders),
        ("catalog rows", c.catalog_rows),
        ("replenishable items", report.replenishable_items),
    ];
    let _ = writeln!(out, "{:<26} {:>12}", "ingest", "count");
    for (name, n) in rows {
        let _ = writeln!(out, "{name:<26} {n:>12}");
    }
    let _ = writeln!(
        out,
        "\n{:<26} {:>9} {:>14}",
        "stage", "seconds", "peak RSS MiB"
    );
    for s in &report.stages {
        let _ = writeln!(
            out,
            "{:<26} {:>9.2} {:>14.0}",
            s.stage, s.seconds, s.peak_rss_mib
        );
    }
    let _ = writeln!(out, "{:<26} {:>9.2}", "total", total_seconds);
    for bad in report.ingest.bad_rows.iter().take(20) {
        let _ = writeln!(out, "skipped: {bad}");
    }
}

fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let dir = if args.models.join(store::CURRENT).exists() {
        args.models.join(store::current_version(&args.models)?)
    } else {
        args.models.clone()
    };
    let model = store::load_version(&dir)?;
    let manifest = store::read_manifest(&dir)?;
    let text = match (&args.item, &args.customer) {
        (Some(id), _) => {
            let item = model
                .item(id)
                .with_context(|| format!("item {id:?} is not in model {}", model.version))?;
            cobuy::inspect::item_report(&model, item, args.k)
        }
        (None, Some(id)) => {
            let customer = model
                .customer(id)
                .with_context(|| format!("customer {id:?} is not in model {}", model.version))?;
            cobuy::inspect::customer_report(&model, customer, None, args.k)
        }
        (None, None) => cobuy::inspect::summary(&model, &manifest),
    };
    use std::io::Write as _;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}
