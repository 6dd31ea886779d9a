//! Activation kernels: SwiGLU (`silu(gate) · up`) with ggml's polynomial `expf`
//! (`ggml_v_expf`), the same operations in the same order as the scalar reference
//! [`crate::compat::swiglu`]: the polynomial for elements in whole 16-lane chunks, libm `expf`
//! for the tail.

use std::arch::x86_64::*;

const SHIFT: f32 = 12582912.0;
const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
const C1: f32 = f32::from_bits(0x3f7f_fff6);
const C2: f32 = f32::from_bits(0x3eff_fedb);
const C3: f32 = f32::from_bits(0x3e2a_af33);
const C4: f32 = f32::from_bits(0x3d2b_9f17);
const C5: f32 = f32::from_bits(0x3c07_2010);

/// The scalar tail, exactly as the reference computes it.
fn tail(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = (x / (1.0 + (-x).exp())) * u;
    }
}

/// 16 lanes of `exp(x)` as `ggml_v_expf` (AVX-512).
#[target_feature(enable = "avx512f")]
unsafe fn expf16(x: __m512) -> __m512 {
    let r = _mm512_set1_ps(SHIFT);
    let z = _mm512_fmadd_ps(x, _mm512_set1_ps(INV_LN2), r);
    let n = _mm512_sub_ps(z, r);
    let b = _mm512_fnmadd_ps(
        n,
        _mm512_set1_ps(LN2_LO),
        _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x),
    );
    let u = _mm512_mul_ps(b, b);
    let j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(
            _mm512_fmadd_ps(_mm512_set1_ps(C5), b, _mm512_set1_ps(C4)),
            u,
            _mm512_fmadd_ps(_mm512_set1_ps(C3), b, _mm512_set1_ps(C2)),
        ),
        u,
        _mm512_fmadd_ps(_mm512_set1_ps(C1), b, _mm512_set1_ps(1.0)),
    );
    let scaled = _mm512_scalef_ps(j, n);
    // |n| > 192: 0 below, ∞ above (the reference's saturation).
    let abs_n = _mm512_castsi512_ps(_mm512_and_si512(
        _mm512_castps_si512(n),
        _mm512_set1_epi32(0x7fff_ffff),
    ));
    let big = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(abs_n, _mm512_set1_ps(192.0));
    let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(n, _mm512_setzero_ps());
    let sat = _mm512_mask_blend_ps(pos, _mm512_setzero_ps(), _mm512_set1_ps(f32::INFINITY));
    _mm512_mask_blend_ps(big, scaled, sat)
}

/// SwiGLU in place over `gate` (AVX-512).
///
/// # Safety
/// The CPU must support AVX-512F; `gate` and `up` must each hold `n` floats.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn swiglu_avx512(n: usize, gate: *mut f32, up: *const f32) {
    let whole = n / 16 * 16;
    let mut i = 0;
    while i < whole {
        // SAFETY: i + 16 <= n.
        unsafe {
            let x = _mm512_loadu_ps(gate.add(i));
            let e = expf16(_mm512_sub_ps(_mm512_setzero_ps(), x));
            let s = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e));
            _mm512_storeu_ps(gate.add(i), _mm512_mul_ps(s, _mm512_loadu_ps(up.add(i))));
        }
        i += 16;
    }
    // SAFETY: the tail lies within the n floats of each.
    unsafe {
        tail(
            std::slice::from_raw_parts_mut(gate.add(whole), n - whole),
            std::slice::from_raw_parts(up.add(whole), n - whole),
        );
    }
}

/// 8 lanes of `exp(x)`, the same operations with AVX2 (2ⁿ applied in two exact steps, as the
/// scalar reference does, since AVX2 has no `scalef`).
#[target_feature(enable = "avx2,fma")]
unsafe fn expf8(x: __m256) -> __m256 {
    let r = _mm256_set1_ps(SHIFT);
    let z = _mm256_fmadd_ps(x, _mm256_set1_ps(INV_LN2), r);
    let n = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(
        n,
        _mm256_set1_ps(LN2_LO),
        _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x),
    );
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(_mm256_set1_ps(C5), b, _mm256_set1_ps(C4)),
            u,
            _mm256_fmadd_ps(_mm256_set1_ps(C3), b, _mm256_set1_ps(C2)),
        ),
        u,
        _mm256_fmadd_ps(_mm256_set1_ps(C1), b, _mm256_set1_ps(1.0)),
    );
    // 2^a · 2^b with a = ⌊n/2⌋, b = n − a: each factor a normal power of two for |n| ≤ 192.
    let ni = _mm256_cvtps_epi32(n);
    let a = _mm256_srai_epi32::<1>(ni);
    let bb = _mm256_sub_epi32(ni, a);
    let pow = |e: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            e,
            _mm256_set1_epi32(127),
        )))
    };
    let scaled = _mm256_mul_ps(_mm256_mul_ps(j, pow(a)), pow(bb));
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(n, _mm256_setzero_ps());
    let sat = _mm256_and_ps(pos, _mm256_set1_ps(f32::INFINITY));
    _mm256_blendv_ps(scaled, sat, big)
}

/// SwiGLU in place over `gate` (AVX2 + FMA).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `gate` and `up` must each hold `n` floats.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn swiglu_avx2(n: usize, gate: *mut f32, up: *const f32) {
    let whole = n / 16 * 16;
    let mut i = 0;
    while i < whole {
        // SAFETY: i + 8 <= n.
        unsafe {
            let x = _mm256_loadu_ps(gate.add(i));
            let e = expf8(_mm256_sub_ps(_mm256_setzero_ps(), x));
            let s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
            _mm256_storeu_ps(gate.add(i), _mm256_mul_ps(s, _mm256_loadu_ps(up.add(i))));
        }
        i += 8;
    }
    // SAFETY: the tail lies within the n floats of each.
    unsafe {
        tail(
            std::slice::from_raw_parts_mut(gate.add(whole), n - whole),
            std::slice::from_raw_parts(up.add(whole), n - whole),
        );
    }
}

/// GeGLU with ggml's f16 GELU table, 16 lanes at a time, bit-identical to
/// [`crate::compat::geglu`]: the input rounded to f16 (`vcvtps2ph`, nearest even, as
/// `f16::from_f32`), the table entry gathered, 0 at or below −10 and `x·u` at or above 10. A
/// chunk holding a NaN, and the tail, go through the scalar code (NaN payloads may convert
/// differently).
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL and F16C; `table` must have 65536 entries (checked).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn geglu_avx512(gate: &mut [f32], up: &[f32], table: &[u16]) {
    assert!(
        table.len() == 1 << 16 && up.len() >= gate.len(),
        "invariant: table and lengths"
    );
    let n = gate.len() / 16 * 16;
    let (lo, hi) = (_mm512_set1_ps(-10.0), _mm512_set1_ps(10.0));
    let mut i = 0;
    while i < n {
        // SAFETY: i + 16 <= n <= gate.len() <= up.len().
        let (x, u) = unsafe {
            (
                _mm512_loadu_ps(gate.as_ptr().add(i)),
                _mm512_loadu_ps(up.as_ptr().add(i)),
            )
        };
        if _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x) != 0 {
            crate::compat::geglu(&mut gate[i..i + 16], &up[i..i + 16]);
            i += 16;
            continue;
        }
        let bits = _mm512_cvtepu16_epi32(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
        // The 4-byte gather at 2-byte scale reads entries k and k + 1: the index is clamped to
        // 65534 so entry 65535 (a NaN pattern, which non-NaN input never produces) is not
        // needed and no read passes the table's end.
        let idx = _mm512_min_epu32(bits, _mm512_set1_epi32(0xFFFE));
        // SAFETY: every index ≤ 65534, so bytes 2k..2k + 4 lie in the 131072-byte table.
        let g = unsafe { _mm512_i32gather_epi32::<2>(idx, table.as_ptr() as *const i32) };
        let g = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
        let mut y = _mm512_mul_ps(g, u);
        y = _mm512_mask_blend_ps(
            _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, hi),
            y,
            _mm512_mul_ps(x, u),
        );
        y = _mm512_mask_blend_ps(
            _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, lo),
            y,
            _mm512_setzero_ps(),
        );
        // SAFETY: as for the loads.
        unsafe { _mm512_storeu_ps(gate.as_mut_ptr().add(i), y) };
        i += 16;
    }
    crate::compat::geglu(&mut gate[n..], &up[n..]);
}

/// ggml's AVX-512 `ggml_vec_soft_max_f32` in place over `n` floats at `x`: each whole 16-lane
/// chunk becomes `exp(x − max)` by the polynomial and adds its `_mm512_reduce_add_ps` to an f64
/// sum; the tail uses libm `expf` and adds element by element. Returns the sum (the scalar
/// reference is `crate::compat::soft_max`).
///
/// # Safety
/// The CPU must support AVX-512F; `x` must hold `n` floats.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn soft_max_avx512(n: usize, x: *mut f32, max: f32) -> f64 {
    let whole = n / 16 * 16;
    let m = _mm512_set1_ps(max);
    let mut sum = 0f64;
    let mut i = 0;
    while i < whole {
        // SAFETY: i + 16 <= n.
        unsafe {
            let v = expf16(_mm512_sub_ps(_mm512_loadu_ps(x.add(i)), m));
            _mm512_storeu_ps(x.add(i), v);
            sum += f64::from(_mm512_reduce_add_ps(v));
        }
        i += 16;
    }
    while i < n {
        // SAFETY: i < n.
        unsafe {
            let v = (*x.add(i) - max).exp();
            *x.add(i) = v;
            sum += f64::from(v);
        }
        i += 1;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat;

    /// Inputs across SiLU's range, the saturation edges (|x| near 133 = 192·ln 2) included.
    fn inputs(n: usize, seed: u32) -> (Vec<f32>, Vec<f32>) {
        let mut s = seed | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        };
        let gate = (0..n)
            .map(|i| match i % 7 {
                0 => next() * 140.0,
                1 => next() * 20.0,
                _ => next() * 4.0,
            })
            .collect();
        let up = (0..n).map(|_| next() * 3.0).collect();
        (gate, up)
    }

    fn check(f: unsafe fn(usize, *mut f32, *const f32)) {
        let (mut exact, mut total) = (0usize, 0usize);
        for n in (1..70).chain([1024, 1536, 4099]) {
            let (gate, up) = inputs(n, n as u32 * 7919);
            let mut want = gate.clone();
            compat::swiglu(&mut want, &up);
            let mut got = gate.clone();
            // SAFETY: the caller checked the ISA; both slices hold n floats.
            unsafe { f(n, got.as_mut_ptr(), up.as_ptr()) };
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                total += 1;
                if g.to_bits() == w.to_bits() {
                    exact += 1;
                } else {
                    // The reference's FMA is emulated in f64 (double rounding, ~2⁻²⁹ per
                    // operation), so a last-bit difference is possible, never more.
                    assert!(
                        (g - w).abs() <= w.abs() * 2.5e-7,
                        "n {n} element {i}: {g} vs {w} (gate {})",
                        gate[i]
                    );
                }
            }
        }
        assert!(
            exact * 10_000 >= total * 9_999,
            "{exact} of {total} bit-exact"
        );
    }

    #[test]
    fn avx512_swiglu_is_the_reference() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F here; the AVX-512 SwiGLU is not exercised on this CPU");
            return;
        }
        check(swiglu_avx512);
    }

    #[test]
    fn avx2_swiglu_is_the_reference() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            eprintln!("no AVX2+FMA here; the AVX2 SwiGLU is not exercised on this CPU");
            return;
        }
        check(swiglu_avx2);
    }
}
