//! How a KV cache stores its rows: f16 (llama.cpp's default cache type) or Q8_0 (llama.cpp's
//! `--cache-type-k q8_0 --cache-type-v q8_0`: half the bytes, so half the memory and the
//! bandwidth that attention over a long context reads).

use crate::quant::{quantize_activations, QuantType};
use crate::{Error, Result};

/// Storage format of cached keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvFormat {
    /// Little-endian f16 per element.
    #[default]
    F16,
    /// Q8_0 blocks (34 bytes per 32 elements: f16 scale, 32 × i8), quantized as llama.cpp
    /// quantizes its cache rows; heads must be a multiple of 32 elements.
    Q8_0,
}

impl KvFormat {
    /// Parse `f16` or `q8_0` (llama.cpp's cache-type names).
    pub fn parse(s: &str) -> Result<KvFormat> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvFormat::F16),
            "q8_0" => Ok(KvFormat::Q8_0),
            other => Err(Error::Unsupported(format!(
                "KV cache type {other:?} (supported: f16, q8_0)"
            ))),
        }
    }

    /// llama.cpp's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            KvFormat::F16 => "f16",
            KvFormat::Q8_0 => "q8_0",
        }
    }

    /// Bytes of one stored row of `d` elements; errors when `d` does not fit the format.
    pub fn row_bytes(self, d: usize) -> Result<usize> {
        match self {
            KvFormat::F16 => Ok(2 * d),
            KvFormat::Q8_0 => QuantType::Q8_0.row_bytes(d),
        }
    }

    /// Store `src` as one row in `dst` (`row_bytes(src.len())` bytes).
    pub fn store_row(self, dst: &mut [u8], src: &[f32]) -> Result<()> {
        match self {
            KvFormat::F16 => {
                if dst.len() != 2 * src.len() {
                    return Err(Error::Shape(format!(
                        "f16 cache row of {} elements needs {} bytes, got {}",
                        src.len(),
                        2 * src.len(),
                        dst.len()
                    )));
                }
                crate::half_rows::f32_to_f16(src, dst);
                Ok(())
            }
            // ggml converts f32 rows into a Q8_0 cache with the CPU `from_float`, the same
            // quantizer as its Q8_0 activations.
            KvFormat::Q8_0 => quantize_activations(QuantType::Q8_0, src, dst),
        }
    }
}

impl std::fmt::Display for KvFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sizes_and_rows() {
        assert_eq!(KvFormat::parse("Q8_0").unwrap(), KvFormat::Q8_0);
        assert_eq!(KvFormat::parse("f16").unwrap().name(), "f16");
        assert!(KvFormat::parse("q4_0").is_err());
        assert_eq!(KvFormat::Q8_0.row_bytes(64).unwrap(), 68);
        assert_eq!(KvFormat::F16.row_bytes(64).unwrap(), 128);
        assert!(KvFormat::Q8_0.row_bytes(40).is_err());
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 8.0).collect();
        let mut row = vec![0u8; 68];
        KvFormat::Q8_0.store_row(&mut row, &x).unwrap();
        let mut back = vec![0f32; 64];
        crate::quant::dequantize_row(QuantType::Q8_0, &row, &mut back).unwrap();
        assert!(x
            .iter()
            .zip(&back)
            .all(|(a, b)| (a - b).abs() <= 4.0 / 127.0 / 2.0 + 1e-6));
        assert!(KvFormat::F16.store_row(&mut row, &x).is_err());
    }

    /// llama.cpp's flash attention over a Q8_0 cache for one query, written as its loop is
    /// (`ggml_compute_forward_flash_attn_ext_f16_one_chunk`, V not f16): the query quantized,
    /// per key the Q8_0 dot, scale, soft-cap, the online maximum, `ggml_vec_scale_f32` on a
    /// new maximum, `v_to_float` then `ggml_vec_mad_f32`, and `VKQ32 · (1/S)` at the end.
    fn ggml_reference(
        k: &crate::Kernels,
        q: &[f32],
        keys: &[u8],
        values: &[u8],
        n: usize,
        scale: f32,
        softcap: Option<f32>,
    ) -> Vec<f32> {
        let d = q.len();
        let row = d / 32 * 34;
        let mut qq = vec![0u8; row];
        quantize_activations(QuantType::Q8_0, q, &mut qq).unwrap();
        let (mut s_sum, mut m) = (0f32, f32::NEG_INFINITY);
        let mut vkq = vec![0f32; d];
        let mut v32 = vec![0f32; d];
        for j in 0..n {
            let mut s = k
                .dot(QuantType::Q8_0, d, &keys[j * row..(j + 1) * row], &qq)
                .unwrap();
            s *= scale;
            if let Some(c) = softcap {
                s = c * (s / c).tanh();
            }
            let (mut ms, mut vs) = (1f32, 1f32);
            if s > m {
                ms = (m - s).exp();
                m = s;
                vkq.iter_mut().for_each(|a| *a *= ms);
            } else {
                vs = (s - m).exp();
            }
            crate::quant::dequantize_row(
                QuantType::Q8_0,
                &values[j * row..(j + 1) * row],
                &mut v32,
            )
            .unwrap();
            for (a, &x) in vkq.iter_mut().zip(&v32) {
                *a = x.mul_add(vs, *a);
            }
            s_sum = if ms == 1.0 {
                s_sum + vs
            } else {
                crate::compat::fma(s_sum, ms, vs)
            };
        }
        let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
        vkq.iter().map(|a| a * inv).collect()
    }

    /// The accumulator over a Q8_0 cache equals the reference bit for bit, fed in uneven
    /// blocks, alone and in grouped-query groups, for whole heads and 32-column slices, with and
    /// without soft-capping, on every ISA.
    #[test]
    fn q8_0_attention_is_llama_cpps_loop_bit_for_bit() {
        use crate::ops::{AttentionAccumulator, AttnAccum};
        let mut next = crate::test_util::xorshift(0x9e3779b97f4a7c15);
        let mut rnd = |amp: f32| (crate::test_util::unit(next()) - 0.5) * amp;
        for isa in crate::Isa::available() {
            let k = crate::Kernels::new(isa).unwrap();
            for (d, n, group) in [(64, 1, 1), (64, 37, 3), (256, 50, 4), (96, 20, 2)] {
                let row = d / 32 * 34;
                let mut keys = vec![0u8; n * row];
                let mut values = vec![0u8; n * row];
                for j in 0..n {
                    let kr: Vec<f32> = (0..d).map(|_| rnd(4.0)).collect();
                    let vr: Vec<f32> = (0..d).map(|_| rnd(2.0)).collect();
                    KvFormat::Q8_0
                        .store_row(&mut keys[j * row..(j + 1) * row], &kr)
                        .unwrap();
                    KvFormat::Q8_0
                        .store_row(&mut values[j * row..(j + 1) * row], &vr)
                        .unwrap();
                }
                let qs: Vec<Vec<f32>> = (0..group)
                    .map(|_| (0..d).map(|_| rnd(3.0)).collect())
                    .collect();
                for softcap in [None, Some(5.0)] {
                    let want: Vec<Vec<f32>> = qs
                        .iter()
                        .map(|q| ggml_reference(&k, q, &keys, &values, n, 0.125, softcap))
                        .collect();
                    for cols in [0..d, 32..64] {
                        for mode in [AttnAccum::F16, AttnAccum::F32] {
                            let mut accs: Vec<AttentionAccumulator> = qs
                                .iter()
                                .map(|q| {
                                    let mut a = AttentionAccumulator::new(d, mode)
                                        .with_kv_format(KvFormat::Q8_0)
                                        .unwrap()
                                        .with_columns(cols.clone());
                                    a.begin(q, 0.125);
                                    a
                                })
                                .collect();
                            let cut = n / 3;
                            for (a, b) in [(0, cut), (cut, n)] {
                                AttentionAccumulator::add_group(
                                    &k,
                                    &mut accs,
                                    &keys[a * row..b * row],
                                    &values[a * row..b * row],
                                    b - a,
                                    softcap,
                                );
                            }
                            for (acc, w) in accs.iter().zip(&want) {
                                let mut out = vec![0f32; cols.len()];
                                acc.finish(&mut out);
                                let got: Vec<u32> = out.iter().map(|x| x.to_bits()).collect();
                                let exp: Vec<u32> =
                                    w[cols.clone()].iter().map(|x| x.to_bits()).collect();
                                assert_eq!(
                                    got, exp,
                                    "{isa} d {d} n {n} cols {cols:?} cap {softcap:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
