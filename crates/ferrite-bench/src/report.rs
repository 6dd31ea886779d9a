//! The report: every figure computed from the raw records (`run`), with its formula, the
//! workload actually achieved, per-task results and the run's provenance.

use serde::Serialize;
use serde_json::{json, Value};

use crate::metrics::{formulas, RequestMetrics, Stats};
use crate::run::{RequestRecord, RunConfig, TaskRecord};
use crate::validity::{self, ToolCallRecord};

/// The report (`--json`), schema `ferrite-bench/run/v2`. `records` and `task_records` are the
/// raw material; everything else is computed from them.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Schema id.
    pub schema: &'static str,
    /// Who measured what, when, against which server.
    pub provenance: Value,
    /// Settings.
    pub config: RunConfig,
    /// Per-metric statistics over every successful call.
    pub metrics: Value,
    /// Aggregate throughput.
    pub throughput: Value,
    /// Logical request (call) counts.
    pub requests: Value,
    /// Task counts and wall-clock (a plain request is a task of one call).
    pub tasks: Value,
    /// What the workload actually was.
    pub workload: Value,
    /// Cost from server-reported usage (`null` without prices).
    pub cost: Value,
    /// Speculative decoding as the server reported it (`null` when it reported nothing).
    pub speculative: Value,
    /// Tool calls checked against their tools' schemas (`null` when no call offered tools).
    pub tool_calls: Value,
    /// Answers checked against the requested `response_format` (`null` when none asked).
    pub structured: Value,
    /// Formula of every metric.
    pub formulas: Value,
    /// Raw records of every call.
    pub records: Vec<RequestRecord>,
    /// Raw records of every task.
    pub task_records: Vec<TaskRecord>,
}

impl Report {
    /// A per-call metric over the successful calls (those where `f` gives a value).
    pub fn per_request(&self, f: impl Fn(&RequestMetrics) -> Option<f64>) -> Vec<f64> {
        self.records
            .iter()
            .filter_map(|x| x.metrics.as_ref())
            .filter_map(f)
            .collect()
    }

    /// Wall-clock of every completed task, in milliseconds.
    pub fn completed_task_ms(&self) -> Vec<f64> {
        self.task_records
            .iter()
            .filter(|t| t.completed)
            .map(|t| t.elapsed_ms)
            .collect()
    }
}

/// `server_usage` when every call had usage, else what filled the gaps.
fn token_source(ok: &[&RequestMetrics]) -> &'static str {
    use crate::metrics::TokenSource as S;
    let all = |s: S| ok.iter().all(|m| m.token_source == s);
    if all(S::ServerUsage) {
        "server_usage"
    } else if ok.iter().any(|m| m.token_source == S::ClientTokenizer) {
        "client_tokenizer (where the server reported no usage)"
    } else {
        "chunk_count (where the server reported no usage)"
    }
}

/// `speculative`: drafts and acceptance summed over the calls whose usage reported them.
fn speculative(ok: &[&RequestMetrics]) -> Value {
    let with: Vec<(usize, usize, usize)> = ok
        .iter()
        .filter_map(|m| m.spec.map(|(d, a)| (d, a, m.output_tokens)))
        .collect();
    if with.is_empty() {
        return Value::Null;
    }
    let (d, a, n) = with
        .iter()
        .fold((0, 0, 0), |s, x| (s.0 + x.0, s.1 + x.1, s.2 + x.2));
    json!({
        "requests_reporting": with.len(),
        "draft_tokens": d,
        "accepted_tokens": a,
        "acceptance_rate": if d > 0 { Some(a as f64 / d as f64) } else { None },
        "accepted_per_output_token": if n > 0 { Some(a as f64 / n as f64) } else { None },
    })
}

/// `tool_calls`: every call of every completed answer, checked against its tool's schema.
fn tool_call_summary(cfg: &RunConfig, records: &[RequestRecord]) -> Value {
    let offered = cfg.workload.offers_tools()
        || cfg
            .extra_body
            .as_ref()
            .is_some_and(|b| b.contains_key("tools"));
    let calls: Vec<&ToolCallRecord> = records.iter().flat_map(|r| &r.tool_calls).collect();
    if !offered && calls.is_empty() {
        return Value::Null;
    }
    let reasons: Vec<String> = calls.iter().filter_map(|c| c.invalid.clone()).collect();
    let mut s = validity::summary(calls.len(), &reasons);
    s["answers_with_calls"] = json!(records.iter().filter(|r| !r.tool_calls.is_empty()).count());
    s
}

/// `structured`: answers checked against the JSON schema their request asked for.
fn structured_summary(records: &[RequestRecord]) -> Value {
    let checked: Vec<&Option<String>> = records
        .iter()
        .filter_map(|r| r.structured.as_ref())
        .collect();
    if checked.is_empty() {
        return Value::Null;
    }
    let reasons: Vec<String> = checked.iter().filter_map(|r| (*r).clone()).collect();
    validity::summary(checked.len(), &reasons)
}

/// `tasks`: completed tasks' wall-clock, calls and think time.
fn task_summary(tasks: &[TaskRecord]) -> Value {
    let done: Vec<&TaskRecord> = tasks.iter().filter(|t| t.completed).collect();
    let col = |f: &dyn Fn(&TaskRecord) -> f64| -> Stats {
        Stats::of(&done.iter().map(|t| f(t)).collect::<Vec<_>>())
    };
    json!({
        "completed": done.len(),
        "failed": tasks.len() - done.len(),
        "wall_clock_ms": col(&|t| t.elapsed_ms),
        "think_ms": col(&|t| t.think_ms),
        "calls_per_task": col(&|t| t.calls_planned as f64),
    })
}

/// Every figure of the report, computed from the raw records.
pub(crate) fn summarize(
    cfg: RunConfig,
    provenance: Value,
    (words, overhead): (usize, usize),
    records: Vec<RequestRecord>,
    tasks: Vec<TaskRecord>,
) -> Report {
    let ok: Vec<&RequestMetrics> = records.iter().filter_map(|r| r.metrics.as_ref()).collect();
    let col = |f: &dyn Fn(&RequestMetrics) -> Option<f64>| -> Vec<f64> {
        ok.iter().filter_map(|m| f(m)).collect()
    };
    let itl: Vec<f64> = ok.iter().flat_map(|m| m.itl_ms.iter().copied()).collect();
    let metrics = json!({
        "ttft_ms": Stats::of(&col(&|m| Some(m.ttft_ms))),
        "ttfo_ms": Stats::of(&col(&|m| m.ttfo_ms)),
        "tpot_ms": Stats::of(&col(&|m| m.tpot_ms)),
        "itl_ms": Stats::of(&itl),
        "itl_request_ms": Stats::of(&col(&|m| m.itl_request_ms)),
        "e2e_ms": Stats::of(&col(&|m| Some(m.e2e_ms))),
        "output_speed_tok_s": Stats::of(&col(&|m| m.output_speed_tok_s)),
        "prefill_tok_s": Stats::of(&col(&|m| m.prefill_tok_s)),
    });
    // T: first scheduled send → last end among measured requests.
    let t_start = records
        .iter()
        .map(|r| r.scheduled_ms)
        .fold(f64::INFINITY, f64::min);
    let t_end = records
        .iter()
        .filter_map(RequestRecord::end_ms)
        .fold(0.0, f64::max);
    let secs = ((t_end - t_start) / 1e3).max(1e-9);
    let n_out: usize = ok.iter().map(|m| m.output_tokens).sum();
    let n_in: usize = ok.iter().filter_map(|m| m.input_tokens).sum();
    let attempts: usize = records.iter().map(|r| r.attempts.len()).sum();
    // Attempts lost on a stale pooled connection and sent again (the last attempt of a record
    // was not re-sent, whatever it was).
    let stale: usize = records
        .iter()
        .map(|r| {
            let n = r.attempts.len().saturating_sub(1);
            r.attempts[..n]
                .iter()
                .filter(|a| a.stale_connection)
                .count()
        })
        .sum();
    let completed = ok.len();
    let failed = records.len() - completed;
    let achieved_in = col(&|m| m.input_tokens.map(|x| x as f64));
    let achieved_out = col(&|m| Some(m.output_tokens as f64));
    let source = token_source(&ok);
    let out_mismatch = records
        .iter()
        .filter(|r| {
            r.metrics
                .as_ref()
                .is_some_and(|m| m.output_tokens != r.max_tokens)
        })
        .count();
    let tasks_done = tasks.iter().filter(|t| t.completed).count();
    // Sized prompts: every first call should have exactly the requested prompt tokens.
    let in_mismatch = cfg.workload.is_sized().then(|| {
        records
            .iter()
            .filter(|r| r.call == 0)
            .filter_map(|r| r.metrics.as_ref().and_then(|m| m.input_tokens))
            .filter(|&n| n != cfg.input_tokens)
            .count()
    });
    let cost = cfg.prices.map(|p| {
        let total: f64 = records
            .iter()
            .flat_map(|r| r.attempts.iter())
            .filter_map(|a| a.usage())
            .map(|u| p.cost(&u))
            .sum();
        json!({
            "total_usd": total,
            "per_request_usd": total / records.len().max(1) as f64,
            "per_completed_request_usd": if completed > 0 { Some(total / completed as f64) } else { None },
            "per_completed_task_usd": if tasks_done > 0 { Some(total / tasks_done as f64) } else { None },
            "prices": p,
        })
    });
    Report {
        schema: "ferrite-bench/run/v2",
        provenance,
        metrics,
        throughput: json!({
            "requests_per_s": completed as f64 / secs,
            "output_tok_s": n_out as f64 / secs,
            "total_tok_s": (n_in + n_out) as f64 / secs,
            "duration_s": secs,
            "steady_state": crate::steady::steady_state(
                &records,
                if cfg.rate.is_some() { 1 } else { cfg.concurrency },
                0.5,
            ),
            "goodput": crate::goodput::goodput(
                &cfg.slos,
                &records.iter().map(|r| r.metrics.as_ref()).collect::<Vec<_>>(),
                secs,
            ),
        }),
        tool_calls: tool_call_summary(&cfg, &records),
        structured: structured_summary(&records),
        requests: json!({
            "logical": records.len(),
            "completed": completed,
            "failed": failed,
            "attempts": attempts,
            "retries": attempts - records.len() - stale,
            "stale_connection_resends": stale,
            "error_rate": failed as f64 / records.len().max(1) as f64,
            "attempt_success_rate": completed as f64 / attempts.max(1) as f64,
            "errors": records.iter().filter(|r| r.metrics.is_none())
                .filter_map(|r| r.attempts.last().and_then(|a| a.error.clone()))
                .take(5).collect::<Vec<_>>(),
        }),
        workload: json!({
            "kind": cfg.workload.describe(tasks.len()),
            "warm_up": cfg.workload.describe_warm_up(cfg.warmup),
            "preset": cfg.preset,
            "input_tokens_requested": cfg.workload.is_sized().then_some(cfg.input_tokens),
            "input_tokens_achieved": Stats::of(&achieved_in),
            "prompt_words": words,
            "template_overhead_tokens": overhead,
            "output_tokens_requested": cfg.output_tokens,
            "tokenizer": cfg.tokenizer.as_ref().map(|t| t.name.clone()),
            "output_tokens_achieved": Stats::of(&achieved_out),
            "output_length_mismatches": out_mismatch,
            "input_length_mismatches": in_mismatch,
            "input_cached_tokens": Stats::of(&col(&|m| m.cached_tokens.map(|x| x as f64))),
            "token_source": source,
        }),
        tasks: task_summary(&tasks),
        speculative: speculative(&ok),
        cost: cost.unwrap_or(Value::Null),
        formulas: serde_json::to_value(formulas()).unwrap_or(Value::Null),
        config: cfg,
        records,
        task_records: tasks,
    }
}

/// Date, versions, endpoint, served models, server header and client machine.
pub(crate) async fn provenance(client: &reqwest::Client, cfg: &RunConfig) -> Value {
    let models = async {
        let mut r = client.get(format!("{}/v1/models", cfg.url.trim_end_matches('/')));
        if let Some(k) = &cfg.api_key {
            r = r.bearer_auth(k);
        }
        let r = r.send().await.ok()?;
        let server = r
            .headers()
            .get("server")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let v: Value = r.json().await.ok()?;
        let ids: Vec<String> = v["data"]
            .as_array()?
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect();
        Some((ids, server))
    }
    .await;
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|m| m.trim().to_string())
    });
    json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "ferrite_version": env!("CARGO_PKG_VERSION"),
        "ferrite_commit": option_env!("FERRITE_COMMIT"),
        "endpoint": cfg.url,
        "served_models": models.as_ref().map(|m| &m.0),
        "server_header": models.as_ref().and_then(|m| m.1.clone()),
        "client_cpu": cpu,
        "client_threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// Fill in the `system_fingerprint` seen in the records.
pub fn stamp_fingerprint(report: &mut Report) {
    let fp = report
        .records
        .iter()
        .flat_map(|r| r.attempts.iter())
        .find_map(|a| a.system_fingerprint.clone());
    if let Value::Object(p) = &mut report.provenance {
        p.insert("system_fingerprint".into(), json!(fp));
    }
}
