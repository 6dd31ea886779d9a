//! Parse, don't validate: a JSON body becomes a [`ValidRequest`] or an [`ApiError`] that names
//! the field, the rule and the value. Fields are read one by one from the JSON object so a wrong
//! type gets the same field-naming message as a wrong value; unknown fields are ignored.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::tools::{OutputFormat, Tool, ToolCall, ToolChoice};

/// Most choices per request.
pub const MAX_N: usize = 16;
/// Most `top_logprobs`.
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most stop strings.
pub const MAX_STOP: usize = 16;

/// A chat message after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text content (parts joined; empty when the client sent `null`).
    pub content: String,
    /// Calls an assistant message made.
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers (it matches an earlier assistant call).
    pub tool_call_id: Option<String>,
}

/// What the model continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptInput {
    /// Chat messages, rendered with the model's template.
    Chat(Vec<Message>),
    /// A raw text prompt.
    Text(String),
    /// Pre-tokenized prompt.
    Tokens(Vec<u32>),
}

/// A request that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    /// Requested model name, if any.
    pub model: Option<String>,
    /// Prompt.
    pub input: PromptInput,
    /// Output limit; `None` = the rest of the context.
    pub max_tokens: Option<usize>,
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 0 = off.
    pub min_p: f32,
    /// OpenAI presence penalty.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty.
    pub frequency_penalty: f32,
    /// 1 = off.
    pub repetition_penalty: f32,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Choices.
    pub n: usize,
    /// `Some(k)`: return log-probabilities with the top `k` alternatives.
    pub logprobs: Option<usize>,
    /// Server-sent events.
    pub stream: bool,
    /// A final usage chunk when streaming.
    pub include_usage: bool,
    /// Cumulative usage on every chunk (vLLM extension).
    pub continuous_usage_stats: bool,
    /// Ignore end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// No EOS / stop before this many tokens.
    pub min_tokens: usize,
    /// Completions: prepend the prompt to the output.
    pub echo: bool,
    /// Prefix-cache namespace.
    pub cache_salt: Option<String>,
    /// Speculative decoding override (extension field `speculative`).
    pub speculative: SpecChoice,
    /// Functions the model may call.
    pub tools: Vec<Tool>,
    /// Whether and which to call.
    pub tool_choice: ToolChoice,
    /// Several calls in one answer.
    pub parallel_tool_calls: bool,
    /// What the output must match (`response_format` / `structured_outputs`).
    pub output_format: Option<OutputFormat>,
    /// The field that set it (for error messages).
    pub output_format_param: &'static str,
    /// Extra variables for the chat template (`chat_template_kwargs`, as vLLM and llama.cpp
    /// take them), e.g. `{"enable_thinking": false}` for Qwen3.
    pub chat_template_kwargs: Map<String, Value>,
}

/// The request's `speculative` extension field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecChoice {
    /// Absent or `true`: the server's default.
    ServerDefault,
    /// `false`: no speculation for this request.
    Off,
    /// `{"k": .., "min_n": .., "max_n": ..}`: n-gram drafting with these settings.
    Ngram {
        /// Most drafts per step.
        k: usize,
        /// Shortest suffix matched.
        min_n: usize,
        /// Longest suffix matched.
        max_n: usize,
        /// Verify only the drafts worth their cost (default) or all of them.
        adaptive: bool,
    },
}

/// Which endpoint a body was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
}

/// Parse and validate a request body.
pub fn parse_request(body: &[u8], endpoint: Endpoint) -> Result<ValidRequest, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::invalid("body", format!("the body is not valid UTF-8: {e}")))?;
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid("body", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(o) = v else {
        return Err(ApiError::invalid(
            "body",
            format!("the body must be a JSON object, got {}", kind(&v)),
        ));
    };
    let f = Fields(&o);
    let input = match endpoint {
        Endpoint::Chat => PromptInput::Chat(messages(&o)?),
        Endpoint::Completions => prompt(&o)?,
    };
    let max_tokens = match (f.int("max_completion_tokens")?, f.int("max_tokens")?) {
        (Some(n), _) => Some(("max_completion_tokens", n)),
        (None, Some(n)) => Some(("max_tokens", n)),
        (None, None) => None,
    };
    let max_tokens = match max_tokens {
        Some((name, n)) if n < 1 => {
            return Err(ApiError::invalid(
                name,
                format!("`{name}` must be ≥ 1, got {n}"),
            ))
        }
        Some((_, n)) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => None,
    };
    let temperature = f.num("temperature")?.unwrap_or(1.0);
    range("temperature", temperature, 0.0, 2.0, "between 0 and 2")?;
    let top_p = f.num("top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            format!("`top_p` must be > 0 and ≤ 1, got {top_p}"),
        ));
    }
    let top_k = match f.int("top_k")? {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k < 0 => {
            return Err(ApiError::invalid(
                "top_k",
                format!("`top_k` must be ≥ 1, or 0 / -1 for off, got {k}"),
            ))
        }
        Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
    };
    let min_p = f.num("min_p")?.unwrap_or(0.0);
    range("min_p", min_p, 0.0, 1.0, "between 0 and 1")?;
    let presence_penalty = f.num("presence_penalty")?.unwrap_or(0.0);
    range(
        "presence_penalty",
        presence_penalty,
        -2.0,
        2.0,
        "between -2 and 2",
    )?;
    let frequency_penalty = f.num("frequency_penalty")?.unwrap_or(0.0);
    range(
        "frequency_penalty",
        frequency_penalty,
        -2.0,
        2.0,
        "between -2 and 2",
    )?;
    let repetition_penalty = f.num("repetition_penalty")?.unwrap_or(1.0);
    if !(repetition_penalty > 0.0 && repetition_penalty <= 10.0) {
        return Err(ApiError::invalid(
            "repetition_penalty",
            format!("`repetition_penalty` must be > 0 and ≤ 10, got {repetition_penalty}"),
        ));
    }
    let seed = match o.get("seed") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Some(u),
            // Negative seeds are accepted (OpenAI takes any integer) and reinterpreted.
            (None, Some(i)) => Some(i as u64),
            _ => {
                return Err(ApiError::invalid(
                    "seed",
                    format!("`seed` must be an integer, got {n}"),
                ))
            }
        },
        Some(v) => {
            return Err(ApiError::invalid(
                "seed",
                format!("`seed` must be an integer, got {}", kind(v)),
            ))
        }
    };
    let stop = stops(&o)?;
    let n = match f.int("n")? {
        None => 1,
        Some(n) if n < 1 || n > MAX_N as i64 => {
            return Err(ApiError::invalid(
                "n",
                format!("`n` must be between 1 and {MAX_N}, got {n}"),
            ))
        }
        Some(n) => n as usize,
    };
    let logprobs = match endpoint {
        Endpoint::Chat => {
            let on = f.bool("logprobs")?.unwrap_or(false);
            match f.int("top_logprobs")? {
                Some(k) if !(0..=MAX_TOP_LOGPROBS as i64).contains(&k) => {
                    return Err(ApiError::invalid(
                        "top_logprobs",
                        format!("`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"),
                    ))
                }
                Some(k) if !on && k > 0 => {
                    return Err(ApiError::invalid(
                        "top_logprobs",
                        "`top_logprobs` needs `logprobs: true`",
                    ))
                }
                Some(k) => on.then_some(k as usize),
                None => on.then_some(0),
            }
        }
        Endpoint::Completions => match f.int("logprobs")? {
            None => None,
            Some(k) if !(0..=MAX_TOP_LOGPROBS as i64).contains(&k) => {
                return Err(ApiError::invalid(
                    "logprobs",
                    format!("`logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"),
                ))
            }
            Some(k) => Some(k as usize),
        },
    };
    let stream = f.bool("stream")?.unwrap_or(false);
    let (include_usage, continuous_usage_stats) = match o.get("stream_options") {
        None | Some(Value::Null) => (false, false),
        Some(Value::Object(so)) => {
            let g = Fields(so);
            (
                g.bool("include_usage")?.unwrap_or(false),
                g.bool("continuous_usage_stats")?.unwrap_or(false),
            )
        }
        Some(v) => {
            return Err(ApiError::invalid(
                "stream_options",
                format!("`stream_options` must be an object, got {}", kind(v)),
            ))
        }
    };
    let min_tokens = match f.int("min_tokens")? {
        None => 0,
        Some(k) if k < 0 => {
            return Err(ApiError::invalid(
                "min_tokens",
                format!("`min_tokens` must be ≥ 0, got {k}"),
            ))
        }
        Some(k) => k as usize,
    };
    if let (Some(m), true) = (max_tokens, min_tokens > 0) {
        if min_tokens > m {
            return Err(ApiError::invalid(
                "min_tokens",
                format!("`min_tokens` ({min_tokens}) must be ≤ `max_tokens` ({m})"),
            ));
        }
    }
    let (tools, tool_choice, parallel_tool_calls) = match endpoint {
        Endpoint::Chat => crate::tools::tools(&o)?,
        Endpoint::Completions => (Vec::new(), ToolChoice::None, false),
    };
    let (output_format, output_format_param) = crate::tools::output_format(&o)?;
    Ok(ValidRequest {
        tools,
        tool_choice,
        parallel_tool_calls,
        output_format,
        output_format_param,
        model: f.string("model")?,
        input,
        max_tokens,
        temperature: temperature as f32,
        top_p: top_p as f32,
        top_k,
        min_p: min_p as f32,
        presence_penalty: presence_penalty as f32,
        frequency_penalty: frequency_penalty as f32,
        repetition_penalty: repetition_penalty as f32,
        seed,
        stop,
        n,
        logprobs,
        stream,
        include_usage,
        continuous_usage_stats,
        ignore_eos: f.bool("ignore_eos")?.unwrap_or(false),
        min_tokens,
        echo: endpoint == Endpoint::Completions && f.bool("echo")?.unwrap_or(false),
        cache_salt: f.string("cache_salt")?,
        speculative: speculative(&o)?,
        chat_template_kwargs: template_kwargs(&o, endpoint)?,
    })
}

/// `chat_template_kwargs`: an object of template variables (chat requests only); the names the
/// server sets itself cannot be overridden.
fn template_kwargs(
    o: &Map<String, Value>,
    endpoint: Endpoint,
) -> Result<Map<String, Value>, ApiError> {
    let p = "chat_template_kwargs";
    match (o.get(p), endpoint) {
        (None | Some(Value::Null), _) => Ok(Map::new()),
        (Some(_), Endpoint::Completions) => Err(ApiError::invalid(
            p,
            "`chat_template_kwargs` applies to chat completions only",
        )),
        (Some(Value::Object(m)), Endpoint::Chat) => {
            const RESERVED: [&str; 5] = [
                "messages",
                "tools",
                "add_generation_prompt",
                "bos_token",
                "eos_token",
            ];
            match m.keys().find(|k| RESERVED.contains(&k.as_str())) {
                Some(k) => Err(ApiError::invalid(
                    p,
                    format!(
                        "`chat_template_kwargs.{k}` is set by the server and cannot be overridden"
                    ),
                )),
                None => Ok(m.clone()),
            }
        }
        (Some(v), Endpoint::Chat) => Err(ApiError::invalid(
            p,
            format!("`chat_template_kwargs` must be an object, got {}", kind(v)),
        )),
    }
}

fn speculative(o: &Map<String, Value>) -> Result<SpecChoice, ApiError> {
    let p = "speculative";
    match o.get(p) {
        None | Some(Value::Null) | Some(Value::Bool(true)) => Ok(SpecChoice::ServerDefault),
        Some(Value::Bool(false)) => Ok(SpecChoice::Off),
        Some(Value::Object(so)) => {
            let g = Fields(so);
            let get = |k: &str, default: i64, lo: i64, hi: i64| -> Result<usize, ApiError> {
                let v = g.int(k)?.unwrap_or(default);
                if v < lo || v > hi {
                    return Err(ApiError::invalid(
                        format!("{p}.{k}"),
                        format!("`{p}.{k}` must be between {lo} and {hi}, got {v}"),
                    ));
                }
                Ok(v as usize)
            };
            let (k, min_n, max_n) = (
                get("k", 4, 1, 32)?,
                get("min_n", 2, 1, 64)?,
                get("max_n", 4, 1, 64)?,
            );
            if min_n > max_n {
                return Err(ApiError::invalid(
                    p,
                    format!("`{p}.min_n` ({min_n}) must be ≤ `{p}.max_n` ({max_n})"),
                ));
            }
            let adaptive = match so.get("adaptive") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(v) => {
                    return Err(ApiError::invalid(
                        format!("{p}.adaptive"),
                        format!("`{p}.adaptive` must be a boolean, got {}", kind(v)),
                    ))
                }
            };
            Ok(SpecChoice::Ngram {
                k,
                min_n,
                max_n,
                adaptive,
            })
        }
        Some(v) => Err(ApiError::invalid(
            p,
            format!(
                "`{p}` must be a boolean or an object {{k, min_n, max_n, adaptive}}, got {}",
                kind(v)
            ),
        )),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn range(name: &str, v: f64, lo: f64, hi: f64, rule: &str) -> Result<(), ApiError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(ApiError::invalid(
            name,
            format!("`{name}` must be {rule}, got {v}"),
        ))
    }
}

/// Typed reads of optional fields; `null` counts as absent.
pub(crate) struct Fields<'a>(pub(crate) &'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }
    pub(crate) fn num(&self, k: &str) -> Result<Option<f64>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v) => Err(ApiError::invalid(
                k,
                format!("`{k}` must be a number, got {}", kind(v)),
            )),
        }
    }
    pub(crate) fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Ok(Some(i)),
                (None, Some(_)) => Ok(Some(i64::MAX)),
                _ => Err(ApiError::invalid(
                    k,
                    format!("`{k}` must be an integer, got {n}"),
                )),
            },
            Some(v) => Err(ApiError::invalid(
                k,
                format!("`{k}` must be an integer, got {}", kind(v)),
            )),
        }
    }
    pub(crate) fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ApiError::invalid(
                k,
                format!("`{k}` must be a boolean, got {}", kind(v)),
            )),
        }
    }
    pub(crate) fn string(&self, k: &str) -> Result<Option<String>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(ApiError::invalid(
                k,
                format!("`{k}` must be a string, got {}", kind(v)),
            )),
        }
    }
}

fn messages(o: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    let arr = match o.get("messages") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => {
            return Err(ApiError::invalid("messages", "`messages` is required"))
        }
        Some(v) => {
            return Err(ApiError::invalid(
                "messages",
                format!("`messages` must be an array, got {}", kind(v)),
            ))
        }
    };
    if arr.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    arr.iter()
        .enumerate()
        .map(|(i, m)| {
            let p = format!("messages[{i}]");
            let Value::Object(m) = m else {
                return Err(ApiError::invalid(&p, format!("`{p}` must be an object, got {}", kind(m))));
            };
            let role = match m.get("role") {
                Some(Value::String(r)) => r.clone(),
                Some(v) => return Err(ApiError::invalid(format!("{p}.role"), format!("`{p}.role` must be a string, got {}", kind(v)))),
                None => return Err(ApiError::invalid(format!("{p}.role"), format!("`{p}.role` is required"))),
            };
            if !["system", "developer", "user", "assistant", "tool"].contains(&role.as_str()) {
                return Err(ApiError::invalid(
                    format!("{p}.role"),
                    format!("`{p}.role` must be one of system, developer, user, assistant, tool; got {role:?}"),
                ));
            }
            let content = match m.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut s = String::new();
                    for (j, part) in parts.iter().enumerate() {
                        match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                            (Some("text"), Some(t)) => s.push_str(t),
                            _ => return Err(ApiError::invalid(
                                format!("{p}.content[{j}]"),
                                format!("`{p}.content[{j}]` must be a text part {{\"type\": \"text\", \"text\": ...}}; other content types are not supported"),
                            )),
                        }
                    }
                    s
                }
                Some(v) => return Err(ApiError::invalid(format!("{p}.content"), format!("`{p}.content` must be a string or an array of parts, got {}", kind(v)))),
            };
            let tool_calls = crate::tools::tool_calls(m.get("tool_calls"), &p)?;
            let tool_call_id = match m.get("tool_call_id") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(v) => return Err(ApiError::invalid(format!("{p}.tool_call_id"), format!("`{p}.tool_call_id` must be a string, got {}", kind(v)))),
            };
            Ok(Message { role, content, tool_calls, tool_call_id })
        })
        .collect::<Result<Vec<Message>, ApiError>>()
        .and_then(check_tool_results)
}

/// Every `tool` message answers a call made earlier in the conversation.
fn check_tool_results(msgs: Vec<Message>) -> Result<Vec<Message>, ApiError> {
    let mut calls: Vec<&str> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        calls.extend(m.tool_calls.iter().map(|c| c.id.as_str()));
        if m.role != "tool" {
            continue;
        }
        let p = format!("messages[{i}].tool_call_id");
        match &m.tool_call_id {
            None => {
                return Err(ApiError::invalid(
                    &p,
                    format!("`{p}` is required in a tool message"),
                ))
            }
            Some(id) if !calls.contains(&id.as_str()) => {
                return Err(ApiError::invalid(
                    &p,
                    format!(
                    "`{p}` is {id:?}, which matches no tool call of an earlier assistant message"
                ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(msgs)
}

fn prompt(o: &Map<String, Value>) -> Result<PromptInput, ApiError> {
    let bad = |what: String| Err(ApiError::invalid("prompt", what));
    match o.get("prompt") {
        None | Some(Value::Null) => bad("`prompt` is required".into()),
        Some(Value::String(s)) => Ok(PromptInput::Text(s.clone())),
        Some(Value::Array(a)) if a.is_empty() => bad("`prompt` must not be empty".into()),
        Some(Value::Array(a)) => {
            if a.iter().all(Value::is_number) {
                return token_ids(a).map(PromptInput::Tokens);
            }
            match a.as_slice() {
                [Value::String(s)] => Ok(PromptInput::Text(s.clone())),
                [Value::Array(ids)] => token_ids(ids).map(PromptInput::Tokens),
                _ if a.len() > 1 => bad("batched prompts (a list of several prompts) are not supported; send one request per prompt".into()),
                _ => bad("`prompt` must be a string, an array of token ids, or a one-element array of either".into()),
            }
        }
        Some(v) => bad(format!(
            "`prompt` must be a string or an array of token ids, got {}",
            kind(v)
        )),
    }
}

fn token_ids(a: &[Value]) -> Result<Vec<u32>, ApiError> {
    a.iter()
        .map(|v| {
            v.as_u64()
                .and_then(|u| u32::try_from(u).ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "prompt",
                        format!("token ids must be integers in 0..2^32, got {v}"),
                    )
                })
        })
        .collect()
}

fn stops(o: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let v = match o.get("stop") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| match s {
                Value::String(s) => Ok(s.clone()),
                v => Err(ApiError::invalid(
                    "stop",
                    format!("`stop` entries must be strings, got {}", kind(v)),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(ApiError::invalid(
                "stop",
                format!(
                    "`stop` must be a string or an array of strings, got {}",
                    kind(v)
                ),
            ))
        }
    };
    if v.len() > MAX_STOP {
        return Err(ApiError::invalid(
            "stop",
            format!("`stop` takes at most {MAX_STOP} strings, got {}", v.len()),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> Result<SpecChoice, ApiError> {
        let mut o = Map::new();
        o.insert("speculative".into(), v);
        speculative(&o)
    }

    #[test]
    fn the_speculative_field_parses_and_rejects() {
        assert_eq!(speculative(&Map::new()).unwrap(), SpecChoice::ServerDefault);
        assert_eq!(spec(Value::Bool(true)).unwrap(), SpecChoice::ServerDefault);
        assert_eq!(spec(Value::Bool(false)).unwrap(), SpecChoice::Off);
        let ngram = |k, min_n, max_n, adaptive| SpecChoice::Ngram {
            k,
            min_n,
            max_n,
            adaptive,
        };
        assert_eq!(
            spec(serde_json::json!({"k": 3})).unwrap(),
            ngram(3, 2, 4, true)
        );
        assert_eq!(
            spec(serde_json::json!({"k": 6, "min_n": 1, "max_n": 5, "adaptive": false})).unwrap(),
            ngram(6, 1, 5, false)
        );
        for bad in [
            serde_json::json!({"k": 0}),
            serde_json::json!({"k": 33}),
            serde_json::json!({"min_n": 5, "max_n": 2}),
            serde_json::json!({"adaptive": "yes"}),
            serde_json::json!(4),
        ] {
            assert!(spec(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn chat_template_kwargs_are_an_object_of_free_names_on_chat_requests() {
        let parse = |body: Value, e: Endpoint| parse_request(body.to_string().as_bytes(), e);
        let chat = |kw: Value| {
            parse(
                serde_json::json!({"messages": [{"role": "user", "content": "x"}],
                                   "chat_template_kwargs": kw}),
                Endpoint::Chat,
            )
        };
        let ok = chat(serde_json::json!({"enable_thinking": false})).unwrap();
        assert_eq!(ok.chat_template_kwargs["enable_thinking"], false);
        for (kw, word) in [
            (
                serde_json::json!({"messages": []}),
                "chat_template_kwargs.messages",
            ),
            (serde_json::json!([1]), "must be an object"),
        ] {
            let e = chat(kw).unwrap_err();
            assert!(e.to_string().contains(word), "{e}");
        }
        let e = parse(
            serde_json::json!({"prompt": "x", "chat_template_kwargs": {}}),
            Endpoint::Completions,
        )
        .unwrap_err();
        assert!(e.to_string().contains("chat completions only"), "{e}");
    }
}
