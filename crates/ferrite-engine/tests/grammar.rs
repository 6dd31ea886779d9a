//! Constrained decoding (llguidance) on a byte-level vocabulary with multi-byte JSON-ish tokens:
//! random JSON schemas, random logits, and the properties every step must keep — the sampled
//! document validates against its schema, every allowed token keeps the document completable,
//! end-of-generation is allowed exactly when the grammar accepts, and checking drafts equals
//! consuming them one by one. Then the engine: greedy output under a grammar is identical with
//! and without speculation, and bad grammars are refused naming what is wrong.

use std::sync::Arc;

use ferrite_engine::grammar::{Constraint, GrammarCompiler, GrammarSpec};
use ferrite_engine::{Sampler, SamplingParams};
use ferrite_gguf::{Array, GgufFile, GgufWriter, Value as Gv};
use ferrite_testkit::rng::XorShift;
use ferrite_testkit::tiny::byte_symbols;
use ferrite_tokenizer::Tokenizer;
use serde_json::{json, Value};

/// Ids of the two end-of-generation tokens.
const EOG: [u32; 2] = [256, 257];

/// Multi-byte tokens, so masks must look inside tokens that span JSON lexemes.
const PIECES: &[&str] = &[
    "{\"", "\":", "\",", "\"}", "},", "}}", "]}", "[\"", "\"]", ", \"", ": ", "true", "false",
    "null", "12", "0.", "-1", "ab", "cd", "name", "id", "  ", "\n ", "e+", "\":\"", "{}", "[]",
    "x\"", "\"x", "}]", "],", ",{", "99", "07",
];

fn tokenizer() -> Tokenizer {
    let sym = byte_symbols();
    let enc = |s: &str| -> String { s.bytes().map(|b| sym[b as usize]).collect() };
    let mut tokens: Vec<String> = sym.iter().map(|c| c.to_string()).collect();
    let mut types = vec![1i32; 256];
    for s in ["<|im_end|>", "<|endoftext|>", "<|im_start|>"] {
        tokens.push(s.into());
        types.push(3);
    }
    for p in PIECES {
        tokens.push(enc(p));
        types.push(1);
    }
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Gv::String("llama".into()));
    w.add_metadata("tokenizer.ggml.model", Gv::String("gpt2".into()));
    w.add_metadata("tokenizer.ggml.pre", Gv::String("default".into()));
    w.add_metadata("tokenizer.ggml.tokens", Gv::Array(Array::String(tokens)));
    w.add_metadata("tokenizer.ggml.token_type", Gv::Array(Array::I32(types)));
    w.add_metadata("tokenizer.ggml.merges", Gv::Array(Array::String(vec![])));
    w.add_metadata("tokenizer.ggml.eos_token_id", Gv::U32(EOG[0]));
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert_eq!(t.end_of_generation_ids(), &EOG[..]);
    t
}

/// A random schema of depth at most `depth`: every JSON type, enums and consts, bounds,
/// patterns, arrays with item counts, objects with required subsets, `anyOf`, `$defs`/`$ref`.
fn random_schema(r: &mut XorShift, depth: u32) -> Value {
    let pick = |r: &mut XorShift, n: u64| (r.next_u64() % n) as usize;
    let leaf = depth == 0;
    match pick(r, if leaf { 7 } else { 11 }) {
        0 => json!({"type": "string", "maxLength": 1 + pick(r, 6)}),
        1 => json!({"type": "string", "pattern": "^[a-d]{1,4}$"}),
        2 => {
            let lo = pick(r, 50) as i64 - 25;
            json!({"type": "integer", "minimum": lo, "maximum": lo + pick(r, 200) as i64})
        }
        3 => json!({"type": "number", "minimum": -1000, "maximum": 1e6}),
        4 => json!({"type": "boolean"}),
        5 => {
            let options = [
                json!("ab"),
                json!(12),
                json!(null),
                json!(true),
                json!("cd"),
            ];
            json!({"enum": options[..1 + pick(r, 5)]})
        }
        6 => json!({"const": {"id": 7, "name": "x"}}),
        7 => json!({"type": "array", "items": random_schema(r, depth - 1),
                    "minItems": pick(r, 2), "maxItems": 2 + pick(r, 2)}),
        8 | 9 => {
            let n = 1 + pick(r, 3);
            let mut props = serde_json::Map::new();
            let mut required = Vec::new();
            for i in 0..n {
                let name = ["id", "name", "ab", "x"][i];
                props.insert(name.into(), random_schema(r, depth - 1));
                if pick(r, 2) == 0 {
                    required.push(json!(name));
                }
            }
            json!({"type": "object", "properties": props, "required": required,
                   "additionalProperties": false})
        }
        _ => json!({"anyOf": [random_schema(r, depth - 1), random_schema(r, depth - 1)]}),
    }
}

fn bytes_of(t: &Tokenizer, tokens: &[u32]) -> String {
    t.decode(tokens, true).unwrap()
}

/// Random logits, pushed (more each step) towards tokens that close things, so documents end.
fn random_logits(r: &mut XorShift, n: usize, step: usize, closers: &[u32]) -> Vec<f32> {
    let mut l: Vec<f32> = (0..n).map(|_| 2.0 * r.normal()).collect();
    for &c in closers {
        l[c as usize] += step as f32 * 0.08;
    }
    l
}

fn closers(t: &Tokenizer) -> Vec<u32> {
    let mut c: Vec<u32> = ["\"", "}", "]", ","]
        .iter()
        .map(|s| t.encode(s, Default::default()).unwrap()[0])
        .collect();
    c.extend(EOG);
    c
}

/// Sample one constrained document; at each step check the mask's invariants (and, with
/// `completable`, that every allowed token leaves a document that can still be finished).
fn sample_document(
    t: &Tokenizer,
    mut c: Constraint,
    r: &mut XorShift,
    seed: u64,
    completable: bool,
) -> (String, bool) {
    let vocab = t.vocab_size();
    let close = closers(t);
    let mut sampler = Sampler::new(SamplingParams {
        temperature: 1.0,
        seed: Some(seed),
        ..SamplingParams::default()
    })
    .unwrap();
    let history = ferrite_engine::sampling::TokenHistory::new(&[]);
    let mut out = Vec::new();
    for step in 0..400 {
        let mut logits = random_logits(r, vocab, step, &close);
        c.mask(&mut logits, false).unwrap();
        let allowed: Vec<u32> = (0..vocab as u32)
            .filter(|&i| logits[i as usize].is_finite())
            .collect();
        assert!(
            !allowed.is_empty(),
            "nothing allowed after {:?}",
            bytes_of(t, &out)
        );
        let eog_allowed = EOG.iter().all(|&e| logits[e as usize].is_finite());
        assert_eq!(
            eog_allowed,
            c.is_accepting(),
            "EOS must be allowed exactly when the grammar accepts, after {:?}",
            bytes_of(t, &out)
        );
        if completable {
            // The single-token check the greedy path uses takes every token of the mask, and
            // any other it takes (the mask forces canonical tokens where the grammar forces
            // bytes) still leads to a document that can be finished.
            for tok in 0..vocab as u32 {
                let in_mask = logits[tok as usize].is_finite();
                let allowed_alone = c.allows(tok, false);
                assert!(
                    allowed_alone || !in_mask,
                    "token {tok} after {:?}",
                    bytes_of(t, &out)
                );
                if allowed_alone && !in_mask {
                    let mut next = c.clone();
                    let done = next.advance(tok).unwrap();
                    let mut probe = vec![0.0; vocab];
                    assert!(
                        done || next
                            .mask(&mut probe, false)
                            .is_ok_and(|_| probe.iter().any(|l| l.is_finite())),
                        "token {tok} leads nowhere after {:?}",
                        bytes_of(t, &out)
                    );
                }
            }
            for &tok in allowed.iter().filter(|t| !EOG.contains(t)) {
                let mut next = c.clone();
                let done = next.advance(tok).unwrap();
                let mut probe = vec![0.0; vocab];
                let open = done
                    || next
                        .mask(&mut probe, false)
                        .is_ok_and(|_| probe.iter().any(|l| l.is_finite()));
                assert!(
                    open,
                    "token {tok} leads nowhere after {:?}",
                    bytes_of(t, &out)
                );
            }
        }
        let tok = sampler.sample(&mut logits, &history).token;
        assert!(allowed.contains(&tok));
        let done = c.advance(tok).unwrap();
        if EOG.contains(&tok) {
            return (bytes_of(t, &out), true);
        }
        out.push(tok);
        if done {
            return (bytes_of(t, &out), true);
        }
    }
    (bytes_of(t, &out), false)
}

#[test]
fn random_schemas_give_documents_that_validate() {
    let t = tokenizer();
    let g = GrammarCompiler::new(&t).unwrap();
    let mut r = XorShift::new(2026);
    let mut finished = 0;
    for case in 0..60u64 {
        let schema = random_schema(&mut r, 3);
        let c = g
            .compile(&GrammarSpec::JsonSchema(schema.clone()))
            .unwrap_or_else(|e| panic!("{schema}: {e}"));
        let (doc, complete) = sample_document(&t, c, &mut r, case, case < 6);
        if !complete {
            continue;
        }
        finished += 1;
        let v: Value =
            serde_json::from_str(&doc).unwrap_or_else(|e| panic!("{schema}\n{doc:?}: {e}"));
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert!(
            validator.is_valid(&v),
            "{schema}\n{doc}: {:?}",
            validator
                .iter_errors(&v)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
    }
    assert!(finished >= 50, "only {finished} of 60 documents finished");
}

#[test]
fn checking_drafts_equals_consuming_them_and_changes_nothing() {
    let t = tokenizer();
    let g = GrammarCompiler::new(&t).unwrap();
    let mut r = XorShift::new(7);
    let vocab = t.vocab_size();
    for case in 0..20u64 {
        let schema = random_schema(&mut r, 2);
        let mut c = g.compile(&GrammarSpec::JsonSchema(schema)).unwrap();
        // Walk a valid prefix, then a run of tokens: some valid (sampled under the mask),
        // then one drawn from the whole vocabulary.
        let mut complete = false;
        for _ in 0..(case % 5) {
            let mut l = random_logits(&mut r, vocab, 0, &[]);
            c.mask(&mut l, true).unwrap();
            let tok = ferrite_engine::sampling::argmax(&l);
            complete = c.advance(tok).unwrap();
            if complete {
                break;
            }
        }
        if complete {
            continue;
        }
        let mut walker = c.clone();
        let mut drafts = Vec::new();
        for _ in 0..4 {
            let mut l = random_logits(&mut r, vocab, 0, &[]);
            if walker.mask(&mut l, true).is_err() {
                break;
            }
            let tok = ferrite_engine::sampling::argmax(&l);
            drafts.push(tok);
            if walker.advance(tok).unwrap() {
                break;
            }
        }
        drafts.push((r.next_u64() % vocab as u64) as u32);
        let mut before = vec![0.0; vocab];
        c.mask(&mut before, false).unwrap();
        let n = c.valid_prefix(&drafts);
        let mut after = vec![0.0; vocab];
        c.mask(&mut after, false).unwrap();
        assert_eq!(before, after, "valid_prefix must not change the state");
        let mut one_by_one = c.clone();
        let mut m = 0;
        for &d in &drafts {
            if EOG.contains(&d) {
                break;
            }
            let mut l = vec![0.0; vocab];
            if one_by_one.mask(&mut l, false).is_err() || !l[d as usize].is_finite() {
                break;
            }
            m += 1;
            if one_by_one.advance(d).unwrap() {
                break;
            }
        }
        assert_eq!(n, m, "drafts {drafts:?}");
    }
}

#[test]
fn regex_choice_and_lark_grammars_constrain_and_bad_ones_are_named() {
    let t = tokenizer();
    let g = GrammarCompiler::new(&t).unwrap();
    let mut r = XorShift::new(1);
    for (spec, ok) in [
        (
            GrammarSpec::Regex("[a-d]{2,5}-[0-9]+".into()),
            &(|s: &str| {
                let (a, b) = s.split_once('-').unwrap();
                (2..=5).contains(&a.len()) && !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit())
            }) as &dyn Fn(&str) -> bool,
        ),
        (
            GrammarSpec::Choice(vec!["yes".into(), "no (a.b)".into()]),
            &|s: &str| s == "yes" || s == "no (a.b)",
        ),
        (
            GrammarSpec::Lark("start: \"id=\" %json {\"type\": \"integer\"}".into()),
            &|s: &str| {
                s.strip_prefix("id=")
                    .is_some_and(|n| n.parse::<i64>().is_ok())
            },
        ),
    ] {
        for seed in 0..5 {
            let (doc, complete) =
                sample_document(&t, g.compile(&spec).unwrap(), &mut r, seed, seed == 0);
            if complete {
                assert!(ok(&doc), "{spec:?}: {doc:?}");
            }
        }
    }
    for (schema, word) in [
        (json!({"type": "object", "if": {"type": "string"}}), "if"),
        (json!({"type": "strung"}), "strung"),
        (json!({"$ref": "#/$defs/missing"}), "missing"),
    ] {
        let e = g
            .compile(&GrammarSpec::JsonSchema(schema.clone()))
            .unwrap_err();
        assert!(e.to_string().contains(word), "{schema}: {e}");
    }
    let e = g
        .compile(&GrammarSpec::Lark("start: undefined_rule".into()))
        .unwrap_err();
    assert!(e.to_string().contains("undefined_rule"), "{e}");
}

#[test]
fn json_whitespace_is_bounded() {
    let t = tokenizer();
    let g = GrammarCompiler::new(&t).unwrap();
    let mut c = g
        .compile(&GrammarSpec::JsonSchema(json!({"type": "object"})))
        .unwrap();
    let space = t.encode(" ", Default::default()).unwrap()[0];
    assert!(!c
        .advance(t.encode("{", Default::default()).unwrap()[0])
        .unwrap());
    let mut spaces = 0;
    loop {
        let mut l = vec![0.0; t.vocab_size()];
        c.mask(&mut l, false).unwrap();
        if !l[space as usize].is_finite() {
            break;
        }
        c.advance(space).unwrap();
        spaces += 1;
        assert!(spaces <= 64, "whitespace is not bounded");
    }
    assert_eq!(spaces, 16);
    let _ = Arc::new(g);
}
