//! Numerics that reproduce llama.cpp's CPU backend (an AVX-512 build compiled with clang) to the
//! last bit where a greedy decode is sensitive to it. Each function documents which ggml routine
//! and which compiler contraction it mirrors; all ISAs use the same arithmetic, so results do not
//! depend on which kernel family runs.
//!
//! Why this matters: a 135M-parameter model re-quantizes its activations to 8 bits before every
//! matrix product, so a one-ulp difference can flip a rounding and change a later greedy token.

use std::sync::OnceLock;

use half::f16;

/// `a·b + c` with one rounding, fast without hardware FMA: the product of two f32 is exact in
/// f64, so only the final sum rounds (twice: to f64, then to f32; that double rounding differs
/// from a true FMA with probability about 2⁻²⁹ per operation).
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    (f64::from(a) * f64::from(b) + f64::from(c)) as f32
}

/// Lanes and accumulators of ggml's AVX-512 `ggml_vec_dot_f16`: 4 accumulators of 16 lanes.
pub(crate) const F16_DOT_STEP: usize = 64;

/// Combine ggml's four 16-lane accumulators as `GGML_F32x16_REDUCE` does: `x0+x2`, `x1+x3`,
/// then `x0+x1`, then `_mm512_reduce_add_ps` (halving tree: 8+8, 4+4, then (0+2)+(1+3)).
#[inline(always)]
pub(crate) fn reduce_4x16(acc: &[[f32; 16]; 4]) -> f32 {
    let mut x0 = [0f32; 16];
    let mut x1 = [0f32; 16];
    for i in 0..16 {
        x0[i] = acc[0][i] + acc[2][i];
        x1[i] = acc[1][i] + acc[3][i];
    }
    for i in 0..16 {
        x0[i] += x1[i];
    }
    reduce_16(&x0)
}

/// `_mm512_reduce_add_ps` order: 256-bit halves, 128-bit halves, then `(0+2) + (1+3)`.
#[inline(always)]
pub(crate) fn reduce_16(x: &[f32; 16]) -> f32 {
    let mut h8 = [0f32; 8];
    for i in 0..8 {
        h8[i] = x[i] + x[i + 8];
    }
    let mut h4 = [0f32; 4];
    for i in 0..4 {
        h4[i] = h8[i] + h8[i + 4];
    }
    (h4[0] + h4[2]) + (h4[1] + h4[3])
}

/// Scalar reference of ggml's f16 dot product (the Q·K of attention): f32 FMAs in 4×16 lanes over
/// whole 64-element steps, the tree reduction above, and any leftover products added in f64.
pub(crate) fn dot_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let h =
        |b: &[u8], i: usize| f16::from_bits(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])).to_f32();
    let np = n / F16_DOT_STEP * F16_DOT_STEP;
    let mut acc = [[0f32; 16]; 4];
    let mut i = 0;
    while i < np {
        for (j, lanes) in acc.iter_mut().enumerate() {
            for (l, a) in lanes.iter_mut().enumerate() {
                let k = i + 16 * j + l;
                *a = fma(h(x, k), h(y, k), *a);
            }
        }
        i += F16_DOT_STEP;
    }
    let mut sum = if np > 0 {
        f64::from(reduce_4x16(&acc))
    } else {
        0.0
    };
    for k in np..n {
        sum += f64::from(h(x, k) * h(y, k));
    }
    sum as f32
}

/// RoPE rotation of one pair as clang contracts ggml's `rotate_pairs`:
/// `fma(x0, c, −(x1·s))` and `fma(x0, s, x1·c)`.
#[inline(always)]
pub fn rotate(x0: f32, x1: f32, c: f32, s: f32) -> (f32, f32) {
    (fma(x0, c, -(x1 * s)), fma(x0, s, x1 * c))
}

/// `exp(x)` as ggml's AVX-512 `ggml_v_expf` computes it (the expf algorithm of Arm's
/// optimized-routines: n = round(x/ln 2), reduced argument in two FMA steps, a degree-5
/// polynomial, scaled by 2ⁿ; saturates to 0 / ∞ when |n| > 192). Used for SiLU.
#[inline(always)]
pub fn expf_poly(x: f32) -> f32 {
    const SHIFT: f32 = 12582912.0; // 0x1.8p23: adding it rounds to an integer
    const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b); // 0x1.715476p+0
    const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0x1.62e4p-1
    const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 0x1.7f7d1cp-20
    const C1: f32 = f32::from_bits(0x3f7f_fff6); // 0x1.ffffecp-1
    const C2: f32 = f32::from_bits(0x3eff_fedb); // 0x1.fffdb6p-2
    const C3: f32 = f32::from_bits(0x3e2a_af33); // 0x1.555e66p-3
    const C4: f32 = f32::from_bits(0x3d2b_9f17); // 0x1.573e2ep-5
    const C5: f32 = f32::from_bits(0x3c07_2010); // 0x1.0e4020p-7
    let z = fma(x, INV_LN2, SHIFT);
    let n = z - SHIFT;
    let b = fma(-n, LN2_LO, fma(-n, LN2_HI, x));
    let u = b * b;
    let j = fma(fma(fma(C5, b, C4), u, fma(C3, b, C2)), u, fma(C1, b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    scale_pow2(j, n)
}

/// `j · 2ⁿ` for an integral `n` with |n| ≤ 192 (`_mm512_scalef_ps`), in two exact steps.
#[inline(always)]
pub fn scale_pow2(j: f32, n: f32) -> f32 {
    let n = n as i32;
    let a = n / 2;
    let b = n - a;
    let p = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    j * p(a) * p(b)
}

/// ggml's AVX-512 `ggml_vec_soft_max_f32` in place: `x[i] = exp(x[i] − max)`, the polynomial
/// exp for whole 16-element chunks (each chunk's `_mm512_reduce_add_ps` added to an f64 sum) and
/// libm `expf` for the tail (added one by one). Returns the f64 sum.
pub fn soft_max(x: &mut [f32], max: f32) -> f64 {
    let whole = x.len() / 16 * 16;
    let mut sum = 0f64;
    for chunk in x[..whole].chunks_exact_mut(16) {
        let mut v = [0f32; 16];
        for (o, c) in v.iter_mut().zip(chunk.iter_mut()) {
            *c = expf_poly(*c - max);
            *o = *c;
        }
        sum += f64::from(reduce_16(&v));
    }
    for c in &mut x[whole..] {
        *c = (*c - max).exp();
        sum += f64::from(*c);
    }
    sum
}

/// SiLU as ggml's AVX-512 `ggml_vec_swiglu_f32` computes it: `x / (1 + e^−x)` with the
/// polynomial exp for elements in whole 16-lane chunks and libm `expf` for the tail.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    let whole = gate.len() / 16 * 16;
    for (i, (g, &u)) in gate.iter_mut().zip(up).enumerate() {
        let x = *g;
        let e = if i < whole {
            expf_poly(0.0 - x)
        } else {
            (-x).exp()
        };
        *g = (x / (1.0 + e)) * u;
    }
}

/// GELU (tanh approximation) of an f16 input, as ggml tabulates it at start-up
/// (`ggml_table_gelu_f16`): clang contracts `1 + a·x·x` into `fma(a·x, x, 1)`.
fn gelu_f32(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    (0.5 * x) * (1.0 + ((SQRT_2_OVER_PI * x) * fma(COEF_A * x, x, 1.0)).tanh())
}

/// ggml's 65536-entry f16 GELU table, built once.
pub(crate) fn gelu_table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_f32(f16::from_bits(bits).to_f32())).to_bits())
            .collect()
    })
}

/// GELU as ggml's CPU backend computes it with `GGML_GELU_FP16`: 0 below −10, identity above
/// 10, otherwise the f16 table looked up with the input rounded to f16.
#[inline]
pub fn gelu(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        f16::from_bits(gelu_table()[f16::from_f32(x).to_bits() as usize]).to_f32()
    }
}

/// `gate = gelu(gate) · up` (ggml's `ggml_vec_geglu_f32` with the table).
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            f16::from_bits(table[f16::from_f32(x).to_bits() as usize]).to_f32() * u
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_poly_is_close_to_expf() {
        for i in -2000..2000 {
            let x = i as f32 / 20.0;
            let (a, b) = (expf_poly(x), x.exp());
            assert!(
                a == b || (a - b).abs() <= b * 4e-7 + f32::MIN_POSITIVE,
                "{x}: {a} vs {b}"
            );
        }
        assert_eq!(expf_poly(-200.0), 0.0);
        assert_eq!(expf_poly(200.0), f32::INFINITY);
    }

    #[test]
    fn scale_pow2_is_exact() {
        for n in -140..128 {
            assert_eq!(scale_pow2(1.5, n as f32), 1.5 * 2f64.powi(n) as f32, "{n}");
        }
    }

    #[test]
    fn fma_matches_hardware_semantics() {
        let a = 1.0 + f32::EPSILON;
        // a·a = 1 + 2ε + ε²: a fused operation keeps the ε² term.
        assert_eq!(fma(a, a, -(a * a)), f32::EPSILON * f32::EPSILON);
        assert_eq!(fma(a, a, -1.0), a.mul_add(a, -1.0));
    }

    #[test]
    fn gelu_table_matches_formula() {
        for i in -300..300 {
            let x = i as f32 / 31.0;
            let want = f16::from_f32(gelu_f32(f16::from_f32(x).to_f32())).to_f32();
            assert_eq!(gelu(x), want);
        }
    }
}
