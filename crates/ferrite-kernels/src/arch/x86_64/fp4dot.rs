//! MXFP4 and NVFP4 weights · Q8_0 activations on 256-bit vectors, generated for AVX2
//! (`maddubs`) and AVX-512 VNNI (`vpdpbusd`). E2M1 codes become signed doubled ints through one
//! 16-entry byte shuffle (`kvalues_fp4`), then the s8 × s8 sign trick as for Q4_0. Each kernel
//! does the float arithmetic of `dot::scalar` exactly (one FMA per lane per 32 elements, in the
//! same order), so every ISA gives the same bits.
//!
//! # Safety contract of every kernel
//! As in `qdot`: `w` holds `n / block_size` weight blocks and `a` (or each of the four `a`)
//! `n / 32` Q8_0 blocks; callers check lengths, and the table is built only for a supported ISA.

macro_rules! fp4_kernels {
    ($modname:ident, $features:literal, $mul_sum:path) => {
        pub(crate) mod $modname {
            use std::arch::x86_64::*;

            use crate::arch::x86_64::common::*;
            use crate::quant::fp4::{e8m0_half, KVALUES_FP4, UE4M3_HALF};

            #[inline]
            #[target_feature(enable = $features)]
            fn lut() -> __m256i {
                // SAFETY: KVALUES_FP4 is 16 bytes.
                let v = unsafe { _mm_loadu_si128(KVALUES_FP4.as_ptr() as *const __m128i) };
                _mm256_broadcastsi128_si256(v)
            }

            /// Σ of 4-element groups of (signed weights `qx`) · (activations `y`), as 8 floats.
            #[inline]
            #[target_feature(enable = $features)]
            fn products(qx: __m256i, y: __m256i) -> __m256 {
                let p = $mul_sum(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(y, qx));
                _mm256_cvtepi32_ps(p)
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn load256(p: *const u8) -> __m256i {
                // SAFETY: the caller guarantees 32 readable bytes.
                unsafe { _mm256_loadu_si256(p as *const __m256i) }
            }

            /// The 32 elements of an MXFP4 block as signed doubled ints, in element order.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn mxfp4_ints(x: *const u8, lut: __m256i) -> __m256i {
                // SAFETY: 16 nibble bytes follow the exponent byte.
                _mm256_shuffle_epi8(lut, unsafe { bytes_from_nibbles_32(x.add(1)) })
            }

            /// Half `h` of an NVFP4 block (sub-blocks 2h, 2h+1) as signed doubled ints in
            /// element order. Bytes 0..8 of the half hold elements 0..8 (low) and 8..16 (high),
            /// bytes 8..16 elements 16..24 and 24..32: the nibble split gives the quadwords in
            /// the order 0, 2, 1, 3 of what is wanted, and one permute fixes it.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn nvfp4_ints(x: *const u8, h: usize, lut: __m256i) -> __m256i {
                // SAFETY: the half's 16 bytes start at 4 + 16h within the 36-byte block.
                let split = unsafe { bytes_from_nibbles_32(x.add(4 + 16 * h)) };
                _mm256_shuffle_epi8(lut, _mm256_permute4x64_epi64(split, 0b11_01_10_00))
            }

            /// The two sub-block scales of an NVFP4 half (ggml's halved UE4M3 values).
            ///
            /// # Safety
            /// `x` points at a whole NVFP4 block.
            #[inline]
            unsafe fn nvfp4_weight_scales(x: *const u8, h: usize) -> (f32, f32) {
                // SAFETY: the 4 scale bytes lead the block.
                let (s0, s1) = unsafe { (*x.add(2 * h), *x.add(2 * h + 1)) };
                (UE4M3_HALF[usize::from(s0)], UE4M3_HALF[usize::from(s1)])
            }

            /// Scale vector for an NVFP4 half: lanes 0–3 the first sub-block's weight scale
            /// times the activation scale `da`, lanes 4–7 the second's.
            #[inline]
            #[target_feature(enable = $features)]
            fn nvfp4_scales((d0, d1): (f32, f32), da: f32) -> __m256 {
                _mm256_set_m128(_mm_set1_ps(d1 * da), _mm_set1_ps(d0 * da))
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn mxfp4_q8_0(n: usize, w: *const u8, a: *const u8) -> f32 {
                let lut = lut();
                let mut acc = _mm256_setzero_ps();
                for i in 0..n / 32 {
                    // SAFETY: block i of each row is in bounds (module contract).
                    unsafe {
                        let (x, y) = (w.add(i * 17), a.add(i * 34));
                        let d = _mm256_set1_ps(e8m0_half(*x) * f16_at(y));
                        let p = products(mxfp4_ints(x, lut), load256(y.add(2)));
                        acc = _mm256_fmadd_ps(d, p, acc);
                    }
                }
                hsum_f32x8(acc)
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn nvfp4_q8_0(n: usize, w: *const u8, a: *const u8) -> f32 {
                let lut = lut();
                let mut acc = _mm256_setzero_ps();
                for i in 0..n / 64 {
                    for h in 0..2 {
                        // SAFETY: module contract: block i and activation block 2i+h exist.
                        unsafe {
                            let (x, y) = (w.add(i * 36), a.add((2 * i + h) * 34));
                            let d = nvfp4_scales(nvfp4_weight_scales(x, h), f16_at(y));
                            let p = products(nvfp4_ints(x, h, lut), load256(y.add(2)));
                            acc = _mm256_fmadd_ps(d, p, acc);
                        }
                    }
                }
                hsum_f32x8(acc)
            }

            // Four activation rows per weight row: each block is decoded once; the activation
            // scales come as f32 (`sc`: per 32-element block the four rows' d, then unused s).

            #[inline]
            #[target_feature(enable = $features)]
            fn finish4(acc: [__m256; 4]) -> [f32; 4] {
                std::array::from_fn(|r| hsum_f32x8(acc[r]))
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn mxfp4_q8_0_x4(
                n: usize,
                w: *const u8,
                a: [*const u8; 4],
                sc: *const f32,
            ) -> [f32; 4] {
                let lut = lut();
                let mut acc = [_mm256_setzero_ps(); 4];
                for i in 0..n / 32 {
                    // SAFETY: module contract; `sc` holds 8 floats per 32-element block.
                    unsafe {
                        let x = w.add(i * 17);
                        let dw = e8m0_half(*x);
                        let qx = mxfp4_ints(x, lut);
                        for r in 0..4 {
                            let d = _mm256_set1_ps(dw * *sc.add(8 * i + r));
                            let p = products(qx, load256(a[r].add(i * 34 + 2)));
                            acc[r] = _mm256_fmadd_ps(d, p, acc[r]);
                        }
                    }
                }
                finish4(acc)
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn nvfp4_q8_0_x4(
                n: usize,
                w: *const u8,
                a: [*const u8; 4],
                sc: *const f32,
            ) -> [f32; 4] {
                let lut = lut();
                let mut acc = [_mm256_setzero_ps(); 4];
                for i in 0..n / 64 {
                    for h in 0..2 {
                        let b = 2 * i + h;
                        // SAFETY: module contract; `sc` holds 8 floats per 32-element block.
                        unsafe {
                            let x = w.add(i * 36);
                            let qx = nvfp4_ints(x, h, lut);
                            let dw = nvfp4_weight_scales(x, h);
                            for r in 0..4 {
                                let d = nvfp4_scales(dw, *sc.add(8 * b + r));
                                let p = products(qx, load256(a[r].add(b * 34 + 2)));
                                acc[r] = _mm256_fmadd_ps(d, p, acc[r]);
                            }
                        }
                    }
                }
                finish4(acc)
            }
        }
    };
}

fp4_kernels!(avx2, "avx2,fma,f16c", mul_sum_us8_avx2);
fp4_kernels!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    mul_sum_us8_vnni
);
