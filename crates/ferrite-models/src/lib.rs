//! Model architectures over GGUF weights: one readable forward pass per architecture, over a
//! batch of tokens from one or more sequences, with the KV cache behind [`KvStore`].
//!
//! Depends on `ferrite-kernels` (arithmetic) and `ferrite-gguf` (weights); knows nothing of
//! tokenizers, sampling or serving.
//!
//! The backend seam is the [`Model`] trait: a forward pass takes token ids, positions and
//! sequence slots, writes keys and values through [`KvStore`] and returns logits as host f32.
//! The CPU implementations compute with `ferrite-kernels`; a CUDA backend would implement
//! [`Model`] and [`KvStore`] over device memory from the same [`ModelConfig`] and weight
//! descriptions, without changing the engine.
//!
//! ```no_run
//! use ferrite_models::{load_model, ContiguousKvCache, ForwardBatch, LoadOptions};
//! let mut model = load_model("model.gguf", &LoadOptions::default()).unwrap();
//! let c = model.config().clone();
//! let mut kv = ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, 64, 1).unwrap();
//! let mut logits = Vec::new();
//! let batch = ForwardBatch { tokens: &[1, 2], positions: &[0, 1], slots: &[0, 0], logits_rows: &[1], kernel_groups: None };
//! model.forward(&batch, &mut kv, &mut logits).unwrap();
//! assert_eq!(logits.len(), c.vocab_size);
//! ```
#![forbid(unsafe_code)]

mod attention;
mod config;
pub mod cpu;
mod deepseek2;
mod gemma3;
mod kv;
mod llama;
mod moe;
mod prompt_attention;
pub mod quantize;
mod qwen3;
mod scratch;
pub mod weights;

use std::path::Path;
use std::sync::Arc;

pub use config::{Architecture, ExpertGating, MlaConfig, ModelConfig, MoeConfig};
pub use cpu::Cpu;
pub use deepseek2::Deepseek2;
pub use ferrite_kernels::ops::AttnAccum;
pub use ferrite_kernels::{Isa, Kernels};
pub use gemma3::Gemma3;
pub use kv::{ContiguousKvCache, KvFormat, KvShape, KvStore, KvVisitor, SeqSlot};
pub use llama::Llama;
pub use qwen3::Qwen3;

use ferrite_gguf::GgufFile;

/// Model errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file's `general.architecture` is not one ferrite implements.
    #[error("unsupported architecture {0:?} (supported: {list})", list = Architecture::ALL.map(Architecture::name).join(", "))]
    UnsupportedArchitecture(String),
    /// A tensor is stored in a format the kernels cannot compute with.
    #[error("tensor {tensor:?} has type {ggml_type}, which ferrite cannot compute with (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, MXFP4, NVFP4)")]
    UnsupportedTensorType {
        /// Tensor name.
        tensor: String,
        /// Its ggml type.
        ggml_type: String,
    },
    /// A required tensor is missing.
    #[error("missing tensor {0:?}")]
    MissingTensor(String),
    /// A tensor has the wrong shape.
    #[error("tensor {tensor:?} has shape {found}, expected {expected}")]
    TensorShape {
        /// Tensor name.
        tensor: String,
        /// Expected ggml dims.
        expected: String,
        /// Found dims.
        found: String,
    },
    /// Bad or missing hyper-parameters.
    #[error("model config: {0}")]
    Config(String),
    /// A batch that does not fit the model or cache.
    #[error("invalid batch: {0}")]
    Batch(String),
    /// A position past the KV cache's capacity.
    #[error("position {position} is past the context size {capacity}")]
    ContextFull {
        /// Position requested.
        position: usize,
        /// Positions available.
        capacity: usize,
    },
    /// A requantization that cannot or should not be done.
    #[error("quantize: {0}")]
    Quantize(String),
    /// A kernel rejected its inputs.
    #[error(transparent)]
    Kernel(#[from] ferrite_kernels::Error),
    /// The GGUF file is malformed.
    #[error(transparent)]
    Gguf(#[from] ferrite_gguf::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// One forward step: `tokens[i]` sits at `positions[i]` of sequence `slots[i]`; logits are wanted
/// for the tokens at indices `logits_rows`. Positions of one sequence must be consecutive within
/// the batch and follow what the cache already holds for it.
#[derive(Debug, Clone, Copy)]
pub struct ForwardBatch<'a> {
    /// Token ids.
    pub tokens: &'a [u32],
    /// Position of each token in its sequence.
    pub positions: &'a [usize],
    /// KV-cache slot of each token's sequence.
    pub slots: &'a [SeqSlot],
    /// Batch indices whose logits to return, in output order.
    pub logits_rows: &'a [usize],
    /// Per token, `(index, size)` of the group whose shape picks its kernel arithmetic (some
    /// kernels, like llama.cpp's, depend on the batch shape). `None`: the whole batch is one
    /// group, as for a single sequence. The engine passes each prefill chunk as its own group
    /// and each decode or draft row as a group of one, so a sequence's numbers do not depend on
    /// what else shares the batch, and speculative verification matches plain decoding.
    pub kernel_groups: Option<&'a [(usize, usize)]>,
}

impl ForwardBatch<'_> {
    fn validate(&self, cfg: &ModelConfig, capacity: usize) -> Result<()> {
        let n = self.tokens.len();
        if n == 0 {
            return Err(Error::Batch("empty batch".into()));
        }
        if self.positions.len() != n || self.slots.len() != n {
            return Err(Error::Batch(format!(
                "{n} tokens but {} positions and {} slots",
                self.positions.len(),
                self.slots.len()
            )));
        }
        if let Some(&t) = self.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(Error::Batch(format!(
                "token id {t} is outside the vocabulary of {}",
                cfg.vocab_size
            )));
        }
        if let Some(&p) = self.positions.iter().find(|&&p| p >= capacity) {
            return Err(Error::ContextFull {
                position: p,
                capacity,
            });
        }
        if self
            .kernel_groups
            .is_some_and(|g| g.len() != n || g.iter().any(|&(i, m)| i >= m))
        {
            return Err(Error::Batch(format!(
                "kernel groups must be {n} (index < size) pairs"
            )));
        }
        if let Some(&r) = self.logits_rows.iter().find(|&&r| r >= n) {
            return Err(Error::Batch(format!(
                "logits row {r} outside a batch of {n}"
            )));
        }
        Ok(())
    }
}

/// A model that can run forward passes. This is the backend seam (see the crate docs).
pub trait Model: Send + std::fmt::Debug {
    /// Hyper-parameters.
    fn config(&self) -> &ModelConfig;

    /// Kernels and threads this model runs on.
    fn cpu(&self) -> &Cpu;

    /// Run `batch`, storing its keys and values in `kv`, and write
    /// `batch.logits_rows.len() × vocab_size` logits into `logits`.
    fn forward(
        &mut self,
        batch: &ForwardBatch<'_>,
        kv: &mut dyn KvStore,
        logits: &mut Vec<f32>,
    ) -> Result<()>;
}

/// How to load a model.
#[derive(Clone)]
pub struct LoadOptions {
    /// Kernel family; `None` picks the best this CPU supports.
    pub isa: Option<Isa>,
    /// Threads for the kernels (the calling thread included).
    pub threads: usize,
    /// How attention accumulates values: f16 like llama.cpp (default) or f32.
    pub attn_accum: AttnAccum,
    /// How KV caches made for the model store rows (f16 by default, or Q8_0).
    pub kv_format: KvFormat,
    /// Observer of intermediate tensors (debugging).
    pub trace: Option<cpu::TraceFn>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("isa", &self.isa)
            .field("threads", &self.threads)
            .field("attn_accum", &self.attn_accum)
            .field("kv_format", &self.kv_format)
            .field("trace", &self.trace.is_some())
            .finish()
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            isa: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            attn_accum: AttnAccum::default(),
            kv_format: KvFormat::default(),
            trace: None,
        }
    }
}

/// Open `path` and load the model it holds.
pub fn load_model(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Box<dyn Model>> {
    let file = Arc::new(GgufFile::open(path)?);
    load_model_from(&file, opts)
}

/// Load the model in an already opened file.
pub fn load_model_from(file: &Arc<GgufFile>, opts: &LoadOptions) -> Result<Box<dyn Model>> {
    let cfg = ModelConfig::from_gguf(file)?;
    let kernels = match opts.isa {
        Some(isa) => Kernels::new(isa)?,
        None => Kernels::detect(),
    };
    let mut cpu = Cpu::new(kernels, opts.threads.max(1));
    cpu.attn_accum = opts.attn_accum;
    cpu.kv_format = opts.kv_format;
    cpu.trace = opts.trace.clone();
    tracing::debug!(arch = cfg.arch.name(), isa = %cpu.kernels.isa(), threads = opts.threads, "loading model");
    build(file, cfg, cpu)
}

fn build(file: &Arc<GgufFile>, cfg: ModelConfig, cpu: Cpu) -> Result<Box<dyn Model>> {
    Ok(match cfg.arch {
        Architecture::Llama => Box::new(Llama::load(file, cfg, cpu)?),
        Architecture::Gemma3 => Box::new(Gemma3::load(file, cfg, cpu)?),
        Architecture::Qwen3 | Architecture::Qwen3Moe => Box::new(Qwen3::load(file, cfg, cpu)?),
        Architecture::Deepseek2 => Box::new(Deepseek2::load(file, cfg, cpu)?),
    })
}

/// Load a draft model on the target's `cpu` (same kernels, same thread pool: the two never run
/// at once). `layers`: keep only the first `layers` blocks plus the final norm and output head
/// (layer-skip self-drafting from the target's own file).
pub fn load_draft_model(
    file: &Arc<GgufFile>,
    cpu: &Cpu,
    layers: Option<usize>,
) -> Result<Box<dyn Model>> {
    let mut cfg = ModelConfig::from_gguf(file)?;
    if let Some(l) = layers {
        if l == 0 || l > cfg.n_layers {
            return Err(Error::Config(format!(
                "draft layers must be between 1 and the model's {} layers, got {l}",
                cfg.n_layers
            )));
        }
        cfg.n_layers = l;
        cfg.sliding_layers.truncate(l);
    }
    build(file, cfg, cpu.clone())
}
