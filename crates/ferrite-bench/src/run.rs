//! `ferrite bench run`: a fixed-concurrency closed loop (concurrency 1 = sequential,
//! interactive) of streamed chat requests with synthetic unique prompts, retries with backoff,
//! and a report of every metric with its formula and the run's provenance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::client::{send, Attempt};
use crate::metrics::{formulas, request_metrics, RequestMetrics, Stats};
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
    /// Measured requests.
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
    /// Prompts from a file (`--prompt-file`, the JSONL format of `bench quality`): request i
    /// sends prompt i mod n instead of a synthetic one, and the input length is whatever the
    /// file's prompts are. `None`: synthetic prompts of `input_tokens`.
    #[serde(skip)]
    pub prompt_file: Option<PromptFile>,
    /// Per-request service-level objectives for the goodput report (`--slo`).
    pub slos: Vec<crate::goodput::Slo>,
    /// Open loop only: gamma-distributed inter-arrival times with this shape (vLLM's
    /// `--burstiness`): 1 is Poisson, below 1 burstier, large values near-constant rate.
    pub burstiness: f64,
    /// Stop starting new measured requests after this long (the run ends when those in flight
    /// finish); `requests` stays the upper bound.
    pub duration: Option<Duration>,
    /// Incremented as each measured request finishes (a progress display reads it).
    #[serde(skip)]
    pub progress: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

/// xorshift64 step: the run's one seeded generator (prompts, arrivals).
fn next_u64(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Uniform in (0, 1).
fn uniform(x: &mut u64) -> f64 {
    ((next_u64(x) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Gamma(shape, 1) by Marsaglia and Tsang (shape < 1 via the boost `U^(1/shape)`).
fn gamma(x: &mut u64, shape: f64) -> f64 {
    if shape < 1.0 {
        return gamma(x, shape + 1.0) * uniform(x).powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        // Standard normal by Box-Muller.
        let z = (-2.0 * uniform(x).ln()).sqrt() * (std::f64::consts::TAU * uniform(x)).cos();
        let v = (1.0 + c * z).powi(3);
        if v > 0.0 && uniform(x).ln() < 0.5 * z * z + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Seconds between arrivals at `rate` per second with gamma shape `burstiness` (mean 1/rate).
fn interarrival(x: &mut u64, rate: f64, burstiness: f64) -> f64 {
    gamma(x, burstiness) / (burstiness * rate)
}

#[cfg(test)]
mod arrival_tests {
    #[test]
    fn interarrival_times_have_the_asked_mean_and_spread() {
        for b in [0.5, 1.0, 4.0] {
            let mut x = 12345u64;
            let n = 40_000;
            let v: Vec<f64> = (0..n)
                .map(|_| super::interarrival(&mut x, 10.0, b))
                .collect();
            let mean = v.iter().sum::<f64>() / n as f64;
            let var = v.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / n as f64;
            // Gamma(b) / (10 b): mean 0.1, squared coefficient of variation 1/b.
            assert!((mean - 0.1).abs() < 0.003, "burstiness {b}: mean {mean}");
            let cv2 = var / (mean * mean);
            assert!(
                (cv2 - 1.0 / b).abs() < 0.06 / b.min(1.0),
                "burstiness {b}: cv² {cv2}"
            );
        }
    }
}

/// A prompt file loaded for `run`: its path (for the report) and the chat messages per prompt.
#[derive(Debug, Clone)]
pub struct PromptFile {
    /// Where it came from.
    pub path: String,
    /// One `messages` array per prompt (a raw `prompt` becomes one user message).
    pub messages: Arc<Vec<Value>>,
}

impl PromptFile {
    /// Read `text` (from `path`) in the `bench quality` format.
    pub fn parse(text: &str, path: &str) -> Result<PromptFile> {
        Ok(Self::from_prompts(
            crate::quality::parse_prompts(text, path)?,
            path,
        ))
    }

    /// Read the prompt file at `path`.
    pub fn read(path: &std::path::Path) -> Result<PromptFile> {
        let prompts = crate::quality::read_prompts(path)?;
        Ok(Self::from_prompts(prompts, &path.display().to_string()))
    }

    fn from_prompts(prompts: Vec<crate::quality::QualityPrompt>, path: &str) -> PromptFile {
        let messages = prompts
            .into_iter()
            .map(|p| match (p.prompt, p.messages) {
                (Some(t), _) => json!([{"role": "user", "content": t}]),
                (None, m) => Value::Array(m.unwrap_or_default()),
            })
            .collect();
        PromptFile {
            path: path.to_string(),
            messages: Arc::new(messages),
        }
    }
}

/// A named workload shape: prompt and output tokens, and the concurrency it is defined at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// Name as given to `--preset`.
    pub name: &'static str,
    /// Prompt tokens per request.
    pub input_tokens: usize,
    /// Output tokens per request.
    pub output_tokens: usize,
    /// Requests in flight.
    pub concurrency: usize,
}

/// Workload presets: the reader's "10K input / 1,500 output" claim shape and Artificial
/// Analysis's four single-stream workloads plus its 10-way parallel one (benchmarking.md §6).
pub const PRESETS: [Preset; 6] = [
    Preset {
        name: "10k-1500",
        input_tokens: 10_000,
        output_tokens: 1_500,
        concurrency: 1,
    },
    Preset {
        name: "aa-100",
        input_tokens: 100,
        output_tokens: 300,
        concurrency: 1,
    },
    Preset {
        name: "aa-1k",
        input_tokens: 1_000,
        output_tokens: 1_000,
        concurrency: 1,
    },
    Preset {
        name: "aa-10k",
        input_tokens: 10_000,
        output_tokens: 1_500,
        concurrency: 1,
    },
    Preset {
        name: "aa-100k",
        input_tokens: 100_000,
        output_tokens: 2_000,
        concurrency: 1,
    },
    Preset {
        name: "aa-parallel",
        input_tokens: 1_000,
        output_tokens: 1_000,
        concurrency: 10,
    },
];

/// The preset called `name`, or an error listing them.
pub fn preset(name: &str) -> Result<Preset> {
    PRESETS
        .iter()
        .copied()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            Error::Config(format!(
                "unknown preset {name:?} (expected one of {})",
                names.join(", ")
            ))
        })
}

#[cfg(test)]
mod preset_tests {
    #[test]
    fn presets_are_the_documented_shapes() {
        let p = super::preset("aa-10k").unwrap();
        assert_eq!(
            (p.input_tokens, p.output_tokens, p.concurrency),
            (10_000, 1_500, 1)
        );
        assert_eq!(super::preset("aa-parallel").unwrap().concurrency, 10);
        let e = super::preset("aa-1m").unwrap_err().to_string();
        assert!(e.contains("expected one of 10k-1500, aa-100"), "{e}");
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

/// One logical request and its attempts.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Index in the run.
    pub index: usize,
    /// Scheduled send time, since the start of the measured phase.
    pub scheduled_ms: f64,
    /// Every HTTP attempt, in order.
    pub attempts: Vec<Attempt>,
    /// Metrics of the successful attempt.
    pub metrics: Option<RequestMetrics>,
}

/// The report (`--json`), schema `ferrite-bench/run/v1`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Schema id.
    pub schema: &'static str,
    /// Who measured what, when, against which server.
    pub provenance: Value,
    /// Settings.
    pub config: RunConfig,
    /// Per-metric statistics.
    pub metrics: Value,
    /// Aggregate throughput.
    pub throughput: Value,
    /// Request counts.
    pub requests: Value,
    /// What the workload actually was.
    pub workload: Value,
    /// Cost from server-reported usage (`null` without prices).
    pub cost: Value,
    /// Formula of every metric.
    pub formulas: Value,
    /// Raw records (`--json` only).
    pub records: Vec<RequestRecord>,
}

/// Words that are one token in common BPE vocabularies (with their leading space), so the
/// prompt length in tokens tracks the word count.
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "it", "that", "was", "for", "on", "are", "with", "as",
    "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "word", "but",
    "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use",
    "your", "how", "said", "an", "each", "she", "which", "do", "their", "time", "if", "will",
    "way", "about", "many", "then", "them", "write", "would", "like", "so", "these", "her", "long",
    "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go",
];

/// A unique prompt of `words` words (different from the first word on, so prefix caches cannot
/// serve it).
pub fn synthetic_prompt(seed: u64, index: usize, words: usize) -> String {
    let mut x = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(words);
    for _ in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(WORDS[(x % WORDS.len() as u64) as usize]);
    }
    out.join(" ")
}

fn body(cfg: &RunConfig, prompt: &str, max_tokens: usize) -> Value {
    body_with(
        cfg,
        json!([{"role": "user", "content": prompt}]),
        max_tokens,
    )
}

fn body_with(cfg: &RunConfig, messages: Value, max_tokens: usize) -> Value {
    json!({
        "model": cfg.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
}

/// One logical request with retries.
async fn logical(
    client: &reqwest::Client,
    cfg: &RunConfig,
    body: &Value,
    t0: Instant,
) -> Vec<Attempt> {
    let url = format!("{}/v1/chat/completions", cfg.url.trim_end_matches('/'));
    let mut attempts = Vec::new();
    for k in 0..=cfg.retries {
        let at = send(client, &url, cfg.api_key.as_deref(), body, t0).await;
        let (ok, retry, wait) = (at.ok(), at.retryable(), at.retry_after);
        attempts.push(at);
        if ok || !retry || k == cfg.retries {
            break;
        }
        let backoff = wait.unwrap_or(cfg.retry_base * 2u32.saturating_pow(k as u32));
        tokio::time::sleep(backoff).await;
    }
    attempts
}

/// Send request `i` (scheduled at `t0`), with retries, and record it.
async fn measure(
    client: &reqwest::Client,
    cfg: &RunConfig,
    words: usize,
    i: usize,
    t0: Instant,
    start: Instant,
) -> RequestRecord {
    let b = match &cfg.prompt_file {
        Some(f) => body_with(
            cfg,
            f.messages[i % f.messages.len()].clone(),
            cfg.output_tokens,
        ),
        None => body(
            cfg,
            &synthetic_prompt(cfg.seed, i, words),
            cfg.output_tokens,
        ),
    };
    let attempts = logical(client, cfg, &b, t0).await;
    let metrics = attempts.last().filter(|a| a.ok()).and_then(request_metrics);
    RequestRecord {
        index: i,
        scheduled_ms: t0.saturating_duration_since(start).as_secs_f64() * 1e3,
        attempts,
        metrics,
    }
}

/// Measure prompt-template overhead with one request, so prompts can be sized in tokens.
async fn template_overhead(client: &reqwest::Client, cfg: &RunConfig) -> Option<usize> {
    let words = 16;
    let b = body(cfg, &synthetic_prompt(cfg.seed ^ 1, usize::MAX, words), 1);
    let at = logical(client, cfg, &b, Instant::now()).await;
    let u = at.last()?.usage()?;
    u.prompt_tokens.checked_sub(words)
}

/// Run the benchmark.
pub async fn run(cfg: RunConfig) -> Result<Report> {
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
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .map_err(|e| Error::Http(e.to_string()))?;
    let provenance = provenance(&client, &cfg).await;
    let overhead = template_overhead(&client, &cfg).await.unwrap_or(0);
    let words = cfg.input_tokens.saturating_sub(overhead).max(1);
    // Warm-up: sequential, not recorded.
    for i in 0..cfg.warmup {
        let b = body(
            &cfg,
            &synthetic_prompt(cfg.seed ^ 2, i, words),
            cfg.output_tokens,
        );
        logical(&client, &cfg, &b, Instant::now()).await;
    }
    let start = Instant::now();
    let next = Arc::new(Mutex::new(0usize));
    let records = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    if let Some(rate) = cfg.rate {
        // Open loop: exponential inter-arrival times from a seeded generator.
        let mut x = cfg.seed ^ 0x5DEE_CE66_D1CE_4E5B;
        let mut at = 0f64;
        for i in 0..cfg.requests {
            at += interarrival(&mut x, rate, cfg.burstiness);
            if cfg.duration.is_some_and(|d| at > d.as_secs_f64()) {
                break;
            }
            let t0 = start + Duration::from_secs_f64(at);
            let (records, client, cfg) = (records.clone(), client.clone(), cfg.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(t0.into()).await;
                let rec = measure(&client, &cfg, words, i, t0, start).await;
                if let Some(p) = &cfg.progress {
                    p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                records.lock().await.push(rec);
            }));
        }
    }
    let closed_workers = if cfg.rate.is_some() {
        0
    } else {
        cfg.concurrency.min(cfg.requests)
    };
    for _ in 0..closed_workers {
        let (next, records, client, cfg) =
            (next.clone(), records.clone(), client.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = {
                    let mut n = next.lock().await;
                    if *n >= cfg.requests || cfg.duration.is_some_and(|d| start.elapsed() >= d) {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                // Closed loop: the request is scheduled when a worker is free.
                let rec = measure(&client, &cfg, words, i, Instant::now(), start).await;
                if let Some(p) = &cfg.progress {
                    p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                records.lock().await.push(rec);
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Error::Http(e.to_string()))?;
    }
    let mut records = Arc::try_unwrap(records)
        .map_err(|_| Error::Http("records still shared".into()))?
        .into_inner();
    records.sort_by_key(|r| r.index);
    Ok(summarize(cfg, provenance, words, overhead, records))
}

fn summarize(
    cfg: RunConfig,
    provenance: Value,
    words: usize,
    overhead: usize,
    records: Vec<RequestRecord>,
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
        .filter_map(|r| {
            r.attempts
                .last()
                .map(|a| r.scheduled_ms + a.end.as_secs_f64() * 1e3)
        })
        .fold(0.0, f64::max);
    let secs = ((t_end - t_start) / 1e3).max(1e-9);
    let n_out: usize = ok.iter().map(|m| m.output_tokens).sum();
    let n_in: usize = ok.iter().filter_map(|m| m.input_tokens).sum();
    let attempts: usize = records.iter().map(|r| r.attempts.len()).sum();
    let completed = ok.len();
    let failed = records.len() - completed;
    let achieved_in = col(&|m| m.input_tokens.map(|x| x as f64));
    let achieved_out = col(&|m| Some(m.output_tokens as f64));
    let sources: Vec<_> = ok.iter().map(|m| m.token_source).collect();
    let source = if sources
        .iter()
        .all(|s| *s == crate::metrics::TokenSource::ServerUsage)
    {
        "server_usage"
    } else {
        "chunk_count"
    };
    let out_mismatch = ok
        .iter()
        .filter(|m| m.output_tokens != cfg.output_tokens)
        .count();
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
            "per_completed_task_usd": Value::Null,
            "prices": p,
        })
    });
    Report {
        schema: "ferrite-bench/run/v1",
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
        requests: json!({
            "completed": completed,
            "failed": failed,
            "attempts": attempts,
            "retries": attempts - records.len(),
            "error_rate": failed as f64 / records.len().max(1) as f64,
            "attempt_success_rate": completed as f64 / attempts.max(1) as f64,
            "errors": records.iter().filter(|r| r.metrics.is_none())
                .filter_map(|r| r.attempts.last().and_then(|a| a.error.clone()))
                .take(5).collect::<Vec<_>>(),
        }),
        workload: json!({
            "kind": match &cfg.prompt_file {
                Some(f) => format!(
                    "prompt file {} ({} prompts{}), ignore_eos",
                    f.path,
                    f.messages.len(),
                    if cfg.requests > f.messages.len() {
                        ", cycled: repeats may be served from prefix caches"
                    } else {
                        ""
                    }
                ),
                None => "synthetic unique prompts (chat), ignore_eos".to_string(),
            },
            "preset": cfg.preset,
            "input_tokens_requested": if cfg.prompt_file.is_some() { None } else { Some(cfg.input_tokens) },
            "input_tokens_achieved": Stats::of(&achieved_in),
            "prompt_words": words,
            "template_overhead_tokens": overhead,
            "output_tokens_requested": cfg.output_tokens,
            "output_tokens_achieved": Stats::of(&achieved_out),
            "output_length_mismatches": out_mismatch,
            "token_source": source,
        }),
        cost: cost.unwrap_or(Value::Null),
        formulas: serde_json::to_value(formulas()).unwrap_or(Value::Null),
        config: cfg,
        records,
    }
}

async fn provenance(client: &reqwest::Client, cfg: &RunConfig) -> Value {
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
