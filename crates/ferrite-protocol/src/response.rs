//! Response bodies and streaming chunks (OpenAI shapes, metrics-and-api.md §3–4).

use serde::Serialize;

/// Token accounting. `total = prompt + completion`, `cached ≤ prompt`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Prompt tokens after templating.
    pub prompt_tokens: usize,
    /// Generated tokens over all choices.
    pub completion_tokens: usize,
    /// Sum of the two.
    pub total_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub prompt_tokens_details: PromptTokensDetails,
    /// Speculative decoding counts (extension; absent when no drafts were verified).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speculative: Option<SpecUsage>,
}

/// `usage.speculative`: drafts verified and accepted for this request (rejected drafts are
/// never billed: `completion_tokens` counts emitted tokens only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpecUsage {
    /// Draft tokens verified.
    pub draft_tokens: usize,
    /// Draft tokens accepted.
    pub accepted_tokens: usize,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PromptTokensDetails {
    /// Tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

impl Usage {
    /// Usage from its parts.
    pub fn new(prompt: usize, completion: usize, cached: usize) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: cached,
            },
            speculative: None,
        }
    }
}

/// One alternative token (chat logprobs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopLogprob {
    /// Token text.
    pub token: String,
    /// Log-probability.
    pub logprob: f32,
    /// UTF-8 bytes of the token.
    pub bytes: Vec<u8>,
}

/// A generated token's log-probability (chat logprobs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTokenLogprob {
    /// Token text.
    pub token: String,
    /// Log-probability.
    pub logprob: f32,
    /// UTF-8 bytes of the token.
    pub bytes: Vec<u8>,
    /// Most likely alternatives.
    pub top_logprobs: Vec<TopLogprob>,
}

/// `choices[i].logprobs` of a chat completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Vec<ChatTokenLogprob>,
}

/// `choices[i].logprobs` of a (legacy) completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompletionLogprobs {
    /// Token texts.
    pub tokens: Vec<String>,
    /// Their log-probabilities.
    pub token_logprobs: Vec<f32>,
    /// Alternatives per position, text → log-probability.
    pub top_logprobs: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Character offset of each token in the choice's text.
    pub text_offset: Vec<usize>,
}

/// Assistant message of a non-streaming chat choice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// Generated text; `null` when the answer is only tool calls.
    pub content: Option<String>,
    /// Tool calls, when the model made any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ResponseToolCall>,
}

/// A tool call in an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseToolCall {
    /// Call id (`call_…`), which the client's `tool` message refers to.
    pub id: String,
    /// Always `function`.
    pub r#type: &'static str,
    /// The call.
    pub function: FunctionCall,
}

/// Name and arguments of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

/// A streamed piece of a tool call: the first carries `id`, `type` and the name; later ones
/// carry increments of the argument text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCallDelta {
    /// Which call of the choice (0, 1, …).
    pub index: usize,
    /// Call id, on the call's first delta.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, on the call's first delta.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#type: Option<&'static str>,
    /// Name and/or argument text.
    pub function: FunctionDelta,
}

/// `function` of a [`ToolCallDelta`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FunctionDelta {
    /// The name, on the call's first delta.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// More argument text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// A non-streaming chat choice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChoice {
    /// Choice index.
    pub index: usize,
    /// The reply.
    pub message: AssistantMessage,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// `stop`, `length` or `tool_calls`.
    pub finish_reason: Option<&'static str>,
}

/// `/v1/chat/completions` response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletion {
    /// Request id.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Served model name.
    pub model: String,
    /// Build and model identity.
    pub system_fingerprint: String,
    /// Choices.
    pub choices: Vec<ChatChoice>,
    /// Token accounting.
    pub usage: Usage,
}

/// A non-streaming completion choice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionChoice {
    /// Choice index.
    pub index: usize,
    /// Generated text (after the prompt when `echo`).
    pub text: String,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<CompletionLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: Option<&'static str>,
}

/// `/v1/completions` response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    /// Request id.
    pub id: String,
    /// `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Served model name.
    pub model: String,
    /// Build and model identity.
    pub system_fingerprint: String,
    /// Choices.
    pub choices: Vec<CompletionChoice>,
    /// Token accounting.
    pub usage: Usage,
}

/// `delta` of a chat chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Delta {
    /// `assistant` on the first chunk of a choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool-call pieces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// One choice inside a chat chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkChoice {
    /// Choice index.
    pub index: usize,
    /// What changed.
    pub delta: Delta,
    /// Log-probabilities of this chunk's tokens.
    pub logprobs: Option<ChatLogprobs>,
    /// Set on the last chunk of a choice.
    pub finish_reason: Option<&'static str>,
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunk {
    /// Request id (same on every chunk).
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Served model name.
    pub model: String,
    /// Build and model identity.
    pub system_fingerprint: String,
    /// Choices (empty on the usage chunk).
    pub choices: Vec<ChunkChoice>,
    /// `null` on every chunk but the last when `include_usage`; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

/// One choice inside a completion chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionChunkChoice {
    /// Choice index.
    pub index: usize,
    /// New text.
    pub text: String,
    /// Log-probabilities of this chunk's tokens.
    pub logprobs: Option<CompletionLogprobs>,
    /// Set on the last chunk of a choice.
    pub finish_reason: Option<&'static str>,
}

/// Streaming `text_completion` chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionChunk {
    /// Request id.
    pub id: String,
    /// `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Served model name.
    pub model: String,
    /// Build and model identity.
    pub system_fingerprint: String,
    /// Choices (empty on the usage chunk).
    pub choices: Vec<CompletionChunkChoice>,
    /// As in [`ChatChunk::usage`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}
