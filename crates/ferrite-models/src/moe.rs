//! Mixture-of-experts feed-forward: a router picks `n_used` of `n_experts` SwiGLU experts per
//! token (llama.cpp's `build_moe_ffn`), and the batch's tokens are grouped by expert so each
//! chosen expert's weights are read once per forward pass, whatever the number of tokens
//! (a prompt, or several sequences decoding together).

use std::sync::Arc;

use ferrite_gguf::GgufFile;
use ferrite_kernels::ops::swiglu_rows;
use ferrite_kernels::Kernels;

use crate::config::{ExpertGating, MoeConfig};
use crate::cpu::Cpu;
use crate::weights::Linear;
use crate::Result;

/// A SwiGLU feed-forward, `down(silu(gate·x) ⊙ up·x)`: a dense layer's or one expert's.
pub(crate) struct SwiGlu {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl SwiGlu {
    /// `out` (n × D) for the `n` rows of `x`; `gate` and `up` are scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        cpu: &Cpu,
        x: &[f32],
        n: usize,
        groups: Option<&[(usize, usize)]>,
        gate: &mut Vec<f32>,
        up: &mut Vec<f32>,
        out: &mut Vec<f32>,
        act: &mut Vec<u8>,
    ) -> Result<()> {
        cpu.linear_many([&self.gate, &self.up], x, n, groups, [gate, up], act)?;
        swiglu_rows(&cpu.pool, &cpu.kernels, gate, up, self.gate.rows)?;
        cpu.linear_grouped(&self.down, gate, n, groups, out, act)
    }
}

/// The routed experts of one layer and their router.
pub(crate) struct MoeFfn {
    cfg: MoeConfig,
    router: Linear,
    experts: Vec<SwiGlu>,
}

/// Buffers of the MoE block, reused across layers and calls.
#[derive(Debug, Default)]
pub(crate) struct MoeScratch {
    /// Router scores, then probabilities (`T × n_experts`).
    probs: Vec<f32>,
    /// Per token, its `n_used` chosen experts and their weights, best first.
    chosen: Vec<(usize, f32)>,
    /// Per expert, the batch rows routed to it.
    routed: Vec<Vec<usize>>,
    /// Kernel groups of one expert's rows: each row its own.
    singles: Vec<(usize, usize)>,
    /// One expert's input rows, gate/up and output.
    rows: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
    act: Vec<u8>,
}

impl MoeFfn {
    /// Load layer `il`'s router `ffn_gate_inp` and experts `ffn_{gate,up,down}_exps`.
    pub fn load(
        file: &Arc<GgufFile>,
        il: usize,
        dim: usize,
        m: &MoeConfig,
        kernels: &Kernels,
    ) -> Result<MoeFfn> {
        let n = |s: &str| format!("blk.{il}.{s}.weight");
        let (e, ff) = (m.n_experts, m.expert_ffn_dim);
        let gate = Linear::load_experts(file, &n("ffn_gate_exps"), e, ff, dim)?;
        let up = Linear::load_experts(file, &n("ffn_up_exps"), e, ff, dim)?;
        let down = Linear::load_experts(file, &n("ffn_down_exps"), e, dim, ff)?;
        let experts = gate
            .into_iter()
            .zip(up)
            .zip(down)
            .map(|((gate, up), down)| {
                Ok(SwiGlu {
                    gate: gate.repacked(kernels)?,
                    up: up.repacked(kernels)?,
                    down: down.repacked(kernels)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MoeFfn {
            cfg: m.clone(),
            router: Linear::load(file, &n("ffn_gate_inp"), e, dim)?,
            experts,
        })
    }

    /// `out` (T × D) = the weighted sum of each token's chosen experts applied to its row of
    /// `h` (T × D). `groups`: the batch's kernel groups ([`crate::ForwardBatch`]).
    pub fn forward(
        &self,
        cpu: &Cpu,
        h: &[f32],
        t: usize,
        groups: Option<&[(usize, usize)]>,
        out: &mut Vec<f32>,
        s: &mut MoeScratch,
    ) -> Result<()> {
        let (m, d) = (&self.cfg, self.router.cols);
        cpu.linear_grouped(&self.router, h, t, groups, &mut s.probs, &mut s.act)?;
        cpu.trace("ffn_moe_logits", 0, &s.probs);
        route(m, &mut s.probs, &mut s.chosen);

        s.routed.resize_with(m.n_experts, Vec::new);
        s.routed.iter_mut().for_each(Vec::clear);
        for (row, picks) in s.chosen.chunks_exact(m.n_used).enumerate() {
            for &(e, _) in picks {
                s.routed[e].push(row);
            }
        }
        out.clear();
        out.resize(t * d, 0.0);
        for (e, expert) in self.experts.iter().enumerate() {
            let rows = &s.routed[e];
            if rows.is_empty() {
                continue;
            }
            let n = rows.len();
            s.rows.clear();
            for &r in rows {
                s.rows.extend_from_slice(&h[r * d..(r + 1) * d]);
            }
            // Each row is its own kernel group: llama.cpp computes expert products one token at
            // a time (`mul_mat_id` runs its single-row kernels even for a prompt), and so a
            // token's result never depends on which others share its expert. The weights are
            // still read once: the kernels stream each tile of rows past all the tokens.
            s.singles.resize(n, (0, 1));
            let g = Some(&s.singles[..n]);
            cpu.linear_many(
                [&expert.gate, &expert.up],
                &s.rows,
                n,
                g,
                [&mut s.gate, &mut s.up],
                &mut s.act,
            )?;
            swiglu_rows(
                &cpu.pool,
                &cpu.kernels,
                &mut s.gate,
                &s.up,
                m.expert_ffn_dim,
            )?;
            cpu.linear_grouped(&expert.down, &s.gate, n, g, &mut s.down, &mut s.act)?;
            for (&r, y) in rows.iter().zip(s.down.chunks_exact(d)) {
                let w = s.chosen[r * m.n_used..(r + 1) * m.n_used]
                    .iter()
                    .find(|c| c.0 == e)
                    .map_or(0.0, |c| c.1);
                for (o, v) in out[r * d..(r + 1) * d].iter_mut().zip(y) {
                    *o += w * v;
                }
            }
        }
        Ok(())
    }
}

/// Turn router scores (`T × n_experts`, in place into probabilities) into each token's
/// `n_used` experts and weights, best first, as llama.cpp's `build_moe_ffn` does: softmax or
/// sigmoid; with expert groups, only the `groups_used` groups whose two best experts score
/// highest compete; top-k; the chosen probabilities, renormalized and scaled as configured.
pub(crate) fn route(m: &MoeConfig, probs: &mut [f32], chosen: &mut Vec<(usize, f32)>) {
    let n = m.n_experts;
    chosen.clear();
    let mut selection = vec![0f32; n];
    let mut order: Vec<usize> = (0..n).collect();
    for p in probs.chunks_exact_mut(n) {
        match m.gating {
            ExpertGating::Softmax => softmax(p),
            ExpertGating::Sigmoid => p.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        }
        selection.copy_from_slice(p);
        if m.groups > 1 {
            mask_groups(m, &mut selection);
        }
        order.sort_by(|&a, &b| selection[b].total_cmp(&selection[a]));
        let picks = &order[..m.n_used];
        let first = chosen.len();
        chosen.extend(picks.iter().map(|&e| (e, p[e])));
        let w = &mut chosen[first..];
        if m.norm_weights {
            let sum: f32 = w.iter().map(|c| c.1).sum::<f32>().max(6.103_515_6e-5);
            w.iter_mut().for_each(|c| c.1 /= sum);
        }
        if m.weights_scale != 0.0 && m.weights_scale != 1.0 {
            w.iter_mut().for_each(|c| c.1 *= m.weights_scale);
        }
    }
}

/// Group-limited routing: score each group by the sum of its two best selection scores and set
/// every expert outside the best `groups_used` groups to −∞.
fn mask_groups(m: &MoeConfig, selection: &mut [f32]) {
    let per = m.n_experts / m.groups;
    let mut scores: Vec<(usize, f32)> = selection
        .chunks_exact(per)
        .enumerate()
        .map(|(g, s)| {
            let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
            for &v in s {
                if v > a {
                    (a, b) = (v, a);
                } else if v > b {
                    b = v;
                }
            }
            (g, a + b)
        })
        .collect();
    scores.sort_by(|x, y| y.1.total_cmp(&x.1));
    for &(g, _) in &scores[m.groups_used..] {
        selection[g * per..(g + 1) * per].fill(f32::NEG_INFINITY);
    }
}

/// ggml's `soft_max`: subtract the maximum, exponentiate, sum in f64, scale by 1/sum.
fn softmax(p: &mut [f32]) {
    let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in p.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    p.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n_experts: usize, n_used: usize, groups: usize, groups_used: usize) -> MoeConfig {
        MoeConfig {
            n_experts,
            n_used,
            expert_ffn_dim: 8,
            gating: ExpertGating::Sigmoid,
            norm_weights: true,
            weights_scale: 2.5,
            groups,
            groups_used,
        }
    }

    #[test]
    fn group_limited_routing_picks_only_from_the_best_groups() {
        // Group 0 = {0,1}: best two 0.9+0.1; group 1 = {2,3}: 0.8+0.7 (the best group);
        // group 2 = {4,5}: 0.85+0.0. With one group kept, expert 0 (the single best) is out.
        let logit = |p: f32| (p / (1.0 - p)).ln();
        let mut probs: Vec<f32> = [0.9, 0.1, 0.8, 0.7, 0.85, 0.001].map(logit).to_vec();
        let mut chosen = Vec::new();
        route(&cfg(6, 2, 3, 1), &mut probs, &mut chosen);
        let ids: Vec<usize> = chosen.iter().map(|c| c.0).collect();
        assert_eq!(ids, [2, 3]);
        // Renormalized, then scaled: 0.8/1.5·2.5 and 0.7/1.5·2.5.
        assert!((chosen[0].1 - 0.8 / 1.5 * 2.5).abs() < 1e-5, "{chosen:?}");
        assert!((chosen[1].1 - 0.7 / 1.5 * 2.5).abs() < 1e-5, "{chosen:?}");
    }
}
