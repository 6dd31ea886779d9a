//! The HTML report renders in headless Chromium (Debian's `chromium` package; `.ci/run`
//! installs it) and every chart is drawn: laid out with a non-empty box and at least one mark.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ferrite_bench::{html::render_html, run, AgentWorkload, RunConfig, Workload};
use ferrite_testkit::mock_openai::{MockServer, Script};

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRITE_CHROMIUM") {
        return p.into();
    }
    for p in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "this test needs a Chromium: install Debian's package (apt-get install chromium, as .ci/run \
         does) or point FERRITE_CHROMIUM at one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn html_report_renders_every_chart_in_headless_chromium() {
    let m = MockServer::start(Script {
        ttft: Duration::from_millis(10),
        per_token: Duration::from_millis(1),
        ..Script::default()
    })
    .await;
    // Two loads of agent tasks (a sweep's shape): CDFs, TTFT vs input length (prompts grow call
    // by call), task wall-clock, throughput vs concurrency.
    let mut reports = Vec::new();
    for c in [1, 2] {
        let cfg = RunConfig {
            input_tokens: 30,
            output_tokens: 8,
            concurrency: c,
            requests: 4,
            warmup: 0,
            retry_base: Duration::from_millis(10),
            seed: 1,
            workload: Workload::Agent(AgentWorkload::synthetic(3, 20, 0.0).unwrap()),
            ..RunConfig::new(m.url.clone(), "mock-model")
        };
        reports.push(run(cfg).await.unwrap());
    }
    let html = render_html(&reports);
    assert!(html.contains("Task wall-clock: CDF") && html.contains("Output throughput vs load"));
    // Self-contained: nothing fetched from elsewhere.
    for external in ["<script src", "<link", "url(", "<img"] {
        assert!(!html.contains(external), "{external}");
    }
    assert_eq!(
        drawn(&html, "run"),
        (6, 6),
        "every chart of the run page is drawn"
    );
    // The compare page (overlaid CDFs of two targets) and the monitor page (over time).
    let t = |name: &str| {
        ferrite_bench::compare::parse_target(
            &format!("name={name},url={},model=mock-model", m.url),
            &reports[0].config,
        )
        .unwrap()
    };
    let (c, runs) = ferrite_bench::compare::compare(vec![t("a"), t("b")])
        .await
        .unwrap();
    let html = ferrite_bench::html::render_compare_html(&c, &runs);
    assert_eq!(
        drawn(&html, "compare"),
        (5, 5),
        "every chart of the compare page is drawn"
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.jsonl");
    let cfg = ferrite_bench::monitor::MonitorConfig {
        targets: vec![t("a")],
        interval: Duration::from_millis(50),
        duration: Duration::from_millis(600),
        probe_timeout: Duration::from_secs(5),
        task: None,
    };
    ferrite_bench::monitor::monitor(cfg, &log, std::future::pending())
        .await
        .unwrap();
    let lines = ferrite_bench::monitor::read_lines(&log).unwrap();
    let html = ferrite_bench::html::render_monitor_html(
        &lines,
        &ferrite_bench::monitor::summarize(&lines),
    );
    assert_eq!(
        drawn(&html, "monitor"),
        (3, 3),
        "every chart of the monitor page is drawn"
    );
}

/// Render `html` in headless Chromium; returns (charts, charts drawn).
fn drawn(html: &str, name: &str) -> (usize, usize) {
    let dir = std::env::temp_dir().join(format!("ferrite-html-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    std::fs::write(&page, html).unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    let attr = |k: &str| -> usize {
        let at = dom.find(&format!("{k}=\"")).unwrap_or_else(|| {
            panic!(
                "chromium did not run the {name} page (status {}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        dom[at + k.len() + 2..]
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (attr("data-charts"), attr("data-charts-drawn"))
}
