//! Model hyper-parameters read from GGUF metadata and validated before any weight is touched.

use ferrite_gguf::{GgufFile, Value};
pub use ferrite_kernels::ops::Yarn;

use crate::{Error, Result};

/// Architectures ferrite implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama family (SmolLM2, Llama 2/3 without rope scaling, ...).
    Llama,
    /// Gemma 3 text models.
    Gemma3,
    /// Qwen3 dense models.
    Qwen3,
    /// Qwen3 mixture-of-experts models.
    Qwen3Moe,
    /// DeepSeek V2/V3/R1: multi-head latent attention and routed plus shared experts.
    Deepseek2,
}

impl Architecture {
    /// GGUF `general.architecture` name.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Gemma3 => "gemma3",
            Architecture::Qwen3 => "qwen3",
            Architecture::Qwen3Moe => "qwen3moe",
            Architecture::Deepseek2 => "deepseek2",
        }
    }

    /// Every architecture ferrite implements.
    pub const ALL: [Architecture; 5] = [
        Architecture::Llama,
        Architecture::Gemma3,
        Architecture::Qwen3,
        Architecture::Qwen3Moe,
        Architecture::Deepseek2,
    ];

    fn parse(s: &str) -> Result<Architecture> {
        Architecture::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| Error::UnsupportedArchitecture(s.to_string()))
    }
}

/// How a router's scores become expert probabilities (llama.cpp's
/// `llama_expert_gating_func_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertGating {
    /// Softmax over all experts.
    Softmax,
    /// An independent sigmoid per expert.
    Sigmoid,
}

/// Mixture-of-experts feed-forward settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    /// Routed experts per layer.
    pub n_experts: usize,
    /// Experts each token uses.
    pub n_used: usize,
    /// Inner size of one expert.
    pub expert_ffn_dim: usize,
    /// Router probabilities.
    pub gating: ExpertGating,
    /// Whether the chosen experts' weights are renormalized to sum to 1.
    pub norm_weights: bool,
    /// Factor applied to the weights (`expert_weights_scale`; 0 and 1 leave them).
    pub weights_scale: f32,
    /// Expert groups (group-limited routing when above 1).
    pub groups: usize,
    /// Groups each token keeps.
    pub groups_used: usize,
}

/// Multi-head latent attention (DeepSeek V2/V3): queries from a low-rank projection (or a plain
/// one), keys and values from one shared latent per token, attended in the latent space with
/// the per-head key projection absorbed into the query (llama.cpp's MLA path). The KV cache
/// holds `kv_lora + rope` values per token and layer, as one "KV head".
#[derive(Debug, Clone, PartialEq)]
pub struct MlaConfig {
    /// Rank of the query projection (`attn_q_a` → `attn_q_b`); 0: a plain `attn_q`.
    pub q_lora: usize,
    /// Width of the latent (`kv_lora_rank`), also each head's attention output width.
    pub kv_lora: usize,
    /// Per-head query/key part without position (`key_length_mla − rope`).
    pub nope: usize,
    /// Per-head part with RoPE (`rope.dimension_count`), shared by all heads on the key side.
    pub rope: usize,
    /// Per-head value width after `attn_v_b` (`value_length_mla`).
    pub v_head: usize,
}

/// Shape and numerics of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Architecture,
    /// `general.name`, when present.
    pub name: String,
    /// Layers.
    pub n_layers: usize,
    /// Hidden size.
    pub dim: usize,
    /// Feed-forward inner size.
    pub ffn_dim: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Per-head size of queries and keys.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding table).
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub context_length: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// RoPE base of full-attention layers.
    pub rope_base: f32,
    /// RoPE base of sliding-window layers (Gemma 3 local layers).
    pub rope_base_local: f32,
    /// Dimensions of each head that RoPE rotates.
    pub rope_dims: usize,
    /// Sliding window in tokens, for layers where [`ModelConfig::is_sliding`] holds.
    pub sliding_window: Option<usize>,
    /// Per layer: whether it uses the sliding window.
    pub sliding_layers: Vec<bool>,
    /// Multiplier of attention scores (applied to Q for Gemma, to Q·K for Llama).
    pub attention_scale: f32,
    /// Final logit soft-capping `c·tanh(x/c)`, when the file sets it.
    pub final_logit_softcap: Option<f32>,
    /// Attention logit soft-capping, when the file sets it.
    pub attn_logit_softcap: Option<f32>,
    /// YaRN RoPE scaling, when the file asks for it (DeepSeek only so far).
    pub rope_yarn: Option<Yarn>,
    /// Mixture-of-experts settings (MoE architectures only).
    pub moe: Option<MoeConfig>,
    /// Latent attention settings (DeepSeek only).
    pub mla: Option<MlaConfig>,
    /// Leading layers with a dense feed-forward before the MoE layers (DeepSeek).
    pub dense_layers: usize,
    /// Shared experts run on every token beside the routed ones (DeepSeek).
    pub shared_experts: usize,
}

fn key(arch: &str, k: &str) -> String {
    format!("{arch}.{k}")
}

fn usize_key(f: &GgufFile, k: &str) -> Result<usize> {
    match f.get(k) {
        None => Err(Error::Config(format!("missing metadata key {k}"))),
        Some(Value::Array(_)) => Err(Error::Config(format!(
            "{k} is a per-layer array; ferrite supports only a single value"
        ))),
        Some(v) => v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| Error::Config(format!("{k} is not a non-negative integer"))),
    }
}

fn opt_usize(f: &GgufFile, k: &str) -> Result<Option<usize>> {
    if f.get(k).is_none() {
        return Ok(None);
    }
    usize_key(f, k).map(Some)
}

fn opt_f32(f: &GgufFile, k: &str) -> Result<Option<f32>> {
    match f.get(k) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|x| Some(x as f32))
            .ok_or_else(|| Error::Config(format!("{k} is not a number"))),
    }
}

impl MoeConfig {
    /// Read and check the expert settings of architecture `a`.
    fn from_gguf(f: &GgufFile, a: &str) -> Result<MoeConfig> {
        let n_experts = usize_key(f, &key(a, "expert_count"))?;
        let n_used = usize_key(f, &key(a, "expert_used_count"))?;
        if n_experts == 0 || n_used == 0 || n_used > n_experts {
            return Err(Error::Config(format!(
                "{a}.expert_used_count {n_used} must be between 1 and {a}.expert_count {n_experts}"
            )));
        }
        let expert_ffn_dim = match opt_usize(f, &key(a, "expert_feed_forward_length"))? {
            Some(n) if n > 0 => n,
            // llama.cpp's fallback: the dense size shared among the used experts.
            _ => usize_key(f, &key(a, "feed_forward_length"))? / n_used,
        };
        if expert_ffn_dim == 0 {
            return Err(Error::Config(format!(
                "{a}.expert_feed_forward_length must be positive"
            )));
        }
        let deepseek = a == "deepseek2";
        // Qwen3-MoE routes with a softmax whatever the file says (llama.cpp's qwen3moe.cpp
        // hard-codes it; its test files write `expert_gating_func` 0). DeepSeek reads the key,
        // a missing or 0 value meaning softmax (V2 files; V3 files say sigmoid).
        let gating = match (deepseek, opt_usize(f, &key(a, "expert_gating_func"))?) {
            (true, Some(2)) => ExpertGating::Sigmoid,
            (true, None | Some(0 | 1)) | (false, _) => ExpertGating::Softmax,
            (true, Some(g)) => {
                return Err(Error::Config(format!(
                    "{a}.expert_gating_func {g} is not supported (1 softmax, 2 sigmoid)"
                )))
            }
        };
        // Group-limited routing only with more than one group (llama.cpp's test); files
        // without groups may write 0 for both counts.
        let groups = opt_usize(f, &key(a, "expert_group_count"))?
            .unwrap_or(0)
            .max(1);
        let groups_used = match groups {
            1 => 1,
            _ => opt_usize(f, &key(a, "expert_group_used_count"))?.unwrap_or(groups),
        };
        if n_experts % groups != 0 || groups_used == 0 || groups_used > groups {
            return Err(Error::Config(format!(
                "{a}.expert_group_count {groups} must divide expert_count {n_experts}, and \
                 expert_group_used_count {groups_used} be between 1 and it"
            )));
        }
        if groups > 1 && n_experts / groups < 2 {
            return Err(Error::Config(format!(
                "{a}.expert_group_count {groups} leaves fewer than 2 experts per group \
                 (a group scores its top two)"
            )));
        }
        if groups_used * (n_experts / groups) < n_used {
            return Err(Error::Config(format!(
                "{a}: {groups_used} of {groups} expert groups hold fewer than the \
                 {n_used} experts each token uses"
            )));
        }
        Ok(MoeConfig {
            n_experts,
            n_used,
            expert_ffn_dim,
            gating,
            // Qwen3-MoE always renormalizes and never scales (llama.cpp's qwen3moe.cpp passes
            // `true` and reads no scale key); DeepSeek reads both.
            norm_weights: !deepseek
                || f.get(&key(a, "expert_weights_norm"))
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            weights_scale: match deepseek {
                true => opt_f32(f, &key(a, "expert_weights_scale"))?.unwrap_or(0.0),
                false => 0.0,
            },
            groups,
            groups_used,
        })
    }
}

impl ModelConfig {
    /// Read and validate the configuration of the model in `f`.
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig> {
        let arch_name = f.metadata_str("general.architecture")?;
        let arch = Architecture::parse(arch_name)?;
        let a = arch_name;
        let n_layers = usize_key(f, &key(a, "block_count"))?;
        let dim = usize_key(f, &key(a, "embedding_length"))?;
        let moe = match arch {
            Architecture::Qwen3Moe | Architecture::Deepseek2 => Some(MoeConfig::from_gguf(f, a)?),
            _ => None,
        };
        // A MoE file may omit the dense size (llama.cpp then derives nothing from it).
        let ffn_dim = match (opt_usize(f, &key(a, "feed_forward_length"))?, &moe) {
            (Some(n), _) => n,
            (None, Some(m)) => m.expert_ffn_dim,
            (None, None) => usize_key(f, &key(a, "feed_forward_length"))?,
        };
        let n_heads = usize_key(f, &key(a, "attention.head_count"))?;
        let n_kv_heads = opt_usize(f, &key(a, "attention.head_count_kv"))?.unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::Config(format!(
                "{n_heads} query heads cannot be grouped over {n_kv_heads} key/value heads"
            )));
        }
        let head_dim = match opt_usize(f, &key(a, "attention.key_length"))? {
            Some(d) => d,
            None if dim % n_heads == 0 => dim / n_heads,
            None => {
                return Err(Error::Config(format!(
                    "embedding_length {dim} is not divisible by {n_heads} heads"
                )))
            }
        };
        if let Some(vd) = opt_usize(f, &key(a, "attention.value_length"))? {
            // DeepSeek's cached values are the first `kv_lora` of each key row (checked below).
            if vd != head_dim && arch != Architecture::Deepseek2 {
                return Err(Error::Config(format!(
                    "value_length {vd} differs from key_length {head_dim}; not supported"
                )));
            }
        }
        let rope_dims = opt_usize(f, &key(a, "rope.dimension_count"))?.unwrap_or(head_dim);
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(Error::Config(format!(
                "rope.dimension_count {rope_dims} must be even and at most the head size {head_dim}"
            )));
        }
        if let Some(v) = f.get(&key(a, "rope.scaling.type")).and_then(|v| v.as_str()) {
            // llama.cpp reads a linear factor of 0 (or none at all) as no scaling; YaRN is
            // read where the architecture implements it (`deepseek2_specifics`).
            let factor = opt_f32(f, &key(a, "rope.scaling.factor"))?.unwrap_or(0.0);
            let unscaled = v == "none" || (v == "linear" && (factor == 0.0 || factor == 1.0));
            let yarn_here = v == "yarn" && arch == Architecture::Deepseek2;
            if !unscaled && !yarn_here {
                return Err(Error::Config(format!(
                    "RoPE scaling {v:?} (factor {factor}) is not supported yet"
                )));
            }
        }
        if f.tensor("rope_freqs.weight").is_some() {
            return Err(Error::Config(
                "per-dimension RoPE frequency factors (rope_freqs.weight) are not supported yet"
                    .into(),
            ));
        }
        let vocab_size = match f.tensor("token_embd.weight") {
            Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
            _ => return Err(Error::Config("missing 2-D tensor token_embd.weight".into())),
        };
        let context_length = usize_key(f, &key(a, "context_length"))?;
        let norm_eps =
            opt_f32(f, &key(a, "attention.layer_norm_rms_epsilon"))?.ok_or_else(|| {
                Error::Config(format!("missing {a}.attention.layer_norm_rms_epsilon"))
            })?;
        let rope_base = opt_f32(f, &key(a, "rope.freq_base"))?.unwrap_or(10000.0);
        let name = f
            .get("general.name")
            .and_then(|v| v.as_str())
            .unwrap_or(arch_name)
            .to_string();

        let mut cfg = ModelConfig {
            arch,
            name,
            n_layers,
            dim,
            ffn_dim,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            context_length,
            norm_eps,
            rope_base,
            rope_base_local: rope_base,
            rope_dims,
            sliding_window: None,
            sliding_layers: vec![false; n_layers],
            attention_scale: 1.0 / (head_dim as f32).sqrt(),
            final_logit_softcap: None,
            attn_logit_softcap: None,
            rope_yarn: None,
            moe,
            mla: None,
            dense_layers: 0,
            shared_experts: 0,
        };
        if arch == Architecture::Deepseek2 {
            cfg.deepseek2_specifics(f)?;
        }
        if arch == Architecture::Gemma3 {
            cfg.gemma3_specifics(f)?;
        }
        if matches!(arch, Architecture::Qwen3 | Architecture::Qwen3Moe) && rope_dims != head_dim {
            // llama.cpp asserts the same (`n_embd_head == n_rot` in qwen3.cpp).
            return Err(Error::Config(format!(
                "{a}.rope.dimension_count {rope_dims} must equal the head size {head_dim}"
            )));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// DeepSeek V2/V3 (llama.cpp `llama_model_deepseek2::load_arch_hparams`): latent attention
    /// shapes, checked against each other; leading dense layers; shared experts; the router's
    /// gating, renormalization and scale as the file says (softmax when it says nothing).
    fn deepseek2_specifics(&mut self, f: &GgufFile) -> Result<()> {
        let a = "deepseek2";
        let (Some(k_mla), Some(v_mla)) = (
            opt_usize(f, &key(a, "attention.key_length_mla"))?,
            opt_usize(f, &key(a, "attention.value_length_mla"))?,
        ) else {
            return Err(Error::Config(
                "deepseek2 files without attention.key_length_mla / value_length_mla (the \
                 legacy attn_kv_b layout) are not supported yet; reconvert with a current \
                 llama.cpp"
                    .into(),
            ));
        };
        let kv_lora = usize_key(f, &key(a, "attention.kv_lora_rank"))?;
        let q_lora = opt_usize(f, &key(a, "attention.q_lora_rank"))?.unwrap_or(0);
        let rope = self.rope_dims;
        if k_mla <= rope {
            return Err(Error::Config(format!(
                "{a}.attention.key_length_mla {k_mla} must exceed rope.dimension_count {rope}"
            )));
        }
        if self.head_dim != kv_lora + rope {
            return Err(Error::Config(format!(
                "{a}.attention.key_length {} must equal kv_lora_rank {kv_lora} + \
                 rope.dimension_count {rope} (the cached latent row)",
                self.head_dim
            )));
        }
        if let Some(vd) = opt_usize(f, &key(a, "attention.value_length"))? {
            if vd != kv_lora {
                return Err(Error::Config(format!(
                    "{a}.attention.value_length {vd} must equal kv_lora_rank {kv_lora}"
                )));
            }
        }
        if self.n_kv_heads != 1 {
            return Err(Error::Config(format!(
                "{a}.attention.head_count_kv {} must be 1 (latent attention shares one KV row)",
                self.n_kv_heads
            )));
        }
        self.rope_dims = rope;
        self.mla = Some(MlaConfig {
            q_lora,
            kv_lora,
            nope: k_mla - rope,
            rope,
            v_head: v_mla,
        });
        // kq_scale = mscale² / √key_length_mla (mscale = 1 without YaRN).
        let mscale = self.deepseek2_yarn(f)?;
        self.attention_scale = mscale * mscale / (k_mla as f32).sqrt();
        self.dense_layers = opt_usize(f, &key(a, "leading_dense_block_count"))?.unwrap_or(0);
        if self.dense_layers > self.n_layers {
            return Err(Error::Config(format!(
                "{a}.leading_dense_block_count {} exceeds block_count {}",
                self.dense_layers, self.n_layers
            )));
        }
        self.shared_experts = usize_key(f, &key(a, "expert_shared_count"))?;
        if opt_usize(f, &key(a, "nextn_predict_layers"))?.unwrap_or(0) > 0 {
            return Err(Error::Config(format!(
                "{a}.nextn_predict_layers: files with MTP layers are not supported yet"
            )));
        }
        Ok(())
    }

    /// YaRN as llama.cpp sets it up for DeepSeek (`llama_context` and `deepseek2.cpp`): the
    /// RoPE scaling into `rope_yarn`, and the attention-score mscale returned. Only the
    /// factor, the original context and the log multiplier come from the file; llama.cpp
    /// keeps its defaults for the ramp (β 32 and 1) and the extrapolation weight (1).
    fn deepseek2_yarn(&mut self, f: &GgufFile) -> Result<f32> {
        let a = "deepseek2";
        let rope_attn_factor = opt_f32(f, &key(a, "rope.scaling.attn_factor"))?.unwrap_or(1.0);
        let kind = f.get(&key(a, "rope.scaling.type")).and_then(|v| v.as_str());
        if kind != Some("yarn") {
            return Ok(1.0);
        }
        let factor = opt_f32(f, &key(a, "rope.scaling.factor"))?.unwrap_or(0.0);
        if !(factor.is_finite() && factor > 0.0) {
            return Err(Error::Config(format!(
                "{a}.rope.scaling.factor {factor} must be positive for YaRN"
            )));
        }
        let freq_scale = 1.0 / factor;
        let n_ctx_orig = opt_usize(f, &key(a, "rope.scaling.original_context_length"))?
            .unwrap_or(self.context_length);
        // The converter stores 0.1 · mscale_all_dim; llama.cpp divides it back out.
        let log_mul = opt_f32(f, &key(a, "rope.scaling.yarn_log_multiplier"))?.unwrap_or(0.0) / 0.1;
        let get_mscale = |scale: f32, m: f32| {
            if scale <= 1.0 {
                1.0
            } else {
                0.1 * m * scale.ln() + 1.0
            }
        };
        let mut attn_factor = if log_mul != 0.0 {
            let mscale = if log_mul != 1.0 { log_mul } else { 1.0 };
            get_mscale(factor, mscale) / get_mscale(factor, log_mul)
        } else {
            get_mscale(factor, 1.0)
        };
        attn_factor /= 1.0 + 0.1 * factor.ln();
        attn_factor *= rope_attn_factor;
        self.rope_yarn = Some(Yarn {
            freq_scale,
            ext_factor: 1.0,
            attn_factor,
            corr_dims: Yarn::corr_dims(self.rope_dims, n_ctx_orig, self.rope_base, 32.0, 1.0),
        });
        let attn_factor_org = attn_factor * (1.0 + 0.1 * (1.0 / freq_scale).ln());
        Ok(attn_factor_org * (1.0 + 0.1 * log_mul * (1.0 / freq_scale).ln()))
    }

    /// Gemma 3 (llama.cpp `llama_model_gemma3::load_arch_hparams`): 5 of every 6 layers use a
    /// sliding window with RoPE base 10k unless the file says otherwise; scores are scaled by
    /// 1/√head_dim applied to Q.
    fn gemma3_specifics(&mut self, f: &GgufFile) -> Result<()> {
        // Only Gemma reads the soft-capping keys (other architectures' files may carry them
        // unused, as llama.cpp's test files do).
        self.final_logit_softcap =
            opt_f32(f, "gemma3.final_logit_softcapping")?.filter(|c| *c != 0.0);
        self.attn_logit_softcap =
            opt_f32(f, "gemma3.attn_logit_softcapping")?.filter(|c| *c != 0.0);
        if let Some(w) = opt_usize(f, "gemma3.attention.sliding_window")?.filter(|w| *w > 0) {
            self.sliding_window = Some(w);
            self.rope_base_local = opt_f32(f, "gemma3.rope.freq_base_swa")?.unwrap_or(10000.0);
            match f.get("gemma3.attention.sliding_window_pattern") {
                Some(Value::Array(arr)) => {
                    let flags = arr
                        .to_i64_vec()
                        .or_else(|| match arr {
                            ferrite_gguf::Array::Bool(b) => {
                                Some(b.iter().map(|&x| i64::from(x)).collect())
                            }
                            _ => None,
                        })
                        .ok_or_else(|| Error::Config("bad sliding_window_pattern array".into()))?;
                    if flags.len() != self.n_layers {
                        return Err(Error::Config(format!(
                            "sliding_window_pattern has {} entries for {} layers",
                            flags.len(),
                            self.n_layers
                        )));
                    }
                    self.sliding_layers = flags.iter().map(|&x| x != 0).collect();
                }
                other => {
                    let period = match other {
                        Some(v) => v.as_u64().unwrap_or(6) as usize,
                        None => 6,
                    };
                    self.sliding_layers = (0..self.n_layers)
                        .map(|il| period == 0 || il % period < period - 1)
                        .collect();
                }
            }
        }
        self.attention_scale = 1.0 / (self.head_dim as f32).sqrt();
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        let checks = [
            (self.n_layers > 0, "block_count must be positive"),
            (self.dim > 0, "embedding_length must be positive"),
            (self.ffn_dim > 0, "feed_forward_length must be positive"),
            (self.vocab_size > 0, "vocabulary must not be empty"),
            (self.context_length > 0, "context_length must be positive"),
            (
                self.norm_eps.is_finite() && self.norm_eps >= 0.0,
                "bad RMSNorm epsilon",
            ),
            (
                self.rope_base.is_finite() && self.rope_base > 0.0,
                "bad RoPE base",
            ),
        ];
        for (ok, msg) in checks {
            if !ok {
                return Err(Error::Config(msg.into()));
            }
        }
        Ok(())
    }

    /// Whether layer `il` attends through the sliding window.
    pub fn is_sliding(&self, il: usize) -> bool {
        self.sliding_window.is_some() && self.sliding_layers[il]
    }

    /// Query width (`n_heads · head_dim`).
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Key/value width (`n_kv_heads · head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// What a KV cache for this model holds: one latent row per position and layer for
    /// latent attention (values are its leading columns), else keys and values per KV head.
    pub fn kv_shape(&self) -> crate::KvShape {
        crate::KvShape {
            n_layers: self.n_layers,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            values_are_keys: self.mla.is_some(),
        }
    }
}
