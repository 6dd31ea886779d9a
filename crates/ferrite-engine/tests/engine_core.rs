//! The engine step on a tiny synthetic model: greedy output is the same alone, in a batch of 8,
//! after a prefix-cache hit, under every prefill chunk size and under preemption; aborted
//! requests free their blocks; seeds reproduce.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferrite_engine::{
    EngineConfig, EngineCore, FinishReason, NewRequest, OutputSink, RequestEvent, SamplingParams,
};
use ferrite_gguf::GgufFile;
use ferrite_kernels::quant::QuantType;
use ferrite_models::{load_model_from, LoadOptions};
use ferrite_testkit::{TinyArch, TinyModel};
use ferrite_tokenizer::Tokenizer;

#[derive(Clone, Default)]
struct Collect {
    events: Arc<Mutex<Vec<RequestEvent>>>,
    closed: Arc<AtomicBool>,
}

impl OutputSink for Collect {
    fn send(&mut self, ev: RequestEvent) -> bool {
        self.events.lock().unwrap().push(ev);
        !self.closed.load(Ordering::Relaxed)
    }
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

impl Collect {
    fn tokens(&self) -> Vec<u32> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                RequestEvent::Token { token, .. } => Some(*token),
                _ => None,
            })
            .collect()
    }
    fn finish(&self) -> Option<ferrite_engine::FinishInfo> {
        self.events.lock().unwrap().iter().find_map(|e| match e {
            RequestEvent::Finished(f) => Some(f.clone()),
            _ => None,
        })
    }
    fn text(&self) -> String {
        let ev = self.events.lock().unwrap();
        let mut s = String::new();
        for e in ev.iter() {
            match e {
                RequestEvent::Token { text, .. } => s.push_str(text),
                RequestEvent::Finished(f) => s.push_str(&f.text),
                RequestEvent::Error(e) => panic!("request failed: {e}"),
            }
        }
        s
    }
}

fn core(arch: TinyArch, cfg: EngineConfig) -> EngineCore {
    let bytes = TinyModel::new(arch).quant(QuantType::Q8_0).to_bytes();
    let f = Arc::new(GgufFile::from_bytes(bytes).unwrap());
    let m = load_model_from(
        &f,
        &LoadOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    EngineCore::new(m, Arc::new(Tokenizer::from_gguf(&f).unwrap()), &cfg).unwrap()
}

fn cfg(budget: usize, kv_bytes: usize) -> EngineConfig {
    EngineConfig {
        max_num_batched_tokens: budget,
        kv_cache_bytes: kv_bytes,
        max_num_seqs: 16,
        ..EngineConfig::default()
    }
}

fn request(prompt: Vec<u32>, max_tokens: usize, sampling: SamplingParams) -> NewRequest {
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

fn prompts() -> Vec<Vec<u32>> {
    (0..8u32)
        .map(|i| {
            (0..(5 + 9 * i))
                .map(|j| 3 + (i * 37 + j * 11) % 200)
                .collect()
        })
        .collect()
}

fn drain(c: &mut EngineCore) {
    let mut n = 0;
    while c.has_work() {
        c.step();
        n += 1;
        assert!(n < 10_000);
        c.scheduler().check().unwrap();
    }
}

fn run_each_alone(c: &mut EngineCore, sampling: &SamplingParams) -> Vec<Vec<u32>> {
    prompts()
        .into_iter()
        .map(|p| {
            let sink = Collect::default();
            c.add_request(request(p, 24, sampling.clone()), Box::new(sink.clone()));
            drain(c);
            sink.tokens()
        })
        .collect()
}

fn run_together(c: &mut EngineCore, sampling: &SamplingParams) -> Vec<Vec<u32>> {
    let sinks: Vec<Collect> = prompts()
        .into_iter()
        .map(|p| {
            let sink = Collect::default();
            c.add_request(request(p, 24, sampling.clone()), Box::new(sink.clone()));
            sink
        })
        .collect();
    drain(c);
    sinks.iter().map(Collect::tokens).collect()
}

#[test]
fn greedy_is_identical_alone_batched_chunked_cached_and_preempted() {
    for arch in TinyArch::ALL.into_iter().chain([TinyArch::Deepseek2]) {
        let g = SamplingParams::greedy();
        let alone = run_each_alone(&mut core(arch, cfg(4096, 64 << 20)), &g);
        assert!(alone.iter().all(|t| t.len() == 24));
        // Batch of 8 concurrent requests, with several prefill chunk sizes.
        for budget in [1, 3, 16, 64, 4096] {
            let mut c = core(arch, cfg(budget, 64 << 20));
            assert_eq!(run_together(&mut c, &g), alone, "{arch:?} budget {budget}");
            // The same prompts again hit the prefix cache and still agree.
            let before = c.scheduler().counters().prefix_hits;
            assert_eq!(
                run_together(&mut c, &g),
                alone,
                "{arch:?} cached, budget {budget}"
            );
            assert!(c.scheduler().counters().prefix_hits > before);
        }
        // A pool too small for all 8 at once forces preemption and recompute.
        let block = {
            let probe = core(arch, cfg(64, 64 << 20));
            let (blocks, _) = probe.kv_geometry();
            (64usize << 20) / blocks
        };
        let mut c = core(arch, cfg(64, block * 24));
        assert_eq!(run_together(&mut c, &g), alone, "{arch:?} preempted");
        assert!(
            c.scheduler().counters().preemptions > 0,
            "pool must force preemption"
        );
        assert_eq!(c.scheduler().kv().usage(), 0.0);
    }
}

#[test]
fn seeded_sampling_is_reproducible_in_and_out_of_batches() {
    let s = SamplingParams {
        temperature: 0.9,
        top_k: 20,
        seed: Some(1234),
        ..SamplingParams::default()
    };
    let alone = run_each_alone(&mut core(TinyArch::Llama, cfg(4096, 64 << 20)), &s);
    let together = run_together(&mut core(TinyArch::Llama, cfg(7, 64 << 20)), &s);
    assert_eq!(alone, together);
    let greedy = run_each_alone(
        &mut core(TinyArch::Llama, cfg(4096, 64 << 20)),
        &SamplingParams::greedy(),
    );
    assert_ne!(
        alone, greedy,
        "sampling at t=0.9 should differ from greedy somewhere"
    );
}

#[test]
fn cached_tokens_are_reported_and_usage_counts_tokens() {
    let mut c = core(TinyArch::Llama, cfg(4096, 64 << 20));
    let p: Vec<u32> = (0..40).map(|i| 3 + i % 100).collect();
    for (round, want_cached) in [(0, 0), (1, 32)] {
        let sink = Collect::default();
        c.add_request(
            request(p.clone(), 5, SamplingParams::greedy()),
            Box::new(sink.clone()),
        );
        drain(&mut c);
        let f = sink.finish().unwrap();
        assert_eq!(f.prompt_tokens, 40);
        assert_eq!(f.completion_tokens, 5);
        assert_eq!(f.cached_tokens, want_cached, "round {round}");
        assert_eq!(f.reason, FinishReason::Length);
    }
}

#[test]
fn a_closed_sink_aborts_and_frees_blocks_in_the_next_step() {
    let mut c = core(TinyArch::Llama, cfg(4096, 64 << 20));
    let sinks: Vec<Collect> = prompts()
        .into_iter()
        .map(|p| {
            let s = Collect::default();
            c.add_request(
                request(p, 1000, SamplingParams::greedy()),
                Box::new(s.clone()),
            );
            s
        })
        .collect();
    for _ in 0..3 {
        c.step();
    }
    assert!(c.scheduler().kv().usage() > 0.0);
    for s in &sinks {
        s.closed.store(true, Ordering::Relaxed);
    }
    c.step();
    assert_eq!(c.scheduler().num_running(), 0);
    assert_eq!(c.scheduler().kv().usage(), 0.0);
    assert!(!c.has_work());
    c.scheduler().check().unwrap();
}

#[test]
fn bad_requests_get_an_error_event_and_hold_nothing() {
    let mut c = core(TinyArch::Llama, cfg(4096, 64 << 20));
    let max = c.max_model_len();
    for (req, want) in [
        (request(vec![], 5, SamplingParams::greedy()), "empty"),
        (
            request(vec![5; max], 5, SamplingParams::greedy()),
            "too many",
        ),
        (
            request(vec![999_999], 5, SamplingParams::greedy()),
            "vocabulary",
        ),
        (
            request(
                vec![5],
                5,
                SamplingParams {
                    top_p: 0.0,
                    ..SamplingParams::default()
                },
            ),
            "top_p",
        ),
    ] {
        let sink = Collect::default();
        c.add_request(req, Box::new(sink.clone()));
        let ev = sink.events.lock().unwrap().clone();
        match ev.as_slice() {
            [RequestEvent::Error(m)] => assert!(m.contains(want), "{m}"),
            other => panic!("expected one error, got {other:?}"),
        }
        assert!(!c.has_work());
    }
}

#[test]
fn logprobs_describe_the_raw_distribution_and_stop_strings_cut_text() {
    let mut c = core(TinyArch::Llama, cfg(4096, 64 << 20));
    let sink = Collect::default();
    let mut r = request(prompts()[2].clone(), 12, SamplingParams::greedy());
    r.logprobs = Some(3);
    c.add_request(r, Box::new(sink.clone()));
    drain(&mut c);
    for e in sink.events.lock().unwrap().iter() {
        if let RequestEvent::Token { token, logprob, .. } = e {
            let lp = logprob.as_ref().unwrap();
            assert_eq!(lp.top.len(), 3);
            // Greedy picks the most likely token.
            assert_eq!(lp.top[0].0, *token);
            assert!((lp.top[0].1 - lp.logprob).abs() < 1e-6);
            assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
            assert!(lp.logprob <= 0.0);
        }
    }
    // Stop at a piece of the greedy text: the text ends just before it.
    let full = sink.text();
    let chars: Vec<char> = full.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cut = full.find(&stop).unwrap();
    let sink = Collect::default();
    let mut r = request(prompts()[2].clone(), 12, SamplingParams::greedy());
    r.stop = vec![stop.clone()];
    c.add_request(r, Box::new(sink.clone()));
    drain(&mut c);
    assert_eq!(sink.text(), full[..cut], "stop {stop:?} in {full:?}");
    assert_eq!(sink.finish().unwrap().reason, FinishReason::Stop);
}

/// Without `max_model_len` the longest sequence is the model's context capped to what the KV
/// cache holds (the default cache must serve a long-context model); set explicitly beyond
/// the cache, start-up fails with an error saying what to raise.
#[test]
fn max_model_len_defaults_to_what_the_kv_cache_holds() {
    let bytes = TinyModel::new(TinyArch::Llama)
        .quant(QuantType::Q8_0)
        .to_bytes();
    let f = Arc::new(GgufFile::from_bytes(bytes).unwrap());
    let build = |cfg: &EngineConfig| {
        let opts = LoadOptions {
            threads: 1,
            ..Default::default()
        };
        let m = load_model_from(&f, &opts).unwrap();
        EngineCore::new(m, Arc::new(Tokenizer::from_gguf(&f).unwrap()), cfg)
    };
    let context = build(&cfg(64, 64 << 20)).unwrap().max_model_len();
    let c = ferrite_models::ModelConfig::from_gguf(&f).unwrap();
    // f16 rows: two bytes per element.
    let block =
        ferrite_engine::kv_cache::PagedKvStore::block_bytes(c.kv_shape(), 2 * c.head_dim, 16);
    // Five blocks: one is kept back, four hold 64 tokens.
    let small = cfg(64, 5 * block);
    assert!(
        context > 64,
        "the tiny model's context ({context}) exceeds the small cache"
    );
    assert_eq!(build(&small).unwrap().max_model_len(), 64);
    let explicit = EngineConfig {
        max_model_len: Some(context),
        ..small
    };
    let err = build(&explicit)
        .map(|_| ())
        .expect_err("a too-small cache is refused")
        .to_string();
    assert!(err.contains("raise --kv-cache-mib"), "{err}");
}
