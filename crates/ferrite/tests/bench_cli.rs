//! `ferrite bench` as scripts use it, against the scripted mock server: `verify` exits 0 when
//! every claim holds and 1 when one fails; `run` writes the JSON (documented fields), Markdown
//! and HTML reports for an agent workload; bad workload flags are refused before any request.

use std::process::{Command, Output};
use std::time::Duration;

use ferrite_testkit::mock_openai::{MockServer, Script};

fn ferrite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .output()
        .expect("runs")
}

/// A mock on its own runtime, alive for the rest of the test.
fn mock(script: Script) -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(MockServer::start(script)).url;
    (rt, url)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn verify_exits_0_on_true_claims_and_1_on_a_false_one() {
    let (_rt, url) = mock(Script {
        ttft: Duration::from_millis(80),
        per_token: Duration::from_millis(5),
        ..Script::default()
    });
    let base = [
        "bench",
        "verify",
        "--url",
        &url,
        "--model",
        "mock-model",
        "--requests",
        "6",
        "--output-tokens",
        "20",
        "--input-tokens",
        "30",
        "--warmup",
        "0",
    ];
    // Scripted: TTFT 80 ms, output speed 200 tok/s. Each claim is true or false by 2× or
    // more, so a busy host does not flip it.
    let o = ferrite(
        &[
            &base[..],
            &[
                "--claim",
                "ttft_ms.p50<=200",
                "--claim",
                "output_speed_tok_s.p50>=100",
            ],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("| holds |"), "{}", text(&o));
    let o = ferrite(
        &[
            &base[..],
            &[
                "--claim",
                "ttft_ms.p50<=200",
                "--claim",
                "output_speed_tok_s.p50>=400",
            ],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("FAILS") && t.contains("not covered by this run"),
        "{t}"
    );
    assert!(t.contains("agent tasks: single-call requests only"), "{t}");
}

#[test]
fn run_writes_json_markdown_and_html_for_agent_tasks() {
    let (_rt, url) = mock(Script {
        ttft: Duration::from_millis(20),
        per_token: Duration::from_millis(2),
        ..Script::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).display().to_string();
    std::fs::write(
        p("prices.json"),
        r#"{"input_per_mtok": 1.0, "output_per_mtok": 2.0}"#,
    )
    .unwrap();
    let o = ferrite(&[
        "bench",
        "run",
        "--url",
        &url,
        "--model",
        "mock-model",
        "--agent-calls",
        "3",
        "--agent-tool-tokens",
        "16",
        "--agent-think-ms",
        "10",
        "--requests",
        "3",
        "--concurrency",
        "2",
        "--input-tokens",
        "24",
        "--output-tokens",
        "8",
        "--prices",
        &p("prices.json"),
        "--json",
        &p("r.json"),
        "--markdown",
        &p("r.md"),
        "--html",
        &p("r.html"),
        "--seed",
        "5",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("r.json")).unwrap()).unwrap();
    assert_eq!(r["schema"], "ferrite-bench/run/v2");
    assert_eq!(r["tasks"]["completed"], 3);
    assert_eq!(r["requests"]["completed"], 9);
    assert_eq!(r["config"]["seed"], 5);
    for k in ["p50", "p90", "p99", "mean"] {
        assert!(
            r["tasks"]["wall_clock_ms"][k].as_f64().unwrap() > 0.0,
            "{k}"
        );
    }
    for k in [
        "ttft_ms",
        "ttfo_ms",
        "tpot_ms",
        "itl_ms",
        "e2e_ms",
        "output_speed_tok_s",
    ] {
        assert!(r["metrics"][k]["n"].as_u64().unwrap() > 0, "{k}");
    }
    assert!(r["cost"]["per_completed_task_usd"].as_f64().unwrap() > 0.0);
    assert!(r["provenance"]["ferrite_version"].is_string());
    let md = std::fs::read_to_string(p("r.md")).unwrap();
    assert!(md.contains("tasks: 3 completed, 0 failed"), "{md}");
    let html = std::fs::read_to_string(p("r.html")).unwrap();
    assert!(html.contains("Task wall-clock: CDF"));
}

#[test]
fn bad_workloads_are_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("tasks.json");
    std::fs::write(
        &bad,
        r#"{"tasks": [{"prompt": "x", "calls": [{"user": "y"}]}]}"#,
    )
    .unwrap();
    let base = [
        "bench",
        "run",
        "--url",
        "http://127.0.0.1:9",
        "--model",
        "m",
    ];
    for (extra, want) in [
        (
            vec!["--workload".to_string(), format!("agent:{}", bad.display())],
            "is the last call",
        ),
        (
            vec!["--workload".into(), "cached".into()],
            "unknown workload",
        ),
        (
            vec!["--workload".into(), "file:/nonexistent.jsonl".into()],
            "nonexistent.jsonl",
        ),
        (
            vec!["--shared-prefix-tokens".into(), "8".into()],
            "needs --workload shared-prefix",
        ),
        (
            vec!["--agent-calls".into(), "0".into()],
            "--agent-calls must be at least 1",
        ),
        (
            vec!["--tokenizer".into(), "/nonexistent.json".into()],
            "--tokenizer /nonexistent.json",
        ),
        (
            vec!["--extra-body".into(), "[1]".into()],
            "--extra-body must be a JSON object",
        ),
        (
            vec!["--extra-body".into(), "{\"speculative\":".into()],
            "--extra-body is not JSON",
        ),
    ] {
        let args: Vec<&str> = base
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
            .collect();
        let o = ferrite(&args);
        assert!(
            !o.status.success() && text(&o).contains(want),
            "{extra:?}: {}",
            text(&o)
        );
    }
}

#[test]
fn compare_writes_its_reports_and_monitor_logs_what_report_summarizes() {
    let (_rt, a) = mock(Script {
        ttft: Duration::from_millis(10),
        per_token: Duration::from_millis(1),
        ..Script::default()
    });
    let (_rt2, b) = mock(Script {
        ttft: Duration::from_millis(30),
        per_token: Duration::from_millis(1),
        ..Script::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).display().to_string();
    let ta = format!("name=a,url={a},model=mock-model");
    let tb = format!("name=b,url={b},model=mock-model,extra-body={{\"speculative\": false}}");
    let o = ferrite(&[
        "bench",
        "compare",
        "--target",
        &ta,
        "--target",
        &tb,
        "--requests",
        "4",
        "--output-tokens",
        "6",
        "--input-tokens",
        "20",
        "--warmup",
        "0",
        "--json",
        &p("c.json"),
        "--markdown",
        &p("c.md"),
        "--html",
        &p("c.html"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("c.json")).unwrap()).unwrap();
    assert_eq!(c["schema"], "ferrite-bench/compare/v1");
    assert_eq!(
        c["targets"]["b"]["config"]["extra_body"]["speculative"],
        false
    );
    assert!(std::fs::read_to_string(p("c.md"))
        .unwrap()
        .contains("| ttft_ms (median) |"));
    assert!(std::fs::read_to_string(p("c.html"))
        .unwrap()
        .contains("TTFT (ms): CDF"));
    for (args, want) in [
        (
            vec!["--target", "name=a,url=x"],
            "name, url and model are required",
        ),
        (
            vec!["--target", &ta, "--target", &ta],
            "two targets are named",
        ),
        (
            vec!["--target", &ta, "--target", &tb, "--url", "http://x"],
            "instead of --url",
        ),
    ] {
        let o = ferrite(&[&["bench", "compare", "--warmup", "0"][..], &args].concat());
        assert!(
            !o.status.success() && text(&o).contains(want),
            "{args:?}: {}",
            text(&o)
        );
    }
    let o = ferrite(&[
        "bench",
        "monitor",
        "--target",
        &ta,
        "--interval-s",
        "0.1",
        "--duration-s",
        "0.5",
        "--jsonl",
        &p("m.jsonl"),
        "--json",
        &p("m.json"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("a: ") && text(&o).contains("availability 100.00%"),
        "{}",
        text(&o)
    );
    let o = ferrite(&["bench", "report", &p("m.jsonl"), "--html", &p("m.html")]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read_to_string(p("m.html"))
        .unwrap()
        .contains("Probe TTFT over time"));
}
