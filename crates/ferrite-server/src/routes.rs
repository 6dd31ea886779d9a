//! Routes, the auth / drain middleware, error responses and the small endpoints.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ferrite_protocol::{ApiError, ErrorKind};
use ferrite_tokenizer::{ChatMessage, EncodeOptions};
use serde_json::{json, Value};

use crate::generate::{chat_completions, completions};
use crate::state::AppState;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .layer(middleware::from_fn_with_state(state.clone(), guard));
    let mut r = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics));
    if state.options.webui {
        r = r.route("/", get(webui));
    }
    r.merge(api).fallback(not_found).with_state(state)
}

/// The chat page and operations view: one self-contained file (no CDN, no network), built
/// into the binary. It calls the same API any client does.
const WEBUI: &str = include_str!("webui/index.html");

async fn webui() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        WEBUI,
    )
        .into_response()
}

/// The one place an [`ApiError`] becomes an HTTP response (and an `error_type` count).
pub(crate) fn error_response(state: &AppState, e: &ApiError) -> Response {
    state.metrics.error(e.kind.error_type());
    let status = StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_string(&e.body()).unwrap_or_else(|_| "{}".into());
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if e.kind == ErrorKind::Overloaded {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if e.kind == ErrorKind::Unauthenticated {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// API-key check and drain refusal for the API routes.
async fn guard(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(keys) = &s.options.api_keys {
        let key = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let ok = key.is_some_and(|k| keys.verify(k));
        if !ok {
            let msg = if key.is_none() {
                "missing API key: send `Authorization: Bearer <key>`"
            } else {
                "invalid API key"
            };
            return error_response(
                &s,
                &ApiError::new(ErrorKind::Unauthenticated, msg).with_code("invalid_api_key"),
            );
        }
    }
    if s.is_draining() {
        return error_response(
            &s,
            &ApiError::new(ErrorKind::Unavailable, "the server is shutting down"),
        );
    }
    next.run(req).await
}

async fn not_found(State(s): State<Arc<AppState>>, req: Request) -> Response {
    error_response(
        &s,
        &ApiError::new(
            ErrorKind::NotFound,
            format!("no route for {} {}", req.method(), req.uri().path()),
        ),
    )
}

fn status_json(ok: bool, what: &str) -> Response {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(json!({ "status": what }))).into_response()
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    match s.loaded() {
        Some(_) => status_json(true, "ok"),
        None => status_json(false, "loading"),
    }
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    let what = if s.is_draining() {
        "draining"
    } else if s.is_ready() {
        "ready"
    } else if s.loaded().is_some() {
        "warming up"
    } else {
        "loading"
    };
    status_json(s.is_ready(), what)
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let engine = s
        .loaded()
        .map(|l| (l.engine.stats().as_ref(), l.engine.kv_geometry()));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(engine),
    )
        .into_response()
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let l = s.loaded();
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": s.options.model_name,
            "object": "model",
            "created": crate::generate::unix_now(),
            "owned_by": "ferrite",
            "max_model_len": l.map(|l| l.engine.max_model_len()),
            // ferrite's own: what the model is (architecture, quantization) and serves.
            "ferrite": l.map(|l| {
                let mut info = l.info.clone();
                info["tool_format"] = json!(l.tool_format.name());
                info["structured_output"] = json!(l.grammars.is_some());
                info
            }),
        }]
    }))
    .into_response()
}

/// Bodies over the limit are read to the end (discarded, up to this many bytes) before the 413
/// goes out, so a client still sending gets the answer instead of a broken pipe.
const DRAIN_LIMIT: usize = 64 << 20;

/// The request body, at most `max_body_bytes` (413 past it).
pub(crate) async fn read_body(s: &AppState, body: Body) -> Result<bytes::Bytes, ApiError> {
    use futures_util::StreamExt;
    let limit = s.options.max_body_bytes;
    let mut stream = body.into_data_stream();
    let (mut buf, mut total) = (Vec::new(), 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::invalid("body", format!("reading the body failed: {e}")))?;
        total += chunk.len();
        if total > DRAIN_LIMIT {
            break;
        }
        if total <= limit {
            buf.extend_from_slice(&chunk);
        }
    }
    if total > limit {
        return Err(too_large(s));
    }
    Ok(buf.into())
}

async fn read_json(s: &AppState, body: Body) -> Result<Value, ApiError> {
    let bytes = read_body(s, body).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid("body", format!("the body is not valid JSON: {e}")))
}

pub(crate) fn too_large(s: &AppState) -> ApiError {
    ApiError::new(
        ErrorKind::PayloadTooLarge,
        format!(
            "the request body is larger than the {} byte limit",
            s.options.max_body_bytes
        ),
    )
}

async fn tokenize(State(s): State<Arc<AppState>>, body: Body) -> Response {
    let r = async {
        let v = read_json(&s, body).await?;
        let l = s.loaded().ok_or_else(not_loaded)?;
        let tok = &l.tokenizer;
        let ids = if let Some(Value::String(p)) = v.get("prompt") {
            let add_special = v
                .get("add_special_tokens")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            tok.encode(
                p,
                EncodeOptions {
                    add_special,
                    parse_special: true,
                },
            )
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?
        } else if v.get("messages").is_some() {
            let body = serde_json::to_vec(&v).unwrap_or_default();
            let req = ferrite_protocol::parse_request(&body, ferrite_protocol::Endpoint::Chat)?;
            let ferrite_protocol::PromptInput::Chat(msgs) = req.input else {
                return Err(ApiError::invalid("messages", "`messages` is required"));
            };
            let msgs: Vec<ChatMessage> = msgs
                .into_iter()
                .map(|m| ChatMessage::new(m.role, m.content))
                .collect();
            tok.encode_chat(&msgs, true)
                .map_err(|e| ApiError::invalid("messages", e.to_string()))?
                .1
        } else {
            return Err(ApiError::invalid(
                "prompt",
                "send `prompt` (a string) or `messages`",
            ));
        };
        Ok(json!({
            "count": ids.len(),
            "max_model_len": l.engine.max_model_len(),
            "tokens": ids,
        }))
    }
    .await;
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(&s, &e),
    }
}

async fn detokenize(State(s): State<Arc<AppState>>, body: Body) -> Response {
    let r = async {
        let v = read_json(&s, body).await?;
        let l = s.loaded().ok_or_else(not_loaded)?;
        let ids: Vec<u32> = match v.get("tokens") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|t| {
                    t.as_u64()
                        .and_then(|u| u32::try_from(u).ok())
                        .filter(|&u| (u as usize) < l.tokenizer.vocab_size())
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "tokens",
                                format!("token ids must be integers below the vocabulary size {}, got {t}", l.tokenizer.vocab_size()),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(ApiError::invalid("tokens", "`tokens` must be an array of token ids")),
        };
        let text = l
            .tokenizer
            .decode(&ids, false)
            .map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
        Ok(json!({ "prompt": text }))
    }
    .await;
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(&s, &e),
    }
}

pub(crate) fn not_loaded() -> ApiError {
    ApiError::new(ErrorKind::Unavailable, "the model is still loading")
}
