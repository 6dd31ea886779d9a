//! `/v1/chat/completions` and `/v1/completions`: validate, tokenize, check the context, admit,
//! submit one engine request per choice, then answer in one body or as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferrite_engine::spec::NgramConfig;
use ferrite_engine::{
    FinishInfo, NewRequest, OutputSink, RequestEvent, SamplingParams, TokenLogprob,
};
use ferrite_protocol::response::{
    AssistantMessage, ChatChoice, ChatChunk, ChatCompletion, ChatLogprobs, ChatTokenLogprob,
    ChunkChoice, Completion, CompletionChoice, CompletionChunk, CompletionChunkChoice,
    CompletionLogprobs, Delta, SpecUsage, TopLogprob, Usage,
};
use ferrite_protocol::{
    parse_request, ApiError, Endpoint, ErrorKind, PromptInput, SpecChoice, ValidRequest,
};
use ferrite_tokenizer::{ChatMessage, EncodeOptions, Tokenizer};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::routes::{error_response, not_loaded, read_body};
use crate::state::{Admission, AppState};

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Engine events of choice `index`, into the request's one channel.
pub(crate) struct ChannelSink {
    pub(crate) index: usize,
    pub(crate) tx: UnboundedSender<(usize, RequestEvent)>,
}

impl OutputSink for ChannelSink {
    fn send(&mut self, ev: RequestEvent) -> bool {
        self.tx.send((self.index, ev)).is_ok()
    }
    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

pub(crate) async fn chat_completions(State(s): State<Arc<AppState>>, body: Body) -> Response {
    handle(s, body, Endpoint::Chat).await
}

pub(crate) async fn completions(State(s): State<Arc<AppState>>, body: Body) -> Response {
    handle(s, body, Endpoint::Completions).await
}

async fn handle(s: Arc<AppState>, body: Body, endpoint: Endpoint) -> Response {
    let arrival = Instant::now();
    match start(&s, body, endpoint, arrival).await {
        Ok(r) => r,
        Err(e) => error_response(&s, &e),
    }
}

/// A request accepted by the engine.
struct Started {
    req: ValidRequest,
    prompt: Vec<u32>,
    prompt_text: Option<String>,
    rx: UnboundedReceiver<(usize, RequestEvent)>,
    admission: Admission,
    arrival: Instant,
    tokenizer: Arc<Tokenizer>,
    fingerprint: String,
    id: String,
}

async fn start(
    s: &Arc<AppState>,
    body: Body,
    endpoint: Endpoint,
    arrival: Instant,
) -> Result<Response, ApiError> {
    let bytes = read_body(s, body).await?;
    let req = parse_request(&bytes, endpoint)?;
    let loaded = s.loaded().ok_or_else(not_loaded)?.clone();
    if !s.is_ready() {
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "the server is warming up",
        ));
    }
    if let Some(m) = &req.model {
        if m != &s.options.model_name {
            return Err(ApiError {
                kind: ErrorKind::NotFound,
                message: format!(
                    "the model `{m}` does not exist; this server serves `{}`",
                    s.options.model_name
                ),
                param: Some("model".into()),
                code: Some("model_not_found"),
            });
        }
    }
    let tok = loaded.tokenizer.clone();
    let (prompt, prompt_text) = build_prompt(&tok, &req)?;
    let max_len = loaded.engine.max_model_len();
    check_context(prompt.len(), req.max_tokens, max_len)?;
    let sampling = SamplingParams {
        temperature: req.temperature,
        top_k: req.top_k,
        top_p: req.top_p,
        min_p: req.min_p,
        repetition_penalty: req.repetition_penalty,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        seed: req.seed,
    };
    sampling
        .validate()
        .map_err(|e| ApiError::invalid(e.field().unwrap_or("body"), e.to_string()))?;
    let admission = s.admit()?;
    let (tx, rx) = unbounded_channel();
    for i in 0..req.n {
        let nr = NewRequest {
            prompt: prompt.clone(),
            sampling: SamplingParams {
                // Choices of one request must differ: each gets its own seed.
                seed: req.seed.map(|x| x.wrapping_add(i as u64)),
                ..sampling.clone()
            },
            max_tokens: req.max_tokens.unwrap_or(max_len),
            stop: req.stop.clone(),
            ignore_eos: req.ignore_eos,
            min_tokens: req.min_tokens,
            logprobs: req.logprobs,
            cache_salt: req.cache_salt.clone(),
            arrival,
            speculative: match req.speculative {
                SpecChoice::ServerDefault => None,
                SpecChoice::Off => Some(None),
                SpecChoice::Ngram {
                    k,
                    min_n,
                    max_n,
                    adaptive,
                } => Some(Some(NgramConfig {
                    k,
                    min_n,
                    max_n,
                    adaptive,
                })),
            },
            constraint: None,
        };
        let sink = Box::new(ChannelSink {
            index: i,
            tx: tx.clone(),
        });
        loaded
            .engine
            .add(nr, sink)
            .map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))?;
    }
    drop(tx);
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completions => "cmpl",
    };
    let st = Started {
        id: format!("{prefix}-{}", request_suffix()),
        req,
        prompt,
        prompt_text,
        rx,
        admission,
        arrival,
        tokenizer: tok,
        fingerprint: loaded.fingerprint.clone(),
    };
    if st.req.stream {
        Ok(stream(s.clone(), st, endpoint))
    } else {
        unary(s, st, endpoint).await
    }
}

fn request_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:016x}{n:06x}", t)
}

fn build_prompt(
    tok: &Tokenizer,
    req: &ValidRequest,
) -> Result<(Vec<u32>, Option<String>), ApiError> {
    match &req.input {
        PromptInput::Chat(msgs) => {
            let msgs: Vec<ChatMessage> = msgs
                .iter()
                .map(|m| ChatMessage::new(m.role.clone(), m.content.clone()))
                .collect();
            let (text, ids) = tok
                .encode_chat(&msgs, true)
                .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
            Ok((ids, Some(text)))
        }
        PromptInput::Text(t) => {
            if t.is_empty() {
                return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
            }
            let ids = tok
                .encode(t, EncodeOptions::default())
                .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
            Ok((ids, Some(t.clone())))
        }
        PromptInput::Tokens(ids) => {
            let v = tok.vocab_size();
            if let Some(t) = ids.iter().find(|&&t| t as usize >= v) {
                return Err(ApiError::invalid(
                    "prompt",
                    format!("token id {t} is outside the vocabulary of {v}"),
                ));
            }
            Ok((ids.clone(), None))
        }
    }
}

fn check_context(prompt: usize, max_tokens: Option<usize>, max_len: usize) -> Result<(), ApiError> {
    let err = |m: String| {
        Err(ApiError {
            kind: ErrorKind::ContextLengthExceeded,
            message: m,
            param: Some("messages".into()),
            code: Some("context_length_exceeded"),
        })
    };
    if prompt == 0 {
        return Err(ApiError::invalid("prompt", "the prompt has no tokens"));
    }
    if prompt >= max_len {
        return err(format!(
            "this model's maximum context length is {max_len} tokens, and the prompt has {prompt}: {} tokens too many (at least one position must remain for the reply)",
            prompt + 1 - max_len
        ));
    }
    if let Some(m) = max_tokens {
        if prompt.saturating_add(m) > max_len {
            return err(format!(
                "this model's maximum context length is {max_len} tokens, but {} were requested ({prompt} in the prompt, {m} for the completion): {} too many; lower `max_tokens` to at most {}",
                prompt.saturating_add(m),
                prompt.saturating_add(m) - max_len,
                max_len - prompt
            ));
        }
    }
    Ok(())
}

/// Per-choice accumulation and metric recording.
#[derive(Default)]
struct Choice {
    text: String,
    tokens: usize,
    logprobs: Vec<(u32, TokenLogprob)>,
    first: Option<Instant>,
    last: Option<Instant>,
    finish: Option<FinishInfo>,
}

impl Choice {
    /// Record timing metrics for a token event.
    fn on_token(&mut self, s: &AppState, arrival: Instant) {
        let now = Instant::now();
        match self.last {
            None => s.metrics.ttft.observe((now - arrival).as_secs_f64()),
            Some(t) => s.metrics.itl.observe((now - t).as_secs_f64()),
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.tokens += 1;
    }

    fn on_finish(&mut self, s: &AppState, arrival: Instant, f: FinishInfo) {
        let m = &s.metrics;
        let now = Instant::now();
        m.e2e.observe((now - arrival).as_secs_f64());
        m.queue.observe(f.queue_time.as_secs_f64());
        m.prefill.observe(f.prefill_time.as_secs_f64());
        m.decode.observe(f.decode_time.as_secs_f64());
        m.inference
            .observe((f.prefill_time + f.decode_time).as_secs_f64());
        if f.completion_tokens > 1 {
            m.tpot
                .observe(f.decode_time.as_secs_f64() / (f.completion_tokens - 1) as f64);
        }
        use std::sync::atomic::Ordering;
        m.prompt_tokens
            .fetch_add(f.prompt_tokens as u64, Ordering::Relaxed);
        m.generation_tokens
            .fetch_add(f.completion_tokens as u64, Ordering::Relaxed);
        m.finished(f.reason.as_str());
        self.finish = Some(f);
    }
}

fn usage_of(prompt: usize, choices: &[Choice]) -> Usage {
    let completion = choices.iter().map(|c| c.tokens).sum();
    let cached = choices
        .iter()
        .filter_map(|c| c.finish.as_ref().map(|f| f.cached_tokens))
        .min()
        .unwrap_or(0);
    let mut u = Usage::new(prompt, completion, cached);
    let (drafted, accepted) = choices
        .iter()
        .filter_map(|c| c.finish.as_ref())
        .fold((0, 0), |(d, a), f| {
            (d + f.spec_draft_tokens, a + f.spec_accepted_tokens)
        });
    if drafted > 0 {
        u.speculative = Some(SpecUsage {
            draft_tokens: drafted,
            accepted_tokens: accepted,
        });
    }
    u
}

fn token_str(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_default()
}

fn chat_logprobs(tok: &Tokenizer, lps: &[(u32, TokenLogprob)]) -> ChatLogprobs {
    ChatLogprobs {
        content: lps
            .iter()
            .map(|(id, lp)| {
                let t = token_str(tok, *id);
                ChatTokenLogprob {
                    bytes: t.as_bytes().to_vec(),
                    token: t,
                    logprob: lp.logprob,
                    top_logprobs: lp
                        .top
                        .iter()
                        .map(|(a, l)| {
                            let t = token_str(tok, *a);
                            TopLogprob {
                                bytes: t.as_bytes().to_vec(),
                                token: t,
                                logprob: *l,
                            }
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}

fn completion_logprobs(
    tok: &Tokenizer,
    lps: &[(u32, TokenLogprob)],
    mut offset: usize,
) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for (id, lp) in lps {
        let t = token_str(tok, *id);
        out.text_offset.push(offset);
        offset += t.len();
        out.tokens.push(t);
        out.token_logprobs.push(lp.logprob);
        out.top_logprobs.push(
            lp.top
                .iter()
                .map(|(a, l)| (token_str(tok, *a), serde_json::json!(l)))
                .collect(),
        );
    }
    out
}

async fn unary(
    s: &Arc<AppState>,
    mut st: Started,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let n = st.req.n;
    let mut choices: Vec<Choice> = (0..n).map(|_| Choice::default()).collect();
    let mut done = 0;
    while done < n {
        let Some((i, ev)) = st.rx.recv().await else {
            return Err(ApiError::new(ErrorKind::Internal, "the engine stopped"));
        };
        let c = &mut choices[i];
        match ev {
            RequestEvent::Token {
                token,
                text,
                logprob,
            } => {
                c.on_token(s, st.arrival);
                c.text.push_str(&text);
                if let Some(lp) = logprob {
                    c.logprobs.push((token, lp));
                }
            }
            RequestEvent::Finished(f) => {
                c.text.push_str(&f.text);
                c.on_finish(s, st.arrival, f);
                done += 1;
            }
            RequestEvent::Error(m) => return Err(ApiError::new(ErrorKind::Internal, m)),
        }
    }
    drop(st.admission);
    let usage = usage_of(st.prompt.len(), &choices);
    let (created, model, fp) = (
        unix_now(),
        s.options.model_name.clone(),
        st.fingerprint.clone(),
    );
    let reason = |c: &Choice| c.finish.as_ref().map(|f| f.reason.as_str());
    let body = match endpoint {
        Endpoint::Chat => serde_json::to_string(&ChatCompletion {
            id: st.id,
            object: "chat.completion",
            created,
            model,
            system_fingerprint: fp,
            choices: choices
                .iter()
                .enumerate()
                .map(|(index, c)| ChatChoice {
                    index,
                    logprobs: st
                        .req
                        .logprobs
                        .map(|_| chat_logprobs(&st.tokenizer, &c.logprobs)),
                    finish_reason: reason(c),
                    message: AssistantMessage {
                        role: "assistant",
                        content: c.text.clone(),
                    },
                })
                .collect(),
            usage,
        }),
        Endpoint::Completions => {
            let echo = if st.req.echo {
                st.prompt_text
                    .clone()
                    .unwrap_or_else(|| st.tokenizer.decode(&st.prompt, false).unwrap_or_default())
            } else {
                String::new()
            };
            serde_json::to_string(&Completion {
                id: st.id,
                object: "text_completion",
                created,
                model,
                system_fingerprint: fp,
                choices: choices
                    .iter()
                    .enumerate()
                    .map(|(index, c)| CompletionChoice {
                        index,
                        text: format!("{echo}{}", c.text),
                        logprobs: st
                            .req
                            .logprobs
                            .map(|_| completion_logprobs(&st.tokenizer, &c.logprobs, echo.len())),
                        finish_reason: reason(c),
                    })
                    .collect(),
                usage,
            })
        }
    }
    .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Stream chunks from a task; the body ends when the task drops its sender. If the client goes
/// away the body (and its receiver) is dropped, the task stops, and dropping the engine-event
/// receiver makes the engine abort the request at its next step.
fn stream(s: Arc<AppState>, st: Started, endpoint: Endpoint) -> Response {
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(stream_task(s, st, endpoint, body_tx));
    let body = futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

fn sse(v: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(v).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("data: {json}\n\n"))
}

async fn stream_task(
    s: Arc<AppState>,
    mut st: Started,
    endpoint: Endpoint,
    body: tokio::sync::mpsc::Sender<Bytes>,
) {
    let n = st.req.n;
    let mut choices: Vec<Choice> = (0..n).map(|_| Choice::default()).collect();
    let (created, model, fp) = (
        unix_now(),
        s.options.model_name.clone(),
        st.fingerprint.clone(),
    );
    let usage_field = |u: Option<Usage>| -> Option<Option<Usage>> {
        if st.req.continuous_usage_stats {
            Some(u)
        } else if st.req.include_usage {
            Some(None)
        } else {
            None
        }
    };
    let mut done = 0;
    let mut echoed = false;
    while done < n {
        let (i, ev) = tokio::select! {
            ev = st.rx.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
            _ = body.closed() => {
                let unfinished = choices.iter().filter(|c| c.finish.is_none()).count();
                for _ in 0..unfinished {
                    s.metrics.finished("abort");
                }
                return;
            }
            // While a request waits (queue, long prefill), an SSE comment keeps proxies and
            // clients from timing the connection out; clients ignore comment lines.
            _ = tokio::time::sleep(s.options.sse_keep_alive) => {
                if body.send(Bytes::from_static(b": ping\n\n")).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let first_of_choice = choices[i].last.is_none();
        let (text, lps, finish) = match ev {
            RequestEvent::Token {
                token,
                text,
                logprob,
            } => {
                choices[i].on_token(&s, st.arrival);
                // Nothing to say yet (text held back): skip the chunk, except the first, which
                // marks the first token for TTFT.
                if text.is_empty() && logprob.is_none() && !first_of_choice {
                    continue;
                }
                (text, logprob.map(|l| vec![(token, l)]), None)
            }
            RequestEvent::Finished(f) => {
                let text = f.text.clone();
                let reason = f.reason.as_str();
                choices[i].on_finish(&s, st.arrival, f);
                done += 1;
                (text, None, Some(reason))
            }
            RequestEvent::Error(m) => {
                let e = ApiError::new(ErrorKind::Internal, m);
                s.metrics.error(e.kind.error_type());
                let _ = body.send(sse(&e.body())).await;
                let _ = body.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
                return;
            }
        };
        let usage = st
            .req
            .continuous_usage_stats
            .then(|| usage_of(st.prompt.len(), &choices));
        let chunk = match endpoint {
            Endpoint::Chat => sse(&ChatChunk {
                id: st.id.clone(),
                object: "chat.completion.chunk",
                created,
                model: model.clone(),
                system_fingerprint: fp.clone(),
                choices: vec![ChunkChoice {
                    index: i,
                    delta: Delta {
                        role: first_of_choice.then_some("assistant"),
                        content: (!text.is_empty() || finish.is_none()).then_some(text),
                    },
                    logprobs: lps.map(|l| chat_logprobs(&st.tokenizer, &l)),
                    finish_reason: finish,
                }],
                usage: usage_field(usage),
            }),
            Endpoint::Completions => {
                let mut text = text;
                if st.req.echo && !echoed {
                    echoed = true;
                    let p = st.prompt_text.clone().unwrap_or_else(|| {
                        st.tokenizer.decode(&st.prompt, false).unwrap_or_default()
                    });
                    text = p + &text;
                }
                sse(&CompletionChunk {
                    id: st.id.clone(),
                    object: "text_completion",
                    created,
                    model: model.clone(),
                    system_fingerprint: fp.clone(),
                    choices: vec![CompletionChunkChoice {
                        index: i,
                        text,
                        logprobs: lps.map(|l| completion_logprobs(&st.tokenizer, &l, 0)),
                        finish_reason: finish,
                    }],
                    usage: usage_field(usage),
                })
            }
        };
        if body.send(chunk).await.is_err() {
            return;
        }
    }
    if st.req.include_usage || st.req.continuous_usage_stats {
        let usage = Some(Some(usage_of(st.prompt.len(), &choices)));
        let chunk = match endpoint {
            Endpoint::Chat => sse(&ChatChunk {
                id: st.id.clone(),
                object: "chat.completion.chunk",
                created,
                model: model.clone(),
                system_fingerprint: fp.clone(),
                choices: vec![],
                usage,
            }),
            Endpoint::Completions => sse(&CompletionChunk {
                id: st.id.clone(),
                object: "text_completion",
                created,
                model: model.clone(),
                system_fingerprint: fp.clone(),
                choices: vec![],
                usage,
            }),
        };
        let _ = body.send(chunk).await;
    }
    let _ = body.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    drop(st.admission);
}
