//! Weights of the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) repacked at load into
//! *stream panels*: 16 rows interleaved block by block, so that one 512-bit load holds the same
//! four quants of all 16 rows and a decoding step (or a speculative verification, a small batch)
//! reads each panel as one sequential stream. The bytes per row are the format's own (nothing
//! is widened), so the repacked copy is exactly as large as the original.
//!
//! Panel `p` (rows `16p..16p + 16`, missing rows zero) is `nb` panel blocks, one per 32-element
//! block, of [`stream_block_bytes`] bytes:
//!
//! - `[16 × f16 d]`, then for Q4_1/Q5_1 `[16 × f16 m]` (each row's block header, as stored);
//! - Q5_0/Q5_1: `[8 × u64 mask]`, mask k holding bit 4 of elements `4k..4k + 4` of every row
//!   (bit `4j + e` for row j, element `4k + e`);
//! - Q4/Q5 quants, `[4 × 64 bytes]`: 64-byte group g holds bytes `4g..4g + 4` of every row's 16
//!   nibble bytes (row j at `4j`), whose low nibbles are elements `4g..4g + 4` and high nibbles
//!   `16 + 4g..16 + 4g + 4` (ggml's element order);
//! - Q8_0 quants, `[8 × 64 bytes]`: chunk k holds elements `4k..4k + 4` of every row, stored
//!   unsigned (`q + 128`, the offset the tile kernels' activation corrections undo).
//!
//! The kernels (`arch::x86_64::qstream`) keep the row kernels' arithmetic exactly (each i32
//! lane of a `vpdpbusd` is one of ggml's eight lane sums of a block), so results are
//! bit-identical whichever layout a product reads.

use crate::quant::QuantType;
use crate::{Error, Result};

/// Rows per stream panel (one 512-bit vector of i32 lanes).
pub(crate) const STREAM_ROWS: usize = 16;

/// Bytes of one 32-element weight block of `ty`, for the formats that have stream panels.
fn block_bytes(ty: QuantType) -> Option<usize> {
    match ty {
        QuantType::Q4_0 => Some(18),
        QuantType::Q4_1 => Some(20),
        QuantType::Q5_0 => Some(22),
        QuantType::Q5_1 => Some(24),
        QuantType::Q8_0 => Some(34),
        _ => None,
    }
}

/// Bytes of one stream panel block of `ty` (16 rows of one 32-element block), or `None` when
/// the format has no stream panels.
pub fn stream_block_bytes(ty: QuantType) -> Option<usize> {
    block_bytes(ty).map(|b| STREAM_ROWS * b)
}

/// Bytes of the stream panels of a `rows × cols` matrix of `ty` (rows rounded up to 16).
pub fn stream_panels_len(ty: QuantType, rows: usize, cols: usize) -> Option<usize> {
    let pb = stream_block_bytes(ty)?;
    cols.is_multiple_of(32)
        .then(|| rows.div_ceil(STREAM_ROWS) * (cols / 32) * pb)
}

/// Repack a row-major `rows × cols` matrix of `ty` (`data`, the GGUF layout) into stream
/// panels (module docs). Errors if the format has none or the sizes disagree.
pub fn repack_stream_panels(
    ty: QuantType,
    rows: usize,
    cols: usize,
    data: &[u8],
) -> Result<Vec<u8>> {
    let (Some(wb), Some(len)) = (block_bytes(ty), stream_panels_len(ty, rows, cols)) else {
        return Err(Error::Shape(format!(
            "{ty} {rows}×{cols} has no stream-panel layout"
        )));
    };
    let nb = cols / 32;
    if data.len() != rows * nb * wb {
        return Err(Error::Shape(format!(
            "{ty} matrix {rows}×{cols} needs {} bytes, got {}",
            rows * nb * wb,
            data.len()
        )));
    }
    let pb = STREAM_ROWS * wb;
    let mut out = vec![0u8; len];
    let has_min = matches!(ty, QuantType::Q4_1 | QuantType::Q5_1);
    let five = matches!(ty, QuantType::Q5_0 | QuantType::Q5_1);
    let header = if has_min { 4 } else { 2 }; // d, and m
    for (p, panel) in out.chunks_exact_mut(nb * pb).enumerate() {
        for (b, blk) in panel.chunks_exact_mut(pb).enumerate() {
            let (scales, rest) = blk.split_at_mut(32 * header / 2);
            let (masks, quants) = rest.split_at_mut(if five { 64 } else { 0 });
            for j in 0..STREAM_ROWS.min(rows - p * STREAM_ROWS) {
                let r = p * STREAM_ROWS + j;
                let x = &data[(r * nb + b) * wb..(r * nb + b + 1) * wb];
                scales[2 * j..2 * j + 2].copy_from_slice(&x[0..2]);
                if has_min {
                    scales[32 + 2 * j..32 + 2 * j + 2].copy_from_slice(&x[2..4]);
                }
                let qs = &x[header + if five { 4 } else { 0 }..];
                if five {
                    let qh = u32::from_le_bytes([
                        x[header],
                        x[header + 1],
                        x[header + 2],
                        x[header + 3],
                    ]);
                    for k in 0..8 {
                        let bits = u64::from((qh >> (4 * k)) & 0xF) << (4 * j);
                        let m = &mut masks[8 * k..8 * k + 8];
                        let v = u64::from_le_bytes(m.try_into().expect("8 bytes")) | bits;
                        m.copy_from_slice(&v.to_le_bytes());
                    }
                }
                if ty == QuantType::Q8_0 {
                    for k in 0..8 {
                        for e in 0..4 {
                            quants[64 * k + 4 * j + e] = qs[4 * k + e] ^ 0x80;
                        }
                    }
                } else {
                    for g in 0..4 {
                        quants[64 * g + 4 * j..64 * g + 4 * j + 4]
                            .copy_from_slice(&qs[4 * g..4 * g + 4]);
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of one Q5_1 panel block, checked element by element against the rows it
    /// came from: scales as stored, high-bit masks, nibble groups; the missing rows of a
    /// partial panel are zero.
    #[test]
    fn q5_1_panel_block_holds_every_row_in_place() {
        let (rows, cols) = (3, 64);
        let data: Vec<u8> = (0..rows * 2 * 24).map(|i| (i * 37 + 11) as u8).collect();
        let p = repack_stream_panels(QuantType::Q5_1, rows, cols, &data).unwrap();
        assert_eq!(p.len(), 2 * 16 * 24);
        for b in 0..2 {
            let blk = &p[b * 384..(b + 1) * 384];
            for j in 0..16 {
                let x = (j < rows).then(|| &data[(j * 2 + b) * 24..(j * 2 + b + 1) * 24]);
                let byte = |o: usize| x.map_or(0, |x| x[o]);
                assert_eq!(blk[2 * j..2 * j + 2], [byte(0), byte(1)], "d of row {j}");
                assert_eq!(
                    blk[32 + 2 * j..34 + 2 * j],
                    [byte(2), byte(3)],
                    "m of row {j}"
                );
                let qh = u32::from_le_bytes([byte(4), byte(5), byte(6), byte(7)]);
                for e in 0..32 {
                    let (k, l) = (e / 4, e % 4);
                    let mask = u64::from_le_bytes(blk[64 + 8 * k..72 + 8 * k].try_into().unwrap());
                    assert_eq!(
                        (mask >> (4 * j + l)) & 1,
                        u64::from((qh >> e) & 1),
                        "high bit {e}"
                    );
                    let (g, shift) = if e < 16 {
                        (e / 4, 0)
                    } else {
                        ((e - 16) / 4, 4)
                    };
                    let nib = (blk[128 + 64 * g + 4 * j + e % 4] >> shift) & 0xF;
                    let want = (byte(8 + e % 16) >> shift) & 0xF;
                    assert_eq!(nib, want, "block {b} row {j} element {e}");
                }
            }
        }
    }

    #[test]
    fn wrong_sizes_and_formats_are_refused() {
        assert!(repack_stream_panels(QuantType::Q4_0, 2, 32, &[0u8; 35]).is_err());
        assert!(repack_stream_panels(QuantType::Q4_K, 1, 256, &[0u8; 144]).is_err());
        assert!(repack_stream_panels(QuantType::Q8_0, 2, 32, &[0u8; 68]).is_ok());
    }
}
