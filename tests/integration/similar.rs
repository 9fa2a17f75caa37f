//! Item embeddings, the HNSW graph and `SimilarItems`, on a model of the bundled Online Retail
//! sample (3,000 real invoices) whose graph is forced on (`hnsw_min_items = 0`), so the graph
//! is built, dumped, checksummed, loaded and served as it is for a large catalogue.

use std::path::{Path, PathBuf};

use cobuy::build::{BuildInputs, build};
use cobuy::error::StoreError;
use cobuy::ingest::IngestOptions;
use cobuy::mapping::Mapping;
use cobuy::model::similar::{HNSW_FILES, SimilarIndex};
use cobuy::model::store;
use cobuy::progress::Progress;
use cobuy::proto::v1 as pb;
use tonic::Code;

use crate::serve::TestServer;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Publishes the sample model with a graph index under `root`; returns the version directory.
fn publish_sample(root: &Path) -> PathBuf {
    let mut mapping =
        Mapping::from_file(&repo("examples/datasets/online_retail.toml")).expect("mapping");
    mapping.model.hnsw_min_items = 0;
    let inputs = BuildInputs {
        orders: vec![repo("examples/sample/online_retail_sample.csv.gz")],
        catalog: None,
        mapping,
        ingest: IngestOptions::default(),
    };
    let (data, report) = build(&inputs, &Progress::hidden()).expect("build");
    assert!(data.embeddings.indexed_count() > 500, "the sample embeds");
    store::publish(root, &data, serde_json::json!({}), &report).expect("publish")
}

#[test]
fn the_graph_is_published_with_checksums_and_a_corrupt_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let version = publish_sample(dir.path());
    let manifest = store::read_manifest(&version).expect("manifest");
    for file in HNSW_FILES {
        assert!(
            manifest.files.iter().any(|f| f.name == file),
            "{file} listed"
        );
    }
    let model = store::load_version(&version).expect("load");
    assert!(matches!(model.similar, SimilarIndex::Loaded(_)));
    let recall = cobuy::model::similar::recall_against_exact(
        &model.similar,
        &model.data.embeddings,
        300,
        10,
        7,
    );
    assert!(recall.recall >= 0.95, "recall@10 {}", recall.recall);

    let graph = version.join(HNSW_FILES[0]);
    let mut bytes = std::fs::read(&graph).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&graph, bytes).expect("write");
    let err = store::load_version(&version).expect_err("corrupt graph");
    assert!(matches!(err, StoreError::Checksum { .. }), "{err}");
}

#[tokio::test]
async fn similar_items_honour_filters_during_the_search_and_validate_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    publish_sample(dir.path());
    let server = TestServer::start(dir.path().to_path_buf(), false).await;
    let mut client = server.client().await;
    let ask = |k: u32, filters: Option<pb::Filters>| pb::SimilarItemsRequest {
        item_id: "85123A".into(),
        k,
        filters,
        ..Default::default()
    };
    let all = client
        .similar_items(ask(10, None))
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(all.items.len(), 10);
    assert!(!all.model_version.is_empty());
    for item in &all.items {
        assert_eq!(item.reason, pb::Reason::Similar as i32);
        assert_ne!(item.item_id, "85123A");
        assert_eq!(item.source_item_ids, vec!["85123A".to_string()]);
        let e = item.evidence.as_ref().expect("evidence");
        assert!(e.similarity > 0.0 && e.similarity <= 1.0001, "{e:?}");
        assert!(e.text.contains("WHITE HANGING HEART"), "{}", e.text);
    }
    assert!(all.items.windows(2).all(|w| w[0].score >= w[1].score));

    // Exclude the best answer; allow only three named items; cap the price.
    let best = all.items[0].item_id.clone();
    let excluded = client
        .similar_items(ask(
            10,
            Some(pb::Filters {
                exclude_item_ids: vec![best.clone()],
                ..Default::default()
            }),
        ))
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(excluded.items.len(), 10);
    assert!(excluded.items.iter().all(|i| i.item_id != best));
    let few = vec![
        "22423".to_string(),
        "21931".to_string(),
        "84879".to_string(),
    ];
    let only = client
        .similar_items(ask(
            10,
            Some(pb::Filters {
                include_item_ids: few.clone(),
                ..Default::default()
            }),
        ))
        .await
        .expect("ok")
        .into_inner();
    let mut ids: Vec<String> = only.items.iter().map(|i| i.item_id.clone()).collect();
    ids.sort();
    let mut expected = few.clone();
    expected.sort();
    assert_eq!(ids, expected, "all three allowed items come back");
    let cheap = client
        .similar_items(ask(
            10,
            Some(pb::Filters {
                max_price: Some(1.0),
                ..Default::default()
            }),
        ))
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(cheap.items.len(), 10);
    assert!(
        cheap.items.iter().all(|i| i.price <= 1.0),
        "{:?}",
        cheap.items
    );

    // Unknown items are reported, malformed requests refused with the field named.
    let unknown = client
        .similar_items(pb::SimilarItemsRequest {
            item_id: "NOPE".into(),
            ..Default::default()
        })
        .await
        .expect("ok")
        .into_inner();
    assert!(unknown.items.is_empty());
    assert_eq!(unknown.unknown_item_ids, vec!["NOPE".to_string()]);
    let err = client
        .similar_items(ask(101, None))
        .await
        .expect_err("k too large");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains('k'), "{}", err.message());
    let err = client
        .similar_items(pb::SimilarItemsRequest::default())
        .await
        .expect_err("no item");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("item_id"), "{}", err.message());
    server.stop().await;
}

#[tokio::test]
async fn upsell_without_a_catalogue_comes_from_embedding_neighbours_and_is_never_cheaper() {
    let dir = tempfile::tempdir().expect("tempdir");
    publish_sample(dir.path());
    let model = store::load_current(dir.path()).expect("load");
    let server = TestServer::start(dir.path().to_path_buf(), false).await;
    let mut client = server.client().await;
    let mut answered = 0;
    for anchor in ["85123A", "22423", "84879", "22720", "21931", "47566"] {
        let price = f64::from(model.data.items.price[model.item(anchor).expect("item").ix()]);
        let response = client
            .upsell(pb::UpsellRequest {
                item_id: anchor.into(),
                k: 5,
                ..Default::default()
            })
            .await
            .expect("ok")
            .into_inner();
        for item in &response.items {
            assert!(
                item.price > price && item.price <= 2.0 * price + 1e-6,
                "{anchor} at {price}: {} at {}",
                item.item_id,
                item.price
            );
            assert_eq!(item.reason, pb::Reason::Upsell as i32);
        }
        answered += usize::from(!response.items.is_empty());
    }
    assert!(
        answered >= 4,
        "a shop without categories still gets upsells"
    );
    server.stop().await;
}
