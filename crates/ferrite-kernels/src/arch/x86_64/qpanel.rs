//! Panel products for prompt-sized batches of the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0) with AVX-512 VNNI: 16 weight rows, repacked per call into a *panel* whose 512-bit
//! vectors hold four quants of each of the 16 rows, against one or two activation rows per call.
//!
//! One `vpdpbusd` multiplies four quants of 16 weight rows by the same four quants of one
//! activation row (broadcast): each i32 lane is exactly one of the eight lane sums that the row
//! kernels (`qdot`, ggml's AVX2 arithmetic) form per block, for 16 outputs at once. The float
//! work keeps their arithmetic (per lane `acc = fma(d_w·d_a, f32(p), acc)`, ggml's horizontal
//! sum order at the end, the min term summed apart), so results are bit-identical; it just runs
//! 16 outputs wide instead of 8 lanes of one output, half the float operations per product of
//! the register tiles in [`super::qtile`].
//!
//! (The block-sum arithmetic of llama.cpp's repacked GEMMs, one FMA per block, would halve the
//! float work again — measured 3.5× the tiles instead of about 2× — but it rounds differently,
//! and on the golden prompts that flipped greedy tokens of 4 of 6 SmolLM2 and 3 of 6 Gemma3
//! continuations against llama.cpp's; ferrite keeps llama.cpp's numbers.)
//!
//! Weights are decoded to unsigned bytes `u = w + o` as in [`super::qtile`]; the packed
//! activations (the one-row groups of `crate::tiled::pack_group`) carry each chunk's `−o·Σa`,
//! the starting value of its `vpdpbusd`.
//!
//! Layouts: a panel block ([`PANEL_BLOCK_BYTES`], built by [`pack_panel`]) is
//! `[16 × f32 d_w][16 × f32 m_w][8 × 64 quant bytes]`, 64-byte chunk k holding quants 4k..4k+4
//! of rows 0..16; an activation block (`packed_block_bytes(1)`) is
//! `[32 × i8 quants][8 × i32 −o·Σ][f32 d][f32 s]`.
//!
//! # Safety contract
//! The panel must hold `nb` panel blocks, the activations `RA` rows of `nb` blocks at stride
//! `a_stride` bytes, and `out` must be valid for 16 (masked to `n_rows`) floats at each of
//! `out + i·out_stride`, `i < RA`. The entries in `dot` check this, and are installed only in a
//! table whose ISA (AVX-512 VNNI) the CPU has.

use std::arch::x86_64::*;

use super::common::f16_at;
use super::qtile::{decode, has_min, weight_block_bytes};
use crate::k_panel::{
    Q4K_DMIN, Q4K_MINS, Q4K_PANEL_BYTES, Q4K_QUANTS, Q4K_SCALES, Q6K_PAIRS, Q6K_PANEL_BYTES,
    Q6K_QUANTS, Q6K_SCALES,
};
use crate::quant::blocks::BlockQ8K;
use crate::tiled::{packed_block_bytes, PANEL_BLOCK_BYTES, PANEL_ROWS};

/// Bytes of one Q8_K activation block.
const Q8K_BLOCK_BYTES: usize = std::mem::size_of::<BlockQ8K>();
/// Bytes of one packed activation block (a one-row group of `crate::tiled::pack_group`).
const ACT_BLOCK_BYTES: usize = packed_block_bytes(1);

/// Store `rows[i]` (one output per lane) at `out + i·out_stride`, lanes below `n_rows` only
/// (a partial panel's missing rows are not written).
///
/// # Safety
/// `out + i·out_stride` must be valid for `min(n_rows, 16)` floats for every `i < RA`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn store_rows<const RA: usize>(
    out: *mut f32,
    out_stride: usize,
    n_rows: usize,
    rows: [__m512; RA],
) {
    let mask = ((1u32 << n_rows.min(PANEL_ROWS)) - 1) as __mmask16;
    for (i, v) in rows.iter().enumerate() {
        // SAFETY: the caller's contract.
        unsafe { _mm512_mask_storeu_ps(out.add(i * out_stride), mask, *v) };
    }
}

/// Finish the eight lane accumulators of each activation row (one output per 512-bit lane) in
/// the row kernels' order — ggml's `hsum_float_8`, `(l0+l4 + l2+l6) + (l1+l5 + l3+l7)`, then
/// `+ mins` for the min formats, whose row kernels return `hsum + mins` (the others return the
/// sum alone: adding 0.0 would turn a −0.0 into +0.0) — and store them as [`store_rows`] does.
///
/// # Safety
/// As [`store_rows`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn store_lane_sums<const RA: usize>(
    out: *mut f32,
    out_stride: usize,
    n_rows: usize,
    acc: &[[__m512; 8]; RA],
    mins: Option<&[__m512; RA]>,
) {
    let sums: [__m512; RA] = std::array::from_fn(|i| {
        let l = &acc[i];
        let h: [__m512; 4] = std::array::from_fn(|j| _mm512_add_ps(l[j + 4], l[j]));
        let s = _mm512_add_ps(_mm512_add_ps(h[0], h[2]), _mm512_add_ps(h[1], h[3]));
        match mins {
            Some(m) => _mm512_add_ps(s, m[i]),
            None => s,
        }
    });
    // SAFETY: the caller's contract.
    unsafe { store_rows(out, out_stride, n_rows, sums) };
}

/// Repack rows `0..n_rows` (≤ 16) of `w` (stride `w_stride`, `nb` blocks of format `F`) into a
/// panel at `out`; missing rows are zero (their outputs are masked off).
///
/// # Safety
/// `w` must hold `n_rows` rows of `nb` blocks at stride `w_stride`, and `out` be valid for
/// writing `nb` panel blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn pack_panel<const F: u8>(
    nb: usize,
    w: *const u8,
    w_stride: usize,
    n_rows: usize,
    out: *mut u8,
) {
    let wb = weight_block_bytes(F);
    for b in 0..nb {
        // SAFETY: panel block b and block b of each of the n_rows rows are in bounds (contract).
        unsafe {
            let o = out.add(b * PANEL_BLOCK_BYTES);
            let (dw, mw) = (o as *mut f32, o.add(64) as *mut f32);
            for j in 0..PANEL_ROWS {
                let mut quads = [0u32; 8];
                let (mut d, mut m) = (0.0, 0.0);
                if j < n_rows {
                    let x = w.add(j * w_stride + b * wb);
                    d = f16_at(x);
                    if has_min(F) {
                        m = f16_at(x.add(2));
                    }
                    _mm256_storeu_si256(quads.as_mut_ptr() as *mut __m256i, decode::<F>(x));
                }
                dw.add(j).write_unaligned(d);
                mw.add(j).write_unaligned(m);
                for (k, &q) in quads.iter().enumerate() {
                    (o.add(128 + 64 * k + 4 * j) as *mut u32).write_unaligned(q);
                }
            }
        }
    }
}

/// `out[i·out_stride + r]` = weight row r of the panel · activation row i, for `r < n_rows`,
/// `i < RA`, in the row kernels' arithmetic (module docs). `MIN`: the format has a min term
/// (and no unsigned offset); the others start each chunk's product at its correction.
///
/// # Safety
/// The module contract.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn panel<const MIN: bool, const RA: usize>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    a_stride: usize,
    out: *mut f32,
    out_stride: usize,
    n_rows: usize,
) {
    // acc[i][k]: lane k of the row kernel (quants 4k..4k+4 of every block) for 16 outputs.
    let mut acc = [[_mm512_setzero_ps(); 8]; RA];
    let mut mins = [_mm512_setzero_ps(); RA];
    for b in 0..nb {
        // SAFETY: panel block b and block b of the RA activation rows are in bounds (contract).
        unsafe {
            let wp = w.add(b * PANEL_BLOCK_BYTES);
            let ab = a.add(b * ACT_BLOCK_BYTES);
            let at = |i: usize, off: usize| ab.add(i * a_stride + off);
            let dw = _mm512_loadu_ps(wp as *const f32);
            let d: [__m512; RA] = std::array::from_fn(|i| {
                let da = (at(i, 64) as *const f32).read_unaligned();
                _mm512_mul_ps(dw, _mm512_set1_ps(da))
            });
            #[allow(clippy::needless_range_loop)] // k also addresses the panel and activations
            for k in 0..8 {
                let wk = _mm512_loadu_si512(wp.add(128 + 64 * k) as *const __m512i);
                for i in 0..RA {
                    let corr = if MIN {
                        _mm512_setzero_si512()
                    } else {
                        _mm512_set1_epi32((at(i, 32 + 4 * k) as *const i32).read_unaligned())
                    };
                    let av = _mm512_set1_epi32((at(i, 4 * k) as *const i32).read_unaligned());
                    let p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(corr, wk, av));
                    acc[i][k] = _mm512_fmadd_ps(d[i], p, acc[i][k]);
                }
            }
            if MIN {
                let mw = _mm512_loadu_ps(wp.add(64) as *const f32);
                for (i, m) in mins.iter_mut().enumerate() {
                    let sa = (at(i, 68) as *const f32).read_unaligned();
                    *m = _mm512_fmadd_ps(mw, _mm512_set1_ps(sa), *m);
                }
            }
        }
    }
    // SAFETY: the caller vouches for the outputs (contract).
    unsafe { store_lane_sums(out, out_stride, n_rows, &acc, MIN.then_some(&mins)) };
}

/// Q4_K panels against four activation rows (Q8_K), in the arithmetic of ggml's repacked GEMM
/// (`dot::scalar::q4_k_q8_k_rp4`, which llama.cpp applies to whole groups of four rows): per
/// super-block and pair c of 32-element sub-blocks, `isum = sc₂c·p₂c + sc₂c₊₁·p₂c₊₁` (exact),
/// `acc = fma(isum, d_w·d_a, acc)`, `acc_m = fma(mins_c, dmin_w·d_a, acc_m)`; result
/// `acc − acc_m`. Each `vpdpbusd` serves 16 weight rows; `p` is an exact integer below 2¹⁶ and
/// the 6-bit scales keep `isum` below 2²⁴, so forming it with float multiplies is exact too.
/// The min term `mn₂c·s₂c + mn₂c₊₁·s₂c₊₁` (sub-block sums `s` of the activations) is one
/// `vpmaddwd` of the panel's (mn₂c, mn₂c₊₁) i16 pairs with the activation's (s₂c, s₂c₊₁).
///
/// Layouts (built by `crate::k_panel`): a panel super-block is [`Q4K_PANEL_BYTES`]:
/// `[16 × f32 d][16 × f32 dmin][8 × 16 × f32 scale][4 × 16 × (i16 mn₂c, i16 mn₂c₊₁)]` then
/// for each sub-block g and chunk k, 16 rows × 4 quant bytes. Activations are Q8_K rows at
/// stride `a_stride`; `pairs` holds, per row (stride `p_stride` u32s), per super-block, 4 u32
/// `(s₂c as i16) | (s₂c₊₁ as i16) << 16`.
///
/// # Safety
/// `w` must hold `nsb` panel super-blocks, `a` 4 rows of `nsb` Q8_K blocks, `pairs` 4 rows of
/// `4·nsb` u32, and `out` be valid for 16 (masked to `n_rows`) floats at each `out +
/// i·out_stride`, i < 4.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn panel_q4k(
    nsb: usize,
    w: *const u8,
    a: *const u8,
    a_stride: usize,
    pairs: *const u32,
    p_stride: usize,
    out: *mut f32,
    out_stride: usize,
    n_rows: usize,
) {
    const RA: usize = 4;
    let mut acc = [_mm512_setzero_ps(); RA];
    let mut acc_m = [_mm512_setzero_ps(); RA];
    for sb in 0..nsb {
        // SAFETY: super-block sb of the panel, of the 4 activation rows and of their pairs are
        // in bounds (contract).
        unsafe {
            let wp = w.add(sb * Q4K_PANEL_BYTES);
            let ab = a.add(sb * Q8K_BLOCK_BYTES);
            let da: [f32; RA] =
                std::array::from_fn(|i| (ab.add(i * a_stride) as *const f32).read_unaligned());
            let dw = _mm512_loadu_ps(wp as *const f32);
            let dm = _mm512_loadu_ps(wp.add(Q4K_DMIN) as *const f32);
            // d_w·d_a and dmin_w·d_a: the same products for the super-block's four pairs.
            let d: [__m512; RA] = std::array::from_fn(|i| _mm512_mul_ps(dw, _mm512_set1_ps(da[i])));
            let dmin: [__m512; RA] =
                std::array::from_fn(|i| _mm512_mul_ps(dm, _mm512_set1_ps(da[i])));
            for c in 0..4 {
                let mut p = [[_mm512_setzero_si512(); RA]; 2];
                for k in 0..8 {
                    for (h, p) in p.iter_mut().enumerate() {
                        let g = 2 * c + h;
                        let wk = wp.add(Q4K_QUANTS + (8 * g + k) * 64);
                        let wk = _mm512_loadu_si512(wk as *const __m512i);
                        for (i, p) in p.iter_mut().enumerate() {
                            let q = ab.add(i * a_stride + 4 + 32 * g + 4 * k);
                            let av = _mm512_set1_epi32((q as *const i32).read_unaligned());
                            *p = _mm512_dpbusd_epi32(*p, wk, av);
                        }
                    }
                }
                let sc0 = _mm512_loadu_ps(wp.add(Q4K_SCALES + 64 * (2 * c)) as *const f32);
                let sc1 = _mm512_loadu_ps(wp.add(Q4K_SCALES + 64 * (2 * c + 1)) as *const f32);
                let mn = _mm512_loadu_si512(wp.add(Q4K_MINS + 64 * c) as *const __m512i);
                for i in 0..RA {
                    let lo = _mm512_mul_ps(_mm512_cvtepi32_ps(p[0][i]), sc0);
                    let isum = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[1][i]), sc1, lo);
                    acc[i] = _mm512_fmadd_ps(isum, d[i], acc[i]);
                    let s = *pairs.add(i * p_stride + 4 * sb + c);
                    let mins = _mm512_madd_epi16(mn, _mm512_set1_epi32(s as i32));
                    acc_m[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mins), dmin[i], acc_m[i]);
                }
            }
        }
    }
    let v: [__m512; RA] = std::array::from_fn(|i| _mm512_sub_ps(acc[i], acc_m[i]));
    // SAFETY: the caller vouches for the outputs (contract).
    unsafe { store_rows(out, out_stride, n_rows, v) };
}

/// Q6_K panels against four Q8_K activation rows, in the arithmetic of ggml's tiled K-quant
/// matmul (`dot::scalar::q6_k_q8_k_tl`, which llama.cpp uses for Q6_K when a batch has 8 or
/// more rows): per super-block the exact `isum = Σ_g sc_g·(Σ q·a − 32·s_g)` over the 16
/// sub-blocks g of 16 (`s_g` the activation's sums of 16, which Q8_K stores), then
/// `out += (f32(isum)·d_w)·d_a` — three float operations per super-block for 16 outputs.
/// `Σ q·a` of a sub-block comes from four `vpdpbusd` on the unsigned quants (q + 32 ≤ 63),
/// `sc_g·` from one `vpmulld`, and `Σ sc_g·s_g` from eight `vpmaddwd` of the panel's i16 scale
/// pairs with the activation's i16 sum pairs (both < 2¹⁵); every step is exact in i32.
///
/// Layout (built by `crate::k_panel::pack_q6k_panel`): [`Q6K_PANEL_BYTES`] per super-block.
///
/// # Safety
/// `w` must hold `nsb` panel super-blocks, `a` 4 rows of `nsb` Q8_K blocks at stride
/// `a_stride`, and `out` be valid for 16 (masked to `n_rows`) floats at each `out +
/// i·out_stride`, i < 4.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn panel_q6k(
    nsb: usize,
    w: *const u8,
    a: *const u8,
    a_stride: usize,
    _pairs: *const u32, // the Q4_K panel's signature; Q6_K reads Q8_K's own sums
    _p_stride: usize,
    out: *mut f32,
    out_stride: usize,
    n_rows: usize,
) {
    const RA: usize = 4;
    let mut acc = [_mm512_setzero_ps(); RA];
    for sb in 0..nsb {
        // SAFETY: super-block sb of the panel and of the 4 activation rows are in bounds
        // (contract); Q8_K: f32 d at 0, 256 quants at 4, 16 i16 sums at 260.
        unsafe {
            let wp = w.add(sb * Q6K_PANEL_BYTES);
            let ab = a.add(sb * Q8K_BLOCK_BYTES);
            let mut isum = [_mm512_setzero_si512(); RA];
            for g in 0..16 {
                let mut p = [_mm512_setzero_si512(); RA];
                for c in 0..4 {
                    let wk = wp.add(Q6K_QUANTS + 64 * (4 * g + c));
                    let wk = _mm512_loadu_si512(wk as *const __m512i);
                    for (i, p) in p.iter_mut().enumerate() {
                        let q = ab.add(i * a_stride + 4 + 16 * g + 4 * c);
                        let av = _mm512_set1_epi32((q as *const i32).read_unaligned());
                        *p = _mm512_dpbusd_epi32(*p, wk, av);
                    }
                }
                let sc = _mm512_loadu_si512(wp.add(Q6K_SCALES + 64 * g) as *const __m512i);
                for (s, p) in isum.iter_mut().zip(p) {
                    *s = _mm512_add_epi32(*s, _mm512_mullo_epi32(p, sc));
                }
            }
            let mut bias = [_mm512_setzero_si512(); RA];
            for m in 0..8 {
                let pair = _mm512_loadu_si512(wp.add(Q6K_PAIRS + 64 * m) as *const __m512i);
                for (i, b) in bias.iter_mut().enumerate() {
                    let s = (ab.add(i * a_stride + 260 + 4 * m) as *const i32).read_unaligned();
                    *b = _mm512_add_epi32(*b, _mm512_madd_epi16(pair, _mm512_set1_epi32(s)));
                }
            }
            let dw = _mm512_loadu_ps(wp as *const f32);
            for i in 0..RA {
                let s = _mm512_sub_epi32(isum[i], _mm512_slli_epi32::<5>(bias[i]));
                let da = (ab.add(i * a_stride) as *const f32).read_unaligned();
                let r = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s), dw), _mm512_set1_ps(da));
                acc[i] = _mm512_add_ps(acc[i], r);
            }
        }
    }
    // SAFETY: the caller vouches for the outputs (contract).
    unsafe { store_rows(out, out_stride, n_rows, acc) };
}
