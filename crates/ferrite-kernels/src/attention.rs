//! Attention over a KV cache for one query head at a time, fed block by block with an online
//! softmax (llama.cpp's CPU flash-attention arithmetic), for f16 and Q8_0 caches.

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::dot::Kernels;
use crate::kv_format::KvFormat;
use crate::ops::f32_to_f16_bits;
use crate::quant::{quantize_activations, QuantType};

/// One step of the softmax denominator `S = S·ms + vs`. clang contracts ggml's expression
/// into one FMA; with ms = 1 that is a plain f32 add (the f64 sum of two f32 rounds to the same
/// f32 as their f32 sum), which keeps the slow emulated FMA off this per-key dependency chain.
#[inline(always)]
fn softmax_step(sum: f32, ms: f32, vs: f32) -> f32 {
    if ms == 1.0 {
        sum + vs
    } else {
        crate::compat::fma(sum, ms, vs)
    }
}

/// [`softmax_step`] over a block of keys (weights `e`, `raised` as in
/// `AttentionAccumulator::add`). A function of its own so that the sum stays in a register:
/// the chain of one add per key is a visible part of prompt processing.
#[inline(never)]
fn softmax_sum(mut sum: f32, e: &[f32], raised: &[bool]) -> f32 {
    for (&e, &raised) in e.iter().zip(raised) {
        sum = if raised {
            softmax_step(sum, e, 1.0)
        } else {
            sum + e
        };
    }
    sum
}

/// How the attention accumulator sums `p·v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttnAccum {
    /// Round the running sum to f16 after every position, as llama.cpp's CPU flash attention
    /// does with an f16 V cache (`ggml_vec_mad_f16` into `VKQ16`); the default, so greedy
    /// outputs agree with llama.cpp.
    #[default]
    F16,
    /// Keep the running sum in f32 (more precise, differs slightly from llama.cpp).
    F32,
}

/// A run of stored rows as a KV cache hands them out: `n` keys and `n` values in the cache's
/// format (f16: little-endian bytes; Q8_0: its blocks).
#[derive(Debug, Clone, Copy)]
pub struct KvRun<'a> {
    /// The keys' rows.
    pub keys: &'a [u8],
    /// The values' rows.
    pub values: &'a [u8],
    /// Rows in each.
    pub n: usize,
}

/// Attention for one query head over key/value rows fed block by block, with an online softmax
/// (running max and sum), so a paged cache never has to gather its blocks. It may produce only
/// some columns of the head's result ([`with_columns`](Self::with_columns)): the scores and
/// softmax need the whole query and keys, but each output column depends only on its own
/// value column, so two accumulators can share one head between threads.
#[derive(Debug, Clone)]
pub struct AttentionAccumulator {
    q16: Vec<u16>,
    /// The output columns this accumulator produces (all of the head by default).
    cols: std::ops::Range<usize>,
    acc16: Vec<u16>,
    acc: Vec<f32>,
    mode: AttnAccum,
    max: f32,
    sum: f32,
    scale: f32,
    /// Per block of keys: each key's `expf` argument, then its value (reused between calls).
    exps: Vec<f32>,
    /// Per block of keys: whether the key raised the running maximum.
    raised: Vec<bool>,
    /// How the keys and values it is fed are stored.
    kv: KvFormat,
    /// The query quantized to Q8_0 (a Q8_0 cache: ggml quantizes the query to the K type's
    /// dot-product partner).
    q8: Vec<u8>,
}

impl AttentionAccumulator {
    /// An accumulator for `head_dim`-element heads.
    pub fn new(head_dim: usize, mode: AttnAccum) -> AttentionAccumulator {
        AttentionAccumulator {
            q16: vec![0; head_dim],
            cols: 0..head_dim,
            acc16: vec![0; head_dim],
            acc: vec![0.0; head_dim],
            mode,
            max: f32::NEG_INFINITY,
            sum: 0.0,
            scale: 1.0,
            exps: Vec::new(),
            raised: Vec::new(),
            kv: KvFormat::F16,
            q8: Vec::new(),
        }
    }

    /// This accumulator fed keys and values stored as `kv`. With a Q8_0 cache it follows
    /// llama.cpp's flash attention for that type: the query quantized to Q8_0, each score the
    /// Q8_0 dot product, values dequantized to f32 and summed in an f32 accumulator
    /// (`ggml_vec_mad_f32`), whatever the [`AttnAccum`] mode. Errors if the head size is not
    /// a whole number of the format's blocks.
    pub fn with_kv_format(mut self, kv: KvFormat) -> crate::Result<AttentionAccumulator> {
        self.q8 = vec![0; kv.row_bytes(self.q16.len())?];
        self.kv = kv;
        Ok(self)
    }

    /// How the keys and values it is fed are stored.
    pub fn kv_format(&self) -> KvFormat {
        self.kv
    }

    /// This accumulator producing only output columns `cols` of the head (clamped to it):
    /// [`finish`](Self::finish) then writes `cols.len()` values, each exactly the whole head's
    /// value in that column.
    pub fn with_columns(mut self, cols: std::ops::Range<usize>) -> AttentionAccumulator {
        self.set_columns(cols);
        self
    }

    /// [`with_columns`](Self::with_columns) in place (reusing the buffers); takes effect from
    /// the next [`begin`](Self::begin).
    pub fn set_columns(&mut self, cols: std::ops::Range<usize>) {
        let d = self.q16.len();
        let cols = cols.start.min(d)..cols.end.min(d).max(cols.start.min(d));
        self.acc16.resize(cols.len(), 0);
        self.acc.resize(cols.len(), 0.0);
        self.cols = cols;
    }

    /// The head size this accumulator was made for.
    pub fn head_dim(&self) -> usize {
        self.q16.len()
    }

    /// The output columns it produces.
    pub fn columns(&self) -> std::ops::Range<usize> {
        self.cols.clone()
    }

    /// How it accumulates values.
    pub fn mode(&self) -> AttnAccum {
        self.mode
    }

    /// Start a new query: `q` is converted to f16 (ggml converts the query to the K cache type
    /// before the dot product); `scale` multiplies every score.
    pub fn begin(&mut self, q: &[f32], scale: f32) {
        f32_to_f16_bits(q, &mut self.q16);
        if self.kv == KvFormat::Q8_0 {
            quantize_activations(QuantType::Q8_0, q, &mut self.q8)
                .expect("invariant: head size checked by with_kv_format");
        }
        self.acc.fill(0.0);
        self.acc16.fill(0);
        self.max = f32::NEG_INFINITY;
        self.sum = 0.0;
        self.scale = scale;
    }

    /// Attend to `n` positions: `keys` and `values` are `n × head_dim` f16 rows (as bytes).
    /// `softcap`, when set, applies `c·tanh(s/c)` to each scaled score.
    pub fn add(&mut self, k: &Kernels, keys: &[u8], values: &[u8], n: usize, softcap: Option<f32>) {
        // A group of one: the same kernel choices (whole head or column slice) in one place.
        Self::add_group(k, std::slice::from_mut(self), keys, values, n, softcap);
    }

    /// [`add`](Self::add) for several queries attending to the same keys and values (the query
    /// heads of one grouped-query KV head). Each accumulator's result is exactly what it gets
    /// attending alone (a group of one, which `add` is, runs the single-query kernels); the
    /// scores and the value accumulation run for all of them in one pass over the keys and
    /// values where this ISA has a kernel for the head size.
    pub fn add_group(
        k: &Kernels,
        accs: &mut [AttentionAccumulator],
        keys: &[u8],
        values: &[u8],
        n: usize,
        softcap: Option<f32>,
    ) {
        Self::add_group_runs(k, accs, &[KvRun { keys, values, n }], softcap);
    }

    /// [`add_group`](Self::add_group) over several runs of rows in order (a paged cache's
    /// blocks), bit for bit what one call per run gives: every run's scores first, then the
    /// softmax weights of all of them in one pass, then every run's values — so short blocks
    /// cost kernel calls, not a softmax pass and its set-up each.
    pub fn add_group_runs(
        k: &Kernels,
        accs: &mut [AttentionAccumulator],
        runs: &[KvRun<'_>],
        softcap: Option<f32>,
    ) {
        let total: usize = runs.iter().map(|r| r.n).sum();
        let Some(first) = accs.first() else {
            return;
        };
        let q8 = first.kv == KvFormat::Q8_0;
        for a in accs.iter_mut() {
            a.exps.resize(total, 0.0);
        }
        let mut at = 0;
        for r in runs {
            if q8 {
                Self::score_run_q8_0(k, accs, r.keys, at..at + r.n);
            } else {
                Self::score_run_f16(k, accs, r.keys, at..at + r.n);
            }
            at += r.n;
        }
        for a in accs.iter_mut() {
            a.weigh_scores(k, total, softcap);
        }
        let mut at = 0;
        for r in runs {
            let keys = at..at + r.n;
            if q8 {
                for group in accs.chunks_mut(8) {
                    let cols = group[0].cols.clone();
                    if group.iter().any(|a| a.cols != cols) {
                        for a in group.iter_mut() {
                            Self::values_q8_0(k, std::slice::from_mut(a), r.values, keys.clone());
                        }
                    } else {
                        Self::values_q8_0(k, group, r.values, keys.clone());
                    }
                }
            } else {
                Self::values_run_f16(k, accs, r.values, keys);
            }
            at += r.n;
        }
    }

    /// The scores of one run of f16 keys into `exps[at]`: every query's in one pass over the
    /// keys where this ISA has the kernel.
    fn score_run_f16(
        k: &Kernels,
        accs: &mut [AttentionAccumulator],
        keys: &[u8],
        at: std::ops::Range<usize>,
    ) {
        let d = accs.first().map_or(0, |a| a.q16.len());
        let n = at.len();
        let mut qs: [&[u16]; 4] = Default::default();
        let mut outs: [&mut [f32]; 4] = Default::default();
        let g = accs.len();
        let scored = (2..=4).contains(&g) && {
            for (i, a) in accs.iter_mut().enumerate() {
                let AttentionAccumulator { q16, exps, .. } = a;
                (qs[i], outs[i]) = (q16.as_slice(), &mut exps[at.clone()]);
            }
            k.attn_scores_f16_group(&qs[..g], &keys[..n * 2 * d], &mut outs[..g])
        };
        if !scored {
            for a in accs.iter_mut() {
                a.score(k, keys, at.clone());
            }
        }
    }

    /// The values of one run of f16 rows, weighted by `exps[at]`, and the softmax denominator.
    fn values_run_f16(
        k: &Kernels,
        accs: &mut [AttentionAccumulator],
        values: &[u8],
        at: std::ops::Range<usize>,
    ) {
        let Some(first) = accs.first() else {
            return;
        };
        let (d, n) = (first.q16.len(), at.len());
        let row = 2 * d;
        let cols = first.cols.clone();
        let mut grouped = false;
        if accs.len() <= 4
            && accs
                .iter()
                .all(|a| a.mode == AttnAccum::F16 && a.cols == cols)
            && (accs.len() > 1 || cols.len() != d)
        {
            let g = accs.len();
            let mut bufs: [&mut [u16]; 4] = Default::default();
            let mut es: [&[f32]; 4] = Default::default();
            let mut rs: [&[bool]; 4] = Default::default();
            for (i, a) in accs.iter_mut().enumerate() {
                let AttentionAccumulator {
                    acc16,
                    exps,
                    raised,
                    ..
                } = a;
                (bufs[i], es[i], rs[i]) =
                    (acc16.as_mut_slice(), &exps[at.clone()], &raised[at.clone()]);
            }
            grouped = k.attn_values_f16_group(
                &mut bufs[..g],
                &values[..n * row],
                d,
                cols.start,
                &es[..g],
                &rs[..g],
            );
        }
        for a in accs.iter_mut() {
            let fused = grouped
                || (a.mode == AttnAccum::F16
                    && a.cols.len() == d
                    && k.attn_values_f16(
                        &mut a.acc16,
                        &values[..n * row],
                        &a.exps[at.clone()],
                        &a.raised[at.clone()],
                    ));
            a.accumulate(k, values, at.clone(), fused);
        }
    }

    /// The scores of one run of Q8_0 keys into `exps[at]`, in the arithmetic of llama.cpp's
    /// flash attention for that cache type (see [`with_kv_format`](Self::with_kv_format)).
    fn score_run_q8_0(
        k: &Kernels,
        accs: &mut [AttentionAccumulator],
        keys: &[u8],
        at: std::ops::Range<usize>,
    ) {
        let dot = k
            .dot_fn(QuantType::Q8_0)
            .expect("invariant: Q8_0 has a dot kernel");
        let n = at.len();
        for a in accs.iter_mut() {
            let (d, row) = (a.q16.len(), a.q8.len());
            debug_assert!(keys.len() >= n * row);
            let out = &mut a.exps[at.clone()];
            if !k.attn_scores_q8_0(&a.q8, &keys[..n * row], d, out) {
                for (j, s) in out.iter_mut().enumerate() {
                    *s = dot(d, &keys[j * row..(j + 1) * row], &a.q8);
                }
            }
        }
    }

    /// The value half of llama.cpp's Q8_0 flash attention for accumulators with the same
    /// columns, over one run of rows weighted by `exps[at]`: per key and query, a new maximum
    /// scales the f32 accumulator by `exp(old − new)`, then `acc = fma(v, weight, acc)` element
    /// by element over the dequantized value row — dequantized once for the whole group (up to
    /// 8 queries).
    fn values_q8_0(
        k: &Kernels,
        accs: &mut [AttentionAccumulator],
        values: &[u8],
        at: std::ops::Range<usize>,
    ) {
        let Some(first) = accs.first() else {
            return;
        };
        let (row, n) = (first.q8.len(), at.len());
        debug_assert!(values.len() >= n * row);
        // The value blocks of these accumulators' columns (whole 32-element blocks).
        let (b0, b1) = (first.cols.start / 32 * 34, first.cols.end.div_ceil(32) * 34);
        let g = accs.len();
        if g <= 4 {
            // The whole run with the accumulators in registers, where this ISA can.
            let mut ys: [&mut [f32]; 4] = Default::default();
            let mut es: [&[f32]; 4] = Default::default();
            let mut rs: [&[bool]; 4] = Default::default();
            let col0 = first.cols.start;
            for (i, a) in accs.iter_mut().enumerate() {
                let AttentionAccumulator {
                    acc, exps, raised, ..
                } = a;
                (ys[i], es[i], rs[i]) =
                    (acc.as_mut_slice(), &exps[at.clone()], &raised[at.clone()]);
            }
            if k.attn_values_q8_0_group(
                &mut ys[..g],
                &values[..n * row],
                row,
                col0,
                &es[..g],
                &rs[..g],
            ) {
                for a in accs.iter_mut() {
                    a.sum = softmax_sum(a.sum, &a.exps[at.clone()], &a.raised[at.clone()]);
                }
                return;
            }
        }
        let mut vs = [0f32; 8];
        let mut sums: [f32; 8] = std::array::from_fn(|g| accs.get(g).map_or(0.0, |a| a.sum));
        for j in 0..n {
            for (g, a) in accs.iter_mut().enumerate() {
                let (e, raised) = (a.exps[at.start + j], a.raised[at.start + j]);
                let (ms, v) = if raised { (e, 1.0) } else { (1.0, e) };
                if raised {
                    a.acc.iter_mut().for_each(|x| *x *= ms);
                }
                vs[g] = v;
                sums[g] = softmax_step(sums[g], ms, v);
            }
            let mut ys: [&mut [f32]; 8] = Default::default();
            for (y, a) in ys.iter_mut().zip(accs.iter_mut()) {
                *y = a.acc.as_mut_slice();
            }
            (k.mad_q8_0)(&mut ys[..g], &values[j * row + b0..j * row + b1], &vs[..g]);
        }
        for (a, &s) in accs.iter_mut().zip(&sums) {
            a.sum = s;
        }
    }

    /// The scores of one run of keys into `exps[at]`, sixteen keys per kernel call where this
    /// ISA has one.
    fn score(&mut self, k: &Kernels, keys: &[u8], at: std::ops::Range<usize>) {
        let d = self.q16.len();
        let (row, n) = (2 * d, at.len());
        let out = &mut self.exps[at];
        if !k.attn_scores_f16(&self.q16, &keys[..n * row], out) {
            let q: &[u8] = bytemuck::cast_slice(&self.q16);
            let dot = k
                .dot_fn(QuantType::F16)
                .expect("invariant: F16 has a dot kernel");
            for (j, s) in out.iter_mut().enumerate() {
                *s = dot(d, &keys[j * row..(j + 1) * row], q);
            }
        }
    }

    /// The scores in `exps` (n of them) to weights for the value accumulation, in `exps` and
    /// `raised` (each key's weight, or rescale factor when it raised the maximum): scaled (and
    /// soft-capped), the running maximum, then every key's exponential in one vector call — the
    /// running maximum after each key depends only on the scores, so each `expf` argument is
    /// known before any is computed. The arithmetic is the one-key-at-a-time loop's, in the
    /// same order.
    fn weigh_scores(&mut self, k: &Kernels, n: usize, softcap: Option<f32>) {
        debug_assert_eq!(self.exps.len(), n);
        self.raised.resize(n, false);
        let mut max = self.max;
        for (e, r) in self.exps.iter_mut().zip(self.raised.iter_mut()) {
            let mut s = *e * self.scale;
            if let Some(c) = softcap {
                s = c * (s / c).tanh();
            }
            // Online softmax step: a new maximum rescales what we have by exp(old − new);
            // otherwise this position weighs exp(s − max).
            *r = s > max;
            if *r {
                *e = max - s;
                max = s;
            } else {
                *e = s - max;
            }
        }
        self.max = max;
        k.expf(&mut self.exps);
    }

    /// The value half for one run of rows weighted by `exps[at]` (already done when `fused`, by
    /// a kernel) and the softmax denominator.
    fn accumulate(&mut self, k: &Kernels, values: &[u8], at: std::ops::Range<usize>, fused: bool) {
        let row = 2 * self.q16.len();
        debug_assert!(values.len() >= at.len() * row);
        let mut sum = self.sum;
        let (exps, raised) = (&self.exps[at.clone()], &self.raised[at]);
        if fused {
            sum = softmax_sum(sum, exps, raised);
        } else {
            for (j, (&e, &raised)) in exps.iter().zip(raised).enumerate() {
                let (ms, vs) = if raised { (e, 1.0) } else { (1.0, e) };
                let v = &values[j * row + 2 * self.cols.start..j * row + 2 * self.cols.end];
                match self.mode {
                    AttnAccum::F16 => {
                        if ms != 1.0 {
                            (k.scale_f16)(&mut self.acc16, ms);
                        }
                        (k.mad_f16)(&mut self.acc16, v, vs);
                    }
                    AttnAccum::F32 => {
                        for (a, vb) in self.acc.iter_mut().zip(v.chunks_exact(2)) {
                            let x = f16::from_bits(u16::from_le_bytes([vb[0], vb[1]])).to_f32();
                            *a = *a * ms + vs * x;
                        }
                    }
                }
                sum = softmax_step(sum, ms, vs);
            }
        }
        self.sum = sum;
    }

    /// Write the normalised result.
    pub fn finish(&self, out: &mut [f32]) {
        let stats = self.finish_unnormalised(out);
        let inv = if stats.sum > 0.0 {
            1.0 / stats.sum
        } else {
            0.0
        };
        let n = out.len().min(self.cols.len());
        out[..n].iter_mut().for_each(|o| *o *= inv);
    }

    /// Write the weighted sum of values so far without dividing by the softmax denominator,
    /// in f32, and return the running maximum and denominator: what llama.cpp's split flash
    /// attention keeps of one chunk of keys, for [`merge_partials`].
    pub fn finish_unnormalised(&self, out: &mut [f32]) -> SoftmaxStats {
        // A Q8_0 cache always sums in f32 (llama.cpp's `VKQ32`).
        let mode = match self.kv {
            KvFormat::F16 => self.mode,
            KvFormat::Q8_0 => AttnAccum::F32,
        };
        let n = out.len().min(self.cols.len());
        match mode {
            // Exact conversion (vectorized by `half`).
            AttnAccum::F16 => bytemuck::cast_slice::<u16, f16>(&self.acc16[..n])
                .convert_to_f32_slice(&mut out[..n]),
            AttnAccum::F32 => out[..n].copy_from_slice(&self.acc[..n]),
        }
        SoftmaxStats {
            max: self.max,
            sum: self.sum,
        }
    }
}

/// The running maximum of the scaled scores and the softmax denominator of one query over the
/// keys it has seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftmaxStats {
    /// Largest scaled (and soft-capped) score; −∞ before any key.
    pub max: f32,
    /// Σ exp(score − max).
    pub sum: f32,
}

/// One query's result from the unnormalised results of consecutive chunks of its keys
/// ([`AttentionAccumulator::finish_unnormalised`]), merged in order as llama.cpp's
/// `ggml_flash_attn_ext_reduce_partials` does: each chunk rescaled to the common maximum, summed
/// in f32, divided by the merged denominator. Chunks without weight are skipped.
pub fn merge_partials<'a>(
    chunks: impl IntoIterator<Item = (SoftmaxStats, &'a [f32])>,
    out: &mut [f32],
) {
    let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    out.fill(0.0);
    for (stats, values) in chunks {
        if stats.sum == 0.0 {
            continue;
        }
        let m = max.max(stats.max);
        let (old, new) = ((max - m).exp(), (stats.max - m).exp());
        for (o, &v) in out.iter_mut().zip(values) {
            *o = *o * old + v * new;
        }
        sum = sum * old + stats.sum * new;
        max = m;
    }
    let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    out.iter_mut().for_each(|o| *o *= inv);
}

#[cfg(test)]
mod tests;
