//! Activation quantization to Q8_0 / Q8_1 blocks with AVX-512, bit-identical to the scalar
//! quantizers in `quant::quantize` (which reproduce llama.cpp's): the block maximum of |x| is
//! order-free, `d` and `1/d` are the same scalar expressions, `x·(127/amax)` is the same f32
//! product, and `vcvtps2dq` rounds it half-to-even like `rne` (|x·id| ≤ 127). Blocks holding a
//! non-finite value, or whose `127/amax` overflows, go to the scalar code, whose edge-case
//! behaviour differs from the vector conversion's.

use std::arch::x86_64::*;

use crate::quant::blocks::{f16_bytes, BlockQ8K, BlockQ8_0, BlockQ8_1, QK, QK_K};

/// Quantize one 32-element block; `None` when the block needs the scalar path.
///
/// # Safety
/// The CPU must have AVX-512F/BW (the caller checks).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn block(xb: &[f32; QK], qs: &mut [i8; QK]) -> Option<(f32, i32)> {
    // SAFETY: xb holds 32 floats.
    let (v0, v1) = unsafe {
        (
            _mm512_loadu_ps(xb.as_ptr()),
            _mm512_loadu_ps(xb.as_ptr().add(16)),
        )
    };
    let (a0, a1) = (_mm512_abs_ps(v0), _mm512_abs_ps(v1));
    let inf = _mm512_set1_ps(f32::INFINITY);
    let finite =
        _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a0, inf) & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a1, inf);
    if finite != 0xFFFF {
        return None;
    }
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    if !id.is_finite() {
        return None;
    }
    let idv = _mm512_set1_ps(id);
    let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, idv));
    let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, idv));
    // SAFETY: qs holds 32 bytes; 16 each.
    unsafe {
        _mm_storeu_si128(qs.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128(
            qs.as_mut_ptr().add(16) as *mut __m128i,
            _mm512_cvtepi32_epi8(q1),
        );
    }
    Some((d, _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1))))
}

/// Q8_0 blocks of `x` into `out`; the blocks `block` declines go to `scalar`.
///
/// # Safety
/// The CPU must have AVX-512F/BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn q8_0(x: &[f32], out: &mut [BlockQ8_0], scalar: fn(&[f32], &mut BlockQ8_0)) {
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let xb: &[f32; QK] = xb.try_into().expect("invariant: chunks of QK");
        // SAFETY: the caller checked the CPU.
        match unsafe { block(xb, &mut b.qs) } {
            Some((d, _)) => b.d = f16_bytes(d),
            None => scalar(xb, b),
        }
    }
}

/// Q8_1 blocks (Q8_0 plus `s = d·Σq`), as [`q8_0`].
///
/// # Safety
/// The CPU must have AVX-512F/BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn q8_1(x: &[f32], out: &mut [BlockQ8_1], scalar: fn(&[f32], &mut BlockQ8_1)) {
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let xb: &[f32; QK] = xb.try_into().expect("invariant: chunks of QK");
        // SAFETY: the caller checked the CPU.
        match unsafe { block(xb, &mut b.qs) } {
            Some((d, sum)) => {
                b.d = f16_bytes(d);
                b.s = f16_bytes(d * sum as f32);
            }
            None => scalar(xb, b),
        }
    }
}

/// Q8_K blocks (256 elements: `iscale = −127/max` of the signed extreme, `q = min(rne(iscale·x),
/// 127)`, sums of each 16 quants), as the scalar `quantize_block_q8_k`: the extreme is the
/// first element whose |x| equals the block's maximum |x| (the scalar loop keeps the first on
/// ties). Blocks with a non-finite value or scale go to `scalar`.
///
/// # Safety
/// The CPU must have AVX-512F/BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn q8_k(x: &[f32], out: &mut [BlockQ8K], scalar: fn(&[f32], &mut BlockQ8K)) {
    for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        // The block is loaded again for each pass (it sits in L1) rather than held as an array
        // of 16 vectors, which the compiler spilled and copied with a memcpy per block.
        // (Plain loads in each loop, not a closure: a closure would not inherit this
        // function's target features, and its intrinsics would become calls.)
        let p = xb.as_ptr();
        let inf = _mm512_set1_ps(f32::INFINITY);
        let mut amaxv = _mm512_setzero_ps();
        let mut finite = true;
        for i in 0..16 {
            // SAFETY: xb holds 256 floats, 16 per load (i < 16).
            let a = _mm512_abs_ps(unsafe { _mm512_loadu_ps(p.add(16 * i)) });
            finite &= _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, inf) == 0xFFFF;
            amaxv = _mm512_max_ps(amaxv, a);
        }
        let amax = _mm512_reduce_max_ps(amaxv);
        if !finite {
            scalar(xb, b);
            continue;
        }
        if amax == 0.0 {
            scalar(xb, b); // the zeroed block
            continue;
        }
        let am = _mm512_set1_ps(amax);
        let mut first = None;
        for i in 0..16 {
            // SAFETY: as above.
            let a = _mm512_abs_ps(unsafe { _mm512_loadu_ps(p.add(16 * i)) });
            let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, am);
            if hit != 0 {
                first = Some(16 * i + hit.trailing_zeros() as usize);
                break;
            }
        }
        let first = first.expect("invariant: the maximum is one of the elements");
        let iscale = -127.0 / xb[first];
        if !iscale.is_finite() {
            scalar(xb, b);
            continue;
        }
        b.d = (1.0 / iscale).to_le_bytes();
        let s = _mm512_set1_ps(iscale);
        let top = _mm512_set1_epi32(127);
        for i in 0..16 {
            // SAFETY: as above.
            let v = unsafe { _mm512_loadu_ps(p.add(16 * i)) };
            let q = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, s)), top);
            // SAFETY: 16 bytes at 16·i of the 256 quants.
            unsafe {
                _mm_storeu_si128(
                    b.qs.as_mut_ptr().add(16 * i) as *mut __m128i,
                    _mm512_cvtepi32_epi8(q),
                )
            };
            b.bsums[i] = (_mm512_reduce_add_epi32(q) as i16).to_le_bytes();
        }
    }
}
