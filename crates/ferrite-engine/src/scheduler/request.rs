//! A request as the scheduler sees it: tokens, how many have KV, and its block hashes.

use std::time::Instant;

use crate::kv_cache::{extend_block_hashes, BlockHash, RequestId};

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Queued, never scheduled.
    Waiting,
    /// Holds KV blocks and is scheduled every step it has work.
    Running,
    /// Lost its blocks to a newer request; will recompute prompt and output.
    Preempted,
}

/// Scheduler-side request state (vLLM V1: one `num_computed_tokens` counter covers chunked
/// prefill, prefix hits and resumption after preemption).
#[derive(Debug, Clone)]
pub struct SchedRequest {
    /// Engine-wide id.
    pub id: RequestId,
    /// When the request entered the engine.
    pub arrival: Instant,
    /// Prompt then verified output tokens.
    pub tokens: Vec<u32>,
    /// Length of the prompt inside `tokens`.
    pub num_prompt_tokens: usize,
    /// Tokens whose KV is written (or scheduled this step).
    pub num_computed_tokens: usize,
    /// Prefix-cache hit at first scheduling (reported as `cached_tokens`).
    pub num_cached_tokens: Option<usize>,
    /// Draft tokens proposed for the next step (never part of `tokens` until verified).
    pub spec: Vec<u32>,
    /// Chained hashes of every full block of `tokens`.
    pub block_hashes: Vec<BlockHash>,
    /// Times this request was preempted.
    pub num_preemptions: u32,
    /// Prefix-cache namespace.
    pub cache_salt: Option<String>,
    /// Life-cycle state.
    pub status: Status,
    /// First time the scheduler gave it tokens.
    pub first_scheduled: Option<Instant>,
}

impl SchedRequest {
    /// A waiting request for `prompt`.
    pub fn new(
        id: RequestId,
        prompt: Vec<u32>,
        cache_salt: Option<String>,
        block_size: usize,
        seed: u64,
    ) -> SchedRequest {
        let mut r = SchedRequest {
            id,
            arrival: Instant::now(),
            num_prompt_tokens: prompt.len(),
            tokens: prompt,
            num_computed_tokens: 0,
            num_cached_tokens: None,
            spec: Vec::new(),
            block_hashes: Vec::new(),
            num_preemptions: 0,
            cache_salt,
            status: Status::Waiting,
            first_scheduled: None,
        };
        r.rehash(block_size, seed);
        r
    }

    /// Prompt plus output tokens.
    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Tokens plus pending drafts.
    pub fn num_tokens_with_spec(&self) -> usize {
        self.tokens.len() + self.spec.len()
    }

    /// Generated tokens.
    pub fn output(&self) -> &[u32] {
        &self.tokens[self.num_prompt_tokens..]
    }

    /// Append a verified output token and extend the block hashes.
    pub fn append(&mut self, token: u32, block_size: usize, seed: u64) {
        self.tokens.push(token);
        self.rehash(block_size, seed);
    }

    fn rehash(&mut self, block_size: usize, seed: u64) {
        extend_block_hashes(
            &mut self.block_hashes,
            &self.tokens,
            block_size,
            seed,
            self.cache_salt.as_deref(),
        );
    }
}
