//! Loading a model and its tokenizer from command-line options.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use ferrite_gguf::GgufFile;
use ferrite_models::{load_model_from, Isa, KvFormat, LoadOptions, Model};
use ferrite_tokenizer::Tokenizer;

/// Options every model-using command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Model: a .gguf path, `smollm2`, `gemma3`, or `hf:owner/repo/file.gguf`.
    #[arg(long, short = 'm', env = "FERRITE_MODEL", default_value = "smollm2")]
    pub model: String,
    /// Kernel threads (default: all cores).
    #[arg(long, short = 't', env = "FERRITE_THREADS")]
    pub threads: Option<usize>,
    /// Force a kernel family: scalar, avx2, avx512, neon (default: the best this CPU has).
    #[arg(long, env = "FERRITE_FORCE_ISA")]
    pub isa: Option<String>,
    /// KV cache storage: f16 (llama.cpp's default) or q8_0 (half the memory and the bytes
    /// attention reads; the arithmetic of llama.cpp's `-ctk q8_0 -ctv q8_0 -fa on`).
    #[arg(long, env = "FERRITE_KV_CACHE_TYPE", default_value = "f16", value_parser = parse_kv_format)]
    pub kv_cache_type: KvFormat,
}

fn parse_kv_format(s: &str) -> std::result::Result<KvFormat, String> {
    KvFormat::parse(s).map_err(|e| e.to_string())
}

/// A loaded model with its tokenizer and the file it came from.
#[derive(Debug)]
pub struct Loaded {
    /// Resolved file.
    pub path: PathBuf,
    /// The opened file (mapped; a self-draft model loads its layers from it again).
    pub file: Arc<GgufFile>,
    /// The model.
    pub model: Box<dyn Model>,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
}

impl ModelArgs {
    /// Threads to use.
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// Resolve, open and load.
    pub fn load(&self) -> Result<Loaded> {
        self.load_spec(&self.model)
    }

    /// Resolve, open and load the model `spec` (same forms as `--model`) with these options.
    pub fn load_spec(&self, spec: &str) -> Result<Loaded> {
        let (path, file, model) = self.load_model_only(spec)?;
        let tokenizer = Tokenizer::from_gguf(&file)
            .with_context(|| format!("building the tokenizer of {}", path.display()))?;
        Ok(Loaded {
            path,
            file,
            model,
            tokenizer,
        })
    }

    /// [`load_spec`](Self::load_spec) without the tokenizer: for token-id inputs, and models
    /// with no text vocabulary.
    pub fn load_model_only(&self, spec: &str) -> Result<(PathBuf, Arc<GgufFile>, Box<dyn Model>)> {
        let path = crate::hub::resolve_model(spec)?;
        let file = Arc::new(
            GgufFile::open(&path).with_context(|| format!("reading model {}", path.display()))?,
        );
        let isa = self.isa.as_deref().map(Isa::parse).transpose()?;
        let model = load_model_from(
            &file,
            &LoadOptions {
                isa,
                threads: self.threads(),
                kv_format: self.kv_cache_type,
                ..Default::default()
            },
        )
        .with_context(|| format!("loading model {}", path.display()))?;
        Ok((path, file, model))
    }
}
