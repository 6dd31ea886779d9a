//! Test support for ferrite: tiny synthetic GGUF models ([`tiny`]) and a plain f32 reference
//! forward pass over the same files ([`reference`]), so every quantized, batched, SIMD forward can
//! be checked against arithmetic simple enough to read in one sitting.
//!
//! Used only as a dev-dependency.

pub mod reference;
pub mod rng;
pub mod tiny;

pub use tiny::{TinyArch, TinyModel};
