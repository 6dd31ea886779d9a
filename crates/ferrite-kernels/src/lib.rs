//! CPU kernels: quantized block formats, dot products, matrix products, norms and attention
//! helpers, each SIMD path beside its scalar reference.
//!
//! This is the only ferrite crate with `unsafe` code (SIMD intrinsics and the thread pool's
//! lifetime erasure); every `unsafe` block carries a `SAFETY:` comment. It depends on no other
//! ferrite crate.
//!
//! Kernels are picked at run time: [`Kernels::new`] builds the function table for an [`Isa`]
//! (checked against the CPU), [`Kernels::detect`] picks the best one. Tests build one table per
//! available ISA and compare each against [`Isa::Scalar`].
//!
//! ```
//! use ferrite_kernels::{quant::QuantType, Isa, Kernels};
//! let k = Kernels::new(Isa::Scalar).unwrap();
//! let w = [0.5f32; 64];
//! let mut wq = vec![0u8; QuantType::Q8_0.row_bytes(64).unwrap()];
//! ferrite_kernels::quant::quantize_row(QuantType::Q8_0, &w, &mut wq).unwrap();
//! let x = [2.0f32; 64];
//! let mut xq = vec![0u8; QuantType::Q8_0.row_bytes(64).unwrap()];
//! ferrite_kernels::quant::quantize_activations(QuantType::Q8_0, &x, &mut xq).unwrap();
//! let dot = k.dot(QuantType::Q8_0, 64, &wq, &xq).unwrap();
//! assert!((dot - 64.0).abs() < 0.1);
//! ```
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod arch;
pub mod attention;
pub mod attention_tiled;
pub mod compat;
pub mod dot;
mod error;
pub mod half_rows;
mod isa;
mod k_panel;
pub mod kv_format;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod probe;
pub mod quant;
pub mod stream_panels;
#[cfg(test)]
mod test_util;
mod tiled;

pub use dot::Kernels;
pub use error::{Error, Result};
pub use isa::Isa;
pub use kv_format::KvFormat;
pub use matmul::{matmul, matmul_grouped, matmul_many, QMatrix};
pub use pool::ThreadPool;
