//! K-quant weight panels for prompt batches (see `arch::x86_64::qpanel::panel_q4k` and
//! `panel_q6k`): 16 weight rows repacked so that one 512-bit vector holds four quants of each
//! row, and the per-row scales, mins and super-block factors laid out as vectors. The
//! arithmetic is llama.cpp's for the rows `matmul` gives a four-row kernel: its repacked Q4_K
//! GEMM (whole groups of four activation rows on matrices whose row count is a multiple of 8)
//! and its tiled Q6_K matmul (batches of 8 or more rows); results are bit-identical to the row
//! kernels `q4_k_rp4` and `q6_k_tl`.

/// Repacks `n_rows` weight rows of `nsb` super-blocks (stride `row_bytes`) into a panel:
/// `pack_q4k_panel` or `pack_q6k_panel`.
pub(crate) type PackPanel = fn(usize, &[u8], usize, usize, &mut [u8]);

use crate::quant::blocks::{f16_le, scales_mins_k4, BlockQ4K, BlockQ6K, BlockQ8K};
use crate::tiled::PANEL_ROWS;

/// Bytes of one panel super-block: d, dmin (16 f32 each), 8 × 16 f32 scales, 4 × 16 u32 min
/// pairs, then 8 sub-blocks × 8 chunks × 64 quant bytes.
pub(crate) const Q4K_PANEL_BYTES: usize = Q4K_QUANTS + 8 * 8 * 64;
/// Offset of the quants in a panel super-block.
pub(crate) const Q4K_QUANTS: usize = 128 + 8 * 64 + 4 * 64;

/// Repack rows `w[j·row_bytes..]`, `j < n_rows` (≤ 16), of `nsb` Q4_K super-blocks each into
/// `out` (`nsb · Q4K_PANEL_BYTES`); missing rows are zero (their outputs are masked off).
pub(crate) fn pack_q4k_panel(
    nsb: usize,
    w: &[u8],
    row_bytes: usize,
    n_rows: usize,
    out: &mut [u8],
) {
    out.fill(0);
    let put = |out: &mut [u8], off: usize, v: [u8; 4]| out[off..off + 4].copy_from_slice(&v);
    for j in 0..n_rows.min(PANEL_ROWS) {
        let row: &[BlockQ4K] = bytemuck::cast_slice(&w[j * row_bytes..j * row_bytes + nsb * 144]);
        for (sb, x) in row.iter().enumerate() {
            let o = &mut out[sb * Q4K_PANEL_BYTES..(sb + 1) * Q4K_PANEL_BYTES];
            put(o, 4 * j, f16_le(x.d).to_le_bytes());
            put(o, 64 + 4 * j, f16_le(x.dmin).to_le_bytes());
            let (sc, mn) = scales_mins_k4(&x.scales);
            for (g, &s) in sc.iter().enumerate() {
                put(o, 128 + 64 * g + 4 * j, f32::from(s).to_le_bytes());
            }
            for c in 0..4 {
                let pair = u32::from(mn[2 * c]) | u32::from(mn[2 * c + 1]) << 16;
                put(o, 640 + 64 * c + 4 * j, pair.to_le_bytes());
            }
            // Byte b of pair c holds element b of sub-block 2c (low nibble) and of 2c + 1.
            for c in 0..4 {
                for k in 0..8 {
                    let b = 32 * c + 4 * k;
                    let v = u32::from_le_bytes([x.qs[b], x.qs[b + 1], x.qs[b + 2], x.qs[b + 3]]);
                    let lo = v & 0x0F0F_0F0F;
                    let hi = (v >> 4) & 0x0F0F_0F0F;
                    put(
                        o,
                        Q4K_QUANTS + (8 * (2 * c) + k) * 64 + 4 * j,
                        lo.to_le_bytes(),
                    );
                    put(
                        o,
                        Q4K_QUANTS + (8 * (2 * c + 1) + k) * 64 + 4 * j,
                        hi.to_le_bytes(),
                    );
                }
            }
        }
    }
}

/// Per super-block of a Q8_K activation row, the four u32 `(s₂c as i16) | (s₂c₊₁ as i16) << 16`
/// of its 32-element sub-block sums `s`, appended to `out`.
pub(crate) fn sub_block_sum_pairs(a: &[u8], out: &mut Vec<u32>) {
    let blocks: &[BlockQ8K] = bytemuck::cast_slice(a);
    for y in blocks {
        let s = |g: usize| (i32::from(y.bsum(2 * g)) + i32::from(y.bsum(2 * g + 1))) as i16;
        for c in 0..4 {
            out.push(u32::from(s(2 * c) as u16) | u32::from(s(2 * c + 1) as u16) << 16);
        }
    }
}

/// Bytes of one Q6_K panel super-block: d (16 f32), the 16 sub-block scales as i32 (16 × 16),
/// the scales as 8 i16 pairs (8 × 16 u32), then 64 chunks × 64 quant bytes.
pub(crate) const Q6K_PANEL_BYTES: usize = Q6K_QUANTS + 64 * 64;
/// Offset of the quants in a Q6_K panel super-block.
pub(crate) const Q6K_QUANTS: usize = 64 + 16 * 64 + 8 * 64;

/// Repack rows `w[j·row_bytes..]`, `j < n_rows` (≤ 16), of `nsb` Q6_K super-blocks each into
/// `out` (`nsb · Q6K_PANEL_BYTES`) for `qpanel::panel_q6k`: quants as unsigned 6-bit values
/// (`q + 32`) in element order, four per row per 64-byte chunk.
pub(crate) fn pack_q6k_panel(
    nsb: usize,
    w: &[u8],
    row_bytes: usize,
    n_rows: usize,
    out: &mut [u8],
) {
    out.fill(0);
    let put = |out: &mut [u8], off: usize, v: [u8; 4]| out[off..off + 4].copy_from_slice(&v);
    for j in 0..n_rows.min(PANEL_ROWS) {
        let row: &[BlockQ6K] = bytemuck::cast_slice(&w[j * row_bytes..j * row_bytes + nsb * 210]);
        for (sb, x) in row.iter().enumerate() {
            let o = &mut out[sb * Q6K_PANEL_BYTES..(sb + 1) * Q6K_PANEL_BYTES];
            put(o, 4 * j, f16_le(x.d).to_le_bytes());
            for (g, &s) in x.scales.iter().enumerate() {
                put(o, 64 + 64 * g + 4 * j, i32::from(s).to_le_bytes());
            }
            for m in 0..8 {
                let lo = i16::from(x.scales[2 * m]) as u16;
                let hi = i16::from(x.scales[2 * m + 1]) as u16;
                let pair = u32::from(lo) | u32::from(hi) << 16;
                put(o, 64 + 16 * 64 + 64 * m + 4 * j, pair.to_le_bytes());
            }
            let q = q6k_values(x);
            for (k, four) in q.chunks_exact(4).enumerate() {
                put(
                    o,
                    Q6K_QUANTS + 64 * k + 4 * j,
                    [four[0], four[1], four[2], four[3]],
                );
            }
        }
    }
}

/// The 256 unsigned 6-bit quants (`q + 32`) of a Q6_K block in element order (ggml's layout:
/// per half of 128, four runs of 32 from the low/high nibbles of `ql` and two bits of `qh`).
fn q6k_values(x: &BlockQ6K) -> [u8; 256] {
    let mut v = [0u8; 256];
    for half in 0..2 {
        let (ql, qh) = (&x.ql[64 * half..], &x.qh[32 * half..]);
        for run in 0..4 {
            for b in 0..32 {
                let byte = ql[b + 32 * (run % 2)];
                let low = if run < 2 { byte & 15 } else { byte >> 4 };
                v[128 * half + 32 * run + b] = low | (((qh[b] >> (2 * run)) & 3) << 4);
            }
        }
    }
    v
}
