//! `ferrite serve`: the OpenAI-compatible server over one model.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferrite::setup::ModelArgs;
use ferrite_engine::grammar::GrammarCompiler;
use ferrite_engine::spec::NgramConfig;
use ferrite_engine::{EngineConfig, EngineCore, EngineHandle};
use ferrite_server::tools::ToolFormat;
use ferrite_server::{ApiKeys, AppState, Loaded, ServerOptions};
use sha2::{Digest, Sha256};

/// `ferrite serve` options (each also settable through its `FERRITE_*` variable).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on.
    #[arg(long, env = "FERRITE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "FERRITE_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Host memory for the KV cache, in MiB.
    #[arg(long, env = "FERRITE_KV_CACHE_MIB", default_value_t = 512)]
    pub kv_cache_mib: usize,
    /// Most requests running at once (holding KV blocks).
    #[arg(long, env = "FERRITE_MAX_NUM_SEQS", default_value_t = 32)]
    pub max_num_seqs: usize,
    /// Token budget of one forward pass (prefill chunks plus decodes). Bounds how long one
    /// step can stall decoding requests behind a long prompt.
    #[arg(long, env = "FERRITE_MAX_BATCHED_TOKENS", default_value_t = 512)]
    pub max_batched_tokens: usize,
    /// Longest sequence, prompt plus output (default: the model's training context).
    #[arg(long, env = "FERRITE_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,
    /// Requests that may wait beyond `--max-num-seqs` before new ones get 429.
    #[arg(long, env = "FERRITE_MAX_QUEUE", default_value_t = 256)]
    pub max_queue: usize,
    /// File of API keys, one per line; every /v1 request then needs `Authorization: Bearer`.
    #[arg(long, env = "FERRITE_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Seconds to let admitted requests finish after SIGTERM.
    #[arg(long, env = "FERRITE_DRAIN_TIMEOUT", default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Name served in /v1/models (default: the --model value).
    #[arg(long, env = "FERRITE_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// Speculative decoding by default: `off`, `ngram[:k=4,min_n=2,max_n=4]` (prompt lookup),
    /// `draft:MODEL[,k=5]` (a draft model sharing the vocabulary: a .gguf path or known name) or
    /// `self:layers=L[,k=4]` (the target's first L layers as the draft). Each takes
    /// `adaptive=off` to verify every draft instead of only those worth their forward rows
    /// (measured step costs against the request's acceptance so far). Requests can override
    /// it with the `speculative` field (false, or {k, ...}); with a draft model loaded, requests
    /// that speculate use it.
    #[arg(long, env = "FERRITE_SPECULATIVE", default_value = "off")]
    pub speculative: String,
    /// Seed of the prefix-cache block hashes (replicas behind one router must agree).
    #[arg(long, env = "FERRITE_HASH_SEED", default_value_t = 0)]
    pub hash_seed: u64,
    /// How tools are offered and calls read: `auto` (the chat template's own format when it
    /// declares tools, SmolLM2's APIGen format for SmolLM2, a generic JSON format otherwise),
    /// `hermes`, `apigen` or `generic`.
    #[arg(long, env = "FERRITE_TOOL_FORMAT", default_value = "auto")]
    pub tool_format: String,
    /// Longest a request's grammar (response_format, structured_outputs, tools) may take to
    /// compile, in milliseconds; past it the request gets a 400.
    #[arg(long, env = "FERRITE_GRAMMAR_COMPILE_MS", default_value_t = 2000)]
    pub grammar_compile_ms: u64,
    /// Do not serve the chat page and operations view at `/` (the API is unchanged).
    #[arg(long, env = "FERRITE_NO_WEBUI")]
    pub no_webui: bool,
}

pub fn run(a: ServeArgs) -> Result<()> {
    if !(a.drain_timeout.is_finite() && a.drain_timeout >= 0.0) {
        bail!(
            "--drain-timeout must be ≥ 0 seconds, got {}",
            a.drain_timeout
        );
    }
    if a.max_num_seqs == 0 || a.max_batched_tokens == 0 || a.kv_cache_mib == 0 {
        bail!("--max-num-seqs, --max-batched-tokens and --kv-cache-mib must be > 0");
    }
    if a.tool_format != "auto" && ToolFormat::parse(&a.tool_format).is_none() {
        bail!(
            "--tool-format must be auto, hermes, apigen or generic, got {:?}",
            a.tool_format
        );
    }
    if a.grammar_compile_ms == 0 {
        bail!("--grammar-compile-ms must be > 0");
    }
    let api_keys = match &a.api_key_file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading --api-key-file {}", p.display()))?;
            Some(ApiKeys::from_text(&text).with_context(|| {
                format!("--api-key-file {} holds no key (one per line)", p.display())
            })?)
        }
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(a, api_keys))
}

async fn serve(a: ServeArgs, api_keys: Option<ApiKeys>) -> Result<()> {
    let addr = format!("{}:{}", a.host, a.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let name = a
        .served_model_name
        .clone()
        .unwrap_or_else(|| a.model.model.clone());
    let state = AppState::new(ServerOptions {
        model_name: name.clone(),
        api_keys,
        max_inflight: a.max_num_seqs + a.max_queue,
        drain_timeout: Duration::from_secs_f64(a.drain_timeout),
        max_body_bytes: 8 << 20,
        sse_keep_alive: Duration::from_secs(10),
        grammar_compile_timeout: Duration::from_millis(a.grammar_compile_ms),
        webui: !a.no_webui,
    });
    // The listener answers /health and /ready (503) while the model loads.
    eprintln!(
        "ferrite: listening on http://{local} (loading {})",
        a.model.model
    );
    let mut server = tokio::spawn(ferrite_server::serve(listener, state.clone()));
    let st = state.clone();
    let load = tokio::task::spawn_blocking(move || load_engine(&a));
    let loaded = tokio::select! {
        r = load => r.context("loading the model")??,
        r = &mut server => {
            r??;
            return Ok(()); // signalled before the model was loaded
        }
    };
    st.install(loaded);
    ferrite_server::warm_up(&st)
        .await
        .map_err(|e| anyhow::anyhow!("warm-up failed: {e}"))?;
    eprintln!("ferrite: ready, serving `{name}` on http://{local}/v1");
    // The server task ends after SIGTERM and the drain.
    server.await??;
    eprintln!("ferrite: drained, exiting");
    Ok(())
}

fn load_engine(a: &ServeArgs) -> Result<Loaded> {
    let spec = parse_speculative(&a.speculative)?;
    let loaded = a.model.load()?;
    let fingerprint = fingerprint(&loaded.path);
    let tokenizer = Arc::new(loaded.tokenizer);
    let cfg = EngineConfig {
        max_num_seqs: a.max_num_seqs,
        max_num_batched_tokens: a.max_batched_tokens,
        max_model_len: a.max_model_len,
        kv_cache_bytes: a.kv_cache_mib << 20,
        block_size: 16,
        hash_seed: a.hash_seed,
        long_prefill_token_threshold: 0,
        speculative: spec.ngram,
    };
    // What a client sizing its requests wants to know about the model's shape.
    let model_cfg = loaded.model.config().clone();
    let kv_format = loaded.model.cpu().kv_format;
    // The draft shares the target's kernels and thread pool (they never run at once).
    let cpu = loaded.model.cpu().clone();
    let mut core = EngineCore::new(loaded.model, tokenizer.clone(), &cfg)?;
    match spec.draft {
        None => {}
        Some(DraftSource::SelfLayers(l)) => {
            let dm = ferrite_models::load_draft_model(&loaded.file, &cpu, Some(l))?;
            core.set_draft_model(dm)?;
            eprintln!("ferrite: drafting with the first {l} layers of the model");
        }
        Some(DraftSource::Model(m)) => {
            let path = ferrite::hub::resolve_model(&m)?;
            let f = Arc::new(
                ferrite_gguf::GgufFile::open(&path)
                    .with_context(|| format!("reading draft model {}", path.display()))?,
            );
            let draft_tok = ferrite_tokenizer::Tokenizer::from_gguf(&f)
                .with_context(|| format!("building the tokenizer of {}", path.display()))?;
            check_same_vocab(&tokenizer, &draft_tok)
                .with_context(|| format!("draft model {}", path.display()))?;
            let dm = ferrite_models::load_draft_model(&f, &cpu, None)
                .with_context(|| format!("loading draft model {}", path.display()))?;
            core.set_draft_model(dm)?;
            eprintln!("ferrite: drafting with {}", path.display());
        }
    }
    let (engine, _join) = EngineHandle::spawn(core);
    // The token table for structured output and tools, built once (0.1 s for SmolLM2's 49k
    // tokens, ~2 s for Gemma 3's 262k); without it those requests get a 400.
    let grammars = match GrammarCompiler::new(&tokenizer) {
        Ok(g) => {
            tracing::info!(
                seconds = g.build_time().as_secs_f64(),
                "structured output: token table built"
            );
            Some(Arc::new(g))
        }
        Err(e) => {
            tracing::warn!(error = %e, "structured output unavailable");
            None
        }
    };
    let tool_format = ToolFormat::parse(&a.tool_format)
        .unwrap_or_else(|| ToolFormat::detect(tokenizer.chat_template()));
    eprintln!("ferrite: tool calls in the {} format", tool_format.name());
    let md = |k: &str| {
        loaded
            .file
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let kv_bytes_per_token = kv_format
        .row_bytes(model_cfg.head_dim)
        .map(|rb| model_cfg.kv_shape().bytes_per_position(rb))
        .ok();
    let experts = model_cfg.moe.as_ref().map(|m| {
        serde_json::json!({"routed": m.n_experts, "per_token": m.n_used,
                           "shared": model_cfg.shared_experts})
    });
    let info = serde_json::json!({
        "architecture": md("general.architecture"),
        "name": md("general.name"),
        "quantization": file_quantization(&loaded.file),
        "file": loaded.path.file_name().map(|f| f.to_string_lossy().to_string()),
        "kv_cache_type": kv_format.to_string(),
        "kv_bytes_per_token": kv_bytes_per_token,
        "experts": experts,
    });
    Ok(Loaded {
        engine,
        tokenizer,
        fingerprint,
        grammars,
        tool_format,
        info,
    })
}

/// The format most of the file's weights are in, by bytes (the embedding and head included),
/// e.g. `Q4_K` — what a user calls the model's quantization.
fn file_quantization(f: &ferrite_gguf::GgufFile) -> Option<String> {
    let mut bytes = std::collections::BTreeMap::<&str, u64>::new();
    for t in f.tensors().iter().filter(|t| t.dims.len() >= 2) {
        *bytes.entry(t.ggml_type.name()).or_default() += t.size_bytes;
    }
    bytes
        .into_iter()
        .max_by_key(|(_, b)| *b)
        .map(|(n, _)| n.to_uppercase())
}

/// `fp_` + a hash of the ferrite version and the model file's name and size.
fn fingerprint(path: &std::path::Path) -> String {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let h = Sha256::new()
        .chain_update(env!("CARGO_PKG_VERSION"))
        .chain_update(
            path.file_name()
                .map(|f| f.as_encoded_bytes())
                .unwrap_or_default(),
        )
        .chain_update(size.to_le_bytes())
        .finalize();
    format!("fp_{}", &hex::encode(h)[..12])
}

/// A draft model for speculative decoding.
#[derive(Debug, Clone, PartialEq)]
enum DraftSource {
    /// A separate GGUF (path or known name).
    Model(String),
    /// The target's first L layers.
    SelfLayers(usize),
}

/// What `--speculative` asks for: the per-request settings (k, n-gram sizes) and a drafter.
#[derive(Debug, Clone, PartialEq, Default)]
struct SpecFlag {
    ngram: Option<NgramConfig>,
    draft: Option<DraftSource>,
}

/// `off` | `ngram[:k=K,min_n=A,max_n=B]` | `draft:MODEL[,k=K]` | `self:layers=L[,k=K]`.
fn parse_speculative(s: &str) -> Result<SpecFlag> {
    let s = s.trim();
    if s == "off" || s == "none" {
        return Ok(SpecFlag::default());
    }
    let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
    let mut c = NgramConfig::default();
    let mut layers = None;
    let mut parts = rest.split(',').filter(|x| !x.is_empty());
    let draft_model = match kind {
        "ngram" | "self" => None,
        "draft" => Some(
            parts
                .next()
                .filter(|m| !m.contains('='))
                .with_context(|| format!("--speculative {s:?}: give the draft model, `draft:MODEL[,k=5]`"))?
                .to_string(),
        ),
        _ => bail!("--speculative {s:?}: expected `off`, `ngram[:k=4,min_n=2,max_n=4]`, `draft:MODEL[,k=5]` or `self:layers=L[,k=4]`"),
    };
    if draft_model.is_some() {
        c.k = 5;
    }
    for kv in parts {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--speculative: {kv:?} is not key=value"))?;
        if k == "adaptive" {
            c.adaptive = match v {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                _ => bail!("--speculative: adaptive must be on or off, got {v:?}"),
            };
            continue;
        }
        let v: usize = v
            .parse()
            .with_context(|| format!("--speculative: {k} must be a number, got {v:?}"))?;
        match (kind, k) {
            (_, "k") => c.k = v,
            ("ngram", "min_n") => c.min_n = v,
            ("ngram", "max_n") => c.max_n = v,
            ("self", "layers") => layers = Some(v),
            ("ngram", _) => {
                bail!("--speculative: unknown key {k:?} (k, min_n, max_n, adaptive)")
            }
            ("self", _) => bail!("--speculative: unknown key {k:?} (layers, k, adaptive)"),
            _ => bail!("--speculative: unknown key {k:?} (k, adaptive)"),
        }
    }
    c.validate()
        .map_err(|m| anyhow::anyhow!("--speculative: {m}"))?;
    let draft = match (kind, draft_model, layers) {
        ("self", _, Some(l)) if l > 0 => Some(DraftSource::SelfLayers(l)),
        ("self", _, _) => {
            bail!("--speculative {s:?}: give the draft depth, `self:layers=L` with L ≥ 1")
        }
        (_, Some(m), _) => Some(DraftSource::Model(m)),
        _ => None,
    };
    Ok(SpecFlag {
        ngram: Some(c),
        draft,
    })
}

/// A draft must map every token id to the same text as the target.
fn check_same_vocab(
    target: &ferrite_tokenizer::Tokenizer,
    draft: &ferrite_tokenizer::Tokenizer,
) -> Result<()> {
    let (n, m) = (target.vocab_size(), draft.vocab_size());
    if n != m {
        bail!("its vocabulary has {m} tokens, the target's {n}: a draft must share the target's vocabulary");
    }
    if let Some(id) = (0..n as u32).find(|&i| target.token_text(i) != draft.token_text(i)) {
        bail!(
            "token {id} is {:?} in the draft and {:?} in the target: a draft must share the target's vocabulary",
            draft.token_text(id).unwrap_or(""),
            target.token_text(id).unwrap_or("")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speculative_flag_parses_and_rejects() {
        assert_eq!(parse_speculative("off").unwrap(), SpecFlag::default());
        assert_eq!(
            parse_speculative("ngram").unwrap().ngram,
            Some(NgramConfig::default())
        );
        let c = parse_speculative("ngram:k=6,max_n=5")
            .unwrap()
            .ngram
            .unwrap();
        assert_eq!((c.k, c.min_n, c.max_n, c.adaptive), (6, 2, 5, true));
        let c = parse_speculative("ngram:adaptive=off,k=3").unwrap().ngram;
        assert_eq!(c.map(|c| (c.k, c.adaptive)), Some((3, false)));
        let d = parse_speculative("self:layers=8,adaptive=on").unwrap();
        assert!(d.ngram.unwrap().adaptive);
        let d = parse_speculative("draft:small.gguf").unwrap();
        assert_eq!(d.draft, Some(DraftSource::Model("small.gguf".into())));
        assert_eq!(d.ngram.unwrap().k, 5);
        let d = parse_speculative("draft:small.gguf,k=3").unwrap();
        assert_eq!(d.ngram.unwrap().k, 3);
        let d = parse_speculative("self:layers=8,k=4").unwrap();
        assert_eq!(d.draft, Some(DraftSource::SelfLayers(8)));
        for bad in [
            "eagle",
            "draft:",
            "draft:k=3",
            "self",
            "self:layers=0",
            "self:min_n=2",
            "draft:x.gguf,layers=2",
            "ngram:k=0",
            "ngram:q=1",
            "ngram:k=x",
            "ngram:min_n=5,max_n=2",
            "ngram:adaptive=maybe",
        ] {
            assert!(parse_speculative(bad).is_err(), "{bad}");
        }
    }
}
