use ferrite_models::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opts = LoadOptions {
        isa: None,
        threads: 2,
        attn_accum: if std::env::var("ACC32").is_ok() {
            AttnAccum::F32
        } else {
            AttnAccum::F16
        },
        trace: None,
    };
    let mut m = load_model(&args[1], &opts).unwrap();
    let c = m.config().clone();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&args[2]).unwrap()).unwrap();
    let refp: Vec<Vec<Vec<(u32, f64)>>> =
        serde_json::from_str(&std::fs::read_to_string(&args[3]).unwrap()).unwrap();
    let mut worst_all = 0f64;
    for (ci, case) in golden.as_array().unwrap().iter().enumerate() {
        let prompt: Vec<u32> = case["prompt_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let gold: Vec<u32> = case["greedy_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let mut kv = ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, 256, 1).unwrap();
        let mut logits = Vec::new();
        let pos: Vec<usize> = (0..prompt.len()).collect();
        m.forward(
            &ForwardBatch {
                tokens: &prompt,
                positions: &pos,
                slots: &vec![0; prompt.len()],
                logits_rows: &[prompt.len() - 1],
            },
            &mut kv,
            &mut logits,
        )
        .unwrap();
        let mut worst = (0f64, 0usize);
        let mut margins = Vec::new();
        for (i, &g) in gold.iter().enumerate() {
            let mx = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let lse = mx
                + logits
                    .iter()
                    .map(|&v| (v as f64 - mx).exp())
                    .sum::<f64>()
                    .ln();
            for &(id, lp) in &refp[ci][i] {
                let d = (logits[id as usize] as f64 - lse - lp).abs();
                if d > worst.0 {
                    worst = (d, i);
                }
            }
            let r = &refp[ci][i];
            if ci == 0 {
                let d: f64 = refp[ci][i]
                    .iter()
                    .map(|&(id, lp)| (logits[id as usize] as f64 - lse - lp).abs())
                    .fold(0.0, f64::max);
                eprint!("{i}:{d:.3} ");
            }
            margins.push(format!(
                "{:.3}/{:.3}",
                r[0].1 - r[1].1,
                (logits[r[0].0 as usize] - logits[r[1].0 as usize]) as f64
            ));
            m.forward(
                &ForwardBatch {
                    tokens: &[g],
                    positions: &[prompt.len() + i],
                    slots: &[0],
                    logits_rows: &[0],
                },
                &mut kv,
                &mut logits,
            )
            .unwrap();
        }
        worst_all = worst_all.max(worst.0);
        println!(
            "case {ci}: max |dlogprob| {:.4} at step {}; margins ref/ours at 5,9,12: {} {} {}",
            worst.0, worst.1, margins[5], margins[9], margins[12]
        );
    }
    println!("worst {worst_all:.4}");
}
