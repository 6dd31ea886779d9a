//! The continuous-batching scheduler (vLLM V1's algorithm, ../shared/docs/serving-design.md §3).
//!
//! There is no prefill or decode phase: each step every request gets tokens so that its
//! `num_computed_tokens` catches up with its token count, within a per-step token budget.
//! Running requests go first (a request that cannot use tokens is skipped, not a barrier), then
//! waiting ones are admitted greedily — but only in steps that preempted nothing, so a request
//! just preempted is not readmitted at once. When blocks run out the newest running request is
//! preempted (recompute, not swap: its freed blocks keep their hashes, so the prefix cache usually
//! makes the recompute cheap). This module touches no tensors and is tested with a fake model.

mod request;

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

pub use request::{SchedRequest, Status};

use crate::kv_cache::{KvCacheManager, RequestId};

/// Scheduler limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most requests in `running`.
    pub max_num_seqs: usize,
    /// Token budget of one forward pass (prefill chunks plus decodes).
    pub max_num_batched_tokens: usize,
    /// Longest sequence (prompt plus output).
    pub max_model_len: usize,
    /// Per-request cap on tokens in one step; 0 = none.
    pub long_prefill_token_threshold: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Seed of the block hashes (deployment-wide).
    pub hash_seed: u64,
}

/// One request's share of a step: positions `start..start + len`, which are its finalized
/// tokens from `start` on followed by `drafts` (speculative tokens to verify).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// Request id.
    pub id: RequestId,
    /// First token position computed this step.
    pub start: usize,
    /// Tokens computed this step, drafts included.
    pub len: usize,
    /// Draft tokens at the end of the chunk.
    pub drafts: Vec<u32>,
}

/// Counters the scheduler keeps for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedulerCounters {
    /// Preemptions so far.
    pub preemptions: u64,
    /// Prompt tokens looked up in the prefix cache (first scheduling only).
    pub prefix_queries: u64,
    /// Of those, tokens found.
    pub prefix_hits: u64,
}

/// Request queues, the KV manager and the scheduling policy.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    kv: KvCacheManager,
    requests: HashMap<RequestId, SchedRequest>,
    waiting: VecDeque<RequestId>,
    running: Vec<RequestId>,
    counters: SchedulerCounters,
}

impl Scheduler {
    /// A scheduler over `kv`.
    pub fn new(cfg: SchedulerConfig, kv: KvCacheManager) -> Scheduler {
        Scheduler {
            cfg,
            kv,
            requests: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            counters: SchedulerCounters::default(),
        }
    }

    /// Limits.
    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// The KV manager (block tables, usage).
    pub fn kv(&self) -> &KvCacheManager {
        &self.kv
    }

    /// Counters for metrics.
    pub fn counters(&self) -> SchedulerCounters {
        self.counters
    }

    /// Requests holding blocks.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Requests queued (new or preempted).
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether any request is queued or running.
    pub fn has_work(&self) -> bool {
        !self.running.is_empty() || !self.waiting.is_empty()
    }

    /// A request by id.
    pub fn request(&self, id: RequestId) -> Option<&SchedRequest> {
        self.requests.get(&id)
    }

    /// Queue a new request for `prompt`.
    pub fn add(&mut self, id: RequestId, prompt: Vec<u32>, cache_salt: Option<String>) {
        let r = SchedRequest::new(
            id,
            prompt,
            cache_salt,
            self.cfg.block_size,
            self.cfg.hash_seed,
        );
        self.requests.insert(id, r);
        self.waiting.push_back(id);
    }

    /// Append a sampled token to a running request.
    pub fn append_token(&mut self, id: RequestId, token: u32) {
        if let Some(r) = self.requests.get_mut(&id) {
            r.append(token, self.cfg.block_size, self.cfg.hash_seed);
        }
    }

    /// Remove a request (finished or aborted) and free its blocks.
    pub fn finish(&mut self, id: RequestId) -> Option<SchedRequest> {
        let r = self.requests.remove(&id)?;
        self.running.retain(|&x| x != id);
        self.waiting.retain(|&x| x != id);
        self.kv.free(id);
        Some(r)
    }

    /// Plan one step: which requests compute which tokens.
    pub fn schedule(&mut self) -> Vec<Scheduled> {
        let cap = match self.cfg.long_prefill_token_threshold {
            0 => usize::MAX,
            n => n,
        };
        let mut budget = self.cfg.max_num_batched_tokens;
        let mut out: Vec<Scheduled> = Vec::new();
        let mut preempted_any = false;

        // Phase A: running requests, in order.
        let mut i = 0;
        while i < self.running.len() {
            let id = self.running[i];
            let r = &self.requests[&id];
            let n = (r.num_tokens_with_spec() - r.num_computed_tokens)
                .min(cap)
                .min(budget)
                .min(self.cfg.max_model_len.saturating_sub(r.num_computed_tokens));
            if n == 0 {
                i += 1;
                continue;
            }
            let mut allocated = false;
            loop {
                let r = &self.requests[&id];
                if self.kv.allocate_slots(
                    id,
                    r.num_computed_tokens,
                    n,
                    &[],
                    &r.block_hashes,
                    r.num_tokens(),
                    false,
                ) {
                    allocated = true;
                    break;
                }
                // Out of blocks: preempt the newest running request (possibly this one).
                let Some(victim) = self.running.pop() else {
                    break;
                };
                if let Some(pos) = out.iter().position(|s| s.id == victim) {
                    budget += out[pos].len;
                    out.remove(pos);
                }
                self.preempt(victim);
                preempted_any = true;
                if victim == id {
                    break;
                }
            }
            if !allocated {
                break;
            }
            let r = self.requests.get_mut(&id).expect("running request exists");
            // Drafts that fit this step's share; the rest are dropped (proposed again later).
            let n_drafts = (r.num_computed_tokens + n).saturating_sub(r.num_tokens());
            let mut drafts = std::mem::take(&mut r.spec);
            drafts.truncate(n_drafts);
            out.push(Scheduled {
                id,
                start: r.num_computed_tokens,
                len: n,
                drafts,
            });
            budget -= n;
            i += 1;
        }

        // Phase B: admit waiting requests, unless this step preempted something.
        if !preempted_any {
            while budget > 0 && self.running.len() < self.cfg.max_num_seqs {
                let Some(&id) = self.waiting.front() else {
                    break;
                };
                let r = &self.requests[&id];
                let (hit, n_hit) = if r.num_computed_tokens == 0 {
                    self.kv.get_computed_blocks(&r.block_hashes, r.num_tokens())
                } else {
                    (Vec::new(), 0)
                };
                let n = (r.num_tokens() - n_hit).min(cap).min(budget);
                if !self.kv.allocate_slots(
                    id,
                    n_hit,
                    n,
                    &hit,
                    &r.block_hashes,
                    r.num_tokens(),
                    !out.is_empty(),
                ) {
                    break; // head-of-line: keep FCFS order
                }
                self.waiting.pop_front();
                self.running.push(id);
                let first = r.num_preemptions == 0 && r.num_cached_tokens.is_none();
                let num_tokens = r.num_tokens() as u64;
                let r = self.requests.get_mut(&id).expect("queued request exists");
                r.status = Status::Running;
                r.num_computed_tokens = n_hit;
                r.num_cached_tokens.get_or_insert(n_hit);
                r.first_scheduled.get_or_insert_with(Instant::now);
                if first {
                    self.counters.prefix_queries += num_tokens;
                    self.counters.prefix_hits += n_hit as u64;
                }
                out.push(Scheduled {
                    id,
                    start: n_hit,
                    len: n,
                    drafts: Vec::new(),
                });
                budget -= n;
            }
        }
        debug_assert!(out.iter().map(|s| s.len).sum::<usize>() <= self.cfg.max_num_batched_tokens);
        debug_assert!(self.running.len() <= self.cfg.max_num_seqs);
        // Optimistic advance: the forward pass computes these tokens.
        for s in &out {
            if let Some(r) = self.requests.get_mut(&s.id) {
                r.num_computed_tokens += s.len;
                debug_assert!(r.num_computed_tokens <= r.num_tokens() + s.drafts.len());
            }
        }
        out
    }

    /// Set the drafts to verify in the next step (a running request that has computed all its
    /// tokens). Drafts never enter the prefix cache: blocks are registered up to the finalized
    /// tokens only.
    pub fn set_spec(&mut self, id: RequestId, drafts: Vec<u32>) {
        if let Some(r) = self.requests.get_mut(&id) {
            r.spec = drafts;
        }
    }

    /// After verification: `num_rejected` scheduled drafts did not become tokens, so their
    /// positions are not computed (their KV slots are overwritten later).
    pub fn reject_drafts(&mut self, id: RequestId, num_rejected: usize) {
        if let Some(r) = self.requests.get_mut(&id) {
            r.num_computed_tokens = r.num_computed_tokens.saturating_sub(num_rejected);
            debug_assert!(r.num_computed_tokens <= r.num_tokens());
        }
    }

    fn preempt(&mut self, id: RequestId) {
        self.kv.free(id);
        if let Some(r) = self.requests.get_mut(&id) {
            r.status = Status::Preempted;
            r.spec.clear();
            r.num_computed_tokens = 0;
            r.num_preemptions += 1;
        }
        self.counters.preemptions += 1;
        self.waiting.push_front(id);
    }

    /// Check the KV invariants (tests).
    pub fn check(&self) -> Result<(), String> {
        self.kv.check()?;
        for id in &self.waiting {
            if !self.kv.blocks(*id).is_empty() {
                return Err(format!("waiting request {id} holds blocks"));
            }
        }
        Ok(())
    }
}
