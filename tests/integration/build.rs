//! Ingest, cleaning, model build and the model store, through the library and the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use cobuy::build::{BuildInputs, build};
use cobuy::error::{IngestError, StoreError};
use cobuy::ids::ItemIdx;
use cobuy::ingest::{IngestOptions, IngestReport, OrderLog, read_orders};
use cobuy::mapping::Mapping;
use cobuy::model::store;
use cobuy::progress::Progress;

use crate::fixtures::{fixture, write_gzip, write_parquet};

fn mapping(name: &str) -> Mapping {
    Mapping::from_file(&fixture(name)).expect("fixture mapping")
}

fn ingest(path: &Path, mapping: &Mapping) -> (OrderLog, IngestReport) {
    let mut report = IngestReport::default();
    let log = read_orders(
        &[path.to_path_buf()],
        mapping,
        IngestOptions::default(),
        &Progress::hidden(),
        &mut report,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (log, report)
}

/// Lines as (order time, customer name or "", item name, quantity), sorted, for comparing logs.
fn canonical(log: &OrderLog) -> Vec<(i64, String, String, u32)> {
    let mut out: Vec<_> = log
        .lines
        .iter()
        .map(|l| {
            let order = log.orders[l.order as usize];
            let customer = if order.customer == cobuy::ingest::GUEST {
                String::new()
            } else {
                log.customers.name(order.customer).to_owned()
            };
            (
                order.timestamp,
                customer,
                log.items.name(l.item).to_owned(),
                l.quantity as u32,
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_input_format_reads_the_same_orders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = fixture("orders.csv");
    let gz = dir.path().join("orders.csv.gz");
    write_gzip(&csv, &gz);
    let parquet = dir.path().join("orders.parquet");
    write_parquet(&csv, &parquet);
    let m = mapping("orders.toml");
    let (reference, reference_report) = ingest(&csv, &m);
    assert_eq!(reference.lines.len(), 16);
    for path in [fixture("orders.tsv"), fixture("orders.jsonl"), gz, parquet] {
        let (log, report) = ingest(&path, &m);
        assert_eq!(canonical(&log), canonical(&reference), "{}", path.display());
        assert_eq!(
            report.counts.rows_read,
            reference_report.counts.rows_read,
            "{}",
            path.display()
        );
        assert_eq!(
            log.line_titles[log.items.get("A").expect("A") as usize].as_deref(),
            Some("Apple")
        );
    }
}

#[test]
fn each_cleaning_rule_is_applied_and_counted() {
    let (log, report) = ingest(&fixture("orders.csv"), &mapping("orders.toml"));
    let c = &report.counts;
    assert_eq!(c.rows_read, 23);
    assert_eq!(c.non_product_lines, 1, "POST");
    assert_eq!(c.zero_quantity_lines, 1);
    assert_eq!(c.duplicate_lines, 1);
    assert_eq!(c.cancellation_lines, 1, "C1004");
    assert_eq!(c.return_lines, 1, "negative quantity in 1006");
    assert_eq!(c.lines_fully_offset, 1, "C1004 cancels c1's bread of 1001");
    assert_eq!(
        c.unmatched_cancellations, 1,
        "c2 never bought D before returning it"
    );
    assert_eq!(c.merged_lines, 1, "two apple lines in 1005");
    assert_eq!(c.guest_lines, 2);
    assert_eq!(
        (c.orders, c.guest_orders, c.customers, c.kept_lines),
        (8, 1, 3, 16)
    );
    assert!(
        log.items.get("POST").is_none(),
        "non-product codes are not items"
    );
    // 1001 lost its bread to the cancellation; 1005's apples were merged into one line of 3.
    let apple = log.items.get("A").expect("A");
    let bread = log.items.get("B").expect("B");
    let c1 = log.customers.get("c1").expect("c1");
    let c1_lines: Vec<_> = log
        .lines
        .iter()
        .filter(|l| log.orders[l.order as usize].customer == c1)
        .collect();
    assert!(c1_lines.iter().all(|l| l.item != bread));
    assert!(
        c1_lines
            .iter()
            .any(|l| l.item == apple && l.quantity == 3.0)
    );
}

#[test]
fn cleaning_rules_can_be_switched_off() {
    let mut m = mapping("orders.toml");
    m.cleaning.drop_duplicates = false;
    m.cleaning.offset_cancellations = false;
    m.cleaning.non_product_items.clear();
    let (log, report) = ingest(&fixture("orders.csv"), &m);
    assert_eq!(report.counts.duplicate_lines, 0);
    assert_eq!(report.counts.lines_fully_offset, 0);
    assert!(log.items.get("POST").is_some());
    // The duplicate bread line is now merged instead of dropped.
    assert_eq!(report.counts.merged_lines, 2);
}

#[test]
fn unknown_column_names_the_mapping_field_and_the_file_columns() {
    let mut m = mapping("orders.toml");
    m.orders.quantity = Some("quantity".into());
    let mut report = IngestReport::default();
    let err = read_orders(
        &[fixture("orders.csv")],
        &m,
        IngestOptions::default(),
        &Progress::hidden(),
        &mut report,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, IngestError::UnknownColumn { .. }), "{text}");
    assert!(
        text.contains("\"quantity\"") && text.contains("orders.quantity") && text.contains("qty"),
        "{text}"
    );
}

#[test]
fn bad_timestamp_format_in_mapping_is_rejected_before_reading() {
    let text = std::fs::read_to_string(fixture("orders.toml"))
        .expect("mapping")
        .replace("%Y-%m-%d %H:%M:%S", "%Y-%Q");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write");
    let err = Mapping::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("%Y-%Q"), "{err}");
}

fn corrupt_copy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(fixture("orders.csv")).expect("fixture");
    let corrupt = text.replace(
        "1002,c2,B,2024-01-02 09:00:00",
        "1002,c2,B,2024-02-31 09:00:00",
    );
    let path = dir.join("orders.csv");
    std::fs::write(&path, corrupt).expect("write");
    path
}

#[test]
fn a_bad_row_fails_with_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = corrupt_copy(dir.path());
    let mut report = IngestReport::default();
    let err = read_orders(
        std::slice::from_ref(&path),
        &mapping("orders.toml"),
        IngestOptions::default(),
        &Progress::hidden(),
        &mut report,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!("{}:7: time: ", path.display())),
        "{err}"
    );
    assert!(err.contains("2024-02-31"), "{err}");
}

#[test]
fn max_bad_rows_skips_and_lists_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = corrupt_copy(dir.path());
    let mut report = IngestReport::default();
    let log = read_orders(
        &[path],
        &mapping("orders.toml"),
        IngestOptions { max_bad_rows: 1 },
        &Progress::hidden(),
        &mut report,
    )
    .expect("one bad row is allowed");
    assert_eq!(report.counts.bad_rows_skipped, 1);
    assert_eq!(report.bad_rows.len(), 1);
    assert!(
        report.bad_rows[0].contains(":7: time:"),
        "{:?}",
        report.bad_rows
    );
    assert_eq!(log.lines.len(), 15);
}

#[test]
fn catalog_joins_categories_prices_and_catalog_only_items() {
    let m = mapping("catalog.toml");
    let inputs = BuildInputs {
        orders: vec![fixture("orders.csv")],
        catalog: Some(fixture("catalog.csv")),
        mapping: m,
        ingest: IngestOptions::default(),
    };
    let (data, report) = build(&inputs, &Progress::hidden()).expect("build");
    assert_eq!(report.ingest.counts.catalog_rows, 8);
    let model = cobuy::model::Model::new("test".into(), data);
    let d = &model.data;
    let apple = model.item("A").expect("A");
    let cheese = model.item("C").expect("C");
    let only = model.item("Z").expect("catalog-only item is known");
    let path = |i: ItemIdx| d.categories.paths[d.items.category[i.ix()] as usize].as_str();
    assert_eq!(path(apple), "Produce > Fruit");
    assert_eq!(path(only), "Home > Tools");
    assert_eq!(
        d.items.price[apple.ix()],
        2.10,
        "catalog price wins over the paid price"
    );
    assert!(!d.items.available[cheese.ix()]);
    assert_eq!(d.items.order_count[only.ix()], 0);
    assert_eq!(d.items.titles[only.ix()], "Catalog only");
    assert_eq!(d.bought_together.len_of(only), 0);
    // Ancestor categories list their descendants' popular items.
    let home = d
        .categories
        .paths
        .iter()
        .position(|p| p == "Home")
        .expect("Home") as u32;
    assert!(
        d.popularity
            .top_in_category(home)
            .contains(&model.item("D").expect("D").0)
    );
}

fn build_fixture_model() -> cobuy::model::ModelData {
    let inputs = BuildInputs {
        orders: vec![fixture("orders.csv")],
        catalog: None,
        mapping: mapping("orders.toml"),
        ingest: IngestOptions::default(),
    };
    build(&inputs, &Progress::hidden()).expect("build").0
}

#[test]
fn publish_is_atomic_and_prune_keeps_current() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    assert!(matches!(
        store::load_current(root),
        Err(StoreError::NoCurrent { .. })
    ));
    let data = build_fixture_model();
    let report = cobuy::build::BuildReport::default();
    let first = store::publish(root, &data, serde_json::json!({}), &report).expect("publish");
    let second = store::publish(root, &data, serde_json::json!({}), &report).expect("publish");
    assert_ne!(first, second);
    let version = store::current_version(root).expect("current");
    assert_eq!(root.join(&version), second);
    let model = store::load_current(root).expect("load");
    assert_eq!(model.data.items.ids, data.items.ids);
    // The arrays stored as byte blocks come back bit for bit (NaN intervals included).
    let (got, want) = (&model.data, &data);
    let bits = |a: &[u8], b: &[u8], table: &str| assert_eq!(a, b, "{table} differs after a load");
    use bytemuck::cast_slice as b;
    bits(
        b(&got.bought_together.entries),
        b(&want.bought_together.entries),
        "bought together",
    );
    bits(
        b(&got.next_order.offsets),
        b(&want.next_order.offsets),
        "next-order offsets",
    );
    bits(b(&got.repurchase), b(&want.repurchase), "repurchase");
    bits(
        b(&got.customers.history),
        b(&want.customers.history),
        "history",
    );
    bits(b(&got.customers.due), b(&want.customers.due), "due");
    bits(
        b(&got.customers.repeat),
        b(&want.customers.repeat),
        "repeat",
    );
    bits(
        b(&got.customers.last_order),
        b(&want.customers.last_order),
        "last order",
    );
    bits(
        b(&got.embeddings.vectors),
        b(&want.embeddings.vectors),
        "vectors",
    );
    bits(b(&got.items.price), b(&want.items.price), "prices");
    assert!(
        want.customers
            .history
            .iter()
            .any(|h| h.interval_days.is_nan()),
        "the fixture should hold a single-purchase history entry"
    );
    assert!(!std::fs::read_dir(root).expect("ls").any(|e| {
        e.expect("entry")
            .file_name()
            .to_string_lossy()
            .starts_with('.')
    }));

    // A corrupted model file is refused by its checksum.
    let bin = first.join(store::MODEL_BIN);
    let mut bytes = std::fs::read(&bin).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&bin, bytes).expect("write");
    assert!(matches!(
        store::load_version(&first),
        Err(StoreError::Checksum { .. })
    ));

    let removed = store::prune(root, 1).expect("prune");
    assert_eq!(removed, vec![first]);
    assert!(second.exists());
    store::load_current(root).expect("current still loads");
}

fn cobuy_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cobuy"))
}

/// `cobuy build` of the CSV fixture into `models`.
fn cli_build_fixture(models: &Path) -> std::process::Output {
    cobuy_bin()
        .args(["build", "--mapping"])
        .arg(fixture("orders.toml"))
        .arg("--orders")
        .arg(fixture("orders.csv"))
        .arg("--out")
        .arg(models)
        .output()
        .expect("run cobuy")
}

#[test]
fn cli_build_with_a_corrupt_row_publishes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    let ok = cli_build_fixture(&models);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let before = store::current_version(&models).expect("current");

    let corrupt = corrupt_copy(dir.path());
    let failed = cobuy_bin()
        .args(["build", "--mapping"])
        .arg(fixture("orders.toml"))
        .arg("--orders")
        .arg(&corrupt)
        .arg("--out")
        .arg(&models)
        .output()
        .expect("run cobuy");
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains(&format!("{}:7: time:", corrupt.display())),
        "{stderr}"
    );
    assert_eq!(store::current_version(&models).expect("current"), before);
    let versions = std::fs::read_dir(&models)
        .expect("ls")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    assert_eq!(versions, 1, "no second version directory");
}

#[test]
fn a_build_killed_halfway_leaves_the_served_model_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    let data = build_fixture_model();
    let published = store::publish(&models, &data, serde_json::json!({}), &Default::default())
        .expect("publish");
    let before = std::fs::read(published.join(store::MODEL_BIN)).expect("read");

    // A FIFO as the order file: the build blocks mid-ingest until we kill it.
    let fifo = dir.path().join("orders.csv");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let mut child = cobuy_bin()
        .args(["build", "--mapping"])
        .arg(fixture("orders.toml"))
        .arg("--orders")
        .arg(&fifo)
        .arg("--out")
        .arg(&models)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write as _;
        let mut writer = std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("open fifo");
        let head: String = std::fs::read_to_string(fixture("orders.csv"))
            .expect("fixture")
            .lines()
            .take(10)
            .map(|l| format!("{l}\n"))
            .collect();
        writer.write_all(head.as_bytes()).expect("write");
        writer.flush().expect("flush");
        std::thread::sleep(std::time::Duration::from_millis(200));
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
    }
    assert_eq!(
        root_current(&models),
        published.file_name().expect("name").to_string_lossy()
    );
    assert_eq!(
        std::fs::read(published.join(store::MODEL_BIN)).expect("read"),
        before
    );
    store::load_current(&models).expect("the previous model still loads");
}

fn root_current(models: &Path) -> String {
    store::current_version(models).expect("current")
}

#[test]
fn publish_promotes_an_existing_version_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    let run_build = || {
        let out = cli_build_fixture(&models);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        root_current(&models)
    };
    let first = run_build();
    let second = run_build();
    assert_ne!(first, second);
    let publish = |version: &str| {
        cobuy_bin()
            .args(["publish", "--models"])
            .arg(&models)
            .arg(version)
            .output()
            .expect("run cobuy")
    };

    // Roll back to the first version.
    let out = publish(&first);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(root_current(&models), first);

    // A version that does not exist, a path instead of a name, or a corrupted version is
    // refused with the reason, and CURRENT stays.
    for bad in ["20000101T000000Z", "../models", ""] {
        let out = publish(bad);
        assert!(!out.status.success(), "{bad:?} accepted");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
        assert_eq!(root_current(&models), first);
    }
    let bin = models.join(&second).join(store::MODEL_BIN);
    let mut bytes = std::fs::read(&bin).expect("read");
    bytes[0] ^= 0xff;
    std::fs::write(&bin, bytes).expect("write");
    let out = publish(&second);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("checksum"), "{stderr}");
    assert_eq!(root_current(&models), first);
}
