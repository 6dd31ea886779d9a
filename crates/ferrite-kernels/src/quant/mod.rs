//! Weight and activation formats: block layouts, reference quantizers and dequantizers.
//!
//! Activations are quantized exactly as llama.cpp's x86 build does (`quantize_row_q8_0/q8_1`
//! with AVX: scale `amax/127`, multiply by `127/amax`, round half to even; `quantize_row_q8_K`:
//! scale `−127/max` of the signed extreme), so integer dot products agree with llama.cpp's.

pub mod blocks;
mod dequantize;
pub mod fp4;
mod quantize;

pub use blocks::*;
pub use dequantize::dequantize_row;
pub use quantize::{quantize_row, quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k};

use crate::{Error, Result};

/// Element types the kernels can compute with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum QuantType {
    /// IEEE single.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 4-bit, symmetric, 32 per block.
    Q4_0,
    /// 4-bit with min, 32 per block.
    Q4_1,
    /// 5-bit, symmetric.
    Q5_0,
    /// 5-bit with min.
    Q5_1,
    /// 8-bit, symmetric.
    Q8_0,
    /// 8-bit activations with block sum (pairs with Q4_1/Q5_1).
    Q8_1,
    /// 4-bit K-quant, 256 per super-block.
    Q4_K,
    /// 5-bit K-quant.
    Q5_K,
    /// 6-bit K-quant.
    Q6_K,
    /// 8-bit K activations (pairs with K-quants).
    Q8_K,
    /// OCP MXFP4: 32 E2M1 values with one E8M0 scale (GGUF type 39).
    MXFP4,
    /// NVFP4 as ggml stores it: 64 E2M1 values, one UE4M3 scale per 16 (GGUF type 40).
    NVFP4,
}

impl QuantType {
    /// Every type, for tests that sweep formats.
    pub const ALL: [QuantType; 15] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::BF16,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q8_1,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
        QuantType::Q8_K,
        QuantType::MXFP4,
        QuantType::NVFP4,
    ];

    /// Types that weights are stored in (everything but the activation-only Q8_1 and Q8_K).
    pub const WEIGHTS: [QuantType; 13] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::BF16,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
        QuantType::MXFP4,
        QuantType::NVFP4,
    ];

    /// Elements per block.
    pub const fn block_size(self) -> usize {
        match self {
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => 1,
            QuantType::Q4_K | QuantType::Q5_K | QuantType::Q6_K | QuantType::Q8_K => QK_K,
            QuantType::NVFP4 => fp4::QK_NVFP4,
            _ => QK,
        }
    }

    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        match self {
            QuantType::F32 => 4,
            QuantType::F16 | QuantType::BF16 => 2,
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q5_0 => 22,
            QuantType::Q5_1 => 24,
            QuantType::Q8_0 => 34,
            QuantType::Q8_1 => 36,
            QuantType::Q4_K => 144,
            QuantType::Q5_K => 176,
            QuantType::Q6_K => 210,
            QuantType::Q8_K => 292,
            QuantType::MXFP4 => 17,
            QuantType::NVFP4 => 36,
        }
    }

    /// Lower-case ggml name.
    pub const fn name(self) -> &'static str {
        match self {
            QuantType::F32 => "f32",
            QuantType::F16 => "f16",
            QuantType::BF16 => "bf16",
            QuantType::Q4_0 => "q4_0",
            QuantType::Q4_1 => "q4_1",
            QuantType::Q5_0 => "q5_0",
            QuantType::Q5_1 => "q5_1",
            QuantType::Q8_0 => "q8_0",
            QuantType::Q8_1 => "q8_1",
            QuantType::Q4_K => "q4_k",
            QuantType::Q5_K => "q5_k",
            QuantType::Q6_K => "q6_k",
            QuantType::Q8_K => "q8_k",
            QuantType::MXFP4 => "mxfp4",
            QuantType::NVFP4 => "nvfp4",
        }
    }

    /// The format called `name` (ggml's lower-case name, as [`name`](Self::name) gives it).
    pub fn from_name(name: &str) -> Option<QuantType> {
        QuantType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The format activations are converted to before a dot product with this weight type
    /// (ggml's `vec_dot_type`).
    pub const fn activation_type(self) -> QuantType {
        match self {
            QuantType::F32 => QuantType::F32,
            QuantType::F16 => QuantType::F16,
            QuantType::BF16 => QuantType::BF16,
            QuantType::Q4_0
            | QuantType::Q5_0
            | QuantType::Q8_0
            | QuantType::MXFP4
            | QuantType::NVFP4 => QuantType::Q8_0,
            QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q8_1 => QuantType::Q8_1,
            QuantType::Q4_K | QuantType::Q5_K | QuantType::Q6_K | QuantType::Q8_K => {
                QuantType::Q8_K
            }
        }
    }

    /// Bytes for one row of `n` elements; errors when `n` is not a whole number of blocks.
    /// Inlined: kernels check row lengths with it on every call.
    #[inline]
    pub fn row_bytes(self, n: usize) -> Result<usize> {
        if !n.is_multiple_of(self.block_size()) {
            return Err(self.partial_block(n));
        }
        Ok(n / self.block_size() * self.type_size())
    }

    #[cold]
    fn partial_block(self, n: usize) -> Error {
        Error::Shape(format!(
            "row of {n} elements is not a multiple of the {} block size {}",
            self.name(),
            self.block_size()
        ))
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name().to_ascii_uppercase())
    }
}

/// Quantize activations `x` (length a multiple of the block size) into the activation format
/// `t` (`F32`, `F16`, `BF16`, `Q8_0`, `Q8_1` or `Q8_K`), writing `t.row_bytes(x.len())` bytes.
pub fn quantize_activations(t: QuantType, x: &[f32], out: &mut [u8]) -> Result<()> {
    let need = t.row_bytes(x.len())?;
    if out.len() != need {
        return Err(Error::Shape(format!(
            "activation buffer is {} bytes, {} of {} elements need {need}",
            out.len(),
            t.name(),
            x.len()
        )));
    }
    match t {
        QuantType::Q8_0 => quantize_row_q8_0(x, bytemuck::cast_slice_mut(out)),
        QuantType::Q8_1 => quantize_row_q8_1(x, bytemuck::cast_slice_mut(out)),
        QuantType::Q8_K => quantize_row_q8_k(x, bytemuck::cast_slice_mut(out)),
        QuantType::F32 | QuantType::F16 | QuantType::BF16 => quantize_row(t, x, out)?,
        other => {
            return Err(Error::Unsupported(format!(
                "{other} is not an activation format"
            )))
        }
    }
    Ok(())
}
