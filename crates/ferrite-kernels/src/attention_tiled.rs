//! Attention for many queries at once over an f16 cache, with the arithmetic of llama.cpp's
//! *tiled* CPU flash attention (`ggml_compute_forward_flash_attn_ext_tiled`), which llama.cpp
//! runs whenever a batch holds at least [`TILED_MIN_QUERIES`] query tokens (prompt processing,
//! perplexity) — the one-query kernel of [`crate::attention`] serves everything else.
//!
//! Per query row, for each tile of [`KV_TILE`] key positions (aligned to multiples of
//! [`KV_TILE`]): the scores are f32 dot products of the f32 query with the keys widened to f32,
//! one fused multiply-add chain per score (`simd_gemm`; computed here as keys × transposed
//! queries, which leaves every chain as it is and needs no transposed copy of each key tile),
//! times the scale, −∞ where masked; the
//! running maximum moves by the tile's maximum (the accumulator and sum rescaled by libm
//! `expf(old − new)`); the weights are ggml's polynomial `exp(s − max)` summed in f64 per
//! 16-lane chunk ([`crate::compat::soft_max`]) and added to the f32 sum; the f32 accumulator
//! gains `Σ p·v` as one FMA chain per element over the tile's keys. At the end it is divided by
//! the sum. No f16 rounding per key (the one-query kernel's f16 accumulator), and both products
//! are register-tiled matrix products: faster, and equal to llama.cpp's prompt numbers.
//!
//! Every element's chain is the same whatever rows share a tile, so results do not depend on
//! how queries are grouped; keys of positions a row cannot see contribute `0·v` (nothing), so
//! the keys a unit reads beyond one row's range change nothing for that row.

use std::ops::Range;

use crate::compat::soft_max;
use crate::dot::Kernels;
use crate::half_rows::f16_to_f32;
use crate::isa::Isa;

/// Key positions per tile (`GGML_FA_TILE_KV`): the softmax bookkeeping is per tile, so this is
/// part of the arithmetic, not a tuning knob.
pub const KV_TILE: usize = 64;

/// Query tokens a batch must hold for llama.cpp to take its tiled path (`GGML_FA_TILE_Q`).
pub const TILED_MIN_QUERIES: usize = 64;

/// `C[m×n] += A[m×k]·B[k×n]` (row-major, leading dimensions `lda`, `ldb`, `ldc`), each element
/// one FMA chain over k in order started from its C value: ggml's `simd_gemm`. The scalar
/// reference of the SIMD kernels.
#[allow(clippy::too_many_arguments)]
pub fn gemm_ref(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = c[i * ldc + j];
            for kk in 0..k {
                s = a[i * lda + kk].mul_add(b[kk * ldb + j], s);
            }
            c[i * ldc + j] = s;
        }
    }
}

/// [`gemm_ref`] with this ISA's kernel where it has one for `n`.
#[allow(clippy::too_many_arguments)]
fn gemm(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    let fits = m == 0
        || (a.len() >= (m - 1) * lda + k
            && (k == 0 || b.len() >= (k - 1) * ldb + n)
            && c.len() >= (m - 1) * ldc + n);
    assert!(fits, "invariant: gemm shapes checked by the caller");
    #[cfg(target_arch = "x86_64")]
    {
        use crate::arch::x86_64::fgemm;
        if isa == Isa::Avx512 && n.is_multiple_of(16) {
            // SAFETY: `Isa::Avx512` is only ever held by a kernel table built for a CPU that
            // has it (AVX-512F); the shapes were checked above and n % 16 == 0.
            unsafe {
                fgemm::gemm_avx512(
                    m,
                    k,
                    n,
                    a.as_ptr(),
                    lda,
                    b.as_ptr(),
                    ldb,
                    c.as_mut_ptr(),
                    ldc,
                )
            };
            return;
        }
        if matches!(isa, Isa::Avx2 | Isa::Avx512) && n.is_multiple_of(8) {
            // SAFETY: as above (AVX2 and FMA are part of both levels), n % 8 == 0.
            unsafe {
                fgemm::gemm_avx2(
                    m,
                    k,
                    n,
                    a.as_ptr(),
                    lda,
                    b.as_ptr(),
                    ldb,
                    c.as_mut_ptr(),
                    ldc,
                )
            };
            return;
        }
    }
    let _ = isa;
    gemm_ref(m, k, n, a, lda, b, ldb, c, ldc);
}

/// [`soft_max`] with this ISA's kernel where it has one.
fn soft_max_isa(isa: Isa, x: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: AVX-512F is available (see `gemm`); x holds x.len() floats.
        return unsafe { crate::arch::x86_64::act::soft_max_avx512(x.len(), x.as_mut_ptr(), max) };
    }
    let _ = isa;
    soft_max(x, max)
}

/// Tiled attention of a set of query rows (typically some tokens' query heads that share one
/// KV head) over keys and values fed in position order. Reusable: [`begin`](Self::begin)
/// starts a new set, keeping the buffers.
#[derive(Debug, Clone)]
pub struct TiledAttention {
    isa: Isa,
    dk: usize,
    dv: usize,
    scale: f32,
    /// Query rows (`rows × dk`), transposed (`dk × rows_pad`, rows padded with zeros to a
    /// whole number of 16-lane vectors), and the key positions each may see.
    q: Vec<f32>,
    qt: Vec<f32>,
    rows_pad: usize,
    visible: Vec<Range<usize>>,
    /// The tile being filled: keys and values widened to f32 (`KV_TILE × dk`, `KV_TILE × dv`),
    /// and which of its offsets hold keys.
    k: Vec<f32>,
    v: Vec<f32>,
    tile: Option<usize>,
    filled: Range<usize>,
    /// Scores as computed (`KV_TILE × rows_pad`, key-major); scores then weights per row
    /// (`rows × KV_TILE`); accumulators (`rows × dv`), maxima and sums; one output row.
    st: Vec<f32>,
    kq: Vec<f32>,
    acc: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
    out: Vec<f32>,
}

impl TiledAttention {
    /// Buffers for keys of `dk` and values of `dv` elements, using `kernels`' ISA.
    pub fn new(kernels: &Kernels, dk: usize, dv: usize) -> TiledAttention {
        TiledAttention {
            isa: kernels.isa(),
            dk,
            dv,
            scale: 1.0,
            q: Vec::new(),
            qt: Vec::new(),
            rows_pad: 0,
            visible: Vec::new(),
            k: vec![0.0; KV_TILE * dk],
            v: vec![0.0; KV_TILE * dv],
            tile: None,
            filled: 0..0,
            st: Vec::new(),
            kq: Vec::new(),
            acc: Vec::new(),
            max: Vec::new(),
            sum: Vec::new(),
            out: vec![0.0; dv],
        }
    }

    /// The key and value sizes it was made for.
    pub fn dims(&self) -> (usize, usize) {
        (self.dk, self.dv)
    }

    /// Start a new set of queries, scores multiplied by `scale`.
    pub fn begin(&mut self, scale: f32) {
        self.scale = scale;
        self.q.clear();
        self.visible.clear();
        self.tile = None;
        self.filled = 0..0;
    }

    /// Add a query row (`dk` values) that sees key positions `visible`.
    pub fn push_query(&mut self, q: &[f32], visible: Range<usize>) {
        assert_eq!(q.len(), self.dk, "invariant: query of the head size");
        self.q.extend_from_slice(q);
        self.visible.push(visible);
    }

    /// Query rows added since [`begin`](Self::begin).
    pub fn rows(&self) -> usize {
        self.visible.len()
    }

    /// Feed `n` keys and values (f16, little-endian bytes, `dk` and `dv` halves each) at
    /// positions `pos..pos + n`; positions must increase from call to call.
    pub fn feed(&mut self, pos: usize, keys: &[u8], values: &[u8], n: usize) {
        let (dk, dv) = (self.dk, self.dv);
        assert!(
            keys.len() >= n * dk * 2 && values.len() >= n * dv * 2,
            "invariant: the store hands out whole rows"
        );
        if self.tile.is_none() {
            self.start_rows();
        }
        for i in 0..n {
            let p = pos + i;
            let (tile, off) = (p / KV_TILE, p % KV_TILE);
            if self.tile != Some(tile) {
                self.flush();
                self.tile = Some(tile);
                self.filled = off..off;
            }
            let kb = &keys[i * dk * 2..(i + 1) * dk * 2];
            let vb = &values[i * dv * 2..(i + 1) * dv * 2];
            f16_to_f32(kb, &mut self.k[off * dk..(off + 1) * dk]);
            f16_to_f32(vb, &mut self.v[off * dv..(off + 1) * dv]);
            self.filled.end = off + 1;
        }
    }

    /// Finish: write row r's output (`dv` values) through `out(r, row)`.
    pub fn finish(&mut self, mut out: impl FnMut(usize, &[f32])) {
        if self.tile.is_none() {
            self.start_rows();
        }
        self.flush();
        let dv = self.dv;
        for r in 0..self.rows() {
            let s = self.sum[r];
            let inv = if s == 0.0 { 0.0 } else { 1.0 / s };
            for (o, &a) in self.out.iter_mut().zip(&self.acc[r * dv..(r + 1) * dv]) {
                *o = a * inv;
            }
            out(r, &self.out);
        }
    }

    /// Size and reset the per-row state for the rows added.
    fn start_rows(&mut self) {
        let (rows, dk) = (self.rows(), self.dk);
        let rp = rows.div_ceil(16) * 16;
        self.rows_pad = rp;
        self.qt.clear();
        self.qt.resize(dk * rp, 0.0);
        for (r, q) in self.q.chunks_exact(dk).enumerate() {
            for (d, &x) in q.iter().enumerate() {
                self.qt[d * rp + r] = x;
            }
        }
        self.st.resize(KV_TILE * rp, 0.0);
        self.kq.resize(rows * KV_TILE, 0.0);
        self.acc.clear();
        self.acc.resize(rows * self.dv, 0.0);
        self.max.clear();
        self.max.resize(rows, f32::NEG_INFINITY);
        self.sum.clear();
        self.sum.resize(rows, 0.0);
    }

    /// Run the filled tile through every row.
    fn flush(&mut self) {
        let Some(tile) = self.tile else { return };
        if self.filled.is_empty() {
            return;
        }
        let (rows, dk, dv, isa, rp) = (self.rows(), self.dk, self.dv, self.isa, self.rows_pad);
        // Scores of the fed keys only: st[j][r] = key j · query r, from zero.
        let (f0, nf) = (self.filled.start, self.filled.len());
        let st = &mut self.st[f0 * rp..(f0 + nf) * rp];
        st.fill(0.0);
        gemm(
            isa,
            nf,
            dk,
            rp,
            &self.k[f0 * dk..],
            dk,
            &self.qt,
            rp,
            st,
            rp,
        );
        let kq = &mut self.kq[..rows * KV_TILE];
        let base = tile * KV_TILE;
        let fed = base + f0..base + f0 + nf;
        for r in 0..rows {
            let row = &mut kq[r * KV_TILE..(r + 1) * KV_TILE];
            let vis = &self.visible[r];
            let seen = vis.start.max(fed.start)..vis.end.min(fed.end);
            let mut tile_max = f32::NEG_INFINITY;
            for (j, s) in row.iter_mut().enumerate() {
                *s = if seen.contains(&(base + j)) {
                    self.st[j * rp + r] * self.scale
                } else {
                    f32::NEG_INFINITY
                };
                // ggml's MAX(max, x): keeps the running value unless x is larger.
                tile_max = if tile_max > *s { tile_max } else { *s };
            }
            if tile_max == f32::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            let old = self.max[r];
            let new = old.max(tile_max);
            if new > old {
                let ms = (old - new).exp();
                self.acc[r * dv..(r + 1) * dv]
                    .iter_mut()
                    .for_each(|a| *a *= ms);
                self.sum[r] *= ms;
            }
            self.max[r] = new;
            self.sum[r] = (f64::from(self.sum[r]) + soft_max_isa(isa, row, new)) as f32;
        }
        // Offsets without keys have weight 0 in every row: only the fed ones are summed.
        gemm(
            isa,
            rows,
            nf,
            dv,
            &kq[f0..],
            KV_TILE,
            &self.v[f0 * dv..],
            dv,
            &mut self.acc,
            dv,
        );
        self.filled = 0..0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::{AttentionAccumulator, AttnAccum};
    use crate::test_util::{bits, uniform};
    use half::f16;

    fn kernel_tables() -> Vec<Kernels> {
        Isa::ALL
            .iter()
            .filter(|i| i.is_available())
            .map(|&i| Kernels::new(i).expect("available"))
            .collect()
    }

    /// f32 values rounded to f16, as little-endian bytes (cache rows), and back.
    fn to_f16(v: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
        (
            h.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
            h.iter().map(|x| x.to_f32()).collect(),
        )
    }

    #[test]
    fn gemm_kernels_equal_the_reference_bit_for_bit() {
        let mut r = uniform(7, -2.0, 4.0);
        for k in kernel_tables() {
            for (m, kk, n) in [
                (1, 1, 16),
                (3, 7, 64),
                (4, 64, 64),
                (9, 64, 256),
                (6, 256, 80),
                (5, 33, 8),
            ] {
                let (lda, ldb, ldc) = (kk + 3, n + 16, n + 8);
                let a: Vec<f32> = (0..m * lda).map(|_| r()).collect();
                let b: Vec<f32> = (0..kk * ldb).map(|_| r()).collect();
                let c0: Vec<f32> = (0..m * ldc).map(|_| r()).collect();
                let mut want = c0.clone();
                gemm_ref(m, kk, n, &a, lda, &b, ldb, &mut want, ldc);
                let mut got = c0.clone();
                gemm(k.isa(), m, kk, n, &a, lda, &b, ldb, &mut got, ldc);
                assert_eq!(bits(&got), bits(&want), "{:?} {m}×{kk}×{n}", k.isa());
            }
        }
    }

    #[test]
    fn soft_max_kernels_equal_the_reference() {
        let mut r = uniform(11, -30.0, 30.0);
        for k in kernel_tables() {
            for n in [64, 70, 5] {
                let mut x: Vec<f32> = (0..n).map(|_| r()).collect();
                x[n / 2] = f32::NEG_INFINITY;
                let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let mut want = x.clone();
                let ws = soft_max(&mut want, max);
                let gs = soft_max_isa(k.isa(), &mut x, max);
                assert_eq!(bits(&x), bits(&want), "{:?} n={n}", k.isa());
                assert_eq!(gs.to_bits(), ws.to_bits());
                assert_eq!(x[n / 2], 0.0, "a masked score weighs nothing");
            }
        }
    }

    /// One query row by the tiled algorithm written out plainly: tiles of the row's own
    /// visible range, nothing shared with other rows.
    fn reference_row(
        q: &[f32],
        keys: &[Vec<f32>],
        values: &[Vec<f32>],
        visible: Range<usize>,
        scale: f32,
    ) -> Vec<f32> {
        let dv = values[0].len();
        let (mut max, mut sum, mut acc) = (f32::NEG_INFINITY, 0f32, vec![0f32; dv]);
        let first = visible.start / KV_TILE;
        let last = (visible.end - 1) / KV_TILE;
        for tile in first..=last {
            let mut s = [f32::NEG_INFINITY; KV_TILE];
            for (j, sj) in s.iter_mut().enumerate() {
                let p = tile * KV_TILE + j;
                if visible.contains(&p) {
                    let dot = q
                        .iter()
                        .zip(&keys[p])
                        .fold(0f32, |a, (&x, &y)| x.mul_add(y, a));
                    *sj = dot * scale;
                }
            }
            let tmax = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let new = max.max(tmax);
            if new > max {
                let ms = (max - new).exp();
                acc.iter_mut().for_each(|a| *a *= ms);
                sum *= ms;
            }
            max = new;
            sum = (f64::from(sum) + soft_max(&mut s, new)) as f32;
            for (j, &p) in s.iter().enumerate() {
                let pos = tile * KV_TILE + j;
                if visible.contains(&pos) {
                    for (a, &v) in acc.iter_mut().zip(&values[pos]) {
                        *a = p.mul_add(v, *a);
                    }
                }
            }
        }
        acc.iter().map(|a| a * (1.0 / sum)).collect()
    }

    /// Rows with different ranges (causal ends, sliding-window starts, a range inside one
    /// tile), keys fed in runs of various lengths (pages of a paged cache) starting off a tile
    /// boundary: every row equals the plain one-row algorithm, on every ISA, and stays close to
    /// the f32 one-query accumulator (the same attention, summed in another order).
    #[test]
    fn tiled_rows_equal_the_plain_algorithm() {
        let mut r = uniform(3, -1.5, 3.0);
        for k in kernel_tables() {
            for (dk, n_keys, start) in [(64usize, 300usize, 0usize), (256, 140, 37), (128, 64, 0)] {
                let kf: Vec<(Vec<u8>, Vec<f32>)> = (0..start + n_keys)
                    .map(|_| to_f16(&(0..dk).map(|_| 2.0 * r()).collect::<Vec<_>>()))
                    .collect();
                let vf: Vec<(Vec<u8>, Vec<f32>)> = (0..start + n_keys)
                    .map(|_| to_f16(&(0..dk).map(|_| r()).collect::<Vec<_>>()))
                    .collect();
                let end = start + n_keys;
                let ranges = [
                    start..end,
                    start..start + 1,
                    start..(start + 70).min(end),
                    (end - 20).max(start)..end,
                    (start + 3).min(end - 1)..(start + 9).min(end),
                    start..end - 1,
                ];
                let qs: Vec<Vec<f32>> = ranges
                    .iter()
                    .map(|_| (0..dk).map(|_| r()).collect())
                    .collect();
                let scale = 1.0 / (dk as f32).sqrt();
                for run in [1usize, 5, 16, 64] {
                    let mut t = TiledAttention::new(&k, dk, dk);
                    t.begin(scale);
                    for (q, range) in qs.iter().zip(&ranges) {
                        t.push_query(q, range.clone());
                    }
                    let mut p = start;
                    while p < end {
                        let n = run.min(end - p);
                        let kb: Vec<u8> = kf[p..p + n].iter().flat_map(|x| x.0.clone()).collect();
                        let vb: Vec<u8> = vf[p..p + n].iter().flat_map(|x| x.0.clone()).collect();
                        t.feed(p, &kb, &vb, n);
                        p += n;
                    }
                    let mut got = vec![Vec::new(); ranges.len()];
                    t.finish(|row, o| got[row] = o.to_vec());
                    let keys: Vec<Vec<f32>> = kf.iter().map(|x| x.1.clone()).collect();
                    let values: Vec<Vec<f32>> = vf.iter().map(|x| x.1.clone()).collect();
                    for (row, range) in ranges.iter().enumerate() {
                        let want = reference_row(&qs[row], &keys, &values, range.clone(), scale);
                        assert_eq!(
                            bits(&got[row]),
                            bits(&want),
                            "{:?} d={dk} run={run} row {row}",
                            k.isa()
                        );
                        // The one-query accumulator in f32 mode over the same keys.
                        let mut one = AttentionAccumulator::new(dk, AttnAccum::F32);
                        one.begin(&qs[row], scale);
                        for p in range.clone() {
                            one.add(&k, &kf[p].0, &vf[p].0, 1, None);
                        }
                        let mut close = vec![0f32; dk];
                        one.finish(&mut close);
                        for (a, b) in got[row].iter().zip(&close) {
                            assert!((a - b).abs() < 2e-3, "row {row}: {a} vs {b}");
                        }
                    }
                }
            }
        }
    }
}
