//! The engine step: schedule → one forward pass over every scheduled token of every request →
//! sample → update requests and emit their output. One `EngineCore` owns the model and the KV
//! cache; it runs on one thread ([`crate::engine_loop`]) and is tested synchronously.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use ferrite_models::{ForwardBatch, Model};
use ferrite_tokenizer::{DecodeStream, Tokenizer};

use crate::grammar::Constraint;
use crate::kv_cache::{KvCacheManager, PagedKvStore, RequestId};
use crate::sampling::{Sampler, TokenHistory};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::spec::ngram::NgramConfig;
use crate::spec::{Acceptance, DraftModel, StepCosts};
use crate::stop::StopMatcher;
use crate::{Error, Result};

mod emit;
mod request;
mod speculate;

pub use request::{
    EngineStats, FinishInfo, MaskTimes, NewRequest, OutputSink, RequestEvent, TokenLogprob,
    MASK_BUCKETS, MAX_SPEC_TOKENS,
};

/// Engine sizing, validated by [`EngineCore::new`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most requests running at once.
    pub max_num_seqs: usize,
    /// Token budget per forward pass.
    pub max_num_batched_tokens: usize,
    /// Longest sequence; `None` takes the model's training context, capped to the tokens the
    /// KV cache holds.
    pub max_model_len: Option<usize>,
    /// Bytes of host memory for KV blocks.
    pub kv_cache_bytes: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Seed of the prefix-cache block hashes (must match across replicas and the router).
    pub hash_seed: u64,
    /// Per-request cap on tokens per step (0 = none).
    pub long_prefill_token_threshold: usize,
    /// Default speculative decoding for requests that do not choose (`None` = off).
    pub speculative: Option<NgramConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_num_seqs: 32,
            max_num_batched_tokens: 512,
            max_model_len: None,
            kv_cache_bytes: 512 << 20,
            block_size: 16,
            hash_seed: 0,
            long_prefill_token_threshold: 0,
            speculative: None,
        }
    }
}

struct ReqState {
    sampler: Sampler,
    history: TokenHistory,
    detok: DecodeStream,
    stops: StopMatcher,
    max_tokens: usize,
    min_tokens: usize,
    ignore_eos: bool,
    logprobs: Option<usize>,
    stopped_by_string: bool,
    spec: Option<NgramConfig>,
    spec_drafted: usize,
    spec_accepted: usize,
    /// Running estimate of the chance that this request's next draft token is accepted.
    spec_acceptance: Acceptance,
    /// The drafter's last proposal, including tokens beyond those sent for verification: the
    /// tokens the step emits are compared with all of it, so an n-gram lookup that was not
    /// worth verifying still teaches the acceptance estimate.
    spec_proposal: Vec<u32>,
    /// Steps since this request last verified drafts.
    spec_idle: u32,
    arrival: Instant,
    first_token: Option<Instant>,
    /// The grammar the output must match, if any.
    constraint: Option<Constraint>,
    sink: Box<dyn OutputSink>,
}

/// Model, KV cache, scheduler and per-request sampling state.
pub struct EngineCore {
    model: Box<dyn Model>,
    tokenizer: Arc<Tokenizer>,
    kv: PagedKvStore,
    sched: Scheduler,
    states: HashMap<RequestId, ReqState>,
    stats: Arc<EngineStats>,
    logits: Vec<f32>,
    num_blocks: usize,
    next_id: RequestId,
    speculative: Option<NgramConfig>,
    /// When set, requests with speculation on draft with this model instead of n-gram lookup
    /// (their `k` applies; `min_n`/`max_n` do not).
    draft: Option<DraftModel>,
    /// Measured forward-pass time by number of rows: what a draft row costs here.
    step_costs: StepCosts,
    /// Acceptance of the draft model's tokens across requests: how well this pairing agrees
    /// hardly depends on the prompt, so a new request starts from it.
    draft_acceptance: Acceptance,
}

impl std::fmt::Debug for EngineCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCore")
            .field("scheduler", &self.sched)
            .finish_non_exhaustive()
    }
}

impl EngineCore {
    /// Size the KV pool from `cfg` and check that one full-length request fits.
    pub fn new(
        model: Box<dyn Model>,
        tokenizer: Arc<Tokenizer>,
        cfg: &EngineConfig,
    ) -> Result<EngineCore> {
        let c = model.config().clone();
        let bad = |m: String| Err(Error::Config(m));
        if cfg.block_size == 0 || cfg.max_num_seqs == 0 || cfg.max_num_batched_tokens == 0 {
            return bad("block size, max_num_seqs and max_num_batched_tokens must be > 0".into());
        }
        if let Some(sc) = &cfg.speculative {
            sc.validate()
                .map_err(|m| Error::Config(format!("speculative decoding: {m}")))?;
        }
        let kv_format = model.cpu().kv_format;
        let row_bytes = kv_format
            .row_bytes(c.head_dim)
            .map_err(|e| Error::Config(format!("{kv_format} KV cache: {e}")))?;
        let block_bytes = PagedKvStore::block_bytes(c.kv_shape(), row_bytes, cfg.block_size);
        let num_blocks = cfg.kv_cache_bytes / block_bytes;
        let usable_tokens = num_blocks.saturating_sub(1) * cfg.block_size;
        // Unset, the longest sequence is the model's context, capped to what the KV cache
        // holds (a model with a long context still serves with the default cache; the cap is
        // logged). Set, it must fit, or start-up fails saying what to change.
        let max_len = cfg.max_model_len.unwrap_or_else(|| {
            let len = c.context_length.min(usable_tokens);
            if len < c.context_length {
                tracing::warn!(
                    context = c.context_length,
                    max_model_len = len,
                    "the KV cache holds fewer tokens than the model's context: max model length \
                     capped (raise --kv-cache-mib or set --max-model-len to choose)"
                );
            }
            len
        });
        if max_len < 2 || max_len > c.context_length {
            return bad(format!(
                "max model length {max_len} must be between 2 and the model's context {}",
                c.context_length
            ));
        }
        if usable_tokens < max_len {
            return bad(format!(
                "a KV cache of {} MiB holds {usable_tokens} tokens ({} blocks of {} tokens, {} KiB each), less than one request of the max model length {max_len}; raise --kv-cache-mib to at least {} or lower --max-model-len",
                cfg.kv_cache_bytes >> 20,
                num_blocks.saturating_sub(1),
                cfg.block_size,
                block_bytes >> 10,
                ((max_len.div_ceil(cfg.block_size) + 1) * block_bytes).div_ceil(1 << 20),
            ));
        }
        tracing::info!(
            num_blocks,
            kv_cache_type = kv_format.name(),
            kv_tokens = usable_tokens,
            max_model_len = max_len,
            max_concurrency_at_max_len = usable_tokens as f64 / max_len as f64,
            "KV cache allocated"
        );
        let kv = PagedKvStore::new(kv_format, c.kv_shape(), cfg.block_size, num_blocks, max_len)?;
        // 1% of blocks stay free when admitting, so running requests can grow.
        let watermark = num_blocks / 100;
        let sched = Scheduler::new(
            SchedulerConfig {
                max_num_seqs: cfg.max_num_seqs,
                max_num_batched_tokens: cfg.max_num_batched_tokens,
                max_model_len: max_len,
                long_prefill_token_threshold: cfg.long_prefill_token_threshold,
                block_size: cfg.block_size,
                hash_seed: cfg.hash_seed,
            },
            KvCacheManager::new(num_blocks, cfg.block_size, watermark),
        );
        Ok(EngineCore {
            model,
            tokenizer,
            kv,
            sched,
            states: HashMap::new(),
            stats: Arc::new(EngineStats::default()),
            logits: Vec::new(),
            num_blocks,
            next_id: 1,
            speculative: cfg.speculative,
            draft: None,
            step_costs: StepCosts::default(),
            draft_acceptance: Acceptance::default(),
        })
    }

    /// Draft with `model` (it must share the target's vocabulary: same size here, same token
    /// texts checked by the caller, which has both tokenizers).
    pub fn set_draft_model(&mut self, model: Box<dyn Model>) -> Result<()> {
        let (dv, tv) = (model.config().vocab_size, self.model.config().vocab_size);
        if dv != tv {
            return Err(Error::Config(format!(
                "draft model vocabulary has {dv} tokens, the target's {tv}: a draft must share the target's vocabulary"
            )));
        }
        self.draft = Some(DraftModel::new(model));
        Ok(())
    }

    /// Longest sequence (prompt plus output).
    pub fn max_model_len(&self) -> usize {
        self.sched.config().max_model_len
    }

    /// Blocks in the pool (including the null block) and tokens per block.
    pub fn kv_geometry(&self) -> (usize, usize) {
        (self.num_blocks, self.sched.config().block_size)
    }

    /// Shared live numbers.
    pub fn stats(&self) -> Arc<EngineStats> {
        self.stats.clone()
    }

    /// The scheduler (tests, invariants).
    pub fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// Whether a step would do anything.
    pub fn has_work(&self) -> bool {
        self.sched.has_work()
    }

    /// Queue a request; errors (bad parameters, prompt too long) go to its sink too.
    pub fn add_request(&mut self, req: NewRequest, sink: Box<dyn OutputSink>) -> RequestId {
        let id = self.next_id;
        self.add_request_with_id(id, req, sink);
        id
    }

    /// [`add_request`](Self::add_request) with an id chosen by the caller (unique, ≥ any id
    /// this core handed out).
    pub fn add_request_with_id(
        &mut self,
        id: RequestId,
        req: NewRequest,
        mut sink: Box<dyn OutputSink>,
    ) {
        self.next_id = self.next_id.max(id + 1);
        match self.prepare(&req) {
            Ok((sampler, max_tokens, spec)) => {
                self.states.insert(
                    id,
                    ReqState {
                        sampler,
                        history: TokenHistory::new(&req.prompt),
                        detok: self.tokenizer.decode_stream(true),
                        stops: StopMatcher::new(&req.stop),
                        max_tokens,
                        min_tokens: req.min_tokens,
                        ignore_eos: req.ignore_eos,
                        logprobs: req.logprobs,
                        stopped_by_string: false,
                        spec,
                        spec_drafted: 0,
                        spec_accepted: 0,
                        spec_acceptance: match self.draft {
                            Some(_) => self.draft_acceptance,
                            None => Acceptance::default(),
                        },
                        spec_proposal: Vec::new(),
                        spec_idle: 0,
                        arrival: req.arrival,
                        first_token: None,
                        constraint: req.constraint,
                        sink,
                    },
                );
                self.sched.add(id, req.prompt, req.cache_salt);
            }
            Err(e) => {
                sink.send(RequestEvent::Error(e.to_string()));
            }
        }
        self.publish();
    }

    fn prepare(&self, req: &NewRequest) -> Result<(Sampler, usize, Option<NgramConfig>)> {
        let max_len = self.max_model_len();
        if req.prompt.is_empty() {
            return Err(Error::InvalidParam {
                field: "prompt",
                message: "the prompt is empty".into(),
            });
        }
        if req.prompt.len() >= max_len {
            return Err(Error::ContextOverflow {
                prompt_tokens: req.prompt.len(),
                context: max_len,
            });
        }
        let vocab = self.model.config().vocab_size;
        if let Some(&t) = req.prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::InvalidParam {
                field: "prompt",
                message: format!("token id {t} is outside the vocabulary of {vocab}"),
            });
        }
        let sampler = Sampler::new(req.sampling.clone())?;
        let spec = req.speculative.unwrap_or(self.speculative);
        if let Some(c) = &spec {
            c.validate().map_err(|m| Error::InvalidParam {
                field: "speculative",
                message: format!("speculative decoding: {m}"),
            })?;
            if c.k > MAX_SPEC_TOKENS {
                return Err(Error::InvalidParam {
                    field: "speculative",
                    message: format!("speculative decoding: k must be ≤ {MAX_SPEC_TOKENS}"),
                });
            }
        }
        Ok((
            sampler,
            req.max_tokens.min(max_len - req.prompt.len()),
            spec,
        ))
    }

    /// Abort a request: its blocks are freed now and it gets no more events.
    pub fn abort(&mut self, id: RequestId) {
        self.states.remove(&id);
        self.sched.finish(id);
        self.publish();
    }

    /// Run one step. Returns the number of tokens computed (0 when idle).
    pub fn step(&mut self) -> usize {
        // Requests whose clients left are aborted before any work is spent on them.
        let gone: Vec<RequestId> = self
            .states
            .iter()
            .filter(|(_, s)| s.sink.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.abort(id);
        }
        let plan = self.sched.schedule();
        if plan.is_empty() {
            self.publish();
            return 0;
        }
        let mut tokens = Vec::new();
        let mut positions = Vec::new();
        let mut slots = Vec::new();
        let mut groups = Vec::new();
        let mut rows = Vec::new();
        // (request, its first logits row, its drafts)
        let mut samplers: Vec<(RequestId, usize, &[u32])> = Vec::new();
        for (slot, s) in plan.iter().enumerate() {
            let Some(r) = self.sched.request(s.id) else {
                continue;
            };
            let d = s.drafts.len();
            let finalized = s.len - d;
            tokens.extend_from_slice(&r.tokens[s.start..s.start + finalized]);
            tokens.extend_from_slice(&s.drafts);
            positions.extend(s.start..s.start + s.len);
            slots.extend(std::iter::repeat_n(slot, s.len));
            groups.extend(
                (s.start..s.start + finalized).map(|p| kernel_group(p, r.num_prompt_tokens)),
            );
            groups.extend(std::iter::repeat_n((0, 1), d));
            // Only a request whose every finalized token now has KV produces tokens (no partial
            // prefill outputs): one from its last token, one more per draft.
            if s.start + finalized == r.num_tokens() {
                samplers.push((s.id, rows.len(), &s.drafts));
                rows.extend(tokens.len() - d - 1..tokens.len());
            }
        }
        self.kv
            .set_tables(plan.iter().map(|s| self.sched.kv().blocks(s.id)));
        let batch = ForwardBatch {
            tokens: &tokens,
            positions: &positions,
            slots: &slots,
            logits_rows: &rows,
            kernel_groups: Some(&groups),
        };
        let n = tokens.len();
        let started = Instant::now();
        if let Err(e) = self.model.forward(&batch, &mut self.kv, &mut self.logits) {
            tracing::error!(error = %e, "forward pass failed");
            for s in &plan {
                if let Some(mut st) = self.states.remove(&s.id) {
                    st.sink
                        .send(RequestEvent::Error(format!("forward pass failed: {e}")));
                }
                self.sched.finish(s.id);
            }
            self.publish();
            return n;
        }
        self.step_costs.record(n, started.elapsed().as_secs_f64());
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.stats
            .forward_tokens
            .fetch_add(n as u64, Ordering::Relaxed);
        let vocab = self.model.config().vocab_size;
        let logits = std::mem::take(&mut self.logits);
        for &(id, first, drafts) in &samplers {
            self.verify(id, &logits[first * vocab..], vocab, drafts);
        }
        self.logits = logits;
        let ids: Vec<RequestId> = samplers.iter().map(|s| s.0).collect();
        if let Some(d) = &mut self.draft {
            // The draft's cache holds a request's tokens only up to the last accepted draft.
            for &id in &ids {
                if let Some(r) = self.sched.request(id) {
                    d.truncate(id, r.num_tokens().saturating_sub(1));
                }
            }
            let states = &self.states;
            d.retain(|id| states.contains_key(&id));
        }
        self.propose(&ids);
        self.publish();
        n
    }

    fn publish(&self) {
        let s = &self.stats;
        s.num_running
            .store(self.sched.num_running(), Ordering::Relaxed);
        s.num_waiting
            .store(self.sched.num_waiting(), Ordering::Relaxed);
        s.kv_usage_ppm.store(
            (self.sched.kv().usage() * 1e6).round() as u64,
            Ordering::Relaxed,
        );
        let c = self.sched.counters();
        s.preemptions.store(c.preemptions, Ordering::Relaxed);
        s.prefix_queries.store(c.prefix_queries, Ordering::Relaxed);
        s.prefix_hits.store(c.prefix_hits, Ordering::Relaxed);
    }
}

/// Prompt positions are processed in virtual batches of this many tokens (llama.cpp's default
/// `n_ubatch`, and `Generator`'s prefill chunk).
pub const VIRTUAL_UBATCH: usize = 512;

/// The kernel group of position `p` of a sequence with an `n_prompt`-token prompt: a prompt
/// token computes as row `p − base` of its virtual batch `[base, base + size)`, every other
/// token (generated, recomputed after preemption, or a draft) as a batch of one, i.e. as plain
/// decoding. The arithmetic of a position therefore depends on neither how the scheduler chunks
/// the prompt, nor what shares the step, nor speculation. (Prefix-cache hits reuse the KV of
/// another request; it is the same when both computed those positions as prompt tokens of the
/// same virtual batch shape, which holds for identical prompts.)
pub fn kernel_group(p: usize, n_prompt: usize) -> (usize, usize) {
    if p >= n_prompt {
        return (0, 1);
    }
    let base = p / VIRTUAL_UBATCH * VIRTUAL_UBATCH;
    let size = (base + VIRTUAL_UBATCH).min(n_prompt) - base;
    (p - base, size)
}
