//! The 4-bit float formats MXFP4 (GGUF type 39) and NVFP4 (GGUF type 40), as ggml stores them,
//! and their element and scale encodings: E2M1 elements, E8M0 (MXFP4) and UE4M3 (NVFP4) scales.
//!
//! Definitions (OCP Microscaling Formats v1.0; NVIDIA's NVFP4 description):
//! - E2M1: sign, 2 exponent bits (bias 1), 1 mantissa bit, no Inf/NaN. Codes 0–7 are
//!   0, 0.5, 1, 1.5, 2, 3, 4, 6; codes 8–15 their negatives (8 is −0).
//! - E8M0: an exponent only, value 2^(e − 127); 0xFF is NaN.
//! - E4M3 (the "fn" variant): sign, 4 exponent bits (bias 7), 3 mantissa bits, subnormals
//!   m·2⁻⁹, max 448, 0x7F/0xFF NaN, no Inf. NVFP4 block scales are non-negative (UE4M3).
//!
//! ggml stores the E2M1 values doubled as integers (`kvalues_fp4`) and halves the scale, so the
//! integer dot kernels can use a byte LUT; [`KVALUES_FP4`] and the `*_half` scale decoders are
//! that convention. ggml decodes the NaN scale 0x7F as 0 (and reads bit 7 of an NVFP4 scale
//! as if it were not there); ferrite's loader decodes the same way, so any file llama.cpp reads
//! gives the same numbers here.
//!
//! Encoding rounds to nearest with ties to even (on the code's last bit) everywhere, the rule the
//! formats define; ggml's reference quantizers differ only on exact ties (first index / half up).

use super::blocks::*;

/// E2M1 values by code.
pub const E2M1: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// E2M1 values doubled (ggml's `kvalues_fp4`): the integers the dot kernels multiply.
pub const KVALUES_FP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Nearest E2M1 code for `x`, ties to the even code, saturating at ±6; NaN and ±0 give +0.
pub fn e2m1_encode(x: f32) -> u8 {
    let a = x.abs();
    // Midpoints between consecutive magnitudes; at a midpoint the even code wins.
    let mag = if a.is_nan() || a <= 0.25 {
        0
    } else if a < 0.75 {
        1
    } else if a <= 1.25 {
        2
    } else if a < 1.75 {
        3
    } else if a <= 2.5 {
        4
    } else if a < 3.5 {
        5
    } else if a <= 5.0 {
        6
    } else {
        7
    };
    if mag != 0 && x < 0.0 {
        mag | 8
    } else {
        mag
    }
}

/// E8M0 value: 2^(e − 127); 0xFF is NaN.
pub fn e8m0_decode(e: u8) -> f32 {
    if e == 0xFF {
        f32::NAN
    } else {
        (2f32).powi(i32::from(e) - 127)
    }
}

/// Half the E8M0 value as ggml computes it (`GGML_E8M0_TO_FP32_HALF`), for the doubled ints.
#[inline(always)]
pub fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        u32::from(e - 1) << 23
    };
    f32::from_bits(bits)
}

/// The MXFP4 block exponent for a block whose largest magnitude is `amax` (OCP: ⌊log2 amax⌋
/// minus E2M1's max exponent 2, biased by 127, clamped to the finite range; 0 for a zero
/// block). Values up to 8·2^(e−127) exceed the largest element 6·2^(e−127) and saturate.
pub fn mxfp4_exponent(amax: f32) -> u8 {
    if amax.is_nan() || amax <= 0.0 {
        return 0;
    }
    if amax.is_infinite() {
        return 254;
    }
    let bits = amax.to_bits();
    let biased = (bits >> 23) & 0xFF;
    // ⌊log2 amax⌋ from the exponent field (subnormals: from the leading mantissa bit).
    let log2 = if biased == 0 {
        -127 - ((bits & 0x7F_FFFF).leading_zeros() as i32 - 9)
    } else {
        biased as i32 - 127
    };
    (log2 - 2 + 127).clamp(0, 254) as u8
}

/// Signed E4M3 ("fn") value by code; 0x7F and 0xFF are NaN.
pub fn e4m3_decode(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let c = code & 0x7F;
    if c == 0x7F {
        return f32::NAN;
    }
    let (exp, man) = (i32::from(c >> 3), f32::from(c & 7));
    let mag = if exp == 0 {
        man * (2f32).powi(-9)
    } else {
        (1.0 + man / 8.0) * (2f32).powi(exp - 7)
    };
    sign * mag
}

/// Nearest UE4M3 code for `x` (round to nearest, ties to even), saturating at 448 (0x7E);
/// zero, negatives and NaN give 0.
pub fn ue4m3_encode(x: f32) -> u8 {
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    if x >= 448.0 {
        return 0x7E;
    }
    // Binary search over the 127 finite non-negative codes, which increase with the code.
    let (mut lo, mut hi) = (0u8, 0x7Eu8);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if UE4M3[usize::from(mid)] <= x {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let (a, b) = (UE4M3[usize::from(lo)], UE4M3[usize::from(hi)]);
    if x - a < b - x || (x - a == b - x && lo % 2 == 0) {
        lo
    } else {
        hi
    }
}

/// NVFP4 scale values as ggml decodes them (`ggml_ue4m3_to_fp32` without its × 0.5): exponent
/// from bits 3–6, mantissa bits 0–2, bit 7 ignored, 0x00 and 0x7F (NaN) as 0.
pub static UE4M3: [f32; 256] = ue4m3_table(1.0);
/// The same halved (ggml's convention, paired with [`KVALUES_FP4`]).
pub static UE4M3_HALF: [f32; 256] = ue4m3_table(0.5);

const fn ue4m3_table(mul: f32) -> [f32; 256] {
    let mut t = [0f32; 256];
    let mut x = 0;
    while x < 256 {
        let exp = (x >> 3) & 0xF;
        let man = (x & 7) as u32;
        t[x] = if x == 0 || x == 0x7F {
            0.0
        } else if exp == 0 {
            // man·2⁻⁹: exact in f32 from bits.
            man as f32 * f32::from_bits((127 - 9) << 23) * mul
        } else {
            f32::from_bits((((exp as u32) + 127 - 7) << 23) | (man << 20)) * mul
        };
        x += 1;
    }
    t
}

/// Elements per NVFP4 block and per scale.
pub const QK_NVFP4: usize = 64;
/// Elements per NVFP4 scale.
pub const QK_NVFP4_SUB: usize = 16;

pub(crate) fn quantize_mxfp4(x: &[f32], out: &mut [BlockMxfp4]) {
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        b.e = mxfp4_exponent(amax);
        let inv = 1.0 / e8m0_decode(b.e);
        for j in 0..16 {
            b.qs[j] = e2m1_encode(xb[j] * inv) | (e2m1_encode(xb[j + 16] * inv) << 4);
        }
    }
}

/// Single-level NVFP4: each sub-block's scale is `amax/6` rounded to UE4M3, at least the
/// smallest subnormal when the block is not all zeros (ModelOpt's clamp: small blocks keep
/// their largest values instead of flushing to zero).
pub(crate) fn quantize_nvfp4(x: &[f32], out: &mut [BlockNvfp4]) {
    for (xb, b) in x.chunks_exact(QK_NVFP4).zip(out.iter_mut()) {
        for (s, sub) in xb.chunks_exact(QK_NVFP4_SUB).enumerate() {
            let amax = sub.iter().fold(0f32, |m, v| m.max(v.abs()));
            let mut code = ue4m3_encode(amax / 6.0);
            if code == 0 && amax > 0.0 {
                code = 1;
            }
            b.d[s] = code;
            let scale = UE4M3[usize::from(code)];
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for j in 0..8 {
                b.qs[8 * s + j] = e2m1_encode(sub[j] * inv) | (e2m1_encode(sub[j + 8] * inv) << 4);
            }
        }
    }
}

pub(crate) fn dequantize_mxfp4(blocks: &[BlockMxfp4], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = e8m0_half(b.e);
        for j in 0..16 {
            o[j] = f32::from(KVALUES_FP4[usize::from(b.qs[j] & 15)]) * d;
            o[j + 16] = f32::from(KVALUES_FP4[usize::from(b.qs[j] >> 4)]) * d;
        }
    }
}

pub(crate) fn dequantize_nvfp4(blocks: &[BlockNvfp4], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK_NVFP4)) {
        for (s, os) in o.chunks_exact_mut(QK_NVFP4_SUB).enumerate() {
            let d = UE4M3_HALF[usize::from(b.d[s])];
            for j in 0..8 {
                let q = b.qs[8 * s + j];
                os[j] = f32::from(KVALUES_FP4[usize::from(q & 15)]) * d;
                os[j + 8] = f32::from(KVALUES_FP4[usize::from(q >> 4)]) * d;
            }
        }
    }
}

/// Element e (0..32) of the 32-element half `h` of an NVFP4 block, as its doubled-int code
/// index: sub-block `2h + e/16`, byte `e % 8` of it, high nibble for `e % 16 >= 8`.
#[inline(always)]
pub(crate) fn nvfp4_code(b: &BlockNvfp4, h: usize, e: usize) -> usize {
    let sub = 2 * h + e / 16;
    let byte = b.qs[8 * sub + e % 8];
    usize::from(if e % 16 < 8 { byte & 15 } else { byte >> 4 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2m1_round_trips_and_rounds_to_nearest_even() {
        for c in 0..16u8 {
            let want = if c == 8 { 0 } else { c };
            assert_eq!(e2m1_encode(E2M1[usize::from(c)]), want, "code {c}");
            assert_eq!(
                f32::from(KVALUES_FP4[usize::from(c)]),
                2.0 * E2M1[usize::from(c)]
            );
        }
        // Every midpoint between neighbouring magnitudes goes to the even code.
        let mags = &E2M1[..8];
        for i in 0..7 {
            let mid = (mags[i] + mags[i + 1]) / 2.0;
            let even = if i % 2 == 0 { i } else { i + 1 } as u8;
            assert_eq!(e2m1_encode(mid), even, "midpoint {mid}");
            assert_eq!(e2m1_encode(-mid), if even == 0 { 0 } else { even | 8 });
            assert_eq!(e2m1_encode(mid.next_down()), i as u8);
            assert_eq!(e2m1_encode(mid.next_up()), i as u8 + 1);
        }
        assert_eq!(e2m1_encode(100.0), 7);
        assert_eq!(e2m1_encode(-100.0), 15);
        assert_eq!(e2m1_encode(f32::NAN), 0);
    }

    #[test]
    fn e4m3_matches_the_definition_exhaustively() {
        for code in 0..=255u8 {
            let v = e4m3_decode(code);
            let (s, e, m) = (code >> 7, (code >> 3) & 15, code & 7);
            if e == 15 && m == 7 {
                assert!(v.is_nan());
                continue;
            }
            let mag = if e == 0 {
                f64::from(m) / 8.0 * 2f64.powi(-6)
            } else {
                (1.0 + f64::from(m) / 8.0) * 2f64.powi(i32::from(e) - 7)
            };
            assert_eq!(
                f64::from(v),
                if s == 1 { -mag } else { mag },
                "code {code:#x}"
            );
            if s == 0 {
                // ggml's table agrees on every finite non-negative code; NaN decodes to 0.
                assert_eq!(UE4M3[usize::from(code)], v);
                assert_eq!(UE4M3_HALF[usize::from(code)], v / 2.0);
                assert_eq!(ue4m3_encode(v), if code == 0 { 0 } else { code });
            }
        }
        assert_eq!(e4m3_decode(0x7E), 448.0);
        assert_eq!(UE4M3[0x7F], 0.0);
        assert_eq!(ue4m3_encode(1e9), 0x7E);
        assert_eq!(ue4m3_encode(-1.0), 0);
        assert_eq!(ue4m3_encode(f32::NAN), 0);
        // Midpoints round to the even code, just off them to the nearer one.
        for code in 0..0x7Eu8 {
            let (a, b) = (UE4M3[usize::from(code)], UE4M3[usize::from(code) + 1]);
            let mid = (a + b) / 2.0;
            let even = if code % 2 == 0 { code } else { code + 1 };
            assert_eq!(ue4m3_encode(mid), even, "between {code:#x} and next");
            if mid.next_down() > 0.0 {
                assert_eq!(ue4m3_encode(mid.next_down()), code);
            }
            assert_eq!(ue4m3_encode(mid.next_up()), code + 1);
        }
    }

    #[test]
    fn e8m0_matches_the_definition_exhaustively() {
        for e in 0..=254u8 {
            let want = 2f64.powi(i32::from(e) - 127);
            assert_eq!(f64::from(e8m0_decode(e)), want, "e = {e}");
            assert_eq!(f64::from(e8m0_half(e)), want / 2.0, "half, e = {e}");
        }
        assert!(e8m0_decode(255).is_nan());
        // The block exponent puts amax in [4, 8)·2^(e−127).
        for amax in [1e-30f32, 0.001, 0.37, 1.0, 4.0, 5.99, 6.0, 7.9, 1234.5] {
            let e = mxfp4_exponent(amax);
            let r = amax / e8m0_decode(e);
            assert!((4.0..8.0).contains(&r), "amax {amax}: ratio {r}");
        }
        assert_eq!(mxfp4_exponent(0.0), 0);
        let tiny = f32::from_bits(1); // 2^-149: the exponent clamps at 0
        assert_eq!(mxfp4_exponent(tiny), 0);
    }

    /// Deterministic values spread over many binades, with exact zeros and sign changes.
    fn spread(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                let binade = ((s >> 8) % 40) as i32 - 30;
                if i % 61 == 0 {
                    0.0
                } else {
                    u * (2f32).powi(binade / 4 + (i / 64) as i32 % 12 - 8)
                }
            })
            .collect()
    }

    /// Each dequantized element is the grid value nearest to x (no other E2M1 multiple of the
    /// block's scale is closer), which is the bound the format implies: half a grid step, or
    /// the distance to ±6·scale when x saturates.
    fn assert_nearest(x: &[f32], d: &[f32], scale: f32, what: &str) {
        for (&v, &q) in x.iter().zip(d) {
            let err = (v - q).abs();
            for g in E2M1 {
                let alt = (v - g * scale).abs();
                assert!(
                    err <= alt * (1.0 + 1e-6) + f32::MIN_POSITIVE,
                    "{what}: {v} -> {q}, but {} is closer (scale {scale})",
                    g * scale
                );
            }
        }
    }

    #[test]
    fn mxfp4_quantization_is_nearest_on_the_ocp_scale() {
        let x = spread(3, 32 * 64);
        let mut blocks = vec![BlockMxfp4 { e: 0, qs: [0; 16] }; 64];
        quantize_mxfp4(&x, &mut blocks);
        let mut d = vec![0f32; x.len()];
        dequantize_mxfp4(&blocks, &mut d);
        for (i, b) in blocks.iter().enumerate() {
            let xb = &x[32 * i..32 * i + 32];
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(b.e, mxfp4_exponent(amax));
            assert_nearest(xb, &d[32 * i..32 * i + 32], e8m0_decode(b.e), "mxfp4");
        }
    }

    #[test]
    fn nvfp4_quantization_is_nearest_with_a_rounded_scale() {
        let x = spread(5, 64 * 48);
        let mut blocks = vec![
            BlockNvfp4 {
                d: [0; 4],
                qs: [0; 32]
            };
            48
        ];
        quantize_nvfp4(&x, &mut blocks);
        let mut d = vec![0f32; x.len()];
        dequantize_nvfp4(&blocks, &mut d);
        for (i, b) in blocks.iter().enumerate() {
            for s in 0..4 {
                let r = 64 * i + 16 * s..64 * i + 16 * s + 16;
                let amax = x[r.clone()].iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = UE4M3[usize::from(b.d[s])];
                // The scale is amax/6 rounded to UE4M3: within half a step (2^-4 relative for
                // normals, 2^-10 absolute for subnormals), or the clamp at the ends.
                let want = amax / 6.0;
                if amax == 0.0 {
                    assert_eq!(b.d[s], 0);
                } else if want >= 448.0 {
                    assert_eq!(b.d[s], 0x7E);
                } else if want >= 2f32.powi(-6) {
                    assert!((scale - want).abs() <= want / 16.0, "{scale} vs {want}");
                } else {
                    assert!(
                        (scale - want).abs() <= 2f32.powi(-10) || b.d[s] == 1,
                        "{scale} vs {want}"
                    );
                }
                assert_nearest(&x[r.clone()], &d[r], scale, "nvfp4");
            }
        }
    }
}
