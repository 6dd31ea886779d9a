//! Metrics from raw request logs, each with its formula (../shared/docs/benchmarking.md §2–3).
//! Times are measured from the request's scheduled send time.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::client::Attempt;

/// Summary statistics of one metric. Percentiles interpolate linearly between order
/// statistics (numpy's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Samples.
    pub n: usize,
}

impl Stats {
    /// Statistics of `xs` (all zero when empty).
    pub fn of(xs: &[f64]) -> Stats {
        if xs.is_empty() {
            return Stats::default();
        }
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let pos = p * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        Stats {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: q(0.5),
            p90: q(0.9),
            p95: q(0.95),
            p99: q(0.99),
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        }
    }
}

/// Where output token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `usage.completion_tokens` of the response.
    ServerUsage,
    /// Usage on every chunk (vLLM's `continuous_usage_stats`): the total from the last one, and
    /// the first text chunk's own count for output speed.
    PerChunkUsage,
    /// No usage: the answer and reasoning text counted with a client tokenizer (`--tokenizer`).
    ClientTokenizer,
    /// No usage and no tokenizer: one token per text-carrying event.
    ChunkCount,
}

/// Counts the tokens of a text (a client-side tokenizer, for servers that report no usage).
#[derive(Clone)]
pub struct TokenCounter {
    /// What it is (a tokenizer.json or GGUF path), for the report.
    pub name: String,
    count: std::sync::Arc<dyn Fn(&str) -> usize + Send + Sync>,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenCounter({})", self.name)
    }
}

impl TokenCounter {
    /// A counter called `name` that counts with `count`.
    pub fn new(
        name: impl Into<String>,
        count: impl Fn(&str) -> usize + Send + Sync + 'static,
    ) -> Self {
        TokenCounter {
            name: name.into(),
            count: std::sync::Arc::new(count),
        }
    }

    /// Tokens of `text`.
    pub fn count(&self, text: &str) -> usize {
        (self.count)(text)
    }
}

/// Per-request values derived from a successful attempt.
#[derive(Debug, Clone, Serialize)]
pub struct RequestMetrics {
    /// Time to first token: first event with answer, reasoning or tool-call text.
    pub ttft_ms: f64,
    /// Time to first output (answer) token.
    pub ttfo_ms: Option<f64>,
    /// Scheduled send → end of stream.
    pub e2e_ms: f64,
    /// `(E2E − TTFT) / (N_out − 1)`, when N_out > 1.
    pub tpot_ms: Option<f64>,
    /// Gaps between successive text-carrying events.
    pub itl_ms: Vec<f64>,
    /// Per-request inter-token latency: `(t_last_text − t_first_text) / (N_out − 1)` (guidellm's
    /// ITL; the reciprocal of output speed when the first chunk is one token).
    pub itl_request_ms: Option<f64>,
    /// `(N_out − n_1) / (t_K − t_1)` (Artificial Analysis "output speed"); n_1 is the first
    /// chunk's token count with per-chunk usage, else 1.
    pub output_speed_tok_s: Option<f64>,
    /// `N_in / TTFT`.
    pub prefill_tok_s: Option<f64>,
    /// Output tokens.
    pub output_tokens: usize,
    /// Prompt tokens (server usage), when reported.
    pub input_tokens: Option<usize>,
    /// Cached prompt tokens (server usage), when reported.
    pub cached_tokens: Option<usize>,
    /// Speculative decoding (server usage extension): draft tokens verified and accepted.
    pub spec: Option<(usize, usize)>,
    /// Token count source.
    pub token_source: TokenSource,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Metrics of one successful attempt; `None` if no text arrived. Output tokens come from the
/// server's usage, else from `tokenizer` over the generated text, else one per text event.
pub fn request_metrics(at: &Attempt, tokenizer: Option<&TokenCounter>) -> Option<RequestMetrics> {
    let text: Vec<_> = at.events.iter().filter(|e| e.has_text()).collect();
    let first = text.first()?;
    let last = text.last()?;
    let usage = at.usage();
    // Per-chunk usage: the first text event itself says how many tokens it carried.
    let first_chunk = first.usage.map(|u| u.completion_tokens).filter(|&n| n > 0);
    let (n_out, source) = match (usage, tokenizer) {
        (Some(u), _) if u.completion_tokens > 0 => match first_chunk {
            Some(_) => (u.completion_tokens, TokenSource::PerChunkUsage),
            None => (u.completion_tokens, TokenSource::ServerUsage),
        },
        (_, Some(t)) => {
            let all: String = text
                .iter()
                .flat_map(|e| [e.reasoning.as_str(), e.content.as_str()])
                .collect();
            (t.count(&all), TokenSource::ClientTokenizer)
        }
        _ => (text.len(), TokenSource::ChunkCount),
    };
    let n_first = first_chunk.unwrap_or(1).min(n_out);
    let ttft = ms(first.t);
    let e2e = ms(at.end);
    let span = ms(last.t) - ttft;
    Some(RequestMetrics {
        ttft_ms: ttft,
        ttfo_ms: at
            .events
            .iter()
            .find(|e| !e.content.is_empty())
            .map(|e| ms(e.t)),
        e2e_ms: e2e,
        tpot_ms: (n_out > 1).then(|| (e2e - ttft) / (n_out - 1) as f64),
        itl_ms: text.windows(2).map(|w| ms(w[1].t) - ms(w[0].t)).collect(),
        itl_request_ms: (n_out > 1).then(|| span / (n_out - 1) as f64),
        output_speed_tok_s: (n_out > n_first && span > 0.0)
            .then(|| (n_out - n_first) as f64 / (span / 1e3)),
        prefill_tok_s: usage
            .filter(|u| u.prompt_tokens > 0 && ttft > 0.0)
            .map(|u| u.prompt_tokens as f64 / (ttft / 1e3)),
        output_tokens: n_out,
        input_tokens: usage.map(|u| u.prompt_tokens).filter(|&p| p > 0),
        cached_tokens: usage.and_then(|u| u.cached_tokens),
        spec: usage.and_then(|u| u.spec),
        token_source: source,
    })
}

/// The formula behind each reported metric (printed next to the figures and kept in the JSON).
pub fn formulas() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("ttft_ms", "t(first event with answer, reasoning or tool-call text) − t(scheduled send)"),
        ("ttfo_ms", "t(first event with answer text) − t(scheduled send)"),
        ("e2e_ms", "t(end of stream: [DONE] or close) − t(scheduled send)"),
        ("tpot_ms", "(E2E − TTFT) / (N_out − 1), requests with N_out > 1 (vLLM sense)"),
        ("itl_ms", "gaps between successive text-carrying events, pooled over requests (per chunk)"),
        ("itl_request_ms", "(t_last_text − t_first_text) / (N_out − 1), one value per request (guidellm's ITL)"),
        ("output_speed_tok_s", "(N_out − n_1) / (t_last_text − t_first_text), per request (Artificial Analysis output speed; n_1 = the first chunk's tokens with per-chunk usage, else 1)"),
        ("prefill_tok_s", "N_in (server usage) / TTFT"),
        ("throughput.output_tok_s", "Σ N_out / T, T = last end − first scheduled send of measured requests"),
        ("throughput.total_tok_s", "Σ (N_in + N_out) / T"),
        ("throughput.requests_per_s", "completed / T"),
        ("throughput.steady_state.output_tok_s", "output tokens whose text events fall in [start of the c-th request, start of the last] / that window (c = concurrency; 1 for an open loop); a request's N_out is spread evenly over its text events"),
        ("throughput.steady_state.requests_per_s", "requests ending inside that window / window"),
        ("throughput.goodput", "requests meeting every --slo (failed ones do not) / all; per second over T"),
        ("error_rate", "failed logical requests / all logical requests"),
        ("cost.total_usd", "Σ over attempts with usage: (prompt − cached)·input + cached·cached_input + completion·output (per Mtok) + per_request"),
        ("cost.per_completed_request_usd", "cost.total_usd / completed requests (failed attempts that reported usage included)"),
        ("cost.per_completed_task_usd", "cost.total_usd / completed tasks (every call and failed attempt of every task included)"),
        ("tasks.wall_clock_ms", "end of the task's last call − the task's scheduled start, completed tasks (think time and client-side waits included)"),
        ("speculative.acceptance_rate", "Σ accepted / Σ drafted draft tokens over completed calls (server usage.speculative)"),
        ("speculative.accepted_per_output_token", "Σ accepted / Σ N_out: the share of output tokens that came from accepted drafts"),
        ("tasks.think_ms", "client-side pauses between calls inside the wall-clock (tool execution, user think time)"),
        ("tool_calls.valid_rate", "tool calls whose name is an offered tool and whose arguments parse and validate against its parameters / all calls of completed answers"),
        ("structured.valid_rate", "answers that parse as JSON and validate against the requested response_format schema / answers checked (answers that call tools are not checked)"),
    ])
}
