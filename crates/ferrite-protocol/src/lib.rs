//! OpenAI-compatible wire contract of ferrite: request parsing and validation
//! ([`parse_request`] → [`ValidRequest`]), response and streaming-chunk types, and the error
//! wire format ([`ApiError`]). No I/O: the server and the router share these types.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod error;
pub mod request;
pub mod response;
pub mod tools;

pub use error::{ApiError, ErrorKind};
pub use request::{parse_request, Endpoint, Message, PromptInput, SpecChoice, ValidRequest};
pub use tools::{OutputFormat, Tool, ToolCall, ToolChoice};
