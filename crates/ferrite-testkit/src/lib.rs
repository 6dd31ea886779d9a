//! Test support for ferrite: tiny synthetic GGUF models ([`tiny`]) and a plain f32 reference
//! forward pass over the same files ([`reference`]), so every quantized, batched, SIMD forward can
//! be checked against arithmetic simple enough to read in one sitting. With the `mock-openai`
//! feature, [`mock_openai`] is an OpenAI-compatible server whose timing, failures and answers
//! are scripted, so `ferrite bench` can be calibrated against known values.
//!
//! Used only as a dev-dependency.

pub mod arch_fixtures;
#[cfg(feature = "mock-openai")]
pub mod mock_openai;
pub mod reference;
pub mod rng;
pub mod tiny;

pub use tiny::{TinyArch, TinyModel};
