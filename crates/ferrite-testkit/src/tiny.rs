//! Tiny synthetic models with deterministic random weights, written as real GGUF files with
//! `ferrite-gguf`'s writer (so every model test also round-trips the writer and reader).
//!
//! The vocabulary is byte-level BPE without merges: the 256 GPT-2 byte symbols plus a few control
//! tokens, so a tiny model also has a working tokenizer and a ChatML chat template.

use std::path::Path;

use ferrite_gguf::{Array, GgmlType, GgufWriter, Value};
use ferrite_kernels::quant::{quantize_row, QuantType};

use crate::rng::XorShift;

/// Control tokens appended after the 256 byte tokens, in id order.
pub const SPECIAL_TOKENS: [&str; 4] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|bos|>"];
/// Id of `<|im_end|>` (the EOS of tiny models).
pub const EOS_ID: u32 = 258;
/// Id of `<|bos|>`.
pub const BOS_ID: u32 = 259;

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Which architecture to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyArch {
    /// `llama`.
    Llama,
    /// `gemma3` (with sliding-window layers).
    Gemma3,
    /// `qwen3` (per-head q/k norms, NeoX RoPE).
    Qwen3,
    /// `qwen3moe` (Qwen3 attention, routed experts).
    Qwen3Moe,
    /// `deepseek2` (latent attention, routed and shared experts; shape in [`DeepseekShape`]).
    Deepseek2,
}

/// DeepSeek-specific shape of a tiny model (used when the arch is [`TinyArch::Deepseek2`]).
#[derive(Debug, Clone)]
pub struct DeepseekShape {
    /// Query low-rank width (0: a plain `attn_q`).
    pub q_lora: usize,
    /// Latent width.
    pub kv_lora: usize,
    /// Per-head query/key part without RoPE.
    pub nope: usize,
    /// Per-head RoPE part (and the shared key's).
    pub rope: usize,
    /// Per-head value width.
    pub v_head: usize,
    /// Leading dense layers.
    pub dense_layers: usize,
    /// Shared experts.
    pub shared: usize,
    /// Expert groups and groups kept (1, 1: no group limit).
    pub groups: (usize, usize),
    /// Sigmoid gating (else softmax).
    pub sigmoid: bool,
    /// Write a selection bias `exp_probs_b`.
    pub selection_bias: bool,
    /// Renormalize the chosen weights.
    pub norm: bool,
    /// Routed weights' scale.
    pub scale: f32,
    /// YaRN RoPE scaling: (factor, original context, `yarn_log_multiplier` as stored).
    pub yarn: Option<(f32, usize, f32)>,
}

impl TinyArch {
    /// Every architecture, for tests that cover them all.
    /// (DeepSeek is left out: the f32 reference does not implement it; the llama.cpp fixtures
    /// and the engine's tests cover it.)
    pub const ALL: [TinyArch; 4] = [
        TinyArch::Llama,
        TinyArch::Gemma3,
        TinyArch::Qwen3,
        TinyArch::Qwen3Moe,
    ];

    /// GGUF `general.architecture` name.
    pub fn name(self) -> &'static str {
        match self {
            TinyArch::Llama => "llama",
            TinyArch::Gemma3 => "gemma3",
            TinyArch::Qwen3 => "qwen3",
            TinyArch::Qwen3Moe => "qwen3moe",
            TinyArch::Deepseek2 => "deepseek2",
        }
    }
}

/// Shape and format of a tiny model.
#[derive(Debug, Clone)]
pub struct TinyModel {
    /// Architecture.
    pub arch: TinyArch,
    /// Vocabulary size (at least 260: bytes and control tokens).
    pub vocab: usize,
    /// Hidden size (a multiple of 256 so K-quants fit).
    pub dim: usize,
    /// Layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head size.
    pub head_dim: usize,
    /// Feed-forward size (a multiple of 256).
    pub ffn: usize,
    /// Format of the matrices (norms stay F32).
    pub quant: QuantType,
    /// Format of the embedding / output table.
    pub embed_quant: QuantType,
    /// RNG seed.
    pub seed: u64,
    /// Context length written to the metadata.
    pub context: usize,
    /// Gemma sliding window.
    pub window: usize,
    /// Whether BOS is added when encoding.
    pub add_bos: bool,
    /// Write a separate `output.weight` instead of tying it to the embedding.
    pub untied_output: bool,
    /// Routed experts (MoE architectures).
    pub experts: usize,
    /// Experts used per token.
    pub experts_used: usize,
    /// Inner size of one expert (a multiple of 256).
    pub expert_ffn: usize,
    /// DeepSeek shape.
    pub deepseek: DeepseekShape,
}

impl TinyModel {
    /// Defaults: 2 layers, dim 256, 4 heads of 64 over 2 KV heads, FFN 512, F32.
    pub fn new(arch: TinyArch) -> TinyModel {
        TinyModel {
            arch,
            vocab: 300,
            dim: 256,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            ffn: 512,
            quant: QuantType::F32,
            embed_quant: QuantType::F32,
            seed: 7,
            context: 256,
            window: 4,
            add_bos: false,
            untied_output: false,
            experts: 8,
            experts_used: 2,
            expert_ffn: 256,
            // Widths that K-quant rows take (multiples of 256 where they are a row's length).
            deepseek: DeepseekShape {
                q_lora: 256,
                kv_lora: 256,
                nope: 256,
                rope: 32,
                v_head: 64,
                dense_layers: 1,
                shared: 1,
                groups: (4, 2),
                sigmoid: true,
                selection_bias: true,
                norm: true,
                scale: 2.5,
                yarn: None,
            },
        }
    }

    /// Same model in another weight format (embedding included).
    pub fn quant(mut self, q: QuantType) -> TinyModel {
        self.quant = q;
        self.embed_quant = q;
        self
    }

    /// Every token uses every expert (MoE architectures): no top-k selection, whose
    /// discontinuity (two experts scoring alike swap under any perturbation, and the token's
    /// output jumps) would otherwise dominate comparisons of a quantized forward with the f32
    /// reference. Selection itself is checked against llama.cpp (`arch_fixtures`).
    pub fn every_expert(mut self) -> TinyModel {
        self.experts_used = self.experts;
        self
    }

    /// Other seed.
    pub fn seed(mut self, s: u64) -> TinyModel {
        self.seed = s;
        self
    }

    /// Encode the model as GGUF bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.writer().to_bytes().expect("tiny model is well-formed")
    }

    /// Write the model to `path`.
    pub fn write_to(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }

    /// The writer with all metadata and tensors (tests may add or change entries before writing).
    pub fn writer(&self) -> GgufWriter {
        assert!(self.vocab >= 256 + SPECIAL_TOKENS.len(), "vocab too small");
        let a = self.arch.name();
        let mut w = GgufWriter::new();
        let md = |w: &mut GgufWriter, k: &str, v: Value| w.add_metadata(k, v);
        md(&mut w, "general.architecture", Value::String(a.into()));
        md(&mut w, "general.name", Value::String(format!("tiny-{a}")));
        let u = |x: usize| Value::U32(x as u32);
        md(&mut w, &format!("{a}.context_length"), u(self.context));
        md(&mut w, &format!("{a}.embedding_length"), u(self.dim));
        md(&mut w, &format!("{a}.block_count"), u(self.layers));
        md(&mut w, &format!("{a}.feed_forward_length"), u(self.ffn));
        md(&mut w, &format!("{a}.attention.head_count"), u(self.heads));
        md(
            &mut w,
            &format!("{a}.attention.head_count_kv"),
            u(self.kv_heads),
        );
        md(
            &mut w,
            &format!("{a}.attention.key_length"),
            u(self.head_dim),
        );
        md(
            &mut w,
            &format!("{a}.attention.value_length"),
            u(self.head_dim),
        );
        md(
            &mut w,
            &format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        );
        md(
            &mut w,
            &format!("{a}.rope.dimension_count"),
            u(self.head_dim),
        );
        md(&mut w, &format!("{a}.rope.freq_base"), Value::F32(10000.0));
        if self.arch == TinyArch::Gemma3 {
            md(&mut w, "gemma3.attention.sliding_window", u(self.window));
            md(&mut w, "gemma3.attention.sliding_window_pattern", u(2));
            md(&mut w, "gemma3.rope.freq_base_swa", Value::F32(100.0));
        }
        if matches!(self.arch, TinyArch::Qwen3Moe | TinyArch::Deepseek2) {
            md(&mut w, &format!("{a}.expert_count"), u(self.experts));
            md(
                &mut w,
                &format!("{a}.expert_used_count"),
                u(self.experts_used),
            );
            md(
                &mut w,
                &format!("{a}.expert_feed_forward_length"),
                u(self.expert_ffn),
            );
        }
        if self.arch == TinyArch::Deepseek2 {
            let s = &self.deepseek;
            let entries = [
                ("attention.head_count_kv", u(1)),
                ("attention.key_length", u(s.kv_lora + s.rope)),
                ("attention.value_length", u(s.kv_lora)),
                ("attention.key_length_mla", u(s.nope + s.rope)),
                ("attention.value_length_mla", u(s.v_head)),
                ("attention.q_lora_rank", u(s.q_lora)),
                ("attention.kv_lora_rank", u(s.kv_lora)),
                ("rope.dimension_count", u(s.rope)),
                ("leading_dense_block_count", u(s.dense_layers)),
                ("expert_shared_count", u(s.shared)),
                ("expert_group_count", u(s.groups.0)),
                ("expert_group_used_count", u(s.groups.1)),
                ("expert_gating_func", u(if s.sigmoid { 2 } else { 1 })),
                ("expert_weights_norm", Value::Bool(s.norm)),
                ("expert_weights_scale", Value::F32(s.scale)),
            ];
            for (k, v) in entries {
                md(&mut w, &format!("deepseek2.{k}"), v);
            }
            if let Some((factor, orig, log_mul)) = s.yarn {
                let rs = |k: &str| format!("deepseek2.rope.scaling.{k}");
                md(&mut w, &rs("type"), Value::String("yarn".into()));
                md(&mut w, &rs("factor"), Value::F32(factor));
                md(&mut w, &rs("original_context_length"), u(orig));
                md(&mut w, &rs("yarn_log_multiplier"), Value::F32(log_mul));
            }
        }
        self.add_vocab(&mut w);
        self.add_weights(&mut w);
        w
    }

    fn add_vocab(&self, w: &mut GgufWriter) {
        let mut tokens: Vec<String> = byte_symbols().into_iter().map(String::from).collect();
        let mut types = vec![1i32; 256];
        for s in SPECIAL_TOKENS {
            tokens.push(s.to_string());
            types.push(3);
        }
        while tokens.len() < self.vocab {
            tokens.push(format!("<|unused{}|>", tokens.len()));
            types.push(5);
        }
        w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
        w.add_metadata("tokenizer.ggml.pre", Value::String("default".into()));
        w.add_metadata("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
        w.add_metadata("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
        w.add_metadata("tokenizer.ggml.merges", Value::Array(Array::String(vec![])));
        w.add_metadata("tokenizer.ggml.bos_token_id", Value::U32(BOS_ID));
        w.add_metadata("tokenizer.ggml.eos_token_id", Value::U32(EOS_ID));
        w.add_metadata("tokenizer.ggml.add_bos_token", Value::Bool(self.add_bos));
        w.add_metadata("tokenizer.chat_template", Value::String(CHATML.into()));
    }

    fn add_weights(&self, w: &mut GgufWriter) {
        let (d, q, kv, ff, hd) = (
            self.dim,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.ffn,
            self.head_dim,
        );
        // `dims`: ggml order, innermost (the row) first; every row is drawn with scale 1/√cols.
        let rng = std::cell::RefCell::new(XorShift::new(self.seed));
        let tensor = |w: &mut GgufWriter, name: &str, dims: &[usize], t: QuantType| {
            let (cols, rows) = (dims[0], dims[1..].iter().product::<usize>());
            // Rows that are not whole blocks of `t` fall back to Q8_0 (or F32), as
            // llama.cpp's quantizer falls back for such tensors.
            let t = match cols % t.block_size() {
                0 => t,
                _ if cols % 32 == 0 => QuantType::Q8_0,
                _ => QuantType::F32,
            };
            let scale = 1.0 / (cols as f32).sqrt();
            let mut rng = rng.borrow_mut();
            let data: Vec<f32> = (0..rows * cols).map(|_| rng.normal() * scale).collect();
            let rb = t.row_bytes(cols).expect("cols fit the block size");
            let mut bytes = vec![0u8; rb * rows];
            for (src, dst) in data.chunks(cols).zip(bytes.chunks_mut(rb)) {
                quantize_row(t, src, dst).expect("row sizes match");
            }
            let dims: Vec<u64> = dims.iter().map(|&x| x as u64).collect();
            w.add_tensor(name, &dims, ggml_type(t), &bytes)
                .expect("tensor is well-formed");
        };
        let matrix = |w: &mut GgufWriter, name: &str, rows: usize, cols: usize, t: QuantType| {
            tensor(w, name, &[cols, rows], t)
        };
        // Experts: `n` matrices of `rows × cols`, one 3-D tensor.
        let experts =
            |w: &mut GgufWriter, name: &str, n: usize, rows: usize, cols: usize, t: QuantType| {
                tensor(w, name, &[cols, rows, n], t)
            };
        let mut norm_rng = XorShift::new(self.seed ^ 0xABCD);
        let mut norm = |w: &mut GgufWriter, name: &str, n: usize| {
            let data: Vec<f32> = (0..n).map(|_| 1.0 + 0.1 * norm_rng.normal()).collect();
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.add_tensor(name, &[n as u64], GgmlType::F32, &bytes)
                .expect("tensor is well-formed");
        };
        // The embedding is scaled up so activations have a realistic magnitude.
        matrix(w, "token_embd.weight", self.vocab, d, self.embed_quant);
        norm(w, "output_norm.weight", d);
        if self.untied_output {
            matrix(w, "output.weight", self.vocab, d, self.embed_quant);
        }
        for i in 0..self.layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            norm(w, &n("attn_norm"), d);
            if self.arch == TinyArch::Deepseek2 {
                let s = &self.deepseek;
                let (h, t, e, eff) = (self.heads, self.quant, self.experts, self.expert_ffn);
                let head_k = s.nope + s.rope;
                if s.q_lora > 0 {
                    matrix(w, &n("attn_q_a"), s.q_lora, d, t);
                    norm(w, &n("attn_q_a_norm"), s.q_lora);
                    matrix(w, &n("attn_q_b"), h * head_k, s.q_lora, t);
                } else {
                    matrix(w, &n("attn_q"), h * head_k, d, t);
                }
                matrix(w, &n("attn_kv_a_mqa"), s.kv_lora + s.rope, d, t);
                norm(w, &n("attn_kv_a_norm"), s.kv_lora);
                experts(w, &n("attn_k_b"), h, s.kv_lora, s.nope, t);
                experts(w, &n("attn_v_b"), h, s.v_head, s.kv_lora, t);
                matrix(w, &n("attn_output"), d, h * s.v_head, t);
                norm(w, &n("ffn_norm"), d);
                if i < s.dense_layers {
                    matrix(w, &n("ffn_gate"), ff, d, t);
                    matrix(w, &n("ffn_up"), ff, d, t);
                    matrix(w, &n("ffn_down"), d, ff, t);
                    continue;
                }
                matrix(w, &n("ffn_gate_inp"), e, d, QuantType::F32);
                if s.selection_bias {
                    // Around 0 with a spread like the router's probabilities'.
                    let b: Vec<u8> = (0..e)
                        .flat_map(|j| (0.1 * ((j * 7 % 5) as f32 - 2.0)).to_le_bytes())
                        .collect();
                    w.add_tensor(
                        &format!("blk.{i}.exp_probs_b.bias"),
                        &[e as u64],
                        GgmlType::F32,
                        &b,
                    )
                    .expect("tensor is well-formed");
                }
                experts(w, &n("ffn_gate_exps"), e, eff, d, t);
                experts(w, &n("ffn_up_exps"), e, eff, d, t);
                experts(w, &n("ffn_down_exps"), e, d, eff, t);
                let sff = eff * s.shared;
                matrix(w, &n("ffn_gate_shexp"), sff, d, t);
                matrix(w, &n("ffn_up_shexp"), sff, d, t);
                matrix(w, &n("ffn_down_shexp"), d, sff, t);
                continue;
            }
            matrix(w, &n("attn_q"), q, d, self.quant);
            matrix(w, &n("attn_k"), kv, d, self.quant);
            matrix(w, &n("attn_v"), kv, d, self.quant);
            matrix(w, &n("attn_output"), d, q, self.quant);
            norm(w, &n("ffn_norm"), d);
            if self.arch == TinyArch::Qwen3Moe {
                let (e, eff) = (self.experts, self.expert_ffn);
                matrix(w, &n("ffn_gate_inp"), e, d, QuantType::F32);
                experts(w, &n("ffn_gate_exps"), e, eff, d, self.quant);
                experts(w, &n("ffn_up_exps"), e, eff, d, self.quant);
                experts(w, &n("ffn_down_exps"), e, d, eff, self.quant);
            } else {
                matrix(w, &n("ffn_gate"), ff, d, self.quant);
                matrix(w, &n("ffn_up"), ff, d, self.quant);
                matrix(w, &n("ffn_down"), d, ff, self.quant);
            }
            if matches!(
                self.arch,
                TinyArch::Gemma3 | TinyArch::Qwen3 | TinyArch::Qwen3Moe
            ) {
                norm(w, &n("attn_q_norm"), hd);
                norm(w, &n("attn_k_norm"), hd);
            }
            if self.arch == TinyArch::Gemma3 {
                norm(w, &n("post_attention_norm"), d);
                norm(w, &n("post_ffw_norm"), d);
            }
        }
    }
}

/// The GGUF type id of a kernel format.
pub fn ggml_type(t: QuantType) -> GgmlType {
    GgmlType::from_name(t.name()).expect("every kernel format is a ggml type")
}

/// GPT-2's byte-to-symbol table: printable bytes map to themselves, the rest to U+0100 onwards.
pub fn byte_symbols() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256u32;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("valid scalar")
            } else {
                let c = char::from_u32(next).expect("valid scalar");
                next += 1;
                c
            }
        })
        .collect()
}
