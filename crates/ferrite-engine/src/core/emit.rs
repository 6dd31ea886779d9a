//! Turning a request's logits rows into tokens: verification of drafts (sample-and-match),
//! sampling, detokenization, stop conditions, and the request's end.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::kv_cache::RequestId;
use crate::stop::StopStep;
use crate::FinishReason;

use super::{EngineCore, FinishInfo, MaskTimes, RequestEvent, TokenLogprob};
use crate::grammar::Constraint;
use crate::sampling::{argmax, Sampler, TokenHistory};

impl EngineCore {
    /// Sample from the rows of `id` in order; row j checks draft j. Stops at the first
    /// mismatch (whose sampled token is kept), or after the bonus token when every draft
    /// matched. Sample-and-match: the request's own sampler draws each token from the target
    /// distribution, so the output distribution is exactly the target's, for any drafter.
    pub(super) fn verify(&mut self, id: RequestId, logits: &[f32], vocab: usize, drafts: &[u32]) {
        let d = drafts.len();
        if d > 0 {
            // Counted when verified (vLLM semantics), per request and in total alike.
            self.stats.spec_num_drafts.fetch_add(1, Ordering::Relaxed);
            self.stats
                .spec_draft_tokens
                .fetch_add(d as u64, Ordering::Relaxed);
            if let Some(st) = self.states.get_mut(&id) {
                st.spec_drafted += d;
            }
        }
        let mut emitted = Vec::with_capacity(d + 1);
        for j in 0..=d {
            let mut row = logits[j * vocab..(j + 1) * vocab].to_vec();
            let draft = drafts.get(j).copied();
            let Some(tok) = self.emit_token(id, &mut row, draft.map(|t| (j, t))) else {
                // Finished or aborted: nothing left to draft for.
                return;
            };
            emitted.push(tok);
            if Some(tok) != draft {
                break;
            }
        }
        let accepted = emitted.len() - 1;
        if d > 0 {
            self.sched.reject_drafts(id, d - accepted);
        }
        if let Some(st) = self.states.get_mut(&id) {
            let proposal = std::mem::take(&mut st.spec_proposal);
            st.spec_acceptance.observe(&proposal, &emitted);
            if self.draft.is_some() {
                self.draft_acceptance.observe(&proposal, &emitted);
            }
        }
    }

    /// Sample one token for `id` and deliver it; `draft` is the draft this row verifies (its
    /// acceptance is counted before the token can finish the request). Returns the token while
    /// the request goes on, `None` when it finished or was aborted.
    pub(super) fn emit_token(
        &mut self,
        id: RequestId,
        row: &mut [f32],
        draft: Option<(usize, u32)>,
    ) -> Option<u32> {
        let max_len = self.max_model_len();
        let st = self.states.get_mut(&id)?;
        let raw = st.logprobs.map(|_| row.to_vec());
        let token = match &mut st.constraint {
            None => st.sampler.sample(row, &st.history).token,
            Some(c) => {
                let masks = &self.stats.mask_seconds;
                match constrained_sample(c, &mut st.sampler, &st.history, row, st.ignore_eos, masks)
                {
                    Ok(t) => t,
                    Err(e) => {
                        st.sink.send(RequestEvent::Error(e.to_string()));
                        self.abort(id);
                        return None;
                    }
                }
            }
        };
        let logprob = raw.map(|raw| token_logprob(&raw, token, st.logprobs.unwrap_or(0)));
        if let Some((pos, _)) = draft.filter(|&(_, t)| t == token) {
            st.spec_accepted += 1;
            self.stats
                .spec_accepted_tokens
                .fetch_add(1, Ordering::Relaxed);
            self.stats.spec_accepted_per_pos[pos].fetch_add(1, Ordering::Relaxed);
        }
        let started = Instant::now();
        let grammar_complete = match st.constraint.as_mut().map(|c| c.advance(token)) {
            None => false,
            Some(Ok(complete)) => {
                self.stats.mask_seconds.work(started.elapsed());
                complete
            }
            Some(Err(e)) => {
                st.sink.send(RequestEvent::Error(e.to_string()));
                self.abort(id);
                return None;
            }
        };
        st.history.push(token);
        let now = Instant::now();
        st.first_token.get_or_insert(now);
        self.sched.append_token(id, token);
        let r = self.sched.request(id)?;
        let n_out = r.num_tokens() - r.num_prompt_tokens;
        let at_len = n_out >= st.max_tokens || r.num_tokens() >= max_len;
        let may_stop = n_out > st.min_tokens || st.min_tokens == 0;
        let mut finish = None;
        let mut text = String::new();
        if !st.ignore_eos && may_stop && self.tokenizer.is_end_of_generation(token) {
            finish = Some(FinishReason::Stop);
        } else {
            match st.detok.step(&self.tokenizer, token) {
                Ok(Some(t)) => match st.stops.push(&t) {
                    StopStep::Emit(t) => text = t,
                    StopStep::Stopped { emit, .. } if may_stop => {
                        text = emit;
                        st.stopped_by_string = true;
                        finish = Some(FinishReason::Stop);
                    }
                    // Before min_tokens a stop string is ordinary text.
                    StopStep::Stopped { emit, stop } => text = emit + &stop,
                },
                Ok(None) => {}
                Err(e) => {
                    st.sink.send(RequestEvent::Error(e.to_string()));
                    self.abort(id);
                    return None;
                }
            }
        }
        // A grammar that can take nothing more has its answer: the request ends as if it had
        // produced a stop token.
        if finish.is_none() && grammar_complete {
            finish = Some(FinishReason::Stop);
        }
        if finish.is_none() && at_len {
            finish = Some(FinishReason::Length);
        }
        let alive = st.sink.send(RequestEvent::Token {
            token,
            text,
            logprob,
        });
        if !alive {
            self.abort(id);
            return None;
        }
        if let Some(reason) = finish {
            self.finish(id, reason);
            return None;
        }
        Some(token)
    }

    pub(super) fn finish(&mut self, id: RequestId, mut reason: FinishReason) {
        let Some(mut st) = self.states.remove(&id) else {
            return;
        };
        let Some(r) = self.sched.finish(id) else {
            return;
        };
        // A stop string ends the text at its match; any other end flushes what is held back.
        let mut text = String::new();
        if !st.stopped_by_string {
            if let Ok(Some(t)) = st.detok.flush(&self.tokenizer) {
                match st.stops.push(&t) {
                    StopStep::Emit(t) => text.push_str(&t),
                    StopStep::Stopped { emit, .. } => {
                        text.push_str(&emit);
                        st.stopped_by_string = true;
                        reason = FinishReason::Stop;
                    }
                }
            }
            if !st.stopped_by_string {
                text.push_str(&st.stops.flush());
            }
        }
        let now = Instant::now();
        let first_sched = r.first_scheduled.unwrap_or(now);
        let first_tok = st.first_token.unwrap_or(now);
        st.sink.send(RequestEvent::Finished(FinishInfo {
            reason,
            text,
            prompt_tokens: r.num_prompt_tokens,
            completion_tokens: r.num_tokens() - r.num_prompt_tokens,
            cached_tokens: r.num_cached_tokens.unwrap_or(0),
            queue_time: first_sched.saturating_duration_since(st.arrival),
            prefill_time: first_tok.saturating_duration_since(first_sched),
            decode_time: now.saturating_duration_since(first_tok),
            spec_draft_tokens: st.spec_drafted,
            spec_accepted_tokens: st.spec_accepted,
        }));
    }
}

/// Sample under a grammar. The mask comes first: penalties, temperature and the
/// top-k/top-p/min-p cuts see only tokens the output can take. Greedy decoding skips the mask
/// when it can: the penalized arg-max is kept if the grammar can take it (llama.cpp does the
/// same), and only a refused arg-max needs the whole mask. (Where the grammar forces bytes the
/// mask holds just their canonical token, so an arg-max that spells them another way is kept
/// here where the mask would not have it; both are valid continuations.)
fn constrained_sample(
    c: &mut Constraint,
    sampler: &mut Sampler,
    history: &TokenHistory,
    row: &mut [f32],
    no_eog: bool,
    masks: &MaskTimes,
) -> crate::Result<u32> {
    if sampler.params().is_greedy() {
        // `sample` applies the penalties to `row` in place; a greedy sampler draws nothing.
        let t = sampler.sample(row, history).token;
        let started = Instant::now();
        let allowed = c.allows(t, no_eog);
        masks.work(started.elapsed());
        if allowed {
            masks.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(t);
        }
        mask(c, row, no_eog, masks)?;
        return Ok(argmax(row));
    }
    mask(c, row, no_eog, masks)?;
    Ok(sampler.sample(row, history).token)
}

/// Apply `c`'s mask to `row`, recording its time.
fn mask(c: &mut Constraint, row: &mut [f32], no_eog: bool, masks: &MaskTimes) -> crate::Result<()> {
    let started = Instant::now();
    let computed = c.mask(row, no_eog)?;
    masks.work(started.elapsed());
    masks.observe(computed);
    Ok(())
}

/// Log-probability of `token` and the `k` most likely tokens under the raw logits (before
/// penalties and sampling: OpenAI's logprobs describe the model's distribution).
fn token_logprob(raw: &[f32], token: u32, k: usize) -> TokenLogprob {
    let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = raw.iter().map(|&l| f64::from(l - max).exp()).sum();
    let lse = f64::from(max) + sum.ln();
    let lp = |t: u32| (f64::from(raw[t as usize]) - lse) as f32;
    let k = k.min(raw.len());
    let mut idx: Vec<u32> = Vec::new();
    if k > 0 {
        idx = (0..raw.len() as u32).collect();
        let by_logit =
            |a: &u32, b: &u32| raw[*b as usize].total_cmp(&raw[*a as usize]).then(a.cmp(b));
        idx.select_nth_unstable_by(k - 1, by_logit);
        idx.truncate(k);
        idx.sort_by(by_logit);
    }
    TokenLogprob {
        logprob: lp(token),
        top: idx.into_iter().map(|t| (t, lp(t))).collect(),
    }
}
