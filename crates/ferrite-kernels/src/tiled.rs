//! The matrix products of the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) on ISAs that
//! have tile kernels (AVX-512 VNNI). Activations are quantized as usual, then packed with each
//! group of four quants' sum correction (see `arch::x86_64::qtile`):
//!
//! - when the matrices carry stream panels (weights repacked at load, `crate::stream_panels`),
//!   up to 16 activation rows (decoding, speculative verification, small batches) pass over
//!   them, one sequential stream per thread (`arch::x86_64::qstream`);
//! - without them, up to 8 rows go as one group through the register-tiled streaming kernels,
//!   one pass over the weight rows from memory;
//! - more rows (prompts) go through the panel kernels (`arch::x86_64::qpanel`): each thread
//!   unpacks (stream panels) or repacks (rows) 16 weight rows at a time into a panel and passes
//!   every activation row over it, two at a time, all accumulators in registers.
//!
//! Results are bit-identical to the single-row kernels either way.

use std::cell::RefCell;

use crate::dot::TileKernels;
use crate::matmul::{quantize_rows, QMatrix};
use crate::pool::{SharedMut, ThreadPool};
use crate::quant::QuantType;
use crate::stream_panels::STREAM_ROWS;
use crate::Result;

/// Weight rows per panel (one 512-bit vector of i32 lanes).
pub(crate) const PANEL_ROWS: usize = 16;
/// Bytes of one panel block: 16 × f32 d, 16 × f32 m, then 8 chunks of 16 rows × 4 quants.
pub(crate) const PANEL_BLOCK_BYTES: usize = 128 + 8 * 64;
/// Activation rows per panel kernel call (their 2 × 8 lane accumulators fill half the
/// registers; three rows would spill).
const PANEL_ACT_ROWS: usize = 2;

thread_local! {
    /// Each pool thread's panel buffer, reused across calls (it grows to the widest matrix).
    static PANEL: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Bytes of one packed 32-element activation block for a group of `ra` rows.
pub(crate) const fn packed_block_bytes(ra: usize) -> usize {
    ra * 72
}

/// Pack `rows.len()` (1 to 8) quantized activation rows (Q8_0 or Q8_1 blocks, `act`) into
/// `out` with `tk`'s packer: per block, the rows' 32 quants, their 8 lane corrections
/// `−offset · Σ` of each four quants (i32), their scales d and their Q8_1 sums s (f32; 0 for
/// Q8_0).
pub(crate) fn pack_group(tk: &TileKernels, act: QuantType, rows: &[&[u8]], out: &mut [u8]) {
    let ra = rows.len();
    let ab = if act == QuantType::Q8_1 { 36 } else { 34 };
    let nb = out.len() / packed_block_bytes(ra).max(1);
    for (i, row) in rows.iter().enumerate() {
        assert!(
            row.len() >= nb * ab && out.len() >= nb * packed_block_bytes(ra) && ra <= 8,
            "invariant: activation rows and packed group sized by matmul_tiled"
        );
        // SAFETY: `row` holds nb blocks of ab bytes, `out` nb packed blocks of ra rows (both
        // asserted), i < ra.
        unsafe { (tk.pack_row)(nb, ab, tk.offset, row.as_ptr(), out.as_mut_ptr(), ra, i) };
    }
}

/// Most activation rows that take the streaming kernels as one group.
pub(crate) const FEW_ROWS: usize = 8;

/// Most activation rows that stream past the weights' stream panels (from memory, 12 and 16
/// rows measured 10–40% faster than the prompt panels; 24 and 32 about even).
const STREAM_MAX: usize = 16;

/// Most matrices one call multiplies with the same activations (Q, K, V).
pub(crate) const MAX_FUSED: usize = 4;

/// `ys[j] = x · W_jᵀ` for up to [`MAX_FUSED`] matrices of one format and width, with the tile
/// kernels `tk` (see [`crate::matmul`] for shapes; checked there). The activations are quantized
/// and packed once, and all matrices' rows are split across the threads in one pass.
pub(crate) fn matmul_tiled(
    tk: &TileKernels,
    pool: &ThreadPool,
    ws: &[QMatrix<'_>],
    x: &[f32],
    m: usize,
    ys: &mut [&mut [f32]],
    scratch: &mut Vec<u8>,
) -> Result<()> {
    if m == 0 {
        return Ok(()); // no activation rows (a step that needs no logits): nothing to compute
    }
    let (ty, cols) = (ws[0].ty, ws[0].cols);
    let act = ty.activation_type();
    let a_bytes = act.row_bytes(cols)?;
    let nb = cols / 32;
    // Up to eight rows (decoding, a speculative verification, a small batch) go as one group
    // through the streaming kernel: one pass over the weights from memory. More rows are packed
    // one by one for the panels.
    // With stream panels (weights repacked at load) up to STREAM_MAX rows stream instead.
    let streams = m <= STREAM_MAX && ws.iter().all(|w| w.stream_panels().is_some());
    let few = m <= FEW_ROWS || streams;
    let row_bytes = nb * packed_block_bytes(1);
    scratch.resize(m * a_bytes + m * row_bytes, 0);
    let (acts, packed) = scratch.split_at_mut(m * a_bytes);
    quantize_rows(pool, act, x, cols, acts, a_bytes)?;
    let acts: &[u8] = acts;
    let row = |i: usize| &acts[i * a_bytes..(i + 1) * a_bytes];
    // The stream panels, like the prompt panels, read one-row groups.
    if streams {
        for (i, out) in packed.chunks_exact_mut(row_bytes.max(1)).enumerate() {
            pack_group(tk, act, &[row(i)], out);
        }
    } else if few {
        let rows: [&[u8]; FEW_ROWS] = std::array::from_fn(|i| row(i.min(m - 1)));
        pack_group(tk, act, &rows[..m], packed);
    } else {
        pool.par_chunks_mut(packed, row_bytes.max(1), |i, out| {
            pack_group(tk, act, &[row(i)], out);
        });
    }
    let packed: &[u8] = packed;
    let mut outs = [SharedMut(std::ptr::null_mut()); MAX_FUSED];
    for (o, y) in outs.iter_mut().zip(ys.iter_mut()) {
        *o = SharedMut(y.as_mut_ptr());
    }
    if !few {
        // Panels of 16 weight rows against all activation rows: units of work large enough
        // (≥ 16·m·cols MACs) to be claimed one at a time, so neither thread waits for the
        // other at the end.
        // Unit u is panel u of the matrices' panels, counted matrix after matrix.
        let panels = |w: &QMatrix<'_>| w.rows.div_ceil(PANEL_ROWS);
        pool.run_claimed(ws.iter().map(panels).sum(), |mut u| {
            for (w, &out) in ws.iter().zip(&outs) {
                if u < panels(w) {
                    let r = u * PANEL_ROWS;
                    panel_rows(tk, packed, m, w, r..(r + PANEL_ROWS).min(w.rows), out);
                    return;
                }
                u -= panels(w);
            }
        });
        return Ok(());
    }
    if streams {
        stream_products(tk, pool, ws, packed, m, &outs);
        return Ok(());
    }
    let total: usize = ws.iter().map(|w| w.rows).sum();
    pool.run(|ith, nth| {
        // The threads split the rows of all the matrices, concatenated: long streams, one per
        // part, for the streaming kernel (claiming small units would cut them short).
        let mine = ThreadPool::split(total, ith, nth, PANEL_ROWS);
        let mut base = 0;
        for (w, &out) in ws.iter().zip(&outs) {
            let (lo, hi) = (mine.start.max(base), mine.end.min(base + w.rows));
            if lo < hi {
                let (r0, r1) = (lo - base, hi - base);
                let wrows = &w.data()[r0 * w.row_bytes()..r1 * w.row_bytes()];
                // SAFETY: `wrows` holds rows r0..r1 of nb blocks at stride row_bytes, `packed`
                // one packed group of m rows (m ≤ 8 selects the kernel of that arity); the
                // kernel writes out[i·w.rows + r] for i < m, r0 ≤ r < r1: inside y
                // (m × w.rows), and this thread owns those rows of every output row.
                unsafe {
                    (tk.rows[m - 1])(
                        nb,
                        wrows.as_ptr(),
                        w.row_bytes(),
                        r1 - r0,
                        packed.as_ptr(),
                        out.ptr().add(r0),
                        w.rows,
                    )
                };
            }
            base += w.rows;
        }
    });
    Ok(())
}

/// `ys[j] = x · W_jᵀ` for up to 8 packed activation rows (one-row groups) from the matrices'
/// stream panels: the threads split the panels of all the matrices, concatenated, into one
/// contiguous range each (one sequential stream per thread), and every activation row passes
/// over each panel, two at a time, while it is in L1.
fn stream_products(
    tk: &TileKernels,
    pool: &ThreadPool,
    ws: &[QMatrix<'_>],
    packed: &[u8],
    m: usize,
    outs: &[SharedMut<f32>; MAX_FUSED],
) {
    let panels = |w: &QMatrix<'_>| w.rows.div_ceil(STREAM_ROWS);
    let total: usize = ws.iter().map(panels).sum();
    pool.run(|ith, nth| {
        let mine = ThreadPool::split(total, ith, nth, 1);
        let mut base = 0;
        for (w, &out) in ws.iter().zip(outs) {
            let n = panels(w);
            let nb = w.cols / 32;
            let a_stride = nb * packed_block_bytes(1);
            let pb = crate::stream_panels::stream_block_bytes(w.ty)
                .expect("invariant: matrices with stream panels have a block size");
            let data = w
                .stream_panels()
                .expect("invariant: checked by matmul_tiled");
            for p in mine.start.max(base)..mine.end.min(base + n) {
                let p = p - base;
                let r = p * STREAM_ROWS;
                let rows = STREAM_ROWS.min(w.rows - r);
                let panel = &data[p * nb * pb..(p + 1) * nb * pb];
                let mut i = 0;
                while i < m {
                    let ra = PANEL_ACT_ROWS.min(m - i);
                    assert!(
                        packed.len() >= (i + ra) * a_stride,
                        "invariant: packed rows sized by matmul_tiled"
                    );
                    // SAFETY: `panel` is panel p (nb stream blocks, its length checked when the
                    // panels were attached), `packed` holds rows i..i + ra of nb packed blocks
                    // at stride a_stride (asserted); the kernel writes out[(i + k)·w.rows + r +
                    // j] for k < ra, j < rows: inside y (m × w.rows), rows this thread owns.
                    unsafe {
                        (tk.stream[ra - 1])(
                            nb,
                            panel.as_ptr(),
                            packed[i * a_stride..].as_ptr(),
                            a_stride,
                            out.ptr().add(i * w.rows + r),
                            w.rows,
                            rows,
                        )
                    };
                    i += ra;
                }
            }
            base += n;
        }
    });
}

/// Weight rows `rows` of `w`, 16 at a time repacked into a panel, against all `m` packed
/// activation rows (one-row groups of `nb` blocks each), into `out` (`m × w.rows`). The caller
/// (one pool thread) owns those rows of `out`.
fn panel_rows(
    tk: &TileKernels,
    packed: &[u8],
    m: usize,
    w: &QMatrix<'_>,
    rows: std::ops::Range<usize>,
    out: SharedMut<f32>,
) {
    let nb = w.cols / 32;
    let a_stride = nb * packed_block_bytes(1);
    assert!(
        packed.len() >= m * a_stride && rows.end <= w.rows,
        "invariant: packed rows and weight rows checked by matmul_tiled"
    );
    PANEL.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(nb * PANEL_BLOCK_BYTES, 0);
        let mut r = rows.start;
        while r < rows.end {
            let n = PANEL_ROWS.min(rows.end - r);
            match w.stream_panels() {
                Some(data) if r.is_multiple_of(STREAM_ROWS) => {
                    // The panel from the weights repacked at load: a vector unpack.
                    let pb = crate::stream_panels::stream_block_bytes(w.ty)
                        .expect("invariant: matrices with stream panels have a block size");
                    let p = r / STREAM_ROWS;
                    let panel = &data[p * nb * pb..(p + 1) * nb * pb];
                    // SAFETY: `panel` is stream panel p, nb blocks (its length was checked
                    // when the panels were attached), `buf` has room for nb panel blocks.
                    unsafe { (tk.unpack_stream)(nb, panel.as_ptr(), buf.as_mut_ptr()) };
                }
                _ => {
                    let wrows = &w.data()[r * w.row_bytes()..(r + n) * w.row_bytes()];
                    // SAFETY: `wrows` holds n ≤ 16 rows of nb blocks at stride row_bytes, `buf`
                    // has room for nb panel blocks.
                    unsafe {
                        (tk.pack_panel)(nb, wrows.as_ptr(), w.row_bytes(), n, buf.as_mut_ptr())
                    };
                }
            }
            let mut i = 0;
            while i < m {
                let ra = PANEL_ACT_ROWS.min(m - i);
                // SAFETY: `buf` holds nb panel blocks, `packed` rows i..i + ra of nb packed
                // blocks at stride a_stride (asserted above); the kernel writes
                // out[(i + k)·w.rows + r + j] for k < ra, j < n: inside y (m × w.rows,
                // r + n ≤ w.rows), rows this thread owns.
                unsafe {
                    (tk.panel[ra - 1])(
                        nb,
                        buf.as_ptr(),
                        packed[i * a_stride..].as_ptr(),
                        a_stride,
                        out.ptr().add(i * w.rows + r),
                        w.rows,
                        n,
                    )
                };
                i += ra;
            }
            r += n;
        }
    });
}

#[cfg(test)]
mod tests {
    use crate::matmul::{matmul, QMatrix};
    use crate::quant::{quantize_activations, QuantType};
    use crate::stream_panels::repack_stream_panels;
    use crate::test_util::{quantize_matrix, unit, xorshift};
    use crate::{Isa, Kernels, ThreadPool};

    /// Every tile shape (4×4, 4×1, 1×4, 1×1 and the ragged edges of both), the prompt panels
    /// and the stream panels (weights repacked as a loader does, partial last panels included)
    /// against the single-row kernel, bit for bit, on random data with large and tiny
    /// magnitudes.
    #[test]
    fn tiled_products_equal_the_row_kernel_bit_for_bit() {
        let mut next = xorshift(0x853c49e6748fea9bu64);
        let mut rnd = || {
            let bits = next();
            let u = unit(bits);
            // A few exact zeros and wide magnitudes, so −0.0 sums and rounding edges occur.
            match bits % 7 {
                0 => 0.0,
                1 => (u - 0.5) * 1e-3,
                _ => (u - 0.5) * 8.0,
            }
        };
        let cols = 96;
        for isa in Isa::available() {
            let k = Kernels::new(isa).unwrap();
            for ty in [
                QuantType::Q4_0,
                QuantType::Q4_1,
                QuantType::Q5_0,
                QuantType::Q5_1,
                QuantType::Q8_0,
            ] {
                if isa == Isa::Avx512 {
                    assert!(k.tile_kernels(ty).is_some(), "{ty} has tile kernels");
                }
                for (rows, m) in [
                    (3, 0),
                    (1, 1),
                    (4, 1),
                    (5, 3),
                    (16, 4),
                    (21, 9),
                    (40, 8),
                    (7, 13),
                    (37, 1),
                    (70, 2),
                    (64, 5),
                    (33, 6),
                    (19, 7),
                    (50, 8),
                    (37, 17),
                    (64, 24),
                    (16, 10),
                ] {
                    let wf: Vec<f32> = (0..rows * cols).map(|_| rnd()).collect();
                    let x: Vec<f32> = (0..m * cols).map(|_| rnd()).collect();
                    let wq = quantize_matrix(ty, &wf, cols);
                    let plain = QMatrix::new(ty, rows, cols, &wq).unwrap();
                    let panels = repack_stream_panels(ty, rows, cols, &wq).unwrap();
                    let streamed = plain.with_stream_panels(&panels).unwrap();
                    for (w, nth) in [
                        (plain, 1),
                        (plain, 2),
                        (plain, 3),
                        (streamed, 1),
                        (streamed, 3),
                    ] {
                        let pool = ThreadPool::new(nth);
                        let layout = if w.stream_panels().is_some() {
                            "panels"
                        } else {
                            "rows"
                        };
                        let mut y = vec![0f32; m * rows];
                        matmul(&k, &pool, &w, &x, m, &mut y, &mut Vec::new()).unwrap();
                        let act = ty.activation_type();
                        let mut a = vec![0u8; act.row_bytes(cols).unwrap()];
                        for i in 0..m {
                            quantize_activations(act, &x[i * cols..(i + 1) * cols], &mut a)
                                .unwrap();
                            for r in 0..rows {
                                let want = k.dot(ty, cols, w.row(r), &a).unwrap();
                                assert_eq!(
                                    y[i * rows + r].to_bits(),
                                    want.to_bits(),
                                    "{isa} {ty} {layout} {rows}×{m} threads {nth}: row {i} col {r}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
