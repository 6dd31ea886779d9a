use ferrite_models::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut m = load_model(
        &args[1],
        &LoadOptions {
            isa: None,
            threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let c = m.config().clone();
    let toks: Vec<u32> = serde_json::from_str(&std::fs::read_to_string(&args[2]).unwrap()).unwrap();
    let ctx = 512;
    let bos: Option<u32> = args.get(3).map(|s| s.parse().unwrap());
    let n_chunks = toks.len() / ctx;
    let (mut nll, mut cnt) = (0f64, 0usize);
    let t0 = std::time::Instant::now();
    for ch in 0..n_chunks {
        let mut chunk: Vec<u32> = toks[ch * ctx..(ch + 1) * ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        let mut kv = ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, ctx, 1).unwrap();
        let pos: Vec<usize> = (0..ctx).collect();
        let slots = vec![0; ctx];
        let rows: Vec<usize> = (ctx / 2..ctx - 1).collect();
        let mut logits = Vec::new();
        m.forward(
            &ForwardBatch {
                tokens: &chunk,
                positions: &pos,
                slots: &slots,
                logits_rows: &rows,
            },
            &mut kv,
            &mut logits,
        )
        .unwrap();
        for (i, &r) in rows.iter().enumerate() {
            let l = &logits[i * c.vocab_size..(i + 1) * c.vocab_size];
            let mx = l.iter().cloned().fold(f32::MIN, f32::max);
            let lse = l.iter().map(|&v| ((v - mx) as f64).exp()).sum::<f64>().ln() + mx as f64;
            nll += lse - l[chunk[r + 1] as usize] as f64;
            cnt += 1;
        }
        eprintln!(
            "chunk {ch}: ppl so far {:.4} ({:?})",
            (nll / cnt as f64).exp(),
            t0.elapsed()
        );
    }
    println!("ppl {:.4} over {cnt} tokens", (nll / cnt as f64).exp());
}
