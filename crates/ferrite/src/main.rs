//! `ferrite`: run, chat with, evaluate and fetch GGUF models.

mod commands;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// ferrite: fast, honest LLM inference on CPUs.
#[derive(Debug, Parser)]
#[command(name = "ferrite", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; the size of the bench options does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Generate text from a prompt (text to stdout, timing to stderr).
    Run(commands::run::RunArgs),
    /// Chat with a model in the terminal.
    Chat(commands::chat::ChatArgs),
    /// Evaluate a model (perplexity, comparison against a reference).
    #[command(subcommand)]
    Eval(commands::eval::EvalCommand),
    /// Requantize a GGUF model (q8_0, q4_0, q4_k, mxfp4, nvfp4, nvfp4-2l, f16, f32).
    Quantize(commands::quantize::QuantizeArgs),
    /// Fetch a known model into the cache and print its path.
    Pull(commands::pull::PullArgs),
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(commands::serve::ServeArgs),
    /// Benchmarks (model throughput, as llama-bench measures it).
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRITE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => commands::run::run(a),
        Command::Chat(a) => commands::chat::run(a),
        Command::Eval(c) => commands::eval::run(c),
        Command::Pull(a) => commands::pull::run(a),
        Command::Quantize(a) => commands::quantize::run(a),
        Command::Bench(c) => commands::bench::run(c),
        Command::Serve(a) => commands::serve::run(a),
    }
}
