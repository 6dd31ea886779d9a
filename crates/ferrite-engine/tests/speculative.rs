//! Speculative decoding on a tiny synthetic model: greedy output is identical with and without
//! n-gram drafts (alone and mixed with other requests), sampled output keeps the target
//! distribution (Monte Carlo chi-square against the exact distribution), counters add up.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferrite_engine::spec::NgramConfig;
use ferrite_engine::{
    EngineConfig, EngineCore, NewRequest, OutputSink, RequestEvent, SamplingParams,
};
use ferrite_gguf::GgufFile;
use ferrite_kernels::quant::QuantType;
use ferrite_models::{load_model_from, ContiguousKvCache, ForwardBatch, LoadOptions};
use ferrite_testkit::{TinyArch, TinyModel};
use ferrite_tokenizer::Tokenizer;

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<RequestEvent>>>);

impl OutputSink for Collect {
    fn send(&mut self, ev: RequestEvent) -> bool {
        self.0.lock().unwrap().push(ev);
        true
    }
    fn is_closed(&self) -> bool {
        false
    }
}

impl Collect {
    fn tokens(&self) -> Vec<u32> {
        let ev = self.0.lock().unwrap();
        for e in ev.iter() {
            if let RequestEvent::Error(m) = e {
                panic!("request failed: {m}");
            }
        }
        ev.iter()
            .filter_map(|e| match e {
                RequestEvent::Token { token, .. } => Some(*token),
                _ => None,
            })
            .collect()
    }
    fn finish_reason(&self) -> Option<ferrite_engine::FinishReason> {
        self.0.lock().unwrap().iter().find_map(|e| match e {
            RequestEvent::Finished(f) => Some(f.reason),
            _ => None,
        })
    }
    fn spec_counts(&self) -> (usize, usize, usize) {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find_map(|e| match e {
                RequestEvent::Finished(f) => Some((
                    f.spec_draft_tokens,
                    f.spec_accepted_tokens,
                    f.completion_tokens,
                )),
                _ => None,
            })
            .unwrap()
    }
}

fn model_bytes(arch: TinyArch, q: QuantType) -> Vec<u8> {
    TinyModel::new(arch).quant(q).seed(5).to_bytes()
}

fn core(bytes: &[u8], spec: Option<NgramConfig>) -> EngineCore {
    let f = Arc::new(GgufFile::from_bytes(bytes.to_vec()).unwrap());
    let m = load_model_from(
        &f,
        &LoadOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let cfg = EngineConfig {
        max_num_batched_tokens: 256,
        kv_cache_bytes: 32 << 20,
        speculative: spec,
        ..EngineConfig::default()
    };
    EngineCore::new(m, Arc::new(Tokenizer::from_gguf(&f).unwrap()), &cfg).unwrap()
}

fn req(prompt: Vec<u32>, max_tokens: usize, sampling: SamplingParams) -> NewRequest {
    NewRequest {
        prompt,
        sampling,
        max_tokens,
        stop: vec![],
        ignore_eos: true,
        min_tokens: 0,
        logprobs: None,
        cache_salt: None,
        arrival: Instant::now(),
        speculative: None,
        constraint: None,
    }
}

/// N-gram drafts of up to 5 tokens from suffixes of 1 to 3, every draft verified.
fn verify_all() -> NgramConfig {
    NgramConfig {
        k: 5,
        min_n: 1,
        max_n: 3,
        adaptive: false,
    }
}

/// Copy-heavy prompts: a repeated phrase, so n-gram lookup has matches to propose.
fn prompts() -> Vec<Vec<u32>> {
    (0..6u32)
        .map(|i| {
            let phrase: Vec<u32> = (0..(3 + i)).map(|j| 40 + (i * 7 + j * 3) % 200).collect();
            phrase
                .iter()
                .cycle()
                .take(30 + 4 * i as usize)
                .copied()
                .collect()
        })
        .collect()
}

fn run_all(c: &mut EngineCore, reqs: Vec<NewRequest>) -> Vec<Collect> {
    let sinks: Vec<Collect> = reqs
        .into_iter()
        .map(|r| {
            let s = Collect::default();
            c.add_request(r, Box::new(s.clone()));
            s
        })
        .collect();
    let mut n = 0;
    while c.has_work() {
        c.step();
        n += 1;
        assert!(n < 100_000);
        c.scheduler().check().unwrap();
    }
    assert_eq!(c.scheduler().kv().usage(), 0.0);
    sinks
}

#[test]
fn greedy_output_is_identical_with_and_without_drafts() {
    for arch in TinyArch::ALL.into_iter().chain([TinyArch::Deepseek2]) {
        // Q4_K exercises the batch-shape-dependent kernels: draft rows must still compute
        // exactly as plain decoding does.
        for q in [QuantType::Q8_0, QuantType::Q4_K] {
            let bytes = model_bytes(arch, q);
            let greedy = SamplingParams::greedy();
            let mk = |ps: &[Vec<u32>]| -> Vec<NewRequest> {
                ps.iter()
                    .map(|p| req(p.clone(), 40, greedy.clone()))
                    .collect()
            };
            // Reference: no speculation, one request at a time.
            let mut plain = core(&bytes, None);
            let want: Vec<Vec<u32>> = prompts()
                .iter()
                .map(|p| run_all(&mut plain, mk(std::slice::from_ref(p)))[0].tokens())
                .collect();
            // Speculation on, all requests in one batch, mixed with requests that opt out and
            // with requests that verify only the drafts worth their rows (the server default
            // here verifies all of them, so drafts are surely checked).
            let spec = verify_all();
            let mut c = core(&bytes, Some(spec));
            let mut reqs = mk(&prompts());
            for p in prompts().iter().take(3) {
                let mut r = req(p.clone(), 40, greedy.clone());
                r.speculative = Some(None);
                reqs.push(r);
            }
            for p in prompts().iter().skip(3) {
                let mut r = req(p.clone(), 40, greedy.clone());
                r.speculative = Some(Some(NgramConfig {
                    adaptive: true,
                    ..spec
                }));
                reqs.push(r);
            }
            let sinks = run_all(&mut c, reqs);
            for (i, w) in want.iter().enumerate() {
                assert_eq!(&sinks[i].tokens(), w, "{arch:?} {q} spec request {i}");
            }
            for (i, w) in want.iter().take(3).enumerate() {
                assert_eq!(&sinks[6 + i].tokens(), w, "{arch:?} {q} plain request {i}");
                assert_eq!(sinks[6 + i].spec_counts().0, 0, "opted out, no drafts");
            }
            for (i, w) in want.iter().enumerate().skip(3) {
                assert_eq!(
                    &sinks[6 + i].tokens(),
                    w,
                    "{arch:?} {q} adaptive request {i}"
                );
            }
            // Drafts were verified and some accepted, and the counters agree.
            let st = c.stats();
            let drafted = st.spec_draft_tokens.load(Ordering::Relaxed);
            let accepted = st.spec_accepted_tokens.load(Ordering::Relaxed);
            let rounds = st.spec_num_drafts.load(Ordering::Relaxed);
            assert!(
                drafted > 0 && accepted > 0,
                "{arch:?} {q}: {drafted} drafted {accepted} accepted"
            );
            assert!(accepted <= drafted && rounds <= drafted);
            let per_pos: Vec<u64> = st
                .spec_accepted_per_pos
                .iter()
                .map(|p| p.load(Ordering::Relaxed))
                .collect();
            assert_eq!(per_pos.iter().sum::<u64>(), accepted);
            assert!(per_pos.windows(2).all(|w| w[0] >= w[1]), "{per_pos:?}");
            assert!(per_pos[0] <= rounds);
            let (d, a): (usize, usize) = sinks
                .iter()
                .map(|s| s.spec_counts())
                .fold((0, 0), |(d, a), (x, y, _)| (d + x, a + y));
            assert_eq!(
                (d as u64, a as u64),
                (drafted, accepted),
                "per-request sums"
            );
            // Usage bills emitted tokens only.
            assert!(sinks.iter().all(|s| s.spec_counts().2 == 40));
        }
    }
}

#[test]
fn greedy_output_under_a_grammar_is_identical_with_and_without_drafts() {
    use ferrite_engine::grammar::{GrammarCompiler, GrammarSpec};
    let bytes = model_bytes(TinyArch::Llama, QuantType::Q8_0);
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    let grammars = GrammarCompiler::new(&tok).unwrap();
    // Repetitive documents, so n-gram lookup proposes drafts, many of them outside the grammar.
    let specs = [
        GrammarSpec::JsonSchema(serde_json::json!({
            "type": "array", "items": {"enum": ["abc", "abd", "bcd"]}, "maxItems": 12})),
        GrammarSpec::Regex("(ab|ba|a b){4,30}".into()),
    ];
    let greedy = SamplingParams::greedy();
    let mk = |spec: &GrammarSpec, p: &[u32]| {
        let mut r = req(p.to_vec(), 60, greedy.clone());
        r.constraint = Some(grammars.compile(spec).unwrap());
        r
    };
    let mut want = Vec::new();
    let mut plain = core(&bytes, None);
    for spec in &specs {
        for p in prompts().iter().take(3) {
            let s = &run_all(&mut plain, vec![mk(spec, p)])[0];
            want.push((s.tokens(), s.finish_reason()));
        }
    }
    let mut c = core(&bytes, Some(verify_all()));
    let reqs: Vec<NewRequest> = specs
        .iter()
        .flat_map(|s| {
            prompts()
                .into_iter()
                .take(3)
                .map(|p| mk(s, &p))
                .collect::<Vec<_>>()
        })
        .collect();
    let sinks = run_all(&mut c, reqs);
    for (i, (w, s)) in want.iter().zip(&sinks).enumerate() {
        assert_eq!(&s.tokens(), &w.0, "request {i}");
        assert_eq!(s.finish_reason(), w.1, "request {i}");
    }
    // The JSON documents parse and keep to the schema's enum.
    for (w, _) in &want[..3] {
        let text = tok.decode(w, true).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(v
            .as_array()
            .unwrap()
            .iter()
            .all(|x| ["abc", "abd", "bcd"].contains(&x.as_str().unwrap())));
    }
    let drafted = c.stats().spec_draft_tokens.load(Ordering::Relaxed);
    assert!(drafted > 0, "no drafts were verified under the grammars");
    assert!(c.stats().mask_seconds.count.load(Ordering::Relaxed) > 0);
}

/// Softmax over the top-k logits (temperature 1), as the sampler defines p.
fn top_k_probs(logits: &[f32], k: usize) -> Vec<(u32, f64)> {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    idx.truncate(k);
    let max = f64::from(logits[idx[0] as usize]);
    let z: f64 = idx
        .iter()
        .map(|&t| (f64::from(logits[t as usize]) - max).exp())
        .sum();
    idx.iter()
        .map(|&t| (t, (f64::from(logits[t as usize]) - max).exp() / z))
        .collect()
}

fn chi_square_bound(df: usize) -> f64 {
    // Wilson–Hilferty upper quantile at α = 1e-4 (z = 3.719).
    let d = df as f64;
    let z = 3.719;
    d * (1.0 - 2.0 / (9.0 * d) + z * (2.0 / (9.0 * d)).sqrt()).powi(3)
}

#[test]
fn sampled_output_keeps_the_target_distribution() {
    let bytes = model_bytes(TinyArch::Llama, QuantType::Q8_0);
    const K: usize = 3;
    let f = Arc::new(GgufFile::from_bytes(bytes.clone()).unwrap());
    let mut m = load_model_from(
        &f,
        &LoadOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let cfg = m.config().clone();
    let logits_after = |m: &mut Box<dyn ferrite_models::Model>, toks: &[u32]| -> Vec<f32> {
        let mut kv =
            ContiguousKvCache::new(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, 64, 1).unwrap();
        let pos: Vec<usize> = (0..toks.len()).collect();
        let mut out = Vec::new();
        m.forward(
            &ForwardBatch {
                tokens: toks,
                positions: &pos,
                slots: &vec![0; toks.len()],
                logits_rows: &[toks.len() - 1],
                kernel_groups: None,
            },
            &mut kv,
            &mut out,
        )
        .unwrap();
        out
    };
    let spec = NgramConfig {
        k: 3,
        min_n: 1,
        max_n: 3,
        adaptive: false,
    };
    // Exact joint distribution of the first two generated tokens, and the probability that the
    // second token accepts its draft. Pick, among candidate prompts, one where drafts are often
    // accepted, so the test exercises the acceptance path and not only rejections.
    let joint = |m: &mut Box<dyn ferrite_models::Model>, prompt: &[u32]| {
        let mut exact: Vec<((u32, u32), f64)> = Vec::new();
        let mut p_accept = 0.0;
        for (t1, p1) in top_k_probs(&logits_after(m, prompt), K) {
            let mut p2 = prompt.to_vec();
            p2.push(t1);
            let draft = ferrite_engine::spec::ngram::propose(&p2, &spec, 3);
            for (t2, q) in top_k_probs(&logits_after(m, &p2), K) {
                exact.push(((t1, t2), p1 * q));
                if draft.first() == Some(&t2) {
                    p_accept += p1 * q;
                }
            }
        }
        (exact, p_accept)
    };
    type Candidate = (Vec<u32>, Vec<((u32, u32), f64)>, f64);
    let mut best: Option<Candidate> = None;
    for cand in 0..40u32 {
        // Put the likely continuations into the prompt, so n-gram lookup proposes them.
        let mut prompt: Vec<u32> = (0..6).map(|j| 30 + (cand * 17 + j * 29) % 220).collect();
        for _ in 0..2 {
            let l = logits_after(&mut m, &prompt);
            let top = top_k_probs(&l, 1)[0].0;
            prompt.push(top);
        }
        let tail = prompt[..4].to_vec();
        prompt.extend(tail);
        let (exact, pa) = joint(&mut m, &prompt);
        if best.as_ref().is_none_or(|b| pa > b.2) {
            best = Some((prompt, exact, pa));
        }
    }
    let (prompt, exact, p_accept) = best.unwrap();
    assert!(
        p_accept > 0.02,
        "no candidate prompt gives drafts a chance ({p_accept})"
    );
    // Sampled runs with speculation on (drafts are proposed from the repeated prompt).
    const N: usize = 3000;
    let mut c = core(&bytes, Some(spec));
    let reqs = (0..N as u64)
        .map(|seed| {
            req(
                prompt.clone(),
                3,
                SamplingParams {
                    temperature: 1.0,
                    top_k: K,
                    seed: Some(seed),
                    ..SamplingParams::default()
                },
            )
        })
        .collect();
    let sinks = run_all(&mut c, reqs);
    assert!(
        c.stats().spec_accepted_tokens.load(Ordering::Relaxed) > 0,
        "drafts must be accepted sometimes"
    );
    let mut counts = std::collections::HashMap::new();
    for s in &sinks {
        let t = s.tokens();
        *counts.entry((t[0], t[1])).or_insert(0usize) += 1;
    }
    let chi = |dist: &[((u32, u32), f64)]| -> (f64, usize) {
        let mut x = 0.0;
        let mut cells = 0;
        for (pair, p) in dist {
            let e = p * N as f64;
            if e >= 5.0 {
                let o = *counts.get(pair).unwrap_or(&0) as f64;
                x += (o - e) * (o - e) / e;
                cells += 1;
            }
        }
        (x, cells.max(2) - 1)
    };
    let (x, df) = chi(&exact);
    eprintln!(
        "p_accept {p_accept:.3}, chi-square {x:.1} on {df} df, bound {:.1}",
        chi_square_bound(df)
    );
    assert!(
        x < chi_square_bound(df),
        "chi-square {x:.1} with {df} df exceeds {:.1}",
        chi_square_bound(df)
    );
    // The test can fail: moving half of the likeliest pair's mass to the least likely pair
    // is rejected.
    let mut wrong = exact.clone();
    wrong.sort_by(|a, b| b.1.total_cmp(&a.1));
    let moved = wrong[0].1 / 2.0;
    wrong[0].1 -= moved;
    let last = wrong.len() - 1;
    wrong[last].1 += moved;
    let (xw, dfw) = chi(&wrong);
    assert!(
        xw > chi_square_bound(dfw),
        "a distorted distribution should be rejected ({xw:.1})"
    );
}

/// An engine drafting with `draft` (a GGUF's bytes; `layers` keeps only its first blocks).
fn core_with_draft(bytes: &[u8], draft: &[u8], layers: Option<usize>) -> EngineCore {
    let mut c = core(
        bytes,
        Some(NgramConfig {
            k: 4,
            adaptive: false,
            ..NgramConfig::default()
        }),
    );
    let f = Arc::new(GgufFile::from_bytes(draft.to_vec()).unwrap());
    let cpu = ferrite_models::Cpu::new(ferrite_models::Kernels::detect(), 1);
    let m = ferrite_models::load_draft_model(&f, &cpu, layers).unwrap();
    c.set_draft_model(m).unwrap();
    c
}

#[test]
fn greedy_output_is_identical_with_draft_models() {
    for arch in TinyArch::ALL.into_iter().chain([TinyArch::Deepseek2]) {
        let bytes = model_bytes(arch, QuantType::Q8_0);
        let greedy = SamplingParams::greedy();
        // Free-form prompts as well as copy-heavy ones: a draft model does not need repeats.
        let mut ps = prompts();
        ps.extend((0..3u32).map(|i| (0..12).map(|j| 50 + (i * 31 + j * 13) % 200).collect()));
        let mut plain = core(&bytes, None);
        let want: Vec<Vec<u32>> = ps
            .iter()
            .map(|p| run_all(&mut plain, vec![req(p.clone(), 24, greedy.clone())])[0].tokens())
            .collect();
        let other = TinyModel::new(arch)
            .quant(QuantType::Q8_0)
            .seed(9)
            .to_bytes();
        for (name, draft, layers) in [
            ("itself", &bytes, None),
            ("another model", &other, None),
            ("its first layer", &bytes, Some(1)),
        ] {
            let mut c = core_with_draft(&bytes, draft, layers);
            let mut reqs: Vec<NewRequest> = ps
                .iter()
                .map(|p| req(p.clone(), 24, greedy.clone()))
                .collect();
            let mut off = req(ps[0].clone(), 24, greedy.clone());
            off.speculative = Some(None);
            reqs.push(off);
            // The same prompts verifying only the drafts worth their cost (with this draft's
            // measured cost that may be none at all).
            for p in &ps {
                let mut r = req(p.clone(), 24, greedy.clone());
                r.speculative = Some(Some(NgramConfig {
                    k: 4,
                    ..NgramConfig::default()
                }));
                reqs.push(r);
            }
            let sinks = run_all(&mut c, reqs);
            for (i, w) in want.iter().enumerate() {
                assert_eq!(&sinks[i].tokens(), w, "{arch:?}, draft {name}, request {i}");
            }
            assert_eq!(&sinks[ps.len()].tokens(), &want[0]);
            assert_eq!(sinks[ps.len()].spec_counts().0, 0, "opted out, no drafts");
            for (i, w) in want.iter().enumerate() {
                let s = &sinks[ps.len() + 1 + i];
                assert_eq!(
                    &s.tokens(),
                    w,
                    "{arch:?}, draft {name}, adaptive request {i}"
                );
            }
            let st = c.stats();
            let drafted = st.spec_draft_tokens.load(Ordering::Relaxed);
            let accepted = st.spec_accepted_tokens.load(Ordering::Relaxed);
            assert!(drafted > 0 && accepted <= drafted, "{arch:?} {name}");
            let per_pos: u64 = st
                .spec_accepted_per_pos
                .iter()
                .map(|p| p.load(Ordering::Relaxed))
                .sum();
            assert_eq!(per_pos, accepted);
            if name == "itself" {
                // The target drafting for itself computes every position as the target does
                // (same kernel groups), so it proposes exactly the target's greedy tokens.
                assert_eq!(
                    accepted, drafted,
                    "{arch:?}: self-drafting accepted {accepted} of {drafted}"
                );
            }
            assert!(
                sinks.iter().all(|s| s.spec_counts().2 == 24),
                "usage bills output only"
            );
        }
    }
}

#[test]
fn a_draft_with_another_vocabulary_is_refused() {
    let bytes = model_bytes(TinyArch::Llama, QuantType::Q8_0);
    let mut small = TinyModel::new(TinyArch::Llama);
    small.vocab = 280;
    let f = Arc::new(GgufFile::from_bytes(small.to_bytes()).unwrap());
    let cpu = ferrite_models::Cpu::new(ferrite_models::Kernels::detect(), 1);
    let m = ferrite_models::load_draft_model(&f, &cpu, None).unwrap();
    let mut c = core(&bytes, None);
    let e = c.set_draft_model(m).unwrap_err().to_string();
    assert!(
        e.contains("vocabulary has 280 tokens, the target's 300"),
        "{e}"
    );
    let e = ferrite_models::load_draft_model(&f, &cpu, Some(9))
        .unwrap_err()
        .to_string();
    assert!(e.contains("draft layers must be between 1 and"), "{e}");
}

/// The exact next-token distributions with and without speculation: the rows a verification
/// step samples from (the last accepted token plus k drafts in one batched forward pass) give,
/// position by position, the same logits — so the same softmax, under any sampling settings —
/// as decoding those tokens one at a time. Every architecture, a 32-element format (stream
/// panels) and a K-quant, 1 and 3 drafts.
#[test]
fn verification_rows_give_the_decoding_distribution() {
    for arch in TinyArch::ALL.into_iter().chain([TinyArch::Deepseek2]) {
        for q in [QuantType::Q4_0, QuantType::Q4_K] {
            let bytes = TinyModel::new(arch).quant(q).to_bytes();
            let f = Arc::new(GgufFile::from_bytes(bytes).unwrap());
            let opts = LoadOptions {
                threads: 2,
                ..Default::default()
            };
            let mut m = load_model_from(&f, &opts).unwrap();
            let c = m.config().clone();
            let prompt: Vec<u32> = (0..8).map(|i| 40 + 13 * i).collect();
            let run = |m: &mut Box<dyn ferrite_models::Model>,
                       kv: &mut ContiguousKvCache,
                       toks: &[u32],
                       at: usize,
                       all: bool| {
                let pos: Vec<usize> = (at..at + toks.len()).collect();
                let rows: Vec<usize> = if all {
                    (0..toks.len()).collect()
                } else {
                    vec![toks.len() - 1]
                };
                // As the engine batches a verification: every row a kernel group of one, so
                // shape-dependent kernels (llama.cpp's K-quant choices) compute each row as
                // decoding would.
                let ones = vec![(0, 1); toks.len()];
                let mut out = Vec::new();
                let b = ForwardBatch {
                    tokens: toks,
                    positions: &pos,
                    slots: &vec![0; toks.len()],
                    logits_rows: &rows,
                    kernel_groups: all.then_some(ones.as_slice()),
                };
                m.forward(&b, kv, &mut out).unwrap();
                out
            };
            for k in [1usize, 3] {
                let rows: Vec<u32> = (0..=k as u32).map(|i| 7 + 31 * i).collect();
                let fresh =
                    || ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, 32, 1).unwrap();
                let (mut a, mut b) = (fresh(), fresh());
                run(&mut m, &mut a, &prompt, 0, false);
                run(&mut m, &mut b, &prompt, 0, false);
                let decoded: Vec<f32> = rows
                    .iter()
                    .enumerate()
                    .flat_map(|(i, &t)| run(&mut m, &mut a, &[t], prompt.len() + i, false))
                    .collect();
                let verified = run(&mut m, &mut b, &rows, prompt.len(), true);
                assert_eq!(verified.len(), (k + 1) * c.vocab_size);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(
                    bits(&decoded) == bits(&verified),
                    "{arch:?} {q} k={k}: verification rows differ from decoding"
                );
            }
        }
    }
}
