//! DeepSeek V2/V3/R1 (`deepseek2`): multi-head latent attention (MLA) and a mixture of routed
//! plus shared experts after a few dense layers. Follows llama.cpp's `deepseek2.cpp` graph on
//! its MLA path:
//!
//! - queries: `attn_q_b(rms(attn_q_a·x))` (or a plain `attn_q`), each head `[nope | pe]`;
//! - one latent per token: `attn_kv_a_mqa·x = [c | k_pe]`, `c` normed, `k_pe` rotated (RoPE on
//!   adjacent pairs); the cache holds the 576-wide row `[c | k_pe]` as one KV head;
//! - each head's `q_nope` goes through its `attn_k_b` into latent space (the key projection
//!   "absorbed" into the query), so a head's query is `[k_b·q_nope | q_pe]` against every
//!   cached row, and its values are the rows' first `kv_lora` columns (`c`);
//! - each head's latent result goes through its `attn_v_b`, then `attn_output`.
//!
//! Of the second-level `.scale` tensors llama.cpp's graph applies only `attn_output`'s; the
//! others (which its test files carry) are ignored here as there.

use std::sync::Arc;

use ferrite_gguf::GgufFile;
use ferrite_kernels::ops::{rms_norm_rows_inplace, rope_apply, RopeStyle};

use crate::attention::{attention, AttentionParams};
use crate::config::{MlaConfig, ModelConfig};
use crate::cpu::{rope_table_scaled, store_kv, Cpu, Head};
use crate::kv::KvStore;
use crate::moe::{ExpertTensors, MoeFfn, MoeScratch, SwiGlu};
use crate::scratch::Scratch;
use crate::weights::{load_vector, Linear};
use crate::{Error, ForwardBatch, Model, Result};

/// llama.cpp's deepseek2 graph: no per-expert scales, the selection bias when present.
const DEEPSEEK_EXPERTS: ExpertTensors = ExpertTensors {
    scales: false,
    selection_bias: true,
};

enum Query {
    /// `attn_q_b · rms(attn_q_a · x)`.
    LowRank {
        a: Linear,
        norm: Vec<f32>,
        b: Linear,
    },
    /// `attn_q · x` (q_lora_rank 0, the "lite" models).
    Plain(Linear),
}

enum Ffn {
    Dense(Box<SwiGlu>),
    Moe {
        routed: Box<MoeFfn>,
        shared: Box<SwiGlu>,
    },
}

struct Layer {
    attn_norm: Vec<f32>,
    q: Query,
    kv_a: Linear,
    kv_a_norm: Vec<f32>,
    /// Per head: latent ← nope (`kv_lora × nope`).
    k_b: Vec<Linear>,
    /// Per head: value ← latent (`v_head × kv_lora`).
    v_b: Vec<Linear>,
    wo: Linear,
    ffn_norm: Vec<f32>,
    ffn: Ffn,
}

/// Buffers of the latent attention.
#[derive(Debug, Default)]
struct MlaScratch {
    q: Vec<f32>,
    q_low: Vec<f32>,
    latent: Vec<f32>,
    head_in: Vec<f32>,
    head_out: Vec<f32>,
    query: Vec<f32>,
    values: Vec<f32>,
    shared: Vec<f32>,
}

/// A loaded DeepSeek V2/V3 model.
pub struct Deepseek2 {
    cfg: ModelConfig,
    mla: MlaConfig,
    cpu: Cpu,
    head: Head,
    layers: Vec<Layer>,
    s: Scratch,
    m: MlaScratch,
    moe: MoeScratch,
}

impl std::fmt::Debug for Deepseek2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deepseek2").field("cfg", &self.cfg).finish()
    }
}

impl Deepseek2 {
    /// Load and check every tensor.
    pub fn load(file: &Arc<GgufFile>, cfg: ModelConfig, cpu: Cpu) -> Result<Deepseek2> {
        let (Some(mla), Some(moe)) = (cfg.mla.clone(), cfg.moe.clone()) else {
            return Err(Error::Config(
                "deepseek2 needs latent-attention and expert settings".into(),
            ));
        };
        let (d, h, k) = (cfg.dim, cfg.n_heads, &cpu.kernels);
        let head_k = mla.nope + mla.rope;
        let lin = |name: &str, rows: usize, cols: usize| -> Result<Linear> {
            Linear::load(file, name, rows, cols)?
                .without_scale()
                .repacked(k)
        };
        let swiglu = |il: usize, suffix: &str, ff: usize| -> Result<SwiGlu> {
            let n = |s: &str| format!("blk.{il}.{s}{suffix}.weight");
            Ok(SwiGlu {
                gate: lin(&n("ffn_gate"), ff, d)?,
                up: lin(&n("ffn_up"), ff, d)?,
                down: lin(&n("ffn_down"), d, ff)?,
            })
        };
        let layers = (0..cfg.n_layers)
            .map(|il| {
                let n = |s: &str| format!("blk.{il}.{s}.weight");
                let q = match mla.q_lora {
                    0 => Query::Plain(lin(&n("attn_q"), h * head_k, d)?),
                    r => Query::LowRank {
                        a: lin(&n("attn_q_a"), r, d)?,
                        norm: load_vector(file, &n("attn_q_a_norm"), r)?,
                        b: lin(&n("attn_q_b"), h * head_k, r)?,
                    },
                };
                let per_head = |name: &str, rows: usize, cols: usize| -> Result<Vec<Linear>> {
                    Linear::load_experts(file, &n(name), h, rows, cols)?
                        .into_iter()
                        .map(|l| l.without_scale().repacked(k))
                        .collect()
                };
                let ffn = if il < cfg.dense_layers {
                    Ffn::Dense(Box::new(swiglu(il, "", cfg.ffn_dim)?))
                } else {
                    Ffn::Moe {
                        routed: Box::new(MoeFfn::load(file, il, d, &moe, k, DEEPSEEK_EXPERTS)?),
                        shared: Box::new(swiglu(
                            il,
                            "_shexp",
                            moe.expert_ffn_dim * cfg.shared_experts,
                        )?),
                    }
                };
                Ok(Layer {
                    attn_norm: load_vector(file, &n("attn_norm"), d)?,
                    q,
                    kv_a: lin(&n("attn_kv_a_mqa"), mla.kv_lora + mla.rope, d)?,
                    kv_a_norm: load_vector(file, &n("attn_kv_a_norm"), mla.kv_lora)?,
                    k_b: per_head("attn_k_b", mla.kv_lora, mla.nope)?,
                    v_b: per_head("attn_v_b", mla.v_head, mla.kv_lora)?,
                    // The one second-level scale llama.cpp's graph applies (`wo_s`).
                    wo: Linear::load(file, &n("attn_output"), d, h * mla.v_head)?.repacked(k)?,
                    ffn_norm: load_vector(file, &n("ffn_norm"), d)?,
                    ffn,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Deepseek2 {
            head: Head::load(file, &cfg, k, false)?,
            cfg,
            mla,
            cpu,
            layers,
            s: Scratch::default(),
            m: MlaScratch::default(),
            moe: MoeScratch::default(),
        })
    }
}

/// Copy columns `cols` of every `width`-wide row of `src` into `dst` (rows of `cols.len()`).
fn gather_columns(src: &[f32], width: usize, cols: std::ops::Range<usize>, dst: &mut Vec<f32>) {
    dst.clear();
    for row in src.chunks_exact(width) {
        dst.extend_from_slice(&row[cols.clone()]);
    }
}

/// Write the rows of `src` (rows of `cols.len()`) into columns `cols` of `dst`'s rows.
fn scatter_columns(src: &[f32], dst: &mut [f32], width: usize, cols: std::ops::Range<usize>) {
    for (s, d) in src
        .chunks_exact(cols.len())
        .zip(dst.chunks_exact_mut(width))
    {
        d[cols.clone()].copy_from_slice(s);
    }
}

impl Model for Deepseek2 {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn cpu(&self) -> &Cpu {
        &self.cpu
    }

    fn forward(
        &mut self,
        batch: &ForwardBatch<'_>,
        kv: &mut dyn KvStore,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        batch.validate(&self.cfg, kv.capacity())?;
        let (c, a) = (&self.cfg, &self.mla);
        let (cpu, s, m) = (&self.cpu, &mut self.s, &mut self.m);
        let t = batch.tokens.len();
        let (d, h, eps) = (c.dim, c.n_heads, c.norm_eps);
        let head_k = a.nope + a.rope; // a query head as the file stores it
        let row = a.kv_lora + a.rope; // a cached latent row, and a head's absorbed query
        let groups = batch.kernel_groups;
        cpu.embed(&self.head.embed, batch.tokens, 1.0, &mut s.x)?;
        rope_table_scaled(
            cpu,
            batch.positions,
            c.rope_base,
            a.rope,
            c.rope_yarn.as_ref(),
            &mut s.rope,
        );
        for (il, l) in self.layers.iter().enumerate() {
            s.h.resize(t * d, 0.0);
            cpu.rms_norm_rows(&s.x, &l.attn_norm, eps, &mut s.h);
            cpu.trace("attn_norm", il, &s.h);

            // Queries (T × H·head_k), each head's pe part rotated.
            match &l.q {
                Query::LowRank { a: qa, norm, b } => {
                    cpu.linear_grouped(qa, &s.h, t, groups, &mut m.q_low, &mut s.act)?;
                    cpu.rms_norm_rows_inplace(&mut m.q_low, norm, eps);
                    cpu.linear_grouped(b, &m.q_low, t, groups, &mut m.q, &mut s.act)?;
                }
                Query::Plain(w) => cpu.linear_grouped(w, &s.h, t, groups, &mut m.q, &mut s.act)?,
            }
            let rope_rows = &s.rope;
            cpu.rows_mut(&mut m.q, h * head_k, |ti, q| {
                let cs = &rope_rows[ti * a.rope..(ti + 1) * a.rope];
                for head in q.chunks_exact_mut(head_k) {
                    rope_apply(&mut head[a.nope..], cs, a.rope, RopeStyle::Normal);
                }
            });

            // The latent row of each token: [rms(c) | rope(k_pe)].
            cpu.linear_grouped(&l.kv_a, &s.h, t, groups, &mut m.latent, &mut s.act)?;
            let norm = &l.kv_a_norm;
            cpu.rows_mut(&mut m.latent, row, |ti, r| {
                let (latent, pe) = r.split_at_mut(a.kv_lora);
                rms_norm_rows_inplace(latent, norm, eps);
                rope_apply(
                    pe,
                    &rope_rows[ti * a.rope..(ti + 1) * a.rope],
                    a.rope,
                    RopeStyle::Normal,
                );
            });
            cpu.trace("kv_cmpr_pe", il, &m.latent);
            // Values are the rows' latent part: stored whole, read as the first kv_lora columns.
            store_kv(kv, il, batch, &m.latent, &m.latent, row)?;

            // Absorbed queries (T × H·row): [k_b,h · q_nope,h | q_pe,h].
            m.query.resize(t * h * row, 0.0);
            for (hi, k_b) in l.k_b.iter().enumerate() {
                let at = hi * head_k;
                gather_columns(&m.q, h * head_k, at..at + a.nope, &mut m.head_in);
                cpu.linear_grouped(k_b, &m.head_in, t, groups, &mut m.head_out, &mut s.act)?;
                let to = hi * row;
                scatter_columns(&m.head_out, &mut m.query, h * row, to..to + a.kv_lora);
                gather_columns(&m.q, h * head_k, at + a.nope..at + head_k, &mut m.head_in);
                scatter_columns(&m.head_in, &mut m.query, h * row, to + a.kv_lora..to + row);
            }
            let p = AttentionParams {
                layer: il,
                n_heads: h,
                n_kv_heads: 1,
                head_dim: row,
                scale: c.attention_scale,
                window: None,
                softcap: None,
            };
            // Each head's output row also carries Σ p·k_pe past kv_lora, which no one reads.
            attention(cpu, kv, batch, &m.query, p, &mut s.att);
            cpu.trace("kqv_out", il, &s.att);

            // Back from latent space per head, then the output projection.
            m.values.resize(t * h * a.v_head, 0.0);
            for (hi, v_b) in l.v_b.iter().enumerate() {
                gather_columns(
                    &s.att,
                    h * row,
                    hi * row..hi * row + a.kv_lora,
                    &mut m.head_in,
                );
                cpu.linear_grouped(v_b, &m.head_in, t, groups, &mut m.head_out, &mut s.act)?;
                let to = hi * a.v_head;
                scatter_columns(&m.head_out, &mut m.values, h * a.v_head, to..to + a.v_head);
            }
            cpu.linear_grouped(&l.wo, &m.values, t, groups, &mut s.o, &mut s.act)?;
            cpu.trace("attn_out", il, &s.o);
            cpu.add_rows(&mut s.x, &s.o, d);

            cpu.rms_norm_rows(&s.x, &l.ffn_norm, eps, &mut s.h);
            match &l.ffn {
                Ffn::Dense(ffn) => ffn.forward(
                    cpu,
                    &s.h,
                    t,
                    groups,
                    &mut s.gate,
                    &mut s.up,
                    &mut s.o,
                    &mut s.act,
                )?,
                Ffn::Moe { routed, shared } => {
                    routed.forward(cpu, &s.h, t, groups, &mut s.o, &mut self.moe)?;
                    shared.forward(
                        cpu,
                        &s.h,
                        t,
                        groups,
                        &mut s.gate,
                        &mut s.up,
                        &mut m.shared,
                        &mut s.act,
                    )?;
                    cpu.add_rows(&mut s.o, &m.shared, d);
                }
            }
            cpu.trace("ffn_out", il, &s.o);
            cpu.add_rows(&mut s.x, &s.o, d);
            cpu.trace("l_out", il, &s.x);
        }
        self.head.logits(cpu, s, batch, c, logits)?;
        Ok(())
    }
}
