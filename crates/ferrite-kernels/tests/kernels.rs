//! Every SIMD path against its scalar reference, every scalar reference against the dequantized
//! values, and quantization error bounds per format.
//!
//! Tolerance: SIMD and scalar kernels compute the same exact integer sums and differ only in the
//! order of f32 additions, so they must agree to a relative 1e-5 of the sum of |terms|.

use ferrite_kernels::quant::{dequantize_row, quantize_activations, quantize_row, QuantType};
use ferrite_kernels::{Isa, Kernels};
use proptest::prelude::*;

fn quantized(t: QuantType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; t.row_bytes(x.len()).unwrap()];
    quantize_row(t, x, &mut out).unwrap();
    out
}

fn activations(t: QuantType, x: &[f32]) -> Vec<u8> {
    let a = t.activation_type();
    let mut out = vec![0u8; a.row_bytes(x.len()).unwrap()];
    quantize_activations(a, x, &mut out).unwrap();
    out
}

fn dequantized(t: QuantType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    dequantize_row(t, bytes, &mut out).unwrap();
    out
}

/// Deterministic pseudo-random values with occasional outliers, like real weights.
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f32 / (1u64 << 53) as f32;
            let v = (u - 0.5) * 2.0 * scale;
            if s.is_multiple_of(97) {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

fn f16_at(b: &[u8], o: usize) -> f64 {
    f64::from(half::f16::from_bits(u16::from_le_bytes([b[o], b[o + 1]])).to_f32())
}

/// Σ w·x over dequantized values, in f64. For Q4_1/Q5_1 the min term uses the activation
/// block's stored sum `s` (an f16, as in llama.cpp), not the exact sum of dequantized values.
fn dequantized_dot(t: QuantType, wq: &[u8], xq: &[u8], wd: &[f32], xd: &[f32]) -> f32 {
    if !matches!(t, QuantType::Q4_1 | QuantType::Q5_1) {
        return wd
            .iter()
            .zip(xd)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum::<f64>() as f32;
    }
    let mut s = 0f64;
    for (b, (wb, ab)) in wq
        .chunks_exact(t.type_size())
        .zip(xq.chunks_exact(36))
        .enumerate()
    {
        let m = f16_at(wb, 2);
        for i in 0..32 {
            s += (f64::from(wd[32 * b + i]) - m) * f64::from(xd[32 * b + i]);
        }
        s += m * f16_at(ab, 2);
    }
    s as f32
}

fn check_simd_matches_scalar(t: QuantType, n: usize, seed: u64) {
    let w = values(seed, n, 1.0);
    let x = values(seed + 1, n, 3.0);
    let wq = quantized(t, &w);
    let xq = activations(t, &x);
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    let want = scalar.dot(t, n, &wq, &xq).unwrap();
    let wd = dequantized(t, &wq, n);
    let xd = dequantized(t.activation_type(), &xq, n);
    let mag: f32 = wd.iter().zip(&xd).map(|(a, b)| (a * b).abs()).sum::<f32>() + 1e-6;
    for isa in Isa::available() {
        let k = Kernels::new(isa).unwrap();
        let got = k.dot(t, n, &wq, &xq).unwrap();
        assert!(
            (got - want).abs() <= 1e-5 * mag,
            "{t} n={n} {isa}: {got} vs scalar {want} (magnitude {mag})"
        );
    }
    // The scalar kernel equals the dot of the dequantized rows.
    let deq = dequantized_dot(t, &wq, &xq, &wd, &xd);
    assert!(
        (deq - want).abs() <= 2e-5 * mag,
        "{t} n={n}: scalar {want} vs dequantized {deq}"
    );
}

#[test]
fn simd_equals_scalar_on_edge_sizes() {
    for t in QuantType::WEIGHTS {
        let bs = t.block_size();
        let sizes: Vec<usize> = if bs == 1 {
            vec![0, 1, 7, 31, 32, 33, 63, 64, 65, 576, 4097]
        } else {
            [1, 2, 3, 17, 18, 20, 33].iter().map(|b| b * bs).collect()
        };
        for (i, &n) in sizes.iter().enumerate() {
            check_simd_matches_scalar(t, n, 1000 + i as u64);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn simd_equals_scalar_on_random_rows(ti in 0usize..QuantType::WEIGHTS.len(), blocks in 1usize..12, seed in any::<u64>()) {
        let t = QuantType::WEIGHTS[ti];
        let n = if t.block_size() == 1 { blocks * 37 } else { blocks * t.block_size() };
        check_simd_matches_scalar(t, n, seed);
    }

    #[test]
    fn simd_equals_scalar_on_raw_random_blocks(ti in 3usize..QuantType::WEIGHTS.len(), blocks in 1usize..6, bytes in proptest::collection::vec(any::<u8>(), 0..8000), seed in any::<u64>()) {
        // Arbitrary bit patterns (not produced by our quantizer), with finite scales.
        let t = QuantType::WEIGHTS[ti];
        let n = blocks * t.block_size();
        let mut wq = vec![0u8; t.row_bytes(n).unwrap()];
        for (i, b) in wq.iter_mut().enumerate() { *b = bytes.get(i).copied().unwrap_or((i * 31) as u8); }
        // Keep f16 scales finite and modest: clear the exponent's top bits.
        sanitize_scales(t, &mut wq);
        let x = values(seed, n, 2.0);
        let xq = activations(t, &x);
        let scalar = Kernels::new(Isa::Scalar).unwrap();
        let want = scalar.dot(t, n, &wq, &xq).unwrap();
        let wd = dequantized(t, &wq, n);
        let xd = dequantized(t.activation_type(), &xq, n);
        let mag: f32 = wd.iter().zip(&xd).map(|(a, b)| (a * b).abs()).sum::<f32>() + 1e-6;
        let deq = dequantized_dot(t, &wq, &xq, &wd, &xd);
        prop_assert!((deq - want).abs() <= 2e-5 * mag, "{}: scalar {} vs dequantized {}", t, want, deq);
        for isa in Isa::available() {
            let got = Kernels::new(isa).unwrap().dot(t, n, &wq, &xq).unwrap();
            prop_assert!((got - want).abs() <= 1e-5 * mag, "{} {}: {} vs {}", t, isa, got, want);
        }
    }
}

/// Offsets of f16 scale fields per block, so random blocks get finite, small scales.
fn sanitize_scales(t: QuantType, data: &mut [u8]) {
    let (size, offsets): (usize, &[usize]) = match t {
        QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => (t.type_size(), &[0]),
        QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4_K | QuantType::Q5_K => {
            (t.type_size(), &[0, 2])
        }
        QuantType::Q6_K => (210, &[208]),
        QuantType::MXFP4 => {
            // E8M0 exponents near 2^0, so products stay finite.
            for block in data.chunks_exact_mut(17) {
                block[0] = 110 + block[0] % 30;
            }
            return;
        }
        _ => return,
    };
    for block in data.chunks_exact_mut(size) {
        for &o in offsets {
            block[o + 1] &= 0b1011_1111; // exponent < 16: |scale| < 2
        }
    }
}

#[test]
fn quantization_error_within_format_bounds() {
    // RMS error relative to RMS value, for Gaussian-ish data; bounds are about 1.5x what each
    // format's bits imply, catching layout bugs (which give errors near 1.0).
    let bounds = [
        (QuantType::F32, 1e-7),
        (QuantType::F16, 1e-3),
        (QuantType::BF16, 5e-3),
        (QuantType::Q8_0, 0.01),
        (QuantType::Q6_K, 0.03),
        (QuantType::Q5_0, 0.08),
        (QuantType::Q5_1, 0.05),
        (QuantType::Q5_K, 0.05),
        (QuantType::Q4_0, 0.15),
        (QuantType::Q4_1, 0.10),
        (QuantType::Q4_K, 0.10),
        (QuantType::MXFP4, 0.20),
        (QuantType::NVFP4, 0.13),
    ];
    let n = 256 * 16;
    let x = values(7, n, 1.0);
    let rms = (x.iter().map(|v| v * v).sum::<f32>() / n as f32).sqrt();
    for (t, bound) in bounds {
        let d = dequantized(t, &quantized(t, &x), n);
        let err = (x
            .iter()
            .zip(&d)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            / n as f32)
            .sqrt();
        assert!(err / rms < bound, "{t}: relative RMS error {}", err / rms);
    }
}

#[test]
fn activation_quantization_matches_llama_cpp_rounding() {
    // x·(127/amax) lands exactly on .5: rounding is half-to-even like _mm256_round_ps.
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = 3.5;
    x[3] = -2.5;
    let mut out = vec![0u8; 34];
    quantize_activations(QuantType::Q8_0, &x, &mut out).unwrap();
    let q: Vec<i8> = out[2..6].iter().map(|&b| b as i8).collect();
    assert_eq!(q, vec![127, 2, 4, -2]);
}

#[test]
fn zero_rows_quantize_to_zero() {
    for t in QuantType::WEIGHTS {
        let n = 256;
        let d = dequantized(t, &quantized(t, &vec![0.0; n]), n);
        assert!(d.iter().all(|&v| v == 0.0), "{t}");
    }
}

#[test]
fn forcing_an_isa_is_checked() {
    for isa in Isa::ALL {
        assert_eq!(Kernels::new(isa).is_ok(), isa.is_available());
    }
    assert!(Isa::parse("avx2").is_ok());
    assert!(Isa::parse("sse9")
        .unwrap_err()
        .to_string()
        .contains("expected one of"));
}

#[test]
fn dot_rejects_wrong_lengths() {
    let k = Kernels::detect();
    assert!(k.dot(QuantType::Q4_0, 32, &[0u8; 17], &[0u8; 34]).is_err());
    assert!(k.dot(QuantType::Q4_0, 33, &[0u8; 18], &[0u8; 34]).is_err());
    assert!(k
        .dot(QuantType::Q8_K, 256, &[0u8; 292], &[0u8; 292])
        .is_err());
}

#[test]
fn f16_accumulator_kernels_match_scalar() {
    use half::f16;
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    for n in [0usize, 1, 7, 8, 9, 16, 33, 64, 256, 257] {
        let y0: Vec<u16> = values(n as u64, n, 4.0)
            .iter()
            .map(|v| f16::from_f32(*v).to_bits())
            .collect();
        let x: Vec<u8> = values(n as u64 + 9, n, 2.0)
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        let mut want = y0.clone();
        scalar.mad_f16(&mut want, &x, 0.37).unwrap();
        scalar.scale_f16(&mut want, 0.9);
        // The SIMD widths do the same per-element arithmetic: bit-identical to each other.
        let simd: Vec<Vec<u16>> = Isa::available()
            .into_iter()
            .filter(|&i| i != Isa::Scalar)
            .map(|isa| {
                let k = Kernels::new(isa).unwrap();
                let mut got = y0.clone();
                k.mad_f16(&mut got, &x, 0.37).unwrap();
                k.scale_f16(&mut got, 0.9);
                got
            })
            .collect();
        assert!(simd.windows(2).all(|w| w[0] == w[1]), "n={n}");
        for isa in Isa::available() {
            let k = Kernels::new(isa).unwrap();
            let mut got = y0.clone();
            k.mad_f16(&mut got, &x, 0.37).unwrap();
            k.scale_f16(&mut got, 0.9);
            for (a, b) in got.iter().zip(&want) {
                // FMA vs separate multiply-add may differ by one f16 ulp.
                let (a, b) = (f16::from_bits(*a).to_f32(), f16::from_bits(*b).to_f32());
                assert!(
                    (a - b).abs() <= b.abs() * 1e-3 + 1e-6,
                    "{isa} n={n}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn q4_k_matrix_kernel_matches_scalar_and_dequantized() {
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    for blocks in [1usize, 4, 8] {
        let n = 256 * blocks;
        let w = values(3 + blocks as u64, n, 1.0);
        let x = values(5 + blocks as u64, n, 2.0);
        let (wq, xq) = (
            quantized(QuantType::Q4_K, &w),
            activations(QuantType::Q4_K, &x),
        );
        let plain = scalar.dot(QuantType::Q4_K, n, &wq, &xq).unwrap();
        // (matrix rows, activation row, activation rows): GEMV-style, then GEMM-style rows.
        for shape in [(640, 0, 1), (640, 0, 4), (640, 4, 6)] {
            let want = scalar
                .matrix_row_dot(QuantType::Q4_K, shape, n, &wq, &xq)
                .unwrap();
            assert!(
                (want - plain).abs() <= 1e-5 * want.abs().max(1.0),
                "{shape:?}"
            );
            for isa in Isa::available() {
                let k = Kernels::new(isa).unwrap();
                let got = k
                    .matrix_row_dot(QuantType::Q4_K, shape, n, &wq, &xq)
                    .unwrap();
                assert_eq!(got, want, "{isa} {shape:?}");
            }
        }
    }
}

#[test]
fn llama_cpp_kernel_variants_agree_across_isas() {
    // Every (format, matrix rows, activation row, batch) combination that selects a different
    // llama.cpp arithmetic: all ISAs must give the same bits, close to the plain dot product.
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    let cases = [
        (QuantType::Q4_K, (640, 0, 1)),
        (QuantType::Q4_K, (640, 0, 8)),
        (QuantType::Q4_K, (641, 0, 8)),
        (QuantType::Q4_K, (641, 0, 2)),
        (QuantType::Q5_K, (64, 3, 16)),
        (QuantType::Q5_K, (64, 0, 1)),
        (QuantType::Q6_K, (64, 5, 9)),
        (QuantType::Q6_K, (64, 0, 1)),
    ];
    for (t, shape) in cases {
        let n = 256 * 4;
        let (wq, xq) = (
            quantized(t, &values(31, n, 1.0)),
            activations(t, &values(37, n, 2.0)),
        );
        let want = scalar.matrix_row_dot(t, shape, n, &wq, &xq).unwrap();
        let plain = scalar.dot(t, n, &wq, &xq).unwrap();
        assert!(
            (want - plain).abs() <= 2e-5 * plain.abs().max(1.0),
            "{t} {shape:?}: {want} vs {plain}"
        );
        for isa in Isa::available() {
            let got = Kernels::new(isa)
                .unwrap()
                .matrix_row_dot(t, shape, n, &wq, &xq)
                .unwrap();
            assert_eq!(got, want, "{t} {isa} {shape:?}");
        }
    }
}

#[test]
fn fp4_kernels_are_bit_identical_across_isas() {
    // The FP4 kernels do the scalar reference's float operations in the same order.
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    for t in [QuantType::MXFP4, QuantType::NVFP4] {
        for blocks in [1usize, 3, 10] {
            let n = 64 * blocks;
            let wq = quantized(t, &values(blocks as u64, n, 0.05));
            let xq = activations(t, &values(blocks as u64 + 50, n, 3.0));
            let want = scalar.dot(t, n, &wq, &xq).unwrap();
            for isa in Isa::available() {
                let got = Kernels::new(isa).unwrap().dot(t, n, &wq, &xq).unwrap();
                assert_eq!(got.to_bits(), want.to_bits(), "{t} n={n} {isa}");
            }
        }
    }
}
