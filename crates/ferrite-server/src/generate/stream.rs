//! The answer as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferrite_engine::RequestEvent;
use ferrite_protocol::response::{
    ChatChunk, ChunkChoice, CompletionChunk, CompletionChunkChoice, Delta, Usage,
};
use ferrite_protocol::{ApiError, Endpoint, ErrorKind};

use super::choice::{chat_logprobs, completion_logprobs, usage_of};
use super::{unix_now, Started};
use crate::state::AppState;

/// Stream chunks from a task; the body ends when the task drops its sender. If the client goes
/// away the body (and its receiver) is dropped, the task stops, and dropping the engine-event
/// receiver makes the engine abort the request at its next step.
pub(super) fn stream(s: Arc<AppState>, st: Started, endpoint: Endpoint) -> Response {
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
    let mut choices = st.choices();
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
        let (text, lps, last) = match ev {
            RequestEvent::Token {
                token,
                text,
                logprob,
            } => {
                choices[i].on_token(&s, st.arrival);
                (text, logprob.map(|l| vec![(token, l)]), false)
            }
            RequestEvent::Finished(f) => {
                let text = f.text.clone();
                choices[i].on_finish(&s, st.arrival, f);
                done += 1;
                (text, None, true)
            }
            RequestEvent::Error(m) => {
                let e = ApiError::new(ErrorKind::Internal, m);
                s.metrics.error(e.kind.error_type());
                let _ = body.send(sse(&e.body())).await;
                let _ = body.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
                return;
            }
        };
        // Tool calls are read out of the text; what is left is content.
        let (text, calls) = choices[i].deltas(&text, last);
        let finish = last.then(|| choices[i].finish_reason()).flatten();
        // Nothing to say yet (text held back): skip the chunk, except the first, which marks
        // the first token for TTFT.
        if text.is_empty() && calls.is_empty() && lps.is_none() && !first_of_choice && !last {
            continue;
        }
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
                        content: (!text.is_empty() || (!last && calls.is_empty())).then_some(text),
                        tool_calls: (!calls.is_empty()).then_some(calls),
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
