//! f32 matrix products with the arithmetic of ggml's `simd_gemm` (the tiled flash attention of
//! llama.cpp's CPU backend): `C[m×n] += A[m×k]·B[k×n]` where every element of C is one chain of
//! fused multiply-adds over k in order, started from C's value. Register tiles of up to four rows
//! of A by up to four vectors of columns share each B load and each broadcast of A; which tile
//! an element falls in never changes its chain, so any tiling gives the same bits as the scalar
//! reference (`crate::attention_tiled::gemm_ref`). One macro writes the AVX-512 and the AVX2
//! family, which differ only in vector type, width and how many vectors a tile holds.
//!
//! # Safety contract (every function here)
//! The CPU must support the named target features; `a` must hold `m` rows of `k` floats at
//! stride `lda`, `b` `k` rows of `n` floats at stride `ldb`, `c` `m` rows of `n` floats at
//! stride `ldc`; `n` a multiple of the vector width (16 for AVX-512, 8 for AVX2).

use std::arch::x86_64::*;

/// A module `$name` with `gemm` (`C += A·B`) for one vector family: `$lanes` f32 per `$v`,
/// tiles of 4 (or 1) rows × `$wide` vectors, then one tile of the 1–3 vectors of columns left.
macro_rules! gemm_family {
    ($name:ident, $feat:literal, $v:ty, $lanes:literal, $wide:literal,
     $zero:ident, $load:ident, $store:ident, $set1:ident, $fma:ident) => {
        pub(crate) mod $name {
            use super::*;

            /// One register tile: `RM` rows × `RN` column vectors.
            #[inline]
            #[target_feature(enable = $feat)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn tile<const RM: usize, const RN: usize>(
                k: usize,
                a: *const f32,
                lda: usize,
                b: *const f32,
                ldb: usize,
                c: *mut f32,
                ldc: usize,
            ) {
                // SAFETY: (whole body) the tile's rows and columns lie inside A, B and C
                // (module contract; the caller passes offsets of whole tiles).
                unsafe {
                    let mut acc = [[$zero(); RN]; RM];
                    for (i, row) in acc.iter_mut().enumerate() {
                        for (r, v) in row.iter_mut().enumerate() {
                            *v = $load(c.add(i * ldc + r * $lanes));
                        }
                    }
                    for kk in 0..k {
                        let mut bv = [$zero(); RN];
                        for (r, v) in bv.iter_mut().enumerate() {
                            *v = $load(b.add(kk * ldb + r * $lanes));
                        }
                        for (i, row) in acc.iter_mut().enumerate() {
                            let p: $v = $set1(*a.add(i * lda + kk));
                            for (v, &bw) in row.iter_mut().zip(&bv) {
                                *v = $fma(bw, p, *v);
                            }
                        }
                    }
                    for (i, row) in acc.iter().enumerate() {
                        for (r, &v) in row.iter().enumerate() {
                            $store(c.add(i * ldc + r * $lanes), v);
                        }
                    }
                }
            }

            /// The columns of `RM` rows: tiles of `$wide` vectors, then one of those left.
            #[inline]
            #[target_feature(enable = $feat)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn rows<const RM: usize>(
                k: usize,
                n: usize,
                a: *const f32,
                lda: usize,
                b: *const f32,
                ldb: usize,
                c: *mut f32,
                ldc: usize,
            ) {
                let mut j = 0;
                // SAFETY: every tile's columns are < n (module contract: n a whole number of
                // vectors).
                unsafe {
                    while j + $wide * $lanes <= n {
                        tile::<RM, $wide>(k, a, lda, b.add(j), ldb, c.add(j), ldc);
                        j += $wide * $lanes;
                    }
                    let (b, c) = (b.add(j), c.add(j));
                    match (n - j) / $lanes {
                        3 => tile::<RM, 3>(k, a, lda, b, ldb, c, ldc),
                        2 => tile::<RM, 2>(k, a, lda, b, ldb, c, ldc),
                        1 => tile::<RM, 1>(k, a, lda, b, ldb, c, ldc),
                        _ => {}
                    }
                }
            }

            /// `C += A·B`, `n` a multiple of the vector width.
            #[target_feature(enable = $feat)]
            #[allow(clippy::too_many_arguments)]
            pub(crate) unsafe fn gemm(
                m: usize,
                k: usize,
                n: usize,
                a: *const f32,
                lda: usize,
                b: *const f32,
                ldb: usize,
                c: *mut f32,
                ldc: usize,
            ) {
                let mut i = 0;
                // SAFETY: rows i..i + 4 (or i) are < m (module contract).
                unsafe {
                    while i + 4 <= m {
                        rows::<4>(k, n, a.add(i * lda), lda, b, ldb, c.add(i * ldc), ldc);
                        i += 4;
                    }
                    while i < m {
                        rows::<1>(k, n, a.add(i * lda), lda, b, ldb, c.add(i * ldc), ldc);
                        i += 1;
                    }
                }
            }
        }
    };
}

// AVX-512: 4 × 4 vectors (16 accumulators of the 32 registers).
gemm_family!(
    avx512,
    "avx512f",
    __m512,
    16,
    4,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps
);
// AVX2: 4 × 2 vectors (8 accumulators of the 16 registers).
gemm_family!(
    avx2,
    "avx2,fma",
    __m256,
    8,
    2,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps
);

pub(crate) use avx2::gemm as gemm_avx2;
pub(crate) use avx512::gemm as gemm_avx512;
