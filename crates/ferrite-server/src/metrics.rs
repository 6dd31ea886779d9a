//! Prometheus metrics with vLLM's names (prefix `ferrite_`) and buckets
//! (../shared/docs/metrics-and-api.md §6). Latencies are recorded for streaming and
//! non-streaming requests alike.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ferrite_engine::{EngineStats, MaskTimes, MASK_BUCKETS};

/// TTFT buckets (seconds).
pub const TTFT_B: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// Inter-token latency buckets (seconds).
pub const ITL_B: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// Grammar compile buckets (seconds).
pub const COMPILE_B: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Request-phase buckets (seconds).
pub const REQ_B: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// A cumulative histogram.
#[derive(Debug)]
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    state: Mutex<HistState>,
}

#[derive(Debug, Default)]
struct HistState {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Histogram {
        Histogram {
            name,
            help,
            bounds,
            state: Mutex::new(HistState {
                counts: vec![0; bounds.len()],
                ..Default::default()
            }),
        }
    }

    /// Record one observation.
    pub fn observe(&self, v: f64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            s.counts[i] += 1;
        }
        s.sum += v;
        s.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).count
    }

    fn render(&self, out: &mut String, model: &str) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        let mut acc = 0;
        for (b, c) in self.bounds.iter().zip(&s.counts) {
            acc += c;
            let _ = writeln!(
                out,
                "{}_bucket{{model_name=\"{model}\",le=\"{b}\"}} {acc}",
                self.name
            );
        }
        let _ = writeln!(
            out,
            "{}_bucket{{model_name=\"{model}\",le=\"+Inf\"}} {}",
            self.name, s.count
        );
        let _ = writeln!(out, "{}_sum{{model_name=\"{model}\"}} {}", self.name, s.sum);
        let _ = writeln!(
            out,
            "{}_count{{model_name=\"{model}\"}} {}",
            self.name, s.count
        );
    }
}

/// Finish reasons counted by `ferrite_request_success_total`.
pub const FINISH_REASONS: [&str; 3] = ["stop", "length", "abort"];
/// Error types counted by `ferrite_request_errors_total` (the `error.type` values).
pub const ERROR_TYPES: [&str; 8] = [
    "validation",
    "context_length",
    "auth",
    "not_found",
    "payload_too_large",
    "overload",
    "unavailable",
    "internal",
];

/// Every server-side metric.
#[derive(Debug)]
pub struct Metrics {
    /// Served model name (the `model_name` label).
    pub model_name: String,
    /// Arrival → first token.
    pub ttft: Histogram,
    /// Between token-emitting steps.
    pub itl: Histogram,
    /// Per-request decode time / (tokens − 1).
    pub tpot: Histogram,
    /// Arrival → last token.
    pub e2e: Histogram,
    /// Arrival → first scheduled.
    pub queue: Histogram,
    /// First scheduled → first token.
    pub prefill: Histogram,
    /// First token → last token.
    pub decode: Histogram,
    /// First scheduled → last token.
    pub inference: Histogram,
    /// Compiling a request's grammar (structured output, tools).
    pub grammar_compile: Histogram,
    /// Prompt tokens of finished requests.
    pub prompt_tokens: AtomicU64,
    /// Generated tokens.
    pub generation_tokens: AtomicU64,
    success: [AtomicU64; 3],
    errors: [AtomicU64; 8],
}

impl Metrics {
    /// Empty metrics for `model_name`.
    pub fn new(model_name: &str) -> Metrics {
        Metrics {
            model_name: model_name.replace(['"', '\\', '\n'], "_"),
            ttft: Histogram::new(
                "ferrite_time_to_first_token_seconds",
                "Time to first token.",
                TTFT_B,
            ),
            itl: Histogram::new(
                "ferrite_inter_token_latency_seconds",
                "Time between token-emitting engine steps of a request.",
                ITL_B,
            ),
            tpot: Histogram::new(
                "ferrite_request_time_per_output_token_seconds",
                "Decode time per output token after the first.",
                ITL_B,
            ),
            e2e: Histogram::new(
                "ferrite_e2e_request_latency_seconds",
                "Arrival to last token.",
                REQ_B,
            ),
            queue: Histogram::new(
                "ferrite_request_queue_time_seconds",
                "Arrival to first scheduling.",
                REQ_B,
            ),
            prefill: Histogram::new(
                "ferrite_request_prefill_time_seconds",
                "First scheduling to first token.",
                REQ_B,
            ),
            decode: Histogram::new(
                "ferrite_request_decode_time_seconds",
                "First token to last token.",
                REQ_B,
            ),
            inference: Histogram::new(
                "ferrite_request_inference_time_seconds",
                "First scheduling to last token.",
                REQ_B,
            ),
            grammar_compile: Histogram::new(
                "ferrite_structured_output_compile_seconds",
                "Compiling a request's grammar (response_format, structured_outputs, tools).",
                COMPILE_B,
            ),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            success: Default::default(),
            errors: Default::default(),
        }
    }

    /// Count a finished request.
    pub fn finished(&self, reason: &str) {
        if let Some(i) = FINISH_REASONS.iter().position(|&r| r == reason) {
            self.success[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count a failed request.
    pub fn error(&self, error_type: &str) {
        if let Some(i) = ERROR_TYPES.iter().position(|&r| r == error_type) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count of `error_type` errors (tests).
    pub fn errors_of(&self, error_type: &str) -> u64 {
        ERROR_TYPES
            .iter()
            .position(|&r| r == error_type)
            .map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }

    /// Prometheus text exposition.
    pub fn render(&self, engine: Option<(&EngineStats, (usize, usize))>) -> String {
        let m = self.model_name.as_str();
        let mut out = String::new();
        let mut scalar = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{model_name=\"{m}\"}} {v}"
            );
        };
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        if let Some((s, _)) = engine {
            let lz = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed).to_string();
            scalar(
                "ferrite_num_requests_running",
                "gauge",
                "Requests holding KV blocks.",
                lz(&s.num_running),
            );
            scalar(
                "ferrite_num_requests_waiting",
                "gauge",
                "Requests queued, new or preempted.",
                lz(&s.num_waiting),
            );
            scalar(
                "ferrite_kv_cache_usage_perc",
                "gauge",
                "Share of KV blocks referenced by requests (cached free blocks count as free), 0-1.",
                (s.kv_usage_ppm.load(Ordering::Relaxed) as f64 / 1e6).to_string(),
            );
            scalar(
                "ferrite_prefix_cache_queries_total",
                "counter",
                "Prompt tokens looked up in the prefix cache.",
                ld(&s.prefix_queries),
            );
            scalar(
                "ferrite_prefix_cache_hits_total",
                "counter",
                "Prompt tokens found in the prefix cache.",
                ld(&s.prefix_hits),
            );
            scalar(
                "ferrite_num_preemptions_total",
                "counter",
                "Requests preempted (recomputed later).",
                ld(&s.preemptions),
            );
        }
        scalar(
            "ferrite_prompt_tokens_total",
            "counter",
            "Prompt tokens of finished requests.",
            ld(&self.prompt_tokens),
        );
        scalar(
            "ferrite_generation_tokens_total",
            "counter",
            "Generated tokens.",
            ld(&self.generation_tokens),
        );
        if let Some((_, (blocks, bs))) = engine {
            let _ = writeln!(out, "# HELP ferrite_cache_config_info KV cache geometry.\n# TYPE ferrite_cache_config_info gauge\nferrite_cache_config_info{{model_name=\"{m}\",block_size=\"{bs}\",num_blocks=\"{blocks}\"}} 1");
        }
        let _ = writeln!(out, "# HELP ferrite_request_success_total Finished requests by finish reason.\n# TYPE ferrite_request_success_total counter");
        for (r, c) in FINISH_REASONS.iter().zip(&self.success) {
            let _ = writeln!(
                out,
                "ferrite_request_success_total{{model_name=\"{m}\",finished_reason=\"{r}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP ferrite_request_errors_total Failed requests by error type.\n# TYPE ferrite_request_errors_total counter");
        for (r, c) in ERROR_TYPES.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "ferrite_request_errors_total{{model_name=\"{m}\",error_type=\"{r}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        for h in [
            &self.ttft,
            &self.itl,
            &self.tpot,
            &self.e2e,
            &self.queue,
            &self.prefill,
            &self.decode,
            &self.inference,
            &self.grammar_compile,
        ] {
            h.render(&mut out, m);
        }
        if let Some((s, _)) = engine {
            render_spec(&mut out, m, s);
            render_masks(&mut out, m, &s.mask_seconds);
        }
        out
    }
}

/// Token-mask times of constrained requests, from the engine's bucket counts.
fn render_masks(out: &mut String, m: &str, h: &MaskTimes) {
    let name = "ferrite_structured_output_mask_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time to compute one token mask of a constrained request.\n# TYPE {name} histogram"
    );
    let mut acc = 0;
    for (b, c) in MASK_BUCKETS.iter().zip(&h.buckets) {
        acc += c.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{model_name=\"{m}\",le=\"{b}\"}} {acc}");
    }
    let count = h.count.load(Ordering::Relaxed);
    let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(
        out,
        "{name}_bucket{{model_name=\"{m}\",le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "{name}_sum{{model_name=\"{m}\"}} {sum}");
    let _ = writeln!(out, "{name}_count{{model_name=\"{m}\"}} {count}");
    let skipped = "ferrite_structured_output_masks_skipped_total";
    let _ = writeln!(
        out,
        "# HELP {skipped} Greedy tokens a grammar took without a mask (the arg-max was allowed).\n# TYPE {skipped} counter\n{skipped}{{model_name=\"{m}\"}} {}",
        h.skipped.load(Ordering::Relaxed)
    );
    let work = "ferrite_structured_output_seconds_total";
    let _ = writeln!(
        out,
        "# HELP {work} Engine-thread time spent on grammars: masks, token checks, consuming tokens.\n# TYPE {work} counter\n{work}{{model_name=\"{m}\"}} {}",
        h.work_ns.load(Ordering::Relaxed) as f64 / 1e9
    );
}

/// Speculative-decoding counters (vLLM names and semantics): derived rates are left to PromQL.
fn render_spec(out: &mut String, m: &str, s: &EngineStats) {
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    for (name, help, v) in [
        (
            "ferrite_spec_decode_num_drafts_total",
            "Verification rounds that had drafts.",
            ld(&s.spec_num_drafts),
        ),
        (
            "ferrite_spec_decode_num_draft_tokens_total",
            "Draft tokens verified.",
            ld(&s.spec_draft_tokens),
        ),
        (
            "ferrite_spec_decode_num_accepted_tokens_total",
            "Draft tokens accepted.",
            ld(&s.spec_accepted_tokens),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{model_name=\"{m}\"}} {v}"
        );
    }
    let name = "ferrite_spec_decode_num_accepted_tokens_per_pos_total";
    let _ = writeln!(
        out,
        "# HELP {name} Draft tokens accepted, by position in the draft.\n# TYPE {name} counter"
    );
    let used = s
        .spec_accepted_per_pos
        .iter()
        .rposition(|p| ld(p) > 0)
        .map_or(1, |i| i + 1);
    for (i, p) in s.spec_accepted_per_pos.iter().enumerate().take(used) {
        let _ = writeln!(
            out,
            "{name}{{model_name=\"{m}\",position=\"{i}\"}} {}",
            ld(p)
        );
    }
}
