//! `deploy/grafana/ferrite.json` is a well-formed Grafana dashboard whose queries use only
//! metric names the server exports (read from a real server's `/metrics`).

mod common;

use std::collections::BTreeSet;

use common::{start, Opts};
use serde_json::Value;

/// Metric families in a Prometheus text exposition (histogram series under their family).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_grafana_dashboard_queries_only_exported_metrics() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/ferrite.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        d["title"].is_string() && d["uid"].is_string(),
        "title and uid"
    );
    assert!(d["schemaVersion"].as_u64().is_some());
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let s = start(Opts::default()).await;
    let text = s.get("/metrics").await;
    let names = exported(&text);
    // Every query: each panel target's `expr` and each templating variable's `query`.
    let mut queries = Vec::new();
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        assert!(
            p["type"].is_string() && p["gridPos"]["w"].as_u64().is_some(),
            "{title}"
        );
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            assert!(t["refId"].is_string(), "{title}");
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: a target without expr"));
            queries.push((title.to_string(), expr));
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating list") {
        if v["type"] == "query" {
            let name = format!("variable {}", v["name"]);
            queries.push((name, v["query"].as_str().expect("a variable's query")));
        }
    }
    let mut used = BTreeSet::new();
    for (place, query) in queries {
        for word in query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("ferrite_") {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .unwrap_or(word);
                assert!(
                    names.contains(base),
                    "{place}: {word} is not exported ({names:?})"
                );
                used.insert(base.to_string());
            }
        }
    }
    // Latency histograms, throughput, KV, queue, prefix cache, speculation and errors are all
    // on the board.
    for must in [
        "ferrite_time_to_first_token_seconds",
        "ferrite_generation_tokens_total",
        "ferrite_kv_cache_usage_perc",
        "ferrite_num_requests_waiting",
        "ferrite_prefix_cache_hits_total",
        "ferrite_spec_decode_num_accepted_tokens_total",
        "ferrite_request_errors_total",
    ] {
        assert!(used.contains(must), "{must} is not on the dashboard");
    }
}
