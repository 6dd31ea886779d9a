//! Helpers shared by the AVX2 and AVX-512 kernels. All are `#[inline]` with the AVX2 feature set,
//! so they inline into any kernel compiled with (a superset of) those features.

use std::arch::x86_64::*;

/// Horizontal sum of 8 floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn hsum_f32x8(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// One IEEE half (little-endian bytes at `p`) to f32 with F16C.
///
/// # Safety
/// `p` must be valid for reading 2 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 2 readable bytes; unaligned read.
    let bits = unsafe { (p as *const u16).read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// 16 bytes of packed nibbles at `p` to 32 bytes: low nibbles in bytes 0..16, high in 16..32
/// (the Q4/Q5 element order).
///
/// # Safety
/// `p` must be valid for reading 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bytes_from_nibbles_32(p: *const u8) -> __m256i {
    // SAFETY: 16 readable bytes, unaligned load.
    let tmp = unsafe { _mm_loadu_si128(p as *const __m128i) };
    let both = _mm256_insertf128_si256(_mm256_castsi128_si256(tmp), _mm_srli_epi16(tmp, 4), 1);
    _mm256_and_si256(_mm256_set1_epi8(0x0F), both)
}

/// The 32 bits at `p` to 32 bytes, 0xFF where the bit is set and 0x00 elsewhere.
///
/// # Safety
/// `p` must be valid for reading 4 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bytes_from_bits_32(p: *const u8) -> __m256i {
    // SAFETY: 4 readable bytes, unaligned read.
    let x32 = unsafe { (p as *const u32).read_unaligned() };
    // Byte i takes source byte i/8 ...
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0x0000000000000000,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32 as i32), shuf);
    // ... and is all ones after OR-ing every bit but bit i%8 exactly when that bit is set.
    let others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1))
}

/// u8 × i8 products summed in groups of four into 8 × i32, with `maddubs` + `madd`.
/// Exact as long as no pair sum exceeds i16 (|u| ≤ 128, |i| ≤ 127 holds for every caller).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn mul_sum_us8_avx2(ax: __m256i, sy: __m256i) -> __m256i {
    let dot = _mm256_maddubs_epi16(ax, sy);
    _mm256_madd_epi16(_mm256_set1_epi16(1), dot)
}

/// The same with one AVX-512 VNNI `vpdpbusd` (256-bit form).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) fn mul_sum_us8_vnni(ax: __m256i, sy: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy)
}

/// Horizontal sum of 8 i32 lanes (exact, wrapping like the hardware).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn hsum_i32x8(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}
