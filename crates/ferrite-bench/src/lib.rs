//! `ferrite bench`: measure any OpenAI-compatible endpoint the way a careful reader checks an
//! inference-speed claim. Every SSE event is logged with a monotonic timestamp; every metric is
//! computed afterwards from that log and reported with its formula, its token source and the
//! run's provenance. Independent of the engine: it only speaks HTTP.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod agent;
pub mod arrivals;
pub mod client;
pub mod compare;
pub mod goodput;
pub mod html;
pub mod markdown;
pub mod metrics;
pub mod monitor;
pub mod quality;
pub mod report;
pub mod run;
pub mod sse;
pub mod steady;
pub mod validity;
pub mod verify;
pub mod workload;

pub use agent::AgentWorkload;
pub use markdown::render_markdown;
pub use metrics::TokenCounter;
pub use report::{stamp_fingerprint, Report};
pub use run::{run, Prices, RunConfig};
pub use workload::{preset, Preset, PromptFile, Workload, PRESETS};

/// Bench errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad settings.
    #[error("bench config: {0}")]
    Config(String),
    /// HTTP client failure.
    #[error("http: {0}")]
    Http(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
