//! The CPU side of a forward pass: kernels table, thread pool and the layer operations both
//! architectures share (embedding lookup, linear layers, RoPE, attention over the KV store).

use std::sync::Arc;

use ferrite_kernels::ops::{
    self, add_assign, rope_angles, rope_apply, AttentionAccumulator, AttnAccum, RopeStyle,
};
use ferrite_kernels::{Kernels, KvFormat, ThreadPool};

use crate::kv::KvStore;
use crate::scratch::Scratch;
use crate::weights::{load_vector, Linear};
use crate::{Error, ForwardBatch, Result};

/// Observer of intermediate tensors: `(name, layer, values)`; for debugging numerics against
/// another implementation (llama.cpp's `llama-eval-callback` prints the same names).
pub type TraceFn = Arc<dyn Fn(&str, usize, &[f32]) + Send + Sync>;

/// Kernels and threads a CPU model computes with.
#[derive(Clone)]
pub struct Cpu {
    /// Kernel table (its ISA chosen at load).
    pub kernels: Kernels,
    /// Persistent worker threads.
    pub pool: Arc<ThreadPool>,
    /// How attention accumulates values (f16 like llama.cpp by default).
    pub attn_accum: AttnAccum,
    /// How KV caches made for this model store rows (f16 by default; attention reads whatever
    /// format the cache it is given has).
    pub kv_format: KvFormat,
    /// Optional observer of intermediate tensors.
    pub trace: Option<TraceFn>,
}

impl std::fmt::Debug for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cpu")
            .field("kernels", &self.kernels)
            .field("pool", &self.pool)
            .field("attn_accum", &self.attn_accum)
            .field("kv_format", &self.kv_format)
            .finish()
    }
}

impl Cpu {
    /// Kernels for `isa` (or the best available) on a pool of `threads`.
    pub fn new(kernels: Kernels, threads: usize) -> Cpu {
        Cpu {
            kernels,
            pool: Arc::new(ThreadPool::new(threads)),
            attn_accum: AttnAccum::default(),
            kv_format: KvFormat::default(),
            trace: None,
        }
    }

    /// The same kernels and settings on a pool of one (its products run inline on the calling
    /// thread): for work spread over the pool's threads a level up. No trace observer.
    pub fn serial(&self) -> Cpu {
        Cpu {
            kernels: self.kernels,
            pool: Arc::new(ThreadPool::new(1)),
            attn_accum: self.attn_accum,
            kv_format: self.kv_format,
            trace: None,
        }
    }

    /// Report an intermediate tensor to the trace observer, if any.
    #[inline]
    pub fn trace(&self, name: &str, layer: usize, x: &[f32]) {
        if let Some(t) = &self.trace {
            t(name, layer, x);
        }
    }

    /// `y = x · Wᵀ` for `m` rows; `scratch` keeps the quantized activations.
    pub fn linear(
        &self,
        w: &Linear,
        x: &[f32],
        m: usize,
        y: &mut Vec<f32>,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        self.linear_grouped(w, x, m, None, y, scratch)
    }

    /// [`linear`](Self::linear) with per-row kernel groups (see [`ForwardBatch::kernel_groups`]).
    pub fn linear_grouped(
        &self,
        w: &Linear,
        x: &[f32],
        m: usize,
        groups: Option<&[(usize, usize)]>,
        y: &mut Vec<f32>,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        self.linear_many([w], x, m, groups, [y], scratch)
    }

    /// Several linear layers of the same input (`ys[j] = x · W_jᵀ`), the activations quantized
    /// once and the products run in one pass where the weights allow (see
    /// `ferrite_kernels::matmul_many`); results equal separate [`linear_grouped`] calls.
    ///
    /// [`linear_grouped`]: Self::linear_grouped
    pub fn linear_many<const N: usize>(
        &self,
        ws: [&Linear; N],
        x: &[f32],
        m: usize,
        groups: Option<&[(usize, usize)]>,
        ys: [&mut Vec<f32>; N],
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        let mats = ws.map(|w| w.matrix());
        let mut outs = ys;
        for (w, y) in ws.iter().zip(outs.iter_mut()) {
            y.resize(m * w.rows, 0.0);
        }
        let mut outs = outs.map(|y| y.as_mut_slice());
        ferrite_kernels::matmul_many(
            &self.kernels,
            &self.pool,
            &mats,
            x,
            m,
            groups,
            &mut outs,
            scratch,
        )
        .map_err(Error::Kernel)?;
        // The second-level scale multiplies the product, as llama.cpp's `ggml_mul` after the
        // matmul does; then the bias is added.
        for (w, y) in ws.iter().zip(outs) {
            if let Some(s) = w.scale {
                y.iter_mut().for_each(|v| *v *= s);
            }
            if let Some(b) = &w.bias {
                for row in y.chunks_exact_mut(w.rows) {
                    add_assign(row, b);
                }
            }
        }
        Ok(())
    }

    /// Call `f(r, row)` for every `width`-element row of `data`, the rows spread over the pool
    /// when there are enough of them (a prompt) to pay for waking the workers. Each row is
    /// computed as the serial loop computes it: for the per-row operations between the matrix
    /// products (norms, RoPE, residual adds), which a prompt would otherwise run on one thread
    /// while the others wait.
    pub fn rows_mut(&self, data: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
        let width = width.max(1);
        self.row_blocks_mut(data, width, |first, block| {
            for (j, row) in block.chunks_exact_mut(width).enumerate() {
                f(first + j, row);
            }
        });
    }

    /// [`rows_mut`](Self::rows_mut) a block of consecutive rows at a time: `f(first_row,
    /// rows)`, for operations that work on several rows together.
    fn row_blocks_mut(&self, data: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
        let width = width.max(1);
        let rows = data.len() / width;
        let nth = self.pool.n_threads();
        if nth == 1 || rows < 2 * nth || data.len() < PAR_ROWS_MIN_ELEMENTS {
            f(0, &mut data[..rows * width]);
            return;
        }
        let per = rows.div_ceil(nth);
        self.pool
            .par_chunks_mut(&mut data[..rows * width], per * width, |c, block| {
                f(c * per, block)
            });
    }

    /// `out` row r = RMSNorm of `x` row r (rows of `w.len()`).
    pub fn rms_norm_rows(&self, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len().max(1);
        self.row_blocks_mut(&mut out[..x.len()], d, |r, o| {
            ops::rms_norm_rows(&x[r * d..r * d + o.len()], w, eps, o)
        });
    }

    /// RMSNorm of every `w.len()`-element row of `x` in place.
    pub fn rms_norm_rows_inplace(&self, x: &mut [f32], w: &[f32], eps: f32) {
        self.row_blocks_mut(x, w.len(), |_, rows| {
            ops::rms_norm_rows_inplace(rows, w, eps)
        });
    }

    /// `y += x` (a residual add), rows of `width`.
    pub fn add_rows(&self, y: &mut [f32], x: &[f32], width: usize) {
        self.rows_mut(y, width, |r, row| {
            add_assign(row, &x[r * width..(r + 1) * width])
        });
    }

    /// Rows of the embedding table for `tokens`, times `scale`.
    pub fn embed(
        &self,
        table: &Linear,
        tokens: &[u32],
        scale: f32,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let d = table.cols;
        out.resize(tokens.len() * d, 0.0);
        for (t, row) in tokens.iter().zip(out.chunks_exact_mut(d)) {
            table.dequantize_row(*t as usize, row)?;
            if scale != 1.0 {
                for v in row.iter_mut() {
                    *v *= scale;
                }
            }
        }
        Ok(())
    }
}

/// The RoPE cos/sin pairs of every batch position (`positions.len() × rope_dims`, row t the
/// angles of `positions[t]`), rows computed in parallel for a prompt. The same values
/// [`rope_angles`] gives per position: a forward pass computes them once and every layer's
/// queries and keys use them.
pub fn rope_table(cpu: &Cpu, positions: &[usize], base: f32, rope_dims: usize, out: &mut Vec<f32>) {
    out.resize(positions.len() * rope_dims, 0.0);
    cpu.rows_mut(out, rope_dims, |t, row| {
        rope_angles(positions[t] as f32, base, rope_dims, row)
    });
}

/// [`rope_table`] with YaRN scaling when `yarn` is set.
pub fn rope_table_scaled(
    cpu: &Cpu,
    positions: &[usize],
    base: f32,
    rope_dims: usize,
    yarn: Option<&ops::Yarn>,
    out: &mut Vec<f32>,
) {
    let Some(y) = yarn else {
        return rope_table(cpu, positions, base, rope_dims, out);
    };
    out.resize(positions.len() * rope_dims, 0.0);
    cpu.rows_mut(out, rope_dims, |t, row| {
        ops::rope_angles_yarn(positions[t] as f32, base, rope_dims, y, row)
    });
}

/// Rotate every head of every token of `x` (`T × n_heads·head_dim`) by row t of `table`
/// ([`rope_table`]), tokens spread over the pool (see [`Cpu::rows_mut`]).
pub fn rope(
    cpu: &Cpu,
    x: &mut [f32],
    table: &[f32],
    n_heads: usize,
    head_dim: usize,
    rope_dims: usize,
    style: RopeStyle,
) {
    cpu.rows_mut(x, n_heads * head_dim, |t, row| {
        let cs = &table[t * rope_dims..(t + 1) * rope_dims];
        for head in row.chunks_exact_mut(head_dim) {
            rope_apply(head, cs, rope_dims, style);
        }
    });
}

/// Attention settings of one layer.
#[derive(Debug, Clone, Copy)]
pub struct AttentionParams {
    /// Layer index in the KV store.
    pub layer: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Head size.
    pub head_dim: usize,
    /// Multiplier of Q·K.
    pub scale: f32,
    /// Only the last `window` positions are visible, when set.
    pub window: Option<usize>,
    /// `c·tanh(s/c)` on scores, when set.
    pub softcap: Option<f32>,
}

/// Causal attention of every query of the batch over its sequence's cached keys and values;
/// `q` is `T × n_heads·head_dim`, `out` the same shape. Parallel over (token, KV head): the
/// query heads that share a KV head attend together, reading each key and value block once
/// (each head's result is exactly what it would be alone). With fewer such units than threads
/// (decoding: one token, Gemma3 has one KV head), each unit's output columns are
/// cut into parts that threads take separately — every part computes the scores and softmax
/// in full and accumulates only its own value columns, so the result is the same bit for bit.
/// Tokens of prompt-sized kernel groups go through llama.cpp's tiled kernel instead (see
/// [`crate::prompt_attention`]), as llama.cpp does for batches of 64 tokens or more.
pub fn attention(
    cpu: &Cpu,
    kv: &dyn KvStore,
    batch: &ForwardBatch<'_>,
    q: &[f32],
    p: AttentionParams,
    out: &mut Vec<f32>,
) {
    let d = p.head_dim;
    let group = p.n_heads / p.n_kv_heads;
    out.resize(q.len(), 0.0);
    if crate::prompt_attention::wants_tiles(kv, batch, &p) {
        crate::prompt_attention::attention_tiled(cpu, kv, batch, q, p, out);
        return;
    }
    let units = batch.tokens.len() * p.n_kv_heads;
    let parts = column_parts(d, units, cpu.pool.n_threads());
    if parts == 1 {
        // A token's cost grows with its position (causal): units are claimed dearest first.
        cpu.pool.par_chunks_mut_growing(out, group * d, |u, o| {
            attend(cpu, kv, batch, q, p, u, 0..d, o)
        });
        return;
    }
    let w = d / parts;
    PARTS.with(|cell| {
        let mut scratch = cell.borrow_mut();
        // Laid out (unit, part, head, column of the part): each chunk one (unit, part).
        scratch.resize(units * parts * group * w, 0.0);
        cpu.pool
            .par_chunks_mut_growing(&mut scratch, group * w, |c, o| {
                let (u, part) = (c / parts, c % parts);
                attend(cpu, kv, batch, q, p, u, part * w..(part + 1) * w, o);
            });
        for (c, chunk) in scratch.chunks_exact(group * w).enumerate() {
            let (u, part) = (c / parts, c % parts);
            for (h, src) in chunk.chunks_exact(w).enumerate() {
                let at = (u * group + h) * d + part * w;
                out[at..at + w].copy_from_slice(src);
            }
        }
    });
}

/// How many column parts each (token, KV head) unit is cut into: 1 when there are at least as
/// many units as threads, else the fewest halvings giving that, down to 32-column parts (the
/// value kernels' slice). Only as many as needed: every part recomputes the unit's scores, and
/// narrower parts give the value accumulation fewer independent chains (SmolLM2's three units
/// cut into six 32-column parts decoded 15% slower at depth 4096 than left whole).
fn column_parts(d: usize, units: usize, threads: usize) -> usize {
    let mut parts = 1;
    while units * parts < threads
        && d.is_multiple_of(2 * parts)
        && (d / (2 * parts)).is_multiple_of(32)
    {
        parts *= 2;
    }
    parts
}

/// Unit `u` (token `u / n_kv_heads`, KV head `u % n_kv_heads`): its query heads' output columns
/// `cols` into `o` (`group × cols.len()`, head by head).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    cpu: &Cpu,
    kv: &dyn KvStore,
    batch: &ForwardBatch<'_>,
    q: &[f32],
    p: AttentionParams,
    u: usize,
    cols: std::ops::Range<usize>,
    o: &mut [f32],
) {
    let d = p.head_dim;
    let group = p.n_heads / p.n_kv_heads;
    let (k, mode) = (cpu.kernels, cpu.attn_accum);
    let (t, g) = (u / p.n_kv_heads, u % p.n_kv_heads);
    let pos = batch.positions[t];
    let lo = match p.window {
        Some(w) => (pos + 1).saturating_sub(w),
        None => 0,
    };
    // One set of accumulators per pool thread, kept between calls: no allocation per unit.
    ACCUMULATORS.with(|cell| {
        let mut accs = cell.borrow_mut();
        let format = kv.format();
        if accs.len() != group
            || accs
                .iter()
                .any(|a| a.head_dim() != d || a.mode() != mode || a.kv_format() != format)
        {
            // A head size the format cannot hold was refused when the cache was made.
            *accs = (0..group)
                .map(|_| {
                    AttentionAccumulator::new(d, mode)
                        .with_kv_format(format)
                        .expect("invariant: the KV store checked the head size")
                })
                .collect();
        }
        let q0 = u * group * d; // query heads g·group.. of token t are contiguous in q
        for (h, acc) in accs.iter_mut().enumerate() {
            acc.set_columns(cols.clone());
            acc.begin(&q[q0 + h * d..q0 + (h + 1) * d], p.scale);
        }
        kv.read(
            p.layer,
            batch.slots[t],
            g,
            lo..pos + 1,
            &mut |keys, values, n| {
                AttentionAccumulator::add_group(&k, &mut accs, keys, values, n, p.softcap)
            },
        );
        for (acc, oh) in accs.iter().zip(o.chunks_exact_mut(cols.len())) {
            acc.finish(oh);
        }
    });
}

/// Below this many elements a row operation runs on the calling thread (decoding: one token).
const PAR_ROWS_MIN_ELEMENTS: usize = 8192;

thread_local! {
    static ACCUMULATORS: std::cell::RefCell<Vec<AttentionAccumulator>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// The caller's buffer for column parts (see [`attention`]).
    static PARTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Store K and V of every batch token in the cache.
pub fn store_kv(
    kv: &mut dyn KvStore,
    layer: usize,
    batch: &ForwardBatch<'_>,
    k: &[f32],
    v: &[f32],
    kv_dim: usize,
) -> Result<()> {
    for t in 0..batch.tokens.len() {
        kv.write(
            layer,
            batch.slots[t],
            batch.positions[t],
            &k[t * kv_dim..(t + 1) * kv_dim],
            &v[t * kv_dim..(t + 1) * kv_dim],
        )?;
    }
    Ok(())
}

/// What every architecture has at both ends: the embedding table, the final norm and the output
/// head (tied to the embedding when the file has no `output.weight`).
pub(crate) struct Head {
    pub embed: Linear,
    norm: Vec<f32>,
    output: Linear,
}

impl Head {
    /// Load the three. `output_scale`: whether the head's second-level `.scale` applies (as in
    /// the architecture's llama.cpp graph).
    pub fn load(
        file: &Arc<ferrite_gguf::GgufFile>,
        cfg: &crate::ModelConfig,
        kernels: &Kernels,
        output_scale: bool,
    ) -> Result<Head> {
        let (d, v) = (cfg.dim, cfg.vocab_size);
        let embed = Linear::load(file, "token_embd.weight", v, d)?;
        let output = match file.tensor("output.weight") {
            Some(_) => {
                let head = Linear::load(file, "output.weight", v, d)?;
                if output_scale {
                    head
                } else {
                    head.without_scale()
                }
                .repacked(kernels)?
            }
            None => embed.clone().repacked(kernels)?,
        };
        Ok(Head {
            norm: load_vector(file, "output_norm.weight", d)?,
            embed,
            output,
        })
    }

    /// Logits (`logits_rows.len() × vocab`) of the batch rows that want them, from the last
    /// layer's `s.x`: only those rows go through the norm and the head (then the final
    /// soft-capping, where the model has it).
    pub fn logits(
        &self,
        cpu: &Cpu,
        s: &mut Scratch,
        batch: &ForwardBatch<'_>,
        cfg: &crate::ModelConfig,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let eps = cfg.norm_eps;
        let d = self.norm.len();
        gather_rows(&s.x, d, batch.logits_rows, &mut s.sel);
        let n = batch.logits_rows.len();
        s.h.resize(n * d, 0.0);
        for (xr, hr) in s.sel.chunks_exact(d).zip(s.h.chunks_exact_mut(d)) {
            ops::rms_norm(xr, &self.norm, eps, hr);
        }
        // With per-sequence groups, every logits row is its own group (as each sequence alone).
        let head_groups = batch.kernel_groups.map(|_| vec![(0, 1); n]);
        cpu.linear_grouped(
            &self.output,
            &s.h[..n * d],
            n,
            head_groups.as_deref(),
            logits,
            &mut s.act,
        )?; // (N, vocab)
        if let Some(c) = cfg.final_logit_softcap {
            logits.iter_mut().for_each(|v| *v = c * (*v / c).tanh());
        }
        cpu.trace("result_output", 0, logits);
        Ok(())
    }
}

/// Copy the rows of `x` (width `d`) listed in `rows` into `out`.
pub fn gather_rows(x: &[f32], d: usize, rows: &[usize], out: &mut Vec<f32>) {
    out.clear();
    for &r in rows {
        out.extend_from_slice(&x[r * d..(r + 1) * d]);
    }
}
