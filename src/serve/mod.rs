//! `cobuy serve`: the tonic server. Owns the network edge: health, reflection, load shedding,
//! deadlines, message limits, graceful shutdown, model watching and metrics. Everything it
//! answers comes from `rank`.

pub mod compute;
pub mod convert;
pub mod metrics;
pub mod recommender;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::error::{RequestError, StoreError};
use crate::proto::v1 as pb;
use metrics::Metrics;
use recommender::{AdminService, NoopRecommender, RecommenderService};
use state::ModelState;

/// Validated server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub models: PathBuf,
    /// Requests being handled at once across all connections; beyond it calls are shed with
    /// `RESOURCE_EXHAUSTED` instead of queueing.
    pub max_in_flight: usize,
    pub max_message_bytes: usize,
    /// Upper bound on any request's time; a client's shorter `grpc-timeout` wins.
    pub request_timeout: Duration,
    pub watch_interval: Duration,
    /// A call that waited longer than this between arriving and starting is answered with
    /// `RESOURCE_EXHAUSTED` at once: past capacity, fail fast instead of queueing into seconds.
    pub max_queue_delay: Duration,
    /// Threads running the ranking code; 0 ranks inline on the async workers (the default:
    /// lowest latency on one or two cores). With a pool, calls beyond its queue are refused
    /// at once, which keeps overload answers fast (see benches/RESULTS.md for the trade-off).
    pub compute_threads: usize,
    /// Calls waiting for a ranking thread before new ones are refused.
    pub compute_queue: usize,
    /// Answer every RPC with an empty response (benchmark floor); no model needed.
    pub noop: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            models: PathBuf::from("models"),
            max_in_flight: 256,
            max_message_bytes: 1 << 20,
            request_timeout: Duration::from_secs(1),
            watch_interval: Duration::from_secs(2),
            max_queue_delay: Duration::from_millis(50),
            compute_threads: 0,
            compute_queue: 256,
            noop: false,
        }
    }
}

/// Why a call failed; mapped to a small set of gRPC codes. Internals go to the log.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("no model loaded yet")]
    NoModel,
    #[error("server overloaded: the call queued {queued_ms} ms before starting")]
    Overloaded { queued_ms: u64 },
    #[error("server overloaded: ranking queue full")]
    QueueFull,
    #[error("internal error")]
    Internal,
    #[error("reload failed: {0}")]
    Reload(StoreError),
}

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::Request(e) => Status::invalid_argument(e.to_string()),
            ServeError::NoModel => Status::unavailable("no model loaded yet"),
            e @ (ServeError::Overloaded { .. } | ServeError::QueueFull) => {
                Status::resource_exhausted(e.to_string())
            }
            ServeError::Internal => Status::internal("internal error"),
            ServeError::Reload(StoreError::NoCurrent { .. }) => {
                Status::failed_precondition("no CURRENT model to load")
            }
            ServeError::Reload(e) => {
                tracing::warn!(error = %e, "reload refused");
                Status::failed_precondition(format!(
                    "model refused, the live model keeps serving: {e}"
                ))
            }
        }
    }
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("metrics endpoint: {0}")]
    Io(#[from] std::io::Error),
    #[error("reflection: {0}")]
    Reflection(String),
}

/// Runs the server on `listener` (and `/metrics` on `metrics_listener`) until `shutdown`
/// resolves, then drains in-flight calls.
pub async fn run(
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let state = Arc::new(ModelState::new(config.models.clone()));
    let metrics = Metrics::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    let local = listener.local_addr()?;

    if !config.noop {
        if let Err(e) = state.reload().await {
            tracing::warn!(error = %e, dir = %config.models.display(), "no model at start; serving NOT_SERVING until one is published");
        }
        tokio::spawn(Arc::clone(&state).watch(config.watch_interval, stop_rx.clone()));
        tokio::spawn(track_health(
            Arc::clone(&state),
            health.clone(),
            stop_rx.clone(),
        ));
    } else {
        health
            .set_serving::<pb::recommender_server::RecommenderServer<NoopRecommender>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
    }

    let metrics_task = metrics_listener.map(|l| {
        let mut stop = stop_rx.clone();
        let addr = l.local_addr().ok();
        tracing::info!(addr = ?addr, "metrics on /metrics");
        tokio::spawn(metrics::serve_metrics(
            l,
            metrics.clone(),
            Arc::clone(&state),
            async move {
                let _ = stop.changed().await;
            },
        ))
    });

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;

    let limit = config.max_message_bytes;
    let mut builder = Server::builder()
        .load_shed(true)
        .timeout(config.request_timeout)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            config.max_in_flight,
        ))
        .layer(tower::util::MapRequestLayer::new(stamp_arrival));
    let router = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::admin_server::AdminServer::new(AdminService::new(
            Arc::clone(&state),
        )));
    let router = if config.noop {
        router.add_service(
            pb::recommender_server::RecommenderServer::new(NoopRecommender)
                .max_decoding_message_size(limit),
        )
    } else {
        router.add_service(
            pb::recommender_server::RecommenderServer::new(RecommenderService::new(
                Arc::clone(&state),
                metrics.clone(),
                match config.compute_threads {
                    0 => None,
                    n => Some(Arc::new(compute::ComputePool::new(
                        n,
                        config.compute_queue,
                    )?)),
                },
                config.max_queue_delay,
            ))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
        )
    };
    tracing::info!(addr = %local, noop = config.noop, max_in_flight = config.max_in_flight, "serving gRPC");
    // Nagle's algorithm would add ~40 ms to small responses.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let result = router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = stop_tx.send(true);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    tracing::info!("server stopped");
    result.map_err(ServerError::from)
}

/// When a call was handed to the service stack, read by handlers to measure queueing.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub std::time::Instant);

fn stamp_arrival<B>(
    mut request: tonic::codegen::http::Request<B>,
) -> tonic::codegen::http::Request<B> {
    request
        .extensions_mut()
        .insert(Arrival(std::time::Instant::now()));
    request
}

/// Health is NOT_SERVING until a model is live, then SERVING (a refused reload keeps it so).
async fn track_health(
    state: Arc<ModelState>,
    health: tonic_health::server::HealthReporter,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut serving = false;
    health
        .set_not_serving::<pb::recommender_server::RecommenderServer<RecommenderService>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if !serving && state.current().is_some() {
            health
                .set_serving::<pb::recommender_server::RecommenderServer<RecommenderService>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            serving = true;
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received; draining in-flight calls");
}
