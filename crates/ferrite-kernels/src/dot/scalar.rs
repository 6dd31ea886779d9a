//! Scalar reference dot products: weight row (its own format) · activation row (the paired
//! activation format). Integer parts are exact; float accumulation is one running sum per row,
//! block by block, as ggml's generic kernels do.

use half::{bf16, f16};

use crate::quant::blocks::*;
use crate::quant::fp4::{e8m0_half, nvfp4_code, KVALUES_FP4, QK_NVFP4, UE4M3_HALF};

fn blocks<T: bytemuck::Pod>(b: &[u8]) -> &[T] {
    bytemuck::cast_slice(b)
}

pub(crate) fn f32_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let w: &[[u8; 4]] = blocks(w);
    let a: &[[u8; 4]] = blocks(a);
    let mut s = 0f32;
    for i in 0..n {
        s += f32::from_le_bytes(w[i]) * f32::from_le_bytes(a[i]);
    }
    s
}

/// ggml's f16 dot numerics (see `compat::dot_f16`).
pub(crate) fn f16_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    crate::compat::dot_f16(n, w, a)
}

pub(crate) fn bf16_bf16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let w: &[[u8; 2]] = blocks(w);
    let a: &[[u8; 2]] = blocks(a);
    let mut s = 0f32;
    for i in 0..n {
        let x = bf16::from_bits(u16::from_le_bytes(w[i])).to_f32();
        let y = bf16::from_bits(u16::from_le_bytes(a[i])).to_f32();
        s += x * y;
    }
    s
}

// The quantized kernels below reproduce the float arithmetic of ggml's AVX2 kernels (which
// llama.cpp's x86 builds run, AVX-512 ones included): integer partial sums in eight 32-bit lanes
// (lane k holds elements 4k..4k+3 of each 32-element group), one FMA per lane per block, and
// ggml's `hsum_float_8`. Every ISA in ferrite does the same, so all agree to the bit.

use crate::compat::fma;

/// `hsum_float_8`: (lo + hi) per 128-bit half, then `(0+2) + (1+3)`.
#[inline(always)]
pub(crate) fn hsum8(a: &[f32; 8]) -> f32 {
    let h: [f32; 4] = std::array::from_fn(|i| a[i + 4] + a[i]);
    (h[0] + h[2]) + (h[1] + h[3])
}

/// Lane sums of a 32-element group: lane k = Σ_{e=4k..4k+3} prod(e).
#[inline(always)]
fn lanes(prod: impl Fn(usize) -> i32) -> [i32; 8] {
    std::array::from_fn(|k| (4 * k..4 * k + 4).map(&prod).sum())
}

#[inline(always)]
fn acc_lanes(acc: &mut [f32; 8], d: f32, l: &[i32; 8]) {
    for k in 0..8 {
        acc[k] = fma(d, l[k] as f32, acc[k]);
    }
}

/// Element e of a Q4 nibble block (low nibbles are elements 0..16).
#[inline(always)]
fn nib(qs: &[u8; 16], e: usize) -> i32 {
    i32::from(if e < 16 { qs[e] & 15 } else { qs[e - 16] >> 4 })
}

pub(crate) fn q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ4_0>(w), blocks::<BlockQ8_0>(a));
    let mut acc = [0f32; 8];
    for (x, y) in w.iter().zip(a).take(n / QK) {
        let l = lanes(|e| (nib(&x.qs, e) - 8) * i32::from(y.qs[e]));
        acc_lanes(&mut acc, f16_le(x.d) * f16_le(y.d), &l);
    }
    hsum8(&acc)
}

pub(crate) fn q4_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ4_1>(w), blocks::<BlockQ8_1>(a));
    let mut acc = [0f32; 8];
    let mut mins = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK) {
        mins = fma(f16_le(x.m), f16_le(y.s), mins);
        let l = lanes(|e| nib(&x.qs, e) * i32::from(y.qs[e]));
        acc_lanes(&mut acc, f16_le(x.d) * f16_le(y.d), &l);
    }
    hsum8(&acc) + mins
}

fn q5_values(qs: &[u8; 16], qh: [u8; 4]) -> [i32; 32] {
    let qh = u32::from_le_bytes(qh);
    std::array::from_fn(|e| nib(qs, e) | (((qh >> e) & 1) << 4) as i32)
}

pub(crate) fn q5_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ5_0>(w), blocks::<BlockQ8_0>(a));
    let mut acc = [0f32; 8];
    for (x, y) in w.iter().zip(a).take(n / QK) {
        let v = q5_values(&x.qs, x.qh);
        let l = lanes(|e| (v[e] - 16) * i32::from(y.qs[e]));
        acc_lanes(&mut acc, f16_le(x.d) * f16_le(y.d), &l);
    }
    hsum8(&acc)
}

pub(crate) fn q5_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ5_1>(w), blocks::<BlockQ8_1>(a));
    let mut acc = [0f32; 8];
    let mut mins = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK) {
        mins = fma(f16_le(x.m), f16_le(y.s), mins);
        let v = q5_values(&x.qs, x.qh);
        let l = lanes(|e| v[e] * i32::from(y.qs[e]));
        acc_lanes(&mut acc, f16_le(x.d) * f16_le(y.d), &l);
    }
    hsum8(&acc) + mins
}

pub(crate) fn q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ8_0>(w), blocks::<BlockQ8_0>(a));
    let mut acc = [0f32; 8];
    for (x, y) in w.iter().zip(a).take(n / QK) {
        let l = lanes(|e| i32::from(x.qs[e]) * i32::from(y.qs[e]));
        acc_lanes(&mut acc, f16_le(x.d) * f16_le(y.d), &l);
    }
    hsum8(&acc)
}

/// MXFP4 × Q8_0: doubled E2M1 ints, scale `e8m0_half(e)·d_a` (ggml's convention).
pub(crate) fn mxfp4_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockMxfp4>(w), blocks::<BlockQ8_0>(a));
    let mut acc = [0f32; 8];
    for (x, y) in w.iter().zip(a).take(n / QK) {
        let l = lanes(|e| {
            let code = if e < 16 {
                x.qs[e] & 15
            } else {
                x.qs[e - 16] >> 4
            };
            i32::from(KVALUES_FP4[usize::from(code)]) * i32::from(y.qs[e])
        });
        acc_lanes(&mut acc, e8m0_half(x.e) * f16_le(y.d), &l);
    }
    hsum8(&acc)
}

/// NVFP4 × Q8_0: each 32-element half of a block meets one Q8_0 block; lanes 0–3 take the
/// first sub-block's scale, lanes 4–7 the second's.
pub(crate) fn nvfp4_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockNvfp4>(w), blocks::<BlockQ8_0>(a));
    let mut acc = [0f32; 8];
    for (i, x) in w.iter().enumerate().take(n / QK_NVFP4) {
        for h in 0..2 {
            let y = &a[2 * i + h];
            let l = lanes(|e| i32::from(KVALUES_FP4[nvfp4_code(x, h, e)]) * i32::from(y.qs[e]));
            let da = f16_le(y.d);
            let (d0, d1) = (
                UE4M3_HALF[usize::from(x.d[2 * h])] * da,
                UE4M3_HALF[usize::from(x.d[2 * h + 1])] * da,
            );
            for k in 0..8 {
                acc[k] = fma(if k < 4 { d0 } else { d1 }, l[k] as f32, acc[k]);
            }
        }
    }
    hsum8(&acc)
}

/// Per-lane mins products of a Q4_K/Q5_K block (ggml's `madd(mins, hadd(bsums))`): lane j
/// covers sub-blocks 2j and 2j+1.
#[inline(always)]
pub(crate) fn k4_min_lanes(mn: &[u8; 8], y: &BlockQ8K) -> [i32; 4] {
    let pair = |s: usize| i32::from(y.bsum(2 * s)) + i32::from(y.bsum(2 * s + 1));
    std::array::from_fn(|j| {
        i32::from(mn[2 * j]) * pair(2 * j) + i32::from(mn[2 * j + 1]) * pair(2 * j + 1)
    })
}

/// Integer lanes of one Q4_K/Q5_K super-block: group g (32 elements) has scale `sc[g]`.
#[inline(always)]
fn k4_lanes(sc: &[u8; 8], q: impl Fn(usize, usize) -> i32, y: &BlockQ8K) -> [i32; 8] {
    let mut l = [0i32; 8];
    for (g, &s) in sc.iter().enumerate() {
        let gl = lanes(|b| q(g, b) * i32::from(y.qs[32 * g + b]));
        for k in 0..8 {
            l[k] += i32::from(s) * gl[k];
        }
    }
    l
}

pub(crate) fn q4_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ4K>(w), blocks::<BlockQ8K>(a));
    let mut acc = [0f32; 8];
    let mut acc_m = [0f32; 4];
    for (x, y) in w.iter().zip(a).take(n / QK_K) {
        let d = y.d() * f16_le(x.d);
        let dmin = -y.d() * f16_le(x.dmin);
        let (sc, mn) = scales_mins_k4(&x.scales);
        let m = k4_min_lanes(&mn, y);
        for j in 0..4 {
            acc_m[j] = fma(dmin, m[j] as f32, acc_m[j]);
        }
        // Group 2c: low nibbles of chunk c; group 2c+1: high nibbles.
        let q = |g: usize, b: usize| {
            let byte = x.qs[32 * (g / 2) + b];
            i32::from(if g.is_multiple_of(2) {
                byte & 15
            } else {
                byte >> 4
            })
        };
        acc_lanes(&mut acc, d, &k4_lanes(&sc, q, y));
    }
    hsum8(&acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]))
}

/// Q4_K with the arithmetic of ggml's repacked `gemv/gemm_q4_K_8x8_q8_K` (which x86 llama.cpp
/// uses for every Q4_K matrix whose row count is a multiple of 8): one exact integer sum per
/// super-block, then `acc = fma(isum, d_w·d_a, acc)`, mins likewise, result `acc − acc_min`.
pub(crate) fn q4_k_q8_k_rp(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ4K>(w), blocks::<BlockQ8K>(a));
    let (mut acc, mut acc_m) = (0f32, 0f32);
    for (x, y) in w.iter().zip(a).take(n / QK_K) {
        let (sc, mn) = scales_mins_k4(&x.scales);
        let q = |g: usize, b: usize| {
            let byte = x.qs[32 * (g / 2) + b];
            i32::from(if g.is_multiple_of(2) {
                byte & 15
            } else {
                byte >> 4
            })
        };
        let isum: i32 = k4_lanes(&sc, q, y).iter().sum();
        let imin: i32 = k4_min_lanes(&mn, y).iter().sum();
        acc = fma(isum as f32, f16_le(x.d) * y.d(), acc);
        acc_m = fma(imin as f32, f16_le(x.dmin) * y.d(), acc_m);
    }
    acc - acc_m
}

/// Q4_K as ggml's repacked GEMM (`gemm_q4_K_8x8_q8_K`, used for activation rows in whole groups
/// of four) computes it: the FMAs happen once per pair of sub-blocks instead of once per
/// super-block.
pub(crate) fn q4_k_q8_k_rp4(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ4K>(w), blocks::<BlockQ8K>(a));
    let (mut acc, mut acc_m) = (0f32, 0f32);
    for (x, y) in w.iter().zip(a).take(n / QK_K) {
        let (sc, mn) = scales_mins_k4(&x.scales);
        let mins = k4_min_lanes(&mn, y);
        let (dw, dm) = (f16_le(x.d) * y.d(), f16_le(x.dmin) * y.d());
        for c in 0..4 {
            let dot = |g: usize, hi: bool| -> i32 {
                (0..32)
                    .map(|b| {
                        let byte = x.qs[32 * c + b];
                        i32::from(if hi { byte >> 4 } else { byte & 15 })
                            * i32::from(y.qs[32 * g + b])
                    })
                    .sum()
            };
            let isum = i32::from(sc[2 * c]) * dot(2 * c, false)
                + i32::from(sc[2 * c + 1]) * dot(2 * c + 1, true);
            acc = fma(isum as f32, dw, acc);
            acc_m = fma(mins[c] as f32, dm, acc_m);
        }
    }
    acc - acc_m
}

pub(crate) fn q5_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ5K>(w), blocks::<BlockQ8K>(a));
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK_K) {
        let d = y.d() * f16_le(x.d);
        let dmin = -y.d() * f16_le(x.dmin);
        let (sc, mn) = scales_mins_k4(&x.scales);
        let total: i32 = k4_min_lanes(&mn, y).iter().sum();
        summs = fma(dmin, total as f32, summs);
        let q = |g: usize, b: usize| {
            let byte = x.qs[32 * (g / 2) + b];
            let lo = i32::from(if g.is_multiple_of(2) {
                byte & 15
            } else {
                byte >> 4
            });
            lo | (i32::from((x.qh[b] >> g) & 1) << 4)
        };
        acc_lanes(&mut acc, d, &k4_lanes(&sc, q, y));
    }
    hsum8(&acc) + summs
}

/// Integer lanes of one Q6_K super-block (unsigned 6-bit values; the −32 offset removed per
/// lane through the 16-element activation sums, as ggml's vec_dot does).
fn q6k_lanes(x: &BlockQ6K, y: &BlockQ8K) -> [i32; 8] {
    let mut l = [0i32; 8];
    for half in 0..2 {
        let (ql, qh) = (&x.ql[64 * half..], &x.qh[32 * half..]);
        for j in 0..4 {
            // Sub-chunk j: low nibbles of ql[0..32] / ql[32..64], then their high nibbles;
            // bits 2j..2j+2 of qh are the top two bits.
            let q = |b: usize| {
                let byte = ql[b + 32 * (j % 2)];
                let low = if j < 2 { byte & 15 } else { byte >> 4 };
                i32::from(low | (((qh[b] >> (2 * j)) & 3) << 4))
            };
            let base = 128 * half + 32 * j;
            let gl = lanes(|b| q(b) * i32::from(y.qs[base + b]));
            for k in 0..8 {
                let s = x.scales[8 * half + 2 * j + k / 4];
                l[k] += i32::from(s) * gl[k];
            }
        }
    }
    for (k, lane) in l.iter_mut().enumerate() {
        let bias = i32::from(y.bsum(2 * k)) * i32::from(x.scales[2 * k])
            + i32::from(y.bsum(2 * k + 1)) * i32::from(x.scales[2 * k + 1]);
        *lane -= bias << 5;
    }
    l
}

pub(crate) fn q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ6K>(w), blocks::<BlockQ8K>(a));
    let mut acc = [0f32; 8];
    for (x, y) in w.iter().zip(a).take(n / QK_K) {
        acc_lanes(&mut acc, y.d() * f16_le(x.d), &q6k_lanes(x, y));
    }
    hsum8(&acc)
}

// ggml's tiled K-quant matmul (`ggml-cpu/tiled`, AVX-512 VNNI microkernel), which llama.cpp uses
// for Q4_K/Q5_K/Q6_K matrices that are not repacked when a batch has 8 or more rows: one exact
// integer sum per super-block, then `r = s1·d_w` (minus `dmin_w·s2` fused), `out += r·d_a`.

/// Q6_K, tiled arithmetic.
pub(crate) fn q6_k_q8_k_tl(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ6K>(w), blocks::<BlockQ8K>(a));
    let mut out = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK_K) {
        let isum: i32 = q6k_lanes(x, y).iter().sum();
        out += (isum as f32 * f16_le(x.d)) * y.d();
    }
    out
}

fn k4_tiled(s1: i32, s2: i32, x_d: [u8; 2], x_dmin: [u8; 2], y: &BlockQ8K) -> f32 {
    fma(-f16_le(x_dmin), s2 as f32, s1 as f32 * f16_le(x_d)) * y.d()
}

/// Q4_K, tiled arithmetic.
pub(crate) fn q4_k_q8_k_tl(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ4K>(w), blocks::<BlockQ8K>(a));
    let mut out = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK_K) {
        let (sc, mn) = scales_mins_k4(&x.scales);
        let q = |g: usize, b: usize| {
            let byte = x.qs[32 * (g / 2) + b];
            i32::from(if g.is_multiple_of(2) {
                byte & 15
            } else {
                byte >> 4
            })
        };
        let s1: i32 = k4_lanes(&sc, q, y).iter().sum();
        let s2: i32 = k4_min_lanes(&mn, y).iter().sum();
        out += k4_tiled(s1, s2, x.d, x.dmin, y);
    }
    out
}

/// Q5_K, tiled arithmetic.
pub(crate) fn q5_k_q8_k_tl(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ5K>(w), blocks::<BlockQ8K>(a));
    let mut out = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK_K) {
        let (sc, mn) = scales_mins_k4(&x.scales);
        let q = |g: usize, b: usize| {
            let byte = x.qs[32 * (g / 2) + b];
            let lo = i32::from(if g.is_multiple_of(2) {
                byte & 15
            } else {
                byte >> 4
            });
            lo | (i32::from((x.qh[b] >> g) & 1) << 4)
        };
        let s1: i32 = k4_lanes(&sc, q, y).iter().sum();
        let s2: i32 = k4_min_lanes(&mn, y).iter().sum();
        out += k4_tiled(s1, s2, x.d, x.dmin, y);
    }
    out
}

pub(crate) fn mad_f16(y: &mut [u16], x: &[u8], v: f32) {
    for (a, b) in y.iter_mut().zip(x.chunks_exact(2)) {
        let xv = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
        *a = f16::from_f32(f16::from_bits(*a).to_f32() + xv * v).to_bits();
    }
}

/// For each accumulator g: `ys[g][i] = fma(x_i, vs[g], ys[g][i])` with `x_i = q_i · d` the
/// dequantized elements of the Q8_0 row `x` (`ys[g].len() / 32` blocks): ggml's
/// `dequantize_row_q8_0` then `ggml_vec_mad_f32`, the value step of its flash attention over a
/// Q8_0 V cache, for several queries sharing the row.
pub(crate) fn mad_q8_0(ys: &mut [&mut [f32]], x: &[u8], vs: &[f32]) {
    for (y, &v) in ys.iter_mut().zip(vs) {
        for (yb, b) in y.chunks_exact_mut(32).zip(x.chunks_exact(34)) {
            let d = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            for (a, &q) in yb.iter_mut().zip(&b[2..34]) {
                *a = crate::compat::fma(f32::from(q as i8) * d, v, *a);
            }
        }
    }
}

pub(crate) fn scale_f16(y: &mut [u16], v: f32) {
    for a in y.iter_mut() {
        *a = f16::from_f32(f16::from_bits(*a).to_f32() * v).to_bits();
    }
}
