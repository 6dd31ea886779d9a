//! `ferrite bench compare`: one workload sent to several targets in one run, interleaved, and a
//! side-by-side verdict with uncertainty.
//!
//! - **Targets**: `name=N,url=URL,model=M[,api-key-env=VAR][,prices=FILE][,extra-body=JSON]`
//!   (`extra-body` last: the JSON runs to the end of the spec). Every target gets the same
//!   prompts (sized once, through the first target's template overhead), seed, task files and
//!   concurrency.
//! - **Interleaving**: the run is a closed loop in rounds of `concurrency` tasks; in each round
//!   every target runs its next `concurrency` tasks, the targets in a seeded shuffled order, one
//!   target at a time (targets on one host never load it together). Drift over time (a busy
//!   neighbour, a warming cache) reaches every target alike. Each target's report is on its own
//!   timeline: the time other targets ran is cut out, so its throughput and steady state are
//!   over its own time.
//! - **Comparison**: per metric, each target's value, its ratio to the first target with a 95%
//!   bootstrap interval (medians of per-request values; means for rates; total over completed
//!   for cost per task), and `significant` when the whole interval lies outside ±2% of equality
//!   (a difference that is both real and large enough to matter). Quality: every target's
//!   greedy answers against the first target's (exact match, common prefix), and `expect`
//!   success per target when the prompts carry it.

use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::metrics::{RequestMetrics, Stats};
use crate::quality::{compare_answers, Answer, QualityPrompt};
use crate::report::{provenance, summarize, Report};
use crate::run::{
    check, http_client, run_one, template_overhead, warm_up, Collected, Prices, RunConfig,
};
use crate::workload::Workload;
use crate::{Error, Result};

/// Schema id of the compare report.
pub const COMPARE_SCHEMA: &str = "ferrite-bench/compare/v1";

/// Resamples of the bootstrap.
const BOOTSTRAP: usize = 2000;
/// A ratio within this of 1 is "no difference that matters".
const EQUIVALENCE: f64 = 0.02;

/// One target of a comparison: its name and its settings (the shared ones from the base).
#[derive(Debug, Clone)]
pub struct Target {
    /// Name in the report.
    pub name: String,
    /// Its run settings.
    pub cfg: RunConfig,
}

/// Every target has its own name (names key the reports and the log lines).
pub(crate) fn check_names(targets: &[Target]) -> Result<()> {
    for (i, t) in targets.iter().enumerate() {
        if targets[..i].iter().any(|u| u.name == t.name) {
            return Err(Error::Config(format!("two targets are named {:?}", t.name)));
        }
    }
    Ok(())
}

/// Parse a `--target` spec over the shared settings `base`.
pub fn parse_target(spec: &str, base: &RunConfig) -> Result<Target> {
    let bad = |m: String| Error::Config(format!("--target {spec:?}: {m}"));
    // extra-body takes the rest of the spec: its JSON has commas of its own.
    let (head, extra) = match spec.find("extra-body=") {
        Some(i) => (&spec[..i], Some(&spec[i + "extra-body=".len()..])),
        None => (spec, None),
    };
    let mut cfg = base.clone();
    let (mut name, mut url, mut model) = (None, None, None);
    for part in head.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} is not key=value")))?;
        match k {
            "name" => name = Some(v.to_string()),
            "url" => url = Some(v.to_string()),
            "model" => model = Some(v.to_string()),
            "api-key-env" => {
                cfg.api_key = Some(
                    std::env::var(v)
                        .map_err(|_| bad(format!("api-key-env names {v}, which is not set")))?,
                )
            }
            "prices" => {
                let text =
                    std::fs::read_to_string(v).map_err(|e| bad(format!("prices file {v}: {e}")))?;
                cfg.prices = Some(
                    serde_json::from_str::<Prices>(&text)
                        .map_err(|e| bad(format!("prices file {v}: {e}")))?,
                );
            }
            other => {
                return Err(bad(format!(
                    "unknown key {other:?} (name, url, model, api-key-env, prices, extra-body)"
                )))
            }
        }
    }
    if let Some(e) = extra {
        match serde_json::from_str::<Value>(e.trim()) {
            Ok(Value::Object(o)) => cfg.extra_body = Some(o),
            _ => {
                return Err(bad(
                    "extra-body must be a JSON object (and the last key)".into()
                ))
            }
        }
    }
    let (Some(name), Some(url), Some(model)) = (name, url, model) else {
        return Err(bad("name, url and model are required".into()));
    };
    if name.is_empty() {
        return Err(bad("the name is empty".into()));
    }
    cfg.url = url;
    cfg.model = model;
    Ok(Target { name, cfg })
}

/// The compare report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// `ferrite-bench/compare/v1`.
    pub schema: &'static str,
    /// Each target's run report (schema run/v2), by name, in the order given.
    pub targets: Map<String, Value>,
    /// The side-by-side comparison.
    pub comparison: Value,
}

/// A small seeded generator for the shuffles and the bootstrap.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Run the comparison. Returns the report and the run reports (for the Markdown and HTML).
pub async fn compare(targets: Vec<Target>) -> Result<(CompareReport, Vec<(String, Report)>)> {
    if targets.len() < 2 {
        return Err(Error::Config("compare needs at least two --target".into()));
    }
    check_names(&targets)?;
    for t in &targets {
        if t.cfg.rate.is_some() {
            return Err(Error::Config(
                "compare runs a closed loop (rounds of --concurrency per target); --rate is not supported".into(),
            ));
        }
        check(&t.cfg)?;
    }
    let client = http_client()?;
    let base = &targets[0].cfg;
    let mut provenances = Vec::new();
    let mut overheads = Vec::new();
    for t in &targets {
        provenances.push(provenance(&client, &t.cfg).await);
        overheads.push(template_overhead(&client, &t.cfg).await.unwrap_or(0));
    }
    // The same prompts for everyone: sized through the first target's template.
    let words = base.input_tokens.saturating_sub(overheads[0]).max(1);
    for t in &targets {
        warm_up(&client, &t.cfg, words).await;
    }
    let cfgs: Vec<std::sync::Arc<RunConfig>> = targets
        .iter()
        .map(|t| std::sync::Arc::new(t.cfg.clone()))
        .collect();
    let outs: Vec<Collected> = targets.iter().map(|_| Collected::default()).collect();
    let c = base.concurrency.max(1);
    let mut rng = Rng(base.seed ^ 0xC0FF_EE00_D15E_A5E5 | 1);
    let start = Instant::now();
    // Per target: (round, time it started since `start`, ms spent) for its timeline.
    let mut spans: Vec<Vec<(usize, f64, f64)>> = vec![Vec::new(); targets.len()];
    let mut order = Vec::new();
    let rounds = base.requests.div_ceil(c);
    for r in 0..rounds {
        if base.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        let mut perm: Vec<usize> = (0..targets.len()).collect();
        for i in (1..perm.len()).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        for &t in &perm {
            order.push(targets[t].name.clone());
            let began = Instant::now();
            let tasks = (r * c..((r + 1) * c).min(base.requests)).map(|i| {
                let t0 = Instant::now();
                run_one(
                    client.clone(),
                    cfgs[t].clone(),
                    (i, words),
                    (t0, start),
                    outs[t].clone(),
                )
            });
            futures_util::future::join_all(tasks).await;
            let at = began.saturating_duration_since(start).as_secs_f64() * 1e3;
            spans[t].push((r, at, began.elapsed().as_secs_f64() * 1e3));
        }
    }
    let mut reports = Vec::new();
    for (k, t) in targets.iter().enumerate() {
        let (mut records, mut tasks) = std::mem::take(&mut *outs[k].lock().await);
        // Cut out the time other targets ran: round r of this target moves back by the
        // gap between where it started and where its earlier rounds ended.
        let mut shift = std::collections::HashMap::new();
        let mut busy = 0.0;
        for &(r, at, took) in &spans[k] {
            shift.insert(r, at - busy);
            busy += took;
        }
        for rec in &mut records {
            rec.scheduled_ms -= shift.get(&(rec.index / c)).copied().unwrap_or(0.0);
        }
        for task in &mut tasks {
            task.scheduled_ms -= shift.get(&(task.index / c)).copied().unwrap_or(0.0);
        }
        records.sort_by_key(|r| (r.index, r.call, r.branch));
        tasks.sort_by_key(|t| t.index);
        let report = summarize(
            t.cfg.clone(),
            provenances[k].clone(),
            (words, overheads[k]),
            records,
            tasks,
        );
        reports.push((t.name.clone(), report));
    }
    let comparison = comparison(&reports, base, &order);
    let mut by_name = Map::new();
    for (name, r) in &reports {
        by_name.insert(
            name.clone(),
            serde_json::to_value(r).map_err(|e| Error::Config(e.to_string()))?,
        );
    }
    Ok((
        CompareReport {
            schema: COMPARE_SCHEMA,
            targets: by_name,
            comparison,
        },
        reports,
    ))
}

/// Per-request values of a metric, as samples (the second member is unused but for costs).
fn per_request(r: &Report, f: fn(&RequestMetrics) -> Option<f64>) -> Vec<(f64, f64)> {
    r.per_request(f).into_iter().map(|v| (v, 0.0)).collect()
}

/// How a metric's samples become one value.
#[derive(Clone, Copy)]
enum Stat {
    /// Median of per-request (or per-task) values.
    Median,
    /// Mean of 0/1 outcomes.
    Mean,
    /// Σ cost / Σ completed over tasks (pairs `(cost, completed)`).
    CostPerCompleted,
}

fn statistic(stat: Stat, v: &[(f64, f64)]) -> f64 {
    match stat {
        Stat::Median if v.is_empty() => f64::NAN,
        Stat::Median => Stats::of(&v.iter().map(|x| x.0).collect::<Vec<_>>()).p50,
        Stat::Mean => v.iter().map(|x| x.0).sum::<f64>() / v.len().max(1) as f64,
        Stat::CostPerCompleted => {
            let done: f64 = v.iter().map(|x| x.1).sum();
            v.iter().map(|x| x.0).sum::<f64>() / done
        }
    }
}

/// Ratio `b / a` of the statistic and its 95% bootstrap interval (resampling each side).
fn ratio_interval(
    stat: Stat,
    a: &[(f64, f64)],
    b: &[(f64, f64)],
    rng: &mut Rng,
) -> (f64, Option<(f64, f64)>) {
    let point = statistic(stat, b) / statistic(stat, a);
    if a.is_empty() || b.is_empty() {
        return (point, None);
    }
    let mut draw = |v: &[(f64, f64)]| -> Vec<(f64, f64)> {
        (0..v.len()).map(|_| v[rng.below(v.len())]).collect()
    };
    let mut ratios: Vec<f64> = (0..BOOTSTRAP)
        .map(|_| statistic(stat, &draw(b)) / statistic(stat, &draw(a)))
        .filter(|r| r.is_finite())
        .collect();
    if ratios.len() < BOOTSTRAP / 2 {
        return (point, None);
    }
    ratios.sort_by(f64::total_cmp);
    let q = |p: f64| ratios[((ratios.len() - 1) as f64 * p).round() as usize];
    (point, Some((q(0.025), q(0.975))))
}

/// The `comparison` object.
fn comparison(reports: &[(String, Report)], base: &RunConfig, order: &[String]) -> Value {
    type Samples = fn(&Report) -> Vec<(f64, f64)>;
    let metrics: [(&str, Stat, Samples); 7] = [
        ("ttft_ms", Stat::Median, |r| {
            per_request(r, |m| Some(m.ttft_ms))
        }),
        ("tpot_ms", Stat::Median, |r| per_request(r, |m| m.tpot_ms)),
        ("e2e_ms", Stat::Median, |r| {
            per_request(r, |m| Some(m.e2e_ms))
        }),
        ("output_speed_tok_s", Stat::Median, |r| {
            per_request(r, |m| m.output_speed_tok_s)
        }),
        ("task_wall_clock_ms", Stat::Median, |r| {
            r.completed_task_ms()
                .into_iter()
                .map(|v| (v, 0.0))
                .collect()
        }),
        ("error_rate", Stat::Mean, |r| {
            r.records
                .iter()
                .map(|x| (f64::from(u8::from(x.metrics.is_none())), 0.0))
                .collect()
        }),
        (
            "cost_per_completed_task_usd",
            Stat::CostPerCompleted,
            task_costs,
        ),
    ];
    let mut rng = Rng(base.seed ^ 0xB007_5742_9A11_0001 | 1);
    let mut out = Map::new();
    for (name, stat, samples) in metrics {
        let first = samples(&reports[0].1);
        let mut per = Map::new();
        for (t, r) in reports {
            let v = samples(r);
            let value = statistic(stat, &v);
            let (ratio, ci) = ratio_interval(stat, &first, &v, &mut rng);
            let significant =
                ci.is_some_and(|(lo, hi)| lo > 1.0 + EQUIVALENCE || hi < 1.0 - EQUIVALENCE);
            per.insert(
                t.clone(),
                json!({
                    "value": value.is_finite().then_some(value),
                    "n": v.len(),
                    "ratio_to_first": ratio.is_finite().then_some(ratio),
                    "ratio_ci95": ci,
                    "significant": significant,
                }),
            );
        }
        let stat_name = match stat {
            Stat::Median => "median",
            Stat::Mean => "mean",
            Stat::CostPerCompleted => "total cost / completed tasks",
        };
        out.insert(
            name.to_string(),
            json!({"statistic": stat_name, "targets": per}),
        );
    }
    json!({
        "first": reports[0].0,
        "metrics": out,
        "quality": quality(reports, &base.workload),
        "send_order": order,
        "bootstrap": {"resamples": BOOTSTRAP, "equivalence_band": EQUIVALENCE},
    })
}

/// `(cost of the task's attempts, 1 if it completed)` per task (needs prices).
fn task_costs(r: &Report) -> Vec<(f64, f64)> {
    let Some(p) = r.config.prices else {
        return Vec::new();
    };
    r.task_records
        .iter()
        .map(|t| {
            let cost: f64 = r
                .records
                .iter()
                .filter(|x| x.index == t.index)
                .flat_map(|x| x.attempts.iter())
                .filter_map(|a| a.usage())
                .map(|u| p.cost(&u))
                .sum();
            (cost, f64::from(u8::from(t.completed)))
        })
        .collect()
}

/// Greedy answers of every target against the first target's, task by task (first call,
/// first copy), with `expect` success when the prompts carry patterns.
fn quality(reports: &[(String, Report)], workload: &Workload) -> Value {
    let answers = |r: &Report| -> Vec<Answer<String>> {
        let n = r.task_records.len();
        (0..n)
            .map(|i| {
                let text = r
                    .records
                    .iter()
                    .find(|x| x.index == i && x.call == 0 && x.branch == 0)
                    .and_then(|x| x.attempts.last())
                    .map(|a| a.content())
                    .unwrap_or_default();
                Answer {
                    tokens: None,
                    text,
                    tool_calls: Vec::new(),
                }
            })
            .collect()
    };
    let first = answers(&reports[0].1);
    let prompts: Vec<QualityPrompt> = (0..first.len())
        .map(|i| match workload {
            Workload::File(f) if !f.prompts.is_empty() => f.prompts[i % f.prompts.len()].clone(),
            _ => QualityPrompt {
                line: i + 1,
                prompt: None,
                messages: None,
                expect: None,
                tools: None,
            },
        })
        .collect();
    let mut per = Map::new();
    for (name, r) in reports {
        let mine = answers(r);
        let n = mine.len().min(first.len());
        if n == 0 {
            per.insert(name.clone(), Value::Null);
            continue;
        }
        let (q, _) = compare_answers(&prompts[..n], &mine[..n], &first[..n]);
        per.insert(
            name.clone(),
            json!({
                "exact_match_rate_vs_first": q["exact_match_rate"],
                "mean_common_prefix_chars": q["mean_common_prefix"],
                "prompts_with_expect": q["prompts_with_expect"],
                "expect_success_rate": q["a_success_rate"],
            }),
        );
    }
    Value::Object(per)
}

/// The comparison as a Markdown table: one row per metric, one column per target.
pub fn render_markdown(c: &CompareReport) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let names: Vec<&String> = c.targets.keys().collect();
    let _ = writeln!(
        o,
        "| metric | {} |",
        names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(o, "|---|{}", "---|".repeat(names.len()));
    let m = &c.comparison["metrics"];
    for (metric, entry) in m.as_object().into_iter().flatten() {
        let mut row = format!(
            "| {metric} ({}) |",
            entry["statistic"].as_str().unwrap_or("")
        );
        for n in &names {
            let e = &entry["targets"][n.as_str()];
            let cell = match (e["value"].as_f64(), e["ratio_to_first"].as_f64()) {
                (None, _) => " – |".to_string(),
                (Some(v), _) if n.as_str() == names[0].as_str() => format!(" {v:.4} |"),
                (Some(v), Some(r)) => {
                    let ci = e["ratio_ci95"].as_array().map_or("no CI".into(), |a| {
                        format!(
                            "{:.2}–{:.2}",
                            a[0].as_f64().unwrap_or(f64::NAN),
                            a[1].as_f64().unwrap_or(f64::NAN)
                        )
                    });
                    let verdict = if e["significant"] == true {
                        ", **differs**"
                    } else {
                        ""
                    };
                    format!(" {v:.4} (×{r:.2}, CI {ci}{verdict}) |")
                }
                (Some(v), None) => format!(" {v:.4} |"),
            };
            row.push_str(&cell);
        }
        let _ = writeln!(o, "{row}");
    }
    let q = &c.comparison["quality"];
    let mut row = String::from("| greedy answers: exact match vs first / expect success |");
    for n in &names {
        let e = &q[n.as_str()];
        let pct = |v: &Value| {
            v.as_f64()
                .map_or("–".into(), |x| format!("{:.0}%", 100.0 * x))
        };
        let _ = write!(
            row,
            " {} / {} |",
            pct(&e["exact_match_rate_vs_first"]),
            pct(&e["expect_success_rate"])
        );
    }
    let _ = writeln!(o, "{row}");
    let _ = writeln!(
        o,
        "\nratios are to `{}`, with 95% bootstrap intervals; **differs**: the whole interval is outside ±{:.0}% of equality. Send order (rounds of the concurrency): {}",
        c.comparison["first"].as_str().unwrap_or(""),
        100.0 * EQUIVALENCE,
        c.comparison["send_order"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")).unwrap_or_default(),
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_specs_parse_and_bad_ones_name_the_problem() {
        let base = RunConfig::new("http://x", "m");
        let t = parse_target(
            r#"name=a,url=http://h:1,model=q,extra-body={"speculative": false, "n": 1}"#,
            &base,
        )
        .unwrap();
        assert_eq!(
            (t.name.as_str(), t.cfg.url.as_str(), t.cfg.model.as_str()),
            ("a", "http://h:1", "q")
        );
        assert_eq!(t.cfg.extra_body.unwrap()["n"], 1);
        for (spec, want) in [
            ("url=http://h,model=q", "required"),
            ("name=a,url=http://h", "required"),
            (
                "name=a,url=http://h,model=q,colour=red",
                "unknown key \"colour\"",
            ),
            ("name=a,url,model=q", "not key=value"),
            ("name=a,url=h,model=q,extra-body=[1]", "JSON object"),
            (
                "name=a,url=h,model=q,api-key-env=FERRITE_TEST_NO_SUCH_VAR",
                "not set",
            ),
            (
                "name=a,url=h,model=q,prices=/nonexistent.json",
                "/nonexistent.json",
            ),
        ] {
            let e = parse_target(spec, &base).unwrap_err().to_string();
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    #[test]
    fn ratio_intervals_find_real_differences_only() {
        let mut rng = Rng(7);
        let a: Vec<(f64, f64)> = (0..40).map(|i| (100.0 + (i % 7) as f64, 0.0)).collect();
        let same: Vec<(f64, f64)> = (0..40)
            .map(|i| (100.0 + ((i + 3) % 7) as f64, 0.0))
            .collect();
        let twice: Vec<(f64, f64)> = a.iter().map(|x| (2.0 * x.0, 0.0)).collect();
        let (r, ci) = ratio_interval(Stat::Median, &a, &twice, &mut rng);
        let (lo, hi) = ci.unwrap();
        assert!(
            (r - 2.0).abs() < 1e-9 && lo > 1.9 && hi < 2.1,
            "{r} {lo} {hi}"
        );
        let (r, ci) = ratio_interval(Stat::Median, &a, &same, &mut rng);
        let (lo, hi) = ci.unwrap();
        assert!(
            (r - 1.0).abs() < 0.03 && lo <= 1.0 + EQUIVALENCE && hi >= 1.0 - EQUIVALENCE,
            "{r} {lo} {hi}"
        );
        // Cost per completed task: total over completed, not a mean of per-task costs.
        let v = [(2.0, 1.0), (4.0, 0.0), (3.0, 1.0)];
        assert_eq!(statistic(Stat::CostPerCompleted, &v), 4.5);
    }
}
