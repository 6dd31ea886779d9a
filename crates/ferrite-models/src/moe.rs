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
use crate::weights::{load_vector, Linear};
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
    /// Added to the router's probabilities to choose experts, not to weight them
    /// (`exp_probs_b`, DeepSeek V3's load-balancing bias).
    selection_bias: Option<Vec<f32>>,
    experts: Vec<SwiGlu>,
}

/// What an architecture's graph reads of a layer's expert tensors (llama.cpp differs here
/// between architectures, and its test files carry every optional tensor).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExpertTensors {
    /// Per-expert second-level scales `ffn_*_exps.scale` are applied.
    pub scales: bool,
    /// The selection bias `exp_probs_b.bias` is used when present.
    pub selection_bias: bool,
}

/// Buffers of the MoE block, reused across layers and calls.
#[derive(Debug, Default)]
pub(crate) struct MoeScratch {
    /// Router scores, then probabilities (`T × n_experts`).
    probs: Vec<f32>,
    /// Per token, its `n_used` chosen experts and their weights, best first.
    chosen: Vec<(usize, f32)>,
    /// Per expert, the batch rows routed to it (prompt rows first).
    routed: Vec<Vec<usize>>,
    act: Vec<u8>,
    /// Expert products with the whole pool on each.
    work: ExpertWork,
    /// Per pool thread, for steps whose chosen experts are spread over the threads.
    lanes: Vec<std::sync::Mutex<Lane>>,
}

/// One expert's input rows, intermediate and output buffers.
#[derive(Debug, Default)]
struct ExpertWork {
    x: Vec<f32>,
    groups: Vec<(usize, usize)>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
    act: Vec<u8>,
}

impl ExpertWork {
    /// Run `expert` on `rows` of `h` (the first `prompt` of them prompt rows, see
    /// `expert_batch`); afterwards [`results`](Self::results) gives each row's output.
    fn run(
        &mut self,
        cpu: &Cpu,
        expert: &SwiGlu,
        rows: &[usize],
        prompt: usize,
        h: &[f32],
        d: usize,
    ) -> Result<()> {
        let n = expert_batch(rows, prompt, h, d, &mut self.x, &mut self.groups);
        expert.forward(
            cpu,
            &self.x,
            n,
            Some(&self.groups),
            &mut self.gate,
            &mut self.up,
            &mut self.down,
            &mut self.act,
        )
    }

    /// The outputs of the `rows.len()` rows of the last [`run`](Self::run), in their order
    /// (the padding between the prompt rows and the others skipped).
    fn results(&self, n_rows: usize, prompt: usize, d: usize) -> impl Iterator<Item = &[f32]> {
        let padded = self.groups.len() - (n_rows - prompt);
        self.down[..prompt * d]
            .chunks_exact(d)
            .chain(self.down[padded * d..self.groups.len() * d].chunks_exact(d))
    }
}

/// A pool thread's share of a decoding step's experts: a one-thread [`Cpu`] (its products run
/// inline) and the outputs of the experts it ran.
#[derive(Debug)]
struct Lane {
    cpu: Cpu,
    work: ExpertWork,
    /// `(expert, its rows' outputs)`.
    results: Vec<(usize, Vec<f32>)>,
}

impl MoeFfn {
    /// Load layer `il`'s router `ffn_gate_inp` and experts: `ffn_{gate,up,down}_exps`, or the
    /// fused `ffn_gate_up_exps` (each expert's gate rows, then its up rows) with `ffn_down_exps`.
    pub fn load(
        file: &Arc<GgufFile>,
        il: usize,
        dim: usize,
        m: &MoeConfig,
        kernels: &Kernels,
        read: ExpertTensors,
    ) -> Result<MoeFfn> {
        let n = |s: &str| format!("blk.{il}.{s}.weight");
        let (e, ff) = (m.n_experts, m.expert_ffn_dim);
        let experts = |name: &str, rows: usize, cols: usize| -> Result<Vec<Linear>> {
            let l = Linear::load_experts(file, &n(name), e, rows, cols)?;
            Ok(match read.scales {
                true => l,
                false => l.into_iter().map(Linear::without_scale).collect(),
            })
        };
        let (gate, up) = match file.tensor(&n("ffn_gate_up_exps")) {
            Some(_) => experts("ffn_gate_up_exps", 2 * ff, dim)?
                .into_iter()
                .map(|gu| Ok((gu.row_range(0, ff)?, gu.row_range(ff, ff)?)))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .unzip(),
            None => (
                experts("ffn_gate_exps", ff, dim)?,
                experts("ffn_up_exps", ff, dim)?,
            ),
        };
        let down = experts("ffn_down_exps", dim, ff)?;
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
        let bias_name = format!("blk.{il}.exp_probs_b.bias");
        let selection_bias = match read.selection_bias && file.tensor(&bias_name).is_some() {
            true => Some(load_vector(file, &bias_name, e)?),
            false => None,
        };
        Ok(MoeFfn {
            cfg: m.clone(),
            router: Linear::load(file, &n("ffn_gate_inp"), e, dim)?,
            selection_bias,
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
        route(
            m,
            self.selection_bias.as_deref(),
            &mut s.probs,
            &mut s.chosen,
        );

        // Each expert's rows, prompt rows first (see `expert_batch`).
        let prompt_row = |r: usize| groups.map_or(t > 1, |g| g[r].1 > 1);
        s.routed.resize_with(m.n_experts, Vec::new);
        s.routed.iter_mut().for_each(Vec::clear);
        for (row, picks) in s.chosen.chunks_exact(m.n_used).enumerate() {
            for &(e, _) in picks {
                s.routed[e].push(row);
            }
        }
        let mut prompts = vec![0; m.n_experts];
        for (rows, p) in s.routed.iter_mut().zip(&mut prompts) {
            rows.sort_by_key(|&r| !prompt_row(r));
            *p = rows.iter().take_while(|&&r| prompt_row(r)).count();
        }
        out.clear();
        out.resize(t * d, 0.0);
        let active: Vec<usize> = (0..m.n_experts)
            .filter(|&e| !s.routed[e].is_empty())
            .collect();
        let nth = cpu.pool.n_threads();
        // Decoding rows only: a thread per expert (each product on one thread) instead of the
        // whole pool on each product, one hand-off for all experts instead of three per
        // expert. Each row's arithmetic is the same either way.
        if nth > 1 && active.len() > 1 && prompts.iter().all(|&p| p == 0) {
            self.experts_over_threads(cpu, h, &active, out, s)?;
            return Ok(());
        }
        for &e in &active {
            let rows = &s.routed[e];
            s.work.run(cpu, &self.experts[e], rows, prompts[e], h, d)?;
            let results = s.work.results(rows.len(), prompts[e], d);
            accumulate(out, d, &s.chosen, m.n_used, e, rows, results);
        }
        Ok(())
    }

    /// The decoding step's `active` experts spread over the pool's threads; results added to
    /// `out` in expert order, as the one-expert-at-a-time path adds them.
    fn experts_over_threads(
        &self,
        cpu: &Cpu,
        h: &[f32],
        active: &[usize],
        out: &mut [f32],
        s: &mut MoeScratch,
    ) -> Result<()> {
        let (m, d) = (&self.cfg, self.router.cols);
        let nth = cpu.pool.n_threads();
        while s.lanes.len() < nth {
            s.lanes.push(std::sync::Mutex::new(Lane {
                cpu: cpu.serial(),
                work: ExpertWork::default(),
                results: Vec::new(),
            }));
        }
        let (routed, lanes) = (&s.routed, &s.lanes);
        let failure = std::sync::Mutex::new(None);
        cpu.pool.run(|ith, nth| {
            let mut guard = lanes[ith].lock().unwrap_or_else(|p| p.into_inner());
            let lane = &mut *guard;
            lane.results.clear();
            for &e in active.iter().skip(ith).step_by(nth) {
                let rows = &routed[e];
                match lane.work.run(&lane.cpu, &self.experts[e], rows, 0, h, d) {
                    Ok(()) => {
                        let y: Vec<f32> = lane
                            .work
                            .results(rows.len(), 0, d)
                            .flatten()
                            .copied()
                            .collect();
                        lane.results.push((e, y));
                    }
                    Err(err) => {
                        failure
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(err);
                    }
                }
            }
        });
        if let Some(err) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(err);
        }
        let mut results: Vec<(usize, Vec<f32>)> = s
            .lanes
            .iter_mut()
            .flat_map(|l| {
                std::mem::take(&mut l.get_mut().unwrap_or_else(|p| p.into_inner()).results)
            })
            .collect();
        results.sort_by_key(|r| r.0);
        for (e, y) in &results {
            accumulate(
                out,
                d,
                &s.chosen,
                m.n_used,
                *e,
                &s.routed[*e],
                y.chunks_exact(d),
            );
        }
        Ok(())
    }
}

/// `out[r] += w · y` for each of expert `e`'s `rows` and its output row `y`, `w` the weight
/// the router gave `e` for row `r`.
fn accumulate<'a>(
    out: &mut [f32],
    d: usize,
    chosen: &[(usize, f32)],
    n_used: usize,
    e: usize,
    rows: &[usize],
    results: impl Iterator<Item = &'a [f32]>,
) {
    for (&r, y) in rows.iter().zip(results) {
        let w = chosen[r * n_used..(r + 1) * n_used]
            .iter()
            .find(|c| c.0 == e)
            .map_or(0.0, |c| c.1);
        for (o, v) in out[r * d..(r + 1) * d].iter_mut().zip(y) {
            *o += w * v;
        }
    }
}

/// Fewest rows a prompt's expert product is computed as.
const PROMPT_ROWS_MIN: usize = 8;

/// Lay out one expert's input: its `prompt` prompt rows (which lead `rows`), zero rows up to
/// a multiple of 4 and at least [`PROMPT_ROWS_MIN`], then its decoding rows; return the
/// count. Every prompt row computes as a row of one large batch (the kernels' four-row
/// arithmetic) and every decoding row as a batch of one, whatever else shares the expert: a
/// token's numbers depend on neither how its prompt was chunked nor what other sequences
/// sent to the same expert, as the dense layers' kernel groups guarantee
/// ([`crate::ForwardBatch::kernel_groups`]). (llama.cpp's `mul_mat_id` runs single-row
/// kernels even for a prompt; the four-row kernels compute the same sums, rounded in another
/// order, several times faster.)
fn expert_batch(
    rows: &[usize],
    prompt: usize,
    h: &[f32],
    d: usize,
    x: &mut Vec<f32>,
    groups: &mut Vec<(usize, usize)>,
) -> usize {
    let padded = match prompt {
        0 => 0,
        p => p.next_multiple_of(4).max(PROMPT_ROWS_MIN),
    };
    x.clear();
    groups.clear();
    for &r in &rows[..prompt] {
        x.extend_from_slice(&h[r * d..(r + 1) * d]);
    }
    x.resize(padded * d, 0.0);
    groups.extend((0..padded).map(|i| (i, padded)));
    for &r in &rows[prompt..] {
        x.extend_from_slice(&h[r * d..(r + 1) * d]);
        groups.push((0, 1));
    }
    groups.len()
}

/// Turn router scores (`T × n_experts`, in place into probabilities) into each token's
/// `n_used` experts and weights, best first, as llama.cpp's `build_moe_ffn` does: softmax or
/// sigmoid; the selection bias, if any, added for choosing only; with expert groups, only the
/// `groups_used` groups whose two best experts score highest compete; top-k; the chosen
/// probabilities, renormalized and scaled as configured.
fn route(
    m: &MoeConfig,
    selection_bias: Option<&[f32]>,
    probs: &mut [f32],
    chosen: &mut Vec<(usize, f32)>,
) {
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
        if let Some(b) = selection_bias {
            selection.iter_mut().zip(b).for_each(|(s, b)| *s += b);
        }
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
    fn prompt_rows_are_padded_to_one_large_batch_and_decoding_rows_stay_single() {
        let h: Vec<f32> = (0..6).map(|v| v as f32).collect(); // six rows of width 1
        let (mut x, mut g) = (Vec::new(), Vec::new());
        // Rows 1, 4 are prompt rows; 5 decodes.
        let n = expert_batch(&[1, 4, 5], 2, &h, 1, &mut x, &mut g);
        assert_eq!(n, 9);
        assert_eq!(x, [1.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0]);
        assert_eq!(&g[..2], &[(0, 8), (1, 8)]);
        assert_eq!(g[8], (0, 1));
        // Only decoding rows: no padding.
        assert_eq!(expert_batch(&[3], 0, &h, 1, &mut x, &mut g), 1);
        assert_eq!(g, [(0, 1)]);
    }

    #[test]
    fn group_limited_routing_picks_only_from_the_best_groups() {
        // Group 0 = {0,1}: best two 0.9+0.1; group 1 = {2,3}: 0.8+0.7 (the best group);
        // group 2 = {4,5}: 0.85+0.0. With one group kept, expert 0 (the single best) is out.
        let logit = |p: f32| (p / (1.0 - p)).ln();
        let mut probs: Vec<f32> = [0.9, 0.1, 0.8, 0.7, 0.85, 0.001].map(logit).to_vec();
        let mut chosen = Vec::new();
        route(&cfg(6, 2, 3, 1), None, &mut probs, &mut chosen);
        let ids: Vec<usize> = chosen.iter().map(|c| c.0).collect();
        assert_eq!(ids, [2, 3]);
        // Renormalized, then scaled: 0.8/1.5·2.5 and 0.7/1.5·2.5.
        assert!((chosen[0].1 - 0.8 / 1.5 * 2.5).abs() < 1e-5, "{chosen:?}");
        assert!((chosen[1].1 - 0.7 / 1.5 * 2.5).abs() < 1e-5, "{chosen:?}");
    }
}
