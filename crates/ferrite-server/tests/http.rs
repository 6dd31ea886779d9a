//! The HTTP contract on a real server over a tiny synthetic model: hostile input, responses,
//! streaming, invariance of greedy output under batching and prefix caching, keys, metrics,
//! backpressure, disconnect leaks and drain.

mod common;

use std::time::Duration;

use common::{start, Opts, MODEL};
use serde_json::{json, Value};

fn chat(content: &str, extra: Value) -> Value {
    let mut v = json!({"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_and_hostile_requests_get_the_right_4xx_and_the_server_keeps_serving() {
    let s = start(Opts::default()).await;
    let long_prompt = "word ".repeat(2000);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("bad json", "/v1/chat/completions", b"{not json".to_vec(), 400, "validation"),
        ("empty body", "/v1/chat/completions", b"".to_vec(), 400, "validation"),
        ("array body", "/v1/chat/completions", b"[1,2]".to_vec(), 400, "validation"),
        ("invalid utf-8", "/v1/chat/completions", b"{\"messages\": \"\xff\xfe\"}".to_vec(), 400, "validation"),
        ("no messages", "/v1/chat/completions", json!({"model": MODEL}).to_string().into_bytes(), 400, "validation"),
        ("messages not array", "/v1/chat/completions", json!({"messages": "hi"}).to_string().into_bytes(), 400, "validation"),
        ("empty messages", "/v1/chat/completions", json!({"messages": []}).to_string().into_bytes(), 400, "validation"),
        ("unknown role", "/v1/chat/completions", json!({"messages": [{"role": "wizard", "content": "x"}]}).to_string().into_bytes(), 400, "validation"),
        ("role not string", "/v1/chat/completions", json!({"messages": [{"role": 5, "content": "x"}]}).to_string().into_bytes(), 400, "validation"),
        ("content number", "/v1/chat/completions", json!({"messages": [{"role": "user", "content": 5}]}).to_string().into_bytes(), 400, "validation"),
        ("image part", "/v1/chat/completions", json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}).to_string().into_bytes(), 400, "validation"),
        ("negative max_tokens", "/v1/chat/completions", chat("hi", json!({"max_tokens": -5})).to_string().into_bytes(), 400, "validation"),
        ("zero max_tokens", "/v1/chat/completions", chat("hi", json!({"max_tokens": 0})).to_string().into_bytes(), 400, "validation"),
        ("huge max_tokens", "/v1/chat/completions", chat("hi", json!({"max_tokens": 1_000_000_000u64})).to_string().into_bytes(), 400, "context_length"),
        ("max_tokens string", "/v1/chat/completions", chat("hi", json!({"max_tokens": "10"})).to_string().into_bytes(), 400, "validation"),
        ("max_tokens float", "/v1/chat/completions", chat("hi", json!({"max_tokens": 1.5})).to_string().into_bytes(), 400, "validation"),
        ("n zero", "/v1/chat/completions", chat("hi", json!({"n": 0})).to_string().into_bytes(), 400, "validation"),
        ("n huge", "/v1/chat/completions", chat("hi", json!({"n": 1000})).to_string().into_bytes(), 400, "validation"),
        ("temperature -1", "/v1/chat/completions", chat("hi", json!({"temperature": -1})).to_string().into_bytes(), 400, "validation"),
        ("temperature string", "/v1/chat/completions", chat("hi", json!({"temperature": "hot"})).to_string().into_bytes(), 400, "validation"),
        ("top_p 0", "/v1/chat/completions", chat("hi", json!({"top_p": 0})).to_string().into_bytes(), 400, "validation"),
        ("top_p 1.5", "/v1/chat/completions", chat("hi", json!({"top_p": 1.5})).to_string().into_bytes(), 400, "validation"),
        ("top_k -5", "/v1/chat/completions", chat("hi", json!({"top_k": -5})).to_string().into_bytes(), 400, "validation"),
        ("min_p 2", "/v1/chat/completions", chat("hi", json!({"min_p": 2})).to_string().into_bytes(), 400, "validation"),
        ("presence 3", "/v1/chat/completions", chat("hi", json!({"presence_penalty": 3})).to_string().into_bytes(), 400, "validation"),
        ("frequency -3", "/v1/chat/completions", chat("hi", json!({"frequency_penalty": -3})).to_string().into_bytes(), 400, "validation"),
        ("repetition 0", "/v1/chat/completions", chat("hi", json!({"repetition_penalty": 0})).to_string().into_bytes(), 400, "validation"),
        ("top_logprobs 50", "/v1/chat/completions", chat("hi", json!({"logprobs": true, "top_logprobs": 50})).to_string().into_bytes(), 400, "validation"),
        ("top_logprobs without logprobs", "/v1/chat/completions", chat("hi", json!({"top_logprobs": 3})).to_string().into_bytes(), 400, "validation"),
        ("stop number", "/v1/chat/completions", chat("hi", json!({"stop": 5})).to_string().into_bytes(), 400, "validation"),
        ("stream not bool", "/v1/chat/completions", chat("hi", json!({"stream": "yes"})).to_string().into_bytes(), 400, "validation"),
        ("stream_options not object", "/v1/chat/completions", chat("hi", json!({"stream_options": 1})).to_string().into_bytes(), 400, "validation"),
        ("seed string", "/v1/chat/completions", chat("hi", json!({"seed": "x"})).to_string().into_bytes(), 400, "validation"),
        ("unknown model", "/v1/chat/completions", chat("hi", json!({"model": "gpt-9"})).to_string().into_bytes(), 404, "not_found"),
        ("prompt over context", "/v1/chat/completions", chat(&long_prompt, json!({})).to_string().into_bytes(), 400, "context_length"),
        ("completions no prompt", "/v1/completions", json!({"model": MODEL}).to_string().into_bytes(), 400, "validation"),
        ("completions empty prompt", "/v1/completions", json!({"prompt": ""}).to_string().into_bytes(), 400, "validation"),
        ("completions token out of vocab", "/v1/completions", json!({"prompt": [1, 99_999_999]}).to_string().into_bytes(), 400, "validation"),
        ("completions negative token", "/v1/completions", json!({"prompt": [1, -4]}).to_string().into_bytes(), 400, "validation"),
        ("completions batch", "/v1/completions", json!({"prompt": ["a", "b"]}).to_string().into_bytes(), 400, "validation"),
        ("completions logprobs 99", "/v1/completions", json!({"prompt": "a", "logprobs": 99}).to_string().into_bytes(), 400, "validation"),
        ("10 MB body", "/v1/chat/completions", vec![b' '; 10 << 20], 413, "payload_too_large"),
        ("tokenize without prompt", "/tokenize", json!({}).to_string().into_bytes(), 400, "validation"),
        ("detokenize bad ids", "/detokenize", json!({"tokens": ["a"]}).to_string().into_bytes(), 400, "validation"),
        ("unknown route", "/v1/nope", b"{}".to_vec(), 404, "not_found"),
    ];
    assert!(cases.len() >= 30);
    for (name, path, body, status, ty) in &cases {
        let r = s
            .client
            .post(format!("{}{path}", s.url))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), *status, "{name}");
        let v: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: body is not JSON: {e}"));
        let e = &v["error"];
        assert_eq!(e["type"], *ty, "{name}: {v}");
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
        assert!(
            e.get("param").is_some() && e.get("code").is_some(),
            "{name}: {v}"
        );
    }
    // Messages name the field, the rule and the value.
    let (_, v) = s
        .post("/v1/chat/completions", chat("hi", json!({"top_p": 1.5})))
        .await;
    assert_eq!(
        v["error"]["message"],
        "`top_p` must be > 0 and ≤ 1, got 1.5"
    );
    assert_eq!(v["error"]["param"], "top_p");
    let (_, v) = s
        .post("/v1/chat/completions", chat(&long_prompt, json!({})))
        .await;
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("too many"), "{m}");
    // Still serving.
    let (st, v) = s
        .post("/v1/chat/completions", chat("hello", json!({})))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        s.state.metrics.errors_of("validation") as usize,
        cases.iter().filter(|c| c.4 == "validation").count() + 1
    );
}

async fn greedy_tokens(s: &common::TestServer, prompt: &[u32], n: usize) -> Value {
    let (st, v) = s
        .post(
            "/v1/completions",
            json!({"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": true, "logprobs": 1}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .len(),
        n
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn greedy_output_is_the_same_alone_in_a_batch_of_8_and_after_a_prefix_hit() {
    for budget in [5, 16, 64] {
        let s = start(Opts {
            engine: ferrite_engine::EngineConfig {
                max_num_batched_tokens: budget,
                max_num_seqs: 16,
                kv_cache_bytes: 16 << 20,
                ..Default::default()
            },
            ..Opts::default()
        })
        .await;
        let prompts: Vec<Vec<u32>> = (0..8u32)
            .map(|i| {
                (0..(20 + 5 * i))
                    .map(|j| 3 + (i * 13 + j * 7) % 150)
                    .collect()
            })
            .collect();
        let mut alone = Vec::new();
        for p in &prompts {
            alone.push(greedy_tokens(&s, p, 12).await["choices"][0]["logprobs"].clone());
        }
        let batch = futures_join(prompts.iter().map(|p| {
            let s = &s;
            async move { greedy_tokens(s, p, 12).await }
        }))
        .await;
        for (a, b) in alone.iter().zip(&batch) {
            // Same tokens and the same log-probabilities, bit for bit.
            assert_eq!(*a, b["choices"][0]["logprobs"], "budget {budget}");
            // The prompts were seen before: cached tokens are reported.
            assert!(
                b["usage"]["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .unwrap()
                    >= 16
            );
        }
    }
}

async fn futures_join<F: std::future::Future<Output = Value>>(
    fs: impl Iterator<Item = F>,
) -> Vec<Value> {
    let handles: Vec<_> = fs.collect();
    let mut out = Vec::new();
    // Drive all futures concurrently.
    let joined = futures_util::future::join_all(handles).await;
    out.extend(joined);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn responses_streams_usage_n_and_seeds_follow_openai() {
    let s = start(Opts::default()).await;
    let body = chat(
        "tell me",
        json!({"max_tokens": 10, "temperature": 0, "ignore_eos": true}),
    );
    let (st, v) = s.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(st, 200);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let u = &v["usage"];
    assert_eq!(u["completion_tokens"], 10);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + 10
    );
    // Streaming with include_usage: same text, usage null on every chunk, then a usage chunk.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["stream_options"] = json!({"include_usage": true});
    let events = s.stream("/v1/chat/completions", sb).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (usage_chunk, content) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 10);
    assert_eq!(content[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    for c in content {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c["usage"].is_null() && c.as_object().unwrap().contains_key("usage"));
        text.push_str(c["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(
        text,
        v["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(
        content.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
    // n = 2 with a seed: two choices, reproducible across calls.
    let nb = chat(
        "tell me",
        json!({"max_tokens": 12, "temperature": 1.0, "seed": 7, "n": 2, "ignore_eos": true}),
    );
    let (_, a) = s.post("/v1/chat/completions", nb.clone()).await;
    let (_, b) = s.post("/v1/chat/completions", nb).await;
    assert_eq!(a["choices"].as_array().unwrap().len(), 2);
    assert_eq!(a["choices"], b["choices"]);
    assert_ne!(a["choices"][0]["message"], a["choices"][1]["message"]);
    assert_eq!(a["usage"]["completion_tokens"], 24);
    // Stop strings cut the text before the match.
    let full = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    if let Some(stop) = full.get(3..5).filter(|s| !s.trim().is_empty()) {
        let (_, c) = s
            .post(
                "/v1/chat/completions",
                chat(
                    "tell me",
                    json!({"max_tokens": 10, "temperature": 0, "ignore_eos": true, "stop": [stop]}),
                ),
            )
            .await;
        let got = c["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(got, &full[..full.find(stop).unwrap()]);
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
    }
    // Models, tokenize round trip.
    let m: Value = serde_json::from_str(&s.get("/v1/models").await).unwrap();
    assert_eq!(m["data"][0]["id"], MODEL);
    let (_, t) = s
        .post(
            "/tokenize",
            json!({"prompt": "hello world", "add_special_tokens": false}),
        )
        .await;
    let (_, d) = s.post("/detokenize", json!({"tokens": t["tokens"]})).await;
    assert_eq!(d["prompt"], "hello world");
    // Both paths record latency.
    assert!(s.state.metrics.ttft.count() >= 4);
    assert!(s.metric("ferrite_e2e_request_latency_seconds_count").await >= 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_guard_v1_but_not_health_ready_metrics() {
    let s = start(Opts {
        keys: Some("sk-test-1\nsk-test-2\n"),
        ..Opts::default()
    })
    .await;
    let url = format!("{}/v1/chat/completions", s.url);
    let body = chat("hi", json!({}));
    let r = s.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "auth");
    let r = s
        .client
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .client
        .post(&url)
        .bearer_auth("sk-test-2")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for p in ["/health", "/ready", "/metrics"] {
        let r = s.client.get(format!("{}{p}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
    }
    let r = s
        .client
        .get(format!("{}/v1/models", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_queue_gets_429_with_retry_after() {
    let s = start(Opts {
        max_inflight: 2,
        ..Opts::default()
    })
    .await;
    let body = chat("go", json!({"max_tokens": 150, "ignore_eos": true}));
    let reqs = (0..6).map(|_| {
        let (c, url, b) = (
            s.client.clone(),
            format!("{}/v1/chat/completions", s.url),
            body.clone(),
        );
        async move {
            let r = c.post(url).json(&b).send().await.unwrap();
            let retry = r.headers().get("retry-after").is_some();
            (r.status().as_u16(), retry)
        }
    });
    let out = futures_util::future::join_all(reqs).await;
    let ok = out.iter().filter(|r| r.0 == 200).count();
    let limited = out.iter().filter(|r| r.0 == 429 && r.1).count();
    assert!(ok >= 2 && limited >= 1 && ok + limited == 6, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disconnects_free_every_block_and_the_server_still_answers() {
    let s = start(Opts::default()).await;
    let mut rng = 12345u64;
    let mut next = move |m: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % m
    };
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let words = 1 + next(60) as usize;
        let max_tokens = 1 + next(40);
        let cut_after = (i % 2 == 0).then(|| next(6) as usize);
        let (c, url) = (s.client.clone(), format!("{}/v1/completions", s.url));
        let prompt = format!("{i} {}", "lorem ipsum ".repeat(words));
        tasks.push(tokio::spawn(async move {
            let body = json!({"prompt": prompt, "max_tokens": max_tokens, "stream": true, "ignore_eos": true});
            let Ok(mut r) = c.post(url).json(&body).send().await else { return };
            let mut seen = 0;
            while let Ok(Some(_)) = r.chunk().await {
                seen += 1;
                if cut_after.is_some_and(|k| seen > k) {
                    return; // drop the response: the client disconnects mid-stream
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The engine frees aborted requests at its next step; give it a moment.
    let mut usage = 1.0;
    for _ in 0..100 {
        usage = s.metric("ferrite_kv_cache_usage_perc").await;
        if usage == 0.0 && s.metric("ferrite_num_requests_running").await == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(usage, 0.0, "KV blocks leaked");
    assert_eq!(s.metric("ferrite_num_requests_waiting").await, 0.0);
    assert_eq!(s.state.inflight(), 0);
    let (st, _) = s
        .post("/v1/chat/completions", chat("still there?", json!({})))
        .await;
    assert_eq!(st, 200);
    assert!(
        s.metric("ferrite_request_success_total{model_name=\"tiny\",finished_reason=\"abort\"}")
            .await
            > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_refuses_new_requests_and_finishes_admitted_ones() {
    let s = start(Opts::default()).await;
    let body = chat("long", json!({"max_tokens": 120, "ignore_eos": true}));
    let admitted: Vec<_> = (0..4)
        .map(|_| {
            let (c, url, b) = (
                s.client.clone(),
                format!("{}/v1/chat/completions", s.url),
                body.clone(),
            );
            tokio::spawn(
                async move { c.post(url).json(&b).send().await.unwrap().status().as_u16() },
            )
        })
        .collect();
    while s.state.inflight() < 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let state = s.state.clone();
    let drain =
        tokio::spawn(async move { ferrite_server::drain(&state, Duration::from_secs(60)).await });
    while !s.state.is_draining() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (st, v) = s.post("/v1/chat/completions", chat("new", json!({}))).await;
    assert_eq!(st, 503, "{v}");
    let r = s
        .client
        .get(format!("{}/ready", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    for a in admitted {
        assert_eq!(a.await.unwrap(), 200);
    }
    drain.await.unwrap();
    assert_eq!(s.state.inflight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_streams_get_keep_alive_comments_before_their_first_token() {
    let s = start(Opts {
        engine: ferrite_engine::EngineConfig {
            max_num_seqs: 1,
            max_num_batched_tokens: 64,
            kv_cache_bytes: 16 << 20,
            ..Default::default()
        },
        // 1 ms, not the default 20: the tiny model decodes the 200-token request in well under
        // 20 ms when the host is idle, and the queued stream then never waited long enough for
        // a ping (this failed once in CI).
        sse_keep_alive: Duration::from_millis(1),
        ..Opts::default()
    })
    .await;
    // One long request holds the only running slot; the next stream waits in the queue.
    let (c, url) = (s.client.clone(), format!("{}/v1/chat/completions", s.url));
    let long = tokio::spawn(async move {
        c.post(url)
            .json(&chat(
                "hold",
                json!({"max_tokens": 200, "ignore_eos": true}),
            ))
            .send()
            .await
            .unwrap()
            .status()
    });
    while s.state.inflight() < 1 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let r = s
        .client
        .post(format!("{}/v1/chat/completions", s.url))
        .json(&chat("wait", json!({"max_tokens": 4, "stream": true})))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let ping = text
        .find(": ping")
        .expect("a keep-alive comment while queued");
    let first_data = text.find("data: ").unwrap();
    assert!(ping < first_data, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(long.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chat_page_is_served_unless_turned_off() {
    let s = start(Opts::default()).await;
    let r = s.client.get(format!("{}/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(page.contains("<title>ferrite</title>") && page.contains("/v1/chat/completions"));
    // Self-contained: nothing fetched from elsewhere.
    for external in ["<script src", "http://", "https://", "@import"] {
        assert!(!page.contains(external), "{external}");
    }
    let models: Value = serde_json::from_str(&s.get("/v1/models").await).unwrap();
    assert_eq!(models["data"][0]["ferrite"]["architecture"], "llama");
    let s = start(Opts {
        webui: false,
        ..Opts::default()
    })
    .await;
    let r = s.client.get(format!("{}/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // The API is unchanged.
    let (st, _) = s.post("/v1/chat/completions", chat("hi", json!({}))).await;
    assert_eq!(st, 200);
}
