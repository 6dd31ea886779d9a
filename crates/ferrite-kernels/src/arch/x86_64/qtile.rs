//! Register-tiled products for the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) with
//! AVX-512 VNNI on 256-bit vectors: `RW` weight rows against `RA` activation rows per call, all
//! `RW·RA` accumulators in registers (AVX-512VL gives 32 of them).
//!
//! Each output keeps exactly the arithmetic of the single-row kernel in `qdot` (8 float lanes,
//! one `fma(d_w·d_a, p, acc)` per block, the same horizontal sum), so results are bit-identical;
//! only the integer block products `p` are formed differently, and integers are exact:
//!
//! - weights are decoded to *unsigned* bytes `u = w + o` (Q4_0: o = 8, Q5_0: 16, Q8_0: 128,
//!   the Q4_1/Q5_1 quants are unsigned already, o = 0), so one `vpdpbusd` multiplies them with
//!   the signed activations without the two `vpsignb` of the sign trick;
//! - `Σ w·a = Σ u·a − o·Σ a`, and the correction `−o·Σ a` of each group of four activations
//!   (one i32 lane) is computed once per activation row when the activations are packed
//!   ([`crate::tiled`]), then used as the accumulator input of `vpdpbusd`.
//!
//! Packed activations, per 32-element block, for a group of `RA` rows:
//! `[RA × 32 quants][RA × 8 i32 corrections][RA × f32 d][RA × f32 s]` (`s`: the Q8_1 sum term,
//! 0 for Q8_0), [`packed_block_bytes`]`(RA)` bytes.
//!
//! # Safety contract
//! `w` must hold `RW` rows at stride `w_stride`, each with `nb` blocks of the format; `a` must
//! hold `nb` packed blocks for `RA` rows. The entries in `dot` check this, and are installed
//! only in a table whose ISA (AVX-512 VNNI) the CPU has.

use std::arch::x86_64::*;

use super::common::{f16_at, hsum_f32x8};
use crate::tiled::packed_block_bytes;

/// Format ids (const generic parameter of the kernels).
pub(crate) const Q4_0: u8 = 0;
pub(crate) const Q4_1: u8 = 1;
pub(crate) const Q5_0: u8 = 2;
pub(crate) const Q5_1: u8 = 3;
pub(crate) const Q8_0: u8 = 4;

/// Bytes per weight block.
pub(crate) const fn weight_block_bytes(f: u8) -> usize {
    match f {
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        Q5_1 => 24,
        _ => 34,
    }
}

/// The offset `o` that makes the format's quants unsigned.
pub(crate) const fn unsigned_offset(f: u8) -> i32 {
    match f {
        Q4_0 => 8,
        Q5_0 => 16,
        Q8_0 => 128,
        _ => 0,
    }
}

pub(crate) const fn has_min(f: u8) -> bool {
    matches!(f, Q4_1 | Q5_1)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn load256(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes.
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

/// 16 bytes of nibbles at `p` to 32 bytes, low nibbles first (the Q4/Q5 element order).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: 16 readable bytes.
    let lo = unsafe { _mm_loadu_si128(p as *const __m128i) };
    let both = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), _mm_srli_epi16(lo, 4), 1);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Weight block at `x` as 32 unsigned bytes `w + o`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn decode<const F: u8>(x: *const u8) -> __m256i {
    // SAFETY: (all arms) the block at `x` is readable (module contract); offsets are the
    // ggml layouts in `quant::blocks`.
    unsafe {
        match F {
            Q4_0 => nibbles(x.add(2)),
            Q4_1 => nibbles(x.add(4)),
            Q5_0 | Q5_1 => {
                let (qh, qs) = if F == Q5_0 { (2, 6) } else { (4, 8) };
                let nib = nibbles(x.add(qs));
                // Bit j of qh is bit 4 of element j: add 16 to the bytes whose bit is set.
                let high = (x.add(qh) as *const u32).read_unaligned();
                _mm256_mask_add_epi8(nib, high, nib, _mm256_set1_epi8(16))
            }
            _ => _mm256_xor_si256(load256(x.add(2)), _mm256_set1_epi8(0x80u8 as i8)),
        }
    }
}

/// `out[i][r]` = row r of `w` · activation row i, for `r < RW`, `i < RA`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn tile<const F: u8, const RW: usize, const RA: usize>(
    nb: usize,
    w: *const u8,
    w_stride: usize,
    a: *const u8,
) -> [[f32; RW]; RA] {
    let wb = weight_block_bytes(F);
    let pb = packed_block_bytes(RA);
    let mut acc = [[_mm256_setzero_ps(); RA]; RW];
    // One lane per activation row (up to 8).
    let mut mins = [_mm256_setzero_ps(); RW];
    for b in 0..nb {
        // SAFETY: block b of every row and of the packed activations is in bounds (module
        // contract); the packed layout is documented above.
        unsafe {
            let ap = a.add(b * pb);
            let x: [*const u8; RW] = std::array::from_fn(|r| w.add(r * w_stride + b * wb));
            let q: [__m256i; RW] = std::array::from_fn(|r| decode::<F>(x[r]));
            let dw: [__m256; RW] = std::array::from_fn(|r| _mm256_set1_ps(f16_at(x[r])));
            #[allow(clippy::needless_range_loop)] // i also addresses the packed block
            for i in 0..RA {
                let ai = load256(ap.add(32 * i));
                let corr = if unsigned_offset(F) != 0 {
                    load256(ap.add(32 * RA + 32 * i))
                } else {
                    _mm256_setzero_si256()
                };
                let da = _mm256_set1_ps((ap.add(64 * RA + 4 * i) as *const f32).read_unaligned());
                for r in 0..RW {
                    let p = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(corr, q[r], ai));
                    acc[r][i] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], da), p, acc[r][i]);
                }
            }
            if has_min(F) {
                let sp = ap.add(68 * RA) as *const f32;
                // The RA sums (a masked load: it must not read past the block).
                let s = _mm256_maskz_loadu_ps(((1u32 << RA) - 1) as __mmask8, sp);
                for r in 0..RW {
                    let m = _mm256_set1_ps(f16_at(x[r].add(2)));
                    mins[r] = _mm256_fmadd_ps(m, s, mins[r]);
                }
            }
        }
    }
    let mut out = [[0f32; RW]; RA];
    for r in 0..RW {
        let mut m = [0f32; 8];
        // SAFETY: 8 floats into an 8-float array.
        unsafe { _mm256_storeu_ps(m.as_mut_ptr(), mins[r]) };
        for i in 0..RA {
            let s = hsum_f32x8(acc[r][i]);
            // The single-row kernels of the min formats return `hsum + mins`; the others
            // return the sum alone (adding 0.0 would turn a −0.0 into +0.0).
            out[i][r] = if has_min(F) { s + m[i] } else { s };
        }
    }
    out
}

/// `out[i·out_stride + r]` = row r of `w` · packed activation row i, for `r < n_rows` and
/// `i < RA` (decoding, or a few rows: a speculative verification, a small batch): one pass over
/// the weights, however many activation rows.
///
/// The rows are cut into `RW` equal parts and row j of every part is computed together: `RW`
/// independent accumulator chains (one row alone is bound by the FMA latency, one dependent FMA
/// per block), each reading its own long sequential stream. (`RW` adjacent rows at a time
/// measured 2× slower from memory: their short interleaved streams defeat the prefetchers.)
///
/// # Safety
/// As the module contract for `n_rows` rows and `RA` packed rows, and `out` must be valid for
/// writing every `out[i·out_stride + r]` above.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn rows<const F: u8, const RW: usize, const RA: usize>(
    nb: usize,
    w: *const u8,
    w_stride: usize,
    n_rows: usize,
    a: *const u8,
    out: *mut f32,
    out_stride: usize,
) {
    let part = n_rows / RW;
    for j in 0..part {
        // SAFETY: rows j + p·part (p < RW) are below n_rows, within the rows the caller vouched
        // for; the outputs are the caller's.
        unsafe {
            let v = tile::<F, RW, RA>(nb, w.add(j * w_stride), part * w_stride, a);
            for (i, vi) in v.iter().enumerate() {
                for (p, &x) in vi.iter().enumerate() {
                    *out.add(i * out_stride + j + p * part) = x;
                }
            }
        }
    }
    for r in RW * part..n_rows {
        // SAFETY: as above, for the rows left over.
        unsafe {
            let v = tile::<F, 1, RA>(nb, w.add(r * w_stride), w_stride, a);
            for (i, vi) in v.iter().enumerate() {
                *out.add(i * out_stride + r) = vi[0];
            }
        }
    }
}

/// Pack `nb` blocks of one quantized activation row (`ab` bytes per block: 34 for Q8_0, 36 for
/// Q8_1 with its sum `s`) as row `i` of a packed group of `ra` rows (layout in the module
/// docs): quants, the corrections `−offset·Σ` of each four quants (`vpdpbusd` of the quants
/// with ones: exact), `d` and `s` as f32 — what `crate::tiled::pack_group` computes.
///
/// # Safety
/// `row` must hold `nb` blocks of `ab` bytes (34 or 36), `out` `nb` packed blocks of `ra`
/// rows, `i < ra`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn pack_row(
    nb: usize,
    ab: usize,
    offset: i32,
    row: *const u8,
    out: *mut u8,
    ra: usize,
    i: usize,
) {
    let q8_1 = ab == 36;
    let qoff = if q8_1 { 4 } else { 2 };
    let ones = _mm256_set1_epi8(1);
    let neg = _mm256_set1_epi32(-offset);
    for b in 0..nb {
        // SAFETY: block b of the row and packed block b are in bounds (contract).
        unsafe {
            let src = row.add(b * ab);
            let dst = out.add(b * packed_block_bytes(ra));
            let q = load256(src.add(qoff));
            _mm256_storeu_si256(dst.add(32 * i) as *mut __m256i, q);
            let corr = if offset == 0 {
                _mm256_setzero_si256()
            } else {
                let sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, q);
                _mm256_mullo_epi32(sums, neg)
            };
            _mm256_storeu_si256(dst.add(32 * ra + 32 * i) as *mut __m256i, corr);
            (dst.add(64 * ra + 4 * i) as *mut f32).write_unaligned(f16_at(src));
            let s = if q8_1 { f16_at(src.add(2)) } else { 0.0 };
            (dst.add(68 * ra + 4 * i) as *mut f32).write_unaligned(s);
        }
    }
}
