use ferrite_models::*;
use std::sync::Arc;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let trace: cpu::TraceFn = Arc::new(|name: &str, layer: usize, x: &[f32]| {
        let s: f64 = x.iter().map(|&v| v as f64).sum();
        println!(
            "{name}-{layer} sum = {s:.6}  first = {:?}",
            &x[..3.min(x.len())]
        );
        if let Ok(d) = std::env::var("DUMP_DIR") {
            let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(format!("{d}/{name}-{layer}"), bytes).unwrap();
        }
    });
    let opts = LoadOptions {
        isa: None,
        threads: 2,
        trace: Some(trace),
        ..Default::default()
    };
    let mut m = load_model(&args[1], &opts).unwrap();
    let c = m.config().clone();
    let toks: Vec<u32> = args[2].split(',').map(|s| s.parse().unwrap()).collect();
    let mut kv = ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, 256, 1).unwrap();
    let pos: Vec<usize> = (0..toks.len()).collect();
    let mut logits = Vec::new();
    m.forward(
        &ForwardBatch {
            tokens: &toks,
            positions: &pos,
            slots: &vec![0; toks.len()],
            logits_rows: &[toks.len() - 1],
        },
        &mut kv,
        &mut logits,
    )
    .unwrap();
}
