//! `/v1/chat/completions` and `/v1/completions`: validate, tokenize, check the context, compile
//! the grammar (structured output, tool calls), admit, submit one engine request per choice,
//! then answer in one body or as server-sent events.

mod choice;
mod stream;
mod unary;

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use ferrite_engine::grammar::Constraint;
use ferrite_engine::spec::NgramConfig;
use ferrite_engine::{NewRequest, OutputSink, RequestEvent, SamplingParams};
use ferrite_protocol::{
    parse_request, ApiError, Endpoint, ErrorKind, PromptInput, SpecChoice, ToolChoice, ValidRequest,
};
use ferrite_tokenizer::{EncodeOptions, Tokenizer};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::routes::{error_response, not_loaded, read_body};
use crate::state::{Admission, AppState, Loaded};
use crate::tools::parse::ToolCallParser;
use crate::tools::{output_grammar, ToolFormat};

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
    /// The format its tool calls are read in, when it offers tools.
    tools: Option<ToolFormat>,
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
    let offers_tools = !req.tools.is_empty() && req.tool_choice != ToolChoice::None;
    let (prompt, prompt_text) = build_prompt(&tok, &req, loaded.tool_format, offers_tools)?;
    let max_len = loaded.engine.max_model_len();
    check_context(prompt.len(), req.max_tokens, max_len)?;
    let constraint = constrain(s, &loaded, &req, offers_tools).await?;
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
            constraint: constraint.clone(),
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
        tools: offers_tools.then_some(loaded.tool_format),
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
        Ok(stream::stream(s.clone(), st, endpoint))
    } else {
        unary::unary(s, st, endpoint).await
    }
}

impl Started {
    /// One accumulator per choice, each with its own tool-call parser.
    fn choices(&self) -> Vec<choice::Choice> {
        (0..self.req.n)
            .map(|_| choice::Choice::new(self.tools.map(ToolCallParser::new)))
            .collect()
    }
}

/// The grammar a request's output must follow (tool calls in the model's format, and/or its
/// `response_format` / `structured_outputs`), compiled off the async runtime within the
/// server's time limit. Errors are 400s naming the field and what is wrong.
async fn constrain(
    s: &AppState,
    loaded: &Loaded,
    req: &ValidRequest,
    offers_tools: bool,
) -> Result<Option<Constraint>, ApiError> {
    let answer = req.output_format.as_ref().map(output_grammar);
    let (spec, param) = if offers_tools {
        let g = loaded.tool_format.grammar(
            &req.tools,
            &req.tool_choice,
            req.parallel_tool_calls,
            answer.as_ref(),
        );
        (g, "tools")
    } else {
        (answer, req.output_format_param)
    };
    let Some(spec) = spec else {
        return Ok(None);
    };
    let compiler = loaded.grammars.clone().ok_or_else(|| {
        ApiError::invalid(param, "structured output is not available for this model")
    })?;
    let limit = s.options.grammar_compile_timeout;
    let started = Instant::now();
    let task = tokio::task::spawn_blocking(move || compiler.compile(&spec));
    match tokio::time::timeout(limit, task).await {
        Err(_) => Err(ApiError::invalid(
            param,
            format!(
                "the grammar for `{param}` did not compile within {} ms; simplify the schema",
                limit.as_millis()
            ),
        )),
        Ok(Err(e)) => Err(ApiError::new(ErrorKind::Internal, e.to_string())),
        Ok(Ok(Err(e))) => Err(ApiError::invalid(param, format!("`{param}`: {e}"))),
        Ok(Ok(Ok(c))) => {
            s.metrics
                .grammar_compile
                .observe(started.elapsed().as_secs_f64());
            Ok(Some(c))
        }
    }
}

fn request_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    request_suffix_with(N.fetch_add(1, Ordering::Relaxed))
}

/// A unique-enough id suffix: the clock in nanoseconds and a counter.
fn request_suffix_with(n: u64) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:016x}{n:06x}", t)
}

fn build_prompt(
    tok: &Tokenizer,
    req: &ValidRequest,
    format: ToolFormat,
    offers_tools: bool,
) -> Result<(Vec<u32>, Option<String>), ApiError> {
    match &req.input {
        PromptInput::Chat(msgs) => {
            let (msgs, tools) = format.conversation(msgs, &req.tools, offers_tools);
            let (text, ids) = tok
                .encode_chat_with(&msgs, tools.as_ref(), &req.chat_template_kwargs, true)
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
