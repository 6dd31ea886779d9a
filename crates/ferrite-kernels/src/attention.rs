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
        if accs.first().is_some_and(|a| a.kv == KvFormat::Q8_0) {
            Self::add_q8_0(k, accs, keys, values, n, softcap);
            return;
        }
        // Every query's scores in one pass over the keys where this ISA has the kernel.
        let d = accs.first().map_or(0, |a| a.q16.len());
        let mut qs: [&[u16]; 4] = Default::default();
        let mut outs: [&mut [f32]; 4] = Default::default();
        let g = accs.len();
        let scored = (2..=4).contains(&g) && {
            for (i, a) in accs.iter_mut().enumerate() {
                a.exps.resize(n, 0.0);
                let AttentionAccumulator { q16, exps, .. } = a;
                (qs[i], outs[i]) = (q16.as_slice(), exps.as_mut_slice());
            }
            k.attn_scores_f16_group(&qs[..g], &keys[..n * 2 * d], &mut outs[..g])
        };
        for a in accs.iter_mut() {
            if !scored {
                a.score(k, keys, n);
            }
            a.weigh_scores(k, n, softcap);
        }
        let mut grouped = false;
        let cols = accs.first().map_or(0..0, |a| a.cols.clone());
        if accs.len() <= 4
            && accs
                .iter()
                .all(|a| a.mode == AttnAccum::F16 && a.cols == cols)
            && (accs.len() > 1 || cols.len() != d)
        {
            let g = accs.len();
            let row = 2 * d;
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
                    (acc16.as_mut_slice(), exps.as_slice(), raised.as_slice());
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
            let row = 2 * a.q16.len();
            let fused = grouped
                || (a.mode == AttnAccum::F16
                    && a.cols.len() == a.q16.len()
                    && k.attn_values_f16(&mut a.acc16, &values[..n * row], &a.exps, &a.raised));
            a.accumulate(k, values, n, fused);
        }
    }

    /// [`add_group`](Self::add_group) over Q8_0 keys and values, in the arithmetic of
    /// llama.cpp's flash attention for that cache type (see
    /// [`with_kv_format`](Self::with_kv_format)): per key and query, a new maximum scales the
    /// f32 accumulator by `exp(old − new)`, then `acc = fma(v, weight, acc)` element by element
    /// over the dequantized value row — dequantized once for the whole group (up to 8 queries
    /// with the same columns; more go in turns).
    fn add_q8_0(
        k: &Kernels,
        accs: &mut [AttentionAccumulator],
        keys: &[u8],
        values: &[u8],
        n: usize,
        softcap: Option<f32>,
    ) {
        let dot = k
            .dot_fn(QuantType::Q8_0)
            .expect("invariant: Q8_0 has a dot kernel");
        for a in accs.iter_mut() {
            let (d, row) = (a.q16.len(), a.q8.len());
            debug_assert!(keys.len() >= n * row && values.len() >= n * row);
            a.exps.resize(n, 0.0);
            if !k.attn_scores_q8_0(&a.q8, &keys[..n * row], d, &mut a.exps) {
                for (j, s) in a.exps.iter_mut().enumerate() {
                    *s = dot(d, &keys[j * row..(j + 1) * row], &a.q8);
                }
            }
            a.weigh_scores(k, n, softcap);
        }
        for group in accs.chunks_mut(8) {
            let cols = group[0].cols.clone();
            if group.iter().any(|a| a.cols != cols) {
                for a in group.iter_mut() {
                    Self::values_q8_0(k, std::slice::from_mut(a), values, n);
                }
            } else {
                Self::values_q8_0(k, group, values, n);
            }
        }
    }

    /// The value half of [`add_q8_0`](Self::add_q8_0) for accumulators with the same columns.
    fn values_q8_0(k: &Kernels, accs: &mut [AttentionAccumulator], values: &[u8], n: usize) {
        let Some(first) = accs.first() else {
            return;
        };
        let row = first.q8.len();
        // The value blocks of these accumulators' columns (whole 32-element blocks).
        let (b0, b1) = (first.cols.start / 32 * 34, first.cols.end.div_ceil(32) * 34);
        let g = accs.len();
        if g <= 4 {
            // The whole block with the accumulators in registers, where this ISA can.
            let mut ys: [&mut [f32]; 4] = Default::default();
            let mut es: [&[f32]; 4] = Default::default();
            let mut rs: [&[bool]; 4] = Default::default();
            let col0 = first.cols.start;
            for (i, a) in accs.iter_mut().enumerate() {
                let AttentionAccumulator {
                    acc, exps, raised, ..
                } = a;
                (ys[i], es[i], rs[i]) = (acc.as_mut_slice(), &exps[..n], &raised[..n]);
            }
            if k.attn_values_q8_0_group(&mut ys[..g], values, row, col0, &es[..g], &rs[..g]) {
                for a in accs.iter_mut() {
                    a.sum = softmax_sum(a.sum, &a.exps[..n], &a.raised[..n]);
                }
                return;
            }
        }
        let mut vs = [0f32; 8];
        let mut sums: [f32; 8] = std::array::from_fn(|g| accs.get(g).map_or(0.0, |a| a.sum));
        for j in 0..n {
            for (g, a) in accs.iter_mut().enumerate() {
                let (e, raised) = (a.exps[j], a.raised[j]);
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

    /// Each key's score into `exps`, sixteen keys per kernel call where this ISA has one.
    fn score(&mut self, k: &Kernels, keys: &[u8], n: usize) {
        let d = self.q16.len();
        let row = 2 * d;
        self.exps.resize(n, 0.0);
        if !k.attn_scores_f16(&self.q16, &keys[..n * row], &mut self.exps) {
            let q: &[u8] = bytemuck::cast_slice(&self.q16);
            let dot = k
                .dot_fn(QuantType::F16)
                .expect("invariant: F16 has a dot kernel");
            for (j, s) in self.exps.iter_mut().enumerate() {
                *s = dot(d, &keys[j * row..(j + 1) * row], q);
            }
        }
    }

    /// The scores in `exps` (n of them) to weights for the value accumulation, in `exps` and
    /// `raised` (each key's weight, or rescale factor when it raised the maximum): scaled (and
    /// soft-capped), the running maximum, then every key's exponential in one vector call — the running maximum after
    /// each key depends only on the scores, so each `expf` argument is known before any is
    /// computed. The arithmetic is the one-key-at-a-time loop's, in the same order.
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

    /// The second half of [`add`](Self::add): the values weighted by `exps` (already done when
    /// `fused`, by a kernel) and the softmax denominator.
    fn accumulate(&mut self, k: &Kernels, values: &[u8], n: usize, fused: bool) {
        let row = 2 * self.q16.len();
        debug_assert!(self.exps.len() == n && values.len() >= n * row);
        let mut sum = self.sum;
        if fused {
            sum = softmax_sum(sum, &self.exps, &self.raised);
        } else {
            for (j, (&e, &raised)) in self.exps.iter().zip(&self.raised).enumerate() {
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
        let inv = if self.sum > 0.0 { 1.0 / self.sum } else { 0.0 };
        // A Q8_0 cache always sums in f32 (llama.cpp's `VKQ32`).
        let mode = match self.kv {
            KvFormat::F16 => self.mode,
            KvFormat::Q8_0 => AttnAccum::F32,
        };
        match mode {
            AttnAccum::F16 => {
                // Exact conversion (vectorized by `half`), then the same product per element.
                let n = out.len().min(self.acc16.len());
                let acc: &[f16] = bytemuck::cast_slice(&self.acc16[..n]);
                acc.convert_to_f32_slice(&mut out[..n]);
                out[..n].iter_mut().for_each(|o| *o *= inv);
            }
            AttnAccum::F32 => {
                for (o, &a) in out.iter_mut().zip(&self.acc) {
                    *o = a * inv;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::bits;
    use crate::Isa;

    /// f32 values as little-endian f16 bytes (a K/V cache row).
    fn to_f16_bytes(v: &[f32]) -> Vec<u8> {
        v.iter()
            .flat_map(|x| f16::from_f32(*x).to_bits().to_le_bytes())
            .collect()
    }

    #[test]
    fn attention_matches_two_pass_softmax() {
        let k = Kernels::new(Isa::Scalar).unwrap();
        let d = 8;
        let n = 13;
        let q: Vec<f32> = (0..d).map(|i| (i as f32 * 0.3).sin()).collect();
        let keys: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.17).cos()).collect();
        let vals: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.11).sin()).collect();
        let (kb, vb) = (to_f16_bytes(&keys), to_f16_bytes(&vals));
        let mut outs = Vec::new();
        for mode in [AttnAccum::F32, AttnAccum::F16] {
            let mut acc = AttentionAccumulator::new(d, mode);
            acc.begin(&q, 0.5);
            // Two blocks: online softmax must equal one pass.
            acc.add(&k, &kb[..5 * d * 2], &vb[..5 * d * 2], 5, None);
            acc.add(&k, &kb[5 * d * 2..], &vb[5 * d * 2..], n - 5, None);
            let mut out = vec![0f32; d];
            acc.finish(&mut out);
            outs.push((mode, out));
        }
        let h = |x: f32| f16::from_f32(x).to_f32();
        let scores: Vec<f32> = (0..n)
            .map(|j| (0..d).map(|i| h(q[i]) * h(keys[j * d + i])).sum::<f32>() * 0.5)
            .collect();
        let m = scores.iter().cloned().fold(f32::MIN, f32::max);
        let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
        let z: f32 = e.iter().sum();
        for (mode, out) in outs {
            // f16 accumulation rounds each step to 11 significant bits.
            let tol = if mode == AttnAccum::F32 { 1e-5 } else { 4e-3 };
            for i in 0..d {
                let want: f32 = (0..n).map(|j| e[j] / z * h(vals[j * d + i])).sum();
                assert!(
                    (out[i] - want).abs() < tol,
                    "{mode:?} {i}: {} vs {want}",
                    out[i]
                );
            }
        }
    }

    #[test]
    fn block_scores_equal_the_f16_dot_key_by_key() {
        let mut rnd = crate::test_util::uniform(0x9e37_79b9_7f4a_7c15u64, -3.0, 6.0);
        for d in [64usize, 128, 256] {
            for n in [0usize, 1, 15, 16, 17, 40] {
                let q: Vec<u16> = (0..d).map(|_| f16::from_f32(rnd()).to_bits()).collect();
                let keys: Vec<u8> = (0..n * d)
                    .flat_map(|_| f16::from_f32(rnd()).to_bits().to_le_bytes())
                    .collect();
                for isa in Isa::available() {
                    let k = Kernels::new(isa).unwrap();
                    let mut got = vec![0f32; n];
                    if !k.attn_scores_f16(&q, &keys, &mut got) {
                        assert!(isa != Isa::Avx512, "AVX-512 has block scores for d {d}");
                        continue;
                    }
                    let qb: &[u8] = bytemuck::cast_slice(&q);
                    for (j, g) in got.iter().enumerate() {
                        let want = k.dot(QuantType::F16, d, &keys[j * 2 * d..(j + 1) * 2 * d], qb);
                        assert_eq!(
                            g.to_bits(),
                            want.unwrap().to_bits(),
                            "{isa} d {d} key {j}/{n}"
                        );
                    }
                    // Groups of queries: each query's scores as the one-query call gives them.
                    for g in 2..=4usize {
                        let qs: Vec<Vec<u16>> = (0..g)
                            .map(|i| q.iter().map(|&h| h ^ (i as u16 * 0x0101)).collect())
                            .collect();
                        let refs: Vec<&[u16]> = qs.iter().map(|q| q.as_slice()).collect();
                        let mut outs = vec![vec![0f32; n]; g];
                        let mut views: Vec<&mut [f32]> =
                            outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                        assert!(
                            k.attn_scores_f16_group(&refs, &keys, &mut views),
                            "{isa} {d}"
                        );
                        for (qi, (qq, o)) in qs.iter().zip(&outs).enumerate() {
                            let mut alone = vec![0f32; n];
                            assert!(k.attn_scores_f16(qq, &keys, &mut alone));
                            assert_eq!(
                                bits(o),
                                bits(&alone),
                                "{isa} d {d} n {n} group {g} query {qi}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn grouped_queries_equal_each_query_alone() {
        let mut rnd = crate::test_util::uniform(0x1405_7b7e_f767_814fu64, -2.0, 4.0);
        for d in [64usize, 72, 256] {
            for g in [1usize, 2, 3, 4] {
                let n = 41;
                let qs: Vec<Vec<f32>> = (0..g).map(|_| (0..d).map(|_| rnd()).collect()).collect();
                let kb = to_f16_bytes(&(0..n * d).map(|_| rnd()).collect::<Vec<_>>());
                let vb = to_f16_bytes(&(0..n * d).map(|_| rnd()).collect::<Vec<_>>());
                for isa in Isa::available() {
                    let k = Kernels::new(isa).unwrap();
                    let blocks = [1usize, 16, 3, 21];
                    let mut group: Vec<AttentionAccumulator> = qs
                        .iter()
                        .map(|q| {
                            let mut a = AttentionAccumulator::new(d, AttnAccum::F16);
                            a.begin(q, 0.7);
                            a
                        })
                        .collect();
                    let mut start = 0;
                    for len in blocks {
                        let (a, b) = (start * d * 2, (start + len) * d * 2);
                        AttentionAccumulator::add_group(
                            &k,
                            &mut group,
                            &kb[a..b],
                            &vb[a..b],
                            len,
                            None,
                        );
                        start += len;
                    }
                    for (qi, q) in qs.iter().enumerate() {
                        let mut alone = AttentionAccumulator::new(d, AttnAccum::F16);
                        alone.begin(q, 0.7);
                        let mut start = 0;
                        for len in blocks {
                            let (a, b) = (start * d * 2, (start + len) * d * 2);
                            alone.add(&k, &kb[a..b], &vb[a..b], len, None);
                            start += len;
                        }
                        let (mut x, mut y) = (vec![0f32; d], vec![0f32; d]);
                        group[qi].finish(&mut x);
                        alone.finish(&mut y);
                        assert_eq!(bits(&x), bits(&y), "{isa} d {d} group {g} query {qi}");
                    }
                }
            }
        }
    }

    #[test]
    fn column_slices_equal_the_whole_head() {
        let mut rnd = crate::test_util::uniform(0x6a09_e667_f3bc_c908u64, -2.0, 4.0);
        // (head size, column cuts): halves, quarters, a 32-column slice, and a head size
        // without a vector path (72) cut unevenly.
        let cases: [(usize, &[usize]); 4] = [
            (64, &[0, 32, 64]),
            (256, &[0, 128, 256]),
            (256, &[0, 64, 96, 192, 256]),
            (72, &[0, 40, 72]),
        ];
        for (d, cuts) in cases {
            for g in [1usize, 3, 4] {
                let n = 37;
                let qs: Vec<Vec<f32>> = (0..g).map(|_| (0..d).map(|_| rnd()).collect()).collect();
                let kb = to_f16_bytes(&(0..n * d).map(|_| rnd()).collect::<Vec<_>>());
                let vb = to_f16_bytes(&(0..n * d).map(|_| rnd()).collect::<Vec<_>>());
                let blocks = [5usize, 16, 16];
                let run = |k: &Kernels, cols: std::ops::Range<usize>, mode| -> Vec<Vec<f32>> {
                    let mut accs: Vec<AttentionAccumulator> = qs
                        .iter()
                        .map(|q| {
                            let mut a =
                                AttentionAccumulator::new(d, mode).with_columns(cols.clone());
                            a.begin(q, 0.6);
                            a
                        })
                        .collect();
                    let mut start = 0;
                    for len in blocks {
                        let (a, b) = (start * d * 2, (start + len) * d * 2);
                        if g == 1 {
                            accs[0].add(k, &kb[a..b], &vb[a..b], len, Some(20.0));
                        } else {
                            AttentionAccumulator::add_group(
                                k,
                                &mut accs,
                                &kb[a..b],
                                &vb[a..b],
                                len,
                                Some(20.0),
                            );
                        }
                        start += len;
                    }
                    accs.iter()
                        .map(|a| {
                            let mut o = vec![0f32; a.columns().len()];
                            a.finish(&mut o);
                            o
                        })
                        .collect()
                };
                for isa in Isa::available() {
                    let k = Kernels::new(isa).unwrap();
                    for mode in [AttnAccum::F16, AttnAccum::F32] {
                        let whole = run(&k, 0..d, mode);
                        for w in cuts.windows(2) {
                            let part = run(&k, w[0]..w[1], mode);
                            for (qi, (p, full)) in part.iter().zip(&whole).enumerate() {
                                assert_eq!(
                                    bits(p),
                                    bits(&full[w[0]..w[1]]),
                                    "{isa} {mode:?} d {d} group {g} query {qi} cols {w:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn attention_is_bit_identical_on_every_isa() {
        // Head sizes with and without a fused vector path (72 is not a multiple of 16), blocks
        // of uneven length, scores that raise the maximum mid-block, with and without softcap.
        let mut rnd = crate::test_util::uniform(0x2545_f491_4f6c_dd1du64, -2.0, 4.0);
        for d in [16usize, 64, 72, 256] {
            let n = 37;
            let q: Vec<f32> = (0..d).map(|_| rnd()).collect();
            let kb = to_f16_bytes(&(0..n * d).map(|_| rnd()).collect::<Vec<_>>());
            let vb = to_f16_bytes(&(0..n * d).map(|_| rnd()).collect::<Vec<_>>());
            for softcap in [None, Some(3.0f32)] {
                let run = |isa: Isa| {
                    let k = Kernels::new(isa).unwrap();
                    let mut acc = AttentionAccumulator::new(d, AttnAccum::F16);
                    acc.begin(&q, 0.7);
                    let mut start = 0;
                    for len in [1usize, 16, 3, 17] {
                        let (a, b) = (start * d * 2, (start + len) * d * 2);
                        acc.add(&k, &kb[a..b], &vb[a..b], len, softcap);
                        start += len;
                    }
                    let mut out = vec![0f32; d];
                    acc.finish(&mut out);
                    bits(&out)
                };
                let want = run(Isa::Scalar);
                for isa in Isa::available() {
                    assert_eq!(run(isa), want, "{isa} d {d} softcap {softcap:?}");
                }
            }
        }
    }
}
