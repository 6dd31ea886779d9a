//! A real server on 127.0.0.1 over a tiny synthetic model, for HTTP tests.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ferrite_engine::grammar::GrammarCompiler;
use ferrite_engine::{EngineConfig, EngineCore, EngineHandle};
use ferrite_gguf::GgufFile;
use ferrite_kernels::quant::QuantType;
use ferrite_models::{load_model_from, LoadOptions};
use ferrite_server::tools::ToolFormat;
use ferrite_server::{ApiKeys, AppState, Loaded, ServerOptions};
use ferrite_testkit::{TinyArch, TinyModel};
use ferrite_tokenizer::Tokenizer;

pub const MODEL: &str = "tiny";

pub struct TestServer {
    pub url: String,
    pub state: Arc<AppState>,
    pub client: reqwest::Client,
}

pub struct Opts {
    pub engine: EngineConfig,
    pub keys: Option<&'static str>,
    pub max_inflight: usize,
    /// Idle time before a stream gets a `: ping` comment.
    pub sse_keep_alive: Duration,
    /// Longest a grammar may take to compile.
    pub grammar_compile_timeout: Duration,
    /// Tool-call format of the tiny model.
    pub tool_format: ToolFormat,
    /// Serve the chat page at `/`.
    pub webui: bool,
    /// Architecture of the tiny model.
    pub arch: TinyArch,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            engine: EngineConfig {
                max_num_batched_tokens: 64,
                max_num_seqs: 16,
                kv_cache_bytes: 16 << 20,
                ..EngineConfig::default()
            },
            keys: None,
            max_inflight: 256,
            sse_keep_alive: Duration::from_millis(20),
            grammar_compile_timeout: Duration::from_secs(10),
            tool_format: ToolFormat::Hermes,
            webui: true,
            arch: TinyArch::Llama,
        }
    }
}

pub async fn start(opts: Opts) -> TestServer {
    // A context long enough for a tool listing (the byte-level vocabulary spends a token per
    // byte).
    let bytes = TinyModel {
        context: 2048,
        ..TinyModel::new(opts.arch)
    }
    .quant(QuantType::Q8_0)
    .to_bytes();
    let f = Arc::new(GgufFile::from_bytes(bytes).unwrap());
    let model = load_model_from(
        &f,
        &LoadOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let tok = Arc::new(Tokenizer::from_gguf(&f).unwrap());
    let core = EngineCore::new(model, tok.clone(), &opts.engine).unwrap();
    let (engine, _join) = EngineHandle::spawn(core);
    let state = AppState::new(ServerOptions {
        model_name: MODEL.into(),
        api_keys: opts.keys.and_then(ApiKeys::from_text),
        max_inflight: opts.max_inflight,
        drain_timeout: Duration::from_secs(30),
        max_body_bytes: 1 << 20,
        sse_keep_alive: opts.sse_keep_alive,
        grammar_compile_timeout: opts.grammar_compile_timeout,
        webui: opts.webui,
    });
    let grammars = Some(Arc::new(GrammarCompiler::new(&tok).unwrap()));
    state.install(Loaded {
        engine,
        tokenizer: tok,
        fingerprint: "fp_test".into(),
        grammars,
        tool_format: opts.tool_format,
        info: serde_json::json!({"architecture": opts.arch.name(), "quantization": "Q8_0"}),
    });
    ferrite_server::warm_up(&state).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = ferrite_server::app(state.clone());
    tokio::spawn(async move {
        axum_serve(listener, app).await;
    });
    TestServer {
        url,
        state,
        client: reqwest::Client::new(),
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum_router::Router) {
    axum_router::serve(listener, app).await.unwrap();
}

// axum is a dependency of ferrite-server; tests reach it through this alias.
pub use ferrite_server::axum as axum_router;

impl TestServer {
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v = r.json().await.unwrap_or(serde_json::Value::Null);
        (status, v)
    }

    /// The body of a GET, as text.
    pub async fn get(&self, path: &str) -> String {
        let r = self.client.get(format!("{}{path}", self.url)).send().await;
        r.unwrap().text().await.unwrap()
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Collect an SSE stream into its `data:` payloads.
    pub async fn stream(&self, path: &str, body: serde_json::Value) -> Vec<String> {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let text = r.text().await.unwrap();
        text.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: ").map(str::to_string))
            .collect()
    }
}
