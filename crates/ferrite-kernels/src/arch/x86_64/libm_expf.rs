//! `expf` computed exactly as glibc's x86-64 FMA variant (`__expf_fma`, the one its resolver
//! picks on any CPU with FMA) computes it, eight lanes at a time in double precision: the same
//! operations, the same fused multiply-adds, the same constants and table, so every result is
//! bit-identical to libm's. Attention's online softmax calls `expf` once per key; llama.cpp
//! calls libm there, and ferrite's outputs stay identical to its.
//!
//! The algorithm (ARM's optimized-routines `expf`, which glibc ships): with N = 32,
//! `k = round(x·N/ln2)`, `r = x·N/ln2 − k`, `exp(x) = 2^(k/N) · p(r)`, where `2^(k/N)` comes
//! from a 32-entry table with the exponent added in, and `p` is a cubic. Lanes with |x| ≥ 88
//! (overflow, underflow, infinities, NaN) go to libm itself. `Kernels` checks this path against
//! libm at start-up and keeps libm when a platform's differs.

use std::arch::x86_64::*;

/// `N/ln2`, the rounding shift `1.5·2^52`, and the cubic's coefficients (scaled by N).
const INV_LN2_N: f64 = f64::from_bits(0x4047_1547_652b_82fe);
const SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);
const C0: f64 = f64::from_bits(0x3ebc_6af8_4b91_2394);
const C1: f64 = f64::from_bits(0x3f2e_bfce_50fa_c4f3);
const C2: f64 = f64::from_bits(0x3f96_2e42_ff0c_52d6);

/// `bits(2^(i/32)) − (i << 47)`: adding `k << 47` to entry `k mod 32` gives `2^(k/32)`.
const TABLE: [u64; 32] = build_table();

const fn build_table() -> [u64; 32] {
    // 2^(i/32) correctly rounded to double (checked against libm by the tests through expf).
    const POW: [u64; 32] = [
        0x3ff0000000000000,
        0x3ff059b0d3158574,
        0x3ff0b5586cf9890f,
        0x3ff11301d0125b51,
        0x3ff172b83c7d517b,
        0x3ff1d4873168b9aa,
        0x3ff2387a6e756238,
        0x3ff29e9df51fdee1,
        0x3ff306fe0a31b715,
        0x3ff371a7373aa9cb,
        0x3ff3dea64c123422,
        0x3ff44e086061892d,
        0x3ff4bfdad5362a27,
        0x3ff5342b569d4f82,
        0x3ff5ab07dd485429,
        0x3ff6247eb03a5585,
        0x3ff6a09e667f3bcd,
        0x3ff71f75e8ec5f74,
        0x3ff7a11473eb0187,
        0x3ff82589994cce13,
        0x3ff8ace5422aa0db,
        0x3ff93737b0cdc5e5,
        0x3ff9c49182a3f090,
        0x3ffa5503b23e255d,
        0x3ffae89f995ad3ad,
        0x3ffb7f76f2fb5e47,
        0x3ffc199bdd85529c,
        0x3ffcb720dcef9069,
        0x3ffd5818dcfba487,
        0x3ffdfc97337b9b5f,
        0x3ffea4afa2a490da,
        0x3fff50765b6e4540,
    ];
    let mut t = [0u64; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = POW[i] - ((i as u64) << 47);
        i += 1;
    }
    t
}

/// Eight lanes of `expf`, valid for lanes with |x| < 88 (the caller routes the others to libm).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn expf8(x: __m256, tab: &[__m512i; 4]) -> __m256 {
    let xd = _mm512_cvtps_pd(x);
    let inv = _mm512_set1_pd(INV_LN2_N);
    let shift = _mm512_set1_pd(SHIFT);
    // kd = round(x·N/ln2) via the shift; r = x·N/ln2 − kd with the product unrounded (glibc's
    // FMA build contracts both expressions).
    let kds = _mm512_fmadd_pd(inv, xd, shift);
    let ki = _mm512_castpd_si512(kds);
    let kd = _mm512_sub_pd(kds, shift);
    let r = _mm512_fmsub_pd(inv, xd, kd);
    // Table entry ki mod 32: two 16-entry lookups, picked by bit 4.
    let lo = _mm512_permutex2var_epi64(tab[0], ki, tab[1]);
    let hi = _mm512_permutex2var_epi64(tab[2], ki, tab[3]);
    let upper = _mm512_test_epi64_mask(ki, _mm512_set1_epi64(16));
    let t = _mm512_mask_blend_epi64(upper, lo, hi);
    let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64(ki, 47)));
    let z = _mm512_fmadd_pd(_mm512_set1_pd(C0), r, _mm512_set1_pd(C1));
    let r2 = _mm512_mul_pd(r, r);
    let y = _mm512_fmadd_pd(r, _mm512_set1_pd(C2), _mm512_set1_pd(1.0));
    let y = _mm512_fmadd_pd(z, r2, y);
    _mm512_cvtpd_ps(_mm512_mul_pd(y, s))
}

/// `x[i] = expf(x[i])` for every element, bit-identical to glibc's `expf` (FMA variant).
///
/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn expf_avx512(x: &mut [f32]) {
    let tab: [__m512i; 4] = std::array::from_fn(|q| {
        // SAFETY: entries 8q .. 8q + 8 of the 32-entry table.
        unsafe { _mm512_loadu_si512(TABLE.as_ptr().add(8 * q) as *const _) }
    });
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        let orig = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
        // SAFETY: 8 floats.
        let v = unsafe { _mm256_loadu_ps(orig.as_ptr()) };
        // Lanes with |x| ≥ 88 or NaN (exponent field ≥ that of 88) take libm's special cases.
        let top = _mm256_and_si256(
            _mm256_srli_epi32(_mm256_castps_si256(v), 20),
            _mm256_set1_epi32(0x7ff),
        );
        let special = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(
            top,
            _mm256_set1_epi32(0x429),
        )));
        let e = expf8(v, &tab);
        // SAFETY: 8 floats.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), e) };
        if special != 0 {
            for (j, o) in c.iter_mut().enumerate() {
                if special & (1 << j) != 0 {
                    *o = orig[j].exp();
                }
            }
        }
    }
    for v in chunks.into_remainder() {
        *v = v.exp();
    }
}

#[cfg(test)]
mod tests {
    /// Every 61st f32 bit pattern (all signs, exponents, NaNs and infinities; 70 million
    /// values), plus a dense run of the softmax range [−20, 0], against libm bit for bit.
    #[test]
    fn expf_equals_libm_bit_for_bit() {
        if !crate::Isa::Avx512.is_available() {
            return; // nothing to compare on this CPU: the table keeps libm
        }
        let mut buf = Vec::with_capacity(1 << 16);
        let check = |buf: &mut Vec<f32>| {
            let want: Vec<u32> = buf.iter().map(|v| v.exp().to_bits()).collect();
            // SAFETY: AVX-512F (and with it AVX2 and FMA on every such CPU) detected above.
            unsafe { super::expf_avx512(buf) };
            for (i, (g, w)) in buf.iter().zip(&want).enumerate() {
                let (g, w) = (g.to_bits(), *w);
                // NaN payloads may differ; both must be NaN.
                let both_nan = f32::from_bits(g).is_nan() && f32::from_bits(w).is_nan();
                assert!(g == w || both_nan, "element {i}: got {g:#x}, libm {w:#x}");
            }
            buf.clear();
        };
        let mut bits = 0u64;
        while bits < 1 << 32 {
            buf.push(f32::from_bits(bits as u32));
            if buf.len() == buf.capacity() {
                check(&mut buf);
            }
            bits += 61;
        }
        let mut x = -20.0f32;
        while x <= 0.0 {
            buf.push(x);
            if buf.len() == buf.capacity() {
                check(&mut buf);
            }
            x = f32::from_bits(x.to_bits() - 64).max(x + 1e-7);
        }
        check(&mut buf);
    }
}
