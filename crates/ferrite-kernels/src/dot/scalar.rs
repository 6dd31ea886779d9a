//! Scalar reference dot products: weight row (its own format) · activation row (the paired
//! activation format). Integer parts are exact; float accumulation is one running sum per row,
//! block by block, as ggml's generic kernels do.

use half::{bf16, f16};

use crate::quant::blocks::*;

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

pub(crate) fn f16_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let w: &[[u8; 2]] = blocks(w);
    let a: &[[u8; 2]] = blocks(a);
    let mut s = 0f32;
    for i in 0..n {
        let x = f16::from_bits(u16::from_le_bytes(w[i])).to_f32();
        let y = f16::from_bits(u16::from_le_bytes(a[i])).to_f32();
        s += x * y;
    }
    s
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

pub(crate) fn q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ4_0>(w), blocks::<BlockQ8_0>(a));
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK) {
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += (i32::from(x.qs[j] & 15) - 8) * i32::from(y.qs[j]);
            sumi += (i32::from(x.qs[j] >> 4) - 8) * i32::from(y.qs[j + 16]);
        }
        s += sumi as f32 * f16_le(x.d) * f16_le(y.d);
    }
    s
}

pub(crate) fn q4_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ4_1>(w), blocks::<BlockQ8_1>(a));
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK) {
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += i32::from(x.qs[j] & 15) * i32::from(y.qs[j]);
            sumi += i32::from(x.qs[j] >> 4) * i32::from(y.qs[j + 16]);
        }
        s += f16_le(x.d) * f16_le(y.d) * sumi as f32 + f16_le(x.m) * f16_le(y.s);
    }
    s
}

fn q5_values(qs: &[u8; 16], qh: [u8; 4]) -> [i32; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut v = [0i32; 32];
    for j in 0..16 {
        v[j] = i32::from(qs[j] & 15) | (((qh >> j) & 1) << 4) as i32;
        v[j + 16] = i32::from(qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4) as i32;
    }
    v
}

pub(crate) fn q5_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ5_0>(w), blocks::<BlockQ8_0>(a));
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK) {
        let v = q5_values(&x.qs, x.qh);
        let sumi: i32 = (0..32).map(|j| (v[j] - 16) * i32::from(y.qs[j])).sum();
        s += f16_le(x.d) * f16_le(y.d) * sumi as f32;
    }
    s
}

pub(crate) fn q5_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ5_1>(w), blocks::<BlockQ8_1>(a));
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK) {
        let v = q5_values(&x.qs, x.qh);
        let sumi: i32 = (0..32).map(|j| v[j] * i32::from(y.qs[j])).sum();
        s += f16_le(x.d) * f16_le(y.d) * sumi as f32 + f16_le(x.m) * f16_le(y.s);
    }
    s
}

pub(crate) fn q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ8_0>(w), blocks::<BlockQ8_0>(a));
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK) {
        let sumi: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&p, &q)| i32::from(p) * i32::from(q))
                .sum();
        s += sumi as f32 * f16_le(x.d) * f16_le(y.d);
    }
    s
}

/// Σ over sub-blocks of min·(sum of the 32 activations of that sub-block), from Q8_K's bsums.
fn mins_dot(mins: &[u8; 8], y: &BlockQ8K) -> i32 {
    (0..8)
        .map(|j| i32::from(mins[j]) * (i32::from(y.bsum(2 * j)) + i32::from(y.bsum(2 * j + 1))))
        .sum()
}

pub(crate) fn q4_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ4K>(w), blocks::<BlockQ8K>(a));
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK_K) {
        let (sc, mn) = scales_mins_k4(&x.scales);
        let mut sumi = 0i32;
        for c in 0..4 {
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                lo += i32::from(x.qs[32 * c + l] & 15) * i32::from(y.qs[64 * c + l]);
                hi += i32::from(x.qs[32 * c + l] >> 4) * i32::from(y.qs[64 * c + 32 + l]);
            }
            sumi += lo * i32::from(sc[2 * c]) + hi * i32::from(sc[2 * c + 1]);
        }
        let d = f16_le(x.d) * y.d();
        let dmin = f16_le(x.dmin) * y.d();
        s += d * sumi as f32 - dmin * mins_dot(&mn, y) as f32;
    }
    s
}

pub(crate) fn q5_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ5K>(w), blocks::<BlockQ8K>(a));
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK_K) {
        let (sc, mn) = scales_mins_k4(&x.scales);
        let mut sumi = 0i32;
        for c in 0..4 {
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                let h1 = i32::from((x.qh[l] >> (2 * c)) & 1) << 4;
                let h2 = i32::from((x.qh[l] >> (2 * c + 1)) & 1) << 4;
                lo += (i32::from(x.qs[32 * c + l] & 15) | h1) * i32::from(y.qs[64 * c + l]);
                hi += (i32::from(x.qs[32 * c + l] >> 4) | h2) * i32::from(y.qs[64 * c + 32 + l]);
            }
            sumi += lo * i32::from(sc[2 * c]) + hi * i32::from(sc[2 * c + 1]);
        }
        let d = f16_le(x.d) * y.d();
        let dmin = f16_le(x.dmin) * y.d();
        s += d * sumi as f32 - dmin * mins_dot(&mn, y) as f32;
    }
    s
}

pub(crate) fn q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (blocks::<BlockQ6K>(w), blocks::<BlockQ8K>(a));
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a).take(n / QK_K) {
        let mut sumi = 0i32;
        for half in 0..2 {
            let (ql, qh) = (&x.ql[64 * half..], &x.qh[32 * half..]);
            let q8 = &y.qs[128 * half..];
            let sc = &x.scales[8 * half..];
            for l in 0..32 {
                let is = l / 16;
                let q1 = i32::from((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
                let q2 = i32::from((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                sumi += i32::from(sc[is]) * q1 * i32::from(q8[l]);
                sumi += i32::from(sc[is + 2]) * q2 * i32::from(q8[l + 32]);
                sumi += i32::from(sc[is + 4]) * q3 * i32::from(q8[l + 64]);
                sumi += i32::from(sc[is + 6]) * q4 * i32::from(q8[l + 96]);
            }
        }
        s += f16_le(x.d) * y.d() * sumi as f32;
    }
    s
}

pub(crate) fn mad_f16(y: &mut [u16], x: &[u8], v: f32) {
    for (a, b) in y.iter_mut().zip(x.chunks_exact(2)) {
        let xv = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
        *a = f16::from_f32(f16::from_bits(*a).to_f32() + xv * v).to_bits();
    }
}

pub(crate) fn scale_f16(y: &mut [u16], v: f32) {
    for a in y.iter_mut() {
        *a = f16::from_f32(f16::from_bits(*a).to_f32() * v).to_bits();
    }
}
