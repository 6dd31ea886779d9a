//! Generation on a tiny synthetic model: determinism, prefix reuse, stop conditions, limits.

use std::sync::Arc;

use ferrite_engine::{Error, FinishReason, GenerateRequest, Generator, SamplingParams};
use ferrite_gguf::GgufFile;
use ferrite_models::{load_model_from, LoadOptions};
use ferrite_testkit::{TinyArch, TinyModel};
use ferrite_tokenizer::{EncodeOptions, Tokenizer};

fn generator(ctx: usize) -> Generator {
    let f = Arc::new(GgufFile::from_bytes(TinyModel::new(TinyArch::Llama).to_bytes()).unwrap());
    let m = load_model_from(
        &f,
        &LoadOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    Generator::new(m, Tokenizer::from_gguf(&f).unwrap(), ctx).unwrap()
}

fn req(
    g: &Generator,
    prompt: &str,
    max_tokens: usize,
    sampling: SamplingParams,
) -> GenerateRequest {
    GenerateRequest {
        prompt: g
            .tokenizer()
            .encode(prompt, EncodeOptions::default())
            .unwrap(),
        max_tokens,
        sampling,
        stop: vec![],
        ignore_eos: true,
        prefill_splits: vec![],
    }
}

fn run(g: &mut Generator, r: &GenerateRequest) -> (String, ferrite_engine::GenerationStats) {
    let mut s = String::new();
    let st = g.generate(r, &mut |t| s.push_str(t)).unwrap();
    (s, st)
}

#[test]
fn greedy_is_deterministic_and_text_matches_tokens() {
    let mut g = generator(128);
    let r = req(&g, "hello world", 20, SamplingParams::greedy());
    let (a, sa) = run(&mut g, &r);
    g.reset();
    let (b, sb) = run(&mut g, &r);
    assert_eq!(sa.tokens, sb.tokens);
    assert_eq!(a, b);
    assert_eq!(a, g.tokenizer().decode(&sa.tokens, true).unwrap());
    assert_eq!(sa.finish_reason, FinishReason::Length);
    assert_eq!(sa.generated_tokens, 20);
}

#[test]
fn cached_prefix_is_reused_and_gives_the_same_result() {
    let mut g = generator(128);
    let r1 = req(&g, "the cat sat on", 4, SamplingParams::greedy());
    run(&mut g, &r1);
    let r2 = req(&g, "the cat sat on the mat", 6, SamplingParams::greedy());
    let (warm, s) = run(&mut g, &r2);
    assert_eq!(s.cached_tokens, r1.prompt.len());
    g.reset();
    let (cold, s2) = run(&mut g, &r2);
    assert_eq!(s2.cached_tokens, 0);
    assert_eq!(warm, cold);
}

#[test]
fn prefill_splits_do_not_change_greedy_output_on_this_model() {
    let mut g = generator(128);
    let mut r = req(
        &g,
        "split the prompt here please",
        8,
        SamplingParams::greedy(),
    );
    let (a, _) = run(&mut g, &r);
    g.reset();
    r.prefill_splits = vec![3, 10, 11];
    let (b, _) = run(&mut g, &r);
    assert_eq!(a, b);
}

#[test]
fn stop_strings_end_generation_and_are_not_emitted() {
    let mut g = generator(128);
    let r = req(&g, "abc", 30, SamplingParams::greedy());
    let (full, _) = run(&mut g, &r);
    // Stop on a substring that the greedy continuation is known to contain.
    let cut = full
        .char_indices()
        .nth(full.chars().count() / 2)
        .map_or(0, |(i, _)| i);
    let stop: String = full[cut..].chars().take(2).collect();
    assert!(!stop.is_empty());
    let mut r2 = r.clone();
    r2.stop = vec![stop.clone()];
    g.reset();
    let (out, st) = run(&mut g, &r2);
    assert_eq!(st.finish_reason, FinishReason::Stop);
    let first = full.find(&stop).unwrap();
    assert_eq!(out, full[..first]);
}

fn generator_from(bytes: Vec<u8>, ctx: usize) -> Generator {
    let f = Arc::new(GgufFile::from_bytes(bytes).unwrap());
    let m = load_model_from(
        &f,
        &LoadOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    Generator::new(m, Tokenizer::from_gguf(&f).unwrap(), ctx).unwrap()
}

#[test]
fn end_of_generation_token_stops_unless_ignored() {
    // Find the greedy continuation, then declare its 4th token (first occurrence) to be EOS.
    let tiny = TinyModel::new(TinyArch::Llama);
    let mut g = generator_from(tiny.to_bytes(), 64);
    let r = req(&g, "xyz", 12, SamplingParams::greedy());
    let (_, s) = run(&mut g, &r);
    let k = (3..s.tokens.len())
        .find(|&i| !s.tokens[..i].contains(&s.tokens[i]))
        .unwrap();
    let eos = s.tokens[k];
    let mut w = tiny.writer();
    w.add_metadata("tokenizer.ggml.eos_token_id", ferrite_gguf::Value::U32(eos));
    let mut g = generator_from(w.to_bytes().unwrap(), 64);
    let mut r = r.clone();
    r.ignore_eos = false;
    let (text, st) = run(&mut g, &r);
    assert_eq!(st.finish_reason, FinishReason::Stop);
    assert_eq!(st.tokens, s.tokens[..=k]);
    assert_eq!(text, g.tokenizer().decode(&s.tokens[..k], true).unwrap());
    // With ignore_eos the same model runs to the length limit.
    r.ignore_eos = true;
    g.reset();
    let (_, st) = run(&mut g, &r);
    assert_eq!(
        (st.finish_reason, st.tokens),
        (FinishReason::Length, s.tokens)
    );
}

#[test]
fn context_limits() {
    let mut g = generator(16);
    let r = req(&g, "0123456789abcdefghij", 4, SamplingParams::greedy());
    match g.generate(&r, &mut |_| {}) {
        Err(Error::ContextOverflow {
            prompt_tokens: 20,
            context: 16,
        }) => {}
        other => panic!("{other:?}"),
    }
    // A prompt that fits, with more tokens asked for than fit: stops at the context, "length".
    let r = req(&g, "0123456789", 100, SamplingParams::greedy());
    let (_, s) = run(&mut g, &r);
    assert_eq!(s.generated_tokens, 6);
    assert_eq!(s.finish_reason, FinishReason::Length);
    let empty = GenerateRequest {
        prompt: vec![],
        ..r
    };
    assert!(g.generate(&empty, &mut |_| {}).is_err());
}
