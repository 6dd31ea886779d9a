//! Dot products of a weight row with an activation row, per weight format, and the run-time
//! dispatch table [`Kernels`].

pub(crate) mod scalar;

use crate::quant::QuantType;
use crate::{Error, Isa, Result};

/// Kernel signature: `n` elements; weight row bytes; activation row bytes (already in
/// `weight_type.activation_type()`). Lengths are checked by the caller.
pub(crate) type DotFn = fn(usize, &[u8], &[u8]) -> f32;
/// One weight row against four activation rows: `[dot(w, a[0]), …, dot(w, a[3])]`, each
/// bit-identical to the single-row kernel. The last argument holds the four rows' activation
/// scales as f32, per block `[d0, d1, d2, d3, s0, s1, s2, s3]` (see [`quad_scales`]). Lengths
/// are checked by the entry.
pub(crate) type Dot4Fn = fn(usize, &[u8], [&[u8]; 4], &[f32]) -> [f32; 4];

/// The f32 activation scales a four-row kernel reads: for each 32-element block, the four rows'
/// `d` (f16 at byte 0 of a Q8_0/Q8_1 block), then their `s` (f16 at byte 2 of a Q8_1 block; 0
/// for Q8_0). `out` is resized to `8 · n/32`.
pub(crate) fn quad_scales(act: QuantType, n: usize, a: [&[u8]; 4], out: &mut Vec<f32>) {
    let nb = n / 32;
    let (bytes, has_s) = match act {
        QuantType::Q8_1 => (36, true),
        _ => (34, false),
    };
    out.clear();
    out.resize(8 * nb, 0.0);
    let f16 = |b: &[u8], o: usize| half::f16::from_le_bytes([b[o], b[o + 1]]).to_f32();
    for i in 0..nb {
        for (r, row) in a.iter().enumerate() {
            out[8 * i + r] = f16(row, i * bytes);
            if has_s {
                out[8 * i + 4 + r] = f16(row, i * bytes + 2);
            }
        }
    }
}
/// `out[i·out_stride + r]` = weight row r · packed activation row i for `n_rows` weight rows
/// (pointer at stride `w_stride`) and one packed group of 1–8 rows: `(nb, w, w_stride, n_rows,
/// a, out, out_stride)`.
///
/// # Safety
/// `w` must hold `n_rows` rows of `nb` blocks at stride `w_stride`, `a` one packed group of
/// `nb` blocks of this arity, and `out` be valid for every write above; `tiled` checks this.
pub(crate) type RowsFn = unsafe fn(usize, *const u8, usize, usize, *const u8, *mut f32, usize);

/// Pack one quantized activation row as row `i` of a group of `ra`: `(nb, block bytes, offset,
/// row, out, ra, i)` (see `arch::x86_64::qtile::pack_row`).
///
/// # Safety
/// `row` must hold `nb` Q8_0 (34-byte) or Q8_1 (36-byte) blocks, `out` `nb` packed blocks of
/// `ra` rows, and `i < ra`; `tiled` checks.
pub(crate) type PackRowFn = unsafe fn(usize, usize, i32, *const u8, *mut u8, usize, usize);

/// Repack `n_rows` (≤ 16) weight rows into a panel: `(nb, w, w_stride, n_rows, out)`.
///
/// # Safety
/// `w` must hold `n_rows` rows of `nb` blocks at stride `w_stride` and `out` be valid for `nb`
/// panel blocks (see `panel`).
pub(crate) type PackPanelFn = unsafe fn(usize, *const u8, usize, usize, *mut u8);
/// `out[i·out_stride + r]` = panel row r · packed activation row i, for `r < n_rows` and the
/// kernel's 1–8 activation rows at stride `a_stride`: `(nb, panel, a, a_stride, out, out_stride,
/// n_rows)`.
///
/// # Safety
/// `panel` must hold `nb` panel blocks, `a` the kernel's rows of `nb` packed blocks, and `out`
/// be valid for 16 (masked to `n_rows`) floats at every `out + i·out_stride`; `tiled` checks.
pub(crate) type PanelFn = unsafe fn(usize, *const u8, *const u8, usize, *mut f32, usize, usize);

/// K-quant panel against four Q8_K activation rows: `(nsb, panel, a, a_stride, pairs, p_stride,
/// out, out_stride, n_rows)` (see `arch::x86_64::qpanel::panel_q4k` and `panel_q6k`; `pairs`
/// is read by the Q4_K one only).
///
/// # Safety
/// As those kernels' contracts; `matmul` checks them.
pub(crate) type KPanelFn =
    unsafe fn(usize, *const u8, *const u8, usize, *const u32, usize, *mut f32, usize, usize);

/// The tile kernels of one 32-element format: weight rows streamed against a few activation
/// rows, weight panels against many (prompts), and the offset that makes its quants unsigned
/// (the packed activations carry `−offset · Σ a`).
#[derive(Clone, Copy)]
pub(crate) struct TileKernels {
    pub(crate) offset: i32,
    /// Packs one activation row into a group (`crate::tiled::pack_group`'s arithmetic).
    pub(crate) pack_row: PackRowFn,
    /// Rows in long streams against a group of 1 to 8 activation rows (index = count − 1).
    pub(crate) rows: [RowsFn; 8],
    /// Weight panels (for more than 8 activation rows).
    pub(crate) pack_panel: PackPanelFn,
    /// A panel against 1 or 2 activation rows (index = count − 1).
    pub(crate) panel: [PanelFn; 2],
    /// A stream panel (weights repacked at load, `crate::stream_panels`) against 1 or 2
    /// activation rows (index = count − 1).
    pub(crate) stream: [PanelFn; 2],
    /// A stream panel unpacked into a prompt panel: `(nb, stream panel, out)`, the bytes
    /// `pack_panel` gives from the same 16 rows.
    pub(crate) unpack_stream: UnpackStreamFn,
}

/// Unpack a stream panel of `nb` blocks into a prompt panel: `(nb, stream panel, out)`.
///
/// # Safety
/// `stream panel` must hold `nb` stream panel blocks of the format, `out` be valid for `nb`
/// prompt panel blocks; `tiled` checks.
pub(crate) type UnpackStreamFn = unsafe fn(usize, *const u8, *mut u8);

/// `y = f16(y + x·v)` over f16 vectors (y as bits, x as little-endian bytes).
pub(crate) type MadF16Fn = fn(&mut [u16], &[u8], f32);
/// `ys[g] = fma(dequantized Q8_0 row x, vs[g], ys[g])` for each accumulator g (f32, all the
/// same length, `len / 32` blocks of x).
pub(crate) type MadQ8Fn = fn(&mut [&mut [f32]], &[u8], &[f32]);
/// `y = f16(y·v)`.
pub(crate) type ScaleF16Fn = fn(&mut [u16], f32);
/// `gate = act(gate) · up` (equal lengths): SwiGLU, GeGLU.
pub(crate) type GluFn = fn(&mut [f32], &[f32]);
/// `x[i] = expf(x[i])`, bit-identical to the platform's libm.
pub(crate) type ExpFn = fn(&mut [f32]);
/// Attention's f16 value accumulation over a block of keys (see
/// [`Kernels::attn_values_f16`]); returns false where this ISA has no fused version for the
/// head size, and the caller then goes key by key.
pub(crate) type AttnValuesFn = fn(&mut [u16], &[u8], &[f32], &[bool]) -> bool;

/// A gated activation after its length check.
fn glu(name: &str, f: GluFn, gate: &mut [f32], up: &[f32]) -> Result<()> {
    if gate.len() != up.len() {
        return Err(Error::Shape(format!(
            "{name}: gate has {} values, up {}",
            gate.len(),
            up.len()
        )));
    }
    f(gate, up);
    Ok(())
}

fn attn_values_none(_: &mut [u16], _: &[u8], _: &[f32], _: &[bool]) -> bool {
    false
}

/// Attention's f16 value accumulation for several queries over the same block of keys (see
/// [`Kernels::attn_values_f16_group`]); returns false where this ISA has no grouped version.
pub(crate) type AttnValuesGroupFn =
    fn(&mut [&mut [u16]], &[u8], usize, usize, &[&[f32]], &[&[bool]]) -> bool;

fn attn_values_group_none(
    _: &mut [&mut [u16]],
    _: &[u8],
    _: usize,
    _: usize,
    _: &[&[f32]],
    _: &[&[bool]],
) -> bool {
    false
}

/// Attention scores of 1–4 f16 queries against one block of f16 keys (see
/// [`Kernels::attn_scores_f16_group`]); returns false where this ISA has no block version for
/// the head size.
pub(crate) type AttnScoresFn = fn(&[&[u16]], &[u8], &mut [&mut [f32]]) -> bool;

fn attn_scores_none(_: &[&[u16]], _: &[u8], _: &mut [&mut [f32]]) -> bool {
    false
}

/// Scores of one Q8_0 query against a block of Q8_0 keys: `(query, keys, d, out)`.
pub(crate) type AttnScoresQ8Fn = fn(&[u8], &[u8], usize, &mut [f32]) -> bool;

fn attn_scores_q8_none(_: &[u8], _: &[u8], _: usize, _: &mut [f32]) -> bool {
    false
}

/// Value accumulation of 1–4 queries over a block of Q8_0 value rows: `(accumulators, values,
/// row bytes, first column, e, raised)` (see [`Kernels::attn_values_q8_0_group`]).
pub(crate) type AttnValuesQ8Fn =
    fn(&mut [&mut [f32]], &[u8], usize, usize, &[&[f32]], &[&[bool]]) -> bool;

fn attn_values_q8_none(
    _: &mut [&mut [f32]],
    _: &[u8],
    _: usize,
    _: usize,
    _: &[&[f32]],
    _: &[&[bool]],
) -> bool {
    false
}

/// libm's `expf` on every element (the reference).
fn expf_libm(x: &mut [f32]) {
    for v in x {
        *v = v.exp();
    }
}

/// Function table for one ISA. Built only for an ISA the CPU supports, which is what makes
/// calling its SIMD entries sound.
#[derive(Clone, Copy)]
pub struct Kernels {
    isa: Isa,
    dots: [Option<DotFn>; QuantType::ALL.len()],
    /// Four-row kernels, for the formats whose row arithmetic never depends on the batch shape.
    quads: [Option<Dot4Fn>; QuantType::ALL.len()],
    /// Q4_K with the arithmetic llama.cpp uses for repacked matrices (rows % 8 == 0): its GEMV
    /// (single activation rows) and its GEMM (activation rows in groups of four).
    q4_k_rp: DotFn,
    q4_k_rp4: DotFn,
    /// Q4_K, Q5_K, Q6_K with the arithmetic of llama.cpp's tiled K-quant matmul (batches of
    /// 8 or more rows on matrices that are not repacked).
    q4_k_tl: DotFn,
    q5_k_tl: DotFn,
    q6_k_tl: DotFn,
    /// Four-row versions of `q4_k_rp4` and `q6_k_tl` (SIMD ISAs only).
    q4_k_rp4_x4: Option<Dot4Fn>,
    q6_k_tl_x4: Option<Dot4Fn>,
    /// `q4_k_rp4_x4` and `q6_k_tl_x4` on 16 repacked weight rows at once (AVX-512 VNNI only).
    q4_k_panel: Option<KPanelFn>,
    q6_k_panel: Option<KPanelFn>,
    /// Register-tiled kernels (AVX-512 VNNI only), used for every batch shape.
    tiles: [Option<TileKernels>; QuantType::ALL.len()],
    pub(crate) mad_f16: MadF16Fn,
    pub(crate) scale_f16: ScaleF16Fn,
    pub(crate) mad_q8_0: MadQ8Fn,
    swiglu: GluFn,
    geglu: GluFn,
    expf: ExpFn,
    attn_values: AttnValuesFn,
    attn_scores: AttnScoresFn,
    attn_values_group: AttnValuesGroupFn,
    attn_scores_q8: AttnScoresQ8Fn,
    attn_values_q8: AttnValuesQ8Fn,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels").field("isa", &self.isa).finish()
    }
}

fn slot(t: QuantType) -> usize {
    QuantType::ALL
        .iter()
        .position(|&x| x == t)
        .expect("invariant: ALL lists every QuantType")
}

impl Kernels {
    /// The table for `isa`; errors if this CPU cannot run it.
    pub fn new(isa: Isa) -> Result<Kernels> {
        isa.require()?;
        let mut k = Kernels {
            isa,
            dots: [None; QuantType::ALL.len()],
            quads: [None; QuantType::ALL.len()],
            q4_k_rp: scalar::q4_k_q8_k_rp,
            q4_k_rp4: scalar::q4_k_q8_k_rp4,
            q4_k_tl: scalar::q4_k_q8_k_tl,
            q5_k_tl: scalar::q5_k_q8_k_tl,
            q6_k_tl: scalar::q6_k_q8_k_tl,
            q4_k_rp4_x4: None,
            q4_k_panel: None,
            q6_k_panel: None,
            q6_k_tl_x4: None,
            tiles: [None; QuantType::ALL.len()],
            mad_f16: scalar::mad_f16,
            scale_f16: scalar::scale_f16,
            mad_q8_0: scalar::mad_q8_0,
            swiglu: crate::compat::swiglu,
            geglu: crate::compat::geglu,
            expf: expf_libm,
            attn_values: attn_values_none,
            attn_scores: attn_scores_none,
            attn_values_group: attn_values_group_none,
            attn_scores_q8: attn_scores_q8_none,
            attn_values_q8: attn_values_q8_none,
        };
        k.set(QuantType::F32, scalar::f32_f32);
        k.set(QuantType::F16, scalar::f16_f16);
        k.set(QuantType::BF16, scalar::bf16_bf16);
        k.set(QuantType::Q4_0, scalar::q4_0_q8_0);
        k.set(QuantType::Q4_1, scalar::q4_1_q8_1);
        k.set(QuantType::Q5_0, scalar::q5_0_q8_0);
        k.set(QuantType::Q5_1, scalar::q5_1_q8_1);
        k.set(QuantType::Q8_0, scalar::q8_0_q8_0);
        k.set(QuantType::Q4_K, scalar::q4_k_q8_k);
        k.set(QuantType::Q5_K, scalar::q5_k_q8_k);
        k.set(QuantType::Q6_K, scalar::q6_k_q8_k);
        k.set(QuantType::MXFP4, scalar::mxfp4_q8_0);
        k.set(QuantType::NVFP4, scalar::nvfp4_q8_0);
        #[cfg(target_arch = "x86_64")]
        x86::install(&mut k);
        Ok(k)
    }

    /// The best table for this CPU.
    pub fn detect() -> Kernels {
        Kernels::new(Isa::detect()).expect("invariant: the detected ISA is available")
    }

    /// Which ISA this table runs.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    fn set(&mut self, t: QuantType, f: DotFn) {
        self.dots[slot(t)] = Some(f);
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn set_quad(&mut self, t: QuantType, f: Dot4Fn) {
        debug_assert!(
            matches!(
                t,
                QuantType::Q4_0
                    | QuantType::Q4_1
                    | QuantType::Q5_0
                    | QuantType::Q5_1
                    | QuantType::Q8_0
                    | QuantType::MXFP4
                    | QuantType::NVFP4
            ),
            "four-row kernels only for shape-independent formats"
        );
        self.quads[slot(t)] = Some(f);
    }

    /// The four-row kernel with the arithmetic [`matrix_dot_fn`](Self::matrix_dot_fn) picks
    /// for row `i` of `m`, where one exists, with an id: rows may share a four-row call only
    /// when their ids are equal.
    pub(crate) fn matrix_quad_fn(
        &self,
        t: QuantType,
        rows: usize,
        i: usize,
        m: usize,
    ) -> Option<(u8, Dot4Fn)> {
        match t {
            QuantType::Q4_K if rows.is_multiple_of(8) => (i < m - m % 4)
                .then_some(())
                .and(self.q4_k_rp4_x4.map(|f| (2, f))),
            QuantType::Q6_K if m >= 8 => self.q6_k_tl_x4.map(|f| (3, f)),
            QuantType::Q4_K | QuantType::Q5_K | QuantType::Q6_K => None,
            _ => self.quad_fn(t).map(|f| (1, f)),
        }
    }

    /// The panel kernel with the arithmetic of four-row kernel `quad_id` of `matrix_quad_fn`
    /// (Q4_K's repacked GEMM, Q6_K's tiled matmul), where this ISA has one.
    pub(crate) fn k_panel(&self, t: QuantType, quad_id: u8) -> Option<KPanelFn> {
        match (t, quad_id) {
            (QuantType::Q4_K, 2) => self.q4_k_panel,
            (QuantType::Q6_K, 3) => self.q6_k_panel,
            _ => None,
        }
    }

    /// Whether products with `t` read stream panels (`crate::stream_panels`) when a matrix
    /// has them: a model loader repacks its weights only then.
    pub fn uses_stream_panels(&self, t: QuantType) -> bool {
        self.tile_kernels(t).is_some()
    }

    /// The register-tiled kernels for `t`, where this ISA has them.
    pub(crate) fn tile_kernels(&self, t: QuantType) -> Option<&TileKernels> {
        self.tiles[slot(t)].as_ref()
    }

    /// The four-row kernel for `t`, where one exists. Only formats whose per-row kernel is the
    /// same for every activation row (`matrix_dot_fn` returns `dot_fn(t)`) get one.
    pub(crate) fn quad_fn(&self, t: QuantType) -> Option<Dot4Fn> {
        self.quads[slot(t)]
    }

    pub(crate) fn dot_fn(&self, t: QuantType) -> Result<DotFn> {
        self.dots[slot(t)].ok_or_else(|| {
            Error::Unsupported(format!(
                "no dot product for {t} weights (activation-only type)"
            ))
        })
    }

    /// `y[i] = f16(f32(y[i]) + f32(x[i])·v)`: an f16 accumulator step (ggml's `vec_mad_f16`).
    pub fn mad_f16(&self, y: &mut [u16], x: &[u8], v: f32) -> Result<()> {
        if x.len() != 2 * y.len() {
            return Err(Error::Shape(format!(
                "mad_f16: {} halves vs {} bytes",
                y.len(),
                x.len()
            )));
        }
        (self.mad_f16)(y, x, v);
        Ok(())
    }

    /// `gate[i] = silu(gate[i]) · up[i]` with ggml's polynomial exp ([`crate::compat::swiglu`]).
    pub fn swiglu(&self, gate: &mut [f32], up: &[f32]) -> Result<()> {
        glu("swiglu", self.swiglu, gate, up)
    }

    /// `gate[i] = gelu(gate[i]) · up[i]` with ggml's f16 GELU table ([`crate::compat::geglu`]).
    pub fn geglu(&self, gate: &mut [f32], up: &[f32]) -> Result<()> {
        glu("geglu", self.geglu, gate, up)
    }

    /// `x[i] = expf(x[i])` for every element, bit-identical to libm's `expf` (a vector path
    /// where one reproduces this platform's libm exactly, libm itself otherwise).
    pub fn expf(&self, x: &mut [f32]) {
        (self.expf)(x)
    }

    /// `out[j]` = the F16 dot kernel of key row j (of `q.len()` halves) with the query `q`, for
    /// the `out.len()` keys in `keys`, bit-identical to calling it key by key. Returns false
    /// (having done nothing) when this ISA has no block version for this head size.
    pub fn attn_scores_f16(&self, q: &[u16], keys: &[u8], out: &mut [f32]) -> bool {
        self.attn_scores_f16_group(&[q], keys, &mut [out])
    }

    /// `out[j]` = the Q8_0 dot kernel of key row j with the Q8_0 query `q8` (head size `d`),
    /// for the `out.len()` keys in `keys`, bit-identical to calling it key by key. Returns false
    /// (having done nothing) when this ISA has no block version or the sizes disagree.
    pub fn attn_scores_q8_0(&self, q8: &[u8], keys: &[u8], d: usize, out: &mut [f32]) -> bool {
        let row = d / 32 * 34;
        if !d.is_multiple_of(32) || q8.len() != row || keys.len() != row * out.len() {
            return false;
        }
        (self.attn_scores_q8)(q8, keys, d, out)
    }

    /// The value accumulation of 1–4 queries with f32 accumulators (`acc[g]`, the columns
    /// starting at element `col0`, a whole number of 32-element blocks) over the Q8_0 value
    /// rows `values` (`row` bytes each, `e[g].len()` of them): per key j, when `raised[g][j]`
    /// the accumulator is scaled by `e[g][j]` and the dequantized value added with weight 1,
    /// else added with weight `e[g][j]` — bit-identical to that loop key by key with the
    /// `mad_q8_0` step. Returns false (having done nothing) when this ISA has no block version
    /// or the shapes disagree.
    pub fn attn_values_q8_0_group(
        &self,
        acc: &mut [&mut [f32]],
        values: &[u8],
        row: usize,
        col0: usize,
        e: &[&[f32]],
        raised: &[&[bool]],
    ) -> bool {
        let w = acc.first().map_or(0, |a| a.len());
        let n = e.first().map_or(0, |e| e.len());
        let g = acc.len();
        if !(1..=4).contains(&g)
            || e.len() != g
            || raised.len() != g
            || acc.iter().any(|a| a.len() != w)
            || e.iter()
                .zip(raised)
                .any(|(e, r)| e.len() != n || r.len() != n)
            || w == 0
            || !w.is_multiple_of(32)
            || !col0.is_multiple_of(32)
            || (col0 + w) / 32 * 34 > row
            || values.len() < n * row
        {
            return false;
        }
        (self.attn_values_q8)(acc, values, row, col0, e, raised)
    }

    /// [`attn_scores_f16`](Self::attn_scores_f16) for 1–4 queries of the same size against the
    /// same keys (the query heads of one grouped-query KV head), each key widened once for all
    /// of them; every score bit-identical to the single-query call. Returns false (having done
    /// nothing) when this ISA has no block version for this head size or group.
    pub fn attn_scores_f16_group(&self, q: &[&[u16]], keys: &[u8], out: &mut [&mut [f32]]) -> bool {
        let d = q.first().map_or(0, |q| q.len());
        let n = out.first().map_or(0, |o| o.len());
        if !(1..=4).contains(&q.len())
            || out.len() != q.len()
            || q.iter().any(|q| q.len() != d)
            || out.iter().any(|o| o.len() != n)
            || keys.len() != 2 * d * n
        {
            return false;
        }
        (self.attn_scores)(q, keys, out)
    }

    /// [`attn_values_f16`](Self::attn_values_f16) for 1–4 accumulators (one per query of a
    /// grouped-query head) over the same values, `e[g]` and `raised[g]` belonging to `acc[g]`,
    /// each accumulator holding columns `col0..col0 + acc[g].len()` of value rows of `row`
    /// halves (a whole head, or a slice of it: every column's f16 chain is independent of the
    /// others). Each accumulator ends exactly as `attn_values_f16` would leave those columns.
    /// Returns false (having done nothing) when this ISA has no version for this shape.
    pub fn attn_values_f16_group(
        &self,
        acc: &mut [&mut [u16]],
        values: &[u8],
        row: usize,
        col0: usize,
        e: &[&[f32]],
        raised: &[&[bool]],
    ) -> bool {
        (self.attn_values_group)(acc, values, row, col0, e, raised)
    }

    /// Attention's value accumulation over a block of keys into the f16 accumulator `acc`: per
    /// key j, if `raised[j]` rescale `acc` by `e[j]` (skipped when 1) and add value row j, else
    /// add value row j times `e[j]`, rounding to f16 after each step exactly as
    /// [`scale_f16`](Self::scale_f16) and [`mad_f16`](Self::mad_f16) do. Returns false (having
    /// done nothing) when this ISA has no fused version for this head size.
    pub fn attn_values_f16(
        &self,
        acc: &mut [u16],
        values: &[u8],
        e: &[f32],
        raised: &[bool],
    ) -> bool {
        if e.len() != raised.len() || values.len() != 2 * acc.len() * e.len() {
            return false;
        }
        (self.attn_values)(acc, values, e, raised)
    }

    /// `y[i] = f16(f32(y[i])·v)`.
    pub fn scale_f16(&self, y: &mut [u16], v: f32) {
        (self.scale_f16)(y, v)
    }

    /// The row kernel for a matrix of `rows` rows of `t`, applied to activation row `i` of `m`.
    ///
    /// llama.cpp's x86 CPU backend picks among several K-quant kernels with different float
    /// arithmetic, and greedy decoding is sensitive to the last bit; ferrite picks the same
    /// arithmetic in the same situations so outputs agree:
    /// - Q4_K with a row count divisible by 8 is repacked: its GEMM for activation rows in
    ///   whole groups of four, its GEMV for the rest;
    /// - other Q4_K, and Q5_K / Q6_K, go through the tiled matmul in batches of 8+ rows;
    /// - everything else uses the per-row `vec_dot` arithmetic.
    pub(crate) fn matrix_dot_fn(
        &self,
        t: QuantType,
        rows: usize,
        i: usize,
        m: usize,
    ) -> Result<DotFn> {
        match t {
            QuantType::Q4_K if rows.is_multiple_of(8) => {
                return Ok(if i < m - m % 4 {
                    self.q4_k_rp4
                } else {
                    self.q4_k_rp
                });
            }
            QuantType::Q4_K if m >= 8 => return Ok(self.q4_k_tl),
            QuantType::Q5_K if m >= 8 => return Ok(self.q5_k_tl),
            QuantType::Q6_K if m >= 8 => return Ok(self.q6_k_tl),
            _ => {}
        }
        self.dot_fn(t)
    }

    /// [`Kernels::dot`] for row `i` of `m` activation rows against a matrix of `rows` rows (see
    /// `matrix_dot_fn`).
    pub fn matrix_row_dot(
        &self,
        t: QuantType,
        (rows, i, m): (usize, usize, usize),
        n: usize,
        w: &[u8],
        a: &[u8],
    ) -> Result<f32> {
        check_row(t, n, w, a)?;
        Ok(self.matrix_dot_fn(t, rows, i, m)?(n, w, a))
    }

    /// Dot product of one weight row (`n` elements of `t`) with activations already quantized to
    /// `t.activation_type()`.
    pub fn dot(&self, t: QuantType, n: usize, w: &[u8], a: &[u8]) -> Result<f32> {
        check_row(t, n, w, a)?;
        Ok(self.dot_fn(t)?(n, w, a))
    }
}

/// Check that `w` and `a` are exactly one row of `n` elements of `t` and its activation type.
#[inline]
pub(crate) fn check_row(t: QuantType, n: usize, w: &[u8], a: &[u8]) -> Result<()> {
    let (wn, an) = (t.row_bytes(n)?, t.activation_type().row_bytes(n)?);
    if w.len() != wn || a.len() != an {
        return Err(Error::Shape(format!(
            "{t} dot of {n} elements needs {wn} weight and {an} activation bytes, got {} and {}",
            w.len(),
            a.len()
        )));
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Safe entry points over the x86 kernels. Each asserts the row lengths (cheap, once per
    //! row) so that no caller can make a kernel read out of bounds, and is only installed into a
    //! table whose ISA the CPU was checked to support.
    use super::{Dot4Fn, DotFn, Kernels, TileKernels};
    use crate::arch::x86_64::qtile::{self, unsigned_offset};
    use crate::arch::x86_64::{act, fdot};
    use crate::arch::x86_64::{qpanel, qstream};
    use crate::quant::QuantType;
    use crate::Isa;

    macro_rules! entry {
        ($name:ident, $kernel:path, $t:expr) => {
            pub(super) fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
                assert!(
                    crate::dot::check_row($t, n, w, a).is_ok(),
                    "invariant: row lengths checked by the caller"
                );
                // SAFETY: lengths were just checked, and this entry is only reachable through a
                // `Kernels` table whose ISA `Isa::require` confirmed on this CPU.
                unsafe { $kernel(n, w.as_ptr(), a.as_ptr()) }
            }
        };
    }

    macro_rules! entry4 {
        // `$wb` / `$ab`: bytes per 32-element block of weights / activations. The length check
        // is a few multiplications, since this runs once per weight row of a batch.
        ($name:ident, $kernel:path, $wb:expr, $ab:expr) => {
            pub(super) fn $name(n: usize, w: &[u8], a: [&[u8]; 4], sc: &[f32]) -> [f32; 4] {
                let nb = n / 32;
                assert!(
                    n % 32 == 0
                        && w.len() == nb * $wb
                        && a.iter().all(|a| a.len() == nb * $ab)
                        && sc.len() == 8 * nb,
                    "invariant: row lengths checked by the caller"
                );
                // SAFETY: lengths were just checked for all four rows, and this entry is only
                // reachable through a `Kernels` table whose ISA was confirmed on this CPU.
                unsafe {
                    $kernel(
                        n,
                        w.as_ptr(),
                        [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()],
                        sc.as_ptr(),
                    )
                }
            }
        };
    }

    macro_rules! entry4k {
        // K-quant four-row kernels: `$wb` bytes per 256-element weight block, Q8_K activations
        // (292 bytes per block); they take no f32 scales.
        ($name:ident, $kernel:path, $wb:expr) => {
            pub(super) fn $name(n: usize, w: &[u8], a: [&[u8]; 4], _sc: &[f32]) -> [f32; 4] {
                let nb = n / 256;
                assert!(
                    n % 256 == 0 && w.len() == nb * $wb && a.iter().all(|a| a.len() == nb * 292),
                    "invariant: row lengths checked by the caller"
                );
                // SAFETY: lengths were just checked for all four rows, and this entry is only
                // reachable through a `Kernels` table whose ISA was confirmed on this CPU.
                unsafe {
                    $kernel(
                        n,
                        w.as_ptr(),
                        [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()],
                        std::ptr::null(),
                    )
                }
            }
        };
    }

    macro_rules! fp4_entries {
        ($modname:ident, $m:ident) => {
            mod $modname {
                use crate::arch::x86_64::fp4dot;
                use crate::quant::QuantType;
                entry!(mxfp4, fp4dot::$m::mxfp4_q8_0, QuantType::MXFP4);
                entry!(nvfp4, fp4dot::$m::nvfp4_q8_0, QuantType::NVFP4);
                entry4!(mxfp4_x4, fp4dot::$m::mxfp4_q8_0_x4, 17, 34);
                // NVFP4: 36 bytes per 64 elements, i.e. 18 per 32. The kernel reads only whole
                // 64-element blocks (n / 64 of them), which lie within the checked lengths.
                entry4!(nvfp4_x4, fp4dot::$m::nvfp4_q8_0_x4, 18, 34);
                pub(super) const TABLE: [(QuantType, super::DotFn, super::Dot4Fn); 2] = [
                    (QuantType::MXFP4, mxfp4, mxfp4_x4),
                    (QuantType::NVFP4, nvfp4, nvfp4_x4),
                ];
            }
        };
    }
    fp4_entries!(fp4_avx2, avx2);
    fp4_entries!(fp4_vnni, vnni);

    entry!(f32_avx2, fdot::f32_avx2, QuantType::F32);
    entry!(f16_avx2, fdot::f16_avx2, QuantType::F16);
    entry!(bf16_avx2, fdot::bf16_avx2, QuantType::BF16);
    entry!(f32_avx512, fdot::f32_avx512, QuantType::F32);
    entry!(f16_avx512, fdot::f16_avx512, QuantType::F16);
    entry!(bf16_avx512, fdot::bf16_avx512, QuantType::BF16);

    macro_rules! quant_entries {
        ($m:ident) => {
            mod $m {
                use crate::arch::x86_64::qdot;
                use crate::quant::QuantType;
                entry!(q4_0, qdot::$m::q4_0_q8_0, QuantType::Q4_0);
                entry!(q4_1, qdot::$m::q4_1_q8_1, QuantType::Q4_1);
                entry!(q5_0, qdot::$m::q5_0_q8_0, QuantType::Q5_0);
                entry!(q5_1, qdot::$m::q5_1_q8_1, QuantType::Q5_1);
                entry!(q8_0, qdot::$m::q8_0_q8_0, QuantType::Q8_0);
                entry!(q4_k, qdot::$m::q4_k_q8_k, QuantType::Q4_K);
                entry!(q5_k, qdot::$m::q5_k_q8_k, QuantType::Q5_K);
                entry!(q6_k, qdot::$m::q6_k_q8_k, QuantType::Q6_K);
                entry!(q4_k_rp, qdot::$m::q4_k_q8_k_rp, QuantType::Q4_K);
                entry!(q4_k_rp4, qdot::$m::q4_k_q8_k_rp4, QuantType::Q4_K);
                entry!(q4_k_tl, qdot::$m::q4_k_q8_k_tl, QuantType::Q4_K);
                entry!(q5_k_tl, qdot::$m::q5_k_q8_k_tl, QuantType::Q5_K);
                entry!(q6_k_tl, qdot::$m::q6_k_q8_k_tl, QuantType::Q6_K);
                entry4!(q4_0_x4, qdot::$m::q4_0_q8_0_x4, 18, 34);
                entry4!(q4_1_x4, qdot::$m::q4_1_q8_1_x4, 20, 36);
                entry4!(q5_0_x4, qdot::$m::q5_0_q8_0_x4, 22, 34);
                entry4!(q5_1_x4, qdot::$m::q5_1_q8_1_x4, 24, 36);
                entry4!(q8_0_x4, qdot::$m::q8_0_q8_0_x4, 34, 34);
                entry4k!(q4_k_rp4_x4, qdot::$m::q4_k_q8_k_rp4_x4, 144);
                entry4k!(q6_k_tl_x4, qdot::$m::q6_k_q8_k_tl_x4, 210);
                pub(super) const QUADS: [(QuantType, super::Dot4Fn); 5] = [
                    (QuantType::Q4_0, q4_0_x4),
                    (QuantType::Q4_1, q4_1_x4),
                    (QuantType::Q5_0, q5_0_x4),
                    (QuantType::Q5_1, q5_1_x4),
                    (QuantType::Q8_0, q8_0_x4),
                ];
                pub(super) const TABLE: [(QuantType, super::DotFn); 8] = [
                    (QuantType::Q4_0, q4_0),
                    (QuantType::Q4_1, q4_1),
                    (QuantType::Q5_0, q5_0),
                    (QuantType::Q5_1, q5_1),
                    (QuantType::Q8_0, q8_0),
                    (QuantType::Q4_K, q4_k),
                    (QuantType::Q5_K, q5_k),
                    (QuantType::Q6_K, q6_k),
                ];
            }
        };
    }
    quant_entries!(avx2);
    quant_entries!(vnni);

    fn tiles<const F: u8>() -> TileKernels {
        TileKernels {
            offset: unsigned_offset(F),
            pack_row: qtile::pack_row,
            rows: [
                qtile::rows::<F, 4, 1>,
                qtile::rows::<F, 4, 2>,
                qtile::rows::<F, 3, 3>,
                qtile::rows::<F, 3, 4>,
                // Five to eight rows: two streams, 2·RA accumulators in registers.
                qtile::rows::<F, 2, 5>,
                qtile::rows::<F, 2, 6>,
                qtile::rows::<F, 2, 7>,
                qtile::rows::<F, 2, 8>,
            ],
            pack_panel: qpanel::pack_panel::<F>,
            panel: if qtile::has_min(F) {
                panels::<true>()
            } else {
                panels::<false>()
            },
            stream: [qstream::stream_panel::<F, 1>, qstream::stream_panel::<F, 2>],
            unpack_stream: qstream::unpack_stream_panel::<F>,
        }
    }

    fn panels<const MIN: bool>() -> [super::PanelFn; 2] {
        [qpanel::panel::<MIN, 1>, qpanel::panel::<MIN, 2>]
    }

    fn mad_f16(y: &mut [u16], x: &[u8], v: f32) {
        assert!(
            x.len() == 2 * y.len(),
            "invariant: lengths checked by the caller"
        );
        // SAFETY: x holds y.len() halves; this entry is only installed for AVX2-capable ISAs.
        unsafe { fdot::mad_f16_avx2(y.len(), y.as_mut_ptr(), x.as_ptr() as *const u16, v) }
    }

    fn scale_f16(y: &mut [u16], v: f32) {
        // SAFETY: as for mad_f16.
        unsafe { fdot::scale_f16_avx2(y.len(), y.as_mut_ptr(), v) }
    }

    fn mad_q8_0(ys: &mut [&mut [f32]], x: &[u8], vs: &[f32]) {
        let n = ys.first().map_or(0, |y| y.len());
        assert!(
            n.is_multiple_of(32)
                && x.len() >= n / 32 * 34
                && vs.len() == ys.len()
                && ys.len() <= 8
                && ys.iter().all(|y| y.len() == n),
            "invariant: lengths checked by the caller"
        );
        let mut ptrs = [std::ptr::null_mut(); 8];
        for (p, y) in ptrs.iter_mut().zip(ys.iter_mut()) {
            *p = y.as_mut_ptr();
        }
        // SAFETY: every accumulator holds n floats, x their n / 32 blocks (asserted); this
        // entry is only installed for AVX2-capable ISAs.
        unsafe { fdot::mad_q8_0_avx2(n, &ptrs[..ys.len()], x.as_ptr(), vs) }
    }

    fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
        assert!(
            gate.len() == up.len(),
            "invariant: lengths checked by the caller"
        );
        // SAFETY: equal lengths; installed only for AVX2-capable ISAs (AVX2 implies FMA here).
        unsafe { act::swiglu_avx2(gate.len(), gate.as_mut_ptr(), up.as_ptr()) }
    }

    fn attn_values_avx512(acc: &mut [u16], values: &[u8], e: &[f32], raised: &[bool]) -> bool {
        let (d, n) = (acc.len(), e.len());
        if raised.len() != n || values.len() != 2 * d * n {
            return false;
        }
        let (a, v) = (acc.as_mut_ptr(), values.as_ptr() as *const u16);
        let (e, r) = (e.as_ptr(), raised.as_ptr());
        // SAFETY: lengths checked just above (a head of d = 16·C halves, n value rows of d
        // halves, n weights and flags); installed only for the AVX-512 ISA.
        unsafe {
            match d {
                64 => fdot::attn_values_f16_avx512::<4>(a, v, n, e, r),
                128 => fdot::attn_values_f16_avx512::<8>(a, v, n, e, r),
                256 => fdot::attn_values_f16_avx512::<16>(a, v, n, e, r),
                _ => return false,
            }
        }
        true
    }

    /// The first `G` of four per-query pointers (the group kernels take exactly `G`).
    fn first<T: Copy, const G: usize>(a: [T; 4]) -> [T; G] {
        std::array::from_fn(|i| a[i])
    }

    /// `$call` with the constant `$G` set to the group size `$g` (1 to 4; more counts as 4):
    /// the grouped attention kernels are generic in it, and their per-query pointer arrays
    /// come from [`first`].
    macro_rules! by_group {
        ($g:expr, $G:ident => $call:expr) => {
            match $g {
                1 => {
                    const $G: usize = 1;
                    $call
                }
                2 => {
                    const $G: usize = 2;
                    $call
                }
                3 => {
                    const $G: usize = 3;
                    $call
                }
                _ => {
                    const $G: usize = 4;
                    $call
                }
            }
        };
    }

    fn attn_scores_q8_vnni(q8: &[u8], keys: &[u8], d: usize, out: &mut [f32]) -> bool {
        let (nb, row) = (d / 32, d / 32 * 34);
        if nb > 8 {
            return false;
        }
        assert!(
            q8.len() == row && keys.len() == row * out.len(),
            "invariant: shapes checked by Kernels::attn_scores_q8_0"
        );
        // SAFETY: the query and every key row are nb ≤ 8 Q8_0 blocks (asserted); installed
        // only for the AVX-512 VNNI ISA.
        unsafe {
            crate::arch::x86_64::q8attn::scores_q8_0(nb, q8.as_ptr(), keys.as_ptr(), row, out)
        };
        true
    }

    fn attn_values_q8_avx512(
        acc: &mut [&mut [f32]],
        values: &[u8],
        row: usize,
        col0: usize,
        e: &[&[f32]],
        raised: &[&[bool]],
    ) -> bool {
        use crate::arch::x86_64::q8attn::values_q8_0_group;
        // Shapes checked by `Kernels::attn_values_q8_0_group`: 1–4 accumulators of w floats
        // (whole blocks), n rows of `row` bytes holding the columns col0..col0 + w, n weights
        // each.
        let g = acc.len();
        let (w, n) = (acc[0].len(), e[0].len());
        let vp = values.as_ptr();
        let ep: [*const f32; 4] = std::array::from_fn(|i| e[i.min(g - 1)].as_ptr());
        let rp: [*const bool; 4] = std::array::from_fn(|i| raised[i.min(g - 1)].as_ptr());
        /// One (blocks, group size) instance over columns c0.. of the accumulators.
        macro_rules! slice {
            ($c:literal, $c0:expr) => {{
                let c0 = $c0;
                let ap: [*mut f32; 4] =
                    std::array::from_fn(|i| acc[i.min(g - 1)][c0..].as_mut_ptr());
                let cb = (col0 + c0) / 32 * 34;
                by_group!(g, G => values_q8_0_group::<$c, G>(
                    first(ap),
                    vp,
                    row,
                    cb,
                    n,
                    first(ep),
                    first(rp)
                ))
            }};
        }
        let mut c0 = 0;
        // SAFETY: each slice's blocks lie inside every accumulator (whole blocks, w − c0 ≥ 32
        // per block taken) and inside the rows (the caller's shape check: (col0 + w) / 32 · 34
        // ≤ row), distinct accumulators; installed only for the AVX-512 ISA. 64 columns at a
        // time (two blocks: G·4 accumulators in registers), a last 32 if any.
        unsafe {
            while c0 + 64 <= w {
                slice!(2, c0);
                c0 += 64;
            }
            if c0 < w {
                slice!(1, c0);
            }
        }
        true
    }

    fn attn_scores_avx512(q: &[&[u16]], keys: &[u8], out: &mut [&mut [f32]]) -> bool {
        // Shapes checked by `Kernels::attn_scores_f16_group`: 1–4 queries of d halves, n key
        // rows of d halves, n outputs per query.
        let (g, d) = (q.len(), q.first().map_or(0, |q| q.len()));
        let n = out.first().map_or(0, |o| o.len());
        let qp: [*const u8; 4] = std::array::from_fn(|i| q[i.min(g - 1)].as_ptr() as *const u8);
        let op: [*mut f32; 4] = std::array::from_fn(|i| out[i.min(g - 1)].as_mut_ptr());
        let k = keys.as_ptr();
        /// One (head size, group size) instance.
        macro_rules! scores {
            ($c:literal) => {
                by_group!(g, G => fdot::attn_scores_f16_group_avx512::<$c, G>(
                    first(qp),
                    k,
                    n,
                    first(op)
                ))
            };
        }
        // SAFETY: shapes as above (each query d = 64·C halves, n key rows of d halves, n
        // outputs per query, distinct output slices); installed only for the AVX-512 ISA.
        unsafe {
            match d {
                64 => scores!(1),
                128 => scores!(2),
                256 => scores!(4),
                _ => return false,
            }
        }
        true
    }

    fn attn_values_group_avx512(
        acc: &mut [&mut [u16]],
        values: &[u8],
        row: usize,
        col0: usize,
        e: &[&[f32]],
        raised: &[&[bool]],
    ) -> bool {
        let g = acc.len();
        let width = acc.first().map_or(0, |a| a.len());
        let n = e.first().map_or(0, |e| e.len());
        // Widths of whole 32-column slices, done 64 columns at a time (4 queries × 4 chunks
        // fill the registers) and a last 32 if any.
        if width == 0
            || !width.is_multiple_of(32)
            || col0 + width > row
            || !(1..=4).contains(&g)
            || e.len() != g
            || raised.len() != g
            || acc.iter().any(|a| a.len() != width)
            || e.iter().any(|x| x.len() != n)
            || raised.iter().any(|r| r.len() != n)
            || values.len() != 2 * row * n
        {
            return false;
        }
        let v = values.as_ptr() as *const u16;
        let es: [*const f32; 4] = std::array::from_fn(|i| e[i.min(g - 1)].as_ptr());
        let rs: [*const bool; 4] = std::array::from_fn(|i| raised[i.min(g - 1)].as_ptr());
        /// One (chunks, group size) instance over columns s.. of the accumulators.
        macro_rules! slice {
            ($c:literal, $s:expr) => {{
                let s = $s;
                let at: [*mut u16; 4] =
                    std::array::from_fn(|i| acc[i.min(g - 1)][s..].as_mut_ptr());
                let vs = v.add(col0 + s);
                by_group!(g, G => fdot::attn_values_f16_group_avx512::<$c, G>(
                    first(at),
                    vs,
                    row,
                    n,
                    first(es),
                    first(rs)
                ))
            }};
        }
        let mut s = 0;
        // SAFETY: shapes checked just above (g accumulators of `width` halves, n value rows of
        // `row` halves with columns col0..col0 + width inside, n weights and flags per
        // accumulator): each slice's columns are in bounds, rows `row` apart; installed only for
        // the AVX-512 ISA.
        unsafe {
            while s + 64 <= width {
                slice!(4, s);
                s += 64;
            }
            if s < width {
                slice!(2, s);
            }
        }
        true
    }

    fn expf_avx512(x: &mut [f32]) {
        // SAFETY: installed only for the AVX-512 ISA (which includes AVX2 and FMA).
        unsafe { crate::arch::x86_64::libm_expf::expf_avx512(x) }
    }

    /// Whether the vector `expf` equals this platform's libm on a spread of arguments (it
    /// reproduces glibc's FMA build; another libm may round differently). Checked once per
    /// process, not per kernel table.
    fn expf_matches_libm() -> bool {
        static MATCHES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *MATCHES.get_or_init(expf_probe_matches)
    }

    fn expf_probe_matches() -> bool {
        let mut probe: Vec<f32> = (0..4096)
            .map(|i| -104.0 + 193.0 * (i as f32) / 4096.0 + (i % 7) as f32 * 1e-3)
            .chain([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 88.7, -87.9])
            .collect();
        let want: Vec<f32> = probe.iter().map(|v| v.exp()).collect();
        expf_avx512(&mut probe);
        probe
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    }

    fn geglu_avx512(gate: &mut [f32], up: &[f32]) {
        // SAFETY: installed only for the AVX-512 ISA (F, BW, VL and F16C); the kernel checks the
        // lengths and the table.
        unsafe { act::geglu_avx512(gate, up, crate::compat::gelu_table()) }
    }

    fn swiglu_avx512(gate: &mut [f32], up: &[f32]) {
        assert!(
            gate.len() == up.len(),
            "invariant: lengths checked by the caller"
        );
        // SAFETY: equal lengths; installed only for the AVX-512 ISA.
        unsafe { act::swiglu_avx512(gate.len(), gate.as_mut_ptr(), up.as_ptr()) }
    }

    fn mad_f16_512(y: &mut [u16], x: &[u8], v: f32) {
        assert!(
            x.len() == 2 * y.len(),
            "invariant: lengths checked by the caller"
        );
        // SAFETY: x holds y.len() halves; this entry is only installed for the AVX-512 ISA.
        unsafe { fdot::mad_f16_avx512(y.len(), y.as_mut_ptr(), x.as_ptr() as *const u16, v) }
    }

    fn scale_f16_512(y: &mut [u16], v: f32) {
        // SAFETY: as for mad_f16_512.
        unsafe { fdot::scale_f16_avx512(y.len(), y.as_mut_ptr(), v) }
    }

    pub(super) fn install(k: &mut Kernels) {
        match k.isa {
            Isa::Avx512 => {
                k.mad_f16 = mad_f16_512;
                k.scale_f16 = scale_f16_512;
                k.mad_q8_0 = mad_q8_0;
            }
            Isa::Avx2 => {
                k.mad_f16 = mad_f16;
                k.scale_f16 = scale_f16;
                k.mad_q8_0 = mad_q8_0;
            }
            _ => {}
        }
        if k.isa == Isa::Avx512 && expf_matches_libm() {
            k.expf = expf_avx512;
        }
        if k.isa == Isa::Avx512 {
            k.attn_values = attn_values_avx512;
            k.attn_scores = attn_scores_avx512;
            k.attn_scores_q8 = attn_scores_q8_vnni;
            k.attn_values_q8 = attn_values_q8_avx512;
            k.attn_values_group = attn_values_group_avx512;
        }
        if k.isa == Isa::Avx512 {
            k.geglu = geglu_avx512;
        }
        k.swiglu = match k.isa {
            Isa::Avx512 => swiglu_avx512,
            Isa::Avx2 => swiglu_avx2,
            _ => k.swiglu,
        };
        match k.isa {
            Isa::Avx2 => {
                k.set(QuantType::F32, f32_avx2);
                k.set(QuantType::F16, f16_avx2);
                k.set(QuantType::BF16, bf16_avx2);
                for (t, f) in avx2::TABLE {
                    k.set(t, f);
                }
                for (t, f) in avx2::QUADS {
                    k.set_quad(t, f);
                }
                for (t, f, f4) in fp4_avx2::TABLE {
                    k.set(t, f);
                    k.set_quad(t, f4);
                }
                k.q4_k_rp4_x4 = Some(avx2::q4_k_rp4_x4);
                k.q6_k_tl_x4 = Some(avx2::q6_k_tl_x4);
                k.q4_k_rp = avx2::q4_k_rp;
                k.q4_k_rp4 = avx2::q4_k_rp4;
                k.q4_k_tl = avx2::q4_k_tl;
                k.q5_k_tl = avx2::q5_k_tl;
                k.q6_k_tl = avx2::q6_k_tl;
            }
            Isa::Avx512 => {
                k.set(QuantType::F32, f32_avx512);
                k.set(QuantType::F16, f16_avx512);
                k.set(QuantType::BF16, bf16_avx512);
                for (t, f) in vnni::TABLE {
                    k.set(t, f);
                }
                for (t, f) in vnni::QUADS {
                    k.set_quad(t, f);
                }
                for (t, f, f4) in fp4_vnni::TABLE {
                    k.set(t, f);
                    k.set_quad(t, f4);
                }
                for (t, tk) in [
                    (QuantType::Q4_0, tiles::<{ qtile::Q4_0 }>()),
                    (QuantType::Q4_1, tiles::<{ qtile::Q4_1 }>()),
                    (QuantType::Q5_0, tiles::<{ qtile::Q5_0 }>()),
                    (QuantType::Q5_1, tiles::<{ qtile::Q5_1 }>()),
                    (QuantType::Q8_0, tiles::<{ qtile::Q8_0 }>()),
                ] {
                    k.tiles[super::slot(t)] = Some(tk);
                }
                k.q4_k_rp4_x4 = Some(vnni::q4_k_rp4_x4);
                k.q4_k_panel = Some(qpanel::panel_q4k);
                k.q6_k_panel = Some(qpanel::panel_q6k);
                k.q6_k_tl_x4 = Some(vnni::q6_k_tl_x4);
                k.q4_k_rp = vnni::q4_k_rp;
                k.q4_k_rp4 = vnni::q4_k_rp4;
                k.q4_k_tl = vnni::q4_k_tl;
                k.q5_k_tl = vnni::q5_k_tl;
                k.q6_k_tl = vnni::q6_k_tl;
            }
            Isa::Scalar | Isa::Neon => {}
        }
    }
}
