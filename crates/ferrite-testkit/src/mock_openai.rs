//! A scripted OpenAI-compatible server for calibrating `ferrite bench`: every timing, failure
//! and answer it produces is set by a [`Script`], so a test knows exactly what the bench should
//! measure.
//!
//! - `POST /v1/chat/completions` with `"stream": true`: a role-only first chunk and a keep-alive
//!   comment (neither is a token), then after `ttft` the first chunk of `tokens_per_chunk`
//!   tokens, one chunk every `tokens_per_chunk × per_token` after that, a usage-only final
//!   chunk (when `usage`) and `[DONE]`. Events go out at absolute deadlines from the request's
//!   arrival, so timer overshoot does not accumulate. Every output token is the word `w `, so an
//!   answer sent back in a conversation counts as many prompt tokens as it had output tokens.
//! - Without `stream` (and `POST /v1/completions`): the whole answer at once, with per-token
//!   logprobs, for `bench quality`.
//! - `GET /v1/models` lists `mock-model`.
//! - A scripted outage answers 503 to streams in a time window; a scripted change switches the
//!   fingerprint and model id the streams report.
//!
//! Prompt tokens are the whitespace-separated words of every message (or of `prompt`) plus
//! `template_tokens`, a stand-in for a chat template.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// A failure the mock produces for one generation request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failure {
    /// `429 Too Many Requests` with `Retry-After: retry_after_s`.
    RateLimited {
        /// Seconds the client is asked to wait.
        retry_after_s: u64,
    },
    /// `500 Internal Server Error`.
    ServerError,
    /// A `200` stream that carries an error object after `ttft` instead of tokens.
    InStream,
}

/// What the mock does.
#[derive(Debug, Clone)]
pub struct Script {
    /// Request arrival → first token chunk.
    pub ttft: Duration,
    /// Time per output token after the first chunk.
    pub per_token: Duration,
    /// Tokens per content chunk (the last chunk may carry fewer).
    pub tokens_per_chunk: usize,
    /// Added to the prompt's word count in the reported `prompt_tokens`.
    pub template_tokens: usize,
    /// Whether streams end with a usage chunk.
    pub usage: bool,
    /// `(n, failure)`: the n-th generation request (0-based, in arrival order, counting only
    /// requests with `max_tokens > 1`, so a client's one-token probe does not shift the
    /// schedule) fails this way.
    pub failures: Vec<(usize, Failure)>,
    /// Quality scripting: a prompt containing any of these strings gets an answer that leaves
    /// the common answer after `diverge_at` tokens.
    pub diverge_on: Vec<String>,
    /// Tokens shared with the common answer before a scripted divergence.
    pub diverge_at: usize,
    /// `(drafted, accepted)` reported per request as `usage.speculative` (ferrite's extension).
    pub spec_usage: Option<(usize, usize)>,
    /// The first this many output tokens stream as `reasoning_content`, the rest as `content`.
    pub reasoning_tokens: usize,
    /// After the content, one chunk with this tool call (`{"name": ..., "arguments": ...}`).
    pub tool_call: Option<Value>,
    /// Streams that arrive in this window (from the mock's start) get `503 Service
    /// Unavailable`: a scheduled outage.
    pub outage: Option<(Duration, Duration)>,
    /// From this time after the start on, streams report `system_fingerprint` `fp_mock_2` and
    /// model `mock-model-2` (a silent model change).
    pub change_at: Option<Duration>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            ttft: Duration::ZERO,
            per_token: Duration::ZERO,
            tokens_per_chunk: 1,
            template_tokens: 0,
            usage: true,
            failures: Vec::new(),
            diverge_on: Vec::new(),
            diverge_at: 0,
            spec_usage: None,
            reasoning_tokens: 0,
            tool_call: None,
            outage: None,
            change_at: None,
        }
    }
}

#[derive(Clone)]
struct Shared {
    started: std::time::Instant,
    script: Arc<Script>,
    generation_requests: Arc<Mutex<usize>>,
    log: Arc<Mutex<Vec<Value>>>,
}

/// A running mock; it lives as long as the tokio runtime that started it.
#[derive(Debug, Clone)]
pub struct MockServer {
    /// Base URL, without `/v1`.
    pub url: String,
    log: Arc<Mutex<Vec<Value>>>,
}

impl MockServer {
    /// Bind a free loopback port and serve `script` on the current tokio runtime.
    pub async fn start(script: Script) -> MockServer {
        let shared = Shared {
            started: std::time::Instant::now(),
            script: Arc::new(script),
            generation_requests: Arc::default(),
            log: Arc::default(),
        };
        let log = shared.log.clone();
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route(
                "/v1/models",
                get(|| async { Json(json!({"object": "list", "data": [{"id": "mock-model"}]})) }),
            )
            .with_state(shared);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", l.local_addr().expect("bound address"));
        // TCP_NODELAY, so each event leaves when it is written (Nagle's algorithm would hold a
        // small write until the previous one is acknowledged and skew the scripted timing).
        use axum::serve::ListenerExt;
        let l = l.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(l, app).await });
        MockServer { url, log }
    }

    /// Bodies of every completion request received, in arrival order.
    pub fn requests(&self) -> Vec<Value> {
        self.log.lock().expect("mock log").clone()
    }
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// Prompt tokens of a request body, as the mock reports them.
fn prompt_tokens(body: &Value, script: &Script) -> usize {
    let text_words: usize = match body["messages"].as_array() {
        Some(m) => m
            .iter()
            .map(|m| words(m["content"].as_str().unwrap_or("")))
            .sum(),
        None => words(body["prompt"].as_str().unwrap_or("")),
    };
    text_words + script.template_tokens
}

/// The whole prompt text (for divergence markers).
fn prompt_text(body: &Value) -> String {
    match body["messages"].as_array() {
        Some(m) => m
            .iter()
            .filter_map(|m| m["content"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        None => body["prompt"].as_str().unwrap_or("").to_string(),
    }
}

/// Answer tokens: `a0 a1 …`, or after `diverge_at` tokens `b…` for a marked prompt.
fn answer_tokens(body: &Value, script: &Script, n: usize) -> Vec<String> {
    let text = prompt_text(body);
    let diverge = script.diverge_on.iter().any(|m| text.contains(m.as_str()));
    (0..n)
        .map(|k| {
            if diverge && k >= script.diverge_at {
                format!(" b{k}")
            } else {
                format!(" a{k}")
            }
        })
        .collect()
}

fn error(status: StatusCode, msg: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": msg, "type": "mock_error"}})),
    )
        .into_response()
}

/// Count a generation request and return its number and scripted failure.
fn admit(s: &Shared, body: &Value) -> (usize, Option<Failure>) {
    s.log.lock().expect("mock log").push(body.clone());
    if body["max_tokens"].as_u64().unwrap_or(16) <= 1 {
        return (usize::MAX, None);
    }
    let mut n = s.generation_requests.lock().expect("mock counter");
    let k = *n;
    *n += 1;
    let f = s.script.failures.iter().find(|(i, _)| *i == k).map(|x| x.1);
    (k, f)
}

fn early_failure(f: Option<Failure>) -> Option<Response> {
    match f? {
        Failure::RateLimited { retry_after_s } => Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after_s.to_string())],
                Json(json!({"error": {"message": "slow down", "type": "rate_limit"}})),
            )
                .into_response(),
        ),
        Failure::ServerError => Some(error(StatusCode::INTERNAL_SERVER_ERROR, "mock failure")),
        Failure::InStream => None,
    }
}

async fn completions(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    let (_, f) = admit(&s, &body);
    if let Some(r) = early_failure(f) {
        return r;
    }
    let n = body["max_tokens"].as_u64().unwrap_or(16) as usize;
    let toks = answer_tokens(&body, &s.script, n);
    Json(json!({
        "object": "text_completion",
        "model": "mock-model",
        "choices": [{"index": 0, "text": toks.concat(), "finish_reason": "length",
                     "logprobs": {"tokens": toks, "token_logprobs": vec![0.0; n]}}],
        "usage": usage(prompt_tokens(&body, &s.script), n),
    }))
    .into_response()
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": 0}})
}

async fn chat(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    let (_, f) = admit(&s, &body);
    if let Some(r) = early_failure(f) {
        return r;
    }
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(16) as usize;
    let prompt = prompt_tokens(&body, &s.script);
    if body["stream"] != json!(true) {
        let toks = answer_tokens(&body, &s.script, max_tokens);
        let content: Vec<Value> = toks
            .iter()
            .map(|t| json!({"token": t, "logprob": 0.0}))
            .collect();
        return Json(json!({
            "object": "chat.completion",
            "model": "mock-model",
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": toks.concat()},
                         "logprobs": {"content": content}}],
            "usage": usage(prompt, max_tokens),
        }))
        .into_response();
    }
    let since = s.started.elapsed();
    if s.script
        .outage
        .is_some_and(|(a, b)| since >= a && since < b)
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "scheduled outage");
    }
    let changed = s.script.change_at.is_some_and(|t| since >= t);
    let (fingerprint, model) = if changed {
        ("fp_mock_2", "mock-model-2")
    } else {
        ("fp_mock", "mock-model")
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, Infallible>>(16);
    let script = s.script.clone();
    let in_stream_error = f == Some(Failure::InStream);
    let t0 = tokio::time::Instant::now();
    tokio::spawn(async move {
        let chunk = |delta: Value| {
            format!(
                "data: {}\n\n",
                json!({"object": "chat.completion.chunk", "model": model,
                       "system_fingerprint": fingerprint,
                       "choices": [{"index": 0, "delta": delta}]})
            )
        };
        // Role-only first chunk and a keep-alive comment: neither is a token.
        let _ = tx.send(Ok(chunk(json!({"role": "assistant"})))).await;
        let _ = tx.send(Ok(": ping\n\n".into())).await;
        tokio::time::sleep_until(t0 + script.ttft).await;
        if in_stream_error {
            let _ = tx
                .send(Ok(
                    "data: {\"error\": {\"message\": \"boom\"}}\n\ndata: [DONE]\n\n".into(),
                ))
                .await;
            return;
        }
        let per_chunk = script.tokens_per_chunk.max(1);
        let mut sent = 0;
        while sent < max_tokens {
            if sent > 0 {
                tokio::time::sleep_until(t0 + script.ttft + script.per_token * sent as u32).await;
            }
            let k = per_chunk.min(max_tokens - sent);
            let field = if sent < script.reasoning_tokens {
                "reasoning_content"
            } else {
                "content"
            };
            let _ = tx.send(Ok(chunk(json!({field: "w ".repeat(k)})))).await;
            sent += k;
        }
        if let Some(call) = &script.tool_call {
            let delta = json!({"tool_calls": [{"index": 0, "id": "call_0", "type": "function",
                                                "function": call}]});
            let _ = tx.send(Ok(chunk(delta))).await;
        }
        if script.usage {
            let mut us = usage(prompt, max_tokens);
            if let Some((d, a)) = script.spec_usage {
                us["speculative"] = json!({"draft_tokens": d, "accepted_tokens": a});
            }
            let u = json!({"object": "chat.completion.chunk", "choices": [], "usage": us});
            let _ = tx.send(Ok(format!("data:{u}\n\n"))).await;
        }
        let _ = tx.send(Ok("data: [DONE]\n\n".into())).await;
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}
