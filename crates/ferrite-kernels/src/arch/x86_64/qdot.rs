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
                        mins = f16_at(x.add(2)).mul_add(f16_at(y.add(2)), mins);
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
                        mins = f16_at(x.add(2)).mul_add(f16_at(y.add(2)), mins);
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

            // One weight row against four activation rows at once: the weight block is decoded
            // once and used four times, and the activation scales come pre-converted to f32
            // (`sc`: per block, the four rows' d then the four rows' s). Each row's arithmetic
            // is exactly the single-row kernel's: the same products `d_w·d_a`, the same FMAs in
            // the same order (a lane of a vector FMA rounds like the scalar one), so results are
            // bit-identical.

            #[inline]
            #[target_feature(enable = $features)]
            fn finish4(acc: [__m256; 4], extra: __m128) -> [f32; 4] {
                let mut e = [0f32; 4];
                // SAFETY: 4 floats into a 4-float array.
                unsafe { _mm_storeu_ps(e.as_mut_ptr(), extra) };
                [
                    hsum_f32x8(acc[0]) + e[0],
                    hsum_f32x8(acc[1]) + e[1],
                    hsum_f32x8(acc[2]) + e[2],
                    hsum_f32x8(acc[3]) + e[3],
                ]
            }

            /// Lane `r` of `v` in all 8 lanes.
            #[inline]
            #[target_feature(enable = $features)]
            fn lane(v: __m256, r: i32) -> __m256 {
                _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(r))
            }

            /// Shared loop: `qx(x)` decodes a weight block into signed (`$signed`) or unsigned
            /// bytes; `min_off` is the byte offset of the block's f16 min (`None`: no min).
            macro_rules! quad_kernel {
                ($name:ident, $wb:expr, $ab:expr, $qoff:expr, $min:expr, $signed:expr, |$x:ident| $decode:expr) => {
                    #[target_feature(enable = $features)]
                    pub(crate) unsafe fn $name(
                        n: usize,
                        w: *const u8,
                        a: [*const u8; 4],
                        sc: *const f32,
                    ) -> [f32; 4] {
                        let mut acc = [_mm256_setzero_ps(); 4];
                        let mut mins = _mm_setzero_ps();
                        for i in 0..n / QK {
                            // SAFETY: module contract for the rows; `sc` holds 8 floats per block.
                            unsafe {
                                let $x = w.add(i * $wb);
                                let yd = _mm_loadu_ps(sc.add(8 * i));
                                let d4 = _mm256_castps128_ps256(_mm_mul_ps(_mm_set1_ps(f16_at($x)), yd));
                                if let Some(off) = $min {
                                    let ys = _mm_loadu_ps(sc.add(8 * i + 4));
                                    mins = _mm_fmadd_ps(_mm_set1_ps(f16_at($x.add(off))), ys, mins);
                                }
                                let qx: __m256i = $decode;
                                let ax = if $signed { _mm256_sign_epi8(qx, qx) } else { qx };
                                for r in 0..4 {
                                    let q = load256(a[r].add(i * $ab + $qoff));
                                    let sy = if $signed { _mm256_sign_epi8(q, qx) } else { q };
                                    let p = _mm256_cvtepi32_ps(mul_sum_us8(ax, sy));
                                    acc[r] = _mm256_fmadd_ps(lane(d4, r as i32), p, acc[r]);
                                }
                            }
                        }
                        finish4(acc, mins)
                    }
                };
            }

            quad_kernel!(q4_0_q8_0_x4, 18, 34, 2, None::<usize>, true, |x| _mm256_sub_epi8(
                bytes_from_nibbles_32(x.add(2)),
                _mm256_set1_epi8(8)
            ));
            quad_kernel!(q4_1_q8_1_x4, 20, 36, 4, Some(2usize), false, |x| bytes_from_nibbles_32(
                x.add(4)
            ));
            quad_kernel!(q5_0_q8_0_x4, 22, 34, 2, None::<usize>, true, |x| _mm256_or_si256(
                bytes_from_nibbles_32(x.add(6)),
                _mm256_andnot_si256(bytes_from_bits_32(x.add(2)), _mm256_set1_epi8(0xF0u8 as i8))
            ));
            quad_kernel!(q5_1_q8_1_x4, 24, 36, 4, Some(2usize), false, |x| _mm256_or_si256(
                bytes_from_nibbles_32(x.add(8)),
                _mm256_and_si256(bytes_from_bits_32(x.add(4)), _mm256_set1_epi8(0x10))
            ));
            quad_kernel!(q8_0_q8_0_x4, 34, 34, 2, None::<usize>, true, |x| load256(x.add(2)));

            /// Products of 32 unsigned weights with 32 activations, times one sub-block scale.
            #[inline]
            #[target_feature(enable = $features)]
            fn scaled(q: __m256i, y: __m256i, scale: u8) -> __m256i {
                _mm256_mullo_epi32(mul_sum_us8(q, y), _mm256_set1_epi32(i32::from(scale)))
            }

            /// Block `i` of a Q4_K row and of its Q8_K activations.
            ///
            /// # Safety
            /// Module contract: both rows hold at least `i + 1` blocks.
            #[inline]
            unsafe fn k_blocks<'a, T>(
                w: *const u8,
                a: *const u8,
                i: usize,
                size: usize,
            ) -> (&'a T, &'a BlockQ8K) {
                // SAFETY: in bounds by the module contract; blocks have alignment 1; callers
                // keep the references within the kernel call (the rows outlive it).
                unsafe {
                    (
                        &*(w.add(i * size) as *const T),
                        &*(a.add(i * 292) as *const BlockQ8K),
                    )
                }
            }

            /// Integer lanes of one Q4_K (`qh = None`) or Q5_K super-block for 64-element chunk
            /// `c`: scale-weighted sums of both 32-element groups, lane k = elements 4k..4k+4.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn k4_chunk(
                qs: &[u8; 128],
                qh: Option<__m256i>,
                y: &BlockQ8K,
                sc: &[u8; 8],
                c: usize,
            ) -> __m256i {
                let m4 = _mm256_set1_epi8(0x0F);
                // SAFETY: 32 bytes of qs and 64 of q8 per chunk, in bounds.
                let (q4, y0, y1) = unsafe {
                    (
                        load256(qs.as_ptr().add(32 * c)),
                        load256(y.qs.as_ptr().add(64 * c) as *const u8),
                        load256(y.qs.as_ptr().add(64 * c + 32) as *const u8),
                    )
                };
                let mut lo = _mm256_and_si256(q4, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                if let Some(qh) = qh {
                    // Bit 2c (low half) and 2c+1 (high half) of each qh byte, moved to bit 4.
                    let one = _mm256_set1_epi8(1);
                    let h = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c as i32));
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
                    hi = _mm256_or_si256(
                        hi,
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 1), one), 4),
                    );
                }
                _mm256_add_epi32(scaled(lo, y0, sc[2 * c]), scaled(hi, y1, sc[2 * c + 1]))
            }

            /// All four chunks of a Q4_K / Q5_K super-block.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn k4_block(
                qs: &[u8; 128],
                qh: Option<__m256i>,
                y: &BlockQ8K,
                sc: &[u8; 8],
            ) -> __m256i {
                let mut sumi = _mm256_setzero_si256();
                for c in 0..4 {
                    // SAFETY: forwarded contract.
                    sumi = _mm256_add_epi32(sumi, unsafe { k4_chunk(qs, qh, y, sc, c) });
                }
                sumi
            }

            /// ggml's vec_dot epilogue for Q4_K / Q5_K: 8-lane FMAs; mins as `mins(mn, y)`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn k4_vec_dot(n: usize, w: *const u8, a: *const u8, five: bool) -> f32 {
                let size = if five { 176 } else { 144 };
                let mut acc = _mm256_setzero_ps();
                let mut acc_m = _mm_setzero_ps();
                let mut summs = 0f32;
                for i in 0..n / QK_K {
                    // SAFETY: module contract. Q5_K's header has the same prefix as Q4_K's.
                    let (x, y) = unsafe { k_blocks::<BlockQ4K>(w, a, i, size) };
                    let (sc, mn) = scales_mins_k4(&x.scales);
                    let d = y.d() * f16_le(x.d);
                    let dmin = -y.d() * f16_le(x.dmin);
                    let m = crate::dot::scalar::k4_min_lanes(&mn, y);
                    let sumi = if five {
                        // SAFETY: as above.
                        let x5 = unsafe { k_blocks::<BlockQ5K>(w, a, i, size).0 };
                        summs = dmin.mul_add((m[0] + m[1] + m[2] + m[3]) as f32, summs);
                        // SAFETY: 32 bytes of qh; chunk loads in bounds.
                        unsafe { k4_block(&x5.qs, Some(load256(x5.qh.as_ptr())), y, &sc) }
                    } else {
                        let m = _mm_setr_epi32(m[0], m[1], m[2], m[3]);
                        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(m), acc_m);
                        // SAFETY: chunk loads in bounds.
                        unsafe { k4_block(&x.qs, None, y, &sc) }
                    };
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
                }
                let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
                let m = _mm_add_ss(m, _mm_movehdup_ps(m));
                hsum_f32x8(acc) + _mm_cvtss_f32(m) + summs
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q4_k_q8_k(n: usize, w: *const u8, a: *const u8) -> f32 {
                // SAFETY: forwarded contract.
                unsafe { k4_vec_dot(n, w, a, false) }
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q5_k_q8_k(n: usize, w: *const u8, a: *const u8) -> f32 {
                // SAFETY: forwarded contract.
                unsafe { k4_vec_dot(n, w, a, true) }
            }

            /// Q4_K with ggml's repacked-GEMV arithmetic (see `scalar::q4_k_q8_k_rp`).
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q4_k_q8_k_rp(n: usize, w: *const u8, a: *const u8) -> f32 {
                let (mut acc, mut acc_m) = (0f32, 0f32);
                for i in 0..n / QK_K {
                    // SAFETY: module contract.
                    let (x, y) = unsafe { k_blocks::<BlockQ4K>(w, a, i, 144) };
                    let (sc, mn) = scales_mins_k4(&x.scales);
                    // SAFETY: chunk loads in bounds.
                    let isum = hsum_i32x8(unsafe { k4_block(&x.qs, None, y, &sc) });
                    let imin: i32 = crate::dot::scalar::k4_min_lanes(&mn, y).iter().sum();
                    acc = (isum as f32).mul_add(f16_le(x.d) * y.d(), acc);
                    acc_m = (imin as f32).mul_add(f16_le(x.dmin) * y.d(), acc_m);
                }
                acc - acc_m
            }

            /// Q4_K with ggml's repacked-GEMM arithmetic (see `scalar::q4_k_q8_k_rp4`).
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q4_k_q8_k_rp4(n: usize, w: *const u8, a: *const u8) -> f32 {
                let (mut acc, mut acc_m) = (0f32, 0f32);
                for i in 0..n / QK_K {
                    // SAFETY: module contract.
                    let (x, y) = unsafe { k_blocks::<BlockQ4K>(w, a, i, 144) };
                    let (sc, mn) = scales_mins_k4(&x.scales);
                    let mins = crate::dot::scalar::k4_min_lanes(&mn, y);
                    let (dw, dm) = (f16_le(x.d) * y.d(), f16_le(x.dmin) * y.d());
                    for c in 0..4 {
                        // SAFETY: chunk loads in bounds.
                        let isum = hsum_i32x8(unsafe { k4_chunk(&x.qs, None, y, &sc, c) });
                        acc = (isum as f32).mul_add(dw, acc);
                        acc_m = (mins[c] as f32).mul_add(dm, acc_m);
                    }
                }
                acc - acc_m
            }

            /// [`q4_k_q8_k_rp4`] for four activation rows (llama.cpp's repacked GEMM handles
            /// rows in fours too): each 64-element chunk of weights is unpacked once. Per-row
            /// arithmetic is the single-row kernel's.
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q4_k_q8_k_rp4_x4(
                n: usize,
                w: *const u8,
                a: [*const u8; 4],
                _sc: *const f32,
            ) -> [f32; 4] {
                let m4 = _mm256_set1_epi8(0x0F);
                let (mut acc, mut acc_m) = ([0f32; 4], [0f32; 4]);
                for i in 0..n / QK_K {
                    // SAFETY: module contract, for the weight row and each activation row.
                    let (x, ys) = unsafe {
                        let x = &*(w.add(i * 144) as *const BlockQ4K);
                        let y = |r: usize| &*(a[r].add(i * 292) as *const BlockQ8K);
                        (x, [y(0), y(1), y(2), y(3)])
                    };
                    let (sc, mn) = scales_mins_k4(&x.scales);
                    let (xd, xdm) = (f16_le(x.d), f16_le(x.dmin));
                    let mins = ys.map(|y| crate::dot::scalar::k4_min_lanes(&mn, y));
                    let dw = ys.map(|y| xd * y.d());
                    let dm = ys.map(|y| xdm * y.d());
                    for c in 0..4 {
                        // SAFETY: 32 bytes of qs and 64 of q8 per chunk, in bounds.
                        unsafe {
                            let q4 = load256(x.qs.as_ptr().add(32 * c));
                            let lo = _mm256_and_si256(q4, m4);
                            let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                            for r in 0..4 {
                                let q8 = ys[r].qs.as_ptr() as *const u8;
                                let y0 = load256(q8.add(64 * c));
                                let y1 = load256(q8.add(64 * c + 32));
                                let isum = hsum_i32x8(_mm256_add_epi32(
                                    scaled(lo, y0, sc[2 * c]),
                                    scaled(hi, y1, sc[2 * c + 1]),
                                ));
                                acc[r] = (isum as f32).mul_add(dw[r], acc[r]);
                                acc_m[r] = (mins[r][c] as f32).mul_add(dm[r], acc_m[r]);
                            }
                        }
                    }
                }
                [acc[0] - acc_m[0], acc[1] - acc_m[1], acc[2] - acc_m[2], acc[3] - acc_m[3]]
            }

            /// [`q6_k_q8_k_tl`] for four activation rows: the 6-bit weights of a super-block are
            /// unpacked once. Integer sums are exact, so only the float epilogue matters, and it
            /// is the single-row kernel's.
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q6_k_q8_k_tl_x4(
                n: usize,
                w: *const u8,
                a: [*const u8; 4],
                _sc: *const f32,
            ) -> [f32; 4] {
                let m4 = _mm256_set1_epi8(0x0F);
                let m2 = _mm256_set1_epi8(0x03);
                let mut out = [0f32; 4];
                for i in 0..n / QK_K {
                    // SAFETY: module contract; every load below stays inside its block.
                    unsafe {
                        let x = &*(w.add(i * 210) as *const BlockQ6K);
                        let xd = f16_le(x.d);
                        let mut q = [[_mm256_setzero_si256(); 4]; 2];
                        for (half, qh_) in q.iter_mut().enumerate() {
                            let ql0 = load256(x.ql.as_ptr().add(64 * half));
                            let ql1 = load256(x.ql.as_ptr().add(64 * half + 32));
                            let qh = load256(x.qh.as_ptr().add(32 * half));
                            let high = |shift: i32| {
                                let h = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(shift));
                                _mm256_slli_epi16(_mm256_and_si256(h, m2), 4)
                            };
                            qh_[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), high(0));
                            qh_[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), high(2));
                            qh_[2] = _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                high(4),
                            );
                            qh_[3] = _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                high(6),
                            );
                        }
                        let sc16 =
                            _mm256_cvtepi8_epi16(_mm_loadu_si128(x.scales.as_ptr() as *const __m128i));
                        for (r, o) in out.iter_mut().enumerate() {
                            let y = &*(a[r].add(i * 292) as *const BlockQ8K);
                            let bs = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
                            let bias = _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5);
                            let mut sumi = _mm256_setzero_si256();
                            for (half, qv) in q.iter().enumerate() {
                                let q8 = y.qs.as_ptr().add(128 * half) as *const u8;
                                let sc = &x.scales[8 * half..8 * half + 8];
                                for j in 0..4 {
                                    sumi = _mm256_add_epi32(
                                        sumi,
                                        scaled16(qv[j], load256(q8.add(32 * j)), sc[2 * j], sc[2 * j + 1]),
                                    );
                                }
                            }
                            let isum = hsum_i32x8(_mm256_sub_epi32(sumi, bias));
                            *o += (isum as f32 * xd) * y.d();
                        }
                    }
                }
                out
            }

            /// Q4_K / Q5_K with ggml's tiled K-quant matmul arithmetic (see
            /// `scalar::k4_tiled`).
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn k4_tiled(n: usize, w: *const u8, a: *const u8, five: bool) -> f32 {
                let size = if five { 176 } else { 144 };
                let mut out = 0f32;
                for i in 0..n / QK_K {
                    // SAFETY: module contract.
                    let (x, y) = unsafe { k_blocks::<BlockQ4K>(w, a, i, size) };
                    let (sc, mn) = scales_mins_k4(&x.scales);
                    let sumi = if five {
                        // SAFETY: as above; 32 bytes of qh.
                        unsafe {
                            let x5 = k_blocks::<BlockQ5K>(w, a, i, size).0;
                            k4_block(&x5.qs, Some(load256(x5.qh.as_ptr())), y, &sc)
                        }
                    } else {
                        // SAFETY: chunk loads in bounds.
                        unsafe { k4_block(&x.qs, None, y, &sc) }
                    };
                    let s1 = hsum_i32x8(sumi) as f32;
                    let s2: i32 = crate::dot::scalar::k4_min_lanes(&mn, y).iter().sum();
                    let r = (-f16_le(x.dmin)).mul_add(s2 as f32, s1 * f16_le(x.d));
                    out += r * y.d();
                }
                out
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q4_k_q8_k_tl(n: usize, w: *const u8, a: *const u8) -> f32 {
                // SAFETY: forwarded contract.
                unsafe { k4_tiled(n, w, a, false) }
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q5_k_q8_k_tl(n: usize, w: *const u8, a: *const u8) -> f32 {
                // SAFETY: forwarded contract.
                unsafe { k4_tiled(n, w, a, true) }
            }

            /// Per 32 elements: unsigned 6-bit weights · activations, with the two 16-element
            /// scales of that range applied (lanes 0..4 cover elements 0..16 after `mul_sum`).
            #[inline]
            #[target_feature(enable = $features)]
            fn scaled16(q: __m256i, y: __m256i, s0: i8, s1: i8) -> __m256i {
                let (s0, s1) = (i32::from(s0), i32::from(s1));
                let scales = _mm256_setr_epi32(s0, s0, s0, s0, s1, s1, s1, s1);
                _mm256_mullo_epi32(mul_sum_us8(q, y), scales)
            }

            /// Integer lanes of one Q6_K super-block, the −32 offset removed per lane as ggml's
            /// vec_dot does (lane k loses 32·(bsum[2k]·sc[2k] + bsum[2k+1]·sc[2k+1])).
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q6k_block(x: &BlockQ6K, y: &BlockQ8K) -> __m256i {
                let m4 = _mm256_set1_epi8(0x0F);
                let m2 = _mm256_set1_epi8(0x03);
                // SAFETY: 32 bytes of bsums and 16 of scales, in bounds.
                let bias = unsafe {
                    let bs = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
                    let sc =
                        _mm256_cvtepi8_epi16(_mm_loadu_si128(x.scales.as_ptr() as *const __m128i));
                    _mm256_slli_epi32(_mm256_madd_epi16(bs, sc), 5)
                };
                let mut sumi = _mm256_setzero_si256();
                for half in 0..2 {
                    // SAFETY: 64 bytes of ql, 32 of qh and 128 of q8 per half, in bounds.
                    unsafe {
                        let ql0 = load256(x.ql.as_ptr().add(64 * half));
                        let ql1 = load256(x.ql.as_ptr().add(64 * half + 32));
                        let qh = load256(x.qh.as_ptr().add(32 * half));
                        let q8 = y.qs.as_ptr().add(128 * half) as *const u8;
                        let sc = &x.scales[8 * half..8 * half + 8];
                        let high = |shift: i32| {
                            let h = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(shift));
                            _mm256_slli_epi16(_mm256_and_si256(h, m2), 4)
                        };
                        let q1 = _mm256_or_si256(_mm256_and_si256(ql0, m4), high(0));
                        let q2 = _mm256_or_si256(_mm256_and_si256(ql1, m4), high(2));
                        let q3 = _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                            high(4),
                        );
                        let q4 = _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                            high(6),
                        );
                        sumi = _mm256_add_epi32(sumi, scaled16(q1, load256(q8), sc[0], sc[1]));
                        sumi =
                            _mm256_add_epi32(sumi, scaled16(q2, load256(q8.add(32)), sc[2], sc[3]));
                        sumi =
                            _mm256_add_epi32(sumi, scaled16(q3, load256(q8.add(64)), sc[4], sc[5]));
                        sumi =
                            _mm256_add_epi32(sumi, scaled16(q4, load256(q8.add(96)), sc[6], sc[7]));
                    }
                }
                _mm256_sub_epi32(sumi, bias)
            }

            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q6_k_q8_k(n: usize, w: *const u8, a: *const u8) -> f32 {
                let mut acc = _mm256_setzero_ps();
                for i in 0..n / QK_K {
                    // SAFETY: module contract.
                    let (x, y) = unsafe { k_blocks::<BlockQ6K>(w, a, i, 210) };
                    let d = y.d() * f16_le(x.d);
                    // SAFETY: block loads in bounds.
                    let sumi = unsafe { q6k_block(x, y) };
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
                }
                hsum_f32x8(acc)
            }

            /// Q6_K with ggml's tiled K-quant matmul arithmetic (see `scalar::q6_k_q8_k_tl`).
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q6_k_q8_k_tl(n: usize, w: *const u8, a: *const u8) -> f32 {
                let mut out = 0f32;
                for i in 0..n / QK_K {
                    // SAFETY: module contract.
                    let (x, y) = unsafe { k_blocks::<BlockQ6K>(w, a, i, 210) };
                    // SAFETY: block loads in bounds.
                    let isum = hsum_i32x8(unsafe { q6k_block(x, y) });
                    out += (isum as f32 * f16_le(x.d)) * y.d();
                }
                out
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
