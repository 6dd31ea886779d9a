//! `--html OUT`: one self-contained page (inline CSS and SVG, no network) with the report's
//! tables and charts: latency CDFs (TTFT, TPOT, E2E), TTFT against input length, task
//! wall-clock CDF, and throughput against concurrency when several runs are given (`bench
//! sweep`). A few lines of script mark each chart as drawn once the browser has laid it out
//! (`data-charts-drawn` on `<body>`), which the headless-browser test reads back.

use std::fmt::Write;

use serde_json::Value;

use crate::markdown::METRICS;
use crate::report::Report;

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const W: f64 = 560.0;
const H: f64 = 300.0;
const PAD_L: f64 = 64.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 28.0;
const PAD_B: f64 = 44.0;

/// One line (or point cloud) of a chart.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// About five round tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..=10)
        .map(|k| first + k as f64 * step)
        .take_while(|t| *t <= hi + step * 1e-9)
        .collect()
}

/// A tick label with as many decimals as the step between ticks needs, so neighbouring labels
/// always differ (a 120–123 ms axis in steps of 0.5 reads 120.5, not 120 twice).
fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).clamp(0.0, 9.0) as usize;
    format!("{v:.decimals$}")
}

/// The step between consecutive ticks.
fn step_of(t: &[f64]) -> f64 {
    match t {
        [a, b, ..] => b - a,
        _ => 1.0,
    }
}

/// A range to draw: a single value gets a span of ±5% of itself (±1 around zero).
fn span(lo: f64, hi: f64) -> (f64, f64) {
    if hi - lo > 1e-9 * lo.abs().max(1.0) {
        return (lo, hi);
    }
    let d = if lo == 0.0 { 1.0 } else { 0.05 * lo.abs() };
    (lo - d, hi + d)
}

/// An SVG chart: lines (`scatter` false) or points, with axes, ticks and a legend.
fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series], scatter: bool) -> String {
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<figure><svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><text x="{cx}" y="18" text-anchor="middle" class="title">{t}</text>"#,
        t = esc(title),
        cx = W / 2.0
    );
    if all.is_empty() {
        let _ = write!(
            o,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg></figure>"#,
            W / 2.0,
            H / 2.0
        );
        return o;
    }
    let (x0, x1) = span(
        all.iter().fold(f64::MAX, |a, p| a.min(p.0)),
        all.iter().fold(f64::MIN, |a, p| a.max(p.0)),
    );
    let y1 = all.iter().fold(f64::MIN, |a, p| a.max(p.1));
    let y0 = 0f64.min(all.iter().fold(f64::MAX, |a, p| a.min(p.1)));
    let y1 = if y1 - y0 < 1e-9 { y0 + 1.0 } else { y1 * 1.05 };
    let px = |x: f64| PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R);
    let py = |y: f64| H - PAD_B - (y - y0) / (y1 - y0) * (H - PAD_T - PAD_B);
    // Axes, grid and ticks.
    let _ = write!(
        o,
        r##"<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/><line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#333"/>"##,
        l = PAD_L,
        r = W - PAD_R,
        t = PAD_T,
        b = H - PAD_B
    );
    let xt = ticks(x0, x1);
    for &t in &xt {
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"#,
            px(t),
            H - PAD_B + 16.0,
            fmt_tick(t, step_of(&xt))
        );
    }
    let yt = ticks(y0, y1);
    for &t in &yt {
        let _ = write!(
            o,
            r##"<line x1="{l}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end" class="tick">{v}</text>"##,
            l = PAD_L,
            r = W - PAD_R,
            y = py(t),
            tx = PAD_L - 6.0,
            ty = py(t) + 4.0,
            v = fmt_tick(t, step_of(&yt))
        );
    }
    let _ = write!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="label">{}</text><text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle" class="label">{}</text>"#,
        (PAD_L + W - PAD_R) / 2.0,
        H - 8.0,
        esc(x_label),
        (PAD_T + H - PAD_B) / 2.0,
        esc(y_label)
    );
    for (k, s) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if scatter || pts.len() == 1 {
            for (x, y) in &pts {
                let _ = write!(
                    o,
                    r#"<circle class="mark" cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                    px(*x),
                    py(*y)
                );
            }
        } else {
            let d: Vec<String> = pts
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            let _ = write!(
                o,
                r#"<polyline class="mark" fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
                d.join(" ")
            );
        }
        let _ = write!(
            o,
            r#"<rect x="{x:.1}" y="{y:.1}" width="10" height="10" fill="{c}"/><text x="{tx:.1}" y="{ty:.1}" class="tick">{n}</text>"#,
            x = PAD_L + 10.0,
            y = PAD_T + 4.0 + 14.0 * k as f64,
            tx = PAD_L + 24.0,
            ty = PAD_T + 13.0 + 14.0 * k as f64,
            n = esc(&s.name)
        );
    }
    o.push_str("</svg></figure>");
    o
}

/// Empirical CDF points of `v`: (value, share of samples ≤ value).
fn cdf(mut v: Vec<f64>) -> Vec<(f64, f64)> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    v.into_iter()
        .enumerate()
        .map(|(i, x)| (x, (i + 1) as f64 / n))
        .collect()
}

/// What tells runs apart in legends: concurrency or rate.
fn run_name(r: &Report) -> String {
    match r.config.rate {
        Some(rate) => format!("{rate} req/s"),
        None => format!("concurrency {}", r.config.concurrency),
    }
}

fn summary_table(r: &Report) -> String {
    let mut o = String::from(
        "<table><tr><th>metric</th><th>p50</th><th>p90</th><th>p99</th><th>mean</th><th>n</th><th>formula</th></tr>",
    );
    let f = |x: &Value| x.as_f64().map_or("-".into(), |v| format!("{v:.1}"));
    for k in METRICS {
        let m = &r.metrics[k];
        let _ = write!(
            o,
            "<tr><td>{k}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"formula\">{}</td></tr>",
            f(&m["p50"]),
            f(&m["p90"]),
            f(&m["p99"]),
            f(&m["mean"]),
            m["n"],
            esc(r.formulas[k].as_str().unwrap_or(""))
        );
    }
    o.push_str("</table>");
    o
}

const PAGE_HEAD: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>TITLE</title><style>
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td.formula{text-align:left;color:#555;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}
svg text{font-size:11px;fill:#333}svg .title{font-size:13px;font-weight:600}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}
</style></head><body><h1>TITLE</h1>"#;

/// Marks each chart drawn once laid out with a non-empty box and at least one mark.
const TAIL: &str = r#"<script>
addEventListener('load', () => {
  let drawn = 0;
  for (const svg of document.querySelectorAll('svg.chart')) {
    const box = svg.getBoundingClientRect();
    const marks = svg.querySelectorAll('.mark');
    if (box.width > 0 && box.height > 0 && marks.length > 0) drawn++;
  }
  document.body.dataset.chartsDrawn = drawn;
  document.body.dataset.charts = document.querySelectorAll('svg.chart').length;
});
</script></body></html>
"#;

fn head(title: &str) -> String {
    PAGE_HEAD.replace("TITLE", &esc(title))
}

/// The latency charts of labelled runs, one series each: TTFT, TPOT and E2E CDFs, TTFT against
/// input length, task wall-clock CDF.
fn latency_charts(runs: &[(String, &Report)]) -> String {
    let mut o = String::new();
    let series = |f: &dyn Fn(&Report) -> Vec<(f64, f64)>| -> Vec<Series> {
        runs.iter()
            .map(|(name, r)| Series {
                name: name.clone(),
                points: f(r),
            })
            .collect()
    };
    for (key, label) in [
        ("ttft_ms", "TTFT (ms)"),
        ("tpot_ms", "TPOT (ms)"),
        ("e2e_ms", "E2E latency (ms)"),
    ] {
        let pts = series(&|r| {
            cdf(r.per_request(|m| match key {
                "ttft_ms" => Some(m.ttft_ms),
                "tpot_ms" => m.tpot_ms,
                _ => Some(m.e2e_ms),
            }))
        });
        o.push_str(&chart(
            &format!("{label}: CDF"),
            label,
            "share of requests",
            &pts,
            false,
        ));
    }
    let ttft_in = series(&|r| {
        r.records
            .iter()
            .filter_map(|x| x.metrics.as_ref())
            .filter_map(|m| m.input_tokens.map(|n| (n as f64, m.ttft_ms)))
            .collect()
    });
    o.push_str(&chart(
        "TTFT vs input length",
        "input tokens (server usage)",
        "TTFT (ms)",
        &ttft_in,
        true,
    ));
    let tasks = series(&|r| cdf(r.completed_task_ms()));
    o.push_str(&chart(
        "Task wall-clock: CDF",
        "task wall-clock (ms)",
        "share of tasks",
        &tasks,
        false,
    ));
    o
}

/// One run's figures under a heading.
fn run_section(name: &str, r: &Report) -> String {
    format!(
        "<h2>{}</h2>{}<p>throughput: {:.1} output tok/s, {:.2} req/s over {:.1} s · requests: {} completed, {} failed, {} attempts · tasks: {} completed, {} failed, wall-clock p50 {:.0} ms · cost: {}</p>",
        esc(name),
        summary_table(r),
        r.throughput["output_tok_s"].as_f64().unwrap_or(0.0),
        r.throughput["requests_per_s"].as_f64().unwrap_or(0.0),
        r.throughput["duration_s"].as_f64().unwrap_or(0.0),
        r.requests["completed"],
        r.requests["failed"],
        r.requests["attempts"],
        r.tasks["completed"],
        r.tasks["failed"],
        r.tasks["wall_clock_ms"]["p50"].as_f64().unwrap_or(0.0),
        r.cost["total_usd"]
            .as_f64()
            .map_or("no prices given".into(), |c| format!("${c:.6} total")),
    )
}

/// Who measured what, against which endpoint.
fn provenance_line(r: &Report) -> String {
    let p = &r.provenance;
    let s = |v: &Value| esc(v.as_str().unwrap_or("-"));
    format!(
        "<p>{} · endpoint {} · model {} · served {} · fingerprint {} · client {} · ferrite {} {}</p><p>workload: {}</p>",
        s(&p["date"]),
        s(&p["endpoint"]),
        esc(&r.config.model),
        esc(&p["served_models"].to_string()),
        s(&p["system_fingerprint"]),
        s(&p["client_cpu"]),
        s(&p["ferrite_version"]),
        s(&p["ferrite_commit"]),
        s(&r.workload["kind"]),
    )
}

/// The page for one run, or for a sweep's runs.
pub fn render_html(reports: &[Report]) -> String {
    let mut o = head("ferrite bench report");
    let Some(first) = reports.first() else {
        o.push_str("<p>No runs.</p></body></html>");
        return o;
    };
    o.push_str(&provenance_line(first));
    o.push_str(r#"<h2>Charts</h2><div class="charts">"#);
    let labelled: Vec<(String, &Report)> = reports.iter().map(|r| (run_name(r), r)).collect();
    o.push_str(&latency_charts(&labelled));
    if reports.len() > 1 {
        let x = |r: &Report| r.config.rate.unwrap_or(r.config.concurrency as f64);
        let line = |name: &str, k: &str| Series {
            name: name.into(),
            points: reports
                .iter()
                .map(|r| (x(r), r.throughput[k].as_f64().unwrap_or(f64::NAN)))
                .collect(),
        };
        let load = if first.config.rate.is_some() {
            "offered rate (req/s)"
        } else {
            "concurrency"
        };
        o.push_str(&chart(
            "Output throughput vs load",
            load,
            "output tok/s",
            &[line("output tok/s", "output_tok_s")],
            false,
        ));
    }
    o.push_str("</div>");
    for (name, r) in &labelled {
        o.push_str(&run_section(name, r));
    }
    let config = serde_json::to_string_pretty(&first.config).unwrap_or_default();
    let _ = write!(o, "<h2>Configuration</h2><pre>{}</pre>", esc(&config));
    o.push_str(TAIL);
    o
}

/// `bench compare --html`: the side-by-side table, overlaid CDFs, then each target's figures.
pub fn render_compare_html(
    c: &crate::compare::CompareReport,
    reports: &[(String, Report)],
) -> String {
    let mut o = head("ferrite bench compare");
    let names: Vec<&String> = reports.iter().map(|(n, _)| n).collect();
    o.push_str("<table><tr><th>metric</th>");
    for n in &names {
        let _ = write!(o, "<th>{}</th>", esc(n));
    }
    o.push_str("</tr>");
    for (metric, entry) in c.comparison["metrics"].as_object().into_iter().flatten() {
        let _ = write!(
            o,
            "<tr><td>{} ({})</td>",
            esc(metric),
            esc(entry["statistic"].as_str().unwrap_or(""))
        );
        for n in &names {
            let e = &entry["targets"][n.as_str()];
            let v = e["value"]
                .as_f64()
                .map_or("–".into(), |v| format!("{v:.4}"));
            let rest = match (e["ratio_to_first"].as_f64(), e["ratio_ci95"].as_array()) {
                (Some(r), Some(ci)) if n.as_str() != names[0].as_str() => format!(
                    " (×{r:.2}, CI {:.2}–{:.2}{})",
                    ci[0].as_f64().unwrap_or(f64::NAN),
                    ci[1].as_f64().unwrap_or(f64::NAN),
                    if e["significant"] == true {
                        ", <b>differs</b>"
                    } else {
                        ""
                    }
                ),
                _ => String::new(),
            };
            let _ = write!(o, "<td>{v}{rest}</td>");
        }
        o.push_str("</tr>");
    }
    o.push_str("</table><p>ratios are to the first target, with 95% bootstrap intervals; <b>differs</b>: the whole interval is outside ±2% of equality.</p>");
    o.push_str(r#"<h2>Charts</h2><div class="charts">"#);
    let labelled: Vec<(String, &Report)> = reports.iter().map(|(n, r)| (n.clone(), r)).collect();
    o.push_str(&latency_charts(&labelled));
    o.push_str("</div>");
    for (name, r) in &labelled {
        o.push_str(&provenance_line(r));
        o.push_str(&run_section(name, r));
    }
    o.push_str(TAIL);
    o
}

/// `bench report MONITOR.jsonl --html`: availability and latency over time, per target.
pub fn render_monitor_html(lines: &[Value], summary: &Value) -> String {
    let mut o = head("ferrite bench monitor");
    let targets = summary["targets"].as_object().cloned().unwrap_or_default();
    let _ = write!(
        o,
        "<p>{} – {}</p><table><tr><th>target</th><th>probes</th><th>availability</th><th>failed</th><th>outages</th><th>TTFT p50 (ms)</th><th>E2E p50 (ms)</th><th>changes</th></tr>",
        esc(summary["started"].as_str().unwrap_or("-")),
        esc(summary["ended"].as_str().unwrap_or("-"))
    );
    for (name, t) in &targets {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
            esc(name),
            t["probes"],
            t["availability"].as_f64().map_or("–".into(), |a| format!("{:.2}%", 100.0 * a)),
            esc(&t["failed"].to_string()),
            t["outages"].as_array().map_or(0, Vec::len),
            t["ttft_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            t["e2e_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            esc(&t["changes"].to_string()),
        );
    }
    o.push_str(r#"</table><h2>Over time</h2><div class="charts">"#);
    let t0 = crate::monitor::first_sent(lines);
    let at = |l: &Value| t0.map_or(f64::NAN, |t0| crate::monitor::seconds(&l["t"], t0));
    let per_target = |f: &dyn Fn(&Value) -> Option<f64>| -> Vec<Series> {
        targets
            .keys()
            .map(|name| Series {
                name: name.clone(),
                points: lines
                    .iter()
                    .filter(|l| l["target"] == name.as_str() && l["kind"] == "probe")
                    .filter_map(|l| f(l).map(|y| (at(l), y)))
                    .collect(),
            })
            .collect()
    };
    let windows: Vec<Series> = targets
        .iter()
        .map(|(name, t)| Series {
            name: name.clone(),
            points: t["windows"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| {
                    let share =
                        w["ok"].as_f64().unwrap_or(0.0) / w["probes"].as_f64().unwrap_or(1.0);
                    (w["from_s"].as_f64().unwrap_or(f64::NAN), share)
                })
                .collect(),
        })
        .collect();
    o.push_str(&chart(
        &format!("Availability per {} probes", crate::monitor::WINDOW),
        "seconds since the first probe",
        "share of probes answered",
        &windows,
        false,
    ));
    o.push_str(&chart(
        "Probe TTFT over time",
        "seconds since the first probe",
        "TTFT (ms)",
        &per_target(&|l| l["ttft_ms"].as_f64()),
        true,
    ));
    o.push_str(&chart(
        "Probe E2E over time",
        "seconds since the first probe",
        "E2E (ms)",
        &per_target(&|l| l["e2e_ms"].as_f64()),
        true,
    ));
    o.push_str("</div>");
    o.push_str(TAIL);
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = super::ticks(0.0, 1.0);
        assert_eq!(t.len(), 6);
        assert!(t
            .iter()
            .enumerate()
            .all(|(k, v)| (v - 0.2 * k as f64).abs() < 1e-12));
        let t = super::ticks(13.0, 870.0);
        assert_eq!(t.first(), Some(&200.0));
        assert_eq!(t.last(), Some(&800.0));
    }

    #[test]
    fn tick_labels_always_differ_and_one_value_gets_a_span() {
        for (lo, hi) in [
            (120.0, 123.0),
            (127.0, 129.0),
            (0.0, 1.0),
            (0.001, 0.0013),
            (1e6, 1e6 + 7.0),
        ] {
            let t = super::ticks(lo, hi);
            let labels: Vec<String> = t
                .iter()
                .map(|&v| super::fmt_tick(v, super::step_of(&t)))
                .collect();
            let mut unique = labels.clone();
            unique.dedup();
            assert_eq!(unique, labels, "{lo}–{hi}");
            assert!(t.len() >= 3, "{lo}–{hi}: {labels:?}");
        }
        assert_eq!(super::span(120.0, 120.0), (114.0, 126.0));
        assert_eq!(super::span(0.0, 0.0), (-1.0, 1.0));
        assert_eq!(super::span(1.0, 2.0), (1.0, 2.0));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(super::esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
