//! Download a GGUF file from a Hugging Face repository.
//!
//! URL: `{endpoint}/{owner}/{repo}/resolve/{revision}/{file}`. The hub reports the sha256 of
//! LFS files in `X-Linked-ETag` (or `ETag`); when it does, the download is verified against it and
//! the hash is kept beside the cached file so later runs verify the cache too.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::verify_cached;

/// A file in a Hugging Face repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfFile {
    /// `owner/name`.
    pub repo: String,
    /// Branch, tag or commit.
    pub revision: String,
    /// Path inside the repository.
    pub file: String,
}

impl HfFile {
    /// Parse `hf:owner/repo[@rev]/path/file.gguf` or `owner/repo[@rev]:path/file.gguf`.
    pub fn parse(spec: &str) -> Option<HfFile> {
        let (repo_part, file) = if let Some(rest) = spec.strip_prefix("hf:") {
            let mut it = rest.splitn(3, '/');
            let (owner, name, file) = (it.next()?, it.next()?, it.next()?);
            (format!("{owner}/{name}"), file.to_string())
        } else {
            let (repo, file) = spec.split_once(':')?;
            if repo.matches('/').count() != 1 {
                return None;
            }
            (repo.to_string(), file.to_string())
        };
        let (repo, revision) = match repo_part.split_once('@') {
            Some((r, rev)) => (r.to_string(), rev.to_string()),
            None => (repo_part, "main".to_string()),
        };
        let valid = |s: &str| !s.is_empty() && !s.contains("..") && !s.starts_with('/');
        if !valid(&repo) || !valid(&file) || !valid(&revision) || !repo.contains('/') {
            return None;
        }
        Some(HfFile {
            repo,
            revision,
            file,
        })
    }

    /// Where it is cached under `dir`.
    pub fn cache_path(&self, dir: &Path) -> PathBuf {
        dir.join("hf")
            .join(&self.repo)
            .join(&self.revision)
            .join(&self.file)
    }
}

/// `$FERRITE_HF_ENDPOINT`, else `$HF_ENDPOINT`, else the public hub.
pub fn endpoint() -> String {
    std::env::var("FERRITE_HF_ENDPOINT")
        .or_else(|_| std::env::var("HF_ENDPOINT"))
        .unwrap_or_else(|_| "https://huggingface.co".to_string())
        .trim_end_matches('/')
        .to_string()
}

fn sha_from_headers(h: &reqwest::header::HeaderMap) -> Option<String> {
    ["x-linked-etag", "etag"].iter().find_map(|k| {
        let v = h.get(*k)?.to_str().ok()?;
        let v = v
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_ascii_lowercase();
        (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())).then_some(v)
    })
}

/// The cached file, downloading it from [`endpoint`] first if needed.
pub fn download(f: &HfFile, dir: &Path) -> Result<PathBuf> {
    download_from(&endpoint(), f, dir)
}

/// [`download`] from an explicit hub endpoint (tests use a local server).
pub fn download_from(endpoint: &str, f: &HfFile, dir: &Path) -> Result<PathBuf> {
    let dest = f.cache_path(dir);
    let sha_file = dest.with_extension("gguf.sha256");
    if dest.is_file() {
        match std::fs::read_to_string(&sha_file) {
            Ok(sha) if verify_cached(&dest, sha.trim())? => return Ok(dest),
            Ok(_) => eprintln!(
                "ferrite: cached {} fails its sha256 check; downloading again",
                dest.display()
            ),
            Err(_) => return Ok(dest), // the hub gave no hash; nothing to check against
        }
    }
    let url = format!(
        "{}/{}/resolve/{}/{}",
        endpoint.trim_end_matches('/'),
        f.repo,
        f.revision,
        f.file
    );
    eprintln!("ferrite: downloading {url}");
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let mut req = client.get(&url);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        req = req.bearer_auth(token);
    }
    let mut resp = req.send().with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 | 403 => " (a gated or private repository: set HF_TOKEN)",
            404 => " (check the repository, revision and file name)",
            _ => "",
        };
        bail!("downloading {url} failed: HTTP {status}{hint}");
    }
    let expected = sha_from_headers(resp.headers());
    let total = resp.content_length();
    let parent = dest.parent().context("cache path has a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = dest.with_extension(format!("part-{}", std::process::id()));
    let mut out =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let (mut done, mut shown) = (0u64, 0u64);
    loop {
        let n = resp
            .read(&mut buf)
            .with_context(|| format!("reading {url}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("writing {}", tmp.display()))?;
        done += n as u64;
        if let Some(t) = total.filter(|t| *t > 0) {
            let pct = done * 100 / t;
            if pct >= shown + 10 {
                shown = pct;
                eprintln!("ferrite: {pct}% of {} MB", t / 1_000_000);
            }
        }
    }
    out.flush().context("flushing the download")?;
    drop(out);
    if let Some(t) = total {
        if done != t {
            let _ = std::fs::remove_file(&tmp);
            bail!("download of {url} ended after {done} of {t} bytes");
        }
    }
    let got = hex::encode(hasher.finalize());
    if let Some(want) = &expected {
        if *want != got {
            let _ = std::fs::remove_file(&tmp);
            bail!("downloaded {url} has sha256 {got}, but the hub says {want}; refusing to use it");
        }
        std::fs::write(&sha_file, want)
            .with_context(|| format!("writing {}", sha_file.display()))?;
    }
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("moving the download to {}", dest.display()))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings() {
        let a = HfFile::parse("hf:owner/repo/sub/model.gguf").unwrap();
        assert_eq!(
            (a.repo.as_str(), a.revision.as_str(), a.file.as_str()),
            ("owner/repo", "main", "sub/model.gguf")
        );
        let b = HfFile::parse("owner/repo@v1:model.gguf").unwrap();
        assert_eq!(
            (b.repo.as_str(), b.revision.as_str(), b.file.as_str()),
            ("owner/repo", "v1", "model.gguf")
        );
        assert!(HfFile::parse("smollm2").is_none());
        assert!(HfFile::parse("hf:owner/repo/../../etc/passwd").is_none());
        assert!(HfFile::parse("a/b/c:file.gguf").is_none());
    }
}
