//! `ferrite chat`: multi-turn chat in the terminal. The KV cache is kept between turns, so each
//! turn only processes the new messages.

use std::io::{BufRead, Write};

use anyhow::{bail, Result};
use ferrite::setup::ModelArgs;
use ferrite_engine::{GenerateRequest, Generator};
use ferrite_tokenizer::{ChatMessage, TemplateSource, Tokenizer};

use super::sampling::SamplingArgs;

/// `ferrite chat` options.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System message.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens per reply.
    #[arg(long, short = 'n', default_value_t = 512)]
    pub max_tokens: usize,
    /// Context size in tokens (default: 4096, at most the model's).
    #[arg(long, short = 'c', default_value_t = 4096)]
    pub ctx_size: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Say so when a model without a template is chatted with in Gemma's turn format.
pub fn note_template_fallback(tok: &Tokenizer) {
    if tok
        .chat_template()
        .is_some_and(|t| t.source() == TemplateSource::BuiltinGemma)
    {
        eprintln!("ferrite: this model has no chat template; using Gemma's documented turn format (<start_of_turn>user ... <end_of_turn>)");
    }
}

pub fn run(a: ChatArgs) -> Result<()> {
    a.sampling.params().validate()?;
    let loaded = a.model.load()?;
    if loaded.tokenizer.chat_template().is_none() {
        bail!(
            "{} has no chat template; use `ferrite run` with a raw prompt",
            loaded.path.display()
        );
    }
    note_template_fallback(&loaded.tokenizer);
    let mut gen = Generator::new(loaded.model, loaded.tokenizer, a.ctx_size)?;
    let mut messages: Vec<ChatMessage> = a
        .system
        .iter()
        .map(|s| ChatMessage::new("system", s.clone()))
        .collect();
    eprintln!(
        "ferrite chat: {} — type a message, /reset to start over, /quit or Ctrl-D to leave",
        loaded.path.display()
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        let _ = std::io::stderr().flush();
        let Some(line) = lines.next() else { break };
        let line = line?;
        let text = line.trim();
        match text {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                messages.retain(|m| m.role == "system");
                gen.reset();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::new("user", text));
        let (_, ids) = gen.tokenizer().encode_chat(&messages, true)?;
        if ids.len() + 1 >= gen.context_size() {
            messages.pop();
            eprintln!(
                "(the conversation no longer fits the {}-token context; /reset to start over)",
                gen.context_size()
            );
            continue;
        }
        let req = GenerateRequest {
            prompt: ids,
            max_tokens: a.max_tokens,
            sampling: a.sampling.params(),
            stop: vec![],
            ignore_eos: false,
            prefill_splits: vec![],
        };
        let mut reply = String::new();
        let stdout = std::io::stdout();
        let stats = gen.generate(&req, &mut |t| {
            reply.push_str(t);
            let mut o = stdout.lock();
            let _ = o.write_all(t.as_bytes());
            let _ = o.flush();
        })?;
        println!();
        super::run::report(&stats);
        messages.push(ChatMessage::new("assistant", reply.trim().to_string()));
    }
    Ok(())
}
