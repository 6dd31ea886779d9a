//! `ferrite quantize`: requantize a GGUF model (see `ferrite_models::quantize`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ferrite_gguf::GgufFile;
use ferrite_kernels::quant::QuantType;
use ferrite_models::quantize::{quantize_model, QuantizeOptions, Target};

/// `ferrite quantize` options.
#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// Source model: a .gguf path, `smollm2`, `gemma3`, or `hf:owner/repo/file.gguf`.
    #[arg(long, short = 'i')]
    pub input: String,
    /// File to write.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Weight format: f32, f16, q8_0, q4_0, q4_k, mxfp4, nvfp4, nvfp4-2l (NVFP4 with the
    /// per-tensor FP32 second-level scale).
    #[arg(long = "type")]
    pub ty: String,
    /// Format for token_embd.weight and output.weight (default: the --type format).
    #[arg(long)]
    pub keep_output: Option<String>,
    /// Allow requantizing already-quantized weights to another lossy format.
    #[arg(long)]
    pub allow_requantize: bool,
    /// Worker threads (default: all cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: QuantizeArgs) -> Result<()> {
    let target = Target::parse(&a.ty)?;
    let keep_output = match a.keep_output.as_deref() {
        None => None,
        Some(s) => match Target::parse(s)? {
            Target::Plain(t) => Some(t),
            Target::Nvfp4TwoLevel => Some(QuantType::NVFP4),
        },
    };
    if a.output.exists() && !a.force {
        bail!(
            "{} exists; pass --force to overwrite it",
            a.output.display()
        );
    }
    let input = ferrite::hub::resolve_model(&a.input)?;
    if input.canonicalize().ok() == a.output.canonicalize().ok() {
        bail!("the output would overwrite the input {}", input.display());
    }
    let src =
        GgufFile::open(&input).with_context(|| format!("reading model {}", input.display()))?;
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let opts = QuantizeOptions {
        target,
        keep_output,
        allow_requantize: a.allow_requantize,
        threads,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tensors {msg}")
            .expect("invariant: static template"),
    );
    let start = std::time::Instant::now();
    let q = quantize_model(&src, &opts, &mut |done, total, name| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    })?;
    bar.finish_and_clear();
    // Write beside the target, then rename: a failure never leaves a truncated model.
    let tmp = a.output.with_extension("gguf.partial");
    q.writer
        .write_to(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.output)
        .with_context(|| format!("renaming {} to {}", tmp.display(), a.output.display()))?;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for p in &q.plan {
        let key = format!(
            "{} -> {}{}",
            p.from,
            p.to,
            if p.scale.is_some() { " +scale" } else { "" }
        );
        *counts.entry(key).or_default() += 1;
        if let Some(note) = &p.note {
            eprintln!("{}: {note}", p.name);
        }
    }
    for (k, n) in counts {
        eprintln!("{n:4} tensors {k}");
    }
    let (before, after) = (
        std::fs::metadata(&input)?.len(),
        std::fs::metadata(&a.output)?.len(),
    );
    eprintln!(
        "{} ({:.1} MiB) -> {} ({:.1} MiB) as {target} in {:.1} s",
        input.display(),
        before as f64 / 1048576.0,
        a.output.display(),
        after as f64 / 1048576.0,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
