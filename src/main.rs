//! The `cobuy` binary: parses flags, sets up logging, and calls the library. Errors become
//! `anyhow` here, at the edge.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cobuy::build::{BuildInputs, BuildReport};
use cobuy::ingest::IngestOptions;
use cobuy::mapping::Mapping;
use cobuy::model::store;
use cobuy::progress::Progress;
use cobuy::serve::ServeConfig;

/// jemalloc instead of the system allocator: a served call allocates and frees a few dozen small
/// strings and vectors, and jemalloc's thread caches cost the server about 5% less CPU per
/// call than glibc malloc (benches/RESULTS.md, session 10); builds take the same time.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Serve the live model over gRPC, following CURRENT as new versions are published.
    Serve(ServeArgs),
    /// Build a model from the bundled Online Retail sample and serve it.
    Demo(DemoArgs),
    /// Open-loop gRPC load: fixed-rate schedule, latency from scheduled send times.
    Loadgen(LoadgenArgs),
    /// Measure recommendation quality on real orders against baselines (next basket, second
    /// purchase, bought together), mean and std over seeded folds.
    Eval(EvalArgs),
    /// Make an existing version live (one copied in from a build host, or an earlier one to roll
    /// back to): verifies it loads, then points CURRENT at it; servers follow within their
    /// watch interval.
    Publish(PublishArgs),
}

#[derive(Debug, clap::Args)]
struct PublishArgs {
    /// Model directory holding the versions and CURRENT.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// The version's directory name under the model directory, e.g. 20261124T232626Z.
    version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProtocolArg {
    NextBasket,
    SecondPurchase,
    BoughtTogether,
    All,
}

#[derive(Debug, clap::Args)]
struct EvalArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Protocols to run (repeatable).
    #[arg(long, value_enum, default_values_t = [ProtocolArg::All])]
    protocol: Vec<ProtocolArg>,
    /// Folds (user splits); fold f uses seed + f.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    #[arg(long, default_value_t = 2023)]
    seed: u64,
    /// T: drop items found in fewer baskets (Li et al. use 17 for Dunnhumby and Instacart, 3
    /// for TaFeng).
    #[arg(long, default_value_t = 17)]
    min_item_baskets: u32,
    /// Next-basket users need at least this many baskets ...
    #[arg(long, default_value_t = 3)]
    min_baskets: usize,
    /// ... and at most this many.
    #[arg(long, default_value_t = 50)]
    max_baskets: usize,
    /// TIFU-KNN: nearest neighbours.
    #[arg(long, default_value_t = 300)]
    tifu_neighbours: usize,
    /// TIFU-KNN: decay of baskets within a group.
    #[arg(long, default_value_t = 0.9)]
    tifu_within_decay: f32,
    /// TIFU-KNN: decay of groups.
    #[arg(long, default_value_t = 0.7)]
    tifu_group_decay: f32,
    /// TIFU-KNN: weight of the user's own vector.
    #[arg(long, default_value_t = 0.7)]
    tifu_alpha: f32,
    /// TIFU-KNN: groups per history.
    #[arg(long, default_value_t = 7)]
    tifu_groups: usize,
    /// Bought-together items with at most this many training orders are reported apart.
    #[arg(long, default_value_t = 20)]
    few_orders: u32,
    /// Bought together: at most this many test baskets per fold (a seeded sample of them).
    #[arg(long, default_value_t = 10_000)]
    bt_max_cases: usize,
    /// Rank with the mapping's configured weights instead of tuning them on validation users.
    #[arg(long)]
    no_tune: bool,
    /// Skip the comparisons with cobuy plus its embedding signals (which are off by default)
    /// and the explore shelves.
    #[arg(long)]
    no_ablation: bool,
    /// Print the results as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Write a self-contained HTML report with plots.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the weights tuned on the first fold's validation users as `[model.blend.*]`
    /// tables, to paste into the mapping.
    #[arg(long)]
    write_blend: Option<PathBuf>,
    /// Fail unless cobuy beats these methods on every protocol's headline metrics
    /// (comma-separated, e.g. `P-TopFreq,G-TopFreq`).
    #[arg(long, value_delimiter = ',')]
    check_beats: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct LoadgenArgs {
    /// Target server.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Model directory whose customers and items make up the request mix.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// Requests per second (the first rate of a sweep).
    #[arg(long, default_value_t = 1000.0)]
    rps: f64,
    /// Seconds per step.
    #[arg(long, default_value_t = 30.0)]
    duration_s: f64,
    /// Stop a step after this many requests.
    #[arg(long)]
    requests: Option<u64>,
    /// HTTP/2 connections to spread calls over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// `surfaces` (Recommend on all surfaces) or `all` (plus BoughtTogether, Upsell, BuyAgain).
    #[arg(long, default_value = "surfaces")]
    mix: String,
    /// Per-call deadline in ms.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Calls outstanding before the generator stops sending (counted as client_overflow).
    #[arg(long, default_value_t = 10_000)]
    max_outstanding: usize,
    /// Raise the rate step by step until the p99 target breaks, then overload at 2x.
    #[arg(long)]
    sweep: bool,
    #[arg(long, default_value_t = 1.5)]
    sweep_factor: f64,
    #[arg(long, default_value_t = 2.0)]
    p99_target_ms: f64,
    #[arg(long, default_value_t = 12)]
    max_steps: usize,
    /// Sweep: runs of a breaking step at the same rate before the sweep stops (a host stall
    /// can decide one step's p99).
    #[arg(long, default_value_t = 1)]
    sweep_retries: usize,
    /// Tokio worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Allow a non-loopback target.
    #[arg(long)]
    allow_remote: bool,
    /// The server's process id (same host, Linux): report its CPU time per answered call.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also print each second's calls, p99, slowest call and steal (by scheduled send time);
    /// always in `--json`.
    #[arg(long)]
    timeline: bool,
}

#[derive(Debug, Clone, clap::Args, serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServeSettings {
    /// Model directory holding CURRENT [default: models].
    #[arg(long, env = "COBUY_MODELS")]
    models: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "COBUY_ADDR")]
    addr: Option<SocketAddr>,
    /// Prometheus /metrics listen address [default: 127.0.0.1:9464]; "off" disables it.
    #[arg(long, env = "COBUY_METRICS_ADDR")]
    metrics_addr: Option<String>,
    /// Calls handled at once before new ones are shed with RESOURCE_EXHAUSTED [default: 256].
    #[arg(long, env = "COBUY_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Longest time any call may take, in ms; a client's shorter deadline wins [default: 1000].
    #[arg(long, env = "COBUY_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: Option<u64>,
    /// How often CURRENT is checked for a new version, in ms [default: 2000].
    #[arg(long, env = "COBUY_WATCH_INTERVAL_MS")]
    watch_interval_ms: Option<u64>,
    /// Threads running the ranking code; 0 ranks inline on the async workers [default: 0].
    #[arg(long, env = "COBUY_COMPUTE_THREADS")]
    compute_threads: Option<usize>,
    /// Calls waiting for a ranking thread before new ones are refused [default: 256].
    #[arg(long, env = "COBUY_COMPUTE_QUEUE")]
    compute_queue: Option<usize>,
    /// Calls that queued longer than this (ms) before starting are shed [default: 50].
    #[arg(long, env = "COBUY_MAX_QUEUE_MS")]
    max_queue_ms: Option<u64>,
    /// Tasks a worker runs between polls of the IO driver [default: tokio's, 61].
    #[arg(long, env = "COBUY_EVENT_INTERVAL")]
    event_interval: Option<u32>,
    /// Tokio worker threads [default: one per core].
    #[arg(long, env = "COBUY_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Largest request or response message, in bytes [default: 1048576].
    #[arg(long, env = "COBUY_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
}

impl ServeSettings {
    /// Flags and environment win over the file, the file over defaults.
    fn or(self, file: ServeSettings) -> ServeSettings {
        ServeSettings {
            models: self.models.or(file.models),
            addr: self.addr.or(file.addr),
            metrics_addr: self.metrics_addr.or(file.metrics_addr),
            max_in_flight: self.max_in_flight.or(file.max_in_flight),
            request_timeout_ms: self.request_timeout_ms.or(file.request_timeout_ms),
            watch_interval_ms: self.watch_interval_ms.or(file.watch_interval_ms),
            worker_threads: self.worker_threads.or(file.worker_threads),
            max_queue_ms: self.max_queue_ms.or(file.max_queue_ms),
            compute_threads: self.compute_threads.or(file.compute_threads),
            compute_queue: self.compute_queue.or(file.compute_queue),
            event_interval: self.event_interval.or(file.event_interval),
            max_message_bytes: self.max_message_bytes.or(file.max_message_bytes),
        }
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    settings: ServeSettings,
    /// TOML file with the same settings (snake_case keys); flags and COBUY_* variables win.
    #[arg(long, env = "COBUY_CONFIG")]
    config: Option<PathBuf>,
    /// Answer every RPC with an empty response: the latency floor for benchmarks.
    #[arg(long)]
    noop: bool,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// The bundled sample's order file.
    #[arg(long, default_value = "examples/sample/online_retail_sample.csv.gz")]
    orders: PathBuf,
    #[arg(long, default_value = "examples/datasets/online_retail.toml")]
    mapping: PathBuf,
    #[command(flatten)]
    settings: ServeSettings,
}

/// The order and catalog exports and how to read them (shared by build and eval).
#[derive(Debug, clap::Args)]
struct InputArgs {
    /// Order-line files (CSV/TSV/JSON Lines, optionally .gz, or Parquet).
    #[arg(long, required = true, num_args = 1..)]
    orders: Vec<PathBuf>,
    /// Catalog file (needs a [catalog] table in the mapping).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Mapping TOML naming the columns, cleaning rules and [model] settings.
    #[arg(long)]
    mapping: PathBuf,
    /// Skip up to N malformed rows (listed in the report) instead of failing on the first.
    #[arg(long, default_value_t = 0)]
    max_bad_rows: u64,
}

impl InputArgs {
    fn inputs(&self) -> anyhow::Result<BuildInputs> {
        Ok(BuildInputs {
            orders: self.orders.clone(),
            catalog: self.catalog.clone(),
            mapping: Mapping::from_file(&self.mapping)?,
            ingest: IngestOptions {
                max_bad_rows: self.max_bad_rows,
            },
        })
    }
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Model directory; the new version is published under it and CURRENT switched.
    #[arg(long, default_value = "models")]
    out: PathBuf,
    /// Keep only the newest N versions after publishing (0 keeps all).
    #[arg(long, default_value_t = 0)]
    keep: usize,
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
    /// Measure the similarity index's recall@10 against exact search (1,000 sampled items as
    /// queries) and fail if it is below this value.
    #[arg(long)]
    check_recall: Option<f64>,
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
    let filter = if filter.contains('=') {
        format!("{filter},h2=warn,hyper=warn,tower=warn")
    } else {
        format!("warn,cobuy={filter},h2=warn,hyper=warn,tower=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build(args) => build(args),
        Command::Inspect(args) => inspect(args),
        Command::Serve(args) => {
            let file = match &args.config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
                }
                None => ServeSettings::default(),
            };
            serve(args.settings.or(file), args.noop)
        }
        Command::Demo(args) => demo(args),
        Command::Loadgen(args) => loadgen(args),
        Command::Eval(args) => eval(args),
        Command::Publish(args) => publish(args),
    }
}

fn publish(args: PublishArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let previous = store::current_version(&args.models).ok();
    store::promote(&args.models, &args.version)?;
    tracing::info!(version = %args.version, previous = ?previous, "version published");
    let dir = args.models.join(&args.version);
    writeln!(std::io::stdout().lock(), "published {}", dir.display())?;
    Ok(())
}

fn loadgen(args: LoadgenArgs) -> anyhow::Result<()> {
    use cobuy::loadgen::{LoadSpec, Mix, meets_target, request_mix, run_step, sweep};
    anyhow::ensure!(
        args.addr.ip().is_loopback() || args.allow_remote,
        "--addr {} is not a loopback address; pass --allow-remote to load another host",
        args.addr
    );
    anyhow::ensure!(
        args.rps > 0.0 && args.duration_s > 0.0,
        "--rps and --duration-s must be positive"
    );
    let mix = match args.mix.as_str() {
        "surfaces" => Mix::Surfaces,
        "all" => Mix::All,
        other => anyhow::bail!("--mix {other:?}: expected surfaces or all"),
    };
    let model = store::load_current(&args.models)
        .with_context(|| format!("loading the request mix from {}", args.models.display()))?;
    let calls = std::sync::Arc::new(request_mix(&model, mix, 10_000, args.seed));
    drop(model);
    let spec = LoadSpec {
        addr: args.addr,
        rps: args.rps,
        duration: Duration::from_secs_f64(args.duration_s),
        max_requests: args.requests,
        connections: args.connections.max(1),
        timeout: Duration::from_millis(args.timeout_ms),
        max_outstanding: args.max_outstanding.max(1),
        server_pid: args.server_pid,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let reports = runtime.block_on(async {
        if args.sweep {
            sweep(
                &spec,
                calls,
                args.sweep_factor,
                args.p99_target_ms,
                args.max_steps,
                args.sweep_retries,
            )
            .await
        } else {
            run_step(&spec, calls).await.map(|r| vec![r])
        }
    })?;
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &reports)?;
        writeln!(out)?;
        return Ok(());
    }
    let cpu_header = if args.server_pid.is_some() {
        " cpu µs/call"
    } else {
        ""
    };
    // Steal per CPU ("cpu0/cpu1 ms"), where the kernel reports it.
    let steal = |ms: &[f64]| {
        let each: Vec<String> = ms.iter().map(|m| format!("{m:.0}")).collect();
        each.join("/")
    };
    let steal_header = if reports.iter().any(|r| !r.steal_ms.is_empty()) {
        "  steal ms"
    } else {
        ""
    };
    writeln!(
        out,
        "{:>9}  {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}{cpu_header}{steal_header}  errors",
        "target/s", "sent/s", "ok", "p50 ms", "p90 ms", "p99 ms", "p99.9", "max ms", "err p99"
    )?;
    for r in &reports {
        let errors: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let overflow = if r.client_overflow > 0 {
            format!(" client_overflow={}", r.client_overflow)
        } else {
            String::new()
        };
        let cpu = r
            .server_cpu_us_per_call
            .map_or(String::new(), |c| format!(" {c:>11.1}"));
        let stolen = if steal_header.is_empty() {
            String::new()
        } else {
            format!("  {:>8}", steal(&r.steal_ms))
        };
        writeln!(
            out,
            "{:>9.0}{} {:>9.0} {:>8} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.2} {:>8.2}{cpu}{stolen}  {}{overflow}",
            r.target_rps,
            if r.retry { "r" } else { " " },
            r.achieved_rps,
            r.ok,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            r.error_p99_ms,
            if errors.is_empty() {
                "none".to_owned()
            } else {
                errors.join(" ")
            }
        )?;
    }
    for r in &reports {
        for (code, message) in &r.error_samples {
            writeln!(out, "  at {:.0}/s, first {code}: {message}", r.target_rps)?;
        }
    }
    if args.timeline {
        for r in &reports {
            writeln!(out, "per second at {:.0}/s:", r.target_rps)?;
            writeln!(
                out,
                "{:>7} {:>8} {:>7} {:>8} {:>8} {:>9}",
                "second", "ok", "errors", "p99 ms", "max ms", "steal ms"
            )?;
            for s in &r.timeline {
                writeln!(
                    out,
                    "{:>7} {:>8} {:>7} {:>8.3} {:>8.2} {:>9}",
                    s.second,
                    s.ok,
                    s.errors,
                    s.p99_ms,
                    s.max_ms,
                    steal(&s.steal_ms)
                )?;
            }
        }
    }
    if args.sweep {
        let best = reports
            .iter()
            .filter(|r| meets_target(r, args.p99_target_ms) && r.error_count() == 0)
            .map(|r| r.target_rps)
            .fold(0.0, f64::max);
        writeln!(
            out,
            "highest rate meeting p99 <= {} ms with zero errors: {best:.0}/s",
            args.p99_target_ms
        )?;
    }
    Ok(())
}

fn serve(settings: ServeSettings, noop: bool) -> anyhow::Result<()> {
    let defaults = ServeConfig::default();
    let config = ServeConfig {
        models: settings.models.unwrap_or(defaults.models),
        max_in_flight: settings
            .max_in_flight
            .unwrap_or(defaults.max_in_flight)
            .max(1),
        max_message_bytes: settings
            .max_message_bytes
            .unwrap_or(defaults.max_message_bytes),
        request_timeout: settings
            .request_timeout_ms
            .map_or(defaults.request_timeout, Duration::from_millis),
        watch_interval: settings
            .watch_interval_ms
            .map_or(defaults.watch_interval, Duration::from_millis),
        max_queue_delay: settings
            .max_queue_ms
            .map_or(defaults.max_queue_delay, Duration::from_millis),
        compute_threads: settings.compute_threads.unwrap_or(defaults.compute_threads),
        compute_queue: settings
            .compute_queue
            .unwrap_or(defaults.compute_queue)
            .max(1),
        noop,
    };
    let addr = settings
        .addr
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50051)));
    let metrics_addr: Option<SocketAddr> = match settings.metrics_addr.as_deref() {
        Some("off") => None,
        Some(text) => Some(
            text.parse()
                .with_context(|| format!("--metrics-addr {text:?}"))?,
        ),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(interval) = settings.event_interval {
        runtime.event_interval(interval);
    }
    if let Some(threads) = settings.worker_threads {
        runtime.worker_threads(threads.max(1));
    }
    runtime.build()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let metrics = match metrics_addr {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("binding metrics {a}"))?,
            ),
            None => None,
        };
        cobuy::serve::run(config, listener, metrics, cobuy::serve::shutdown_signal()).await?;
        Ok(())
    })
}

fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let models = args
        .settings
        .models
        .clone()
        .unwrap_or_else(|| PathBuf::from("models"));
    build(BuildArgs {
        input: InputArgs {
            orders: vec![args.orders],
            catalog: None,
            mapping: args.mapping,
            max_bad_rows: 0,
        },
        out: models.clone(),
        keep: 3,
        report_json: None,
    })?;
    let mut settings = args.settings;
    settings.models = Some(models);
    serve(settings, false)
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    use cobuy::eval::{EvalConfig, Protocol, baselines::TifuParams};
    use std::io::Write as _;
    let inputs = args.input.inputs()?;
    let progress = Progress::detect();
    let (log, catalog) = cobuy::build::read_inputs(
        &inputs,
        &progress,
        &mut cobuy::progress::StageClock::default(),
        &mut Default::default(),
    )
    .context("reading the orders failed")?;
    let protocols = if args.protocol.contains(&ProtocolArg::All) {
        Protocol::ALL.to_vec()
    } else {
        let mut p: Vec<Protocol> = Protocol::ALL
            .into_iter()
            .filter(|p| {
                args.protocol.contains(&match p {
                    Protocol::NextBasket => ProtocolArg::NextBasket,
                    Protocol::SecondPurchase => ProtocolArg::SecondPurchase,
                    Protocol::BoughtTogether => ProtocolArg::BoughtTogether,
                })
            })
            .collect();
        p.dedup();
        p
    };
    anyhow::ensure!(args.folds >= 1, "--folds must be at least 1");
    anyhow::ensure!(args.bt_max_cases >= 1, "--bt-max-cases must be at least 1");
    anyhow::ensure!(
        args.min_baskets >= 2 && args.min_baskets <= args.max_baskets,
        "--min-baskets must be >= 2 and <= --max-baskets"
    );
    let cfg = EvalConfig {
        protocols,
        folds: args.folds,
        seed: args.seed,
        min_item_baskets: args.min_item_baskets,
        min_user_baskets: args.min_baskets,
        max_user_baskets: args.max_baskets,
        tifu: TifuParams {
            neighbours: args.tifu_neighbours,
            within_decay: args.tifu_within_decay,
            group_decay: args.tifu_group_decay,
            alpha: args.tifu_alpha,
            groups: args.tifu_groups,
        },
        few_orders: args.few_orders,
        bt_max_cases: args.bt_max_cases,
        tune: !args.no_tune,
        ablation: !args.no_ablation,
    };
    let dataset = args
        .input
        .orders
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let report = cobuy::eval::run(
        &dataset,
        &log,
        &catalog,
        &inputs.mapping.model,
        &cfg,
        &progress,
    );
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", cobuy::eval::report::table(&report))?;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, cobuy::eval::report::html(&report))
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "report written");
    }
    if let Some(path) = &args.write_blend {
        std::fs::write(path, cobuy::eval::report::blend_toml(&report))
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "tuned weights written");
    }
    for name in &args.check_beats {
        let known = report
            .protocols
            .iter()
            .any(|p| p.methods.iter().any(|m| &m.method == name));
        anyhow::ensure!(
            known,
            "--check-beats: no method named {name:?} was evaluated (methods: G-TopFreq, \
             P-TopFreq, GP-TopFreq, TIFU-KNN, co-occurrence count)"
        );
    }
    let failures: Vec<String> = report
        .protocols
        .iter()
        .flat_map(|p| cobuy::eval::not_beaten(p, &args.check_beats))
        .collect();
    anyhow::ensure!(
        failures.is_empty(),
        "quality check failed:\n  {}",
        failures.join("\n  ")
    );
    Ok(())
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let inputs = args.input.inputs()?;
    let mapping = inputs.mapping.clone();
    let started = std::time::Instant::now();
    let (data, mut report) = cobuy::build::build(&inputs, &Progress::detect())
        .context("build failed; nothing was published")?;
    let mut config = serde_json::to_value(&mapping)?;
    config["mapping_file"] = serde_json::Value::String(args.input.mapping.display().to_string());
    let index_started = std::time::Instant::now();
    let index = {
        let _span = tracing::info_span!("build_stage", stage = "similar index").entered();
        cobuy::model::similar::SimilarIndex::build(&data.embeddings, data.config.hnsw_min_items)
    };
    report.stages.push(cobuy::progress::StageTiming {
        stage: format!(
            "similar index ({})",
            if index.is_graph() { "hnsw" } else { "exact" }
        ),
        seconds: index_started.elapsed().as_secs_f64(),
        peak_rss_mib: cobuy::progress::peak_rss_mib(),
    });
    let write_started = std::time::Instant::now();
    store::publish_with_index(&args.out, &data, &index, config.clone(), &report)
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
    if let Some(minimum) = args.check_recall {
        // A catalogue below `hnsw_min_items` is served by an exact scan: measure the graph a
        // build with a lower threshold would store.
        let graph;
        let index = if model.similar.is_graph() {
            &model.similar
        } else {
            graph = cobuy::model::similar::SimilarIndex::build(&model.data.embeddings, 0);
            &graph
        };
        let r = cobuy::model::similar::recall_against_exact(
            index,
            &model.data.embeddings,
            1000,
            10,
            2023,
        );
        let mut out = std::io::stdout().lock();
        use std::io::Write as _;
        writeln!(
            out,
            "hnsw graph over the model's vectors (the model serves with {:?}): recall@{} {:.4} \
             against exact search over {} queries (ef {})",
            model.similar, r.k, r.recall, r.queries, r.ef
        )?;
        anyhow::ensure!(
            r.recall >= minimum,
            "recall@{} {:.4} is below the required {minimum}",
            r.k,
            r.recall
        );
        return Ok(());
    }
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
