//! Llama: pre-norm decoder with RMSNorm, RoPE (adjacent pairs), grouped-query attention and a
//! SwiGLU feed-forward; the output head is tied to the embedding when `output.weight` is absent.
//! Follows llama.cpp's `build_llama` graph.

use std::sync::Arc;

use ferrite_gguf::GgufFile;
use ferrite_kernels::ops::{swiglu_rows, RopeStyle};

use crate::attention::{attention, AttentionParams};
use crate::config::ModelConfig;
use crate::cpu::{rope, rope_table, store_kv, Cpu, Head};
use crate::kv::KvStore;
use crate::scratch::Scratch;
use crate::weights::{load_vector, Linear};
use crate::{ForwardBatch, Model, Result};

struct Layer {
    attn_norm: Vec<f32>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A loaded Llama model.
pub struct Llama {
    cfg: ModelConfig,
    cpu: Cpu,
    head: Head,
    layers: Vec<Layer>,
    s: Scratch,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama").field("cfg", &self.cfg).finish()
    }
}

impl Llama {
    /// Load and check every tensor.
    pub fn load(file: &Arc<GgufFile>, cfg: ModelConfig, cpu: Cpu) -> Result<Llama> {
        let (d, q, kv, ff) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
        let k = &cpu.kernels;
        let layers = (0..cfg.n_layers)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}.weight");
                Ok(Layer {
                    attn_norm: load_vector(file, &n("attn_norm"), d)?,
                    wq: Linear::load(file, &n("attn_q"), q, d)?.repacked(k)?,
                    wk: Linear::load(file, &n("attn_k"), kv, d)?.repacked(k)?,
                    wv: Linear::load(file, &n("attn_v"), kv, d)?.repacked(k)?,
                    wo: Linear::load(file, &n("attn_output"), d, q)?.repacked(k)?,
                    ffn_norm: load_vector(file, &n("ffn_norm"), d)?,
                    gate: Linear::load(file, &n("ffn_gate"), ff, d)?.repacked(k)?,
                    up: Linear::load(file, &n("ffn_up"), ff, d)?.repacked(k)?,
                    down: Linear::load(file, &n("ffn_down"), d, ff)?.repacked(k)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Llama {
            head: Head::load(file, &cfg, k, true)?,
            cfg,
            cpu,
            layers,
            s: Scratch::default(),
        })
    }
}

impl Model for Llama {
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
        let (d, kvd) = (c.dim, c.kv_dim());
        cpu.embed(&self.head.embed, batch.tokens, 1.0, &mut s.x)?; // x: (T, D)
        rope_table(cpu, batch.positions, c.rope_base, c.rope_dims, &mut s.rope);
        for (il, l) in self.layers.iter().enumerate() {
            // Attention block.
            s.h.resize(t * d, 0.0);
            cpu.rms_norm_rows(&s.x, &l.attn_norm, c.norm_eps, &mut s.h);
            cpu.trace("attn_norm", il, &s.h);
            // Q (T, Hq·hd), K and V (T, Hkv·hd) from one quantization of h.
            cpu.linear_many(
                [&l.wq, &l.wk, &l.wv],
                &s.h,
                t,
                batch.kernel_groups,
                [&mut s.q, &mut s.k, &mut s.v],
                &mut s.act,
            )?;
            rope(
                cpu,
                &mut s.q,
                &s.rope,
                c.n_heads,
                c.head_dim,
                c.rope_dims,
                RopeStyle::Normal,
            );
            rope(
                cpu,
                &mut s.k,
                &s.rope,
                c.n_kv_heads,
                c.head_dim,
                c.rope_dims,
                RopeStyle::Normal,
            );
            cpu.trace("Qcur", il, &s.q);
            cpu.trace("Kcur", il, &s.k);
            cpu.trace("Vcur", il, &s.v);
            store_kv(kv, il, batch, &s.k, &s.v, kvd)?;
            let p = AttentionParams {
                layer: il,
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: c.head_dim,
                scale: c.attention_scale,
                window: None,
                softcap: c.attn_logit_softcap,
            };
            attention(cpu, kv, batch, &s.q, p, &mut s.att);
            cpu.trace("kqv_out", il, &s.att);
            cpu.linear_grouped(&l.wo, &s.att, t, batch.kernel_groups, &mut s.o, &mut s.act)?;
            cpu.trace("attn_out", il, &s.o);
            cpu.add_rows(&mut s.x, &s.o, d); // residual
            cpu.trace("ffn_inp", il, &s.x);

            // Feed-forward block (SwiGLU).
            cpu.rms_norm_rows(&s.x, &l.ffn_norm, c.norm_eps, &mut s.h);
            cpu.linear_many(
                [&l.gate, &l.up],
                &s.h,
                t,
                batch.kernel_groups,
                [&mut s.gate, &mut s.up],
                &mut s.act,
            )?; // (T, FF) each
            cpu.trace("ffn_gate", il, &s.gate);
            cpu.trace("ffn_up", il, &s.up);
            swiglu_rows(&cpu.pool, &cpu.kernels, &mut s.gate, &s.up, c.ffn_dim)?;
            cpu.trace("ffn_swiglu", il, &s.gate);
            cpu.linear_grouped(
                &l.down,
                &s.gate,
                t,
                batch.kernel_groups,
                &mut s.o,
                &mut s.act,
            )?; // (T, D)
            cpu.trace("ffn_out", il, &s.o);
            cpu.add_rows(&mut s.x, &s.o, d);
            cpu.trace("l_out", il, &s.x);
        }
        self.head.logits(cpu, s, batch, c, logits)?;
        Ok(())
    }
}
