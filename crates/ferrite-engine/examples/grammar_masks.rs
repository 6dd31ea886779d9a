//! What structured output costs on a real vocabulary: building the token table (the load-time
//! cost), compiling a JSON schema and a tool-call grammar, and the time of each token mask along
//! documents walked token by token (each step takes a random allowed token, leaning towards
//! closing tokens so documents end).
//!
//! ```sh
//! cargo run --release -p ferrite-engine --example grammar_masks -- MODEL.gguf [DOCS]
//! ```

use std::time::{Duration, Instant};

use ferrite_engine::grammar::{GrammarCompiler, GrammarSpec};
use ferrite_gguf::GgufFile;
use ferrite_models::{load_model_from, LoadOptions};
use ferrite_testkit::rng::XorShift;
use ferrite_tokenizer::Tokenizer;
use serde_json::json;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: grammar_masks MODEL.gguf [DOCS]");
    let docs: usize = args
        .get(2)
        .map_or(20, |d| d.parse().expect("DOCS is a number"));

    let t = Instant::now();
    let f = std::sync::Arc::new(GgufFile::open(path).expect("a GGUF file"));
    let model = load_model_from(&f, &LoadOptions::default()).expect("the model loads");
    let tok = Tokenizer::from_gguf(&f).expect("its tokenizer");
    let load = t.elapsed();
    let t = Instant::now();
    let g = GrammarCompiler::new(&tok).expect("the token table");
    let table = t.elapsed();
    println!(
        "{path}: {} tokens; model + tokenizer load {:.3} s, token table {:.3} s (+{:.0}%)",
        tok.vocab_size(),
        load.as_secs_f64(),
        table.as_secs_f64(),
        100.0 * table.as_secs_f64() / load.as_secs_f64()
    );
    drop(model);

    let schema = json!({"type": "array", "minItems": 2, "maxItems": 6, "items": {
        "type": "object", "properties": {
            "id": {"type": "integer", "minimum": 0, "maximum": 999},
            "name": {"type": "string", "maxLength": 12},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "maxItems": 3, "items": {"enum": ["red", "green", "blue"]}}},
        "required": ["id", "name", "ok", "tags"], "additionalProperties": false}});
    // A required call in the Hermes shape (what tool_choice "required" compiles to).
    let tools = "%llguidance {}\nstart: \"<tool_call>\\n\" call\ncall: \"{\\\"name\\\": \\\"get_weather\\\", \\\"arguments\\\": \" \
                 %json {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"maxLength\": 20}}, \
                 \"required\": [\"city\"], \"additionalProperties\": false} \"}\\n</tool_call>\"\n";
    let closers: Vec<u32> = ["\"", "}", "]", ",", "<tool_call>", "\n"]
        .iter()
        .filter_map(|s| tok.encode(s, Default::default()).ok()?.first().copied())
        .collect();
    for (name, spec) in [
        (
            "JSON schema (array of objects)",
            GrammarSpec::JsonSchema(schema),
        ),
        ("tool call, required", GrammarSpec::Lark(tools.into())),
    ] {
        let t = Instant::now();
        let base = g.compile(&spec).expect("compiles");
        let compile = t.elapsed();
        let mut r = XorShift::new(7);
        let (mut times, mut steps, mut done) = (Vec::new(), 0usize, 0usize);
        let vocab = tok.vocab_size();
        for _ in 0..docs {
            let mut c = base.clone();
            for step in 0..400 {
                let mut l = vec![0f32; vocab];
                let took: Duration = c.mask(&mut l, true).expect("a mask");
                times.push(took.as_secs_f64() * 1e6);
                // A random allowed token, closing tokens more likely as the document grows.
                let allowed: Vec<u32> = (0..vocab as u32)
                    .filter(|&i| l[i as usize].is_finite())
                    .collect();
                let pick = if step > 30 {
                    closers.iter().copied().find(|c| allowed.contains(c))
                } else {
                    None
                };
                let t = pick.unwrap_or(allowed[(r.next_u64() % allowed.len() as u64) as usize]);
                steps += 1;
                if c.advance(t).expect("an allowed token") {
                    done += 1;
                    break;
                }
            }
        }
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        println!(
            "{name}: compile {:.2} ms; {steps} masks over {docs} documents ({done} complete): mean {mean:.1} µs, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            compile.as_secs_f64() * 1e3,
            pct(&mut times, 0.5),
            pct(&mut times, 0.99),
            pct(&mut times, 1.0),
        );
    }
}
