//! `ferrite bench run`: tasks (a plain request is a task of one call; agent tasks are chains
//! of calls) sent in a closed loop of `concurrency` workers (1 = sequential, interactive) or an
//! open loop of gamma/Poisson arrivals, each call streamed and logged, with retries and
//! backoff. `report` turns the logs into the report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::arrivals::interarrival;
use crate::client::{send, Attempt};
use crate::metrics::{request_metrics, RequestMetrics, TokenCounter};
use crate::report::{provenance, summarize, Report};
use crate::validity::{
    assemble_tool_calls, check_structured, check_tool_calls, requested_schema, ToolCallRecord,
};
use crate::workload::{synthetic_prompt, user, CallPlan, TaskPlan, Workload};
use crate::{Error, Result};

/// Run settings.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// Base URL without `/v1` (e.g. `http://127.0.0.1:8080`).
    pub url: String,
    /// Model name sent in requests.
    pub model: String,
    /// Bearer key.
    #[serde(skip)]
    pub api_key: Option<String>,
    /// Target prompt tokens per request.
    pub input_tokens: usize,
    /// Output tokens per request (`max_tokens`, with `ignore_eos`).
    pub output_tokens: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Measured requests (tasks, for agent workloads).
    pub requests: usize,
    /// Unmeasured requests sent first.
    pub warmup: usize,
    /// Retries per request after a connection error, 429 or 5xx.
    pub retries: usize,
    /// First backoff (doubles per retry; a `Retry-After` header overrides it).
    pub retry_base: Duration,
    /// Seed of the synthetic prompts (and of Poisson arrivals).
    pub seed: u64,
    /// Open loop: Poisson arrivals at this many requests per second (instead of the closed
    /// loop of `concurrency` workers). Latency counts from each scheduled arrival.
    pub rate: Option<f64>,
    /// Prices for the cost report.
    pub prices: Option<Prices>,
    /// The named workload these settings came from (`--preset`), recorded in the report.
    pub preset: Option<String>,
    /// What task i sends (`--workload`): synthetic prompts, a shared prefix, a prompt file or
    /// agent tasks. `requests`, `concurrency` and `rate` count tasks.
    #[serde(skip)]
    pub workload: Workload,
    /// Fields merged into every request body (`--extra-body`), e.g. `{"speculative": false}`
    /// or a provider's own options; they override the bench's own fields of the same name.
    pub extra_body: Option<serde_json::Map<String, Value>>,
    /// Counts tokens of the answer text when the server reports no usage (`--tokenizer`).
    #[serde(skip)]
    pub tokenizer: Option<TokenCounter>,
    /// Per-request service-level objectives for the goodput report (`--slo`).
    pub slos: Vec<crate::goodput::Slo>,
    /// Open loop only: gamma-distributed inter-arrival times with this shape (vLLM's
    /// `--burstiness`): 1 is Poisson, below 1 burstier, large values near-constant rate.
    pub burstiness: f64,
    /// Stop starting new measured requests after this long (the run ends when those in flight
    /// finish); `requests` stays the upper bound.
    pub duration: Option<Duration>,
    /// Incremented as each measured task finishes (a progress display reads it).
    #[serde(skip)]
    pub progress: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl RunConfig {
    /// Settings for `model` at `url` with `ferrite bench run`'s defaults: synthetic prompts of
    /// 256 tokens, 128 output tokens, one request at a time, 16 requests after one warm-up, no
    /// retries (500 ms first backoff), seed 0, closed loop, no prices, SLOs or limits.
    pub fn new(url: impl Into<String>, model: impl Into<String>) -> RunConfig {
        RunConfig {
            url: url.into(),
            model: model.into(),
            api_key: None,
            input_tokens: 256,
            output_tokens: 128,
            concurrency: 1,
            requests: 16,
            warmup: 1,
            retries: 0,
            retry_base: Duration::from_millis(500),
            seed: 0,
            rate: None,
            prices: None,
            preset: None,
            workload: Workload::Synthetic,
            extra_body: None,
            tokenizer: None,
            slos: Vec::new(),
            burstiness: 1.0,
            duration: None,
            progress: None,
        }
    }
}

/// Prices in USD (`--prices FILE`, JSON with these keys; missing keys are 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Prices {
    /// Per million uncached input tokens.
    pub input_per_mtok: f64,
    /// Per million cached input tokens (`usage.prompt_tokens_details.cached_tokens`).
    pub cached_input_per_mtok: f64,
    /// Per million output tokens.
    pub output_per_mtok: f64,
    /// Per request.
    pub per_request: f64,
}

impl Prices {
    /// Cost of one attempt that reported usage (attempts without usage are not billed here).
    pub fn cost(&self, u: &crate::client::Usage) -> f64 {
        let cached = u.cached_tokens.unwrap_or(0).min(u.prompt_tokens);
        (u.prompt_tokens - cached) as f64 * self.input_per_mtok / 1e6
            + cached as f64 * self.cached_input_per_mtok / 1e6
            + u.completion_tokens as f64 * self.output_per_mtok / 1e6
            + self.per_request
    }
}

/// One logical request (one call of a task, one copy of a fan-out) and its attempts.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Task index in the run.
    pub index: usize,
    /// Call within the task (0 for plain requests).
    pub call: usize,
    /// Copy within the call's fan-out (0 without fan-out).
    pub branch: usize,
    /// `max_tokens` asked for.
    pub max_tokens: usize,
    /// Scheduled send time, since the start of the measured phase.
    pub scheduled_ms: f64,
    /// Every HTTP attempt, in order.
    pub attempts: Vec<Attempt>,
    /// Metrics of the successful attempt.
    pub metrics: Option<RequestMetrics>,
    /// Tool calls of the successful answer, each checked against the task's tools.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallRecord>,
    /// With a `response_format` asking for JSON: `Some(None)` when the answer validates,
    /// `Some(Some(why))` when it does not; `None` when not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structured: Option<Option<String>>,
}

impl RequestRecord {
    /// A time since the request was scheduled, as a time since the start of the measured phase.
    pub fn run_ms(&self, since_scheduled: Duration) -> f64 {
        self.scheduled_ms + since_scheduled.as_secs_f64() * 1e3
    }

    /// When its last attempt ended, since the start of the measured phase.
    pub fn end_ms(&self) -> Option<f64> {
        self.attempts.last().map(|a| self.run_ms(a.end))
    }
}

/// One task: its calls' records are in the report's `records`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    /// Task index in the run.
    pub index: usize,
    /// Task name (agent task files).
    pub name: Option<String>,
    /// Scheduled start, since the start of the measured phase.
    pub scheduled_ms: f64,
    /// Scheduled start → end of the last call (think time included); the task's wall-clock
    /// when it completed.
    pub elapsed_ms: f64,
    /// Client-side think time inside `elapsed_ms`.
    pub think_ms: f64,
    /// Calls planned.
    pub calls_planned: usize,
    /// Calls whose every copy succeeded (the chain stops at the first failure).
    pub calls_completed: usize,
    /// Whether every call succeeded.
    pub completed: bool,
}

fn body(
    cfg: &RunConfig,
    messages: &[Value],
    max_tokens: usize,
    tools: Option<&(Value, Value)>,
) -> Value {
    let mut b = json!({
        "model": cfg.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some((tools, choice)) = tools {
        b["tools"] = tools.clone();
        b["tool_choice"] = choice.clone();
    }
    if let (Some(extra), Value::Object(o)) = (&cfg.extra_body, &mut b) {
        o.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    b
}

/// Re-sends allowed per logical request after stale-connection losses.
const MAX_STALE_RESENDS: usize = 3;

/// One logical request with retries.
async fn logical(
    client: &reqwest::Client,
    cfg: &RunConfig,
    body: &Value,
    t0: Instant,
) -> Vec<Attempt> {
    let url = format!("{}/v1/chat/completions", cfg.url.trim_end_matches('/'));
    let mut attempts = Vec::new();
    let (mut k, mut resends) = (0, 0);
    loop {
        let at = send(client, &url, cfg.api_key.as_deref(), body, t0).await;
        let (ok, retry, wait, stale) =
            (at.ok(), at.retryable(), at.retry_after, at.stale_connection);
        attempts.push(at);
        // A request lost on a stale pooled connection never reached the server: send it again
        // at once on a fresh one (bounded), without using up a retry. The raw log keeps the
        // lost attempt and the report counts these separately.
        if stale && resends < MAX_STALE_RESENDS {
            resends += 1;
            continue;
        }
        if ok || !retry || k == cfg.retries {
            break;
        }
        let backoff = wait.unwrap_or(cfg.retry_base * 2u32.saturating_pow(k as u32));
        tokio::time::sleep(backoff).await;
        k += 1;
    }
    attempts
}

/// Send one call of a task (all its fan-out copies at once, scheduled at `t0`).
async fn call(
    client: &reqwest::Client,
    cfg: &RunConfig,
    (task, k): (usize, usize),
    (messages, tools): (&[Value], Option<&(Value, Value)>),
    plan: &CallPlan,
    (t0, start): (Instant, Instant),
) -> Vec<RequestRecord> {
    let b = body(cfg, messages, plan.max_tokens, tools);
    let schema = b.as_object().and_then(requested_schema);
    let copies = (0..plan.fan_out.max(1)).map(|_| logical(client, cfg, &b, t0));
    futures_util::future::join_all(copies)
        .await
        .into_iter()
        .enumerate()
        .map(|(branch, attempts)| {
            let answer = attempts.last().filter(|a| a.ok());
            let metrics = answer.and_then(|a| request_metrics(a, cfg.tokenizer.as_ref()));
            let mut tool_calls = answer
                .map(|a| assemble_tool_calls(&a.events))
                .unwrap_or_default();
            if let Some((t, _)) = tools {
                check_tool_calls(&mut tool_calls, t);
            }
            // An answer that calls tools is not the structured answer.
            let structured = match (&schema, answer) {
                (Some(s), Some(a)) if tool_calls.is_empty() => {
                    Some(check_structured(&a.content(), s))
                }
                _ => None,
            };
            RequestRecord {
                tool_calls,
                structured,
                index: task,
                call: k,
                branch,
                max_tokens: plan.max_tokens,
                scheduled_ms: t0.saturating_duration_since(start).as_secs_f64() * 1e3,
                attempts,
                metrics,
            }
        })
        .collect()
}

/// Run task `i` (scheduled at `t0`): each call sends the conversation so far; after it, the
/// first copy's answer and the planned messages are appended, and the client pauses for the
/// think time. The chain stops at the first failed call.
async fn task(
    client: &reqwest::Client,
    cfg: &RunConfig,
    (i, plan): (usize, TaskPlan),
    (t0, start): (Instant, Instant),
) -> (Vec<RequestRecord>, TaskRecord) {
    let mut messages = plan.messages;
    let mut records = Vec::new();
    let (mut completed, mut think) = (0, Duration::ZERO);
    let mut sent_at = t0;
    for (k, c) in plan.calls.iter().enumerate() {
        let offer = (&messages[..], plan.tools.as_ref());
        let recs = call(client, cfg, (i, k), offer, c, (sent_at, start)).await;
        let ok = recs.iter().all(|r| r.metrics.is_some());
        let answer = recs
            .first()
            .and_then(|r| r.attempts.last())
            .map(|a| a.content());
        let calls = recs
            .first()
            .map(|r| r.tool_calls.clone())
            .unwrap_or_default();
        records.extend(recs);
        if !ok {
            break;
        }
        completed += 1;
        if k + 1 < plan.calls.len() {
            match (calls.is_empty(), &c.tool_result) {
                // The model called tools: answer each call with the scripted result.
                (false, Some(result)) => {
                    let tc: Vec<Value> = calls
                        .iter()
                        .map(|t| {
                            json!({"id": t.id, "type": "function",
                                        "function": {"name": t.name, "arguments": t.arguments}})
                        })
                        .collect();
                    let text = answer.filter(|a| !a.trim().is_empty());
                    messages.push(json!({"role": "assistant", "content": text, "tool_calls": tc}));
                    for t in &calls {
                        messages
                            .push(json!({"role": "tool", "tool_call_id": t.id, "content": result}));
                    }
                }
                _ => {
                    messages
                        .push(json!({"role": "assistant", "content": answer.unwrap_or_default()}));
                    messages.extend(c.append.iter().cloned());
                }
            }
            let pause = Duration::from_secs_f64(c.think_ms / 1e3);
            tokio::time::sleep(pause).await;
            think += pause;
            sent_at = Instant::now();
        }
    }
    let end = records
        .iter()
        .filter_map(RequestRecord::end_ms)
        .fold(0.0, f64::max);
    let scheduled_ms = t0.saturating_duration_since(start).as_secs_f64() * 1e3;
    let rec = TaskRecord {
        index: i,
        name: plan.name,
        scheduled_ms,
        elapsed_ms: end - scheduled_ms,
        think_ms: think.as_secs_f64() * 1e3,
        calls_planned: plan.calls.len(),
        calls_completed: completed,
        completed: completed == plan.calls.len(),
    };
    (records, rec)
}

/// Measure prompt-template overhead with one request, so prompts can be sized in tokens.
pub(crate) async fn template_overhead(client: &reqwest::Client, cfg: &RunConfig) -> Option<usize> {
    let words = 16;
    let m = [user(synthetic_prompt(cfg.seed ^ 1, usize::MAX, words))];
    let at = logical(client, cfg, &body(cfg, &m, 1, None), Instant::now()).await;
    let u = at.last()?.usage()?;
    u.prompt_tokens.checked_sub(words)
}

pub(crate) fn check(cfg: &RunConfig) -> Result<()> {
    if (cfg.concurrency == 0 && cfg.rate.is_none()) || cfg.requests == 0 {
        return Err(Error::Config("concurrency and requests must be > 0".into()));
    }
    if !(cfg.burstiness.is_finite() && cfg.burstiness > 0.0) {
        return Err(Error::Config(format!(
            "burstiness must be a positive number, got {}",
            cfg.burstiness
        )));
    }
    if let Some(r) = cfg.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        return Err(Error::Config(format!(
            "rate must be a positive number of requests per second, got {r}"
        )));
    }
    Ok(())
}

pub(crate) type Collected = Arc<Mutex<(Vec<RequestRecord>, Vec<TaskRecord>)>>;

/// Run task `i` at `t0` and file its records.
pub(crate) async fn run_one(
    client: reqwest::Client,
    cfg: Arc<RunConfig>,
    (i, words): (usize, usize),
    (t0, start): (Instant, Instant),
    out: Collected,
) {
    let plan = cfg.workload.plan(cfg.seed, i, words, cfg.output_tokens);
    let (recs, t) = task(&client, &cfg, (i, plan), (t0, start)).await;
    if let Some(p) = &cfg.progress {
        p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let mut o = out.lock().await;
    o.0.extend(recs);
    o.1.push(t);
}

/// The HTTP client of a run. Idle connections are dropped after 4 s, before common server
/// keep-alive timeouts (llama-server / cpp-httplib: 5 s), so a request is never sent on one
/// the server closed.
pub(crate) fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .pool_idle_timeout(Duration::from_secs(4))
        .build()
        .map_err(|e| Error::Http(e.to_string()))
}

/// Warm-up: `cfg.warmup` sequential requests, not recorded ([`Workload::warm_up_plan`]).
pub(crate) async fn warm_up(client: &reqwest::Client, cfg: &RunConfig, words: usize) {
    for k in 0..cfg.warmup {
        let plan = cfg
            .workload
            .warm_up_plan(cfg.seed, k, words, cfg.output_tokens);
        let max_tokens = plan
            .calls
            .first()
            .map_or(cfg.output_tokens, |c| c.max_tokens);
        let b = body(cfg, &plan.messages, max_tokens, None);
        logical(client, cfg, &b, Instant::now()).await;
    }
}

/// Run the benchmark.
pub async fn run(cfg: RunConfig) -> Result<Report> {
    check(&cfg)?;
    let client = http_client()?;
    let provenance = provenance(&client, &cfg).await;
    let overhead = template_overhead(&client, &cfg).await.unwrap_or(0);
    let words = cfg.input_tokens.saturating_sub(overhead).max(1);
    warm_up(&client, &cfg, words).await;
    let cfg = Arc::new(cfg);
    let start = Instant::now();
    let next = Arc::new(Mutex::new(0usize));
    let out: Collected = Arc::default();
    let mut handles = Vec::new();
    if let Some(rate) = cfg.rate {
        // Open loop: seeded gamma inter-arrival times; each task is timed from its arrival.
        let mut x = cfg.seed ^ 0x5DEE_CE66_D1CE_4E5B;
        let mut at = 0f64;
        for i in 0..cfg.requests {
            at += interarrival(&mut x, rate, cfg.burstiness);
            if cfg.duration.is_some_and(|d| at > d.as_secs_f64()) {
                break;
            }
            let t0 = start + Duration::from_secs_f64(at);
            let (client, cfg, out) = (client.clone(), cfg.clone(), out.clone());
            handles.push(tokio::spawn(async move {
                tokio::time::sleep_until(t0.into()).await;
                run_one(client, cfg, (i, words), (t0, start), out).await;
            }));
        }
    }
    let closed_workers = if cfg.rate.is_some() {
        0
    } else {
        cfg.concurrency.min(cfg.requests)
    };
    for _ in 0..closed_workers {
        let (next, client, cfg, out) = (next.clone(), client.clone(), cfg.clone(), out.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let i = {
                    let mut n = next.lock().await;
                    if *n >= cfg.requests || cfg.duration.is_some_and(|d| start.elapsed() >= d) {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                // Closed loop: the task is scheduled when a worker is free.
                let (c, o) = (cfg.clone(), out.clone());
                run_one(client.clone(), c, (i, words), (Instant::now(), start), o).await;
            }
        }));
    }
    for h in handles {
        h.await.map_err(|e| Error::Http(e.to_string()))?;
    }
    let (mut records, mut tasks) = std::mem::take(&mut *out.lock().await);
    records.sort_by_key(|r| (r.index, r.call, r.branch));
    tasks.sort_by_key(|t| t.index);
    let cfg = Arc::try_unwrap(cfg).unwrap_or_else(|c| (*c).clone());
    Ok(summarize(
        cfg,
        provenance,
        (words, overhead),
        records,
        tasks,
    ))
}
