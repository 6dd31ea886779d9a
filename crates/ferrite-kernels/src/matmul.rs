//! Matrix products `y = x · Wᵀ` of f32 activations with a weight matrix stored in any supported
//! format, multi-threaded over output rows on a [`ThreadPool`].
//!
//! The activations are quantized once per call into the weight format's activation type (as
//! llama.cpp does), then each thread takes a contiguous range of weight rows and, tile by tile
//! (16 rows, which stay in L1), dots them with every activation row. With one activation row this
//! is the matrix-vector product of decoding; with many it is the prefill matrix product.

use crate::dot::{quad_scales, Dot4Fn, DotFn, Kernels};
use crate::pool::{SharedMut, ThreadPool};
use crate::quant::{quantize_activations, QuantType};
use crate::{Error, Result};

/// Weight rows kept hot together.
const ROW_TILE: usize = 16;

/// A borrowed weight matrix: `rows` rows of `cols` elements of `ty`, row-major.
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    /// Storage format.
    pub ty: QuantType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    data: &'a [u8],
    row_bytes: usize,
    /// The same matrix repacked into stream panels (`crate::stream_panels`), when the model
    /// loader made them: decoding reads these instead of the rows.
    panels: Option<&'a [u8]>,
}

impl<'a> QMatrix<'a> {
    /// View `data` as a `rows × cols` matrix of `ty`; errors if the sizes disagree.
    pub fn new(ty: QuantType, rows: usize, cols: usize, data: &'a [u8]) -> Result<QMatrix<'a>> {
        let row_bytes = ty.row_bytes(cols)?;
        if row_bytes.checked_mul(rows) != Some(data.len()) {
            return Err(Error::Shape(format!(
                "{ty} matrix {rows}×{cols} needs {} bytes, got {}",
                row_bytes.saturating_mul(rows),
                data.len()
            )));
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            data,
            row_bytes,
            panels: None,
        })
    }

    /// The matrix with its stream panels (from [`crate::stream_panels::repack_stream_panels`]
    /// of the same data); errors if their size is not the layout's.
    pub fn with_stream_panels(self, panels: &'a [u8]) -> Result<QMatrix<'a>> {
        let want = crate::stream_panels::stream_panels_len(self.ty, self.rows, self.cols);
        if want != Some(panels.len()) {
            return Err(Error::Shape(format!(
                "{} matrix {}×{}: stream panels of {} bytes, want {want:?}",
                self.ty,
                self.rows,
                self.cols,
                panels.len()
            )));
        }
        Ok(QMatrix {
            panels: Some(panels),
            ..self
        })
    }

    /// The stream panels, if attached.
    pub fn stream_panels(&self) -> Option<&'a [u8]> {
        self.panels
    }

    /// Bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// All bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }
}

/// `y[i][r] = Σ_c x[i][c] · W[r][c]` for `m` activation rows. `x` is `m × cols`, `y` is
/// `m × rows`. `scratch` holds the quantized activations between calls (reused, grown as needed).
pub fn matmul(
    k: &Kernels,
    pool: &ThreadPool,
    w: &QMatrix<'_>,
    x: &[f32],
    m: usize,
    y: &mut [f32],
    scratch: &mut Vec<u8>,
) -> Result<()> {
    matmul_grouped(k, pool, w, x, m, None, y, scratch)
}

/// [`matmul`] where activation row i picks its kernel arithmetic as row `groups[i].0` of a
/// batch of `groups[i].1` rows (see `Kernels::matrix_dot_fn`), instead of row i of m. A server
/// batches many sequences into one product; grouping keeps each sequence's numbers what they
/// would be alone.
#[allow(clippy::too_many_arguments)]
pub fn matmul_grouped(
    k: &Kernels,
    pool: &ThreadPool,
    w: &QMatrix<'_>,
    x: &[f32],
    m: usize,
    groups: Option<&[(usize, usize)]>,
    y: &mut [f32],
    scratch: &mut Vec<u8>,
) -> Result<()> {
    check_shapes(w, x, m, groups, y)?;
    if let Some(tk) = k.tile_kernels(w.ty) {
        // The 32-element formats' row arithmetic never depends on the batch shape, so the
        // tiled product serves every grouping.
        return crate::tiled::matmul_tiled(tk, pool, &[*w], x, m, &mut [y], scratch);
    }
    let act = w.ty.activation_type();
    let a_bytes = act.row_bytes(w.cols)?;
    scratch.resize(m * a_bytes, 0);
    quantize_rows(pool, act, x, w.cols, scratch, a_bytes)?;
    let dots: Vec<DotFn> = (0..m)
        .map(|i| {
            let (gi, gm) = groups.map_or((i, m), |g| g[i]);
            k.matrix_dot_fn(w.ty, w.rows, gi, gm)
        })
        .collect::<Result<_>>()?;
    // Which rows go four at a time: consecutive rows whose kernels have the same four-row
    // version. Plain-format quads get their activation scales converted to f32 once here.
    let mut plan: Vec<Step> = Vec::with_capacity(m);
    let mut scales: Vec<f32> = Vec::new();
    let mut pairs: Vec<u32> = Vec::new();
    let mut tmp = Vec::new();
    let kinds: Vec<Option<(u8, Dot4Fn)>> = (0..m)
        .map(|i| {
            let (gi, gm) = groups.map_or((i, m), |g| g[i]);
            k.matrix_quad_fn(w.ty, w.rows, gi, gm)
        })
        .collect();
    let mut i = 0;
    while i < m {
        let quad = match kinds[i] {
            Some((id, f))
                if i + 4 <= m
                    && kinds[i + 1..i + 4]
                        .iter()
                        .all(|q| q.map(|q| q.0) == Some(id)) =>
            {
                Some((id, f))
            }
            _ => None,
        };
        let panel = quad.and_then(|(id, _)| k.k_panel(w.ty, id));
        match (quad, panel) {
            (_, Some(f)) => {
                // K-quants in llama.cpp's repacked-GEMM (Q4_K) or tiled (Q6_K) arithmetic: 16
                // weight rows per kernel call. Q4_K also needs the activations' sum pairs.
                let off = pairs.len();
                if w.ty == QuantType::Q4_K {
                    for j in 0..4 {
                        let a = &scratch[(i + j) * a_bytes..(i + j + 1) * a_bytes];
                        crate::k_panel::sub_block_sum_pairs(a, &mut pairs);
                    }
                }
                plan.push(Step::Panel(i, off, f));
                i += 4;
            }
            (Some((id, f)), None) => {
                let off = scales.len();
                if id == 1 {
                    let a = |j: usize| &scratch[(i + j) * a_bytes..(i + j + 1) * a_bytes];
                    quad_scales(act, w.cols, [a(0), a(1), a(2), a(3)], &mut tmp);
                    scales.extend_from_slice(&tmp);
                }
                plan.push(Step::Quad(i, f, off, scales.len() - off));
                i += 4;
            }
            (None, None) => {
                plan.push(Step::Single(i));
                i += 1;
            }
        }
    }
    let packed = Packed {
        scales: &scales,
        pairs: &pairs,
        acts: scratch,
        a_bytes,
    };
    let out = SharedMut(y.as_mut_ptr());
    if m > crate::tiled::FEW_ROWS {
        // Many activation rows: tiles of 16 weight rows are units large enough to be claimed
        // one at a time, so a thread slowed by a co-tenant does not hold the other up.
        let tiles = w.rows.div_ceil(ROW_TILE);
        pool.run_claimed(tiles, |t| {
            let rows = t * ROW_TILE..((t + 1) * ROW_TILE).min(w.rows);
            mat_rows(&dots, &plan, &packed, w, rows, out);
        });
        return Ok(());
    }
    pool.run(|ith, nth| {
        let rows = ThreadPool::split(w.rows, ith, nth, ROW_TILE);
        mat_rows(&dots, &plan, &packed, w, rows, out);
    });
    Ok(())
}

/// Check that `x` is `m × w.cols`, `y` is `m × w.rows` and `groups`, when given, has one valid
/// (index < size) entry per row.
fn check_shapes(
    w: &QMatrix<'_>,
    x: &[f32],
    m: usize,
    groups: Option<&[(usize, usize)]>,
    y: &[f32],
) -> Result<()> {
    if groups.is_some_and(|g| g.len() != m || g.iter().any(|&(i, n)| i >= n)) {
        return Err(Error::Shape(format!(
            "matmul of {m} rows needs {m} (index < size) kernel groups"
        )));
    }
    if x.len() != m * w.cols || y.len() != m * w.rows {
        return Err(Error::Shape(format!(
            "matmul of {m} rows with a {}×{} matrix: x has {} elements (want {}), y has {} (want {})",
            w.rows,
            w.cols,
            x.len(),
            m * w.cols,
            y.len(),
            m * w.rows
        )));
    }
    Ok(())
}

/// Products of the same activations with several matrices, `ys[j] = x · W_jᵀ` (the Q, K and V
/// projections, or gate and up): when the matrices share a format and width that has tile
/// kernels, the activations are quantized once and all products run in one pass of the pool
/// (one synchronisation instead of one per matrix); otherwise each is a [`matmul_grouped`].
/// Results are identical either way.
#[allow(clippy::too_many_arguments)]
pub fn matmul_many(
    k: &Kernels,
    pool: &ThreadPool,
    ws: &[QMatrix<'_>],
    x: &[f32],
    m: usize,
    groups: Option<&[(usize, usize)]>,
    ys: &mut [&mut [f32]],
    scratch: &mut Vec<u8>,
) -> Result<()> {
    if ws.len() != ys.len() {
        return Err(Error::Shape(format!(
            "{} matrices but {} outputs",
            ws.len(),
            ys.len()
        )));
    }
    if ws.is_empty() {
        return Ok(());
    }
    let fusable = (2..=crate::tiled::MAX_FUSED).contains(&ws.len())
        && ws.iter().all(|w| w.ty == ws[0].ty && w.cols == ws[0].cols);
    match k.tile_kernels(ws[0].ty) {
        Some(tk) if fusable => {
            for (w, y) in ws.iter().zip(ys.iter()) {
                check_shapes(w, x, m, groups, y)?;
            }
            crate::tiled::matmul_tiled(tk, pool, ws, x, m, ys, scratch)
        }
        _ => {
            for (w, y) in ws.iter().zip(ys.iter_mut()) {
                matmul_grouped(k, pool, w, x, m, groups, y, scratch)?;
            }
            Ok(())
        }
    }
}

/// Quantize `m` rows of `x` into `out`, rows split across the pool when there are several.
pub(crate) fn quantize_rows(
    pool: &ThreadPool,
    act: QuantType,
    x: &[f32],
    cols: usize,
    out: &mut [u8],
    a_bytes: usize,
) -> Result<()> {
    let m = x.len() / cols.max(1);
    if m <= 1 || pool.n_threads() == 1 {
        for (xr, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(a_bytes)) {
            quantize_activations(act, xr, o)?;
        }
        return Ok(());
    }
    let ptr = SharedMut(out.as_mut_ptr());
    let failed = std::sync::atomic::AtomicBool::new(false);
    pool.run(|ith, nth| {
        for i in ThreadPool::split(m, ith, nth, 1) {
            // SAFETY: each thread writes only its own rows i of `out`, disjoint ranges of
            // `a_bytes` bytes inside the buffer (m · a_bytes long).
            let o = unsafe { std::slice::from_raw_parts_mut(ptr.ptr().add(i * a_bytes), a_bytes) };
            if quantize_activations(act, &x[i * cols..(i + 1) * cols], o).is_err() {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    if failed.into_inner() {
        return Err(Error::Shape("activation quantization failed".into()));
    }
    Ok(())
}

/// How activation rows are visited: one at a time, four at once with a four-row kernel
/// (start row, kernel, offset and length of its f32 scales), or four at once against K-quant
/// panels of 16 weight rows (start row, offset of its Q4_K sub-block sum pairs, kernel).
#[derive(Clone, Copy)]
enum Step {
    Single(usize),
    Quad(usize, Dot4Fn, usize, usize),
    Panel(usize, usize, crate::dot::KPanelFn),
}

/// The quantized activations (`a_bytes` per row) and what the plan's steps read besides.
struct Packed<'a> {
    scales: &'a [f32],
    pairs: &'a [u32],
    acts: &'a [u8],
    a_bytes: usize,
}

thread_local! {
    /// Each pool thread's K-quant panel buffer, reused across calls.
    static K_PANEL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `dots[i]` is the kernel for activation row i (they differ only where llama.cpp's kernel
/// choice depends on the row, see `Kernels::matrix_dot_fn`); `plan` groups rows whose kernels
/// have a four-row version with the same arithmetic, which decodes each weight block once for
/// four rows.
fn mat_rows(
    dots: &[DotFn],
    plan: &[Step],
    p: &Packed<'_>,
    w: &QMatrix<'_>,
    rows: std::ops::Range<usize>,
    out: SharedMut<f32>,
) {
    let n = w.cols;
    let act = |i: usize| &p.acts[i * p.a_bytes..(i + 1) * p.a_bytes];
    let panels = plan.iter().any(|s| matches!(s, Step::Panel(..)));
    let nsb = n / 256;
    let p_stride = 4 * nsb;
    let (pack, panel_bytes): (crate::k_panel::PackPanel, usize) = if w.ty == QuantType::Q4_K {
        (
            crate::k_panel::pack_q4k_panel,
            crate::k_panel::Q4K_PANEL_BYTES,
        )
    } else {
        (
            crate::k_panel::pack_q6k_panel,
            crate::k_panel::Q6K_PANEL_BYTES,
        )
    };
    K_PANEL.with(|buf| {
        let mut buf = buf.borrow_mut();
        if panels {
            buf.resize(nsb * panel_bytes, 0);
        }
        let mut r0 = rows.start;
        while r0 < rows.end {
            let r1 = (r0 + ROW_TILE).min(rows.end);
            if panels {
                let wrows = &w.data()[r0 * w.row_bytes()..r1 * w.row_bytes()];
                pack(nsb, wrows, w.row_bytes(), r1 - r0, &mut buf);
            }
            for step in plan {
                match *step {
                    Step::Panel(i0, off, f) => {
                        let q4k = w.ty == QuantType::Q4_K;
                        assert!(
                            (i0 + 4) * p.a_bytes <= p.acts.len()
                                && (!q4k || off + 4 * p_stride <= p.pairs.len())
                                && r1 - r0 <= ROW_TILE,
                            "invariant: panel step inside the activations"
                        );
                        // SAFETY: `buf` holds nsb panel super-blocks of rows r0..r1 (≤ 16),
                        // activation rows i0..i0 + 4 of nsb Q8_K blocks and (Q4_K) their pairs
                        // are in bounds (asserted; the Q6_K kernel does not read the pairs);
                        // the kernel writes out[(i0 + i)·w.rows + r0 + j] for
                        // i < 4, j < r1 − r0: inside y, rows this thread owns.
                        unsafe {
                            f(
                                nsb,
                                buf.as_ptr(),
                                act(i0).as_ptr(),
                                p.a_bytes,
                                p.pairs[off..].as_ptr(),
                                p_stride,
                                out.ptr().add(i0 * w.rows + r0),
                                w.rows,
                                r1 - r0,
                            )
                        };
                    }
                    Step::Quad(i0, q4, off, len) => {
                        let a4 = [act(i0), act(i0 + 1), act(i0 + 2), act(i0 + 3)];
                        let sc = &p.scales[off..off + len];
                        for r in r0..r1 {
                            let v = q4(n, w.row(r), a4, sc);
                            for (j, v) in v.into_iter().enumerate() {
                                // SAFETY: this thread owns rows `rows` of every output row;
                                // element (i0 + j)·w.rows + r is inside y and written by no
                                // other thread.
                                unsafe { *out.ptr().add((i0 + j) * w.rows + r) = v };
                            }
                        }
                    }
                    Step::Single(i) => {
                        let (a, dot) = (act(i), dots[i]);
                        for r in r0..r1 {
                            let v = dot(n, w.row(r), a);
                            // SAFETY: as above for element i·w.rows + r.
                            unsafe { *out.ptr().add(i * w.rows + r) = v };
                        }
                    }
                }
            }
            r0 = r1;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{quantize_matrix, uniform};
    use crate::Isa;

    #[test]
    fn matmul_matches_row_dots_for_every_thread_count() {
        let (rows, cols, m) = (37, 64, 5);
        let wf: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 23) as f32 / 11.0 - 1.0)
            .collect();
        let x: Vec<f32> = (0..m * cols)
            .map(|i| ((i * 104729) % 19) as f32 / 9.0 - 1.0)
            .collect();
        let k = Kernels::new(Isa::Scalar).unwrap();
        for ty in [QuantType::F32, QuantType::Q8_0, QuantType::Q4_1] {
            let wq = quantize_matrix(ty, &wf, cols);
            let w = QMatrix::new(ty, rows, cols, &wq).unwrap();
            let mut expect = vec![0f32; m * rows];
            {
                let pool = ThreadPool::new(1);
                matmul(&k, &pool, &w, &x, m, &mut expect, &mut Vec::new()).unwrap();
            }
            for nth in 2..4 {
                let pool = ThreadPool::new(nth);
                let mut y = vec![0f32; m * rows];
                matmul(&k, &pool, &w, &x, m, &mut y, &mut Vec::new()).unwrap();
                assert_eq!(y, expect, "{ty} with {nth} threads");
            }
        }
    }

    #[test]
    fn four_row_kernels_equal_the_single_row_kernel_bit_for_bit() {
        // Odd sizes: 7 activation rows (one group of four plus three single rows), 19 weight
        // rows (a partial tile), 192 columns (six 32-blocks, three NVFP4 blocks).
        let (rows, cols, m) = (19, 192, 7);
        let mut rnd = uniform(0x9e3779b97f4a7c15u64, -2.0, 4.0);
        let wf: Vec<f32> = (0..rows * cols).map(|_| rnd()).collect();
        let x: Vec<f32> = (0..m * cols).map(|_| rnd()).collect();
        for isa in Isa::available() {
            let k = Kernels::new(isa).unwrap();
            for ty in [
                QuantType::Q4_0,
                QuantType::Q4_1,
                QuantType::Q5_0,
                QuantType::Q5_1,
                QuantType::Q8_0,
                QuantType::MXFP4,
                QuantType::NVFP4,
            ] {
                let wq = quantize_matrix(ty, &wf, cols);
                let w = QMatrix::new(ty, rows, cols, &wq).unwrap();
                let pool = ThreadPool::new(2);
                let mut y = vec![0f32; m * rows];
                matmul(&k, &pool, &w, &x, m, &mut y, &mut Vec::new()).unwrap();
                let act = ty.activation_type();
                let ab = act.row_bytes(cols).unwrap();
                for i in 0..m {
                    let mut a = vec![0u8; ab];
                    quantize_activations(act, &x[i * cols..(i + 1) * cols], &mut a).unwrap();
                    for r in 0..rows {
                        let want = k.dot(ty, cols, w.row(r), &a).unwrap();
                        assert_eq!(
                            y[i * rows + r].to_bits(),
                            want.to_bits(),
                            "{isa} {ty} row {i} col {r}"
                        );
                    }
                }
                if isa != Isa::Scalar {
                    assert!(k.quad_fn(ty).is_some(), "{isa} {ty} has a four-row kernel");
                }
            }
        }
    }

    #[test]
    fn k_quant_four_row_kernels_equal_the_row_kernels_llama_cpp_picks() {
        // Q4_K with rows % 8 == 0 (repacked arithmetic: rp4 for whole groups of four, rp for
        // the rest) and Q6_K with ≥ 8 rows (tiled arithmetic), with kernel groups mixing shapes.
        let (rows, cols) = (24, 512);
        let mut rnd = uniform(0x2545f4914f6cdd1du64, -2.0, 4.0);
        let wf: Vec<f32> = (0..rows * cols).map(|_| rnd()).collect();
        for m in [5usize, 11, 16] {
            let x: Vec<f32> = (0..m * cols).map(|_| rnd()).collect();
            // Whole batch as one group, and a split into a group of 3 and one of m − 3.
            let split: Vec<(usize, usize)> = (0..m)
                .map(|i| if i < 3 { (i, 3) } else { (i - 3, m - 3) })
                .collect();
            for groups in [None, Some(split.as_slice())] {
                for isa in Isa::available() {
                    let k = Kernels::new(isa).unwrap();
                    for ty in [QuantType::Q4_K, QuantType::Q6_K] {
                        let wq = quantize_matrix(ty, &wf, cols);
                        let w = QMatrix::new(ty, rows, cols, &wq).unwrap();
                        let pool = ThreadPool::new(2);
                        let mut y = vec![0f32; m * rows];
                        matmul_grouped(&k, &pool, &w, &x, m, groups, &mut y, &mut Vec::new())
                            .unwrap();
                        let act = ty.activation_type();
                        let mut a = vec![0u8; act.row_bytes(cols).unwrap()];
                        for i in 0..m {
                            quantize_activations(act, &x[i * cols..(i + 1) * cols], &mut a)
                                .unwrap();
                            let (gi, gm) = groups.map_or((i, m), |g| g[i]);
                            for r in 0..rows {
                                let want = k
                                    .matrix_row_dot(ty, (rows, gi, gm), cols, w.row(r), &a)
                                    .unwrap();
                                assert_eq!(
                                    y[i * rows + r].to_bits(),
                                    want.to_bits(),
                                    "{isa} {ty} m {m} row {i} col {r} groups {}",
                                    groups.is_some()
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_many_equals_separate_products() {
        let cols = 64;
        let mut rnd = uniform(0x1234_5678_9abc_def1u64, -1.0, 2.0);
        // Fusable (one format) and not (mixed formats), odd row counts, 1 and 6 activation rows.
        for tys in [
            [QuantType::Q5_0; 3],
            [QuantType::Q4_1, QuantType::Q8_0, QuantType::Q4_1],
        ] {
            for m in [1usize, 6] {
                let shapes = [19usize, 8, 5];
                let data: Vec<Vec<u8>> = tys
                    .iter()
                    .zip(shapes)
                    .map(|(&ty, rows)| {
                        let wf: Vec<f32> = (0..rows * cols).map(|_| rnd()).collect();
                        quantize_matrix(ty, &wf, cols)
                    })
                    .collect();
                let ws: Vec<QMatrix<'_>> = (0..3)
                    .map(|j| QMatrix::new(tys[j], shapes[j], cols, &data[j]).unwrap())
                    .collect();
                let x: Vec<f32> = (0..m * cols).map(|_| rnd()).collect();
                for isa in Isa::available() {
                    let k = Kernels::new(isa).unwrap();
                    let pool = ThreadPool::new(2);
                    let mut ys: Vec<Vec<f32>> = shapes.iter().map(|r| vec![0f32; m * r]).collect();
                    let mut outs: Vec<&mut [f32]> =
                        ys.iter_mut().map(|y| y.as_mut_slice()).collect();
                    matmul_many(&k, &pool, &ws, &x, m, None, &mut outs, &mut Vec::new()).unwrap();
                    for (j, w) in ws.iter().enumerate() {
                        let mut want = vec![0f32; m * w.rows];
                        matmul(&k, &pool, w, &x, m, &mut want, &mut Vec::new()).unwrap();
                        let same = ys[j]
                            .iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{isa} {tys:?} m {m} matrix {j}");
                    }
                    // One output too few is refused.
                    let mut two: Vec<&mut [f32]> =
                        ys.iter_mut().take(2).map(|y| y.as_mut_slice()).collect();
                    assert!(
                        matmul_many(&k, &pool, &ws, &x, m, None, &mut two, &mut Vec::new())
                            .is_err()
                    );
                }
            }
        }
    }

    #[test]
    fn shape_errors() {
        let k = Kernels::new(Isa::Scalar).unwrap();
        let pool = ThreadPool::new(1);
        assert!(QMatrix::new(QuantType::Q8_0, 2, 32, &[0u8; 67]).is_err());
        assert!(QMatrix::new(QuantType::Q8_0, 2, 33, &[0u8; 68]).is_err());
        let data = [0u8; 68];
        let w = QMatrix::new(QuantType::Q8_0, 2, 32, &data).unwrap();
        let mut y = vec![0f32; 2];
        assert!(matmul(&k, &pool, &w, &[0f32; 31], 1, &mut y, &mut Vec::new()).is_err());
        // Stream panels must be the layout's size: 16 rows' worth for this 2-row matrix.
        assert!(w.with_stream_panels(&data).is_err());
        assert!(w.with_stream_panels(&[0u8; 16 * 34]).is_ok());
    }
}
