//! `ferrite bench compare`, `bench monitor` and `bench report`: one workload across several
//! endpoints, and endpoints watched over time.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use ferrite_bench::compare::{parse_target, render_markdown, Target};
use ferrite_bench::monitor::{read_lines, summarize, MonitorConfig};

use super::bench::{runtime, shared_config, RunBenchArgs};

/// `ferrite bench compare` options.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// A target (repeatable, at least two):
    /// `name=N,url=URL,model=M[,api-key-env=VAR][,prices=FILE][,extra-body=JSON]`; extra-body
    /// comes last (its JSON has commas). Ratios are to the first target.
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// The workload and load, as for `bench run` (without --url and --model).
    #[command(flatten)]
    pub run: RunBenchArgs,
}

/// `ferrite bench monitor` options.
#[derive(Debug, clap::Args)]
pub struct MonitorArgs {
    /// A target (repeatable): `name=N,url=URL,model=M[,api-key-env=VAR][,extra-body=JSON]`.
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// Seconds between one target's probes.
    #[arg(long, default_value_t = 60.0)]
    pub interval_s: f64,
    /// Seconds to watch (Ctrl-C ends it early, with the summary).
    #[arg(long)]
    pub duration_s: f64,
    /// Seconds a probe may take before it counts as a timeout.
    #[arg(long, default_value_t = 30.0)]
    pub probe_timeout_s: f64,
    /// Also run the first task of this agent task file every interval.
    #[arg(long)]
    pub agent_tasks: Option<PathBuf>,
    /// Append each probe's result here as one JSON line (a restarted monitor appends).
    #[arg(long)]
    pub jsonl: PathBuf,
    /// Write the summary (of the whole JSONL file) here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `ferrite bench report` options.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A `bench monitor` JSONL file.
    pub file: PathBuf,
    /// Write the summary as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write availability and latency over time as a self-contained HTML page.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

fn targets(specs: &[String], base: &ferrite_bench::RunConfig) -> Result<Vec<Target>> {
    Ok(specs
        .iter()
        .map(|s| parse_target(s, base))
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

fn write(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn seconds(v: f64, flag: &str) -> Result<Duration> {
    if !(v.is_finite() && v > 0.0) {
        anyhow::bail!("{flag} must be a positive number of seconds, got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

/// `ferrite bench compare`.
pub fn compare(a: CompareArgs) -> Result<()> {
    if a.run.url.is_some() || a.run.model.is_some() {
        anyhow::bail!(
            "bench compare takes --target name=...,url=...,model=... instead of --url/--model"
        );
    }
    let base = shared_config(&a.run)?;
    let targets = targets(&a.targets, &base)?;
    let rt = runtime()?;
    let (report, runs) = rt.block_on(ferrite_bench::compare::compare(targets))?;
    let text = render_markdown(&report);
    print!("{text}");
    if let Some(p) = &a.run.markdown {
        write(p, &text)?;
    }
    if let Some(p) = &a.run.html {
        write(p, &ferrite_bench::html::render_compare_html(&report, &runs))?;
        println!("html: {}", p.display());
    }
    if let Some(p) = &a.run.json {
        write(p, &serde_json::to_string_pretty(&report)?)?;
        println!("report: {}", p.display());
    }
    Ok(())
}

/// `ferrite bench monitor`.
pub fn monitor(a: MonitorArgs) -> Result<()> {
    let base = ferrite_bench::RunConfig::new("", "");
    let cfg = MonitorConfig {
        targets: targets(&a.targets, &base)?,
        interval: seconds(a.interval_s, "--interval-s")?,
        duration: seconds(a.duration_s, "--duration-s")?,
        probe_timeout: seconds(a.probe_timeout_s, "--probe-timeout-s")?,
        task: a
            .agent_tasks
            .as_deref()
            .map(ferrite_bench::AgentWorkload::read)
            .transpose()?,
    };
    let rt = runtime()?;
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("ferrite: stopping the monitor");
    };
    rt.block_on(ferrite_bench::monitor::monitor(cfg, &a.jsonl, stop))?;
    summary(&a.jsonl, a.json.as_deref(), None)
}

/// `ferrite bench report`.
pub fn report(a: ReportArgs) -> Result<()> {
    summary(&a.file, a.json.as_deref(), a.html.as_deref())
}

/// Print the summary of a monitor log, one line per target, and write it where asked.
fn summary(
    jsonl: &std::path::Path,
    json: Option<&std::path::Path>,
    html: Option<&std::path::Path>,
) -> Result<()> {
    let lines = read_lines(jsonl)?;
    let s = summarize(&lines);
    for (name, t) in s["targets"].as_object().into_iter().flatten() {
        println!(
            "{name}: {} probes, availability {}, failed {}, {} outage(s), TTFT p50 {:.1} ms, E2E p50 {:.1} ms, {} change(s)",
            t["probes"],
            t["availability"]
                .as_f64()
                .map_or("–".into(), |v| format!("{:.2}%", 100.0 * v)),
            t["failed"],
            t["outages"].as_array().map_or(0, Vec::len),
            t["ttft_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            t["e2e_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            t["changes"].as_array().map_or(0, Vec::len),
        );
        for c in t["changes"].as_array().into_iter().flatten() {
            println!(
                "  {} changed at {}: {} → {}",
                c["field"], c["t"], c["from"], c["to"]
            );
        }
    }
    if let Some(p) = json {
        write(p, &serde_json::to_string_pretty(&s)?)?;
    }
    if let Some(p) = html {
        write(p, &ferrite_bench::html::render_monitor_html(&lines, &s))?;
        println!("html: {}", p.display());
    }
    Ok(())
}
