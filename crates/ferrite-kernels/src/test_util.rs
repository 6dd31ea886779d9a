//! Helpers shared by this crate's unit tests: a deterministic random stream and matrix
//! quantization.

use crate::quant::{quantize_row, QuantType};

/// Xorshift64 states from `seed`.
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// A state as a float in [0, 1).
pub(crate) fn unit(bits: u64) -> f32 {
    (bits >> 11) as f32 / (1u64 << 53) as f32
}

/// Floats `unit·span + lo`, i.e. uniform in [lo, lo + span).
pub(crate) fn uniform(seed: u64, lo: f32, span: f32) -> impl FnMut() -> f32 {
    let mut next = xorshift(seed);
    move || unit(next()) * span + lo
}

/// `wf` (rows of `cols` floats) quantized row by row to `ty`.
pub(crate) fn quantize_matrix(ty: QuantType, wf: &[f32], cols: usize) -> Vec<u8> {
    let rb = ty.row_bytes(cols).expect("test shape");
    let mut wq = vec![0u8; rb * (wf.len() / cols)];
    for (src, dst) in wf.chunks(cols).zip(wq.chunks_mut(rb)) {
        quantize_row(ty, src, dst).expect("quantize");
    }
    wq
}

/// The bit patterns, for comparing results exactly.
pub(crate) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
