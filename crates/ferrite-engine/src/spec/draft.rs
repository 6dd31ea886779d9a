//! Draft-model drafting: a small model sharing the target's vocabulary (or the target's own
//! first layers, `self:layers=L`) proposes its greedy continuation, batched across requests.
//! Each request gets its own draft KV cache; after verification the draft's cache is kept up to
//! the last token both models agree on, so the next round only feeds the draft what is new.
//! Verification stays the engine's sample-and-match, so the output distribution is the
//! target's whatever the draft proposes.

use std::collections::HashMap;
use std::ops::Range;

use ferrite_models::{ContiguousKvCache, ForwardBatch, KvStore, KvVisitor, Model, SeqSlot};

use crate::kv_cache::RequestId;
use crate::spec::StepCosts;
use crate::{Error, Result};

/// Tokens fed to the draft per request per forward while it catches up on a prompt.
const CATCH_UP_CHUNK: usize = 512;

struct DraftSeq {
    kv: ContiguousKvCache,
    /// Tokens whose keys and values are in `kv` and agree with the request's tokens.
    seen: usize,
}

/// One request's drafting job: its tokens so far, how many drafts it may take, and the
/// longest it can grow (the size of its draft cache).
#[derive(Debug, Clone, Copy)]
pub struct DraftJob<'a> {
    /// Request.
    pub id: RequestId,
    /// Every token of the request so far.
    pub tokens: &'a [u32],
    /// How many of `tokens` are the prompt: the draft computes each position with the kernel
    /// arithmetic the target gives it (`crate::core::kernel_group`), so a draft model that is
    /// the target, or its first layers, proposes exactly the target's greedy tokens.
    pub prompt_len: usize,
    /// Most drafts to propose.
    pub limit: usize,
    /// Prompt plus output plus drafts will never exceed this.
    pub capacity: usize,
}

/// A draft model with a KV cache per request.
pub struct DraftModel {
    model: Box<dyn Model>,
    seqs: HashMap<RequestId, DraftSeq>,
    logits: Vec<f32>,
    /// Measured forward-pass time of the draft by rows, for the cost of a draft token.
    costs: StepCosts,
}

impl std::fmt::Debug for DraftModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraftModel")
            .field("layers", &self.model.config().n_layers)
            .field("sequences", &self.seqs.len())
            .finish()
    }
}

/// The batch's request caches as one store: slot i is the i-th request of the batch.
struct SlotKv<'a> {
    caches: Vec<&'a mut ContiguousKvCache>,
}

impl KvStore for SlotKv<'_> {
    fn write(
        &mut self,
        layer: usize,
        seq: SeqSlot,
        pos: usize,
        k: &[f32],
        v: &[f32],
    ) -> ferrite_models::Result<()> {
        self.caches[seq].write(layer, 0, pos, k, v)
    }

    fn read<'s>(
        &'s self,
        layer: usize,
        seq: SeqSlot,
        head: usize,
        range: Range<usize>,
        f: &mut KvVisitor<'_, 's>,
    ) {
        self.caches[seq].read(layer, 0, head, range, f)
    }

    fn capacity(&self) -> usize {
        // Each cache refuses writes past its own capacity.
        self.caches.iter().map(|c| c.capacity()).max().unwrap_or(0)
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

impl DraftModel {
    /// Wrap a loaded draft model.
    pub fn new(model: Box<dyn Model>) -> DraftModel {
        DraftModel {
            model,
            seqs: HashMap::new(),
            logits: Vec::new(),
            costs: StepCosts::default(),
        }
    }

    /// Seconds one draft token costs (a single-row draft step, as measured; 0 before the
    /// first measurement, so the first request drafts and the cost gets measured).
    pub fn token_secs(&self) -> f64 {
        if self.costs.measured() {
            self.costs.cost(1)
        } else {
            0.0
        }
    }

    /// The draft's vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    /// Forward `rows` (request index in `order`, token, position) through the draft and return
    /// the greedy next token after each request's last row, in the order of `order`.
    fn forward(
        &mut self,
        order: &[RequestId],
        prompt_lens: &[usize],
        rows: &[(usize, u32, usize)],
    ) -> Result<Vec<Option<u32>>> {
        let tokens: Vec<u32> = rows.iter().map(|r| r.1).collect();
        let groups: Vec<(usize, usize)> = rows
            .iter()
            .map(|&(slot, _, p)| crate::core::kernel_group(p, prompt_lens[slot]))
            .collect();
        let positions: Vec<usize> = rows.iter().map(|r| r.2).collect();
        let slots: Vec<usize> = rows.iter().map(|r| r.0).collect();
        // The logits row of each request is its last row in this batch.
        let mut last: Vec<Option<usize>> = vec![None; order.len()];
        for (i, r) in rows.iter().enumerate() {
            last[r.0] = Some(i);
        }
        let logits_rows: Vec<usize> = last.iter().flatten().copied().collect();
        let mut by_id: HashMap<RequestId, &mut DraftSeq> = self
            .seqs
            .iter_mut()
            .filter(|(id, _)| order.contains(id))
            .map(|(id, s)| (*id, s))
            .collect();
        let mut caches = Vec::with_capacity(order.len());
        for id in order {
            let s = by_id
                .remove(id)
                .ok_or_else(|| Error::Config(format!("draft: no cache for request {id}")))?;
            caches.push(&mut s.kv);
        }
        let mut kv = SlotKv { caches };
        let batch = ForwardBatch {
            tokens: &tokens,
            positions: &positions,
            slots: &slots,
            logits_rows: &logits_rows,
            kernel_groups: Some(&groups),
        };
        let started = std::time::Instant::now();
        self.model
            .forward(&batch, &mut kv, &mut self.logits)
            .map_err(|e| Error::Config(format!("draft model forward: {e}")))?;
        self.costs
            .record(rows.len(), started.elapsed().as_secs_f64());
        let vocab = self.vocab_size();
        let mut next = 0;
        Ok(last
            .iter()
            .map(|l| {
                l.map(|_| {
                    let t = argmax(&self.logits[next * vocab..(next + 1) * vocab]);
                    next += 1;
                    t
                })
            })
            .collect())
    }

    /// Greedy drafts for each job (empty where `limit` is 0), batched: the draft first catches
    /// up on each request's new tokens, then runs one row per request per draft position.
    pub fn propose(&mut self, jobs: &[DraftJob<'_>]) -> Result<Vec<Vec<u32>>> {
        let c = self.model.config().clone();
        let mut drafts = vec![Vec::new(); jobs.len()];
        let active: Vec<usize> = (0..jobs.len())
            .filter(|&i| jobs[i].limit > 0 && !jobs[i].tokens.is_empty())
            .collect();
        if active.is_empty() {
            return Ok(drafts);
        }
        for &i in &active {
            let j = &jobs[i];
            let s = match self.seqs.entry(j.id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let kv = ContiguousKvCache::for_shape(
                        c.kv_shape(),
                        self.model.cpu().kv_format,
                        j.capacity,
                        1,
                    )
                    .map_err(|e| Error::Config(format!("draft KV cache: {e}")))?;
                    e.insert(DraftSeq { kv, seen: 0 })
                }
            };
            // The last token is always fed again: its logits give the first draft.
            s.seen = s.seen.min(j.tokens.len() - 1);
        }
        let order: Vec<RequestId> = active.iter().map(|&i| jobs[i].id).collect();
        let prompt_lens: Vec<usize> = active.iter().map(|&i| jobs[i].prompt_len).collect();
        // Catch up in chunks; a request's first draft comes from the round holding its last token.
        loop {
            let mut rows = Vec::new();
            let mut finishing = Vec::new();
            for (slot, &i) in active.iter().enumerate() {
                let j = &jobs[i];
                let seen = self.seqs[&j.id].seen;
                if seen >= j.tokens.len() {
                    continue;
                }
                let end = (seen + CATCH_UP_CHUNK).min(j.tokens.len());
                rows.extend((seen..end).map(|p| (slot, j.tokens[p], p)));
                if end == j.tokens.len() {
                    finishing.push(slot);
                }
                self.seqs.get_mut(&j.id).expect("active").seen = end;
            }
            if rows.is_empty() {
                break;
            }
            let next = self.forward(&order, &prompt_lens, &rows)?;
            for slot in finishing {
                if let Some(t) = next[slot] {
                    drafts[active[slot]].push(t);
                }
            }
        }
        // One row per request per further draft position.
        let most = active.iter().map(|&i| jobs[i].limit).max().unwrap_or(0);
        for step in 1..most {
            let mut rows = Vec::new();
            for (slot, &i) in active.iter().enumerate() {
                let j = &jobs[i];
                if drafts[i].len() == step && j.limit > step {
                    let pos = j.tokens.len() + step - 1;
                    rows.push((slot, drafts[i][step - 1], pos));
                    self.seqs.get_mut(&j.id).expect("active").seen = pos + 1;
                }
            }
            if rows.is_empty() {
                break;
            }
            let next = self.forward(&order, &prompt_lens, &rows)?;
            for (slot, &i) in active.iter().enumerate() {
                if drafts[i].len() == step && jobs[i].limit > step {
                    if let Some(t) = next[slot] {
                        drafts[i].push(t);
                    }
                }
            }
        }
        Ok(drafts)
    }

    /// After verification: the request's first `valid` tokens are final, and the draft's cache
    /// holds them only up to where its drafts were accepted.
    pub fn truncate(&mut self, id: RequestId, valid: usize) {
        if let Some(s) = self.seqs.get_mut(&id) {
            s.seen = s.seen.min(valid);
        }
    }

    /// Drop the caches of requests that are gone.
    pub fn retain(&mut self, live: impl Fn(RequestId) -> bool) {
        self.seqs.retain(|id, _| live(*id));
    }
}
