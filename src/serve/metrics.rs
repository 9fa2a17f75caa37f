//! Prometheus metrics: request latency per method, responses by status code, and the live
//! model's version and age. Served as text on its own HTTP port at `/metrics`.

use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::state::ModelState;

/// The server's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    latency: HistogramVec,
    responses: IntCounterVec,
    model_info: IntGaugeVec,
    model_age: prometheus::Gauge,
    /// Each RPC's latency histogram and OK counter, resolved once: the per-call path then
    /// neither hashes label values nor formats the status code (errors still do, rarely).
    methods: Arc<[MethodMetrics]>,
}

/// The RPC methods whose calls are timed (the `method` label).
pub const METHODS: [&str; 5] = [
    "Recommend",
    "BoughtTogether",
    "Upsell",
    "SimilarItems",
    "BuyAgain",
];

#[derive(Debug)]
struct MethodMetrics {
    method: &'static str,
    latency: prometheus::Histogram,
    ok: prometheus::IntCounter,
}

/// Latency buckets from 25 µs to 1 s.
const BUCKETS: [f64; 15] = [
    25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency = HistogramVec::new(
            HistogramOpts::new("cobuy_request_duration_seconds", "Server time per RPC")
                .buckets(BUCKETS.to_vec()),
            &["method"],
        )
        .expect("static metric definition");
        let responses = IntCounterVec::new(
            Opts::new(
                "cobuy_responses_total",
                "Responses by method and gRPC status code",
            ),
            &["method", "code"],
        )
        .expect("static metric definition");
        let model_info = IntGaugeVec::new(
            Opts::new("cobuy_model_info", "1 for the live model version"),
            &["version"],
        )
        .expect("static metric definition");
        let model_age = prometheus::Gauge::new(
            "cobuy_model_age_seconds",
            "Seconds since the live model was built",
        )
        .expect("static metric definition");
        for collector in [
            Box::new(latency.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(responses.clone()),
            Box::new(model_info.clone()),
            Box::new(model_age.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        let methods = METHODS
            .iter()
            .map(|&method| MethodMetrics {
                method,
                latency: latency.with_label_values(&[method]),
                ok: responses.with_label_values(&[method, "Ok"]),
            })
            .collect();
        Self {
            registry,
            latency,
            responses,
            model_info,
            model_age,
            methods,
        }
    }

    pub fn observe(&self, method: &str, code: tonic::Code, seconds: f64) {
        let cached = self.methods.iter().find(|m| m.method == method);
        match cached {
            Some(m) => m.latency.observe(seconds),
            None => self.latency.with_label_values(&[method]).observe(seconds),
        }
        match cached {
            Some(m) if code == tonic::Code::Ok => m.ok.inc(),
            _ => self
                .responses
                .with_label_values(&[method, &format!("{code:?}")])
                .inc(),
        }
    }

    /// Renders the text exposition, refreshing the model gauges first.
    pub fn render(&self, state: &ModelState) -> String {
        self.model_info.reset();
        if let Some(live) = state.current() {
            self.model_info
                .with_label_values(&[&live.model.version])
                .set(1);
            let built = chrono::DateTime::parse_from_rfc3339(&live.built_at)
                .map(|t| t.timestamp())
                .unwrap_or(live.loaded_at);
            self.model_age
                .set((chrono::Utc::now().timestamp() - built) as f64);
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    state: Arc<ModelState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = metrics.render(&state);
            async move { body }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(metrics: &Metrics) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&metrics.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn calls_are_counted_per_method_and_code_through_cached_and_labelled_paths() {
        let metrics = Metrics::new();
        metrics.observe("Recommend", tonic::Code::Ok, 0.0002);
        metrics.observe("Recommend", tonic::Code::Ok, 0.0003);
        metrics.observe("Recommend", tonic::Code::InvalidArgument, 0.00001);
        metrics.observe("BuyAgain", tonic::Code::ResourceExhausted, 0.00002);
        let text = exposition(&metrics);
        for line in [
            r#"cobuy_responses_total{code="Ok",method="Recommend"} 2"#,
            r#"cobuy_responses_total{code="InvalidArgument",method="Recommend"} 1"#,
            r#"cobuy_responses_total{code="ResourceExhausted",method="BuyAgain"} 1"#,
            r#"cobuy_request_duration_seconds_count{method="Recommend"} 3"#,
            r#"cobuy_request_duration_seconds_bucket{method="Recommend",le="0.00025"} 2"#,
            r#"cobuy_request_duration_seconds_count{method="BuyAgain"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
    }
}
