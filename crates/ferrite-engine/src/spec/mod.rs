//! Speculative decoding: drafters propose tokens, the engine verifies them in the same batched
//! forward pass as everything else (serving-design.md §5). Drafters: n-gram prompt lookup, and
//! a draft model (a separate GGUF sharing the vocabulary, or the target's own first layers).

pub mod draft;
pub mod ngram;
pub mod policy;

pub use draft::{DraftJob, DraftModel};
pub use ngram::NgramConfig;
pub use policy::{choose_k, Acceptance, Rates, StepCosts};
