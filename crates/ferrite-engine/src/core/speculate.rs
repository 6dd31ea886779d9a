//! Drafts for the next step: n-gram lookup per request or one batched run of the draft model,
//! verifying only as many drafts as pay for their rows (see [`crate::spec::policy`]).

use crate::kv_cache::RequestId;
use crate::spec::ngram;
use crate::spec::{choose_k, DraftJob, Rates};

use super::EngineCore;

/// A draft-model request that chose no drafts for this many steps drafts one token again, so
/// its acceptance estimate can recover (n-gram requests keep learning from lookups that cost
/// nothing, see [`ReqState::spec_proposal`]).
const SPEC_PROBE_STEPS: u32 = 32;

impl EngineCore {
    /// The most drafts request `id` may take next step (0: it does not speculate).
    pub(super) fn draft_limit(&self, id: RequestId) -> usize {
        let max_len = self.max_model_len();
        let (Some(st), Some(r)) = (self.states.get(&id), self.sched.request(id)) else {
            return 0;
        };
        let Some(cfg) = st.spec else {
            return 0;
        };
        let n_out = r.num_tokens() - r.num_prompt_tokens;
        // Every draft position must fit the context, and drafts past max_tokens are waste.
        cfg.k
            .min(st.max_tokens.saturating_sub(n_out + 1))
            .min(max_len.saturating_sub(r.num_tokens() + 1))
    }

    /// Propose drafts for the next step of requests that just produced tokens (n-gram lookup
    /// per request, or one batched run of the draft model), verifying as many as pay for their
    /// rows (see [`crate::spec::policy`]).
    pub(super) fn propose(&mut self, ids: &[RequestId]) {
        // The other requests' rows share the step (a guess: each decodes one token).
        let others = ids.len().saturating_sub(1);
        let mut jobs = Vec::new();
        for &id in ids {
            let limit = self.draft_limit(id);
            if limit == 0 {
                continue;
            }
            let Some(st) = self.states.get_mut(&id) else {
                continue;
            };
            let adaptive = st.spec.is_some_and(|c| c.adaptive);
            let rates = st.spec_acceptance.rates();
            let worth = |most: usize, draft_secs: f64| match adaptive {
                true => choose_k(rates, most, others, &self.step_costs, draft_secs),
                false => most,
            };
            if let Some(draft) = &self.draft {
                let secs = draft.token_secs();
                let mut k = worth(limit, secs);
                st.spec_idle = if k == 0 { st.spec_idle + 1 } else { 0 };
                // A draft model learns only from drafts it ran: probe now and then, unless
                // drafts could not pay even if every one were accepted (a draft as slow as
                // the target), where probing only costs.
                let sure = Rates {
                    first: 1.0,
                    rest: 1.0,
                };
                let could_pay = || choose_k(sure, limit, others, &self.step_costs, secs) > 0;
                if st.spec_idle >= SPEC_PROBE_STEPS && could_pay() {
                    (k, st.spec_idle) = (1, 0);
                }
                if k > 0 {
                    jobs.push((id, k));
                }
                continue;
            }
            let (Some(cfg), Some(r)) = (st.spec, self.sched.request(id)) else {
                continue;
            };
            // The whole lookup (it costs nothing), then only the part worth verifying.
            let proposal = ngram::propose(&r.tokens, &cfg, limit);
            let mut k = worth(proposal.len(), 0.0);
            // Drafts the grammar would refuse cannot be accepted: verify none past them.
            if let Some(c) = &mut st.constraint {
                k = c.valid_prefix(&proposal[..k]);
            }
            if k > 0 {
                self.sched.set_spec(id, proposal[..k].to_vec());
            }
            st.spec_proposal = proposal;
        }
        if jobs.is_empty() {
            return;
        }
        let max_len = self.max_model_len();
        let Some(draft) = self.draft.as_mut() else {
            return;
        };
        let batch: Vec<DraftJob<'_>> = jobs
            .iter()
            .filter_map(|&(id, limit)| {
                let r = self.sched.request(id)?;
                let st = self.states.get(&id)?;
                Some(DraftJob {
                    id,
                    tokens: &r.tokens,
                    prompt_len: r.num_prompt_tokens,
                    limit,
                    capacity: (r.num_prompt_tokens + st.max_tokens + 1).min(max_len),
                })
            })
            .collect();
        match draft.propose(&batch) {
            Ok(drafts) => {
                let ids: Vec<RequestId> = batch.iter().map(|j| j.id).collect();
                for (id, mut d) in ids.into_iter().zip(drafts) {
                    if let Some(st) = self.states.get_mut(&id) {
                        st.spec_proposal = d.clone();
                        if let Some(c) = &mut st.constraint {
                            let valid = c.valid_prefix(&d);
                            d.truncate(valid);
                        }
                    }
                    if !d.is_empty() {
                        self.sched.set_spec(id, d);
                    }
                }
            }
            // A draft failure costs speed, never output: the step goes on without drafts.
            Err(e) => tracing::warn!(error = %e, "draft model failed; no drafts this step"),
        }
    }
}
