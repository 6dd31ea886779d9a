//! Per-choice accumulation: text, tokens, log-probabilities, tool calls, timing metrics, usage.

use std::time::Instant;

use ferrite_engine::{FinishInfo, FinishReason, TokenLogprob};
use ferrite_protocol::response::{
    ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, FunctionCall, FunctionDelta,
    ResponseToolCall, SpecUsage, ToolCallDelta, TopLogprob, Usage,
};
use ferrite_tokenizer::Tokenizer;

use crate::state::AppState;
use crate::tools::parse::{Piece, ToolCallParser};

/// Per-choice accumulation and metric recording.
#[derive(Default)]
pub(super) struct Choice {
    pub(super) text: String,
    pub(super) tokens: usize,
    pub(super) logprobs: Vec<(u32, TokenLogprob)>,
    first: Option<Instant>,
    pub(super) last: Option<Instant>,
    pub(super) finish: Option<FinishInfo>,
    /// Reads tool calls out of the text, when the request offers tools.
    pub(super) tools: Option<ToolCallParser>,
    /// Ids of the calls made so far (`call_…`).
    call_ids: Vec<String>,
}

impl Choice {
    /// A choice of a request; `tools` parses its text for tool calls.
    pub(super) fn new(tools: Option<ToolCallParser>) -> Choice {
        Choice {
            tools,
            ..Choice::default()
        }
    }

    /// New text as it streams: the content delta and the tool-call deltas it makes.
    pub(super) fn deltas(&mut self, text: &str, last: bool) -> (String, Vec<ToolCallDelta>) {
        let Some(p) = &mut self.tools else {
            return (text.to_string(), Vec::new());
        };
        let mut pieces = p.push(text);
        if last {
            pieces.extend(p.finish());
        }
        let mut content = String::new();
        let mut calls = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Content(t) => content.push_str(&t),
                Piece::CallStart { index, name } => {
                    let id = call_id();
                    self.call_ids.push(id.clone());
                    calls.push(ToolCallDelta {
                        index,
                        id: Some(id),
                        r#type: Some("function"),
                        function: FunctionDelta {
                            name: Some(name),
                            arguments: None,
                        },
                    });
                }
                Piece::CallArgs { index, text } => calls.push(ToolCallDelta {
                    index,
                    id: None,
                    r#type: None,
                    function: FunctionDelta {
                        name: None,
                        arguments: Some(text),
                    },
                }),
            }
        }
        (content, calls)
    }

    /// The whole answer: content (`None` when it is only tool calls) and the calls.
    pub(super) fn answer(&mut self) -> (Option<String>, Vec<ResponseToolCall>) {
        if self.tools.is_none() {
            return (Some(self.text.clone()), Vec::new());
        }
        let text = std::mem::take(&mut self.text);
        let (content, deltas) = self.deltas(&text, true);
        self.text = text;
        let mut calls: Vec<ResponseToolCall> = Vec::new();
        for d in deltas {
            match (d.id, d.function.name) {
                (Some(id), Some(name)) => calls.push(ResponseToolCall {
                    id,
                    r#type: "function",
                    function: FunctionCall {
                        name,
                        arguments: String::new(),
                    },
                }),
                _ => {
                    if let (Some(c), Some(a)) = (calls.get_mut(d.index), d.function.arguments) {
                        c.function.arguments.push_str(&a);
                    }
                }
            }
        }
        let only_calls = !calls.is_empty() && content.trim().is_empty();
        (if only_calls { None } else { Some(content) }, calls)
    }

    /// `finish_reason`: `tool_calls` when the model made calls and stopped on its own.
    pub(super) fn finish_reason(&self) -> Option<&'static str> {
        let f = self.finish.as_ref()?;
        let called = self.tools.as_ref().is_some_and(|p| p.calls() > 0);
        Some(match f.reason {
            FinishReason::Stop if called => "tool_calls",
            r => r.as_str(),
        })
    }

    /// Record timing metrics for a token event.
    pub(super) fn on_token(&mut self, s: &AppState, arrival: Instant) {
        let now = Instant::now();
        match self.last {
            None => s.metrics.ttft.observe((now - arrival).as_secs_f64()),
            Some(t) => s.metrics.itl.observe((now - t).as_secs_f64()),
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.tokens += 1;
    }

    pub(super) fn on_finish(&mut self, s: &AppState, arrival: Instant, f: FinishInfo) {
        let m = &s.metrics;
        let now = Instant::now();
        m.e2e.observe((now - arrival).as_secs_f64());
        m.queue.observe(f.queue_time.as_secs_f64());
        m.prefill.observe(f.prefill_time.as_secs_f64());
        m.decode.observe(f.decode_time.as_secs_f64());
        m.inference
            .observe((f.prefill_time + f.decode_time).as_secs_f64());
        if f.completion_tokens > 1 {
            m.tpot
                .observe(f.decode_time.as_secs_f64() / (f.completion_tokens - 1) as f64);
        }
        use std::sync::atomic::Ordering;
        m.prompt_tokens
            .fetch_add(f.prompt_tokens as u64, Ordering::Relaxed);
        m.generation_tokens
            .fetch_add(f.completion_tokens as u64, Ordering::Relaxed);
        m.finished(f.reason.as_str());
        self.finish = Some(f);
    }
}

pub(super) fn usage_of(prompt: usize, choices: &[Choice]) -> Usage {
    let completion = choices.iter().map(|c| c.tokens).sum();
    let cached = choices
        .iter()
        .filter_map(|c| c.finish.as_ref().map(|f| f.cached_tokens))
        .min()
        .unwrap_or(0);
    let mut u = Usage::new(prompt, completion, cached);
    let (drafted, accepted) = choices
        .iter()
        .filter_map(|c| c.finish.as_ref())
        .fold((0, 0), |(d, a), f| {
            (d + f.spec_draft_tokens, a + f.spec_accepted_tokens)
        });
    if drafted > 0 {
        u.speculative = Some(SpecUsage {
            draft_tokens: drafted,
            accepted_tokens: accepted,
        });
    }
    u
}

fn token_str(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_default()
}

pub(super) fn chat_logprobs(tok: &Tokenizer, lps: &[(u32, TokenLogprob)]) -> ChatLogprobs {
    ChatLogprobs {
        content: lps
            .iter()
            .map(|(id, lp)| {
                let t = token_str(tok, *id);
                ChatTokenLogprob {
                    bytes: t.as_bytes().to_vec(),
                    token: t,
                    logprob: lp.logprob,
                    top_logprobs: lp
                        .top
                        .iter()
                        .map(|(a, l)| {
                            let t = token_str(tok, *a);
                            TopLogprob {
                                bytes: t.as_bytes().to_vec(),
                                token: t,
                                logprob: *l,
                            }
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}

pub(super) fn completion_logprobs(
    tok: &Tokenizer,
    lps: &[(u32, TokenLogprob)],
    mut offset: usize,
) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for (id, lp) in lps {
        let t = token_str(tok, *id);
        out.text_offset.push(offset);
        offset += t.len();
        out.tokens.push(t);
        out.token_logprobs.push(lp.logprob);
        out.top_logprobs.push(
            lp.top
                .iter()
                .map(|(a, l)| (token_str(tok, *a), serde_json::json!(l)))
                .collect(),
        );
    }
    out
}

/// A tool call's id: unique within the server's lifetime.
fn call_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("call_{}", super::request_suffix_with(n))
}
