//! Attention over a Q8_0 KV cache with AVX-512: the value accumulation of a block of keys with
//! every accumulator held in registers (the analogue of `fdot::attn_values_f16_group_avx512`
//! for llama.cpp's f32 `VKQ32` path), and the scores of a block of keys without a bounds check
//! per key.
//!
//! Per element the arithmetic is the reference's (`dot::scalar::mad_q8_0`, ggml's
//! `dequantize_row_q8_0` then `ggml_vec_mad_f32`): `x = f32(q)·d`, on a new maximum
//! `acc = acc·e`, then `acc = fma(x, w, acc)`; every element's chain is independent of the
//! others, so columns may be done in slices and lanes in any grouping.

use std::arch::x86_64::*;

use super::common::f16_at;

/// Value accumulation over `n` Q8_0 value rows for `G` queries, `C` 32-element blocks of
/// columns (starting at byte `col_byte` of each row, rows `row` bytes apart): per key j and
/// query g, when `raised[g][j]` the accumulator is scaled by `e[g][j]` and the value added with
/// weight 1, else the value is added with weight `e[g][j]`.
///
/// # Safety
/// Each `acc[g]` must be valid for `32·C` floats, `values` for `n` rows of `row` bytes with
/// `col_byte + 34·C ≤ row`, each `e[g]`/`raised[g]` for `n` elements; the CPU must support
/// AVX-512F (and AVX2/FMA/F16C).
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub(crate) unsafe fn values_q8_0_group<const C: usize, const G: usize>(
    acc: [*mut f32; G],
    values: *const u8,
    row: usize,
    col_byte: usize,
    n: usize,
    e: [*const f32; G],
    raised: [*const bool; G],
) {
    // Two 16-lane halves per 32-element block.
    let mut y: [[[__m512; 2]; C]; G] = std::array::from_fn(|g| {
        std::array::from_fn(|c| {
            // SAFETY: block c of accumulator g (contract).
            std::array::from_fn(|h| unsafe { _mm512_loadu_ps(acc[g].add(32 * c + 16 * h)) })
        })
    });
    for j in 0..n {
        // SAFETY: block c of value row j's columns, inside the contract's rows.
        let x: [[__m512; 2]; C] = std::array::from_fn(|c| unsafe {
            let blk = values.add(j * row + col_byte + 34 * c);
            let d = _mm512_set1_ps(f16_at(blk));
            std::array::from_fn(|h| {
                let q = _mm_loadu_si128(blk.add(2 + 16 * h) as *const __m128i);
                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), d)
            })
        });
        for (g, yg) in y.iter_mut().enumerate() {
            // SAFETY: j < n entries of e[g] and raised[g].
            let (ej, up) = unsafe { (*e[g].add(j), *raised[g].add(j)) };
            let w = if up {
                let m = _mm512_set1_ps(ej);
                for yc in yg.iter_mut().flatten() {
                    *yc = _mm512_mul_ps(*yc, m);
                }
                1.0
            } else {
                ej
            };
            let wv = _mm512_set1_ps(w);
            for (yc, xc) in yg.iter_mut().flatten().zip(x.iter().flatten()) {
                *yc = _mm512_fmadd_ps(*xc, wv, *yc);
            }
        }
    }
    for (g, yg) in y.iter().enumerate() {
        for (c, yc) in yg.iter().enumerate() {
            for (h, v) in yc.iter().enumerate() {
                // SAFETY: block c of accumulator g (contract).
                unsafe { _mm512_storeu_ps(acc[g].add(32 * c + 16 * h), *v) };
            }
        }
    }
}

/// `out[j]` = key row j · the query, both Q8_0 (`nb ≤ 8` blocks, rows `row` bytes apart), in
/// ggml's `ggml_vec_dot_q8_0_q8_0` arithmetic: per block `acc = fma(d_k·d_q, f32(p), acc)`
/// over 8 lanes, `p` each lane's sum of four products, then its `hsum_float_8`. The lane sums
/// are formed as `vpdpbusd(k + 128, q) − 128·Σq` (exact integers, the same sums), the query's
/// scales, quants and corrections loaded once for all keys.
///
/// # Safety
/// `q` must hold `nb` blocks, `keys` `out.len()` rows of `row ≥ 34·nb` bytes; `nb ≤ 8`; the CPU
/// must support AVX-512 VNNI (and AVX2/FMA/F16C).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn scores_q8_0(
    nb: usize,
    q: *const u8,
    keys: *const u8,
    row: usize,
    out: &mut [f32],
) {
    use super::common::hsum_f32x8;
    let ones = _mm256_set1_epi8(1);
    let mut qd = [0f32; 8];
    let mut qq = [_mm256_setzero_si256(); 8];
    let mut corr = [_mm256_setzero_si256(); 8];
    for b in 0..nb.min(8) {
        // SAFETY: query block b (contract).
        unsafe {
            let blk = q.add(34 * b);
            qd[b] = f16_at(blk);
            qq[b] = _mm256_loadu_si256(blk.add(2) as *const __m256i);
        }
        let sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, qq[b]);
        corr[b] = _mm256_mullo_epi32(sums, _mm256_set1_epi32(-128));
    }
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    for (j, s) in out.iter_mut().enumerate() {
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb.min(8) {
            // SAFETY: block b of key row j (contract).
            unsafe {
                let blk = keys.add(j * row + 34 * b);
                let d = _mm256_set1_ps(f16_at(blk) * qd[b]);
                let k = _mm256_xor_si256(_mm256_loadu_si256(blk.add(2) as *const __m256i), flip);
                let p = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(corr[b], k, qq[b]));
                acc = _mm256_fmadd_ps(d, p, acc);
            }
        }
        *s = hsum_f32x8(acc);
    }
}
