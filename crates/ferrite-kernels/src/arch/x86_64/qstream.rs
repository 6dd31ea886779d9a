//! Stream-panel products for the 32-element formats with AVX-512 VNNI: one panel of 16 weight
//! rows, repacked at load (`crate::stream_panels`), against one or two activation rows — the
//! matrix-vector products of decoding, and the few rows of a speculative verification.
//!
//! Each 512-bit `vpdpbusd` multiplies four quants of all 16 rows by the same four quants of
//! the activation row, so its i32 lanes are ggml's per-block lane sums for 16 outputs at once
//! (as in [`super::qpanel`]); the float work per lane is the row kernels' (`acc = fma(d_w·d_a,
//! f32(p), acc)`, ggml's horizontal sum order, the min term apart), so results are bit-identical
//! to them. Against the register tiles of [`super::qtile`] this needs one `d_w·d_a` multiply per
//! block for 16 rows instead of one per row, and decodes 16 rows' nibbles with two 512-bit
//! operations per chunk pair instead of three 256-bit ones per row.
//!
//! Activations are one-row packed groups (`crate::tiled::pack_group`):
//! `[32 × i8 quants][8 × i32 −o·Σ][f32 d][f32 s]` per block, rows `a_stride` bytes apart.
//!
//! # Safety contract
//! `w` must hold `nb` stream panel blocks of format `F`, `a` `RA` packed rows of `nb` blocks at
//! stride `a_stride`, and `out + i·out_stride` be valid for 16 (masked to `n_rows`) floats for
//! every `i < RA`. The entries in `dot` are installed only in a table whose ISA (AVX-512 VNNI)
//! the CPU has, and `crate::tiled` checks the sizes.

use std::arch::x86_64::*;

use super::qpanel::store_lane_sums;
use super::qtile::{has_min, weight_block_bytes, Q5_0, Q5_1, Q8_0};
use crate::tiled::{packed_block_bytes, PANEL_BLOCK_BYTES};

/// Bytes of one packed activation block (a one-row group).
const ACT_BLOCK_BYTES: usize = packed_block_bytes(1);

/// 16 f16 values at `p` as f32.
///
/// # Safety
/// 32 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn f16x16(p: *const u8) -> __m512 {
    // SAFETY: the caller's contract.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p as *const __m256i) })
}

/// Call `f(k, chunk)` for the 8 chunks of the stream panel block at `wp`: chunk k holds the
/// unsigned quants `w + o` of elements `4k..4k + 4` of all 16 rows (row j in i32 lane j), the
/// bytes the row kernels' `qtile::decode` gives.
///
/// # Safety
/// `wp` must point at one stream panel block of format `F`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn for_each_chunk<const F: u8>(wp: *const u8, mut f: impl FnMut(usize, __m512i)) {
    let five = F == Q5_0 || F == Q5_1;
    // Offsets inside a panel block: d, [m], [masks], quants.
    let masks_at = if has_min(F) { 64 } else { 32 };
    let q = masks_at + if five { 64 } else { 0 };
    let low = _mm512_set1_epi8(0x0F);
    // SAFETY: (both arms) the block's masks and quants are in bounds (contract; layout of
    // `crate::stream_panels`).
    unsafe {
        let mut emit = |k: usize, wk: __m512i| {
            if five {
                let m = (wp.add(masks_at + 8 * k) as *const u64).read_unaligned();
                f(k, _mm512_mask_add_epi8(wk, m, wk, _mm512_set1_epi8(16)))
            } else {
                f(k, wk)
            }
        };
        if F == Q8_0 {
            for k in 0..8 {
                emit(k, _mm512_loadu_si512(wp.add(q + 64 * k) as *const __m512i));
            }
        } else {
            for g in 0..4 {
                let v = _mm512_loadu_si512(wp.add(q + 64 * g) as *const __m512i);
                emit(g, _mm512_and_si512(v, low));
                emit(g + 4, _mm512_and_si512(_mm512_srli_epi16(v, 4), low));
            }
        }
    }
}

/// Unpack one stream panel (`nb` blocks at `w`) into a prompt panel at `out` (the layout of
/// [`super::qpanel::pack_panel`]: f32 d, f32 m, decoded unsigned chunks), the same bytes that
/// packing the 16 rows from the matrix gives.
///
/// # Safety
/// `w` must hold `nb` stream panel blocks of format `F`, `out` be valid for writing `nb`
/// prompt panel blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn unpack_stream_panel<const F: u8>(nb: usize, w: *const u8, out: *mut u8) {
    let pb = 16 * weight_block_bytes(F);
    for b in 0..nb {
        // SAFETY: stream block b and prompt block b are in bounds (contract).
        unsafe {
            let (wp, o) = (w.add(b * pb), out.add(b * PANEL_BLOCK_BYTES));
            _mm512_storeu_ps(o as *mut f32, f16x16(wp));
            let m = if has_min(F) {
                f16x16(wp.add(32))
            } else {
                _mm512_setzero_ps()
            };
            _mm512_storeu_ps(o.add(64) as *mut f32, m);
            for_each_chunk::<F>(wp, |k, wk| {
                _mm512_storeu_si512(o.add(128 + 64 * k) as *mut __m512i, wk)
            });
        }
    }
}

/// `out[i·out_stride + r]` = panel row r · activation row i (module docs).
///
/// # Safety
/// The module contract.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn stream_panel<const F: u8, const RA: usize>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    a_stride: usize,
    out: *mut f32,
    out_stride: usize,
    n_rows: usize,
) {
    let pb = 16 * weight_block_bytes(F);
    let min = has_min(F);
    // acc[i][k]: lane k of the row kernel (quants 4k..4k+4 of every block) for 16 outputs.
    let mut acc = [[_mm512_setzero_ps(); 8]; RA];
    let mut mins = [_mm512_setzero_ps(); RA];
    for b in 0..nb {
        // SAFETY: panel block b and block b of the RA activation rows are in bounds (contract);
        // the offsets are the layout of `crate::stream_panels`.
        unsafe {
            let wp = w.add(b * pb);
            let ab = a.add(b * ACT_BLOCK_BYTES);
            let at = |i: usize, off: usize| ab.add(i * a_stride + off);
            let dw = f16x16(wp);
            let d: [__m512; RA] = std::array::from_fn(|i| {
                let da = (at(i, 64) as *const f32).read_unaligned();
                _mm512_mul_ps(dw, _mm512_set1_ps(da))
            });
            for_each_chunk::<F>(wp, |k, wk| {
                for i in 0..RA {
                    let corr = if min {
                        _mm512_setzero_si512()
                    } else {
                        _mm512_set1_epi32((at(i, 32 + 4 * k) as *const i32).read_unaligned())
                    };
                    let av = _mm512_set1_epi32((at(i, 4 * k) as *const i32).read_unaligned());
                    let p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(corr, wk, av));
                    acc[i][k] = _mm512_fmadd_ps(d[i], p, acc[i][k]);
                }
            });
            if min {
                let mw = f16x16(wp.add(32));
                for (i, m) in mins.iter_mut().enumerate() {
                    let sa = (at(i, 68) as *const f32).read_unaligned();
                    *m = _mm512_fmadd_ps(mw, _mm512_set1_ps(sa), *m);
                }
            }
        }
    }
    // SAFETY: the caller vouches for the outputs (contract).
    unsafe { store_lane_sums(out, out_stride, n_rows, &acc, min.then_some(&mins)) };
}
