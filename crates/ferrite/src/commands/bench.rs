//! `ferrite bench`: measurements. `bench model` times prompt processing and generation the way
//! llama-bench does (`pp` = one batch of `-p` tokens, `tg` = `-n` single-token steps from an
//! empty context, random tokens, logits computed every step), so the two compare directly.

use std::time::Instant;

use anyhow::Result;
use ferrite::setup::ModelArgs;
use ferrite_models::{ContiguousKvCache, ForwardBatch, Model};

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Prompt-processing and generation throughput of a model (llama-bench's pp / tg).
    Model(ModelBenchArgs),
}

/// `ferrite bench model` options.
#[derive(Debug, clap::Args)]
pub struct ModelBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens per pp run (0 skips pp).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens per tg run (0 skips tg).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Repetitions (after one warm-up run of each).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(c: BenchCommand) -> Result<()> {
    match c {
        BenchCommand::Model(a) => model(a),
    }
}

/// A deterministic token stream (llama-bench draws random tokens too; values do not matter).
fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect()
}

fn pp(
    m: &mut dyn Model,
    kv: &mut ContiguousKvCache,
    n: usize,
    logits: &mut Vec<f32>,
) -> Result<f64> {
    let c = m.config().clone();
    let toks = tokens(n, c.vocab_size, 42);
    let pos: Vec<usize> = (0..n).collect();
    let slots = vec![0; n];
    let t = Instant::now();
    // One batch, as llama-bench with its default batch size of 2048 (ubatch 512) for pp512.
    for (chunk_toks, chunk_pos) in toks.chunks(512).zip(pos.chunks(512)) {
        let b = ForwardBatch {
            tokens: chunk_toks,
            positions: chunk_pos,
            slots: &slots[..chunk_toks.len()],
            logits_rows: &[chunk_toks.len() - 1],
            kernel_groups: None,
        };
        m.forward(&b, kv, logits)?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn tg(
    m: &mut dyn Model,
    kv: &mut ContiguousKvCache,
    n: usize,
    logits: &mut Vec<f32>,
) -> Result<f64> {
    let toks = tokens(n, m.config().vocab_size, 7);
    let t = Instant::now();
    for (p, tok) in toks.iter().enumerate() {
        let b = ForwardBatch {
            tokens: std::slice::from_ref(tok),
            positions: &[p],
            slots: &[0],
            logits_rows: &[0],
            kernel_groups: None,
        };
        m.forward(&b, kv, logits)?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Mean and sample standard deviation.
fn stats(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64;
    (mean, var.sqrt())
}

fn model(a: ModelBenchArgs) -> Result<()> {
    let mut loaded = a.model.load()?;
    let m = loaded.model.as_mut();
    let c = m.config().clone();
    let ctx = a.n_prompt.max(a.n_gen).max(1);
    let mut kv = ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, ctx, 1)?;
    let mut logits = Vec::new();
    let reps = a.repetitions.max(1);
    let mut results = Vec::new();
    if a.n_prompt > 0 {
        pp(m, &mut kv, a.n_prompt, &mut logits)?; // warm-up
        let v = (0..reps)
            .map(|_| pp(m, &mut kv, a.n_prompt, &mut logits))
            .collect::<Result<Vec<_>>>()?;
        results.push((format!("pp{}", a.n_prompt), stats(&v)));
    }
    if a.n_gen > 0 {
        tg(m, &mut kv, a.n_gen.min(16), &mut logits)?; // warm-up
        let v = (0..reps)
            .map(|_| tg(m, &mut kv, a.n_gen, &mut logits))
            .collect::<Result<Vec<_>>>()?;
        results.push((format!("tg{}", a.n_gen), stats(&v)));
    }
    let name = loaded
        .path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let threads = a.model.threads();
    if a.json {
        let get = |p: &str| {
            results
                .iter()
                .find(|(k, _)| k.starts_with(p))
                .map(|(_, s)| s.0)
        };
        println!(
            "{}",
            serde_json::json!({
                "pp_tok_s": get("pp"),
                "tg_tok_s": get("tg"),
                "threads": threads,
                "model": name,
                "isa": m.cpu().kernels.isa().name(),
                "repetitions": reps,
            })
        );
    } else {
        println!("| model | threads | isa | test | t/s |");
        println!("|---|---|---|---|---|");
        for (test, (mean, sd)) in &results {
            println!(
                "| {name} | {threads} | {} | {test} | {mean:.2} ± {sd:.2} |",
                m.cpu().kernels.isa()
            );
        }
    }
    Ok(())
}
