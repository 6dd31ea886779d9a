//! `bench compare` and `bench monitor` against scripted mocks: each target's figures match its
//! script and its own raw log, the ranking and the significance calls are right, cost per
//! completed task is exact, the send order interleaves the targets; the monitor's availability,
//! outage window and fingerprint change match a scripted outage and change; unreachable targets
//! are failures, never a crash.

mod timing;

use std::time::Duration;

use ferrite_bench::compare::{compare, parse_target, Target};
use ferrite_bench::monitor::{monitor, read_lines, summarize, MonitorConfig};
use ferrite_bench::{Prices, RunConfig};
use ferrite_testkit::mock_openai::{MockServer, Script};
use serde_json::Value;
use timing::{check_against_events, exact, near_script, script, scripted_floor};

fn base() -> RunConfig {
    RunConfig {
        input_tokens: 40,
        output_tokens: 10,
        concurrency: 2,
        requests: 12,
        warmup: 0,
        seed: 11,
        ..RunConfig::new("", "")
    }
}

fn target(name: &str, url: &str, prices: Option<Prices>) -> Target {
    let mut t = parse_target(&format!("name={name},url={url},model=mock-model"), &base()).unwrap();
    t.cfg.prices = prices;
    t
}

fn metric<'a>(c: &'a Value, metric: &str, target: &str) -> &'a Value {
    &c["metrics"][metric]["targets"][target]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_ranks_targets_calls_real_differences_and_costs_tasks_exactly() {
    let fast = MockServer::start(script(60, 5)).await;
    let slow = MockServer::start(script(120, 10)).await;
    let twin = MockServer::start(script(60, 5)).await;
    let cheap = Prices {
        input_per_mtok: 1.0,
        output_per_mtok: 2.0,
        ..Prices::default()
    };
    let dear = Prices {
        input_per_mtok: 3.0,
        output_per_mtok: 6.0,
        ..Prices::default()
    };
    let (report, runs) = compare(vec![
        target("fast", &fast.url, Some(cheap)),
        target("slow", &slow.url, Some(dear)),
        target("twin", &twin.url, Some(cheap)),
    ])
    .await
    .unwrap();
    assert_eq!(report.schema, "ferrite-bench/compare/v1");
    let names: Vec<&String> = report.targets.keys().collect();
    assert_eq!(names, ["fast", "slow", "twin"]);
    // Each target's figures: its own raw log, and its script.
    for ((name, r), (ttft, tpot)) in runs.iter().zip([(60.0, 5.0), (120.0, 10.0), (60.0, 5.0)]) {
        assert_eq!(check_against_events(r), 12, "{name}");
        scripted_floor(r.metrics["ttft_ms"]["p50"].as_f64().unwrap(), ttft, 1, name);
        near_script(
            r.metrics["tpot_ms"]["p50"].as_f64().unwrap(),
            tpot,
            0.25,
            name,
        );
        assert_eq!(r.requests["completed"], 12);
    }
    let c = &report.comparison;
    // Ranking and significance: twice the TTFT differs; an identical twin does not.
    let slow_ttft = metric(c, "ttft_ms", "slow");
    let ratio = slow_ttft["ratio_to_first"].as_f64().unwrap();
    assert!((1.6..2.1).contains(&ratio), "{slow_ttft}");
    assert_eq!(slow_ttft["significant"], true, "{slow_ttft}");
    assert_eq!(metric(c, "ttft_ms", "fast")["ratio_to_first"], 1.0);
    let twin_ttft = metric(c, "ttft_ms", "twin");
    assert_eq!(twin_ttft["significant"], false, "{twin_ttft}");
    assert_eq!(metric(c, "tpot_ms", "slow")["significant"], true);
    // Cost per completed task: exact, from usage (40 prompt + 10 output tokens per task).
    for (name, p) in [("fast", cheap), ("slow", dear)] {
        let per_task = 40.0 * p.input_per_mtok / 1e6 + 10.0 * p.output_per_mtok / 1e6;
        exact(
            metric(c, "cost_per_completed_task_usd", name)["value"]
                .as_f64()
                .unwrap(),
            per_task,
            name,
        );
    }
    exact(
        metric(c, "cost_per_completed_task_usd", "slow")["ratio_to_first"]
            .as_f64()
            .unwrap(),
        3.0,
        "cost ratio",
    );
    assert_eq!(metric(c, "error_rate", "slow")["value"], 0.0);
    // The mocks answer alike: every greedy answer matches the first target's.
    assert_eq!(c["quality"]["slow"]["exact_match_rate_vs_first"], 1.0);
    // Interleaving: 6 rounds of 2 tasks, each round sends every target once, in shuffled orders.
    let order: Vec<&str> = c["send_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(order.len(), 18);
    for round in order.chunks(3) {
        let mut r = round.to_vec();
        r.sort_unstable();
        assert_eq!(r, ["fast", "slow", "twin"], "{order:?}");
    }
    assert!(
        order.chunks(3).any(|r| r[0] != order[0]),
        "the order is shuffled: {order:?}"
    );
    // Each target ran on its own timeline: its duration is its own busy time, not the run's.
    let fast_s = runs[0].1.throughput["duration_s"].as_f64().unwrap();
    let slow_s = runs[1].1.throughput["duration_s"].as_f64().unwrap();
    assert!(fast_s < slow_s, "fast {fast_s} s, slow {slow_s} s");
    let md = ferrite_bench::compare::render_markdown(&report);
    assert!(
        md.contains("| ttft_ms (median) |") && md.contains("**differs**"),
        "{md}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_targets_are_refused_and_unreachable_ones_are_failures() {
    let m = MockServer::start(script(2, 1)).await;
    let e = compare(vec![target("a", &m.url, None), target("a", &m.url, None)])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("two targets are named \"a\""), "{e}");
    let e = compare(vec![target("a", &m.url, None)]).await.unwrap_err();
    assert!(e.to_string().contains("at least two"), "{e}");
    // A port nobody listens on: every request fails, the run finishes and says so.
    let (report, _) = compare(vec![
        target("up", &m.url, None),
        target("down", "http://127.0.0.1:9", None),
    ])
    .await
    .unwrap();
    let down = &report.targets["down"];
    assert_eq!(down["requests"]["failed"], 12);
    assert_eq!(
        metric(&report.comparison, "error_rate", "down")["value"],
        1.0
    );
    assert!(
        down["requests"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("connection"),
        "{down}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn monitor_sees_a_scripted_outage_and_a_model_change() {
    let interval = Duration::from_millis(250);
    let m = MockServer::start(Script {
        outage: Some((Duration::from_millis(1000), Duration::from_millis(2000))),
        change_at: Some(Duration::from_millis(3000)),
        ..script(5, 1)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.jsonl");
    let cfg = MonitorConfig {
        targets: vec![
            target("mock", &m.url, None),
            target("nowhere", "http://127.0.0.1:9", None),
        ],
        interval,
        duration: Duration::from_millis(4000),
        probe_timeout: Duration::from_secs(5),
        task: None,
    };
    monitor(cfg.clone(), &log, std::future::pending())
        .await
        .unwrap();
    let s = summarize(&read_lines(&log).unwrap());
    let t = &s["targets"]["mock"];
    let probes = t["probes"].as_u64().unwrap() as f64;
    assert!((15.0..=17.0).contains(&probes), "{t}");
    // A quarter of the time was an outage: availability 0.75 within one probe.
    let a = t["availability"].as_f64().unwrap();
    assert!(
        (a - 0.75).abs() <= 1.0 / probes + 1e-9,
        "availability {a}, {t}"
    );
    assert_eq!(
        t["failed"]["http_503"].as_u64().map(|n| n as f64),
        Some(probes - t["succeeded"].as_f64().unwrap())
    );
    let o = &t["outages"];
    assert_eq!(o.as_array().unwrap().len(), 1, "{o}");
    // Probes are sent an interval apart, so the first failure is sent within one interval
    // after the outage starts and the last within one before it ends (times count from the
    // first probe, sent a few ms after the mock started; 50 ms allowed for that and for what a
    // busy host adds to a timer).
    let (step, slack) = (interval.as_secs_f64(), 0.05);
    let first = o[0]["first_failure_s"].as_f64().unwrap();
    let last = o[0]["last_failure_s"].as_f64().unwrap();
    assert!((1.0 - slack..=1.0 + step + slack).contains(&first), "{o}");
    assert!((2.0 - step - slack..=2.0 + slack).contains(&last), "{o}");
    // The fingerprint and the model changed once each, at about 3 s.
    let changes = t["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    for c in changes {
        assert!(
            (3.0 - slack..=3.0 + step + slack).contains(&c["at_s"].as_f64().unwrap()),
            "{c}"
        );
    }
    assert_eq!(changes[0]["to"], "fp_mock_2");
    assert_eq!(changes[1]["to"], "mock-model-2");
    let down = &s["targets"]["nowhere"];
    assert_eq!(down["availability"], 0.0);
    assert_eq!(down["failed"]["connection"], down["probes"]);
    // A restarted monitor appends to the same log.
    let before = read_lines(&log).unwrap().len();
    let again = MonitorConfig {
        duration: Duration::from_millis(600),
        ..cfg
    };
    monitor(again, &log, std::future::pending()).await.unwrap();
    assert!(read_lines(&log).unwrap().len() > before);
    let html = ferrite_bench::html::render_monitor_html(&read_lines(&log).unwrap(), &s);
    assert!(html.contains("Availability per 10 probes"));
}
