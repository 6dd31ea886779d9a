//! `ferrite serve`: the OpenAI-compatible server over one model.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferrite::setup::ModelArgs;
use ferrite_engine::spec::NgramConfig;
use ferrite_engine::{EngineConfig, EngineCore, EngineHandle};
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
    /// Speculative decoding by default: `off`, or `ngram[:k=4,min_n=2,max_n=4]` (prompt lookup).
    /// Requests can override it with the `speculative` field (false, or {k, min_n, max_n}).
    #[arg(long, env = "FERRITE_SPECULATIVE", default_value = "off")]
    pub speculative: String,
    /// Seed of the prefix-cache block hashes (replicas behind one router must agree).
    #[arg(long, env = "FERRITE_HASH_SEED", default_value_t = 0)]
    pub hash_seed: u64,
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
    });
    // The listener answers /health and /ready (503) while the model loads.
    eprintln!(
        "ferrite: listening on http://{local} (loading {})",
        a.model.model
    );
    let mut server = tokio::spawn(ferrite_server::serve(listener, state.clone()));
    let st = state.clone();
    let load = tokio::task::spawn_blocking(move || load_engine(&a));
    let (engine, tokenizer, fingerprint) = tokio::select! {
        r = load => r.context("loading the model")??,
        r = &mut server => {
            r??;
            return Ok(()); // signalled before the model was loaded
        }
    };
    st.install(Loaded {
        engine,
        tokenizer,
        fingerprint,
    });
    ferrite_server::warm_up(&st)
        .await
        .map_err(|e| anyhow::anyhow!("warm-up failed: {e}"))?;
    eprintln!("ferrite: ready, serving `{name}` on http://{local}/v1");
    // The server task ends after SIGTERM and the drain.
    server.await??;
    eprintln!("ferrite: drained, exiting");
    Ok(())
}

fn load_engine(a: &ServeArgs) -> Result<(EngineHandle, Arc<ferrite_tokenizer::Tokenizer>, String)> {
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
        speculative: parse_speculative(&a.speculative)?,
    };
    let core = EngineCore::new(loaded.model, tokenizer.clone(), &cfg)?;
    let (engine, _join) = EngineHandle::spawn(core);
    Ok((engine, tokenizer, fingerprint))
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

/// `off` | `ngram` | `ngram:k=K,min_n=A,max_n=B` (any subset of the keys).
fn parse_speculative(s: &str) -> Result<Option<NgramConfig>> {
    let s = s.trim();
    if s == "off" || s == "none" {
        return Ok(None);
    }
    let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
    if kind != "ngram" {
        bail!("--speculative {s:?}: expected `off` or `ngram[:k=4,min_n=2,max_n=4]` (draft models are not supported yet)");
    }
    let mut c = NgramConfig::default();
    for kv in rest.split(',').filter(|x| !x.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--speculative: {kv:?} is not key=value"))?;
        let v: usize = v
            .parse()
            .with_context(|| format!("--speculative: {k} must be a number, got {v:?}"))?;
        match k {
            "k" => c.k = v,
            "min_n" => c.min_n = v,
            "max_n" => c.max_n = v,
            _ => bail!("--speculative: unknown key {k:?} (k, min_n, max_n)"),
        }
    }
    c.validate()
        .map_err(|m| anyhow::anyhow!("--speculative: {m}"))?;
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speculative_flag_parses_and_rejects() {
        assert_eq!(parse_speculative("off").unwrap(), None);
        assert_eq!(
            parse_speculative("ngram").unwrap(),
            Some(NgramConfig::default())
        );
        let c = parse_speculative("ngram:k=6,max_n=5").unwrap().unwrap();
        assert_eq!((c.k, c.min_n, c.max_n), (6, 2, 5));
        for bad in [
            "draft:x.gguf",
            "ngram:k=0",
            "ngram:q=1",
            "ngram:k=x",
            "ngram:min_n=5,max_n=2",
        ] {
            assert!(parse_speculative(bad).is_err(), "{bad}");
        }
    }
}
