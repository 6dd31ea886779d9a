//! Q4_K weight panels for prompt batches (see `arch::x86_64::qpanel::panel_q4k`): 16 weight
//! rows repacked so that one 512-bit vector holds four quants of each row, and the per-row
//! scales, mins and super-block factors laid out as vectors. The arithmetic is that of
//! llama.cpp's repacked Q4_K GEMM, which `matmul` uses for whole groups of four activation
//! rows on matrices whose row count is a multiple of 8 (as llama.cpp does); results are
//! bit-identical to the row kernel `q4_k_rp4`.

use crate::quant::blocks::{f16_le, scales_mins_k4, BlockQ4K, BlockQ8K};
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
