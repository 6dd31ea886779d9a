//! Generation on top of the models: sampling, stop conditions, single-sequence generation and
//! evaluation (perplexity). The server's scheduler, paged KV manager and speculative decoding join
//! this crate with their issues.
//!
//! Depends on `ferrite-models` and `ferrite-tokenizer`; knows nothing of HTTP.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod core;
pub mod engine_loop;
pub mod eval;
pub mod generate;
pub mod grammar;
pub mod kv_cache;
pub mod sampling;
pub mod scheduler;
pub mod spec;
pub mod stop;

pub use core::{
    EngineConfig, EngineCore, EngineStats, FinishInfo, MaskTimes, NewRequest, OutputSink,
    RequestEvent, TokenLogprob, MASK_BUCKETS,
};
pub use engine_loop::{EngineHandle, EngineStopped};
pub use generate::{FinishReason, GenerateRequest, GenerationStats, Generator};
pub use sampling::{Sampler, SamplingParams};

/// Engine errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request parameter is out of range.
    #[error("{message}")]
    InvalidParam {
        /// Field name.
        field: &'static str,
        /// Message naming the field, the limit and the value.
        message: String,
    },
    /// The prompt does not fit the context.
    #[error("the prompt has {prompt_tokens} tokens but the context holds {context}: {} too many (at least one position must remain for the reply)", prompt_tokens + 1 - context)]
    ContextOverflow {
        /// Prompt length.
        prompt_tokens: usize,
        /// Context size.
        context: usize,
    },
    /// Engine sizing is impossible or inconsistent.
    #[error("engine config: {0}")]
    Config(String),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ferrite_models::Error),
    /// A grammar (structured output) failed to compile or to follow the output.
    #[error("structured output: {0}")]
    Grammar(String),
    /// Tokenization failed.
    #[error(transparent)]
    Tokenizer(#[from] ferrite_tokenizer::Error),
}

impl Error {
    /// The field a validation error is about, if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Error::InvalidParam { field, .. } => Some(field),
            Error::ContextOverflow { .. } => Some("messages"),
            _ => None,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
