//! `ferrite eval greedy`: do a model and a reference give the same greedy answers? Reads the
//! prompt files of `ferrite bench quality` and computes the same numbers
//! (`ferrite_bench::quality`), in process and on token ids.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrite::setup::{Loaded, ModelArgs};
use ferrite_bench::quality::{compare_answers, read_prompts, Answer, QualityPrompt};
use ferrite_engine::generate::{GenerateRequest, Generator};
use ferrite_engine::sampling::SamplingParams;
use ferrite_tokenizer::{ChatMessage, EncodeOptions};
use serde_json::json;

use super::eval::{markdown_header, model_info, text_info, write_reports, ReportArgs};

/// `ferrite eval greedy` options.
#[derive(Debug, clap::Args)]
pub struct GreedyArgs {
    /// The model under test (`--model`), with the thread and ISA options both models use.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The reference model (same forms as --model; same tokenizer).
    #[arg(long)]
    pub reference: String,
    /// JSONL prompt file: `{"prompt": "..."}` or `{"messages": [...]}` per line, optional
    /// `"expect": "regex"`.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Tokens to generate per prompt.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub report: ReportArgs,
}

fn prompt_tokens(loaded: &Loaded, p: &QualityPrompt) -> Result<Vec<u32>> {
    let at = || format!("prompt on line {}", p.line);
    Ok(match (&p.prompt, &p.messages) {
        (Some(t), _) => loaded.tokenizer.encode(t, EncodeOptions::default())?,
        (None, Some(m)) => {
            let msgs: Vec<ChatMessage> = m
                .iter()
                .map(|v| serde_json::from_value(v.clone()))
                .collect::<std::result::Result<_, _>>()
                .with_context(|| format!("{}: messages need role and content", at()))?;
            loaded
                .tokenizer
                .encode_chat(&msgs, true)
                .with_context(at)?
                .1
        }
        (None, None) => anyhow::bail!("{}: empty", at()),
    })
}

/// Greedy continuation of every prompt.
fn continuations(
    loaded: Loaded,
    prompts: &[Vec<u32>],
    max_tokens: usize,
) -> Result<Vec<Answer<u32>>> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let ctx = (longest + max_tokens + 1).min(loaded.model.config().context_length);
    let mut gen = Generator::new(loaded.model, loaded.tokenizer, ctx)?;
    let mut out = Vec::new();
    for p in prompts {
        gen.reset();
        let req = GenerateRequest {
            prompt: p.clone(),
            max_tokens,
            sampling: SamplingParams::greedy(),
            stop: vec![],
            ignore_eos: false,
            prefill_splits: vec![],
        };
        let mut text = String::new();
        let stats = gen.generate(&req, &mut |t| text.push_str(t))?;
        out.push(Answer {
            tokens: Some(stats.tokens),
            text,
            tool_calls: vec![],
        });
    }
    Ok(out)
}

pub fn run(a: GreedyArgs) -> Result<()> {
    let model = a.model.load()?;
    let reference = a.model.load_spec(&a.reference)?;
    let prompts = read_prompts(&a.prompts)?;
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| prompt_tokens(&model, p))
        .collect::<Result<_>>()?;
    let ref_ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| prompt_tokens(&reference, p))
        .collect::<Result<_>>()?;
    anyhow::ensure!(
        ids == ref_ids,
        "the two models tokenize the prompts differently"
    );
    let (mpath, rpath) = (model.path.clone(), reference.path.clone());
    let start = std::time::Instant::now();
    let got = continuations(model, &ids, a.max_tokens)?;
    let want = continuations(reference, &ids, a.max_tokens)?;
    let (mut quality, per_prompt) = compare_answers(&prompts, &got, &want);
    quality["max_tokens"] = json!(a.max_tokens);
    quality["seconds"] = json!(start.elapsed().as_secs_f64());
    println!("{}", serde_json::to_string_pretty(&quality)?);
    let report = json!({
        "kind": "greedy",
        "date": chrono::Utc::now().to_rfc3339(),
        "ferrite_version": env!("CARGO_PKG_VERSION"),
        "text": text_info(&a.prompts)?,
        "ctx": null,
        "model": model_info(&mpath)?,
        "reference": model_info(&rpath)?,
        "quality": quality,
        "per_prompt": per_prompt,
    });
    let pct = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("n/a".into(), |v| format!("{:.1}%", 100.0 * v))
    };
    let md = format!(
        "{}(a = model, b = reference)\n\n| prompts | exact match | mean common prefix (tokens) | success (model) | success (reference) |\n\
         |---|---|---|---|---|\n| {} | {} | {:.1} of {} | {} | {} |\n",
        markdown_header(&report, "Greedy agreement"),
        prompts.len(),
        pct(&quality["exact_match_rate"]),
        quality["mean_common_prefix"].as_f64().unwrap_or(0.0),
        a.max_tokens,
        pct(&quality["a_success_rate"]),
        pct(&quality["b_success_rate"]),
    );
    write_reports(&a.report, &report, &md)
}
