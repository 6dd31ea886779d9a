//! f32 matrix products with the arithmetic of ggml's `simd_gemm` (the tiled flash attention of
//! llama.cpp's CPU backend): `C[m×n] += A[m×k]·B[k×n]` where every element of C is one chain of
//! fused multiply-adds over k in order, started from C's value. Register tiles of up to four rows
//! of A by four vectors of columns share each B load and each broadcast of A; which tile an
//! element falls in never changes its chain, so any tiling gives the same bits as the scalar
//! reference (`crate::attention_tiled::gemm_ref`).
//!
//! # Safety contract (every function here)
//! The CPU must support the named target features; `a` must hold `m` rows of `k` floats at
//! stride `lda`, `b` `k` rows of `n` floats at stride `ldb`, `c` `m` rows of `n` floats at
//! stride `ldc`; `n` a multiple of the vector width (16 for AVX-512, 8 for AVX2).

use std::arch::x86_64::*;

/// One AVX-512 register tile: `RM` rows × `RN` 16-lane column vectors.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile512<const RM: usize, const RN: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    // SAFETY: (whole body) the tile's rows and columns lie inside A, B and C (module contract;
    // the caller passes offsets of whole tiles).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); RN]; RM];
        for (i, row) in acc.iter_mut().enumerate() {
            for (r, v) in row.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(c.add(i * ldc + r * 16));
            }
        }
        for kk in 0..k {
            let mut bv = [_mm512_setzero_ps(); RN];
            for (r, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(b.add(kk * ldb + r * 16));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let p = _mm512_set1_ps(*a.add(i * lda + kk));
                for (v, &bw) in row.iter_mut().zip(&bv) {
                    *v = _mm512_fmadd_ps(bw, p, *v);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (r, &v) in row.iter().enumerate() {
                _mm512_storeu_ps(c.add(i * ldc + r * 16), v);
            }
        }
    }
}

/// The columns of `RM` rows: 64-column tiles, then one tile of the 16–48 columns left.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows512<const RM: usize>(
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
    // SAFETY: every tile's columns j..j + 64 (or + 16) are < n (module contract).
    unsafe {
        while j + 64 <= n {
            tile512::<RM, 4>(k, a, lda, b.add(j), ldb, c.add(j), ldc);
            j += 64;
        }
        let (b, c) = (b.add(j), c.add(j));
        match n - j {
            48 => tile512::<RM, 3>(k, a, lda, b, ldb, c, ldc),
            32 => tile512::<RM, 2>(k, a, lda, b, ldb, c, ldc),
            16 => tile512::<RM, 1>(k, a, lda, b, ldb, c, ldc),
            _ => {}
        }
    }
}

/// `C += A·B` (AVX-512), `n % 16 == 0`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_avx512(
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
            rows512::<4>(k, n, a.add(i * lda), lda, b, ldb, c.add(i * ldc), ldc);
            i += 4;
        }
        while i < m {
            rows512::<1>(k, n, a.add(i * lda), lda, b, ldb, c.add(i * ldc), ldc);
            i += 1;
        }
    }
}

/// One AVX2 register tile: `RM` rows × `RN` 8-lane column vectors.
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile256<const RM: usize, const RN: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    // SAFETY: as in `tile512`.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); RN]; RM];
        for (i, row) in acc.iter_mut().enumerate() {
            for (r, v) in row.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(c.add(i * ldc + r * 8));
            }
        }
        for kk in 0..k {
            let mut bv = [_mm256_setzero_ps(); RN];
            for (r, v) in bv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(b.add(kk * ldb + r * 8));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let p = _mm256_set1_ps(*a.add(i * lda + kk));
                for (v, &bw) in row.iter_mut().zip(&bv) {
                    *v = _mm256_fmadd_ps(bw, p, *v);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (r, &v) in row.iter().enumerate() {
                _mm256_storeu_ps(c.add(i * ldc + r * 8), v);
            }
        }
    }
}

/// `C += A·B` (AVX2 + FMA), `n % 8 == 0`: tiles of 4 rows × 16 columns (12 of the 16
/// registers), then 8-column and single-row ones.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_avx2(
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
    // SAFETY: every tile lies inside the matrices (module contract).
    unsafe {
        let mut i = 0;
        while i < m {
            let (ai, ci) = (a.add(i * lda), c.add(i * ldc));
            let four = i + 4 <= m;
            let mut j = 0;
            while j + 16 <= n {
                if four {
                    tile256::<4, 2>(k, ai, lda, b.add(j), ldb, ci.add(j), ldc);
                } else {
                    tile256::<1, 2>(k, ai, lda, b.add(j), ldb, ci.add(j), ldc);
                }
                j += 16;
            }
            while j + 8 <= n {
                if four {
                    tile256::<4, 1>(k, ai, lda, b.add(j), ldb, ci.add(j), ldc);
                } else {
                    tile256::<1, 1>(k, ai, lda, b.add(j), ldb, ci.add(j), ldc);
                }
                j += 8;
            }
            i += if four { 4 } else { 1 };
        }
    }
}
