//! Quantized dot products on 256-bit vectors, generated twice: once with AVX2 `maddubs`
//! products and once with AVX-512 VNNI `vpdpbusd`. Each kernel computes one weight row · one
//! activation row; integer sums are exact and floats accumulate in 8 lanes per row.
//!
//! # Safety contract of every kernel
//! `w` must hold `n / block_size` weight blocks and `a` the matching activation blocks; the
//! callers in `dot` check slice lengths before calling, and the dispatch table is built only for
//! an ISA the CPU has.

macro_rules! qdot_kernels {
    ($modname:ident, $features:literal, $mul_sum:path) => {
        pub(crate) mod $modname {
            use std::arch::x86_64::*;

            use crate::arch::x86_64::common::*;
            use crate::quant::blocks::*;

            #[inline]
            #[target_feature(enable = $features)]
            fn mul_sum_us8(ax: __m256i, sy: __m256i) -> __m256i {
                $mul_sum(ax, sy)
            }

            /// s8 × s8 via the sign trick: |x| · (y with x's sign).
            #[inline]
            #[target_feature(enable = $features)]
            fn mul_sum_i8(x: __m256i, y: __m256i) -> __m256i {
                mul_sum_us8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn load256(p: *const u8) -> __m256i {
                // SAFETY: the caller guarantees 32 readable bytes.
                unsafe { _mm256_loadu_si256(p as *const __m256i) }
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q4_0_q8_0(n: usize, w: *const u8, a: *const u8) -> f32 {
                let mut acc = _mm256_setzero_ps();
                for i in 0..n / QK {
                    // SAFETY: block i of each row is in bounds (module contract).
                    unsafe {
                        let (x, y) = (w.add(i * 18), a.add(i * 34));
                        let d = _mm256_set1_ps(f16_at(x) * f16_at(y));
                        let qx =
                            _mm256_sub_epi8(bytes_from_nibbles_32(x.add(2)), _mm256_set1_epi8(8));
                        let p = _mm256_cvtepi32_ps(mul_sum_i8(qx, load256(y.add(2))));
                        acc = _mm256_fmadd_ps(d, p, acc);
                    }
                }
                hsum_f32x8(acc)
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q4_1_q8_1(n: usize, w: *const u8, a: *const u8) -> f32 {
                let mut acc = _mm256_setzero_ps();
                let mut mins = 0f32;
                for i in 0..n / QK {
                    // SAFETY: module contract.
                    unsafe {
                        let (x, y) = (w.add(i * 20), a.add(i * 36));
                        mins += f16_at(x.add(2)) * f16_at(y.add(2));
                        let d = _mm256_set1_ps(f16_at(x) * f16_at(y));
                        let qx = bytes_from_nibbles_32(x.add(4));
                        let p = _mm256_cvtepi32_ps(mul_sum_us8(qx, load256(y.add(4))));
                        acc = _mm256_fmadd_ps(d, p, acc);
                    }
                }
                hsum_f32x8(acc) + mins
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q5_0_q8_0(n: usize, w: *const u8, a: *const u8) -> f32 {
                let mut acc = _mm256_setzero_ps();
                for i in 0..n / QK {
                    // SAFETY: module contract.
                    unsafe {
                        let (x, y) = (w.add(i * 22), a.add(i * 34));
                        let d = _mm256_set1_ps(f16_at(x) * f16_at(y));
                        // Elements whose fifth bit is clear get 0xF0 OR-ed in, i.e. become q−16.
                        let hi = _mm256_andnot_si256(
                            bytes_from_bits_32(x.add(2)),
                            _mm256_set1_epi8(0xF0u8 as i8),
                        );
                        let qx = _mm256_or_si256(bytes_from_nibbles_32(x.add(6)), hi);
                        let p = _mm256_cvtepi32_ps(mul_sum_i8(qx, load256(y.add(2))));
                        acc = _mm256_fmadd_ps(d, p, acc);
                    }
                }
                hsum_f32x8(acc)
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q5_1_q8_1(n: usize, w: *const u8, a: *const u8) -> f32 {
                let mut acc = _mm256_setzero_ps();
                let mut mins = 0f32;
                for i in 0..n / QK {
                    // SAFETY: module contract.
                    unsafe {
                        let (x, y) = (w.add(i * 24), a.add(i * 36));
                        mins += f16_at(x.add(2)) * f16_at(y.add(2));
                        let d = _mm256_set1_ps(f16_at(x) * f16_at(y));
                        let hi =
                            _mm256_and_si256(bytes_from_bits_32(x.add(4)), _mm256_set1_epi8(0x10));
                        let qx = _mm256_or_si256(bytes_from_nibbles_32(x.add(8)), hi);
                        let p = _mm256_cvtepi32_ps(mul_sum_us8(qx, load256(y.add(4))));
                        acc = _mm256_fmadd_ps(d, p, acc);
                    }
                }
                hsum_f32x8(acc) + mins
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q8_0_q8_0(n: usize, w: *const u8, a: *const u8) -> f32 {
                let mut acc = _mm256_setzero_ps();
                for i in 0..n / QK {
                    // SAFETY: module contract.
                    unsafe {
                        let (x, y) = (w.add(i * 34), a.add(i * 34));
                        let d = _mm256_set1_ps(f16_at(x) * f16_at(y));
                        let p =
                            _mm256_cvtepi32_ps(mul_sum_i8(load256(x.add(2)), load256(y.add(2))));
                        acc = _mm256_fmadd_ps(d, p, acc);
                    }
                }
                hsum_f32x8(acc)
            }

            /// Σ_j min_j · (activation sum of sub-block j), from Q8_K's 16-element sums.
            #[inline]
            fn k4_mins(mn: &[u8; 8], y: &BlockQ8K) -> i32 {
                let mut s = 0i32;
                for j in 0..8 {
                    s += i32::from(mn[j])
                        * (i32::from(y.bsum(2 * j)) + i32::from(y.bsum(2 * j + 1)));
                }
                s
            }

            /// Products of 32 unsigned weights with 32 activations, times one sub-block scale.
            #[inline]
            #[target_feature(enable = $features)]
            fn scaled(q: __m256i, y: __m256i, scale: u8) -> __m256i {
                _mm256_mullo_epi32(mul_sum_us8(q, y), _mm256_set1_epi32(i32::from(scale)))
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q4_k_q8_k(n: usize, w: *const u8, a: *const u8) -> f32 {
                let mut acc = _mm256_setzero_ps();
                let mut acc_m = 0f32;
                let m4 = _mm256_set1_epi8(0x0F);
                for i in 0..n / QK_K {
                    // SAFETY: module contract; blocks have alignment 1.
                    let (x, y) = unsafe {
                        (
                            &*(w.add(i * 144) as *const BlockQ4K),
                            &*(a.add(i * 292) as *const BlockQ8K),
                        )
                    };
                    let (sc, mn) = scales_mins_k4(&x.scales);
                    let d = f16_le(x.d) * y.d();
                    acc_m += f16_le(x.dmin) * y.d() * k4_mins(&mn, y) as f32;
                    let mut sumi = _mm256_setzero_si256();
                    for c in 0..4 {
                        // SAFETY: 32 bytes of qs and 64 of q8 per chunk, in bounds.
                        unsafe {
                            let q4 = load256(x.qs.as_ptr().add(32 * c));
                            let y0 = load256(y.qs.as_ptr().add(64 * c) as *const u8);
                            let y1 = load256(y.qs.as_ptr().add(64 * c + 32) as *const u8);
                            let lo = _mm256_and_si256(q4, m4);
                            let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                            sumi = _mm256_add_epi32(sumi, scaled(lo, y0, sc[2 * c]));
                            sumi = _mm256_add_epi32(sumi, scaled(hi, y1, sc[2 * c + 1]));
                        }
                    }
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
                }
                hsum_f32x8(acc) - acc_m
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q5_k_q8_k(n: usize, w: *const u8, a: *const u8) -> f32 {
                let mut acc = _mm256_setzero_ps();
                let mut acc_m = 0f32;
                let m4 = _mm256_set1_epi8(0x0F);
                let one = _mm256_set1_epi8(1);
                for i in 0..n / QK_K {
                    // SAFETY: module contract; blocks have alignment 1.
                    let (x, y) = unsafe {
                        (
                            &*(w.add(i * 176) as *const BlockQ5K),
                            &*(a.add(i * 292) as *const BlockQ8K),
                        )
                    };
                    let (sc, mn) = scales_mins_k4(&x.scales);
                    let d = f16_le(x.d) * y.d();
                    acc_m += f16_le(x.dmin) * y.d() * k4_mins(&mn, y) as f32;
                    // SAFETY: 32 bytes of qh.
                    let qh = unsafe { load256(x.qh.as_ptr()) };
                    let mut sumi = _mm256_setzero_si256();
                    for c in 0..4 {
                        // SAFETY: in-bounds loads as for Q4_K.
                        unsafe {
                            let q4 = load256(x.qs.as_ptr().add(32 * c));
                            let y0 = load256(y.qs.as_ptr().add(64 * c) as *const u8);
                            let y1 = load256(y.qs.as_ptr().add(64 * c + 32) as *const u8);
                            // Bit 2c (low half) and 2c+1 (high half) of each qh byte, moved to bit 4.
                            let h = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c as i32));
                            let h_lo = _mm256_slli_epi16(_mm256_and_si256(h, one), 4);
                            let h_hi = _mm256_slli_epi16(
                                _mm256_and_si256(_mm256_srli_epi16(h, 1), one),
                                4,
                            );
                            let lo = _mm256_or_si256(_mm256_and_si256(q4, m4), h_lo);
                            let hi = _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4),
                                h_hi,
                            );
                            sumi = _mm256_add_epi32(sumi, scaled(lo, y0, sc[2 * c]));
                            sumi = _mm256_add_epi32(sumi, scaled(hi, y1, sc[2 * c + 1]));
                        }
                    }
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
                }
                hsum_f32x8(acc) - acc_m
            }

            /// Per 32 elements: unsigned 6-bit weights · activations, with the two 16-element
            /// scales of that range applied (lanes 0..4 cover elements 0..16 after `mul_sum`).
            #[inline]
            #[target_feature(enable = $features)]
            fn scaled16(q: __m256i, y: __m256i, s0: i8, s1: i8) -> __m256i {
                let (s0, s1) = (i32::from(s0), i32::from(s1));
                let scales = _mm256_setr_epi32(s0, s0, s0, s0, s1, s1, s1, s1);
                let p = mul_sum_us8(q, y);
                // maddubs+madd and vpdpbusd both sum 4 adjacent products per 32-bit lane, but
                // 128-bit lanes hold elements 0..16 and 16..32, so lanes 0..4 are elements 0..16.
                _mm256_mullo_epi32(p, scales)
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q6_k_q8_k(n: usize, w: *const u8, a: *const u8) -> f32 {
                let mut acc = _mm256_setzero_ps();
                let m4 = _mm256_set1_epi8(0x0F);
                let m2 = _mm256_set1_epi8(0x03);
                for i in 0..n / QK_K {
                    // SAFETY: module contract; blocks have alignment 1.
                    let (x, y) = unsafe {
                        (
                            &*(w.add(i * 210) as *const BlockQ6K),
                            &*(a.add(i * 292) as *const BlockQ8K),
                        )
                    };
                    let d = f16_le(x.d) * y.d();
                    // The −32 offset, removed once: 32 · Σ_j scale_j · bsum_j.
                    let mut bias = 0i32;
                    for j in 0..16 {
                        bias += i32::from(x.scales[j]) * i32::from(y.bsum(j));
                    }
                    let mut sumi = _mm256_set1_epi32(0);
                    for half in 0..2 {
                        // SAFETY: 64 bytes of ql, 32 of qh and 128 of q8 per half, in bounds.
                        unsafe {
                            let ql0 = load256(x.ql.as_ptr().add(64 * half));
                            let ql1 = load256(x.ql.as_ptr().add(64 * half + 32));
                            let qh = load256(x.qh.as_ptr().add(32 * half));
                            let q8 = y.qs.as_ptr().add(128 * half) as *const u8;
                            let sc = &x.scales[8 * half..8 * half + 8];
                            let q1 = _mm256_or_si256(
                                _mm256_and_si256(ql0, m4),
                                _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4),
                            );
                            let q2 = _mm256_or_si256(
                                _mm256_and_si256(ql1, m4),
                                _mm256_slli_epi16(
                                    _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2),
                                    4,
                                ),
                            );
                            let q3 = _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                _mm256_slli_epi16(
                                    _mm256_and_si256(_mm256_srli_epi16(qh, 4), m2),
                                    4,
                                ),
                            );
                            let q4 = _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                _mm256_slli_epi16(
                                    _mm256_and_si256(_mm256_srli_epi16(qh, 6), m2),
                                    4,
                                ),
                            );
                            sumi = _mm256_add_epi32(sumi, scaled16(q1, load256(q8), sc[0], sc[1]));
                            sumi = _mm256_add_epi32(
                                sumi,
                                scaled16(q2, load256(q8.add(32)), sc[2], sc[3]),
                            );
                            sumi = _mm256_add_epi32(
                                sumi,
                                scaled16(q3, load256(q8.add(64)), sc[4], sc[5]),
                            );
                            sumi = _mm256_add_epi32(
                                sumi,
                                scaled16(q4, load256(q8.add(96)), sc[6], sc[7]),
                            );
                        }
                    }
                    let sumi =
                        _mm256_sub_epi32(sumi, _mm256_setr_epi32(32 * bias, 0, 0, 0, 0, 0, 0, 0));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
                }
                hsum_f32x8(acc)
            }
        }
    };
}

qdot_kernels!(avx2, "avx2,fma,f16c", mul_sum_us8_avx2);
qdot_kernels!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    mul_sum_us8_vnni
);
