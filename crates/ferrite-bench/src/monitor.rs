//! `ferrite bench monitor`: availability and latency of endpoints over time. Every interval each
//! target gets a small fixed probe (a short streamed chat) and, optionally, one agent task;
//! each result is appended to a JSONL file as soon as it ends, so a crash loses nothing and a
//! restarted monitor appends. The summary (at the end, on Ctrl-C, or later with `bench report`)
//! is computed from that file: availability, failures by cause, outage windows, latency per
//! window of 10 probes, and every change of `system_fingerprint` or served model.
//!
//! One line per probe (schema `ferrite-bench/monitor/v1`):
//! `{"schema", "t" (when it was sent, RFC 3339), "target", "kind": "probe"|"task", "ok", "status", "cause"
//! ("http_<status>" | "timeout" | "connection" | "stream" | null), "error", "ttft_ms",
//! "e2e_ms", "system_fingerprint", "model", "calls"}`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::agent::AgentWorkload;
use crate::client::send;
use crate::compare::{check_names, Target};
use crate::metrics::Stats;
use crate::run::http_client;
use crate::{Error, Result};

/// Schema id of a monitor line.
pub const MONITOR_SCHEMA: &str = "ferrite-bench/monitor/v1";
/// Probes per latency window in the summary.
pub const WINDOW: usize = 10;

/// Monitor settings.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// What to watch.
    pub targets: Vec<Target>,
    /// Time between one target's probes.
    pub interval: Duration,
    /// How long to watch.
    pub duration: Duration,
    /// Longest a probe may take before it counts as failed (`timeout`).
    pub probe_timeout: Duration,
    /// Also run the first task of this file every interval.
    pub task: Option<AgentWorkload>,
}

/// The probe: a short greedy chat answer, streamed.
fn probe_body(model: &str) -> Value {
    json!({"model": model, "stream": true, "temperature": 0, "max_tokens": 8,
           "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "Reply with one word: ready?"}]})
}

/// Why a failed attempt failed, as a summary key.
fn cause(status: Option<u16>, error: &str) -> String {
    match status {
        Some(s) if s != 200 => format!("http_{s}"),
        Some(_) => "stream".into(),
        None if error.contains("timed out") || error.contains("timeout") => "timeout".into(),
        None => "connection".into(),
    }
}

/// One probe of `t`, as its JSONL line.
async fn probe(client: &reqwest::Client, t: &Target, timeout: Duration) -> Value {
    let sent = chrono::Utc::now();
    let url = format!("{}/v1/chat/completions", t.cfg.url.trim_end_matches('/'));
    let body = probe_body(&t.cfg.model);
    let t0 = Instant::now();
    let fut = send(client, &url, t.cfg.api_key.as_deref(), &body, t0);
    let line = match tokio::time::timeout(timeout, fut).await {
        Err(_) => json!({"ok": false, "status": null, "cause": "timeout",
                         "error": format!("no answer within {} s", timeout.as_secs_f64())}),
        Ok(a) => {
            let ok = a.ok();
            let text = a.events.iter().find(|e| e.has_text());
            let err = a.error.clone().unwrap_or_default();
            json!({
                "ok": ok,
                "status": a.status,
                "cause": (!ok).then(|| cause(a.status, &err)),
                "error": a.error,
                "ttft_ms": text.filter(|_| ok).map(|e| e.t.as_secs_f64() * 1e3),
                "e2e_ms": ok.then_some(a.end.as_secs_f64() * 1e3),
                "system_fingerprint": a.system_fingerprint,
                "model": a.model,
            })
        }
    };
    stamp(line, &t.name, "probe", sent)
}

/// `line` with its schema, target, kind and the time it was sent.
fn stamp(mut line: Value, target: &str, kind: &str, sent: chrono::DateTime<chrono::Utc>) -> Value {
    line["schema"] = json!(MONITOR_SCHEMA);
    line["t"] = json!(sent.to_rfc3339());
    line["target"] = json!(target);
    line["kind"] = json!(kind);
    line
}

/// Appends lines to the JSONL file, each flushed and synced before the next probe.
struct Journal(std::fs::File);

impl Journal {
    fn open(path: &Path) -> Result<Journal> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Journal)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    fn append(&mut self, line: &Value) -> Result<()> {
        let io = |e: std::io::Error| Error::Config(format!("writing the monitor log: {e}"));
        writeln!(self.0, "{line}").map_err(io)?;
        self.0.flush().map_err(io)?;
        self.0.sync_data().map_err(io)
    }
}

/// Watch the targets until the duration ends or `stop` resolves; every probe's line is in
/// `jsonl` when it returns.
pub async fn monitor(
    cfg: MonitorConfig,
    jsonl: &Path,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    if cfg.targets.is_empty() {
        return Err(Error::Config("monitor needs at least one --target".into()));
    }
    check_names(&cfg.targets)?;
    if cfg.interval.is_zero() || cfg.duration.is_zero() {
        return Err(Error::Config(
            "--interval-s and --duration-s must be positive".into(),
        ));
    }
    let journal = std::sync::Arc::new(tokio::sync::Mutex::new(Journal::open(jsonl)?));
    let client = http_client()?;
    let end = tokio::time::Instant::now() + cfg.duration;
    // One loop per target, so a slow target never delays another's probes.
    let loops = cfg.targets.iter().cloned().map(|t| {
        let (client, journal, task) = (client.clone(), journal.clone(), cfg.task.clone());
        let (interval, timeout) = (cfg.interval, cfg.probe_timeout);
        async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut k = 0usize;
            loop {
                tick.tick().await;
                if tokio::time::Instant::now() >= end {
                    return Ok::<(), Error>(());
                }
                let line = probe(&client, &t, timeout).await;
                journal.lock().await.append(&line)?;
                if let Some(w) = &task {
                    let line = agent_task(&t, w, k).await;
                    journal.lock().await.append(&line)?;
                }
                k += 1;
            }
        }
    });
    tokio::select! {
        r = futures_util::future::try_join_all(loops) => r.map(|_| ()),
        _ = stop => Ok(()),
    }
}

/// The first task of `w`, run once against `t` (its wall-clock and whether it completed).
async fn agent_task(t: &Target, w: &AgentWorkload, k: usize) -> Value {
    let sent = chrono::Utc::now();
    let mut cfg = t.cfg.clone();
    cfg.workload = crate::workload::Workload::Agent(w.clone());
    cfg.requests = 1;
    cfg.concurrency = 1;
    cfg.warmup = 0;
    cfg.seed = k as u64;
    let line = match crate::run::run(cfg).await {
        Ok(r) => {
            let task = r.task_records.first();
            let ok = task.is_some_and(|x| x.completed);
            let error = r
                .records
                .iter()
                .filter_map(|x| x.attempts.last()?.error.clone())
                .next();
            let status = r
                .records
                .iter()
                .filter_map(|x| x.attempts.last()?.status)
                .find(|s| *s != 200);
            json!({
                "ok": ok,
                "status": status,
                "cause": (!ok).then(|| cause(status, error.as_deref().unwrap_or(""))),
                "error": error,
                "e2e_ms": task.filter(|_| ok).map(|x| x.elapsed_ms),
                "calls": task.map(|x| x.calls_completed),
                "system_fingerprint": r.provenance["system_fingerprint"],
            })
        }
        Err(e) => json!({"ok": false, "cause": "connection", "error": e.to_string()}),
    };
    stamp(line, &t.name, "task", sent)
}

/// Read a monitor JSONL file (lines that do not parse are skipped, e.g. one cut by a crash).
pub fn read_lines(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["schema"] == MONITOR_SCHEMA)
        .collect())
}

/// When the log's first line was sent.
pub(crate) fn first_sent(lines: &[Value]) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    lines
        .first()
        .and_then(|l| l["t"].as_str())
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
}

/// Seconds of a line's `t` stamp since `t0` (NaN when it has none).
pub(crate) fn seconds(t: &Value, t0: chrono::DateTime<chrono::FixedOffset>) -> f64 {
    t.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map_or(f64::NAN, |d| {
            (d - t0).num_microseconds().unwrap_or(0) as f64 / 1e6
        })
}

/// The summary of a monitor log: per target, over its probes (tasks reported apart).
pub fn summarize(lines: &[Value]) -> Value {
    let Some(t0) = first_sent(lines) else {
        return json!({"schema": "ferrite-bench/monitor-summary/v1", "targets": {}});
    };
    let mut names: Vec<&str> = Vec::new();
    for l in lines {
        if let Some(n) = l["target"].as_str().filter(|n| !names.contains(n)) {
            names.push(n);
        }
    }
    let mut targets = Map::new();
    for name in names {
        let mine = |kind: &str| -> Vec<&Value> {
            lines
                .iter()
                .filter(|l| l["target"] == name && l["kind"] == kind)
                .collect()
        };
        let probes = mine("probe");
        let ok = probes.iter().filter(|l| l["ok"] == true).count();
        let mut causes = Map::new();
        for l in probes.iter().filter(|l| l["ok"] != true) {
            let c = l["cause"].as_str().unwrap_or("unknown").to_string();
            let n = causes.get(&c).and_then(Value::as_u64).unwrap_or(0);
            causes.insert(c, json!(n + 1));
        }
        // Runs of consecutive failed probes: their first and last failure.
        let mut outages = Vec::new();
        let mut run: Option<(f64, f64, usize)> = None;
        for l in &probes {
            let at = seconds(&l["t"], t0);
            match (l["ok"] == true, run.take()) {
                (false, None) => run = Some((at, at, 1)),
                (false, Some((a, _, n))) => run = Some((a, at, n + 1)),
                (true, Some((a, b, n))) => {
                    outages.push(json!({"first_failure_s": a, "last_failure_s": b, "probes": n}))
                }
                (true, None) => {}
            }
        }
        if let Some((a, b, n)) = run {
            outages.push(
                json!({"first_failure_s": a, "last_failure_s": b, "probes": n, "ongoing": true}),
            );
        }
        let windows: Vec<Value> = probes
            .chunks(WINDOW)
            .map(|w| {
                let col =
                    |k: &str| -> Vec<f64> { w.iter().filter_map(|l| l[k].as_f64()).collect() };
                json!({
                    "from_s": seconds(&w[0]["t"], t0),
                    "to_s": seconds(&w[w.len() - 1]["t"], t0),
                    "probes": w.len(),
                    "ok": w.iter().filter(|l| l["ok"] == true).count(),
                    "ttft_ms": Stats::of(&col("ttft_ms")),
                    "e2e_ms": Stats::of(&col("e2e_ms")),
                })
            })
            .collect();
        // Every change of fingerprint or model among answered probes, once each.
        let mut changes = Vec::new();
        for field in ["system_fingerprint", "model"] {
            let mut last: Option<&Value> = None;
            for l in probes
                .iter()
                .filter(|l| l["ok"] == true && !l[field].is_null())
            {
                if let Some(prev) = last.filter(|p| **p != l[field]) {
                    changes.push(
                        json!({"t": l["t"], "at_s": seconds(&l["t"], t0), "field": field,
                                         "from": prev, "to": l[field]}),
                    );
                }
                last = Some(&l[field]);
            }
        }
        let tasks = mine("task");
        let tasks_ok = tasks.iter().filter(|l| l["ok"] == true).count();
        let col = |k: &str| -> Vec<f64> { probes.iter().filter_map(|l| l[k].as_f64()).collect() };
        targets.insert(name.to_string(), json!({
            "probes": probes.len(),
            "succeeded": ok,
            "availability": if probes.is_empty() { None } else { Some(ok as f64 / probes.len() as f64) },
            "failed": causes,
            "outages": outages,
            "ttft_ms": Stats::of(&col("ttft_ms")),
            "e2e_ms": Stats::of(&col("e2e_ms")),
            "windows": windows,
            "changes": changes,
            "tasks": if tasks.is_empty() { Value::Null } else { json!({
                "runs": tasks.len(), "completed": tasks_ok,
                "wall_clock_ms": Stats::of(&tasks.iter().filter_map(|l| l["e2e_ms"].as_f64()).collect::<Vec<_>>()),
            }) },
        }));
    }
    json!({
        "schema": "ferrite-bench/monitor-summary/v1",
        "started": lines[0]["t"],
        "ended": lines[lines.len() - 1]["t"],
        "targets": targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: f64, target: &str, ok: bool, fp: &str) -> Value {
        let stamp = chrono::DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z").unwrap()
            + chrono::Duration::milliseconds((t * 1e3) as i64);
        json!({"schema": MONITOR_SCHEMA, "t": stamp.to_rfc3339(), "target": target, "kind": "probe",
               "ok": ok, "cause": (!ok).then_some("http_503"), "ttft_ms": ok.then_some(10.0 + t),
               "e2e_ms": ok.then_some(20.0), "system_fingerprint": fp, "model": "m"})
    }

    #[test]
    fn summaries_find_outages_changes_and_windows() {
        let mut lines = Vec::new();
        for k in 0..20 {
            let t = k as f64;
            lines.push(line(
                t,
                "a",
                !(5..=8).contains(&k),
                if k < 12 { "fp1" } else { "fp2" },
            ));
            lines.push(line(t, "b", k != 19, "fpb"));
        }
        let s = summarize(&lines);
        let a = &s["targets"]["a"];
        assert_eq!(a["probes"], 20);
        assert_eq!(a["availability"], 0.8);
        assert_eq!(a["failed"]["http_503"], 4);
        assert_eq!(
            a["outages"],
            json!([{"first_failure_s": 5.0, "last_failure_s": 8.0, "probes": 4}])
        );
        assert_eq!(a["changes"].as_array().unwrap().len(), 1);
        assert_eq!(a["changes"][0]["at_s"], 12.0);
        assert_eq!(a["changes"][0]["to"], "fp2");
        assert_eq!(a["windows"].as_array().unwrap().len(), 2);
        assert_eq!(a["windows"][1]["ok"], 10);
        assert_eq!(s["targets"]["b"]["outages"][0]["ongoing"], true);
        assert_eq!(cause(Some(429), ""), "http_429");
        assert_eq!(
            cause(
                None,
                "connection: error sending request: operation timed out"
            ),
            "timeout"
        );
    }
}
