//! Reference dequantizers (scalar; used for embedding lookups, reference forwards and tests).

use half::{bf16, f16};

use super::blocks::*;
use super::fp4;
use super::QuantType;
use crate::{Error, Result};

/// Dequantize one row stored as `t` in `data` into `out` (`out.len()` elements).
pub fn dequantize_row(t: QuantType, data: &[u8], out: &mut [f32]) -> Result<()> {
    let need = t.row_bytes(out.len())?;
    if data.len() != need {
        return Err(Error::Shape(format!(
            "{} row of {} elements needs {need} bytes, got {}",
            t.name(),
            out.len(),
            data.len()
        )));
    }
    match t {
        QuantType::F32 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        QuantType::F16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        QuantType::BF16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        QuantType::Q4_0 => {
            for (b, o) in cast::<BlockQ4_0>(data).iter().zip(out.chunks_exact_mut(QK)) {
                let d = f16_le(b.d);
                for j in 0..16 {
                    o[j] = d * (i32::from(b.qs[j] & 15) - 8) as f32;
                    o[j + 16] = d * (i32::from(b.qs[j] >> 4) - 8) as f32;
                }
            }
        }
        QuantType::Q4_1 => {
            for (b, o) in cast::<BlockQ4_1>(data).iter().zip(out.chunks_exact_mut(QK)) {
                let (d, m) = (f16_le(b.d), f16_le(b.m));
                for j in 0..16 {
                    o[j] = d * f32::from(b.qs[j] & 15) + m;
                    o[j + 16] = d * f32::from(b.qs[j] >> 4) + m;
                }
            }
        }
        QuantType::Q5_0 => {
            for (b, o) in cast::<BlockQ5_0>(data).iter().zip(out.chunks_exact_mut(QK)) {
                let d = f16_le(b.d);
                let qh = u32::from_le_bytes(b.qh);
                for j in 0..16 {
                    let lo = u32::from(b.qs[j] & 15) | (((qh >> j) & 1) << 4);
                    let hi = u32::from(b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
                    o[j] = d * (lo as i32 - 16) as f32;
                    o[j + 16] = d * (hi as i32 - 16) as f32;
                }
            }
        }
        QuantType::Q5_1 => {
            for (b, o) in cast::<BlockQ5_1>(data).iter().zip(out.chunks_exact_mut(QK)) {
                let (d, m) = (f16_le(b.d), f16_le(b.m));
                let qh = u32::from_le_bytes(b.qh);
                for j in 0..16 {
                    let lo = u32::from(b.qs[j] & 15) | (((qh >> j) & 1) << 4);
                    let hi = u32::from(b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
                    o[j] = d * lo as f32 + m;
                    o[j + 16] = d * hi as f32 + m;
                }
            }
        }
        QuantType::Q8_0 => {
            for (b, o) in cast::<BlockQ8_0>(data).iter().zip(out.chunks_exact_mut(QK)) {
                let d = f16_le(b.d);
                for (v, &q) in o.iter_mut().zip(&b.qs) {
                    *v = d * f32::from(q);
                }
            }
        }
        QuantType::Q8_1 => {
            for (b, o) in cast::<BlockQ8_1>(data).iter().zip(out.chunks_exact_mut(QK)) {
                let d = f16_le(b.d);
                for (v, &q) in o.iter_mut().zip(&b.qs) {
                    *v = d * f32::from(q);
                }
            }
        }
        QuantType::Q4_K => {
            for (b, o) in cast::<BlockQ4K>(data)
                .iter()
                .zip(out.chunks_exact_mut(QK_K))
            {
                let (d, dmin) = (f16_le(b.d), f16_le(b.dmin));
                for c in 0..4 {
                    let (s1, m1) = scale_min_k4(2 * c, &b.scales);
                    let (s2, m2) = scale_min_k4(2 * c + 1, &b.scales);
                    let (d1, m1) = (d * f32::from(s1), dmin * f32::from(m1));
                    let (d2, m2) = (d * f32::from(s2), dmin * f32::from(m2));
                    let q = &b.qs[32 * c..32 * c + 32];
                    for l in 0..32 {
                        o[64 * c + l] = d1 * f32::from(q[l] & 15) - m1;
                        o[64 * c + 32 + l] = d2 * f32::from(q[l] >> 4) - m2;
                    }
                }
            }
        }
        QuantType::Q5_K => {
            for (b, o) in cast::<BlockQ5K>(data)
                .iter()
                .zip(out.chunks_exact_mut(QK_K))
            {
                let (d, dmin) = (f16_le(b.d), f16_le(b.dmin));
                for c in 0..4 {
                    let (s1, m1) = scale_min_k4(2 * c, &b.scales);
                    let (s2, m2) = scale_min_k4(2 * c + 1, &b.scales);
                    let (d1, m1) = (d * f32::from(s1), dmin * f32::from(m1));
                    let (d2, m2) = (d * f32::from(s2), dmin * f32::from(m2));
                    let q = &b.qs[32 * c..32 * c + 32];
                    for l in 0..32 {
                        let h1 = (b.qh[l] >> (2 * c)) & 1;
                        let h2 = (b.qh[l] >> (2 * c + 1)) & 1;
                        o[64 * c + l] = d1 * f32::from((q[l] & 15) | (h1 << 4)) - m1;
                        o[64 * c + 32 + l] = d2 * f32::from((q[l] >> 4) | (h2 << 4)) - m2;
                    }
                }
            }
        }
        QuantType::Q6_K => {
            for (b, o) in cast::<BlockQ6K>(data)
                .iter()
                .zip(out.chunks_exact_mut(QK_K))
            {
                let d = f16_le(b.d);
                for half in 0..2 {
                    let (ql, qh) = (&b.ql[64 * half..], &b.qh[32 * half..]);
                    let sc = &b.scales[8 * half..];
                    let o = &mut o[128 * half..];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        o[l] = d * f32::from(sc[is]) * q1 as f32;
                        o[l + 32] = d * f32::from(sc[is + 2]) * q2 as f32;
                        o[l + 64] = d * f32::from(sc[is + 4]) * q3 as f32;
                        o[l + 96] = d * f32::from(sc[is + 6]) * q4 as f32;
                    }
                }
            }
        }
        QuantType::Q8_K => {
            for (b, o) in cast::<BlockQ8K>(data)
                .iter()
                .zip(out.chunks_exact_mut(QK_K))
            {
                let d = b.d();
                for (v, &q) in o.iter_mut().zip(&b.qs) {
                    *v = d * f32::from(q);
                }
            }
        }
        QuantType::MXFP4 => fp4::dequantize_mxfp4(cast(data), out),
        QuantType::NVFP4 => fp4::dequantize_nvfp4(cast(data), out),
    }
    Ok(())
}

fn cast<T: bytemuck::Pod>(data: &[u8]) -> &[T] {
    // All block types have alignment 1 and the length was checked against the row size.
    bytemuck::cast_slice(data)
}
