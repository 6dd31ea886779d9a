//! Gemma 3: embeddings scaled by √d; RMSNorm before and after both the attention and the
//! feed-forward block (the GGUF converter has already folded Gemma's `1 + w` into the stored
//! weights); per-head RMSNorm of q and k; RoPE on halves (NeoX); sliding-window local layers with
//! their own RoPE base and global layers; a GeGLU (tanh-GELU) feed-forward; tied output head.
//! Follows llama.cpp's `llama_model_gemma3` graph.

use std::sync::Arc;

use ferrite_gguf::GgufFile;
use ferrite_kernels::ops::{geglu_rows, scale_inplace, RopeStyle};

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
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    wo: Linear,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_ffn_norm: Vec<f32>,
}

/// A loaded Gemma 3 model.
pub struct Gemma3 {
    cfg: ModelConfig,
    cpu: Cpu,
    head: Head,
    layers: Vec<Layer>,
    s: Scratch,
}

impl std::fmt::Debug for Gemma3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemma3").field("cfg", &self.cfg).finish()
    }
}

impl Gemma3 {
    /// Load and check every tensor.
    pub fn load(file: &Arc<GgufFile>, cfg: ModelConfig, cpu: Cpu) -> Result<Gemma3> {
        let (d, q, kv, ff, hd) = (
            cfg.dim,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.ffn_dim,
            cfg.head_dim,
        );
        let k = &cpu.kernels;
        let layers = (0..cfg.n_layers)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}.weight");
                Ok(Layer {
                    attn_norm: load_vector(file, &n("attn_norm"), d)?,
                    wq: Linear::load(file, &n("attn_q"), q, d)?.repacked(k)?,
                    wk: Linear::load(file, &n("attn_k"), kv, d)?.repacked(k)?,
                    wv: Linear::load(file, &n("attn_v"), kv, d)?.repacked(k)?,
                    q_norm: load_vector(file, &n("attn_q_norm"), hd)?,
                    k_norm: load_vector(file, &n("attn_k_norm"), hd)?,
                    wo: Linear::load(file, &n("attn_output"), d, q)?.repacked(k)?,
                    post_attn_norm: load_vector(file, &n("post_attention_norm"), d)?,
                    ffn_norm: load_vector(file, &n("ffn_norm"), d)?,
                    gate: Linear::load(file, &n("ffn_gate"), ff, d)?.repacked(k)?,
                    up: Linear::load(file, &n("ffn_up"), ff, d)?.repacked(k)?,
                    down: Linear::load(file, &n("ffn_down"), d, ff)?.repacked(k)?,
                    post_ffn_norm: load_vector(file, &n("post_ffw_norm"), d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Gemma3 {
            head: Head::load(file, &cfg, k, true)?,
            cfg,
            cpu,
            layers,
            s: Scratch::default(),
        })
    }
}

impl Model for Gemma3 {
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
        cpu.embed(&self.head.embed, batch.tokens, (d as f32).sqrt(), &mut s.x)?; // x: (T, D)
        cpu.trace("inp_scaled", 0, &s.x);
        rope_table(cpu, batch.positions, c.rope_base, c.rope_dims, &mut s.rope);
        rope_table(
            cpu,
            batch.positions,
            c.rope_base_local,
            c.rope_dims,
            &mut s.rope_local,
        );
        for (il, l) in self.layers.iter().enumerate() {
            let sliding = c.is_sliding(il);
            let angles = if sliding { &s.rope_local } else { &s.rope };
            // Attention block: norm → q/k/v → per-head norm of q, k → RoPE → attend.
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
            cpu.rms_norm_rows_inplace(&mut s.q, &l.q_norm, c.norm_eps);
            cpu.rms_norm_rows_inplace(&mut s.k, &l.k_norm, c.norm_eps);
            rope(
                cpu,
                &mut s.q,
                angles,
                c.n_heads,
                hd,
                c.rope_dims,
                RopeStyle::Neox,
            );
            rope(
                cpu,
                &mut s.k,
                angles,
                c.n_kv_heads,
                hd,
                c.rope_dims,
                RopeStyle::Neox,
            );
            cpu.trace("Qcur", il, &s.q);
            cpu.trace("Kcur", il, &s.k);
            cpu.trace("Vcur", il, &s.v);
            // Gemma scales the query, not the score (llama.cpp: ggml_scale(Q), kq_scale = 1).
            let a = c.attention_scale;
            cpu.rows_mut(&mut s.q, hd, |_, row| scale_inplace(row, a));
            store_kv(kv, il, batch, &s.k, &s.v, kvd)?;
            let p = AttentionParams {
                layer: il,
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: hd,
                scale: 1.0,
                window: if sliding { c.sliding_window } else { None },
                softcap: c.attn_logit_softcap,
            };
            attention(cpu, kv, batch, &s.q, p, &mut s.att);
            cpu.trace("kqv_out", il, &s.att);
            cpu.linear_grouped(&l.wo, &s.att, t, batch.kernel_groups, &mut s.o, &mut s.act)?; // (T, D)
            cpu.trace("attn_out", il, &s.o);
            cpu.rms_norm_rows_inplace(&mut s.o, &l.post_attn_norm, c.norm_eps);
            cpu.trace("attn_post_norm", il, &s.o);
            cpu.add_rows(&mut s.x, &s.o, d); // residual
            cpu.trace("sa_out", il, &s.x);

            // Feed-forward block: norm → GeGLU → post-norm → residual.
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
            geglu_rows(&cpu.pool, &cpu.kernels, &mut s.gate, &s.up, c.ffn_dim)?;
            cpu.trace("ffn_geglu", il, &s.gate);
            cpu.linear_grouped(
                &l.down,
                &s.gate,
                t,
                batch.kernel_groups,
                &mut s.o,
                &mut s.act,
            )?; // (T, D)
            cpu.trace("ffn_out", il, &s.o);
            cpu.rms_norm_rows_inplace(&mut s.o, &l.post_ffn_norm, c.norm_eps);
            cpu.trace("ffn_post_norm", il, &s.o);
            cpu.add_rows(&mut s.x, &s.o, d);
            cpu.trace("l_out", il, &s.x);
        }
        self.head.logits(cpu, s, batch, c, logits)?;
        Ok(())
    }
}
