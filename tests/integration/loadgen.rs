//! The load generator against the real server: an open-loop step completes with every call
//! answered, a sweep raises the rate and retries a breaking step before it overloads, and a
//! server at its concurrency limit sheds with RESOURCE_EXHAUSTED.

use std::sync::Arc;
use std::time::Duration;

use cobuy::loadgen::{LoadError, LoadSpec, Mix, process_cpu_time, request_mix, run_step, sweep};
use cobuy::model::store;
use cobuy::serve::ServeConfig;

use crate::serve::{TestServer, publish_fixture_model};

fn spec(addr: std::net::SocketAddr, rps: f64, seconds: f64) -> LoadSpec {
    LoadSpec {
        addr,
        rps,
        duration: Duration::from_secs_f64(seconds),
        max_requests: None,
        connections: 2,
        timeout: Duration::from_secs(2),
        max_outstanding: 1000,
        server_pid: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_step_sends_on_schedule_and_gets_every_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    publish_fixture_model(dir.path());
    let model = store::load_current(dir.path()).expect("model");
    let calls = request_mix(&model, Mix::All, 500, 1);
    assert_eq!(calls.len(), 500);
    let kinds: std::collections::HashSet<std::mem::Discriminant<_>> =
        calls.iter().map(std::mem::discriminant).collect();
    assert_eq!(kinds.len(), 5, "the `all` mix uses every RPC");
    let server = TestServer::start(dir.path().to_path_buf(), false).await;
    let _ = server.channel().await;
    // The server runs in this process, so this process's CPU time is the server's (and the
    // generator's): present, positive and finite.
    let measured = LoadSpec {
        server_pid: Some(std::process::id()),
        ..spec(server.addr, 200.0, 1.0)
    };
    let report = run_step(&measured, Arc::new(calls)).await.expect("load");
    let cpu = report.server_cpu_us_per_call.expect("server CPU per call");
    assert!(cpu > 0.0 && cpu.is_finite(), "{report:?}");
    assert_eq!(report.sent, 200);
    assert_eq!(report.ok, 200, "{report:?}");
    assert_eq!(report.error_count(), 0);
    assert!(
        report.p50_ms > 0.0 && report.p50_ms <= report.p99_ms && report.p99_ms <= report.max_ms,
        "{report:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_capacity_calls_are_shed_with_resource_exhausted() {
    let dir = tempfile::tempdir().expect("tempdir");
    publish_fixture_model(dir.path());
    let model = store::load_current(dir.path()).expect("model");
    let calls = Arc::new(request_mix(&model, Mix::Surfaces, 100, 2));
    // No capacity at all: every call must be refused at once, never queued.
    let config = ServeConfig {
        models: dir.path().to_path_buf(),
        max_in_flight: 0,
        max_queue_delay: Duration::from_secs(30),
        ..ServeConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let addr = server.addr;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = run_step(&spec(addr, 100.0, 0.5), calls)
        .await
        .expect("load");
    assert_eq!(report.ok, 0);
    assert_eq!(
        report.errors.get("ResourceExhausted").copied(),
        Some(report.sent),
        "{report:?}"
    );
    assert!(
        report.error_p99_ms < 1000.0,
        "refusals come long before the 2 s deadline: {report:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compute_pool_mode_answers_every_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    publish_fixture_model(dir.path());
    let model = store::load_current(dir.path()).expect("model");
    let calls = Arc::new(request_mix(&model, Mix::All, 200, 3));
    let config = ServeConfig {
        models: dir.path().to_path_buf(),
        compute_threads: 2,
        compute_queue: 64,
        max_queue_delay: Duration::from_secs(30),
        ..ServeConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let addr = server.addr;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = run_step(&spec(addr, 200.0, 0.5), calls)
        .await
        .expect("load");
    assert_eq!(report.sent, 100);
    assert_eq!(report.ok, 100, "{report:?}");
    server.stop().await;
}

#[tokio::test]
async fn calls_that_queued_too_long_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    publish_fixture_model(dir.path());
    let config = ServeConfig {
        models: dir.path().to_path_buf(),
        max_queue_delay: Duration::ZERO,
        ..ServeConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    let request = cobuy::proto::v1::RecommendRequest {
        surface: cobuy::proto::v1::Surface::Home as i32,
        ..Default::default()
    };
    let status = client.recommend(request).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("queued"), "{}", status.message());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_raises_the_rate_and_retries_a_breaking_step_before_overloading() {
    let dir = tempfile::tempdir().expect("tempdir");
    publish_fixture_model(dir.path());
    let model = store::load_current(dir.path()).expect("model");
    let calls = Arc::new(request_mix(&model, Mix::Surfaces, 100, 4));
    let server = TestServer::start(dir.path().to_path_buf(), false).await;
    let _ = server.channel().await;
    let start = spec(server.addr, 40.0, 0.25);
    // A target every step meets: the rate doubles each step, nothing is retried.
    let met = sweep(&start, Arc::clone(&calls), 2.0, 10_000.0, 3, 1)
        .await
        .expect("sweep");
    let rates: Vec<f64> = met.iter().map(|r| r.target_rps).collect();
    assert_eq!(rates, [40.0, 80.0, 160.0], "{met:?}");
    assert!(met.iter().all(|r| !r.retry && r.error_count() == 0));
    // A target no step can meet (p99 of zero): the first rate is tried 1 + 2 times, then one
    // overload step runs at twice that rate and the sweep ends.
    let broke = sweep(&start, calls, 2.0, 0.0, 3, 2).await.expect("sweep");
    let shape: Vec<(f64, bool)> = broke.iter().map(|r| (r.target_rps, r.retry)).collect();
    assert_eq!(
        shape,
        [(40.0, false), (40.0, true), (40.0, true), (80.0, false)]
    );
    server.stop().await;
}

#[test]
fn the_cpu_time_of_a_missing_process_is_an_error_naming_it() {
    let err = process_cpu_time(u32::MAX).expect_err("no such process");
    assert!(
        matches!(err, LoadError::ServerCpu { pid: u32::MAX, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("/proc/4294967295/task"), "{err}");
    let own = process_cpu_time(std::process::id()).expect("own process");
    assert!(own > Duration::ZERO);
}
