//! `ferrite eval`: model quality measurements, each with a dated report (JSON and Markdown)
//! naming the model files by sha256 and their formats.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ferrite::setup::{Loaded, ModelArgs};
use ferrite_engine::eval::{compare, perplexity};
use ferrite_gguf::GgufFile;
use ferrite_tokenizer::EncodeOptions;
use serde_json::{json, Value};

/// Evaluations.
#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Perplexity of a text file, with llama.cpp's protocol (`llama-perplexity`).
    Perplexity(PerplexityArgs),
    /// KL divergence, top-1 agreement and perplexity of a model against a reference model on
    /// the same tokens (`llama-perplexity --kl-divergence`'s protocol).
    Compare(CompareArgs),
    /// Greedy continuations of a prompt set from a model and a reference: exact-match rate,
    /// mean common prefix, and task success where prompts carry an `expect` regex.
    Greedy(super::eval_greedy::GreedyArgs),
    /// Logits of every position of a token-id prompt and N greedy tokens after it, as JSON
    /// comparable with `scripts/reference-logits.sh` (llama.cpp through its C API).
    Logits(super::eval_logits::LogitsArgs),
}

/// Where to write reports.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub report_json: Option<PathBuf>,
    /// Write the report as Markdown to this file.
    #[arg(long)]
    pub report_md: Option<PathBuf>,
}

/// `ferrite eval perplexity` options.
#[derive(Debug, clap::Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score.
    #[arg(long)]
    pub file: PathBuf,
    /// Context (chunk) size.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Print `{"ppl": ..., "tokens_scored": ..., "chunks": ...}` on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub report: ReportArgs,
}

/// `ferrite eval compare` options.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The model under test (`--model`), with the thread and ISA options both models use.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The reference model, usually the source or its F16/F32 copy (`ferrite quantize --type
    /// f16`). Same forms as --model; it must share the tokenizer.
    #[arg(long)]
    pub reference: String,
    /// Text file to score.
    #[arg(long)]
    pub file: PathBuf,
    /// Context (chunk) size.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Score only the first N chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    #[command(flatten)]
    pub report: ReportArgs,
}

pub fn run(c: EvalCommand) -> Result<()> {
    match c {
        EvalCommand::Perplexity(a) => run_perplexity(a),
        EvalCommand::Compare(a) => run_compare(a),
        EvalCommand::Greedy(a) => super::eval_greedy::run(a),
        EvalCommand::Logits(a) => super::eval_logits::run(a),
    }
}

fn read_text(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// The text's tokens as llama.cpp's perplexity tool makes them (whole file, BOS when the model
/// adds it, special tokens parsed), and the BOS to put at each chunk's start.
fn tokens_of(loaded: &Loaded, text: &str) -> Result<(Vec<u32>, Option<u32>)> {
    let tokens = loaded.tokenizer.encode(text, EncodeOptions::default())?;
    let bos = loaded
        .tokenizer
        .adds_bos()
        .then(|| loaded.tokenizer.bos())
        .flatten();
    Ok((tokens, bos))
}

fn run_perplexity(a: PerplexityArgs) -> Result<()> {
    let mut loaded = a.model.load()?;
    let (tokens, bos) = tokens_of(&loaded, &read_text(&a.file)?)?;
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
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{}: {} tokens, {} chunks of {}, {} scored, {secs:.1} s",
        a.file.display(),
        tokens.len(),
        r.chunks,
        a.ctx,
        r.tokens_scored,
    );
    if a.json {
        println!(
            "{}",
            json!({"ppl": r.ppl, "tokens_scored": r.tokens_scored, "chunks": r.chunks})
        );
    } else {
        println!("perplexity: {:.4}", r.ppl);
    }
    if a.report.report_json.is_some() || a.report.report_md.is_some() {
        let report = json!({
            "kind": "perplexity",
            "date": chrono::Utc::now().to_rfc3339(),
            "ferrite_version": env!("CARGO_PKG_VERSION"),
            "text": text_info(&a.file)?,
            "ctx": a.ctx,
            "model": model_info(&loaded.path)?,
            "results": {"ppl": r.ppl, "tokens_scored": r.tokens_scored, "chunks": r.chunks,
                        "seconds": secs},
        });
        let md = format!(
            "{}| perplexity | tokens scored | chunks |\n|---|---|---|\n| {:.4} | {} | {} |\n",
            markdown_header(&report, "Perplexity"),
            r.ppl,
            r.tokens_scored,
            r.chunks
        );
        write_reports(&a.report, &report, &md)?;
    }
    Ok(())
}

fn run_compare(a: CompareArgs) -> Result<()> {
    let mut model = a.model.load()?;
    let mut reference = a.model.load_spec(&a.reference)?;
    let text = read_text(&a.file)?;
    let (mut tokens, bos) = tokens_of(&model, &text)?;
    let (ref_tokens, _) = tokens_of(&reference, &text)?;
    anyhow::ensure!(
        tokens == ref_tokens,
        "the two models tokenize {} differently; KL divergence needs the same vocabulary",
        a.file.display()
    );
    if let Some(n) = a.chunks {
        tokens.truncate(n.saturating_mul(a.ctx));
    }
    let start = std::time::Instant::now();
    let c = compare(
        model.model.as_mut(),
        reference.model.as_mut(),
        &tokens,
        a.ctx,
        bos,
        &mut |ch, kl| eprintln!("chunk {}: mean KL so far {kl:.6}", ch + 1),
    )?;
    let secs = start.elapsed().as_secs_f64();
    let report = json!({
        "kind": "compare",
        "date": chrono::Utc::now().to_rfc3339(),
        "ferrite_version": env!("CARGO_PKG_VERSION"),
        "text": text_info(&a.file)?,
        "ctx": a.ctx,
        "model": model_info(&model.path)?,
        "reference": model_info(&reference.path)?,
        "results": {
            "kl_mean": c.kl_mean, "kl_median": c.kl_median, "kl_p99": c.kl_p99,
            "kl_max": c.kl_max, "top1_agreement": c.top1_agreement,
            "ppl": c.ppl, "ppl_reference": c.ppl_reference,
            "tokens_scored": c.tokens_scored, "chunks": c.chunks, "seconds": secs,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report["results"])?);
    let md = format!(
        "{}| | model | reference |\n|---|---|---|\n| file | {} | {} |\n| perplexity | {:.4} | {:.4} |\n\n\
         | mean KL | median KL | p99 KL | max KL | top-1 agreement | positions |\n|---|---|---|---|---|---|\n\
         | {:.6} | {:.6} | {:.6} | {:.4} | {:.2}% | {} |\n",
        markdown_header(&report, "Model comparison"),
        file_name(&model.path),
        file_name(&reference.path),
        c.ppl,
        c.ppl_reference,
        c.kl_mean,
        c.kl_median,
        c.kl_p99,
        c.kl_max,
        100.0 * c.top1_agreement,
        c.tokens_scored
    );
    write_reports(&a.report, &report, &md)?;
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}

pub(super) fn text_info(path: &Path) -> Result<Value> {
    Ok(json!({"path": path.display().to_string(), "sha256": ferrite::hub::sha256_file(path)?}))
}

/// Path, size, sha256, `general.file_type` and the count of tensors per format.
pub(super) fn model_info(path: &Path) -> Result<Value> {
    let f = GgufFile::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut types = std::collections::BTreeMap::<&str, usize>::new();
    for t in f.tensors() {
        *types.entry(t.ggml_type.name()).or_default() += 1;
    }
    let scales = f
        .tensors()
        .iter()
        .filter(|t| t.name.ends_with(".scale"))
        .count();
    Ok(json!({
        "path": path.display().to_string(),
        "bytes": std::fs::metadata(path)?.len(),
        "sha256": ferrite::hub::sha256_file(path)?,
        "file_type": f.metadata_u64("general.file_type").ok(),
        "tensor_types": types,
        "scale_tensors": scales,
    }))
}

pub(super) fn markdown_header(report: &Value, title: &str) -> String {
    let mut s = format!(
        "## {title}\n\n- date: {}\n- ferrite {}\n- text: `{}` (sha256 {})\n",
        report["date"].as_str().unwrap_or(""),
        report["ferrite_version"].as_str().unwrap_or(""),
        report["text"]["path"].as_str().unwrap_or(""),
        report["text"]["sha256"].as_str().unwrap_or(""),
    );
    if !report["ctx"].is_null() {
        s.push_str(&format!("- ctx: {}\n", report["ctx"]));
    }
    for key in ["model", "reference"] {
        let m = &report[key];
        if m.is_null() {
            continue;
        }
        s.push_str(&format!(
            "- {key}: `{}`, {} bytes, sha256 {}, tensors {}{}\n",
            m["path"].as_str().unwrap_or(""),
            m["bytes"],
            m["sha256"].as_str().unwrap_or(""),
            m["tensor_types"],
            match m["scale_tensors"].as_u64() {
                Some(0) | None => String::new(),
                Some(n) => format!(" (+{n} second-level scales)"),
            }
        ));
    }
    s.push('\n');
    s
}

pub(super) fn write_reports(r: &ReportArgs, report: &Value, md: &str) -> Result<()> {
    if let Some(p) = &r.report_json {
        std::fs::write(p, serde_json::to_string_pretty(report)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &r.report_md {
        std::fs::write(p, md).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
