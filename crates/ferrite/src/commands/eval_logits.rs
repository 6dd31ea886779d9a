//! `ferrite eval logits`: the raw logits of a token-id prompt and its greedy continuation, the
//! form `scripts/reference-logits.sh` gives for llama.cpp, so new architectures are checked
//! against it number by number (models without a text vocabulary included).

use anyhow::{Context, Result};
use ferrite::setup::ModelArgs;
use ferrite_engine::eval::token_logits;
use serde_json::json;

/// `ferrite eval logits` options.
#[derive(Debug, clap::Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated token ids, evaluated as one prompt batch.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tokens: Vec<String>,
    /// Greedy tokens to decode one at a time after the prompt.
    #[arg(long, default_value_t = 0)]
    pub generate: usize,
    /// Print `{"n_vocab": V, "logits": [[V floats] per position], "greedy": [ids]}`.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: LogitsArgs) -> Result<()> {
    let tokens = a
        .tokens
        .iter()
        .map(|t| {
            t.trim()
                .parse::<u32>()
                .with_context(|| format!("--tokens: {t:?} is not a token id"))
        })
        .collect::<Result<Vec<u32>>>()?;
    let (_, _, mut model) = a.model.load_model_only(&a.model.model)?;
    let out = token_logits(model.as_mut(), &tokens, a.generate)?;
    if a.json {
        println!(
            "{}",
            json!({"n_vocab": out.n_vocab, "logits": out.logits, "greedy": out.greedy})
        );
        return Ok(());
    }
    for (pos, row) in out.logits.iter().enumerate() {
        let mut top: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
        top.sort_by(|x, y| y.1.total_cmp(&x.1));
        let shown: Vec<String> = top[..top.len().min(3)]
            .iter()
            .map(|(id, v)| format!("{id}:{v:.4}"))
            .collect();
        println!(
            "position {pos} (token {}): top {}",
            tokens[pos],
            shown.join(" ")
        );
    }
    println!("greedy: {:?}", out.greedy);
    Ok(())
}
