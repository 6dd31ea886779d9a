//! One module per subcommand.

pub mod bench;
pub mod bench_compare;
pub mod chat;
pub mod eval;
pub mod eval_greedy;
pub mod eval_logits;
pub mod pull;
pub mod quantize;
pub mod run;
pub mod sampling;
pub mod serve;
