//! Tiny synthetic models of each architecture, in every supported weight format, through the
//! quantized forward, checked against the f32 reference forward on the same file.

use std::sync::Arc;

use ferrite_gguf::{GgufFile, Value};
use ferrite_kernels::quant::QuantType;
use ferrite_models::{
    load_model_from, ContiguousKvCache, Error, ForwardBatch, Isa, KvFormat, LoadOptions, Model,
};
use ferrite_testkit::{reference, TinyArch, TinyModel};

mod common;
use common::{prefill_all, prefill_in, rel_err};

const PROMPT: [u32; 12] = [72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33];

fn load(bytes: Vec<u8>, isa: Option<Isa>, threads: usize) -> Result<Box<dyn Model>, Error> {
    let f = Arc::new(GgufFile::from_bytes(bytes)?);
    load_model_from(
        &f,
        &LoadOptions {
            isa,
            threads,
            ..Default::default()
        },
    )
}

/// Logits at every position, one token per forward call (the decode path).
fn decode_all(m: &mut dyn Model, tokens: &[u32]) -> Vec<Vec<f32>> {
    decode_in(m, tokens, KvFormat::F16)
}

/// [`decode_all`] with a cache storing rows as `format`.
fn decode_in(m: &mut dyn Model, tokens: &[u32], format: KvFormat) -> Vec<Vec<f32>> {
    let mut kv = common::cache(m, format);
    let mut all = Vec::new();
    for (p, &t) in tokens.iter().enumerate() {
        let mut out = Vec::new();
        let b = ForwardBatch {
            tokens: &[t],
            positions: &[p],
            slots: &[0],
            logits_rows: &[0],
            kernel_groups: None,
        };
        m.forward(&b, &mut kv, &mut out).unwrap();
        all.push(out);
    }
    all
}

/// Relative L2 error allowed against the f32 reference. Float weights only see the f16 KV cache
/// and f16 attention accumulator; integer formats also quantize activations to 8 bits.
fn tolerance(q: QuantType) -> f64 {
    match q {
        QuantType::F32 | QuantType::F16 => 0.003,
        // bf16 activations keep 8 mantissa bits.
        QuantType::BF16 => 0.012,
        _ => 0.04,
    }
}

#[test]
fn every_format_matches_the_reference_forward() {
    for arch in TinyArch::ALL {
        for q in QuantType::WEIGHTS {
            let bytes = TinyModel::new(arch).quant(q).every_expert().to_bytes();
            let f = GgufFile::from_bytes(bytes.clone()).unwrap();
            let want = reference::logits(&f, &PROMPT).unwrap();
            let mut m = load(bytes, None, 2).unwrap();
            let got = prefill_all(m.as_mut(), &PROMPT);
            let e = rel_err(&got, &want);
            assert!(e < tolerance(q), "{arch:?} {q}: relative error {e:.5}");
            // A broken kernel or layout lands near 1.0; make sure the check can fail.
            let shifted: Vec<Vec<f32>> = want.iter().rev().cloned().collect();
            assert!(rel_err(&shifted, &want) > 10.0 * tolerance(q));
            eprintln!("{arch:?} {q}: {e:.5}");
        }
    }
}

#[test]
fn decode_matches_prefill_and_isas_agree() {
    for arch in TinyArch::ALL {
        for q in [
            QuantType::F16,
            QuantType::Q4_1,
            QuantType::Q5_0,
            QuantType::Q6_K,
        ] {
            let bytes = TinyModel::new(arch).quant(q).seed(11).to_bytes();
            let mut base = load(bytes.clone(), Some(Isa::Scalar), 1).unwrap();
            let want = prefill_all(base.as_mut(), &PROMPT);
            let dec = decode_all(base.as_mut(), &PROMPT);
            // K-quant matrices use llama.cpp's tiled arithmetic for batches of 8+ rows and the
            // per-row arithmetic for decode (as llama.cpp does), so their last bits differ and
            // can flip an activation's 8-bit rounding; every other format is bit-identical.
            let tol = if q == QuantType::Q6_K { 2e-2 } else { 1e-5 };
            assert!(
                rel_err(&dec, &want) < tol,
                "{arch:?} {q}: decode vs prefill: {}",
                rel_err(&dec, &want)
            );
            for isa in Isa::available() {
                let mut m = load(bytes.clone(), Some(isa), 2).unwrap();
                let got = prefill_all(m.as_mut(), &PROMPT);
                // Same integer sums, different float summation order. The last-bit differences
                // can flip an activation's 8-bit rounding (one quantum is ~0.4% of a block's
                // range), so integer formats get a looser bound; a wrong kernel lands near 1.0.
                let tol = if q == QuantType::F16 { 2e-3 } else { 2e-2 };
                let e = rel_err(&got, &want);
                assert!(e < tol, "{arch:?} {q} {isa}: {e}");
            }
        }
    }
}

#[test]
fn batch_of_two_sequences_equals_each_alone() {
    let bytes = TinyModel::new(TinyArch::Llama)
        .quant(QuantType::Q8_0)
        .to_bytes();
    let mut m = load(bytes, None, 2).unwrap();
    let (a, b) = (&PROMPT[..5], &PROMPT[5..]);
    let alone_a = prefill_all(m.as_mut(), a);
    let alone_b = prefill_all(m.as_mut(), b);
    let c = m.config().clone();
    let mut kv = ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, 64, 2).unwrap();
    let tokens: Vec<u32> = a.iter().chain(b).copied().collect();
    let pos: Vec<usize> = (0..a.len()).chain(0..b.len()).collect();
    let slots: Vec<usize> = vec![0; a.len()]
        .into_iter()
        .chain(vec![1; b.len()])
        .collect();
    let rows = [a.len() - 1, tokens.len() - 1];
    let mut out = Vec::new();
    m.forward(
        &ForwardBatch {
            tokens: &tokens,
            positions: &pos,
            slots: &slots,
            logits_rows: &rows,
            kernel_groups: None,
        },
        &mut kv,
        &mut out,
    )
    .unwrap();
    assert_eq!(&out[..c.vocab_size], &alone_a[a.len() - 1][..]);
    assert_eq!(&out[c.vocab_size..], &alone_b[b.len() - 1][..]);
}

#[test]
fn untied_output_head_is_used() {
    let mut t = TinyModel::new(TinyArch::Llama);
    t.untied_output = true;
    let bytes = t.to_bytes();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    let want = reference::logits(&f, &PROMPT[..3]).unwrap();
    let mut m = load(bytes, None, 1).unwrap();
    assert!(rel_err(&prefill_all(m.as_mut(), &PROMPT[..3]), &want) < 0.01);
}

#[test]
fn unsupported_architecture_is_named() {
    let mut w = TinyModel::new(TinyArch::Llama).writer();
    w.add_metadata("general.architecture", Value::String("mamba".into()));
    let err = load(w.to_bytes().unwrap(), None, 1).unwrap_err();
    assert!(
        err.to_string()
            .contains("unsupported architecture \"mamba\""),
        "{err}"
    );
}

#[test]
fn unsupported_tensor_type_is_named() {
    // Rewrite one matrix as IQ4_NL (same 18-byte/32 geometry as Q4_0, no kernel in ferrite).
    let tiny = TinyModel::new(TinyArch::Llama).quant(QuantType::Q4_0);
    let mut bytes = tiny.to_bytes();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    let name = b"blk.0.attn_q.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len() + 4 + 16;
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 2);
    bytes[at..at + 4].copy_from_slice(&20u32.to_le_bytes());
    drop(f);
    let err = load(bytes, None, 1).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("blk.0.attn_q.weight") && msg.contains("IQ4_NL"),
        "{msg}"
    );
}

#[test]
fn truncated_file_is_an_error() {
    let bytes = TinyModel::new(TinyArch::Llama).to_bytes();
    let err = load(bytes[..bytes.len() / 2].to_vec(), None, 1).unwrap_err();
    assert!(err.to_string().contains("outside the file"), "{err}");
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let mut t = TinyModel::new(TinyArch::Llama);
    t.layers = 1;
    let mut w = t.writer();
    w.add_metadata("llama.block_count", Value::U32(2));
    let err = load(w.to_bytes().unwrap(), None, 1).unwrap_err();
    assert!(err.to_string().contains("blk.1.attn_norm.weight"), "{err}");

    let mut w = TinyModel::new(TinyArch::Llama).writer();
    w.add_metadata("llama.feed_forward_length", Value::U32(256));
    let err = load(w.to_bytes().unwrap(), None, 1).unwrap_err();
    assert!(err.to_string().contains("blk.0.ffn_gate.weight"), "{err}");
}

#[test]
fn positions_past_the_cache_are_rejected() {
    let bytes = TinyModel::new(TinyArch::Llama).to_bytes();
    let mut m = load(bytes, None, 1).unwrap();
    let c = m.config().clone();
    let mut kv = ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, 4, 1).unwrap();
    let mut out = Vec::new();
    let b = ForwardBatch {
        tokens: &PROMPT[..5],
        positions: &[0, 1, 2, 3, 4],
        slots: &[0; 5],
        logits_rows: &[4],
        kernel_groups: None,
    };
    let err = m.forward(&b, &mut kv, &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ContextFull {
                position: 4,
                capacity: 4
            }
        ),
        "{err}"
    );
    let b = ForwardBatch {
        tokens: &[9999],
        positions: &[0],
        slots: &[0],
        logits_rows: &[0],
        kernel_groups: None,
    };
    assert!(m
        .forward(&b, &mut kv, &mut out)
        .unwrap_err()
        .to_string()
        .contains("vocabulary"));
}

/// Decoding with 2 and 3 threads, where each (token, KV head) of attention is cut into column
/// parts taken by different threads, gives exactly the 1-thread logits.
#[test]
fn decoding_is_bit_identical_across_thread_counts() {
    for arch in TinyArch::ALL {
        let bytes = TinyModel::new(arch).quant(QuantType::Q8_0).to_bytes();
        let bits =
            |v: Vec<Vec<f32>>| -> Vec<u32> { v.iter().flatten().map(|x| x.to_bits()).collect() };
        let mut one = load(bytes.clone(), None, 1).unwrap();
        let want = bits(decode_all(one.as_mut(), &PROMPT));
        for threads in [2, 3] {
            let mut m = load(bytes.clone(), None, threads).unwrap();
            assert!(
                bits(decode_all(m.as_mut(), &PROMPT)) == want,
                "{arch:?}: {threads} threads"
            );
        }
    }
}

/// A Q8_0 KV cache: decoding one token at a time equals prefilling the prompt at once and is
/// bit-identical across thread counts (every architecture), its logits stay close to the f16
/// cache's (the cache holds 8-bit rows), and a head size that is not a whole number of Q8_0
/// blocks is refused when the cache is made.
#[test]
fn q8_0_kv_cache_decodes_consistently_and_close_to_f16() {
    for arch in TinyArch::ALL {
        let bytes = TinyModel::new(arch).quant(QuantType::Q8_0).to_bytes();
        let bits =
            |v: &[Vec<f32>]| -> Vec<u32> { v.iter().flatten().map(|x| x.to_bits()).collect() };
        let mut one = load(bytes.clone(), None, 1).unwrap();
        let want = decode_in(one.as_mut(), &PROMPT, KvFormat::Q8_0);
        assert!(
            bits(&prefill_in(one.as_mut(), &PROMPT, KvFormat::Q8_0)) == bits(&want),
            "{arch:?}: prefill vs decode"
        );
        for threads in [2, 3] {
            let mut m = load(bytes.clone(), None, threads).unwrap();
            assert!(
                bits(&decode_in(m.as_mut(), &PROMPT, KvFormat::Q8_0)) == bits(&want),
                "{arch:?}: {threads} threads"
            );
        }
        let f16 = decode_all(one.as_mut(), &PROMPT);
        let err = rel_err(&want, &f16);
        assert!(
            err > 0.0 && err < 0.05,
            "{arch:?}: Q8_0 cache vs f16 relative error {err}"
        );
    }
    let bad = ContiguousKvCache::with_format(KvFormat::Q8_0, 1, 1, 48, 4, 1);
    assert!(bad.is_err(), "48-element heads are not whole Q8_0 blocks");
}

/// Logits of every row of one forward over a fresh two-sequence cache of 256 positions.
fn forward_rows(
    m: &mut dyn Model,
    tokens: &[u32],
    positions: &[usize],
    slots: &[usize],
    groups: Option<&[(usize, usize)]>,
) -> Vec<Vec<f32>> {
    let c = m.config().clone();
    let mut kv = ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, 256, 2).unwrap();
    let rows: Vec<usize> = (0..tokens.len()).collect();
    let mut out = Vec::new();
    let b = ForwardBatch {
        tokens,
        positions,
        slots,
        logits_rows: &rows,
        kernel_groups: groups,
    };
    m.forward(&b, &mut kv, &mut out).unwrap();
    out.chunks(c.vocab_size).map(|r| r.to_vec()).collect()
}

/// Prompts of 64 tokens or more take llama.cpp's tiled prompt attention (units of several
/// tokens × the query heads of a KV head, key tiles of 64, sliding windows cutting tiles):
/// close to the f32 reference forward, bit-identical at 1, 2 and 3 threads, and a sequence's
/// rows are the same whether or not another sequence's one-token groups (the one-query kernel)
/// share its batch.
#[test]
fn long_prompts_take_the_tiled_attention_consistently() {
    let prompt: Vec<u32> = (0..150u32).map(|i| (i * 37 + 5) % 300).collect();
    let pos: Vec<usize> = (0..prompt.len()).collect();
    let bits = |v: &[Vec<f32>]| -> Vec<u32> { v.iter().flatten().map(|x| x.to_bits()).collect() };
    for (arch, window) in [
        (TinyArch::Llama, 4),
        (TinyArch::Gemma3, 4),
        (TinyArch::Gemma3, 100),
    ] {
        let mut tiny = TinyModel::new(arch).quant(QuantType::Q8_0);
        tiny.window = window;
        let bytes = tiny.to_bytes();
        let want =
            reference::logits(&GgufFile::from_bytes(bytes.clone()).unwrap(), &prompt).unwrap();
        let mut one = load(bytes.clone(), None, 1).unwrap();
        let alone = forward_rows(one.as_mut(), &prompt, &pos, &vec![0; prompt.len()], None);
        let e = rel_err(&alone, &want);
        assert!(
            e < tolerance(QuantType::Q8_0),
            "{arch:?} window {window}: {e}"
        );
        for threads in [2, 3] {
            let mut m = load(bytes.clone(), None, threads).unwrap();
            let got = forward_rows(m.as_mut(), &prompt, &pos, &vec![0; prompt.len()], None);
            assert!(bits(&got) == bits(&alone), "{arch:?}: {threads} threads");
        }
        // The prompt as one kernel group beside three one-token groups of another sequence.
        let other = [7u32, 8, 9];
        let n = prompt.len();
        let tokens: Vec<u32> = prompt.iter().chain(&other).copied().collect();
        let positions: Vec<usize> = (0..n).chain(0..other.len()).collect();
        let slots: Vec<usize> = vec![0; n].into_iter().chain(vec![1; other.len()]).collect();
        let groups: Vec<(usize, usize)> = (0..n)
            .map(|i| (i, n))
            .chain(other.iter().map(|_| (0, 1)))
            .collect();
        let mut m = load(bytes.clone(), None, 2).unwrap();
        let mixed = forward_rows(m.as_mut(), &tokens, &positions, &slots, Some(&groups));
        assert!(
            bits(&mixed[..n]) == bits(&alone),
            "{arch:?}: prompt rows in a mixed batch"
        );
        let other_alone = forward_rows(
            m.as_mut(),
            &other,
            &[0, 1, 2],
            &[0, 0, 0],
            Some(&[(0, 1), (0, 1), (0, 1)]),
        );
        assert!(
            bits(&mixed[n..]) == bits(&other_alone),
            "{arch:?}: one-token rows"
        );
    }
}

/// Decoding deep in context (past 512 visible keys), where a query's keys are accumulated in
/// chunks and merged: close to the f32 reference, bit-identical at 1, 2 and 3 threads, the same
/// whether the token decodes alone, beside another sequence's token, or as a one-token group
/// inside a batch whose other group takes the tiled prompt attention (the chunks then run one
/// after another on one thread).
#[test]
fn decoding_deep_in_context_is_consistent() {
    let n = 700;
    let seq: Vec<u32> = (0..n as u32 + 3).map(|i| (i * 53 + 11) % 300).collect();
    let bits = |v: &[Vec<f32>]| -> Vec<u32> { v.iter().flatten().map(|x| x.to_bits()).collect() };
    for (arch, window) in [(TinyArch::Llama, 4), (TinyArch::Gemma3, 600)] {
        let mut tiny = TinyModel::new(arch).quant(QuantType::Q8_0);
        (tiny.window, tiny.context) = (window, 1024);
        let bytes = tiny.to_bytes();
        let want = reference::logits(&GgufFile::from_bytes(bytes.clone()).unwrap(), &seq).unwrap();
        // The first n tokens as a prompt into slot 0 (and slot 1), then 3 tokens decoded.
        let run = |threads: usize, beside: bool| -> Vec<Vec<f32>> {
            let mut m = load(bytes.clone(), None, threads).unwrap();
            let c = m.config().clone();
            let mut kv =
                ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, 1024, 2).unwrap();
            let mut out = Vec::new();
            for slot in [0, 1] {
                let pos: Vec<usize> = (0..n).collect();
                let b = ForwardBatch {
                    tokens: &seq[..n],
                    positions: &pos,
                    slots: &vec![slot; n],
                    logits_rows: &[],
                    kernel_groups: None,
                };
                m.forward(&b, &mut kv, &mut out).unwrap();
            }
            let mut rows = Vec::new();
            for (p, &token) in seq.iter().enumerate().skip(n) {
                let (tokens, positions, slots): (Vec<u32>, Vec<usize>, Vec<usize>) = if beside {
                    (vec![token, token], vec![p, p], vec![0, 1])
                } else {
                    (vec![token], vec![p], vec![0])
                };
                let b = ForwardBatch {
                    tokens: &tokens,
                    positions: &positions,
                    slots: &slots,
                    logits_rows: &[0],
                    kernel_groups: None,
                };
                m.forward(&b, &mut kv, &mut out).unwrap();
                rows.push(out[..c.vocab_size].to_vec());
            }
            rows
        };
        let alone = run(1, false);
        let e = rel_err(&alone, &want[n..]);
        assert!(e < tolerance(QuantType::Q8_0), "{arch:?}: {e}");
        for threads in [2, 3] {
            assert!(
                bits(&run(threads, false)) == bits(&alone),
                "{arch:?}: {threads} threads"
            );
            assert!(
                bits(&run(threads, true)) == bits(&alone),
                "{arch:?}: batched"
            );
        }
        // Position n of slot 1 as a one-token group beside a 70-token prompt of slot 0.
        let mut m = load(bytes.clone(), None, 2).unwrap();
        let c = m.config().clone();
        let mut kv = ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, 1024, 2).unwrap();
        let mut out = Vec::new();
        let pos: Vec<usize> = (0..n).collect();
        let fill = ForwardBatch {
            tokens: &seq[..n],
            positions: &pos,
            slots: &vec![1; n],
            logits_rows: &[],
            kernel_groups: None,
        };
        m.forward(&fill, &mut kv, &mut out).unwrap();
        let tokens: Vec<u32> = seq[..70].iter().chain(&seq[n..n + 1]).copied().collect();
        let positions: Vec<usize> = (0..70).chain([n]).collect();
        let slots: Vec<usize> = vec![0; 70].into_iter().chain([1]).collect();
        let groups: Vec<(usize, usize)> = (0..70).map(|i| (i, 70)).chain([(0, 1)]).collect();
        let b = ForwardBatch {
            tokens: &tokens,
            positions: &positions,
            slots: &slots,
            logits_rows: &[70],
            kernel_groups: Some(&groups),
        };
        m.forward(&b, &mut kv, &mut out).unwrap();
        assert!(
            bits(&[out[..c.vocab_size].to_vec()]) == bits(&alone[..1]),
            "{arch:?}: one-token group beside a tiled prompt"
        );
    }
}
