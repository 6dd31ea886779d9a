//! `ferrite pull`: fetch known models into the cache.

use anyhow::{bail, Result};
use ferrite::hub::{models_dir, registry};

/// `ferrite pull` options.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Model names (smollm2, gemma3).
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub fn run(a: PullArgs) -> Result<()> {
    for name in &a.names {
        let Some(entry) = registry::find(name) else {
            bail!(
                "unknown model {name:?}; known: {}",
                registry::names().join(", ")
            );
        };
        let path = registry::pull(entry, &models_dir())?;
        println!("{}", path.display());
    }
    Ok(())
}
