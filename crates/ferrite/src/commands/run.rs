//! `ferrite run`: one prompt, streamed output.

use std::io::Write;

use anyhow::{bail, Context, Result};
use ferrite::setup::ModelArgs;
use ferrite_engine::{GenerateRequest, GenerationStats, Generator};
use ferrite_tokenizer::{ChatMessage, EncodeOptions};

use super::sampling::SamplingArgs;

/// `ferrite run` options.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt text. Special-token text such as `<|im_start|>` becomes the special token.
    #[arg(long, short = 'p', conflicts_with = "prompt_file")]
    pub prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, short = 'f')]
    pub prompt_file: Option<std::path::PathBuf>,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 128)]
    pub max_tokens: usize,
    /// Wrap the prompt in the model's chat template as one user message.
    #[arg(long)]
    pub chat: bool,
    /// Context size in tokens (default: prompt + max tokens, at most the model's).
    #[arg(long, short = 'c')]
    pub ctx_size: Option<usize>,
    /// Stop strings (repeatable); not printed.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(a: RunArgs) -> Result<()> {
    let prompt = match (&a.prompt, &a.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => bail!("give a prompt with --prompt TEXT or --prompt-file FILE"),
    };
    a.sampling.params().validate()?;
    let loaded = a.model.load()?;
    let tok = &loaded.tokenizer;
    let ids = if a.chat {
        super::chat::note_template_fallback(tok);
        tok.encode_chat(&[ChatMessage::new("user", prompt)], true)?
            .1
    } else {
        tok.encode(&prompt, EncodeOptions::default())?
    };
    let ctx = a
        .ctx_size
        .unwrap_or(ids.len() + a.max_tokens + 1)
        .min(loaded.model.config().context_length);
    let mut gen = Generator::new(loaded.model, loaded.tokenizer, ctx)?;
    let req = GenerateRequest {
        prompt: ids,
        max_tokens: a.max_tokens,
        sampling: a.sampling.params(),
        stop: a.stop.clone(),
        ignore_eos: a.ignore_eos,
        prefill_splits: vec![],
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let stats = gen.generate(&req, &mut |text| {
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    report(&stats);
    Ok(())
}

/// Timing line on stderr.
pub fn report(s: &GenerationStats) {
    eprintln!(
        "prompt: {} tokens ({} cached), {:.1} tok/s | generated: {} tokens, {:.1} tok/s | TTFT {:.1} ms | finish: {}",
        s.prompt_tokens,
        s.cached_tokens,
        s.prompt_tok_per_s(),
        s.generated_tokens,
        s.gen_tok_per_s(),
        s.time_to_first_token.as_secs_f64() * 1e3,
        s.finish_reason.as_str()
    );
}
