//! `ferrite bench`: measurements. `bench model` times prompt processing and generation the way
//! llama-bench does (`pp` = one batch of `-p` tokens, `tg` = `-n` single-token steps from an
//! empty context, random tokens, logits computed every step), so the two compare directly.

use std::time::Instant;

use anyhow::{Context, Result};
use ferrite::setup::ModelArgs;
use ferrite_models::{ContiguousKvCache, ForwardBatch, Model};

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Prompt-processing and generation throughput of a model (llama-bench's pp / tg).
    Model(ModelBenchArgs),
    /// Load an OpenAI-compatible endpoint and report latency and throughput with formulas.
    Run(RunBenchArgs),
    /// The run workload at several concurrencies (throughput vs latency), one row each.
    Sweep(SweepArgs),
    /// Run a workload and check claims (`--claim "output_speed_tok_s.p50>=230"`); exit 1 if
    /// any fails.
    Verify(VerifyArgs),
    /// Send the same prompts greedily to two endpoints and compare the answers: exact-match
    /// rate, mean common prefix, task success on prompts with an `expect` regex.
    Quality(QualityArgs),
    /// One workload against several endpoints in one run, interleaved, with a side-by-side
    /// verdict: ratios to the first target with bootstrap intervals, answer agreement.
    Compare(super::bench_compare::CompareArgs),
    /// Probe endpoints every interval and log each result (JSONL): availability, outages,
    /// latency over time, model changes.
    Monitor(super::bench_compare::MonitorArgs),
    /// Summarize a monitor log: print the summary, and write it as JSON and HTML.
    Report(super::bench_compare::ReportArgs),
}

/// `ferrite bench quality` options.
#[derive(Debug, clap::Args)]
pub struct QualityArgs {
    /// Endpoint A (base URL, e.g. http://127.0.0.1:8080).
    #[arg(long)]
    pub url: String,
    /// `model` for endpoint A.
    #[arg(long)]
    pub model: String,
    /// Endpoint B, the reference.
    #[arg(long)]
    pub against: String,
    /// `model` for endpoint B.
    #[arg(long)]
    pub model_b: String,
    /// Bearer token for both endpoints.
    #[arg(long, env = "FERRITE_BENCH_API_KEY")]
    pub api_key: Option<String>,
    /// JSONL prompts: `{"prompt": "..."}` or `{"messages": [...]}` per line, optional
    /// `"expect": "regex"`.
    #[arg(long)]
    pub prompts: std::path::PathBuf,
    /// Tokens per answer.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Write the report (comparison under `quality`) to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// `ferrite bench sweep` options.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Concurrency levels, comma-separated.
    #[arg(long, default_value = "1,2,4,8")]
    pub concurrencies: String,
    #[command(flatten)]
    pub run: RunBenchArgs,
}

/// `ferrite bench verify` options.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A claim `metric.stat OP value` (repeatable), e.g. `ttft_ms.p50<=1000`.
    #[arg(long = "claim", required = true)]
    pub claims: Vec<String>,
    #[command(flatten)]
    pub run: RunBenchArgs,
}

/// `ferrite bench run` options.
#[derive(Debug, clap::Args)]
pub struct RunBenchArgs {
    /// Base URL without `/v1`, e.g. http://127.0.0.1:8080 (required, except by `bench compare`,
    /// which takes `--target`s).
    #[arg(long)]
    pub url: Option<String>,
    /// Model name to request (required, except by `bench compare`).
    #[arg(long)]
    pub model: Option<String>,
    /// Bearer API key.
    #[arg(long, env = "FERRITE_BENCH_API_KEY")]
    pub api_key: Option<String>,
    /// A named workload: 10k-1500, aa-100, aa-1k, aa-10k, aa-100k (Artificial Analysis's
    /// single-stream shapes) or aa-parallel (its 1k/1k at 10 in flight). Sets the token counts
    /// (and concurrency for aa-parallel), so it excludes those flags.
    #[arg(long, conflicts_with_all = ["input_tokens", "output_tokens"])]
    pub preset: Option<String>,
    /// A per-request service-level objective for the goodput report (repeatable):
    /// `ttft_ms<=500`, `tpot_ms<=50`, `e2e_ms<=`, `itl_max_ms<=`, `output_speed_tok_s>=`, ...
    #[arg(long = "slo")]
    pub slos: Vec<String>,
    /// What to send: `synthetic` (unique prompts of --input-tokens), `shared-prefix` (the
    /// same first --shared-prefix-tokens words, then unique), `file:PATH` (JSONL prompts,
    /// `{"prompt": ...}` or `{"messages": [...]}` per line, cycled) or `agent:PATH` (agent
    /// tasks, schema ferrite-bench/agent-tasks/v1; see the ferrite-bench agent module docs).
    #[arg(long, conflicts_with = "preset")]
    pub workload: Option<String>,
    /// With `--workload shared-prefix`: words every prompt shares (default: half the prompt).
    #[arg(long)]
    pub shared_prefix_tokens: Option<usize>,
    /// Synthetic agent tasks of this many calls (each resending the conversation so far plus
    /// a tool result); --requests and --concurrency then count tasks.
    #[arg(long, conflicts_with_all = ["workload", "preset"])]
    pub agent_calls: Option<usize>,
    /// With --agent-calls: words of each synthetic tool result appended between calls.
    #[arg(long, default_value_t = 256, requires = "agent_calls")]
    pub agent_tool_tokens: usize,
    /// With --agent-calls: client pause between calls in ms (tool execution), counted in the
    /// task's wall-clock.
    #[arg(long, default_value_t = 0.0, requires = "agent_calls")]
    pub agent_think_ms: f64,
    /// JSON object merged into every request body, overriding the bench's own fields, e.g.
    /// '{"speculative": false}' (ferrite: speculation off for this run) or provider options.
    #[arg(long)]
    pub extra_body: Option<String>,
    /// Count output tokens with this tokenizer (a GGUF file or a tokenizer.json) when the
    /// server reports no usage (otherwise one token per streamed chunk is assumed).
    #[arg(long)]
    pub tokenizer: Option<std::path::PathBuf>,
    /// Prompt tokens per request (synthetic, unique per request).
    #[arg(long, default_value_t = 256)]
    pub input_tokens: usize,
    /// Output tokens per request (`max_tokens` with `ignore_eos`).
    #[arg(long, default_value_t = 128)]
    pub output_tokens: usize,
    /// Requests in flight at once (1 = sequential, interactive).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Measured requests.
    #[arg(long, default_value_t = 16)]
    pub requests: usize,
    /// Unmeasured warm-up requests.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Retries after connection errors, 429 and 5xx (exponential backoff, Retry-After honoured).
    #[arg(long, default_value_t = 0)]
    pub retries: usize,
    /// Seed of the synthetic prompts and arrival times. Default: a fresh one per run (recorded
    /// in the report), because a server with a cross-request prompt cache (llama-server's RAM
    /// cache) serves a repeated run's prompts from cache; give the recorded one to reproduce.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Open loop: Poisson arrivals at this many requests per second (instead of --concurrency).
    #[arg(long)]
    pub rate: Option<f64>,
    /// With --rate: gamma shape of the inter-arrival times (1 = Poisson, < 1 burstier, large =
    /// near-constant rate).
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Stop starting measured requests after this many seconds (--requests stays the cap).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Prices JSON: {"input_per_mtok", "cached_input_per_mtok", "output_per_mtok", "per_request"} in USD.
    #[arg(long)]
    pub prices: Option<std::path::PathBuf>,
    /// Write the full report (schema ferrite-bench/run/v1, raw event logs included) here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Write the printed report (Markdown) here too.
    #[arg(long)]
    pub markdown: Option<std::path::PathBuf>,
    /// Write a self-contained HTML report with charts (latency CDFs, TTFT vs input length,
    /// task wall-clock; throughput vs concurrency for `bench sweep`).
    #[arg(long)]
    pub html: Option<std::path::PathBuf>,
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
    /// Tokens already in the KV cache before each test (llama-bench's `-d`), filled untimed.
    #[arg(short = 'd', long = "n-depth", default_value_t = 0)]
    pub depth: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(c: BenchCommand) -> Result<()> {
    match c {
        BenchCommand::Model(a) => model(a),
        BenchCommand::Run(a) => endpoint(a).map(|_| ()),
        BenchCommand::Verify(a) => verify(a),
        BenchCommand::Sweep(a) => sweep(a),
        BenchCommand::Quality(a) => quality(a),
        BenchCommand::Compare(a) => super::bench_compare::compare(a),
        BenchCommand::Monitor(a) => super::bench_compare::monitor(a),
        BenchCommand::Report(a) => super::bench_compare::report(a),
    }
}

/// `ferrite bench quality`.
fn quality(a: QualityArgs) -> Result<()> {
    use ferrite_bench::quality::{read_prompts, run_quality, Endpoint};
    let prompts = read_prompts(&a.prompts)?;
    let ep = |url: &str, model: &str| Endpoint {
        url: url.to_string(),
        model: model.to_string(),
        api_key: a.api_key.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run_quality(
        &ep(&a.url, &a.model),
        &ep(&a.against, &a.model_b),
        &prompts,
        a.max_tokens,
    ))?;
    let q = &report["quality"];
    let pct = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("n/a".into(), |v| format!("{:.1}%", 100.0 * v))
    };
    println!(
        "{} prompts: exact match {}, mean common prefix {:.1} {}, success A {} / B {}",
        q["prompts"],
        pct(&q["exact_match_rate"]),
        q["mean_common_prefix"].as_f64().unwrap_or(0.0),
        q["common_prefix_unit"].as_str().unwrap_or(""),
        pct(&q["a_success_rate"]),
        pct(&q["b_success_rate"]),
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
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
    (n, depth): (usize, usize),
    logits: &mut Vec<f32>,
) -> Result<f64> {
    let c = m.config().clone();
    let toks = tokens(n, c.vocab_size, 42 + depth as u64);
    let pos: Vec<usize> = (depth..depth + n).collect();
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
    (n, depth): (usize, usize),
    logits: &mut Vec<f32>,
) -> Result<f64> {
    let toks = tokens(n, m.config().vocab_size, 7);
    let t = Instant::now();
    for (p, tok) in toks.iter().enumerate() {
        let b = ForwardBatch {
            tokens: std::slice::from_ref(tok),
            positions: &[depth + p],
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
    let d = a.depth;
    let ctx = d + a.n_prompt.max(a.n_gen).max(1);
    if ctx > c.context_length {
        anyhow::bail!(
            "depth {d} + test length exceeds the model's context of {} tokens",
            c.context_length
        );
    }
    let mut kv = ContiguousKvCache::for_shape(c.kv_shape(), m.cpu().kv_format, ctx, 1)?;
    let mut logits = Vec::new();
    if d > 0 {
        // The context the tests run after; positions ≥ d are rewritten by every test.
        pp(m, &mut kv, (d, 0), &mut logits)?;
    }
    let at = if d > 0 {
        format!(" @ d{d}")
    } else {
        String::new()
    };
    let reps = a.repetitions.max(1);
    let mut results = Vec::new();
    if a.n_prompt > 0 {
        pp(m, &mut kv, (a.n_prompt, d), &mut logits)?; // warm-up
        let v = (0..reps)
            .map(|_| pp(m, &mut kv, (a.n_prompt, d), &mut logits))
            .collect::<Result<Vec<_>>>()?;
        results.push((format!("pp{}{at}", a.n_prompt), stats(&v)));
    }
    if a.n_gen > 0 {
        tg(m, &mut kv, (a.n_gen.min(16), d), &mut logits)?; // warm-up
        let v = (0..reps)
            .map(|_| tg(m, &mut kv, (a.n_gen, d), &mut logits))
            .collect::<Result<Vec<_>>>()?;
        results.push((format!("tg{}{at}", a.n_gen), stats(&v)));
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
                "depth": d,
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

fn verify(a: VerifyArgs) -> Result<()> {
    use ferrite_bench::verify::{evaluate, not_covered, parse_claim};
    let claims = a
        .claims
        .iter()
        .map(|c| parse_claim(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let report = endpoint(a.run)?;
    println!();
    println!("| claim | measured | 95% CI | n | verdict |");
    println!("|---|---|---|---|---|");
    let mut all = true;
    for c in &claims {
        let r = evaluate(&report, c);
        all &= r.holds;
        let verdict = match (r.holds, r.holds_with_confidence) {
            (true, true) => "holds",
            (true, false) => "holds (point estimate; the CI crosses the bound)",
            (false, _) => "FAILS",
        };
        println!(
            "| {} | {} | {} | {} | {verdict} |",
            c.text,
            r.measured.map_or("-".into(), |m| format!("{m:.1}")),
            r.ci95
                .map_or("-".into(), |(lo, hi)| format!("{lo:.1} – {hi:.1}")),
            r.n
        );
    }
    println!("not covered by this run:");
    for item in not_covered(&report) {
        println!("  - {item}");
    }
    if !all {
        std::process::exit(1);
    }
    Ok(())
}

fn run_config(a: &RunBenchArgs) -> Result<ferrite_bench::RunConfig> {
    if a.url.is_none() || a.model.is_none() {
        anyhow::bail!("--url and --model are required");
    }
    shared_config(a)
}

/// The settings of `a` (`bench compare` gives each target its own URL and model).
pub(super) fn shared_config(a: &RunBenchArgs) -> Result<ferrite_bench::RunConfig> {
    let preset = a.preset.as_deref().map(ferrite_bench::preset).transpose()?;
    let (input_tokens, output_tokens) = preset.map_or((a.input_tokens, a.output_tokens), |p| {
        (p.input_tokens, p.output_tokens)
    });
    // A preset's concurrency applies unless --concurrency was raised explicitly.
    let concurrency = match preset {
        Some(p) if a.concurrency == 1 => p.concurrency,
        _ => a.concurrency,
    };
    Ok(ferrite_bench::RunConfig {
        url: a.url.clone().unwrap_or_default(),
        model: a.model.clone().unwrap_or_default(),
        api_key: a.api_key.clone(),
        input_tokens,
        output_tokens,
        concurrency,
        requests: a.requests,
        warmup: a.warmup,
        retries: a.retries,
        retry_base: std::time::Duration::from_millis(500),
        seed: a.seed.unwrap_or_else(fresh_seed),
        rate: a.rate,
        prices: match &a.prices {
            Some(p) => Some(
                serde_json::from_str(&std::fs::read_to_string(p)?)
                    .map_err(|e| anyhow::anyhow!("--prices {}: {e}", p.display()))?,
            ),
            None => None,
        },
        preset: preset.map(|p| p.name.to_string()),
        progress: None,
        burstiness: a.burstiness,
        duration: match a.duration {
            Some(d) if d.is_finite() && d > 0.0 => Some(std::time::Duration::from_secs_f64(d)),
            Some(d) => anyhow::bail!("--duration must be a positive number of seconds, got {d}"),
            None => None,
        },
        slos: a
            .slos
            .iter()
            .map(|s| ferrite_bench::goodput::Slo::parse(s))
            .collect::<std::result::Result<_, _>>()?,
        workload: workload(a, input_tokens)?,
        tokenizer: a.tokenizer.as_deref().map(tokenizer).transpose()?,
        extra_body: match &a.extra_body {
            None => None,
            Some(t) => match serde_json::from_str::<serde_json::Value>(t) {
                Ok(serde_json::Value::Object(o)) => Some(o),
                Ok(_) => anyhow::bail!("--extra-body must be a JSON object, got {t}"),
                Err(e) => anyhow::bail!("--extra-body is not JSON ({e}): {t}"),
            },
        },
    })
}

/// A seed that differs between runs: clock nanoseconds mixed with the process id.
fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (t ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// `--workload` / `--agent-calls` → what each task sends.
fn workload(a: &RunBenchArgs, input_tokens: usize) -> Result<ferrite_bench::Workload> {
    if let Some(calls) = a.agent_calls {
        let w =
            ferrite_bench::AgentWorkload::synthetic(calls, a.agent_tool_tokens, a.agent_think_ms)?;
        return Ok(ferrite_bench::Workload::Agent(w));
    }
    let spec = a.workload.as_deref().unwrap_or("synthetic");
    if a.shared_prefix_tokens.is_some() && spec != "shared-prefix" {
        anyhow::bail!("--shared-prefix-tokens needs --workload shared-prefix");
    }
    Ok(ferrite_bench::Workload::parse(
        spec,
        input_tokens,
        a.shared_prefix_tokens,
    )?)
}

/// `--tokenizer PATH` → a token counter (a GGUF file's vocabulary or a tokenizer.json).
fn tokenizer(path: &std::path::Path) -> Result<ferrite_bench::TokenCounter> {
    let t = ferrite_tokenizer::TextTokenizer::open(path)
        .with_context(|| format!("--tokenizer {}", path.display()))?;
    let name = path.display().to_string();
    // A text the tokenizer cannot encode counts as 0 tokens; the report then shows a
    // length mismatch rather than the run failing halfway.
    Ok(ferrite_bench::TokenCounter::new(name, move |s| {
        t.count(s).unwrap_or(0)
    }))
}

/// The runtime the bench commands' clients run on (two worker threads).
pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn execute(mut cfg: ferrite_bench::RunConfig) -> Result<ferrite_bench::Report> {
    let rt = runtime()?;
    // A progress bar on stderr (hidden when stderr is not a terminal), fed by a counter the
    // run increments; it never touches the measurement.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    cfg.progress = Some(done.clone());
    let bar = indicatif::ProgressBar::new(cfg.requests as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} requests {elapsed}")
            .expect("invariant: static template"),
    );
    let ticker = {
        let (bar, done) = (bar.clone(), done.clone());
        rt.spawn(async move {
            loop {
                bar.set_position(done.load(std::sync::atomic::Ordering::Relaxed) as u64);
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    };
    let result = rt.block_on(ferrite_bench::run(cfg));
    ticker.abort();
    bar.finish_and_clear();
    let mut report = result?;
    ferrite_bench::stamp_fingerprint(&mut report);
    Ok(report)
}

/// `ferrite bench sweep`: the same workload at several concurrencies, one row each.
fn sweep(a: SweepArgs) -> Result<()> {
    let levels: Vec<usize> = a
        .concurrencies
        .split(',')
        .map(|c| c.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("--concurrencies {:?}: {e}", a.concurrencies))?;
    if levels.is_empty() || levels.contains(&0) {
        anyhow::bail!("--concurrencies needs positive integers, e.g. 1,2,4,8");
    }
    println!("| concurrency | requests | output tok/s | req/s | TTFT p50 (ms) | TTFT p99 (ms) | TPOT p50 (ms) | output speed p50 (tok/s) | error rate |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut reports = Vec::new();
    for c in levels {
        let mut cfg = run_config(&a.run)?;
        cfg.concurrency = c;
        cfg.rate = None;
        cfg.requests = a.run.requests.max(2 * c);
        let r = execute(cfg)?;
        let m = |k: &str, s: &str| r.metrics[k][s].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {c} | {} | {:.1} | {:.2} | {:.0} | {:.0} | {:.1} | {:.1} | {:.3} |",
            r.requests["completed"],
            r.throughput["output_tok_s"].as_f64().unwrap_or(0.0),
            r.throughput["requests_per_s"].as_f64().unwrap_or(0.0),
            m("ttft_ms", "p50"),
            m("ttft_ms", "p99"),
            m("tpot_ms", "p50"),
            m("output_speed_tok_s", "p50"),
            r.requests["error_rate"].as_f64().unwrap_or(0.0),
        );
        reports.push(r);
    }
    if let Some(path) = &a.run.json {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)?;
        println!("reports: {}", path.display());
    }
    if let Some(path) = &a.run.html {
        std::fs::write(path, ferrite_bench::html::render_html(&reports))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("html: {}", path.display());
    }
    Ok(())
}

fn endpoint(a: RunBenchArgs) -> Result<ferrite_bench::Report> {
    let report = execute(run_config(&a)?)?;
    let text = ferrite_bench::render_markdown(&report);
    print!("{text}");
    if let Some(path) = &a.markdown {
        std::fs::write(path, &text)?;
        println!("markdown: {}", path.display());
    }
    if let Some(path) = &a.html {
        let html = ferrite_bench::html::render_html(std::slice::from_ref(&report));
        std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))?;
        println!("html: {}", path.display());
    }
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        println!("report: {}", path.display());
    }
    Ok(report)
}
