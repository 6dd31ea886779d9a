use ferrite_models::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opts = LoadOptions {
        isa: args.get(3).map(|s| Isa::parse(s).unwrap()),
        threads: 2,
        ..Default::default()
    };
    let mut m = load_model(&args[1], &opts).unwrap();
    let c = m.config().clone();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&args[2]).unwrap()).unwrap();
    let mut ok = 0;
    for case in golden.as_array().unwrap() {
        let prompt: Vec<u32> = case["prompt_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want: Vec<u32> = case["greedy_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let mut kv = ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, 256, 1).unwrap();
        let mut logits = Vec::new();
        let t0 = std::time::Instant::now();
        let split = if std::env::var("TAIL4").is_ok() && prompt.len() > 4 {
            prompt.len() - 4
        } else {
            0
        };
        for (a, b) in [(0, split), (split, prompt.len())] {
            if a == b {
                continue;
            }
            let pos: Vec<usize> = (a..b).collect();
            let slots = vec![0; b - a];
            m.forward(
                &ForwardBatch {
                    tokens: &prompt[a..b],
                    positions: &pos,
                    slots: &slots,
                    logits_rows: &[b - a - 1],
                },
                &mut kv,
                &mut logits,
            )
            .unwrap();
        }
        let argmax = |l: &[f32]| {
            l.iter()
                .enumerate()
                .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a })
                .0 as u32
        };
        let mut got = vec![argmax(&logits)];
        let mut p = prompt.len();
        while got.len() < want.len() {
            let tok = *got.last().unwrap();
            m.forward(
                &ForwardBatch {
                    tokens: &[tok],
                    positions: &[p],
                    slots: &[0],
                    logits_rows: &[0],
                },
                &mut kv,
                &mut logits,
            )
            .unwrap();
            got.push(argmax(&logits));
            p += 1;
        }
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        if first_diff.is_none() {
            ok += 1;
        }
        println!(
            "{:?} match={} first_diff={:?} ({:?})",
            case.get("prompt")
                .map(|p| p.as_str().unwrap().chars().take(30).collect::<String>()),
            first_diff.is_none(),
            first_diff,
            t0.elapsed()
        );
        if first_diff.is_some() {
            println!("  got  {:?}\n  want {:?}", got, want);
        }
    }
    println!("{ok}/{} match", golden.as_array().unwrap().len());
}
