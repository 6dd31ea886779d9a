//! K-quant weight panels for prompt batches (see `arch::x86_64::qpanel::panel_q4k` and
//! `panel_q6k`): 16 weight rows repacked so that one 512-bit vector holds four quants of each
//! row, and the per-row scales, mins and super-block factors laid out as vectors. The
//! arithmetic is llama.cpp's for the rows `matmul` gives a four-row kernel: its repacked Q4_K
//! GEMM (whole groups of four activation rows on matrices whose row count is a multiple of 8)
//! and its tiled Q6_K matmul (batches of 8 or more rows); results are bit-identical to the row
//! kernels `q4_k_rp4` and `q6_k_tl`.
//!
//! Every field of a panel super-block is a vector of 16 lanes of 4 bytes, lane j for row j.

use crate::quant::blocks::{f16_le, scales_mins_k4, BlockQ4K, BlockQ6K, BlockQ8K};
use crate::tiled::PANEL_ROWS;

/// Repacks `n_rows` weight rows of `nsb` super-blocks (stride `row_bytes`) into a panel:
/// `pack_q4k_panel` or `pack_q6k_panel`.
pub(crate) type PackPanel = fn(usize, &[u8], usize, usize, &mut [u8]);

/// Bytes of one 16-lane field of a panel.
const FIELD: usize = 64;

/// Q4_K panel super-block: d, dmin (f32), 8 scales (f32), 4 min pairs (i16, i16), then 8
/// sub-blocks × 8 chunks of quants.
pub(crate) const Q4K_DMIN: usize = FIELD;
pub(crate) const Q4K_SCALES: usize = 2 * FIELD;
pub(crate) const Q4K_MINS: usize = Q4K_SCALES + 8 * FIELD;
pub(crate) const Q4K_QUANTS: usize = Q4K_MINS + 4 * FIELD;
pub(crate) const Q4K_PANEL_BYTES: usize = Q4K_QUANTS + 8 * 8 * FIELD;

/// Q6_K panel super-block: d (f32), 16 sub-block scales (i32), the scales as 8 pairs (i16,
/// i16), then 64 chunks of quants.
pub(crate) const Q6K_SCALES: usize = FIELD;
pub(crate) const Q6K_PAIRS: usize = Q6K_SCALES + 16 * FIELD;
pub(crate) const Q6K_QUANTS: usize = Q6K_PAIRS + 8 * FIELD;
pub(crate) const Q6K_PANEL_BYTES: usize = Q6K_QUANTS + 64 * FIELD;

/// Two i16 in one u32 lane, as `vpmaddwd` reads them (`lo` in the low half).
fn i16_pair(lo: i16, hi: i16) -> u32 {
    u32::from(lo as u16) | u32::from(hi as u16) << 16
}

/// Lane j of one panel super-block: `put(off, bytes)` writes the 4 bytes of row j in the
/// field at `off`.
struct Lane<'a> {
    sb: &'a mut [u8],
    j: usize,
}

impl Lane<'_> {
    fn put(&mut self, off: usize, v: [u8; 4]) {
        let at = off + 4 * self.j;
        self.sb[at..at + 4].copy_from_slice(&v);
    }
}

/// The skeleton both packers share: for each of the `n_rows` (≤ 16) rows of `nsb` blocks `B`
/// at stride `row_bytes`, `fill(lane j of the panel super-block, block)` writes every field's
/// lane j. Lanes of missing rows are zero (their outputs are masked off); a present row writes
/// all of its lanes, so only a partial panel needs clearing.
fn pack_rows<B: bytemuck::Pod>(
    nsb: usize,
    w: &[u8],
    row_bytes: usize,
    n_rows: usize,
    out: &mut [u8],
    sb_bytes: usize,
    fill: impl Fn(&mut Lane<'_>, &B),
) {
    if n_rows < PANEL_ROWS {
        out.fill(0);
    }
    let size = std::mem::size_of::<B>();
    for j in 0..n_rows.min(PANEL_ROWS) {
        let row: &[B] = bytemuck::cast_slice(&w[j * row_bytes..j * row_bytes + nsb * size]);
        for (sb, x) in row.iter().enumerate() {
            let sb = &mut out[sb * sb_bytes..(sb + 1) * sb_bytes];
            fill(&mut Lane { sb, j }, x);
        }
    }
}

/// Repack rows `w[j·row_bytes..]`, `j < n_rows` (≤ 16), of `nsb` Q4_K super-blocks each into
/// `out` (`nsb · Q4K_PANEL_BYTES`).
pub(crate) fn pack_q4k_panel(
    nsb: usize,
    w: &[u8],
    row_bytes: usize,
    n_rows: usize,
    out: &mut [u8],
) {
    pack_rows(
        nsb,
        w,
        row_bytes,
        n_rows,
        out,
        Q4K_PANEL_BYTES,
        |l, x: &BlockQ4K| {
            l.put(0, f16_le(x.d).to_le_bytes());
            l.put(Q4K_DMIN, f16_le(x.dmin).to_le_bytes());
            let (sc, mn) = scales_mins_k4(&x.scales);
            for (g, &s) in sc.iter().enumerate() {
                l.put(Q4K_SCALES + FIELD * g, f32::from(s).to_le_bytes());
            }
            for c in 0..4 {
                let pair = i16_pair(i16::from(mn[2 * c]), i16::from(mn[2 * c + 1]));
                l.put(Q4K_MINS + FIELD * c, pair.to_le_bytes());
            }
            // Byte b of pair c holds element b of sub-block 2c (low nibble) and of 2c + 1.
            for c in 0..4 {
                for k in 0..8 {
                    let b = 32 * c + 4 * k;
                    let v = u32::from_le_bytes([x.qs[b], x.qs[b + 1], x.qs[b + 2], x.qs[b + 3]]);
                    let (lo, hi) = (v & 0x0F0F_0F0F, (v >> 4) & 0x0F0F_0F0F);
                    l.put(Q4K_QUANTS + (8 * (2 * c) + k) * FIELD, lo.to_le_bytes());
                    l.put(Q4K_QUANTS + (8 * (2 * c + 1) + k) * FIELD, hi.to_le_bytes());
                }
            }
        },
    );
}

/// Per super-block of a Q8_K activation row, the four u32 `(s₂c as i16) | (s₂c₊₁ as i16) << 16`
/// of its 32-element sub-block sums `s`, appended to `out`.
pub(crate) fn sub_block_sum_pairs(a: &[u8], out: &mut Vec<u32>) {
    let blocks: &[BlockQ8K] = bytemuck::cast_slice(a);
    for y in blocks {
        let s = |g: usize| (i32::from(y.bsum(2 * g)) + i32::from(y.bsum(2 * g + 1))) as i16;
        for c in 0..4 {
            out.push(i16_pair(s(2 * c), s(2 * c + 1)));
        }
    }
}

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
    pack_rows(
        nsb,
        w,
        row_bytes,
        n_rows,
        out,
        Q6K_PANEL_BYTES,
        |l, x: &BlockQ6K| {
            l.put(0, f16_le(x.d).to_le_bytes());
            for (g, &s) in x.scales.iter().enumerate() {
                l.put(Q6K_SCALES + FIELD * g, i32::from(s).to_le_bytes());
            }
            for m in 0..8 {
                let pair = i16_pair(i16::from(x.scales[2 * m]), i16::from(x.scales[2 * m + 1]));
                l.put(Q6K_PAIRS + FIELD * m, pair.to_le_bytes());
            }
            for (k, four) in q6k_values(x).chunks_exact(4).enumerate() {
                l.put(Q6K_QUANTS + FIELD * k, [four[0], four[1], four[2], four[3]]);
            }
        },
    );
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
