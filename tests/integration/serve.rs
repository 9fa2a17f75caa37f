//! The real server on 127.0.0.1:0, called through the generated tonic clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cobuy::build::{BuildInputs, build};
use cobuy::ingest::IngestOptions;
use cobuy::mapping::Mapping;
use cobuy::model::store;
use cobuy::progress::Progress;
use cobuy::proto::v1 as pb;
use cobuy::serve::ServeConfig;
use pb::admin_client::AdminClient;
use pb::recommender_client::RecommenderClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::fixtures::fixture;

const DAY: i64 = 86_400;

/// Builds the catalog fixture model and publishes it under `root`; returns its version.
pub fn publish_fixture_model(root: &Path) -> String {
    let inputs = BuildInputs {
        orders: vec![fixture("orders.csv")],
        catalog: Some(fixture("catalog.csv")),
        mapping: Mapping::from_file(&fixture("catalog.toml")).expect("mapping"),
        ingest: IngestOptions::default(),
    };
    let (data, report) = build(&inputs, &Progress::hidden()).expect("build");
    let dir = store::publish(root, &data, serde_json::json!({}), &report).expect("publish");
    dir.file_name()
        .expect("version")
        .to_string_lossy()
        .into_owned()
}

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), cobuy::serve::ServerError>>,
}

impl TestServer {
    pub async fn start(models: PathBuf, noop: bool) -> Self {
        Self::start_with(ServeConfig {
            models,
            noop,
            watch_interval: Duration::from_millis(50),
            // CI machines are small and busy: queueing-time shedding must not fail tests that
            // count errors (it has its own test).
            max_queue_delay: Duration::from_secs(30),
            ..ServeConfig::default()
        })
        .await
    }

    pub async fn start_with(config: ServeConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(cobuy::serve::run(config, listener, None, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub async fn channel(&self) -> Channel {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint");
        for _ in 0..100 {
            if let Ok(channel) = endpoint.connect().await {
                return channel;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server at {} did not accept connections", self.addr);
    }

    pub async fn client(&self) -> RecommenderClient<Channel> {
        RecommenderClient::new(self.channel().await)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .await
            .expect("server task")
            .expect("server ran cleanly");
    }
}

fn ctx(ids: &[&str]) -> Vec<pb::ContextItem> {
    ids.iter()
        .map(|id| pb::ContextItem {
            item_id: (*id).into(),
            quantity: 1.0,
            price: 0.0,
        })
        .collect()
}

fn recommend(customer: &str, surface: pb::Surface, items: &[&str]) -> pb::RecommendRequest {
    pb::RecommendRequest {
        customer_id: customer.into(),
        surface: surface as i32,
        context_items: ctx(items),
        k: 5,
        filters: None,
        as_of_seconds: None,
    }
}

async fn fixture_server() -> (tempfile::TempDir, String, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let version = publish_fixture_model(dir.path());
    let server = TestServer::start(dir.path().to_path_buf(), false).await;
    (dir, version, server)
}

#[tokio::test]
async fn every_surface_answers_with_version_id_and_evidence() {
    let (_dir, version, server) = fixture_server().await;
    let mut client = server.client().await;
    let mut ids = std::collections::HashSet::new();
    for surface in [
        pb::Surface::OrderTracking,
        pb::Surface::FollowUpEmail,
        pb::Surface::ReplenishmentReminder,
        pb::Surface::ProductPage,
        pb::Surface::Cart,
        pb::Surface::Home,
    ] {
        let mut request = recommend("c2", surface, &["B"]);
        request.as_of_seconds = Some(chrono_seconds("2024-01-28"));
        let response = client
            .recommend(request)
            .await
            .unwrap_or_else(|s| panic!("{surface:?}: {s}"))
            .into_inner();
        assert_eq!(response.model_version, version);
        assert!(
            ids.insert(response.recommendation_id.clone()),
            "recommendation ids are unique"
        );
        assert!(!response.cold_start);
        assert!(response.items.len() <= 5);
        for item in &response.items {
            assert_ne!(item.item_id, "B", "{surface:?} returned a context item");
            let evidence = item.evidence.as_ref().expect("evidence");
            assert!(!evidence.text.is_empty());
            assert_ne!(item.reason, pb::Reason::Unspecified as i32);
        }
        if surface == pb::Surface::ReplenishmentReminder {
            assert!(
                response
                    .items
                    .iter()
                    .all(|i| i.reason == pb::Reason::BuyAgain as i32),
                "{response:?}"
            );
            assert!(!response.items.is_empty(), "c2's apples are due");
        } else {
            assert!(!response.items.is_empty(), "{surface:?} returned nothing");
        }
    }
    server.stop().await;
}

fn chrono_seconds(date: &str) -> i64 {
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .expect("date")
        .and_hms_opt(0, 0, 0)
        .expect("time")
        .and_utc()
        .timestamp()
}

#[tokio::test]
async fn order_tracking_returns_complements_with_bought_together_evidence() {
    let (_dir, _version, server) = fixture_server().await;
    let mut client = server.client().await;
    let response = client
        .bought_together(pb::BoughtTogetherRequest {
            items: ctx(&["A"]),
            k: 3,
            filters: None,
            customer_id: String::new(),
        })
        .await
        .expect("ok")
        .into_inner();
    let first = response.items.first().expect("a complement");
    assert_eq!(first.reason, pb::Reason::BoughtTogether as i32);
    assert_eq!(first.source_item_ids, vec!["A".to_string()]);
    let evidence = first.evidence.as_ref().expect("evidence");
    assert!(
        evidence.support >= 1 && evidence.confidence > 0.0 && evidence.lift > 0.0,
        "{evidence:?}"
    );
    assert!(evidence.text.contains("orders"), "{}", evidence.text);
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_invalid_argument_naming_the_field() {
    let (_dir, _version, server) = fixture_server().await;
    let mut client = server.client().await;
    let cases: Vec<(pb::RecommendRequest, &str)> = vec![
        (
            pb::RecommendRequest {
                k: 101,
                ..recommend("c1", pb::Surface::Home, &[])
            },
            "k",
        ),
        (
            pb::RecommendRequest {
                surface: 0,
                ..recommend("c1", pb::Surface::Home, &[])
            },
            "surface",
        ),
        (
            pb::RecommendRequest {
                surface: 42,
                ..recommend("c1", pb::Surface::Home, &[])
            },
            "surface",
        ),
        (
            pb::RecommendRequest {
                context_items: ctx(&["A"; 101]),
                ..recommend("c1", pb::Surface::Cart, &[])
            },
            "context_items",
        ),
        (
            pb::RecommendRequest {
                context_items: ctx(&[""]),
                ..recommend("c1", pb::Surface::Cart, &[])
            },
            "context_items",
        ),
        (
            pb::RecommendRequest {
                filters: Some(pb::Filters {
                    min_price: Some(5.0),
                    max_price: Some(1.0),
                    ..Default::default()
                }),
                ..recommend("c1", pb::Surface::Cart, &["A"])
            },
            "filters.min_price",
        ),
        (
            pb::RecommendRequest {
                filters: Some(pb::Filters {
                    max_category_share: Some(0.0),
                    ..Default::default()
                }),
                ..recommend("c1", pb::Surface::Cart, &["A"])
            },
            "filters.max_category_share",
        ),
        (
            pb::RecommendRequest {
                filters: Some(pb::Filters {
                    purchased: 9,
                    ..Default::default()
                }),
                ..recommend("c1", pb::Surface::Cart, &["A"])
            },
            "filters.purchased",
        ),
    ];
    for (request, field) in cases {
        let status = client
            .recommend(request)
            .await
            .expect_err("must be refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "{field}: {}",
            status.message()
        );
    }
    let status = client
        .buy_again(pb::BuyAgainRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("customer_id:"),
        "{}",
        status.message()
    );
    let status = client
        .upsell(pb::UpsellRequest::default())
        .await
        .expect_err("refused");
    assert!(
        status.message().starts_with("item_id:"),
        "{}",
        status.message()
    );
    let status = client
        .upsell(pb::UpsellRequest {
            item_id: "A".into(),
            max_price_ratio: 0.5,
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert!(
        status.message().starts_with("max_price_ratio:"),
        "{}",
        status.message()
    );
    let status = client
        .bought_together(pb::BoughtTogetherRequest::default())
        .await
        .expect_err("refused");
    assert!(
        status.message().starts_with("items:"),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_customers_get_a_cold_start_and_unknown_items_are_reported() {
    let (_dir, _version, server) = fixture_server().await;
    let mut client = server.client().await;
    let response = client
        .recommend(recommend(
            "nobody",
            pb::Surface::OrderTracking,
            &["A", "NOPE"],
        ))
        .await
        .expect("ok")
        .into_inner();
    assert!(response.cold_start);
    assert_eq!(response.unknown_item_ids, vec!["NOPE".to_string()]);
    assert!(!response.items.is_empty());
    assert!(response.items.iter().all(|i| i.item_id != "A"));
    // Nothing known at all: popularity in the context's categories, then overall.
    let response = client
        .recommend(recommend("", pb::Surface::Home, &[]))
        .await
        .expect("ok")
        .into_inner();
    assert!(response.cold_start);
    assert!(!response.items.is_empty());
    assert!(
        response
            .items
            .iter()
            .all(|i| i.reason == pb::Reason::Popular as i32)
    );
    let response = client
        .buy_again(pb::BuyAgainRequest {
            customer_id: "nobody".into(),
            ..Default::default()
        })
        .await
        .expect("ok")
        .into_inner();
    assert!(response.unknown_customer && response.items.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_due_consumable_comes_back_and_a_durable_just_bought_does_not() {
    let (_dir, _version, server) = fixture_server().await;
    let mut client = server.client().await;
    // c2 bought apples (A) on Jan 2, 12 and 20: about every 9 days, due again around Jan 29.
    let mut request = recommend("c2", pb::Surface::Home, &[]);
    request.as_of_seconds = Some(chrono_seconds("2024-01-28"));
    let response = client.recommend(request).await.expect("ok").into_inner();
    let apple = response
        .items
        .iter()
        .find(|i| i.item_id == "A")
        .expect("due apples come back");
    assert_eq!(apple.reason, pb::Reason::BuyAgain as i32);
    let evidence = apple.evidence.as_ref().expect("evidence");
    assert!(
        (evidence.typical_interval_days - 9.0).abs() < 2.0,
        "{evidence:?}"
    );

    // c3 bought the durable D on Jan 13; it is bought together with apples, yet not shown again.
    let with_policy = client
        .recommend(recommend("c3", pb::Surface::OrderTracking, &["E"]))
        .await
        .expect("ok")
        .into_inner();
    assert!(
        with_policy.items.iter().all(|i| i.item_id != "D"),
        "{with_policy:?}"
    );
    let mut request = recommend("c3", pb::Surface::OrderTracking, &["E"]);
    request.filters = Some(pb::Filters {
        purchased: pb::PurchasedPolicy::Include as i32,
        ..Default::default()
    });
    let without_policy = client.recommend(request).await.expect("ok").into_inner();
    assert!(
        without_policy.items.iter().any(|i| i.item_id == "D"),
        "D is a real candidate: {without_policy:?}"
    );

    let due = client
        .buy_again(pb::BuyAgainRequest {
            customer_id: "c2".into(),
            as_of_seconds: Some(chrono_seconds("2024-01-28")),
            ..Default::default()
        })
        .await
        .expect("ok")
        .into_inner();
    let first = due.items.first().expect("apples");
    assert_eq!(first.item_id, "A");
    assert!(first.due && first.purchases == 3, "{first:?}");
    let expected_due = chrono_seconds("2024-01-20") + 10 * 3600 + 9 * DAY;
    assert!(
        (first.due_at_seconds - expected_due).abs() <= 2 * DAY,
        "{first:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn upsell_is_pricier_within_the_band_and_same_category() {
    let (_dir, _version, server) = fixture_server().await;
    let mut client = server.client().await;
    let response = client
        .upsell(pb::UpsellRequest {
            item_id: "A".into(),
            k: 5,
            ..Default::default()
        })
        .await
        .expect("ok")
        .into_inner();
    let ids: Vec<&str> = response.items.iter().map(|i| i.item_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["F"],
        "F is 1.67x; G (4.3x) is outside the band and H is cheaper"
    );
    let item = &response.items[0];
    assert_eq!(item.reason, pb::Reason::Upsell as i32);
    assert_eq!(item.category, "Produce > Fruit");
    assert!(item.price > 2.10);
    let wide = client
        .upsell(pb::UpsellRequest {
            item_id: "A".into(),
            k: 5,
            max_price_ratio: 5.0,
            ..Default::default()
        })
        .await
        .expect("ok")
        .into_inner();
    let ids: Vec<&str> = wide.items.iter().map(|i| i.item_id.as_str()).collect();
    assert!(ids.contains(&"G") && !ids.contains(&"H"), "{ids:?}");
    server.stop().await;
}

#[tokio::test]
async fn health_reflection_and_admin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path().to_path_buf(), false).await;
    let channel = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let service = "cobuy.v1.Recommender".to_string();
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.clone(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    let mut client = RecommenderClient::new(channel.clone());
    let refused = client
        .recommend(recommend("c1", pb::Surface::Home, &[]))
        .await
        .expect_err("no model");
    assert_eq!(refused.code(), Code::Unavailable);

    let version = publish_fixture_model(dir.path());
    let mut serving = false;
    for _ in 0..100 {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.clone(),
            })
            .await
            .expect("health")
            .into_inner();
        if status.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(serving, "health turns SERVING once a model is published");

    let mut admin = AdminClient::new(channel.clone());
    let info = admin
        .model_info(pb::ModelInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.version, version);
    assert!(info.items >= 8 && info.customers == 3);

    // A corrupt new version is refused; the old one keeps serving and health stays SERVING.
    let bad = dir.path().join("99999999T999999Z");
    std::fs::create_dir_all(&bad).expect("mkdir");
    std::fs::copy(
        dir.path().join(&version).join(store::MANIFEST),
        bad.join(store::MANIFEST),
    )
    .expect("copy");
    std::fs::write(bad.join(store::MODEL_BIN), b"not a model").expect("write");
    store::set_current(dir.path(), "99999999T999999Z").expect("point CURRENT at it");
    let refused = admin
        .reload(pb::ReloadRequest {})
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let still = client
        .recommend(recommend("c1", pb::Surface::Home, &[]))
        .await
        .expect("still serving")
        .into_inner();
    assert_eq!(still.model_version, version);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection")
        .into_inner();
    let reply = stream.message().await.expect("reply").expect("one reply");
    let text = format!("{reply:?}");
    for name in [
        "cobuy.v1.Recommender",
        "cobuy.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(text.contains(name), "reflection lists {name}: {text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn model_swap_under_load_fails_no_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = publish_fixture_model(dir.path());
    let server = TestServer::start(dir.path().to_path_buf(), false).await;
    let channel = server.channel().await;
    let failures = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut workers = Vec::new();
    for w in 0..4 {
        let mut client = RecommenderClient::new(channel.clone());
        let (failures, calls, stop, seen) = (
            Arc::clone(&failures),
            Arc::clone(&calls),
            Arc::clone(&stop),
            seen_tx.clone(),
        );
        workers.push(tokio::spawn(async move {
            let surfaces = [
                pb::Surface::Home,
                pb::Surface::OrderTracking,
                pb::Surface::Cart,
                pb::Surface::FollowUpEmail,
            ];
            while !stop.load(Ordering::Relaxed) {
                match client
                    .recommend(recommend("c2", surfaces[w % 4], &["A"]))
                    .await
                {
                    Ok(r) => {
                        let _ = seen.send(r.into_inner().model_version);
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = publish_fixture_model(dir.path());
    assert_ne!(first, second);
    let mut saw_new = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), seen_rx.recv()).await {
            Ok(Some(v)) if v == second => {
                saw_new = true;
                break;
            }
            _ => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    assert!(saw_new, "the new model version is served after the swap");
    assert!(calls.load(Ordering::Relaxed) > 50, "load was applied");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no call failed during the swap"
    );
    server.stop().await;
}

#[tokio::test]
async fn noop_target_answers_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path().to_path_buf(), true).await;
    let mut client = server.client().await;
    let response = client
        .recommend(recommend("c1", pb::Surface::Home, &[]))
        .await
        .expect("ok")
        .into_inner();
    assert!(response.items.is_empty() && response.model_version.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_replaced_model_is_freed_once_the_last_call_using_it_ends() {
    use cobuy::serve::state::ModelState;
    let root = tempfile::tempdir().expect("tempdir");
    let first = publish_fixture_model(root.path());
    let state = Arc::new(ModelState::new(root.path().to_path_buf()));
    state.reload().await.expect("first load");
    // A call in flight holds the first model across the swap.
    let in_flight = state.current().expect("live model");
    assert_eq!(in_flight.model.version, first);
    let freed = Arc::downgrade(&in_flight);
    let second = publish_fixture_model(root.path());
    assert_ne!(first, second);
    let outcome = state.reload().await.expect("second load");
    assert!(outcome.changed);
    assert_eq!(state.current().expect("live").model.version, second);
    // The call and the release thread hold the old model; nothing else does.
    assert_eq!(Arc::strong_count(&in_flight), 2);
    drop(in_flight);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while freed.strong_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replaced model was not freed after its last call ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The live model is untouched.
    assert_eq!(state.current().expect("live").model.version, second);
}
