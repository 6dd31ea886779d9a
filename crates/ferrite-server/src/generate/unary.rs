//! The whole answer in one JSON body.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use ferrite_engine::RequestEvent;
use ferrite_protocol::response::{
    AssistantMessage, ChatChoice, ChatCompletion, Completion, CompletionChoice,
};
use ferrite_protocol::{ApiError, Endpoint, ErrorKind};

use super::choice::{chat_logprobs, completion_logprobs, usage_of};
use super::{unix_now, Started};
use crate::state::AppState;

pub(super) async fn unary(
    s: &Arc<AppState>,
    mut st: Started,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let n = st.req.n;
    let mut choices = st.choices();
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
    let body = match endpoint {
        Endpoint::Chat => serde_json::to_string(&ChatCompletion {
            id: st.id,
            object: "chat.completion",
            created,
            model,
            system_fingerprint: fp,
            choices: choices
                .iter_mut()
                .enumerate()
                .map(|(index, c)| {
                    let (content, tool_calls) = c.answer();
                    ChatChoice {
                        index,
                        logprobs: st
                            .req
                            .logprobs
                            .map(|_| chat_logprobs(&st.tokenizer, &c.logprobs)),
                        finish_reason: c.finish_reason(),
                        message: AssistantMessage {
                            role: "assistant",
                            content,
                            tool_calls,
                        },
                    }
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
                        finish_reason: c.finish_reason(),
                    })
                    .collect(),
                usage,
            })
        }
    }
    .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
