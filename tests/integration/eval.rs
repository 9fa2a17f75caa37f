//! `cobuy eval` through the real binary on the bundled Online Retail sample: every protocol and
//! method reported, JSON and HTML outputs, tuned weights that a mapping accepts, and the
//! quality gate CI relies on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cobuy::config::BuildConfig;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn eval(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cobuy"))
        .arg("eval")
        .arg("--orders")
        .arg(repo("examples/sample/online_retail_sample.csv.gz"))
        .arg("--mapping")
        .arg(repo("examples/datasets/online_retail.toml"))
        .args(["--folds", "2", "--min-item-baskets", "3"])
        .args(extra)
        .output()
        .expect("run cobuy eval")
}

#[test]
fn eval_reports_every_protocol_and_method_as_json_html_and_tuned_weights() {
    let dir = tempfile::tempdir().expect("tempdir");
    let html = dir.path().join("eval.html");
    let blend = dir.path().join("blend.toml");
    let out = eval(&[
        "--json",
        "--report",
        html.to_str().expect("utf-8"),
        "--write-blend",
        blend.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let protocols = report["protocols"].as_array().expect("protocols");
    let names: Vec<&str> = protocols
        .iter()
        .map(|p| p["protocol"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["next_basket", "second_purchase", "bought_together"]);
    for p in protocols {
        let methods: Vec<&str> = p["methods"]
            .as_array()
            .expect("methods")
            .iter()
            .map(|m| m["method"].as_str().expect("method"))
            .collect();
        let expected: &[&str] = if p["protocol"] == "bought_together" {
            &[
                "co-occurrence count",
                "cobuy without embeddings",
                "cobuy + embedding signals",
                "cobuy",
            ]
        } else {
            &[
                "G-TopFreq",
                "P-TopFreq",
                "GP-TopFreq",
                "TIFU-KNN",
                "cobuy explore shelf",
                "cobuy explore shelf + customer vector",
                "cobuy (configured weights)",
                "cobuy without embeddings",
                "cobuy + embedding signals",
                "cobuy",
            ]
        };
        assert_eq!(methods, expected);
        for m in p["methods"].as_array().expect("methods") {
            assert_eq!(m["per_fold"].as_array().expect("folds").len(), 2);
            for (name, v) in m["metrics"].as_object().expect("metrics") {
                let mean = v["mean"].as_f64().expect("mean");
                if !name.contains("cases") {
                    assert!((0.0..=1.0).contains(&mean), "{name} = {mean}");
                }
            }
        }
        assert!(!p["comparisons"].as_array().expect("comparisons").is_empty());
    }
    // Personal history matters on this shop: cobuy is far above global popularity.
    let metric = |protocol: usize, method: &str, metric: &str| -> f64 {
        protocols[protocol]["methods"]
            .as_array()
            .expect("methods")
            .iter()
            .find(|m| m["method"] == method)
            .expect("method")["metrics"][metric]["mean"]
            .as_f64()
            .expect("mean")
    };
    assert!(metric(0, "cobuy", "recall@10") > 1.5 * metric(0, "G-TopFreq", "recall@10"));
    assert!(metric(2, "cobuy", "hit@10") > metric(2, "co-occurrence count", "hit@10"));
    // The explore shelves never show a bought item, so none of their hits is a repeat.
    for shelf in [
        "cobuy explore shelf",
        "cobuy explore shelf + customer vector",
    ] {
        for protocol in [0, 1] {
            assert_eq!(metric(protocol, shelf, "recall_repeat@10"), 0.0, "{shelf}");
        }
    }
    assert!(metric(1, "cobuy explore shelf", "recall_explore@10") > 0.0);

    let page = std::fs::read_to_string(&html).expect("html written");
    assert!(page.starts_with("<!doctype html>") && page.contains("<svg"));
    assert!(page.contains("TIFU-KNN"));

    // The tuned weights paste into a mapping's [model] table as they are.
    let written = std::fs::read_to_string(&blend).expect("blend written");
    let table: toml::Table = toml::from_str(&written).expect("valid toml");
    let model: BuildConfig = table["model"].clone().try_into().expect("a [model] table");
    assert!(model.blend.home.is_some() && model.blend.follow_up_email.is_some());
    model.validate().expect("valid weights");
}

#[test]
fn eval_fails_when_cobuy_does_not_beat_a_named_method() {
    // Beating global popularity on the sample passes ...
    let ok = eval(&["--protocol", "next-basket", "--check-beats", "G-TopFreq"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // ... cobuy cannot beat itself: the gate fails loudly, naming the metric ...
    let failed = eval(&["--protocol", "next-basket", "--check-beats", "cobuy"]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("quality check failed") && stderr.contains("recall@10"),
        "{stderr}"
    );
    // ... and a misspelt method is an error, not a silent pass.
    let typo = eval(&["--protocol", "next-basket", "--check-beats", "P-TopFreqq"]);
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("P-TopFreqq"));
}

#[test]
fn eval_rejects_bad_arguments_with_the_flag_named() {
    let out = eval(&["--folds", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--folds"));
    let out = eval(&["--bt-max-cases", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bt-max-cases"));
}
