//! Dump the intermediate tensors of one forward pass, to compare numerics with another engine.
//!
//! ```sh
//! DUMP_DIR=/tmp/ours cargo run --release -p ferrite-models --example dump_tensors -- model.gguf 2,818,5279
//! ```
//! prints the sum and first values of each traced tensor (`attn_norm-0`, `Qcur-0`, `kqv_out-0`,
//! ..., `result_output-0`, named as llama.cpp's `llama-eval-callback` names them) and, with
//! `DUMP_DIR`, writes each as raw little-endian f32. Used to find where ferrite and llama.cpp
//! first differ when a golden test fails.
use std::sync::Arc;

use ferrite_models::{cpu::TraceFn, load_model, ContiguousKvCache, ForwardBatch, LoadOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: dump_tensors MODEL.gguf TOKEN_ID,TOKEN_ID,...");
        std::process::exit(2);
    }
    let dir = std::env::var("DUMP_DIR").ok();
    let trace: TraceFn = Arc::new(move |name: &str, layer: usize, x: &[f32]| {
        let sum: f64 = x.iter().map(|&v| f64::from(v)).sum();
        println!(
            "{name}-{layer} sum = {sum:.6} first = {:?}",
            &x[..x.len().min(3)]
        );
        if let Some(d) = &dir {
            let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
            if let Err(e) = std::fs::write(format!("{d}/{name}-{layer}"), bytes) {
                eprintln!("cannot write {d}/{name}-{layer}: {e}");
            }
        }
    });
    let opts = LoadOptions {
        trace: Some(trace),
        ..Default::default()
    };
    let mut m = load_model(&args[1], &opts).unwrap_or_else(|e| panic!("{}: {e}", args[1]));
    let c = m.config().clone();
    let toks: Vec<u32> = args[2]
        .split(',')
        .map(|s| s.trim().parse().expect("token ids"))
        .collect();
    let mut kv =
        ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, toks.len(), 1).unwrap();
    let pos: Vec<usize> = (0..toks.len()).collect();
    let slots = vec![0; toks.len()];
    let batch = ForwardBatch {
        tokens: &toks,
        positions: &pos,
        slots: &slots,
        logits_rows: &[toks.len() - 1],
        kernel_groups: None,
    };
    let mut logits = Vec::new();
    m.forward(&batch, &mut kv, &mut logits).unwrap();
}
