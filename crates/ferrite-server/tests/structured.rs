//! Structured output and tool calls on a real server over a tiny synthetic model (random
//! weights: only the grammar makes its answers well-formed): JSON-schema answers validate for
//! every choice and seed, streamed tool-call deltas reassemble to the unary answer, each tool
//! format round-trips, and bad input is a 400 before anything is queued.

mod common;

use std::time::Duration;

use common::{start, Opts, MODEL};
use ferrite_server::tools::ToolFormat;
use ferrite_testkit::TinyArch;
use serde_json::{json, Value};

fn body(extra: Value) -> Value {
    let mut v = json!({"model": MODEL, "messages": [{"role": "user", "content": "weather?"}],
                       "max_tokens": 200});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

/// A schema every answer finishes within 200 tokens (whitespace is bounded per place).
fn small_schema() -> Value {
    json!({"type": "object",
           "properties": {"ok": {"type": "boolean"},
                          "n": {"type": "integer", "minimum": 0, "maximum": 9},
                          "kind": {"enum": ["sun", "rain"]}},
           "required": ["ok", "n", "kind"], "additionalProperties": false})
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather now",
        "parameters": {"type": "object",
                       "properties": {"unit": {"enum": ["c", "f"]}, "days": {"type": "integer", "minimum": 1, "maximum": 3}},
                       "required": ["unit", "days"], "additionalProperties": false}}})
}

fn ping_tool() -> Value {
    json!({"type": "function", "function": {"name": "ping"}})
}

fn validates(schema: &Value, v: &Value) -> bool {
    jsonschema::validator_for(schema).unwrap().is_valid(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_schema_answers_validate_for_every_choice_and_seed() {
    let s = start(Opts::default()).await;
    let rf = json!({"type": "json_schema", "json_schema": {"name": "w", "schema": small_schema(), "strict": true}});
    for seed in 0..4 {
        let (st, v) = s
            .post(
                "/v1/chat/completions",
                body(json!({"response_format": rf, "temperature": 1.0, "seed": seed, "n": 2})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        for c in v["choices"].as_array().unwrap() {
            assert_eq!(c["finish_reason"], "stop", "{c}");
            let text = c["message"]["content"].as_str().unwrap();
            let doc: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(validates(&small_schema(), &doc), "{doc}");
        }
    }
    // vLLM's structured_outputs: choice and regex, streamed.
    let chunks = s
        .stream(
            "/v1/chat/completions",
            body(json!({"structured_outputs": {"choice": ["sunny", "rainy"]}, "stream": true})),
        )
        .await;
    let text: String = chunks
        .iter()
        .filter_map(|c| serde_json::from_str::<Value>(c).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert!(text == "sunny" || text == "rainy", "{text:?}");
    let (st, v) = s
        .post(
            "/v1/completions",
            json!({"model": MODEL, "prompt": "x", "max_tokens": 30,
                                         "structured_outputs": {"regex": "[0-9]{3}-[a-c]{2}"}}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let t = v["choices"][0]["text"].as_str().unwrap();
    assert!(t.len() == 6 && t.as_bytes()[3] == b'-', "{t:?}");
    assert!(
        s.metric("ferrite_structured_output_mask_seconds_count")
            .await
            > 0.0
    );
    assert!(
        s.metric("ferrite_structured_output_compile_seconds_count")
            .await
            > 0.0
    );
}

/// Calls of a chat answer as `(name, argument text)`.
fn calls_made(choice: &Value) -> Vec<(String, String)> {
    choice["message"]["tool_calls"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    assert_eq!(c["type"], "function");
                    assert!(c["id"].as_str().unwrap().starts_with("call_"));
                    let args = c["function"]["arguments"].as_str().unwrap();
                    (
                        c["function"]["name"].as_str().unwrap().to_string(),
                        args.to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn parse(args: &str) -> Value {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Streamed chunks of a chat request, reassembled: content, and per call index its id, name and
/// argument text; plus the finish reason.
fn reassemble(chunks: &[String]) -> (String, Vec<(String, String, String)>, String) {
    let mut content = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = String::new();
    for c in chunks.iter().filter(|c| *c != "[DONE]") {
        let v: Value = serde_json::from_str(c).unwrap();
        let ch = &v["choices"][0];
        if let Some(t) = ch["delta"]["content"].as_str() {
            content.push_str(t);
        }
        for d in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = d["index"].as_u64().unwrap() as usize;
            if let Some(id) = d["id"].as_str() {
                assert_eq!(i, calls.len(), "calls start in order");
                calls.push((
                    id.into(),
                    d["function"]["name"].as_str().unwrap().into(),
                    String::new(),
                ));
            }
            if let Some(a) = d["function"]["arguments"].as_str() {
                calls[i].2.push_str(a);
            }
        }
        if let Some(f) = ch["finish_reason"].as_str() {
            finish = f.into();
        }
    }
    (content, calls, finish)
}

/// The newer architectures serve through the same API: schema-constrained answers validate,
/// a named tool is called with valid arguments, and the stream reassembles to the unary answer
/// (MoE routing and latent attention under the server's batching and prefix cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qwen3_moe_and_deepseek_serve_schemas_and_tool_calls() {
    for arch in [TinyArch::Qwen3, TinyArch::Qwen3Moe, TinyArch::Deepseek2] {
        let s = start(Opts {
            arch,
            ..Opts::default()
        })
        .await;
        let rf = json!({"type": "json_schema", "json_schema": {"name": "w", "schema": small_schema(), "strict": true}});
        let (st, v) = s
            .post(
                "/v1/chat/completions",
                body(json!({"response_format": rf, "n": 2, "seed": 3})),
            )
            .await;
        assert_eq!(st, 200, "{arch:?} {v}");
        for c in v["choices"].as_array().unwrap() {
            let text = c["message"]["content"].as_str().unwrap();
            let answer: Value =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{arch:?} {text:?}: {e}"));
            assert!(validates(&small_schema(), &answer), "{arch:?} {answer}");
        }
        let req = body(
            json!({"tools": [weather_tool()], "temperature": 0, "max_tokens": 500,
                              "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        );
        let (st, v) = s.post("/v1/chat/completions", req.clone()).await;
        assert_eq!(st, 200, "{arch:?} {v}");
        let calls = calls_made(&v["choices"][0]);
        assert_eq!(calls.len(), 1, "{arch:?} {v}");
        let params = &weather_tool()["function"]["parameters"];
        assert!(validates(params, &parse(&calls[0].1)), "{arch:?} {calls:?}");
        let mut stream = req;
        stream["stream"] = json!(true);
        let (_, streamed, finish) = reassemble(&s.stream("/v1/chat/completions", stream).await);
        assert_eq!(finish, "tool_calls", "{arch:?}");
        let streamed: Vec<(String, String)> =
            streamed.into_iter().map(|(_, n, a)| (n, a)).collect();
        assert_eq!(
            streamed, calls,
            "{arch:?}: the stream holds the unary answer"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_tool_format_calls_tools_and_streams_what_the_unary_answer_holds() {
    for format in [ToolFormat::Hermes, ToolFormat::ApiGen, ToolFormat::Generic] {
        let s = start(Opts {
            tool_format: format,
            ..Opts::default()
        })
        .await;
        let tools = json!([weather_tool(), ping_tool()]);
        for (choice, parallel) in [
            (json!("required"), true),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                false,
            ),
            (json!("required"), false),
        ] {
            // Random weights favour the most whitespace the grammar allows: room for it.
            let req = body(
                json!({"tools": tools, "tool_choice": choice, "parallel_tool_calls": parallel,
                                  "temperature": 0, "max_tokens": 500}),
            );
            let (st, v) = s.post("/v1/chat/completions", req.clone()).await;
            assert_eq!(st, 200, "{format:?} {v}");
            let c = &v["choices"][0];
            assert!(c["message"]["content"].is_null(), "{format:?} {c}");
            // With parallel calls allowed, random weights may call until `max_tokens`; the
            // last call is then cut off.
            let mut got = calls_made(c);
            if parallel && c["finish_reason"] == "length" {
                got.pop();
            } else {
                assert_eq!(c["finish_reason"], "tool_calls", "{format:?} {c}");
            }
            let got: Vec<(String, Value)> = got.into_iter().map(|(n, a)| (n, parse(&a))).collect();
            if !parallel {
                assert_eq!(
                    got.len(),
                    1,
                    "{format:?} one call without parallel_tool_calls"
                );
            }
            for (name, args) in &got {
                match name.as_str() {
                    "get_weather" => assert!(
                        validates(&weather_tool()["function"]["parameters"], args),
                        "{args}"
                    ),
                    "ping" => assert_eq!(args, &json!({}), "a tool without parameters gets {{}}"),
                    other => panic!("{format:?}: unknown tool {other}"),
                }
            }
            if choice.is_object() {
                assert!(got.iter().all(|(n, _)| n == "get_weather"));
            }
            // The same request streamed (greedy): the deltas reassemble to the unary calls.
            let mut sreq = req.clone();
            sreq["stream"] = json!(true);
            let (content, streamed, finish) =
                reassemble(&s.stream("/v1/chat/completions", sreq).await);
            assert_eq!(finish, c["finish_reason"].as_str().unwrap());
            assert!(content.is_empty(), "{format:?} {content:?}");
            let streamed: Vec<(String, String)> =
                streamed.into_iter().map(|(_, n, a)| (n, a)).collect();
            assert_eq!(streamed, calls_made(c), "{format:?}");
        }
        // `auto` may answer in text or call; either way the answer is well-formed.
        let (st, v) = s
            .post(
                "/v1/chat/completions",
                body(json!({"tools": tools, "max_tokens": 40})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        if v["choices"][0]["finish_reason"] == "tool_calls" {
            for (_, a) in calls_made(&v["choices"][0]) {
                parse(&a);
            }
        }
        // A full round trip: the call and its result go back in the history.
        let history = json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"unit\": \"c\", \"days\": 1}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
        ]);
        let (st, v) = s
            .post(
                "/v1/chat/completions",
                json!({"model": MODEL, "messages": history, "tools": tools, "max_tokens": 20}),
            )
            .await;
        assert_eq!(st, 200, "{format:?} {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_schemas_and_tools_are_400s_naming_the_problem_before_anything_is_queued() {
    let s = start(Opts::default()).await;
    let rf = |schema: Value| json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}});
    let cases = [
        (
            rf(json!({"type": "object", "if": {"type": "string"}})),
            "response_format",
            "if",
        ),
        (rf(json!({"type": "strung"})), "response_format", "strung"),
        (
            json!({"structured_outputs": {"grammar": "start: nowhere"}}),
            "structured_outputs",
            "nowhere",
        ),
        (
            json!({"tools": [weather_tool(), weather_tool()]}),
            "tools[1].function.name",
            "twice",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}),
            "tools[0].function.name",
            "letters",
        ),
        (
            json!({"tools": [weather_tool()], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
            "nope",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}], "tool_choice": "required"}),
            "tools",
            "not",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_9", "content": "r"}]}),
            "messages[1].tool_call_id",
            "call_9",
        ),
    ];
    for (extra, param, word) in cases {
        let (st, v) = s.post("/v1/chat/completions", body(extra.clone())).await;
        assert_eq!(st, 400, "{extra}: {v}");
        assert_eq!(v["error"]["param"], param, "{extra}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(word), "{extra}: {msg}");
    }
    assert_eq!(s.state.inflight(), 0);
    // A grammar that cannot compile in time is a 400 too, and holds no slot or KV block.
    // (An enum of 50,000 strings takes far longer than 1 ms to compile.)
    let s = start(Opts {
        grammar_compile_timeout: Duration::from_millis(1),
        ..Opts::default()
    })
    .await;
    let many: Vec<String> = (0..50_000).map(|i| format!("o{i}")).collect();
    let (st, v) = s
        .post("/v1/chat/completions", body(rf(json!({"enum": many}))))
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not compile within"),
        "{v}"
    );
    assert_eq!(s.state.inflight(), 0);
    assert_eq!(s.metric("ferrite_kv_cache_usage_perc").await, 0.0);
    // A grammar that cannot finish within max_tokens returns what it has, with `length`.
    let s = start(Opts::default()).await;
    let (st, v) = s
        .post(
            "/v1/chat/completions",
            body(json!({"max_tokens": 1, "response_format": {"type": "json_object"}})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["choices"][0]["message"]["content"], "{");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grammars_combine_with_logprobs_stop_strings_prefix_caching_and_streaming() {
    let s = start(Opts::default()).await;
    let rf = json!({"type": "json_schema", "json_schema": {"name": "w", "schema": small_schema()}});
    let req =
        body(json!({"response_format": rf, "temperature": 0, "logprobs": true, "top_logprobs": 2}));
    let (st, a) = s.post("/v1/chat/completions", req.clone()).await;
    assert_eq!(st, 200, "{a}");
    let lp = a["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        lp.len() as u64,
        a["usage"]["completion_tokens"].as_u64().unwrap()
    );
    // The same request again: a prefix-cache hit, the same greedy document.
    let (_, b) = s.post("/v1/chat/completions", req.clone()).await;
    assert!(
        b["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
    // Streamed, it is the same text.
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let (content, calls, finish) = reassemble(&s.stream("/v1/chat/completions", sreq).await);
    assert_eq!(
        content,
        a["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(calls.is_empty());
    assert_eq!(finish, "stop");
    // A stop string cuts the document where it appears, like any other text.
    let doc = a["choices"][0]["message"]["content"].as_str().unwrap();
    let mut cut = req.clone();
    cut["stop"] = json!(["\"n\""]);
    let (_, c) = s.post("/v1/chat/completions", cut).await;
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        c["choices"][0]["message"]["content"].as_str().unwrap(),
        &doc[..doc.find("\"n\"").unwrap()]
    );
}
