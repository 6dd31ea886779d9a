//! Shared server state: the engine (once loaded), readiness, draining, admission and metrics.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferrite_engine::grammar::GrammarCompiler;
use ferrite_engine::EngineHandle;
use ferrite_protocol::{ApiError, ErrorKind};
use ferrite_tokenizer::Tokenizer;

use crate::auth::ApiKeys;
use crate::metrics::Metrics;
use crate::tools::ToolFormat;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Name served in `/v1/models` and accepted as `model`.
    pub model_name: String,
    /// Required bearer keys; `None` = open.
    pub api_keys: Option<ApiKeys>,
    /// Most admitted requests (running + queued); past it, 429.
    pub max_inflight: usize,
    /// Longest wait for admitted requests on SIGTERM.
    pub drain_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Idle time after which a stream gets a `: ping` comment.
    pub sse_keep_alive: Duration,
    /// Longest a request's grammar may take to compile (past it, 400).
    pub grammar_compile_timeout: Duration,
    /// Serve the chat page and operations view at `/`.
    pub webui: bool,
}

/// The loaded engine and its tokenizer.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Engine thread handle.
    pub engine: EngineHandle,
    /// Tokenizer of the served model.
    pub tokenizer: Arc<Tokenizer>,
    /// `system_fingerprint`: build and model identity.
    pub fingerprint: String,
    /// Grammar compiler over the model's vocabulary (`None`: structured output unavailable).
    pub grammars: Option<Arc<GrammarCompiler>>,
    /// How tools are offered to this model and read from its output.
    pub tool_format: ToolFormat,
    /// What the model is, for `/v1/models` (`architecture`, `quantization`, …).
    pub info: serde_json::Value,
}

/// State shared by every handler.
#[derive(Debug)]
pub struct AppState {
    /// Settings.
    pub options: ServerOptions,
    /// Metrics.
    pub metrics: Metrics,
    loaded: OnceLock<Loaded>,
    ready: AtomicBool,
    draining: AtomicBool,
    inflight: AtomicUsize,
}

impl AppState {
    /// State before the model is loaded (`/health` and `/ready` answer 503).
    pub fn new(options: ServerOptions) -> Arc<AppState> {
        Arc::new(AppState {
            metrics: Metrics::new(&options.model_name),
            options,
            loaded: OnceLock::new(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
        })
    }

    /// Install the engine (once). Readiness still waits for [`set_ready`](Self::set_ready).
    pub fn install(&self, loaded: Loaded) {
        let _ = self.loaded.set(loaded);
    }

    /// The engine, if loaded.
    pub fn loaded(&self) -> Option<&Loaded> {
        self.loaded.get()
    }

    /// Declare the warm-up done.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Ready: loaded, warmed up, not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.is_draining()
    }

    /// Whether SIGTERM was received.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Stop admitting requests.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Admitted requests not yet finished.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Admit a request or refuse it (503 draining / not ready, 429 full).
    pub fn admit(self: &Arc<Self>) -> Result<Admission, ApiError> {
        if self.is_draining() {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "the server is shutting down",
            ));
        }
        let n = self.inflight.fetch_add(1, Ordering::SeqCst);
        if n >= self.options.max_inflight {
            self.inflight.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(
                ErrorKind::Overloaded,
                format!(
                    "the server is at capacity ({} requests admitted); retry later",
                    self.options.max_inflight
                ),
            ));
        }
        Ok(Admission(self.clone()))
    }
}

/// An admitted request; dropping it releases the slot.
#[derive(Debug)]
pub struct Admission(Arc<AppState>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}
