//! f16 ↔ f32 rows with F16C (8 per instruction) and AVX-512 (16, the tail masked): IEEE
//! round-to-nearest-even, the same bits as `half`'s element conversion that
//! `crate::half_rows` keeps as the reference.
//!
//! # Safety contract
//! `src` must be readable and `dst` writable for `n` elements each (f16 as 2 little-endian
//! bytes, unaligned allowed), and the CPU must have the enabled features; the safe wrappers in
//! `crate::half_rows` check both.

use std::arch::x86_64::*;

/// Round to nearest even (F16C's immediate takes only the rounding bits).
const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT;

/// `n` f32 at `src` to f16 at `dst`.
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw")]
pub(crate) unsafe fn to_f16_avx512(src: *const f32, dst: *mut u8, n: usize) {
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: elements i..i + 16 are in bounds (contract).
        unsafe {
            let h = _mm512_cvtps_ph::<NEAREST>(_mm512_loadu_ps(src.add(i)));
            _mm256_storeu_si256(dst.add(2 * i) as *mut __m256i, h);
        }
        i += 16;
    }
    if i < n {
        let m = ((1u32 << (n - i)) - 1) as __mmask16;
        // SAFETY: the mask covers elements i..n only, in bounds (contract).
        unsafe {
            let h = _mm512_cvtps_ph::<NEAREST>(_mm512_maskz_loadu_ps(m, src.add(i)));
            _mm256_mask_storeu_epi16(dst.add(2 * i) as *mut i16, m, h);
        }
    }
}

/// `n` f16 at `src` to f32 at `dst`.
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw")]
pub(crate) unsafe fn to_f32_avx512(src: *const u8, dst: *mut f32, n: usize) {
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: elements i..i + 16 are in bounds (contract).
        unsafe {
            let h = _mm256_loadu_si256(src.add(2 * i) as *const __m256i);
            _mm512_storeu_ps(dst.add(i), _mm512_cvtph_ps(h));
        }
        i += 16;
    }
    if i < n {
        let m = ((1u32 << (n - i)) - 1) as __mmask16;
        // SAFETY: the mask covers elements i..n only, in bounds (contract).
        unsafe {
            let h = _mm256_maskz_loadu_epi16(m, src.add(2 * i) as *const i16);
            _mm512_mask_storeu_ps(dst.add(i), m, _mm512_cvtph_ps(h));
        }
    }
}

/// `n` f32 at `src` to f16 at `dst`, 8 at a time; the last `n % 8` one by one.
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn to_f16_f16c(src: *const f32, dst: *mut u8, n: usize) {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: elements i..i + 8 are in bounds (contract).
        unsafe {
            let h = _mm256_cvtps_ph::<NEAREST>(_mm256_loadu_ps(src.add(i)));
            _mm_storeu_si128(dst.add(2 * i) as *mut __m128i, h);
        }
        i += 8;
    }
    while i < n {
        // SAFETY: element i < n is in bounds (contract).
        unsafe {
            let h = _mm_cvtps_ph::<NEAREST>(_mm_set_ss(*src.add(i)));
            (dst.add(2 * i) as *mut u16).write_unaligned(_mm_extract_epi16::<0>(h) as u16);
        }
        i += 1;
    }
}

/// `n` f16 at `src` to f32 at `dst`, 8 at a time; the last `n % 8` one by one.
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn to_f32_f16c(src: *const u8, dst: *mut f32, n: usize) {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: elements i..i + 8 are in bounds (contract).
        unsafe {
            let h = _mm_loadu_si128(src.add(2 * i) as *const __m128i);
            _mm256_storeu_ps(dst.add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    while i < n {
        // SAFETY: element i < n is in bounds (contract).
        unsafe {
            let b = (src.add(2 * i) as *const u16).read_unaligned();
            *dst.add(i) = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(b))));
        }
        i += 1;
    }
}
