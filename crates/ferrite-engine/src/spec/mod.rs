//! Speculative decoding: drafters propose tokens, the engine verifies them in the same batched
//! forward pass as everything else (serving-design.md §5). Today: n-gram prompt lookup.

pub mod ngram;

pub use ngram::NgramConfig;
