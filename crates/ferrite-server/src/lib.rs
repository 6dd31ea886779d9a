//! ferrite's OpenAI-compatible HTTP server (axum): routes, SSE streaming, admission control,
//! API keys, Prometheus metrics, readiness and graceful drain on SIGTERM.
//!
//! The engine runs on its own thread ([`ferrite_engine::EngineHandle`]); handlers parse and
//! validate a request ([`ferrite_protocol`]), tokenize it, submit one engine request per choice
//! and turn engine events into a response or a stream. A client that goes away drops its event
//! receiver, and the engine aborts the request (freeing its KV blocks) at its next step.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub use axum;

pub mod auth;
mod generate;
pub mod metrics;
mod routes;
mod state;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

pub use auth::ApiKeys;
pub use state::{AppState, Loaded, ServerOptions};

/// Build the router over `state`.
pub fn app(state: Arc<AppState>) -> axum::Router {
    routes::router(state)
}

/// Serve on `listener` until SIGTERM / Ctrl-C, then drain: readiness goes false, new requests
/// get 503, admitted requests finish (at most `drain_timeout`), and the function returns.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) -> std::io::Result<()> {
    let drain_timeout = state.options.drain_timeout;
    let st = state.clone();
    let shutdown = async move {
        wait_for_signal().await;
        drain(&st, drain_timeout).await;
    };
    // TCP_NODELAY: each SSE event is a small write; with Nagle's algorithm a token waits for
    // the ACK of the previous one (up to the peer's delayed-ACK timeout), which adds latency to
    // streamed tokens and makes inter-token gaps lumpy.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY not set: {e}");
        }
    });
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(shutdown);
    server.await?;
    if let Some(l) = state.loaded() {
        l.engine.shutdown();
    }
    Ok(())
}

/// Run one tiny request through the engine (first forward pass, allocations, thread pool
/// start-up), then declare the server ready.
pub async fn warm_up(state: &AppState) -> Result<(), String> {
    let l = state.loaded().ok_or("the engine is not installed")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let prompt = vec![l.tokenizer.bos().unwrap_or(0)];
    let req = ferrite_engine::NewRequest {
        prompt,
        sampling: ferrite_engine::SamplingParams::greedy(),
        max_tokens: 1,
        stop: vec![],
        ignore_eos: true,
        min_tokens: 0,
        logprobs: None,
        cache_salt: Some("ferrite-warm-up".into()),
        arrival: std::time::Instant::now(),
        speculative: Some(None),
        constraint: None,
    };
    let sink = generate::ChannelSink { index: 0, tx };
    l.engine
        .add(req, Box::new(sink))
        .map_err(|e| e.to_string())?;
    while let Some((_, ev)) = rx.recv().await {
        match ev {
            ferrite_engine::RequestEvent::Finished(_) => {
                state.set_ready();
                return Ok(());
            }
            ferrite_engine::RequestEvent::Error(e) => return Err(e),
            ferrite_engine::RequestEvent::Token { .. } => {}
        }
    }
    Err("the engine stopped during warm-up".into())
}

/// Mark the server draining and wait until no admitted request is left or the deadline passes.
pub async fn drain(state: &AppState, timeout: Duration) {
    state.start_draining();
    tracing::info!(
        inflight = state.inflight(),
        timeout_s = timeout.as_secs_f64(),
        "draining: new requests get 503"
    );
    let deadline = tokio::time::Instant::now() + timeout;
    while state.inflight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if state.inflight() > 0 {
        tracing::warn!(
            inflight = state.inflight(),
            "drain timeout: closing with requests unfinished"
        );
        // Streams still open would hold the graceful shutdown; end the process shortly.
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            std::process::exit(0);
        });
    } else {
        tracing::info!("drained");
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
