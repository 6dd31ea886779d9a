//! Reference quantizers: weights (for test models and `ferrite quantize`) and activations
//! (bit-compatible with llama.cpp's x86 activation quantization).

use half::{bf16, f16};

use super::blocks::*;
use super::fp4;
use super::QuantType;
use crate::{Error, Result};

/// Round half to even, as `_mm256_round_ps(_, _MM_ROUND_NEAREST)` and ggml's `nearest_int`.
/// Adding and subtracting 1.5·2^23 rounds to an integer in the current (nearest-even) mode,
/// exactly like `round_ties_even` for |x| < 2^22, without a libm call on baseline x86-64.
#[inline(always)]
fn rne(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    if x.abs() < 4_194_304.0 {
        ((x + MAGIC) - MAGIC) as i32
    } else {
        x.round_ties_even() as i32
    }
}

/// Q8_0 activations: `d = amax/127`, `q = rne(x·127/amax)` (AVX-512 where the CPU has it,
/// bit-identical to [`quantize_block_q8_0`]).
pub fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F/BW checked just above.
        return unsafe { crate::arch::x86_64::quant8::q8_0(x, out, quantize_block_q8_0) };
    }
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        quantize_block_q8_0(xb, b);
    }
}

/// One Q8_0 block, the plain reference.
pub(crate) fn quantize_block_q8_0(xb: &[f32], b: &mut BlockQ8_0) {
    b.d = f16_bytes(quantize_block_q8(xb, &mut b.qs).0);
}

/// The quants of one 32-element block as Q8_0 and Q8_1 share them: `d = amax/127`,
/// `q = rne(x·127/amax)`; returns `d` and `Σq`.
fn quantize_block_q8(xb: &[f32], qs: &mut [i8; QK]) -> (f32, i32) {
    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(xb) {
        let r = rne(v * id);
        // Wrapping: a denormal maximum makes `id` infinite and `r` saturate (garbage in,
        // garbage out, but never an overflow panic in a debug build).
        sum = sum.wrapping_add(r);
        *q = r as i8;
    }
    (d, sum)
}

/// Q8_1 activations: Q8_0 plus `s = d·Σq` (f32 product, stored as f16).
pub fn quantize_row_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F/BW checked just above.
        return unsafe { crate::arch::x86_64::quant8::q8_1(x, out, quantize_block_q8_1) };
    }
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        quantize_block_q8_1(xb, b);
    }
}

/// One Q8_1 block, the plain reference.
pub(crate) fn quantize_block_q8_1(xb: &[f32], b: &mut BlockQ8_1) {
    let (d, sum) = quantize_block_q8(xb, &mut b.qs);
    b.d = f16_bytes(d);
    b.s = f16_bytes(d * sum as f32);
}

/// Whether the vector activation quantizers can run (checked once, then a cached load).
#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

/// Q8_K activations: scale from the signed extreme (`−127/max`), plus sums of 16 quants
/// (AVX-512 where the CPU has it, bit-identical to [`quantize_block_q8_k`]).
pub fn quantize_row_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F/BW checked just above.
        return unsafe { crate::arch::x86_64::quant8::q8_k(x, out, quantize_block_q8_k) };
    }
    for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        quantize_block_q8_k(xb, b);
    }
}

/// One Q8_K block, the plain reference.
pub(crate) fn quantize_block_q8_k(xb: &[f32], b: &mut BlockQ8K) {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in xb {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        *b = bytemuck::Zeroable::zeroed();
        return;
    }
    let iscale = -127.0 / max;
    for (q, &v) in b.qs.iter_mut().zip(xb) {
        *q = rne(iscale * v).min(127) as i8;
    }
    for j in 0..16 {
        let s: i32 = b.qs[16 * j..16 * j + 16]
            .iter()
            .map(|&q| i32::from(q))
            .sum();
        b.bsums[j] = (s as i16).to_le_bytes();
    }
    b.d = (1.0 / iscale).to_le_bytes();
}

/// Quantize one row of weights `x` into `t`, writing `t.row_bytes(x.len())` bytes to `out`.
pub fn quantize_row(t: QuantType, x: &[f32], out: &mut [u8]) -> Result<()> {
    let need = t.row_bytes(x.len())?;
    if out.len() != need {
        return Err(Error::Shape(format!(
            "{} output is {} bytes, {} elements need {need}",
            t.name(),
            out.len(),
            x.len()
        )));
    }
    match t {
        QuantType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        QuantType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        QuantType::BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        QuantType::Q4_0 => q4_0(x, bytemuck::cast_slice_mut(out)),
        QuantType::Q4_1 => q4_1(x, bytemuck::cast_slice_mut(out)),
        QuantType::Q5_0 => q5_0(x, bytemuck::cast_slice_mut(out)),
        QuantType::Q5_1 => q5_1(x, bytemuck::cast_slice_mut(out)),
        QuantType::Q8_0 => q8_0_weights(x, bytemuck::cast_slice_mut(out)),
        QuantType::Q8_1 => quantize_row_q8_1(x, bytemuck::cast_slice_mut(out)),
        QuantType::Q4_K => q4_k(x, bytemuck::cast_slice_mut(out)),
        QuantType::Q5_K => q5_k(x, bytemuck::cast_slice_mut(out)),
        QuantType::Q6_K => q6_k(x, bytemuck::cast_slice_mut(out)),
        QuantType::Q8_K => quantize_row_q8_k(x, bytemuck::cast_slice_mut(out)),
        QuantType::MXFP4 => fp4::quantize_mxfp4(x, bytemuck::cast_slice_mut(out)),
        QuantType::NVFP4 => fp4::quantize_nvfp4(x, bytemuck::cast_slice_mut(out)),
    }
    Ok(())
}

/// The signed value with the largest magnitude (first one on ties).
fn signed_extreme(x: &[f32]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn q4_0(x: &[f32], out: &mut [BlockQ4_0]) {
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        // The extreme maps to −8 exactly; the other side gets the 7 positive levels.
        let d = signed_extreme(xb) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16_bytes(d);
        let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
        for j in 0..16 {
            b.qs[j] = q(xb[j]) | (q(xb[j + 16]) << 4);
        }
    }
}

fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

fn q4_1(x: &[f32], out: &mut [BlockQ4_1]) {
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16_bytes(d);
        b.m = f16_bytes(min);
        let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
        for j in 0..16 {
            b.qs[j] = q(xb[j]) | (q(xb[j + 16]) << 4);
        }
    }
}

fn q5_0(x: &[f32], out: &mut [BlockQ5_0]) {
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let d = signed_extreme(xb) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16_bytes(d);
        let q = |v: f32| ((v * id + 16.5) as i32).clamp(0, 31) as u32;
        let mut qh = 0u32;
        for j in 0..16 {
            let (lo, hi) = (q(xb[j]), q(xb[j + 16]));
            b.qs[j] = ((lo & 15) | ((hi & 15) << 4)) as u8;
            qh |= ((lo >> 4) << j) | ((hi >> 4) << (j + 16));
        }
        b.qh = qh.to_le_bytes();
    }
}

fn q5_1(x: &[f32], out: &mut [BlockQ5_1]) {
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16_bytes(d);
        b.m = f16_bytes(min);
        let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 31) as u32;
        let mut qh = 0u32;
        for j in 0..16 {
            let (lo, hi) = (q(xb[j]), q(xb[j + 16]));
            b.qs[j] = ((lo & 15) | ((hi & 15) << 4)) as u8;
            qh |= ((lo >> 4) << j) | ((hi >> 4) << (j + 16));
        }
        b.qh = qh.to_le_bytes();
    }
}

fn q8_0_weights(x: &[f32], out: &mut [BlockQ8_0]) {
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16_bytes(d);
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
        }
    }
}

/// Fit `x ≈ scale·q − offset` with `q ∈ 0..=nmax` for one sub-block: start from the min/max
/// grid, then try a few stretched grids and keep the weighted least-squares best. Returns
/// (scale, offset ≥ 0) and writes the levels.
fn fit_affine(x: &[f32], nmax: i32, levels: &mut [u8]) -> (f32, f32) {
    let (mut lo, hi) = min_max(x);
    lo = lo.min(0.0);
    if hi <= lo {
        levels.fill(0);
        return (0.0, -lo);
    }
    let w: Vec<f32> = {
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
        x.iter().map(|v| rms + v.abs()).collect()
    };
    let err = |scale: f32, min: f32, l: &dyn Fn(usize) -> i32| -> f32 {
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let d = scale * l(i) as f32 + min - v;
                w[i] * d * d
            })
            .sum()
    };
    let mut best_scale = (hi - lo) / nmax as f32;
    let mut best_min = lo;
    let grid = |iscale: f32, min: f32, i: usize| {
        ((x[i] - min) * iscale).round().clamp(0.0, nmax as f32) as i32
    };
    let base_is = 1.0 / best_scale;
    let mut best_err = err(best_scale, best_min, &|i| grid(base_is, lo, i));
    for step in 0..=20 {
        let iscale = (nmax as f32 - 1.0 + 0.1 * step as f32) / (hi - lo);
        let l: Vec<i32> = (0..x.len()).map(|i| grid(iscale, lo, i)).collect();
        // Weighted least squares for (scale, min) with the levels fixed.
        let (mut sw, mut sl, mut sl2, mut sx, mut sxl) = (0f32, 0f32, 0f32, 0f32, 0f32);
        for i in 0..x.len() {
            let (wi, li) = (w[i], l[i] as f32);
            sw += wi;
            sl += wi * li;
            sl2 += wi * li * li;
            sx += wi * x[i];
            sxl += wi * x[i] * li;
        }
        let det = sw * sl2 - sl * sl;
        if det <= 0.0 {
            continue;
        }
        let mut scale = (sw * sxl - sx * sl) / det;
        let mut min = (sl2 * sx - sl * sxl) / det;
        if min > 0.0 {
            min = 0.0;
            scale = sxl / sl2;
        }
        let e = err(scale, min, &|i| l[i]);
        if e < best_err {
            best_err = e;
            best_scale = scale;
            best_min = min;
        }
    }
    let is = if best_scale > 0.0 {
        1.0 / best_scale
    } else {
        0.0
    };
    for (i, l) in levels.iter_mut().enumerate() {
        *l = grid(is, best_min, i) as u8;
    }
    (best_scale, -best_min)
}

/// Pack 6-bit scales and mins as `get_scale_min_k4` reads them.
fn pack_scales_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// Shared Q4_K/Q5_K quantization: returns (d, dmin, packed scales, levels 0..=nmax).
fn k4_common(xb: &[f32], nmax: i32) -> (f32, f32, [u8; 12], [u8; QK_K]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for j in 0..8 {
        let (s, m) = fit_affine(
            &xb[32 * j..32 * j + 32],
            nmax,
            &mut levels[32 * j..32 * j + 32],
        );
        scales[j] = s;
        mins[j] = m;
    }
    let max_scale = scales.iter().fold(0f32, |a, &b| a.max(b));
    let max_min = mins.iter().fold(0f32, |a, &b| a.max(b));
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = rne(inv_scale * scales[j]).clamp(0, 63) as u8;
        lm[j] = rne(inv_min * mins[j]).clamp(0, 63) as u8;
    }
    let packed = pack_scales_k4(&ls, &lm);
    let d = f16::from_f32(max_scale / 63.0).to_f32();
    let dmin = f16::from_f32(max_min / 63.0).to_f32();
    // Requantize against the scales actually stored.
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dj = d * f32::from(sc);
        if dj == 0.0 {
            levels[32 * j..32 * j + 32].fill(0);
            continue;
        }
        let mj = dmin * f32::from(m);
        for i in 0..32 {
            levels[32 * j + i] = rne((xb[32 * j + i] + mj) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, levels)
}

fn q4_k(x: &[f32], out: &mut [BlockQ4K]) {
    for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let (d, dmin, scales, l) = k4_common(xb, 15);
        b.d = f16_bytes(d);
        b.dmin = f16_bytes(dmin);
        b.scales = scales;
        for c in 0..4 {
            for i in 0..32 {
                b.qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
            }
        }
    }
}

fn q5_k(x: &[f32], out: &mut [BlockQ5K]) {
    for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let (d, dmin, scales, l) = k4_common(xb, 31);
        b.d = f16_bytes(d);
        b.dmin = f16_bytes(dmin);
        b.scales = scales;
        b.qh = [0; 32];
        for c in 0..4 {
            for i in 0..32 {
                let (lo, hi) = (l[64 * c + i], l[64 * c + 32 + i]);
                b.qs[32 * c + i] = (lo & 15) | ((hi & 15) << 4);
                b.qh[i] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
            }
        }
    }
}

fn q6_k(x: &[f32], out: &mut [BlockQ6K]) {
    for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        // Per 16: a signed scale mapping the sub-block's extreme to −32.
        let mut sub_scales = [0f32; 16];
        for (j, s) in sub_scales.iter_mut().enumerate() {
            *s = signed_extreme(&xb[16 * j..16 * j + 16]) / -32.0;
        }
        let max_scale = signed_extreme(&sub_scales);
        *b = bytemuck::Zeroable::zeroed();
        if max_scale == 0.0 {
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d = f16::from_f32(1.0 / iscale).to_f32();
        b.d = f16_bytes(1.0 / iscale);
        let mut l = [32u8; QK_K];
        for j in 0..16 {
            let sc = rne(iscale * sub_scales[j]).clamp(-128, 127);
            b.scales[j] = sc as i8;
            let dj = d * sc as f32;
            if dj == 0.0 {
                continue;
            }
            for i in 0..16 {
                l[16 * j + i] = (rne(xb[16 * j + i] / dj).clamp(-32, 31) + 32) as u8;
            }
        }
        for half in 0..2 {
            let (lq, ql, qh) = (&l[128 * half..], 64 * half, 32 * half);
            for i in 0..32 {
                b.ql[ql + i] = (lq[i] & 15) | ((lq[i + 64] & 15) << 4);
                b.ql[ql + 32 + i] = (lq[i + 32] & 15) | ((lq[i + 96] & 15) << 4);
                b.qh[qh + i] = (lq[i] >> 4)
                    | ((lq[i + 32] >> 4) << 2)
                    | ((lq[i + 64] >> 4) << 4)
                    | ((lq[i + 96] >> 4) << 6);
            }
        }
    }
}

#[cfg(test)]
mod rne_tests {
    use super::rne;

    #[test]
    fn magic_rounding_equals_round_ties_even() {
        let mut xs = vec![
            0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.49999, -127.5, 0.0, -0.0,
        ];
        xs.extend((0..200_000).map(|i| (i as f32 - 100_000.0) * 0.00173));
        xs.extend([4_194_303.5, 4_194_304.5, 1e9, -1e9, f32::NAN]);
        for x in xs {
            assert_eq!(rne(x), x.round_ties_even() as i32, "{x}");
        }
    }
}

#[cfg(test)]
mod activation_tests {
    use super::*;

    /// The row quantizers (vector where the CPU has it) against the per-block references, on
    /// blocks with halfway ties (amax = 127, so x·id = x), zeros, tiny and denormal scales,
    /// infinities and NaNs.
    #[test]
    fn row_quantizers_equal_the_block_references() {
        let mut rnd = crate::test_util::uniform(0x2545_f491_4f6c_dd1du64, -3.0, 6.0);
        let mut blocks: Vec<[f32; QK]> = Vec::new();
        for _ in 0..200 {
            blocks.push(std::array::from_fn(|_| rnd()));
        }
        blocks.push(std::array::from_fn(|i| {
            if i == 0 {
                127.0
            } else {
                i as f32 - 15.5
            }
        }));
        blocks.push(std::array::from_fn(|i| {
            (i as f32 - 16.0) * 0.5 + 100.0 * f32::from(i == 3)
        }));
        blocks.push([0.0; QK]);
        blocks.push(std::array::from_fn(|i| if i % 2 == 0 { -0.0 } else { 0.0 }));
        blocks.push(std::array::from_fn(|i| (i as f32) * 1e-40));
        blocks.push(std::array::from_fn(|i| (i as f32) * 1e-30));
        blocks.push(std::array::from_fn(|i| {
            if i == 7 {
                f32::INFINITY
            } else {
                1.0
            }
        }));
        blocks.push(std::array::from_fn(
            |i| if i == 9 { f32::NAN } else { -2.0 },
        ));
        let x: Vec<f32> = blocks.concat();
        let nb = blocks.len();
        let mut got0 = vec![
            BlockQ8_0 {
                d: [0; 2],
                qs: [0; QK]
            };
            nb
        ];
        let mut got1 = vec![
            BlockQ8_1 {
                d: [0; 2],
                s: [0; 2],
                qs: [0; QK]
            };
            nb
        ];
        quantize_row_q8_0(&x, &mut got0);
        quantize_row_q8_1(&x, &mut got1);
        // Q8_K: the same values in 256-element blocks, plus ties of |x| with opposite signs.
        let mut xk: Vec<f32> = x[..x.len() / QK_K * QK_K].to_vec();
        xk.extend((0..QK_K).map(|i| match i {
            5 => -7.0,
            9 => 7.0,
            _ => (i % 13) as f32 * 0.25,
        }));
        xk.extend((0..QK_K).map(|i| if i == 200 { f32::NAN } else { 1.0 }));
        let nk = xk.len() / QK_K;
        let mut gotk = vec![<BlockQ8K as bytemuck::Zeroable>::zeroed(); nk];
        quantize_row_q8_k(&xk, &mut gotk);
        for (i, xb) in xk.chunks_exact(QK_K).enumerate() {
            let mut want = <BlockQ8K as bytemuck::Zeroable>::zeroed();
            quantize_block_q8_k(xb, &mut want);
            assert_eq!(gotk[i], want, "Q8_K block {i}");
        }
        for (i, xb) in blocks.iter().enumerate() {
            let mut want0 = got0[i];
            let mut want1 = got1[i];
            quantize_block_q8_0(xb, &mut want0);
            quantize_block_q8_1(xb, &mut want1);
            assert_eq!(got0[i], want0, "Q8_0 block {i}");
            assert_eq!(got1[i], want1, "Q8_1 block {i}");
        }
    }
}
