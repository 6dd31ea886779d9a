//! One streamed request, recorded as a raw event log: every SSE event with its time since the
//! request was scheduled, its size, text, reasoning text, tool-call text and any usage. Every
//! metric is computed afterwards from this log (`metrics`).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sse::{SseEvent, SseParser};

/// Token counts a server reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Prompt tokens served from a prefix cache, when reported.
    pub cached_tokens: Option<usize>,
    /// Speculative decoding, when the server reports it (ferrite's `usage.speculative`
    /// extension): draft tokens verified and accepted.
    pub spec: Option<(usize, usize)>,
}

/// One SSE event.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RawEvent {
    /// Since the request was scheduled.
    pub t: Duration,
    /// Bytes of the `data:` payload.
    pub bytes: usize,
    /// Whether the event carried a non-empty `choices` array.
    pub has_choices: bool,
    /// Answer text in this event.
    pub content: String,
    /// Reasoning text (`reasoning_content` or `reasoning`).
    pub reasoning: String,
    /// Tool-call deltas of this event, as the JSON the server sent (`tool_calls` arrays,
    /// concatenated).
    pub tool_calls: String,
    /// Usage, when the event carried one.
    pub usage: Option<Usage>,
}

impl RawEvent {
    /// Whether the event carries generated text (answer, reasoning or tool call).
    pub fn has_text(&self) -> bool {
        !self.content.is_empty() || !self.reasoning.is_empty() || !self.tool_calls.is_empty()
    }
}

/// One HTTP attempt.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Attempt {
    /// HTTP status, if a response arrived.
    pub status: Option<u16>,
    /// What went wrong (connection, HTTP error, error object in the stream).
    pub error: Option<String>,
    /// Events received.
    pub events: Vec<RawEvent>,
    /// When the attempt started and ended, since the request was scheduled.
    pub start: Duration,
    /// End of the stream (`[DONE]` or close).
    pub end: Duration,
    /// `Retry-After` the server asked for.
    pub retry_after: Option<Duration>,
    /// `system_fingerprint` of the response.
    pub system_fingerprint: Option<String>,
    /// `model` the response named (the first one seen in the stream).
    pub model: Option<String>,
    /// The request went out on a pooled keep-alive connection that the server had already
    /// closed, and no response byte came back: the server never saw it. Some servers
    /// (llama-server) close every connection after a streamed response without saying
    /// `Connection: close`, so a client that reuses connections races their FIN.
    pub stale_connection: bool,
}

impl Attempt {
    /// Whether the attempt produced a complete answer.
    pub fn ok(&self) -> bool {
        self.status == Some(200) && self.error.is_none()
    }

    /// Whether another attempt may succeed (connection errors, 429, 5xx).
    pub fn retryable(&self) -> bool {
        match self.status {
            None => true,
            Some(s) => s == 429 || s >= 500,
        }
    }

    /// Usage reported in the stream (the last one seen).
    pub fn usage(&self) -> Option<Usage> {
        self.events.iter().rev().find_map(|e| e.usage)
    }

    /// The answer's text (`content`, without reasoning).
    pub fn content(&self) -> String {
        self.events.iter().map(|e| e.content.as_str()).collect()
    }
}

/// Send one streaming request (`body` must set `"stream": true`) and record it. `t0` is the
/// scheduled time, so client-side waiting counts in every latency.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    api_key: Option<&str>,
    body: &Value,
    t0: Instant,
) -> Attempt {
    let mut at = Attempt {
        start: t0.elapsed(),
        ..Attempt::default()
    };
    let mut req = client.post(url).json(body);
    if let Some(k) = api_key {
        req = req.bearer_auth(k);
    }
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let msg = chain(&e);
            // hyper's IncompleteMessage: the connection closed before any response byte.
            at.stale_connection = msg.contains("connection closed before message completed");
            at.error = Some(format!("connection: {msg}"));
            at.end = t0.elapsed();
            return at;
        }
    };
    let status = resp.status().as_u16();
    at.status = Some(status);
    at.retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    if status != 200 {
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        at.error = Some(format!("HTTP {status}: {}", truncate(&msg, 300)));
        at.end = t0.elapsed();
        return at;
    }
    let mut parser = SseParser::default();
    let mut done = false;
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                at.error = Some(format!("stream: {}", chain(&e)));
                break;
            }
        };
        let t = t0.elapsed();
        for ev in parser.feed(&chunk) {
            done |= record(&mut at, ev, t);
        }
        if done {
            break;
        }
    }
    if !done {
        let t = t0.elapsed();
        for ev in parser.finish() {
            done |= record(&mut at, ev, t);
        }
    }
    at.end = t0.elapsed();
    if !done && at.error.is_none() {
        at.error = Some("stream ended without [DONE]".into());
    }
    if done {
        // Read the rest of the body (the chunked terminator usually follows [DONE]) so the
        // connection goes back to the pool; dropping it half-read closes it and sends the next
        // request onto an older idle connection the server may already have closed ("connection
        // closed before message completed"). In the background, so a server that holds the
        // stream open after [DONE] does not delay the caller's next request; bounded.
        tokio::spawn(async move {
            let rest = async { while let Ok(Some(_)) = resp.chunk().await {} };
            let _ = tokio::time::timeout(Duration::from_millis(500), rest).await;
        });
    }
    at
}

/// Record one event; returns true on `[DONE]` or an error object.
fn record(at: &mut Attempt, ev: SseEvent, t: Duration) -> bool {
    let data = match ev {
        SseEvent::Done => return true,
        SseEvent::Data(d) => d,
    };
    let Ok(v) = serde_json::from_str::<Value>(&data) else {
        at.error = Some(format!("unparsable event: {}", truncate(&data, 200)));
        return true;
    };
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        // An error object inside a 200 stream.
        let msg = e["message"].as_str().unwrap_or("error in stream");
        at.error = Some(format!("in-stream error: {}", truncate(msg, 300)));
        return true;
    }
    if at.system_fingerprint.is_none() {
        at.system_fingerprint = v["system_fingerprint"].as_str().map(str::to_string);
    }
    if at.model.is_none() {
        at.model = v["model"].as_str().map(str::to_string);
    }
    let mut e = RawEvent {
        t,
        bytes: data.len(),
        ..RawEvent::default()
    };
    if let Some(choices) = v["choices"].as_array() {
        e.has_choices = !choices.is_empty();
        for c in choices {
            let d = &c["delta"];
            // Chat deltas, or legacy completions' `text`.
            if let Some(s) = d["content"].as_str().or(c["text"].as_str()) {
                e.content.push_str(s);
            }
            if let Some(s) = d["reasoning_content"].as_str().or(d["reasoning"].as_str()) {
                e.reasoning.push_str(s);
            }
            if let Some(tc) = d.get("tool_calls").filter(|x| !x.is_null()) {
                e.tool_calls.push_str(&tc.to_string());
            }
        }
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        e.usage = Some(Usage {
            prompt_tokens: u["prompt_tokens"].as_u64().unwrap_or(0) as usize,
            completion_tokens: u["completion_tokens"].as_u64().unwrap_or(0) as usize,
            cached_tokens: u["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .map(|x| x as usize),
            spec: u["speculative"]["draft_tokens"]
                .as_u64()
                .zip(u["speculative"]["accepted_tokens"].as_u64())
                .map(|(d, a)| (d as usize, a as usize)),
        });
    }
    at.events.push(e);
    false
}

/// An error with its causes (reqwest's own message rarely says what happened on the socket).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
