//! x86-64 kernels: AVX2 and AVX-512 (VNNI).

pub(crate) mod act;
pub(crate) mod common;
pub(crate) mod fdot;
pub(crate) mod fgemm;
pub(crate) mod fp4dot;
pub(crate) mod half_rows;
pub(crate) mod libm_expf;
pub(crate) mod q8attn;
pub(crate) mod qdot;
pub(crate) mod qpanel;
pub(crate) mod qstream;
pub(crate) mod qtile;
pub(crate) mod quant8;
pub(crate) mod rms;
