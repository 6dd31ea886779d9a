//! Sums of squares for RMSNorm, eight rows at once with AVX-512: lane j of one f64 vector is
//! row j's sum, so each row keeps ggml's sequential chain (`sum += f64(x·x)` element by element,
//! the square rounded in f32) while the eight chains advance together. Eight columns of the
//! eight rows are transposed per step (one load per row, then shuffles), so every lane reads
//! its row's next element.
//!
//! # Safety contract
//! `x` must be readable for 8 rows of `d` floats at stride `d`, and the CPU must have
//! AVX-512F (the safe wrapper in `crate::ops` checks the level).

use std::arch::x86_64::*;

/// Columns `c..c + 8` of rows `x + j·d`, j < 8, as eight vectors: vector t holds element
/// `c + t` of rows 0..8.
///
/// # Safety
/// The contract, with `c + 8 ≤ d`.
#[inline]
#[target_feature(enable = "avx2,avx512f")]
unsafe fn columns(x: *const f32, d: usize, c: usize) -> [__m256; 8] {
    // SAFETY: row j's elements c..c + 8 are in bounds (caller).
    let r: [__m256; 8] = std::array::from_fn(|j| unsafe { _mm256_loadu_ps(x.add(j * d + c)) });
    // Pairs of rows interleaved, then quads: u[k] holds columns k (low half) and k + 4 (high
    // half) of rows 0..4 (k < 4) or 4..8 (k ≥ 4).
    let t: [__m256; 8] = std::array::from_fn(|k| {
        let (a, b) = (r[2 * (k / 2)], r[2 * (k / 2) + 1]);
        if k % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    let quad = |lo: __m256, hi: __m256, upper: bool| {
        if upper {
            _mm256_shuffle_ps::<0xEE>(lo, hi)
        } else {
            _mm256_shuffle_ps::<0x44>(lo, hi)
        }
    };
    // u[0..4]: columns 0/4, 1/5, 2/6, 3/7 of rows 0..4; u[4..8] the same of rows 4..8.
    let u: [__m256; 8] = std::array::from_fn(|k| {
        let base = 4 * (k / 4);
        let (lo, hi) = if k % 4 < 2 {
            (t[base], t[base + 2])
        } else {
            (t[base + 1], t[base + 3])
        };
        quad(lo, hi, k % 2 == 1)
    });
    std::array::from_fn(|col| {
        let k = col % 4;
        if col < 4 {
            _mm256_permute2f128_ps::<0x20>(u[k], u[k + 4])
        } else {
            _mm256_permute2f128_ps::<0x31>(u[k], u[k + 4])
        }
    })
}

/// Row j's `Σ f64(x·x)` over its `d` elements, in order, for the 8 rows at `x` (stride `d`).
#[target_feature(enable = "avx2,avx512f")]
pub(crate) unsafe fn sums_of_squares_8(x: *const f32, d: usize) -> [f64; 8] {
    let mut acc = _mm512_setzero_pd();
    let mut c = 0;
    while c + 8 <= d {
        // SAFETY: columns c..c + 8 of the 8 rows are in bounds (contract).
        let cols = unsafe { columns(x, d, c) };
        for v in cols {
            acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_mul_ps(v, v)));
        }
        c += 8;
    }
    let mut sums = [0f64; 8];
    // SAFETY: 8 f64 into an [f64; 8].
    unsafe { _mm512_storeu_pd(sums.as_mut_ptr(), acc) };
    for (j, s) in sums.iter_mut().enumerate() {
        for i in c..d {
            // SAFETY: element i < d of row j < 8 (contract).
            let v = unsafe { *x.add(j * d + i) };
            *s += f64::from(v * v);
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::uniform;

    /// The f64 sums, not just the f32 scales, equal the sequential chains bit for bit: values
    /// of widely spread magnitudes make any other summation order visible in the f64 bits.
    #[test]
    fn eight_chains_equal_the_sequential_sums() {
        if !crate::Isa::Avx512.is_available() {
            return; // nothing to compare on this CPU (the caller never takes this path)
        }
        let mut r = uniform(5, -1.0, 2.0);
        for d in [1, 7, 8, 13, 64, 256, 640] {
            let x: Vec<f32> = (0..8 * d)
                .map(|i| r() * 10f32.powi((i % 11) as i32 - 5))
                .collect();
            // SAFETY: 8 rows of d floats; AVX-512 checked above.
            let got = unsafe { sums_of_squares_8(x.as_ptr(), d) };
            for (j, g) in got.iter().enumerate() {
                let mut want = 0f64;
                for &v in &x[j * d..(j + 1) * d] {
                    want += f64::from(v * v);
                }
                assert_eq!(g.to_bits(), want.to_bits(), "row {j} of {d}");
            }
        }
    }
}
