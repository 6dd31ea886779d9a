fn main() {
    let args: Vec<String> = std::env::args().collect();
    let f = ferrite_gguf::GgufFile::open(&args[1]).unwrap();
    let t0 = std::time::Instant::now();
    let tok = ferrite_tokenizer::Tokenizer::from_gguf(&f).unwrap();
    eprintln!("built in {:?}", t0.elapsed());
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&args[2]).unwrap()).unwrap();
    for case in golden.as_array().unwrap() {
        let text = case
            .get("rendered")
            .or(case.get("prompt"))
            .unwrap()
            .as_str()
            .unwrap();
        let want: Vec<u32> = case["prompt_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, Default::default()).unwrap();
        println!("{} {:?}", got == want, &text[..text.len().min(40)]);
        if got != want {
            println!("  got  {got:?}\n  want {want:?}");
        }
        let gt: Vec<u32> = case["greedy_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let dec = tok.decode(&gt, false).unwrap();
        println!(
            "  decode ok: {}",
            dec == case["greedy_text"].as_str().unwrap()
        );
        let mut ds = tok.decode_stream(false);
        let mut s = String::new();
        for &id in &gt {
            if let Some(t) = ds.step(&tok, id).unwrap() {
                s.push_str(&t);
            }
        }
        if let Some(t) = ds.flush(&tok).unwrap() {
            s.push_str(&t);
        }
        println!(
            "  stream ok: {}",
            s == case["greedy_text"].as_str().unwrap()
        );
    }
}
