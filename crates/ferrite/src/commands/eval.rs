//! `ferrite eval`: model quality measurements.

use anyhow::{Context, Result};
use ferrite::setup::ModelArgs;
use ferrite_engine::eval::perplexity;
use ferrite_tokenizer::EncodeOptions;

/// Evaluations.
#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Perplexity of a text file, with llama.cpp's protocol (`llama-perplexity`).
    Perplexity(PerplexityArgs),
}

/// `ferrite eval perplexity` options.
#[derive(Debug, clap::Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score.
    #[arg(long)]
    pub file: std::path::PathBuf,
    /// Context (chunk) size.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Print `{"ppl": ..., "tokens_scored": ..., "chunks": ...}` on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(c: EvalCommand) -> Result<()> {
    match c {
        EvalCommand::Perplexity(a) => run_perplexity(a),
    }
}

fn run_perplexity(a: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let mut loaded = a.model.load()?;
    // llama.cpp tokenizes the whole file with BOS (when the model adds it) and special-token parsing.
    let tokens = loaded.tokenizer.encode(&text, EncodeOptions::default())?;
    let bos = loaded
        .tokenizer
        .adds_bos()
        .then(|| loaded.tokenizer.bos())
        .flatten();
    let start = std::time::Instant::now();
    let r = perplexity(
        loaded.model.as_mut(),
        &tokens,
        a.ctx,
        bos,
        &mut |ch, ppl| {
            eprintln!("chunk {}: perplexity so far {ppl:.4}", ch + 1);
        },
    )?;
    eprintln!(
        "{}: {} tokens, {} chunks of {}, {} scored, {:.1} s",
        a.file.display(),
        tokens.len(),
        r.chunks,
        a.ctx,
        r.tokens_scored,
        start.elapsed().as_secs_f64()
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({"ppl": r.ppl, "tokens_scored": r.tokens_scored, "chunks": r.chunks})
        );
    } else {
        println!("perplexity: {:.4}", r.ppl);
    }
    Ok(())
}
