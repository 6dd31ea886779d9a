//! Float dot products (F32, F16, BF16 rows), AVX2 (8 lanes) and AVX-512 (16 lanes), with four
//! independent accumulators and a scalar tail.
//!
//! # Safety contract
//! `w` and `a` must each be valid for `n` elements of the row's type.

use std::arch::x86_64::*;

use super::common::hsum_f32x8;

/// Elements handled by the vector loop for an ISA with `lanes` floats per register.
fn vector_part(n: usize, lanes: usize) -> usize {
    n / (4 * lanes) * (4 * lanes)
}

macro_rules! avx2_float_dot {
    ($name:ident, $load:ident, $tail:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(crate) unsafe fn $name(n: usize, w: *const u8, a: *const u8) -> f32 {
            let m = vector_part(n, 8);
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i < m {
                for (k, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: i + 8k + 8 <= m <= n elements (module contract).
                    unsafe {
                        *acc = _mm256_fmadd_ps($load(w, i + 8 * k), $load(a, i + 8 * k), *acc);
                    }
                }
                i += 32;
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut sum = hsum_f32x8(s);
            for j in m..n {
                // SAFETY: j < n.
                sum += unsafe { $tail(w, j) * $tail(a, j) };
            }
            sum
        }
    };
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f32x8(p: *const u8, i: usize) -> __m256 {
    // SAFETY: caller guarantees 8 floats at element i.
    unsafe { _mm256_loadu_ps((p as *const f32).add(i)) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f16x8(p: *const u8, i: usize) -> __m256 {
    // SAFETY: caller guarantees 8 halves at element i.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128((p as *const u16).add(i) as *const __m128i)) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_bf16x8(p: *const u8, i: usize) -> __m256 {
    // SAFETY: caller guarantees 8 bfloat16 at element i. bf16 is the top half of an f32.
    unsafe {
        let h = _mm_loadu_si128((p as *const u16).add(i) as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
    }
}

unsafe fn f32_at(p: *const u8, i: usize) -> f32 {
    // SAFETY: caller guarantees element i exists.
    unsafe { (p as *const f32).add(i).read_unaligned() }
}

unsafe fn f16_at(p: *const u8, i: usize) -> f32 {
    // SAFETY: caller guarantees element i exists.
    half::f16::from_bits(unsafe { (p as *const u16).add(i).read_unaligned() }).to_f32()
}

unsafe fn bf16_at(p: *const u8, i: usize) -> f32 {
    // SAFETY: caller guarantees element i exists.
    half::bf16::from_bits(unsafe { (p as *const u16).add(i).read_unaligned() }).to_f32()
}

avx2_float_dot!(f32_avx2, load_f32x8, f32_at);
avx2_float_dot!(bf16_avx2, load_bf16x8, bf16_at);

macro_rules! avx512_float_dot {
    ($name:ident, $load:ident, $tail:expr) => {
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
        pub(crate) unsafe fn $name(n: usize, w: *const u8, a: *const u8) -> f32 {
            let m = vector_part(n, 16);
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut i = 0;
            while i < m {
                for (k, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: i + 16k + 16 <= m <= n elements (module contract).
                    unsafe {
                        *acc = _mm512_fmadd_ps($load(w, i + 16 * k), $load(a, i + 16 * k), *acc);
                    }
                }
                i += 64;
            }
            let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            let mut sum = _mm512_reduce_add_ps(s);
            for j in m..n {
                // SAFETY: j < n.
                sum += unsafe { $tail(w, j) * $tail(a, j) };
            }
            sum
        }
    };
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn load_f32x16(p: *const u8, i: usize) -> __m512 {
    // SAFETY: caller guarantees 16 floats at element i.
    unsafe { _mm512_loadu_ps((p as *const f32).add(i)) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn load_f16x16(p: *const u8, i: usize) -> __m512 {
    // SAFETY: caller guarantees 16 halves at element i.
    unsafe {
        _mm512_cvtph_ps(_mm256_loadu_si256(
            (p as *const u16).add(i) as *const __m256i
        ))
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn load_bf16x16(p: *const u8, i: usize) -> __m512 {
    // SAFETY: caller guarantees 16 bfloat16 at element i.
    unsafe {
        let h = _mm256_loadu_si256((p as *const u16).add(i) as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
    }
}

avx512_float_dot!(f32_avx512, load_f32x16, f32_at);
avx512_float_dot!(bf16_avx512, load_bf16x16, bf16_at);

/// `y[i] = f16(f32(y[i]) + f32(x[i])·v)` with one FMA per element (ggml's `ggml_vec_mad_f16`).
///
/// # Safety
/// `y` and `x` must each be valid for `n` halves.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn mad_f16_avx2(n: usize, y: *mut u16, x: *const u16, v: f32) {
    let vv = _mm256_set1_ps(v);
    let m = n / 8 * 8;
    let mut i = 0;
    while i < m {
        // SAFETY: i + 8 <= n.
        unsafe {
            let yv = _mm256_cvtph_ps(_mm_loadu_si128(y.add(i) as *const __m128i));
            let xv = _mm256_cvtph_ps(_mm_loadu_si128(x.add(i) as *const __m128i));
            let r = _mm256_fmadd_ps(xv, vv, yv);
            _mm_storeu_si128(
                y.add(i) as *mut __m128i,
                _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT),
            );
        }
        i += 8;
    }
    for j in m..n {
        // SAFETY: j < n.
        unsafe {
            let yv = half::f16::from_bits(*y.add(j)).to_f32();
            let xv = half::f16::from_bits(x.add(j).read_unaligned()).to_f32();
            *y.add(j) = half::f16::from_f32(xv.mul_add(v, yv)).to_bits();
        }
    }
}

/// `y[i] = f16(f32(y[i])·v)`.
///
/// # Safety
/// `y` must be valid for `n` halves.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn scale_f16_avx2(n: usize, y: *mut u16, v: f32) {
    let vv = _mm256_set1_ps(v);
    let m = n / 8 * 8;
    let mut i = 0;
    while i < m {
        // SAFETY: i + 8 <= n.
        unsafe {
            let yv = _mm256_cvtph_ps(_mm_loadu_si128(y.add(i) as *const __m128i));
            let r = _mm256_mul_ps(yv, vv);
            _mm_storeu_si128(
                y.add(i) as *mut __m128i,
                _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT),
            );
        }
        i += 8;
    }
    for j in m..n {
        // SAFETY: j < n.
        unsafe {
            *y.add(j) = half::f16::from_f32(half::f16::from_bits(*y.add(j)).to_f32() * v).to_bits();
        }
    }
}

/// For each accumulator g: `ys[g][i] = fma(q_i·d, vs[g], ys[g][i])` over the `n / 32` Q8_0
/// blocks at `x` (see `dot::scalar::mad_q8_0`; the same float operations per element), each
/// element dequantized once for all of them.
///
/// # Safety
/// Every `ys[g]` must be valid for `n` floats (a multiple of 32), `x` for `n / 32` blocks of 34
/// bytes, `vs.len() == ys.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn mad_q8_0_avx2(n: usize, ys: &[*mut f32], x: *const u8, vs: &[f32]) {
    for b in 0..n / 32 {
        // SAFETY: block b and its 32 outputs of every accumulator are in bounds (contract).
        unsafe {
            let blk = x.add(34 * b);
            let d = _mm256_set1_ps(super::common::f16_at(blk));
            for j in 0..4 {
                let q = _mm_loadl_epi64(blk.add(2 + 8 * j) as *const __m128i);
                let xv = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
                for (&y, &v) in ys.iter().zip(vs) {
                    let yp = y.add(32 * b + 8 * j);
                    let r = _mm256_fmadd_ps(xv, _mm256_set1_ps(v), _mm256_loadu_ps(yp));
                    _mm256_storeu_ps(yp, r);
                }
            }
        }
    }
}

/// [`mad_f16_avx2`] 16 lanes at a time (each element's arithmetic is the same: one FMA, one
/// round-to-nearest conversion), the AVX2 form for the tail.
///
/// # Safety
/// `y` and `x` must each be valid for `n` halves; the CPU must support AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(crate) unsafe fn mad_f16_avx512(n: usize, y: *mut u16, x: *const u16, v: f32) {
    let vv = _mm512_set1_ps(v);
    let m = n / 16 * 16;
    let mut i = 0;
    while i < m {
        // SAFETY: i + 16 <= n.
        unsafe {
            let yv = _mm512_cvtph_ps(_mm256_loadu_si256(y.add(i) as *const __m256i));
            let xv = _mm512_cvtph_ps(_mm256_loadu_si256(x.add(i) as *const __m256i));
            let r = _mm512_fmadd_ps(xv, vv, yv);
            _mm256_storeu_si256(
                y.add(i) as *mut __m256i,
                _mm512_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT),
            );
        }
        i += 16;
    }
    // SAFETY: the tail lies within the n halves of each.
    unsafe { mad_f16_avx2(n - m, y.add(m), x.add(m), v) }
}

/// Attention's value accumulation over a block of `n` keys, for a head of `C·16` halves held
/// in registers: per key j, when `raised[j]` the accumulator is rescaled by `e[j]`
/// (`y = f16(y·e)`, skipped when e is 1) and the value added with weight 1, else the value is
/// added with weight `e[j]` (`y = f16(y + v·w)`). Exactly [`scale_f16_avx512`] then
/// [`mad_f16_avx512`] per key, with the f16 rounding done in registers instead of through
/// memory (the `C` chunks are independent dependency chains).
///
/// # Safety
/// `acc` must be valid for `C·16` halves, `values` for `n·C·16` halves, `e` and `raised` for
/// `n` elements; the CPU must support AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(crate) unsafe fn attn_values_f16_avx512<const C: usize>(
    acc: *mut u16,
    values: *const u16,
    n: usize,
    e: *const f32,
    raised: *const bool,
) {
    // SAFETY: the grouped kernel with one query and rows of C·16 halves has this function's
    // contract.
    unsafe { attn_values_f16_group_avx512::<C, 1>([acc], values, 16 * C, n, [e], [raised]) }
}

/// [`attn_values_f16_avx512`] for `G` queries attending to the same keys (the query heads of
/// one grouped-query KV head): each value chunk is loaded and widened once for all `G`
/// accumulators, and the `G·C` accumulator chains run interleaved. Per accumulator the
/// operations and their order are exactly those of one query alone (`G = 1`, which is what
/// [`attn_values_f16_avx512`] runs). The `C·16` columns may be a slice of longer value rows
/// (`stride` halves apart): every element's chain is independent of the other columns, so a
/// wide head can be done slice by slice with the same results.
///
/// # Safety
/// Each `acc[g]` must be valid for `C·16` halves, `values` for `n` rows of `stride ≥ C·16`
/// halves (the last needs only `C·16`), each `e[g]` and `raised[g]` for `n` elements; the CPU
/// must support AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(crate) unsafe fn attn_values_f16_group_avx512<const C: usize, const G: usize>(
    acc: [*mut u16; G],
    values: *const u16,
    stride: usize,
    n: usize,
    e: [*const f32; G],
    raised: [*const bool; G],
) {
    let round = |v: __m512| _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    let mut y: [[__m512; C]; G] = std::array::from_fn(|g| {
        std::array::from_fn(|c| {
            // SAFETY: chunk c of accumulator g (contract).
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(acc[g].add(16 * c) as *const __m256i)) }
        })
    });
    for j in 0..n {
        // SAFETY: chunk c of value row j, inside the contract's n rows.
        let x: [__m512; C] = std::array::from_fn(|c| unsafe {
            _mm512_cvtph_ps(_mm256_loadu_si256(
                values.add(j * stride + c * 16) as *const __m256i
            ))
        });
        for (g, yg) in y.iter_mut().enumerate() {
            // SAFETY: j < n entries of e[g] and raised[g].
            let (ej, up) = unsafe { (*e[g].add(j), *raised[g].add(j)) };
            let w = if up {
                if ej != 1.0 {
                    let m = _mm512_set1_ps(ej);
                    for yc in yg.iter_mut() {
                        *yc = round(_mm512_mul_ps(*yc, m));
                    }
                }
                1.0
            } else {
                ej
            };
            let wv = _mm512_set1_ps(w);
            for (yc, xc) in yg.iter_mut().zip(&x) {
                *yc = round(_mm512_fmadd_ps(*xc, wv, *yc));
            }
        }
    }
    for (g, yg) in y.iter().enumerate() {
        for (c, yc) in yg.iter().enumerate() {
            // SAFETY: as above.
            unsafe {
                _mm256_storeu_si256(
                    acc[g].add(16 * c) as *mut __m256i,
                    _mm512_cvtps_ph(*yc, _MM_FROUND_TO_NEAREST_INT),
                )
            };
        }
    }
}

/// [`scale_f16_avx2`] 16 lanes at a time.
///
/// # Safety
/// `y` must be valid for `n` halves; the CPU must support AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(crate) unsafe fn scale_f16_avx512(n: usize, y: *mut u16, v: f32) {
    let vv = _mm512_set1_ps(v);
    let m = n / 16 * 16;
    let mut i = 0;
    while i < m {
        // SAFETY: i + 16 <= n.
        unsafe {
            let yv = _mm512_cvtph_ps(_mm256_loadu_si256(y.add(i) as *const __m256i));
            _mm256_storeu_si256(
                y.add(i) as *mut __m256i,
                _mm512_cvtps_ph(_mm512_mul_ps(yv, vv), _MM_FROUND_TO_NEAREST_INT),
            );
        }
        i += 16;
    }
    // SAFETY: the tail lies within the n halves.
    unsafe { scale_f16_avx2(n - m, y.add(m), v) }
}

/// f16 dot product with ggml's AVX-512 numerics (see `compat::dot_f16`): four 16-lane FMA
/// accumulators over 64-element steps, reduced `(x0+x2)+(x1+x3)` then halving, tail in f64.
/// The AVX2 form keeps each 16-lane accumulator as two 8-lane halves, so results are identical.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_avx2(n: usize, x: *const u8, y: *const u8) -> f32 {
    let np = n / 64 * 64;
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut i = 0;
    while i < np {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8k + 8 <= np <= n (module contract).
            unsafe { *a = _mm256_fmadd_ps(load_f16x8(x, i + 8 * k), load_f16x8(y, i + 8 * k), *a) };
        }
        i += 64;
    }
    // Accumulator j of ggml is (acc[2j], acc[2j+1]).
    let lo = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
    let hi = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
    let mut sum = if np > 0 {
        f64::from(hsum_f32x8(_mm256_add_ps(lo, hi)))
    } else {
        0.0
    };
    for k in np..n {
        // SAFETY: k < n.
        sum += f64::from(unsafe { f16_at(x, k) * f16_at(y, k) });
    }
    sum as f32
}

/// The AVX-512 form of [`f16_avx2`] (ggml's own layout).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn f16_avx512(n: usize, x: *const u8, y: *const u8) -> f32 {
    let np = n / 64 * 64;
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i < np {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16k + 16 <= np <= n (module contract).
            unsafe {
                *a = _mm512_fmadd_ps(load_f16x16(x, i + 16 * k), load_f16x16(y, i + 16 * k), *a)
            };
        }
        i += 64;
    }
    let x0 = _mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3]));
    let halves = _mm256_add_ps(
        _mm512_castps512_ps256(x0),
        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x0), 1)),
    );
    let mut sum = if np > 0 {
        f64::from(hsum_f32x8(halves))
    } else {
        0.0
    };
    for k in np..n {
        // SAFETY: k < n.
        sum += f64::from(unsafe { f16_at(x, k) * f16_at(y, k) });
    }
    sum as f32
}

/// Sixteen keys' 16-lane sums reduced together, with shuffles pairing exactly the lanes
/// `_mm512_reduce_add_ps` pairs (8+8, 4+4, (0+2) and (1+3), then their sum), so one add serves
/// sixteen keys; lane k of the result is key k's sum.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
fn reduce_16_keys(x: [__m512; 16]) -> __m512 {
    // Lanes i + i+8 of each key: keys 2t, 2t+1 → [8 sums of 2t | 8 sums of 2t+1].
    let h8: [__m512; 8] = std::array::from_fn(|t| {
        let (a, b) = (x[2 * t], x[2 * t + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
        )
    });
    // Lanes i + i+4: [4 of key 4t | 4t+1 | 4t+2 | 4t+3].
    let h4: [__m512; 4] = std::array::from_fn(|t| {
        let (a, b) = (h8[2 * t], h8[2 * t + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        )
    });
    // (0+2), (1+3) within each 128-bit lane: [u0 u1 of h4[2t] | v0 v1 of h4[2t+1]].
    let h2: [__m512; 2] = std::array::from_fn(|t| {
        let (a, b) = (h4[2 * t], h4[2 * t + 1]);
        _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(a, b),
            _mm512_shuffle_ps::<0b11_10_11_10>(a, b),
        )
    });
    // (0+2) + (1+3).
    let r = _mm512_add_ps(
        _mm512_shuffle_ps::<0b10_00_10_00>(h2[0], h2[1]),
        _mm512_shuffle_ps::<0b11_01_11_01>(h2[0], h2[1]),
    );
    // Lane 4L + e holds key KEY_OF_LANE[4L + e]; put the keys in order.
    // SAFETY: KEY_LANES is 16 i32.
    let idx = unsafe { _mm512_loadu_si512(KEY_LANES.as_ptr() as *const __m512i) };
    _mm512_permutexvar_ps(idx, r)
}

/// `out[g][j] = f16_avx512(64·C, q[g], keys + j·row)` for `G` queries (the query heads of one
/// grouped-query KV head) against the same `n` keys, bit-identical to calling [`f16_avx512`]
/// per query and key: each sixteen keys are widened to f32 once for all queries; per query
/// and key the four accumulators and their combination are [`f16_avx512`]'s, and sixteen
/// keys' sums are reduced together ([`reduce_16_keys`]).
///
/// # Safety
/// Each `q[g]` must hold `64·C` halves, `keys` `n` rows of `64·C` halves, each `out[g]` room
/// for `n` floats.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn attn_scores_f16_group_avx512<const C: usize, const G: usize>(
    q: [*const u8; G],
    keys: *const u8,
    n: usize,
    out: [*mut f32; G],
) {
    let d = 64 * C;
    let mut wide = [[[_mm512_setzero_ps(); 4]; C]; 16];
    let mut j = 0;
    while j + 16 <= n {
        for (i, wi) in wide.iter_mut().enumerate() {
            let kp = keys.wrapping_add(2 * d * (j + i));
            for (c, wc) in wi.iter_mut().enumerate() {
                for (k, w) in wc.iter_mut().enumerate() {
                    // SAFETY: key j + i < n has d halves (contract).
                    *w = unsafe { load_f16x16(kp, 64 * c + 16 * k) };
                }
            }
        }
        for g in 0..G {
            let qv: [[__m512; 4]; C] = std::array::from_fn(|c| {
                std::array::from_fn(|k| {
                    // SAFETY: q[g] holds d = 64·C halves (contract).
                    unsafe { load_f16x16(q[g], 64 * c + 16 * k) }
                })
            });
            // The 16-lane sum of key j + i (the value `f16_avx512` reduces).
            let x: [__m512; 16] = std::array::from_fn(|i| {
                let mut acc = [_mm512_setzero_ps(); 4];
                for (wc, qc) in wide[i].iter().zip(&qv) {
                    for (k, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(wc[k], qc[k], *a);
                    }
                }
                _mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3]))
            });
            // SAFETY: keys j..j + 16 < n have room in out[g] (contract).
            unsafe { _mm512_storeu_ps(out[g].add(j), reduce_16_keys(x)) };
        }
        j += 16;
    }
    while j < n {
        for g in 0..G {
            // SAFETY: key j < n (contract).
            unsafe { *out[g].add(j) = f16_avx512(d, q[g], keys.add(2 * d * j)) };
        }
        j += 1;
    }
}

/// For each key k of a group of 16, the lane of the reduced vector that holds its score
/// (see `attn_scores_f16_avx512`).
static KEY_LANES: [i32; 16] = key_lanes();

const fn key_lanes() -> [i32; 16] {
    // Trace where key k's sum lands. After h8, key 2t + p is in vector t, half p (lanes 8p..).
    // After h4 (pairs of h8 vectors, f32x4 lanes 0,2 of a then of b): key 4t + 2s + p sits in
    // vector t, 128-bit lane 2s + p. After h2 (pairs of h4, elements 0,1 of a, 0,1 of b):
    // vector u holds key 8u + 4v + l in 128-bit lane l, elements 2v, 2v+1. After the last step
    // (elements 0,2 of a, 0,2 of b): key 8u + 4v + l is in 128-bit lane l, element 2u + v.
    let mut lanes = [0i32; 16];
    let mut key = 0;
    while key < 16 {
        let (u, v, l) = (key / 8, (key / 4) % 2, key % 4);
        lanes[key] = (4 * l + 2 * u + v) as i32;
        key += 1;
    }
    lanes
}
