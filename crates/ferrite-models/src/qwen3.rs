//! Qwen3 and Qwen3-MoE: Llama's pre-norm decoder with a per-head RMSNorm of q and k before RoPE
//! on halves (NeoX), a head size that need not be `dim / n_heads`, and a SwiGLU feed-forward
//! that is dense (`qwen3`) or a softmax-routed mixture of experts (`qwen3moe`). Follows
//! llama.cpp's `qwen3.cpp` and `qwen3moe.cpp` graphs.

use std::sync::Arc;

use ferrite_gguf::GgufFile;
use ferrite_kernels::ops::RopeStyle;

use crate::attention::{attention, AttentionParams};
use crate::config::{Architecture, ModelConfig};
use crate::cpu::{rope, rope_table, store_kv, Cpu, Head};
use crate::kv::KvStore;
use crate::moe::{ExpertTensors, MoeFfn, MoeScratch, SwiGlu};

/// llama.cpp's qwen3moe graph applies per-expert scales and has no selection bias.
const QWEN3_EXPERTS: ExpertTensors = ExpertTensors {
    scales: true,
    selection_bias: false,
};
use crate::scratch::Scratch;
use crate::weights::{load_vector, Linear};
use crate::{Error, ForwardBatch, Model, Result};

/// The feed-forward of one layer.
enum Ffn {
    Dense(Box<SwiGlu>),
    Moe(Box<MoeFfn>),
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    wo: Linear,
    ffn_norm: Vec<f32>,
    ffn: Ffn,
}

/// A loaded Qwen3 or Qwen3-MoE model.
pub struct Qwen3 {
    cfg: ModelConfig,
    cpu: Cpu,
    head: Head,
    layers: Vec<Layer>,
    s: Scratch,
    moe: MoeScratch,
}

impl std::fmt::Debug for Qwen3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qwen3").field("cfg", &self.cfg).finish()
    }
}

impl Qwen3 {
    /// Load and check every tensor.
    pub fn load(file: &Arc<GgufFile>, cfg: ModelConfig, cpu: Cpu) -> Result<Qwen3> {
        let (d, q, kv, hd) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
        let k = &cpu.kernels;
        let layers = (0..cfg.n_layers)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}.weight");
                let ffn = match (cfg.arch, &cfg.moe) {
                    (Architecture::Qwen3Moe, Some(m)) => {
                        Ffn::Moe(Box::new(MoeFfn::load(file, i, d, m, k, QWEN3_EXPERTS)?))
                    }
                    (Architecture::Qwen3, None) => Ffn::Dense(Box::new(SwiGlu {
                        gate: Linear::load(file, &n("ffn_gate"), cfg.ffn_dim, d)?.repacked(k)?,
                        up: Linear::load(file, &n("ffn_up"), cfg.ffn_dim, d)?.repacked(k)?,
                        down: Linear::load(file, &n("ffn_down"), d, cfg.ffn_dim)?.repacked(k)?,
                    })),
                    (arch, _) => {
                        return Err(Error::Config(format!(
                            "{} is not a Qwen3 architecture with its feed-forward settings",
                            arch.name()
                        )))
                    }
                };
                Ok(Layer {
                    attn_norm: load_vector(file, &n("attn_norm"), d)?,
                    wq: Linear::load(file, &n("attn_q"), q, d)?.repacked(k)?,
                    wk: Linear::load(file, &n("attn_k"), kv, d)?.repacked(k)?,
                    wv: Linear::load(file, &n("attn_v"), kv, d)?.repacked(k)?,
                    q_norm: load_vector(file, &n("attn_q_norm"), hd)?,
                    k_norm: load_vector(file, &n("attn_k_norm"), hd)?,
                    wo: Linear::load(file, &n("attn_output"), d, q)?.repacked(k)?,
                    ffn_norm: load_vector(file, &n("ffn_norm"), d)?,
                    ffn,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Qwen3 {
            head: Head::load(file, &cfg, k, true)?,
            cfg,
            cpu,
            layers,
            s: Scratch::default(),
            moe: MoeScratch::default(),
        })
    }
}

impl Model for Qwen3 {
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
        let c = &self.cfg;
        let (cpu, s) = (&self.cpu, &mut self.s);
        let t = batch.tokens.len();
        let (d, hd, kvd) = (c.dim, c.head_dim, c.kv_dim());
        let groups = batch.kernel_groups;
        cpu.embed(&self.head.embed, batch.tokens, 1.0, &mut s.x)?; // x: (T, D)
        rope_table(cpu, batch.positions, c.rope_base, c.rope_dims, &mut s.rope);
        for (il, l) in self.layers.iter().enumerate() {
            // Attention block: norm → q/k/v → per-head norm of q, k → RoPE → attend.
            s.h.resize(t * d, 0.0);
            cpu.rms_norm_rows(&s.x, &l.attn_norm, c.norm_eps, &mut s.h);
            cpu.trace("attn_norm", il, &s.h);
            cpu.linear_many(
                [&l.wq, &l.wk, &l.wv],
                &s.h,
                t,
                groups,
                [&mut s.q, &mut s.k, &mut s.v],
                &mut s.act,
            )?;
            cpu.rms_norm_rows_inplace(&mut s.q, &l.q_norm, c.norm_eps);
            cpu.rms_norm_rows_inplace(&mut s.k, &l.k_norm, c.norm_eps);
            let style = RopeStyle::Neox;
            rope(cpu, &mut s.q, &s.rope, c.n_heads, hd, c.rope_dims, style);
            rope(cpu, &mut s.k, &s.rope, c.n_kv_heads, hd, c.rope_dims, style);
            cpu.trace("Qcur", il, &s.q);
            cpu.trace("Kcur", il, &s.k);
            cpu.trace("Vcur", il, &s.v);
            store_kv(kv, il, batch, &s.k, &s.v, kvd)?;
            let p = AttentionParams {
                layer: il,
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: hd,
                scale: c.attention_scale,
                window: None,
                softcap: None,
            };
            attention(cpu, kv, batch, &s.q, p, &mut s.att);
            cpu.trace("kqv_out", il, &s.att);
            cpu.linear_grouped(&l.wo, &s.att, t, groups, &mut s.o, &mut s.act)?;
            cpu.trace("attn_out", il, &s.o);
            cpu.add_rows(&mut s.x, &s.o, d); // residual
            cpu.trace("ffn_inp", il, &s.x);

            // Feed-forward block (SwiGLU, dense or routed).
            cpu.rms_norm_rows(&s.x, &l.ffn_norm, c.norm_eps, &mut s.h);
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
                Ffn::Moe(moe) => moe.forward(cpu, &s.h, t, groups, &mut s.o, &mut self.moe)?,
            }
            cpu.trace("ffn_out", il, &s.o);
            cpu.add_rows(&mut s.x, &s.o, d);
            cpu.trace("l_out", il, &s.x);
        }
        self.head.logits(cpu, s, batch, c, logits)?;
        Ok(())
    }
}
