//! What the engine takes and gives: requests, their events, finish information, the sink events
//! go to, and the live numbers the metrics endpoint reads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::grammar::Constraint;
use crate::sampling::SamplingParams;
use crate::spec::ngram::NgramConfig;
use crate::FinishReason;

/// A request as the engine receives it (already tokenized and validated by the front end).
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Sampling parameters.
    pub sampling: SamplingParams,
    /// Most tokens to generate (clamped to the context).
    pub max_tokens: usize,
    /// Stop strings (not part of the output).
    pub stop: Vec<String>,
    /// Ignore end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// Suppress EOS and stop strings until this many tokens exist.
    pub min_tokens: usize,
    /// `Some(n)`: report the chosen token's log-probability and the `n` most likely.
    pub logprobs: Option<usize>,
    /// Prefix-cache namespace.
    pub cache_salt: Option<String>,
    /// When the front end received it (TTFT and e2e start here).
    pub arrival: Instant,
    /// Speculative decoding: `None` follows the engine default, `Some(None)` turns it off,
    /// `Some(Some(cfg))` uses `cfg`.
    pub speculative: Option<Option<NgramConfig>>,
    /// A grammar the output must match (compiled by the front end, one per choice).
    pub constraint: Option<Constraint>,
}

/// Log-probabilities of a generated token under the model's raw distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// Of the chosen token.
    pub logprob: f32,
    /// The most likely tokens, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// Output of one request.
#[derive(Debug, Clone)]
pub enum RequestEvent {
    /// A generated token and the text it completes (possibly empty while text is held back).
    Token {
        /// Token id.
        token: u32,
        /// New text.
        text: String,
        /// Log-probabilities, when asked for.
        logprob: Option<TokenLogprob>,
    },
    /// The request ended; `text` is what was still held back.
    Finished(FinishInfo),
    /// The request failed.
    Error(String),
}

/// How a request ended, with its counts and phase timings.
#[derive(Debug, Clone)]
pub struct FinishInfo {
    /// Why it ended.
    pub reason: FinishReason,
    /// Final text that was held back (stop-string or UTF-8 look-ahead).
    pub text: String,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    /// Arrival → first scheduled.
    pub queue_time: Duration,
    /// First scheduled → first token.
    pub prefill_time: Duration,
    /// First token → last token.
    pub decode_time: Duration,
    /// Draft tokens verified for this request (speculative decoding).
    pub spec_draft_tokens: usize,
    /// Of those, accepted (rejected drafts are never billed or emitted).
    pub spec_accepted_tokens: usize,
}

/// Where a request's events go. `send` returns false when the receiver is gone.
pub trait OutputSink: Send {
    /// Deliver an event.
    fn send(&mut self, ev: RequestEvent) -> bool;
    /// Whether the receiver has gone away (the request is then aborted).
    fn is_closed(&self) -> bool;
}

/// Live engine numbers, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Requests holding KV blocks.
    pub num_running: AtomicUsize,
    /// Requests queued.
    pub num_waiting: AtomicUsize,
    /// KV usage × 1e6 (0..1e6).
    pub kv_usage_ppm: AtomicU64,
    /// Preemptions.
    pub preemptions: AtomicU64,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_queries: AtomicU64,
    /// Prompt tokens found there.
    pub prefix_hits: AtomicU64,
    /// Tokens computed by forward passes.
    pub forward_tokens: AtomicU64,
    /// Forward passes.
    pub steps: AtomicU64,
    /// Verification rounds that had drafts.
    pub spec_num_drafts: AtomicU64,
    /// Draft tokens verified.
    pub spec_draft_tokens: AtomicU64,
    /// Draft tokens accepted.
    pub spec_accepted_tokens: AtomicU64,
    /// Accepted drafts by position in the draft (0 = first).
    pub spec_accepted_per_pos: [AtomicU64; MAX_SPEC_TOKENS],
    /// Time to compute each token mask of a constrained request.
    pub mask_seconds: MaskTimes,
}

/// Upper bounds (seconds) of the mask-time histogram's buckets.
pub const MASK_BUCKETS: [f64; 12] = [
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1,
];

/// A histogram of mask times, written by the engine thread and read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct MaskTimes {
    /// Observations per bucket of [`MASK_BUCKETS`] (not cumulative; slower ones only count).
    pub buckets: [AtomicU64; MASK_BUCKETS.len()],
    /// Observations.
    pub count: AtomicU64,
    /// Their sum, in nanoseconds.
    pub sum_ns: AtomicU64,
    /// Greedy tokens the grammar took without a mask (the arg-max was allowed).
    pub skipped: AtomicU64,
    /// All the engine thread's grammar work, in nanoseconds: masks (computed and applied),
    /// single-token checks and consuming tokens.
    pub work_ns: AtomicU64,
}

impl MaskTimes {
    /// Record grammar work of any kind.
    pub fn work(&self, d: Duration) {
        self.work_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Record one mask computation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = MASK_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Most draft tokens per verification.
pub const MAX_SPEC_TOKENS: usize = 32;
