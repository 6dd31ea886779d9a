//! The CPU side of a forward pass: kernels table, thread pool and the layer operations both
//! architectures share (embedding lookup, linear layers, RoPE, attention over the KV store).

use std::sync::Arc;

use ferrite_kernels::ops::{self, add_assign, rope_angles, rope_apply, AttnAccum, RopeStyle};
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

/// Below this many elements a row operation runs on the calling thread (decoding: one token).
const PAR_ROWS_MIN_ELEMENTS: usize = 8192;

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
