//! What each logical task sends: synthetic unique prompts of an exact length, the same with a
//! shared prefix, a JSONL prompt file, or agent tasks (chains of calls, `agent`). Presets name
//! the standard shapes.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::agent::AgentWorkload;
use crate::{Error, Result};

/// A prompt file loaded for `run`: its path (for the report) and the chat messages per prompt.
#[derive(Debug, Clone)]
pub struct PromptFile {
    /// Where it came from.
    pub path: String,
    /// One `messages` array per prompt (a raw `prompt` becomes one user message).
    pub messages: Arc<Vec<Value>>,
    /// The prompts as read (with their `expect` patterns, for `bench compare`'s quality).
    pub prompts: Arc<Vec<crate::quality::QualityPrompt>>,
}

impl PromptFile {
    /// Read `text` (from `path`) in the `bench quality` format.
    pub fn parse(text: &str, path: &str) -> Result<PromptFile> {
        Ok(Self::from_prompts(
            crate::quality::parse_prompts(text, path)?,
            path,
        ))
    }

    /// Read the prompt file at `path`.
    pub fn read(path: &std::path::Path) -> Result<PromptFile> {
        let prompts = crate::quality::read_prompts(path)?;
        Ok(Self::from_prompts(prompts, &path.display().to_string()))
    }

    fn from_prompts(prompts: Vec<crate::quality::QualityPrompt>, path: &str) -> PromptFile {
        let messages = prompts
            .iter()
            .map(|p| match (&p.prompt, &p.messages) {
                (Some(t), _) => json!([{"role": "user", "content": t}]),
                (None, m) => Value::Array(m.clone().unwrap_or_default()),
            })
            .collect();
        PromptFile {
            path: path.to_string(),
            messages: Arc::new(messages),
            prompts: Arc::new(prompts),
        }
    }
}

/// A named workload shape: prompt and output tokens, and the concurrency it is defined at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// Name as given to `--preset`.
    pub name: &'static str,
    /// Prompt tokens per request.
    pub input_tokens: usize,
    /// Output tokens per request.
    pub output_tokens: usize,
    /// Requests in flight.
    pub concurrency: usize,
}

/// Workload presets: the reader's "10K input / 1,500 output" claim shape and Artificial
/// Analysis's four single-stream workloads plus its 10-way parallel one (benchmarking.md §6).
pub const PRESETS: [Preset; 6] = [
    Preset {
        name: "10k-1500",
        input_tokens: 10_000,
        output_tokens: 1_500,
        concurrency: 1,
    },
    Preset {
        name: "aa-100",
        input_tokens: 100,
        output_tokens: 300,
        concurrency: 1,
    },
    Preset {
        name: "aa-1k",
        input_tokens: 1_000,
        output_tokens: 1_000,
        concurrency: 1,
    },
    Preset {
        name: "aa-10k",
        input_tokens: 10_000,
        output_tokens: 1_500,
        concurrency: 1,
    },
    Preset {
        name: "aa-100k",
        input_tokens: 100_000,
        output_tokens: 2_000,
        concurrency: 1,
    },
    Preset {
        name: "aa-parallel",
        input_tokens: 1_000,
        output_tokens: 1_000,
        concurrency: 10,
    },
];

/// The preset called `name`, or an error listing them.
pub fn preset(name: &str) -> Result<Preset> {
    PRESETS
        .iter()
        .copied()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            Error::Config(format!(
                "unknown preset {name:?} (expected one of {})",
                names.join(", ")
            ))
        })
}

#[cfg(test)]
mod preset_tests {
    #[test]
    fn presets_are_the_documented_shapes() {
        let p = super::preset("aa-10k").unwrap();
        assert_eq!(
            (p.input_tokens, p.output_tokens, p.concurrency),
            (10_000, 1_500, 1)
        );
        assert_eq!(super::preset("aa-parallel").unwrap().concurrency, 10);
        let e = super::preset("aa-1m").unwrap_err().to_string();
        assert!(e.contains("expected one of 10k-1500, aa-100"), "{e}");
    }
}

/// Words that are one token in common BPE vocabularies (with their leading space), so the
/// prompt length in tokens tracks the word count.
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "it", "that", "was", "for", "on", "are", "with", "as",
    "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "word", "but",
    "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use",
    "your", "how", "said", "an", "each", "she", "which", "do", "their", "time", "if", "will",
    "way", "about", "many", "then", "them", "write", "would", "like", "so", "these", "her", "long",
    "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go",
];

/// A unique prompt of `words` words (different from the first word on, so prefix caches cannot
/// serve it).
pub fn synthetic_prompt(seed: u64, index: usize, words: usize) -> String {
    let mut x = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(words);
    for _ in 0..words {
        let r = crate::arrivals::next_u64(&mut x);
        out.push(WORDS[(r % WORDS.len() as u64) as usize]);
    }
    out.join(" ")
}

/// One call of a task: how many tokens to ask for, how many copies to send at once, how long
/// the client pauses after the answers (tool execution, a user thinking), and what the next
/// call adds to the conversation after this call's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPlan {
    /// `max_tokens` of the call.
    pub max_tokens: usize,
    /// Copies sent concurrently (parallel sub-agents); the conversation continues with the
    /// first copy's answer.
    pub fan_out: usize,
    /// Client-side pause after the call, counted in the task's wall-clock.
    pub think_ms: f64,
    /// Messages appended after the assistant's answer before the next call.
    pub append: Vec<Value>,
    /// The scripted tool result: when the answer made tool calls, each gets a `tool` message
    /// with this text instead of `append`.
    pub tool_result: Option<String>,
}

/// What one logical task sends: a starting conversation and a chain of calls. A plain request
/// is a task of one call.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPlan {
    /// Task name (agent task files), for the report.
    pub name: Option<String>,
    /// The conversation the first call sends.
    pub messages: Vec<Value>,
    /// The calls, in order.
    pub calls: Vec<CallPlan>,
    /// Tools every call offers (OpenAI's `tools` array), and its `tool_choice`.
    pub tools: Option<(Value, Value)>,
}

impl TaskPlan {
    /// One call with `messages` and `max_tokens`.
    pub fn single(messages: Vec<Value>, max_tokens: usize) -> TaskPlan {
        TaskPlan {
            name: None,
            messages,
            calls: vec![CallPlan {
                max_tokens,
                fan_out: 1,
                think_ms: 0.0,
                append: vec![],
                tool_result: None,
            }],
            tools: None,
        }
    }
}

/// The user message of a prompt text.
pub fn user(text: impl Into<String>) -> Value {
    json!({"role": "user", "content": text.into()})
}

/// Where task `i`'s prompts come from (`--workload`).
#[derive(Debug, Clone)]
pub enum Workload {
    /// Unique synthetic prompts of the requested length (prefix caches cannot help).
    Synthetic,
    /// Every prompt starts with the same `prefix_tokens` words, then a unique suffix (what a
    /// shared system prompt or few-shot header looks like to a prefix cache).
    SharedPrefix {
        /// Words of the shared part (capped at the prompt length).
        prefix_tokens: usize,
    },
    /// Prompts of a JSONL file, cycled.
    File(PromptFile),
    /// Chains of calls.
    Agent(AgentWorkload),
}

impl Workload {
    /// Parse `synthetic`, `shared-prefix`, `file:PATH` or `agent:PATH` (files are read now).
    /// `shared-prefix` shares half the prompt unless `prefix_tokens` says otherwise.
    pub fn parse(spec: &str, input_tokens: usize, prefix_tokens: Option<usize>) -> Result<Self> {
        if let Some(p) = spec.strip_prefix("file:") {
            return Ok(Workload::File(PromptFile::read(std::path::Path::new(p))?));
        }
        if let Some(p) = spec.strip_prefix("agent:") {
            return Ok(Workload::Agent(AgentWorkload::read(std::path::Path::new(
                p,
            ))?));
        }
        match spec {
            "synthetic" => Ok(Workload::Synthetic),
            "shared-prefix" => Ok(Workload::SharedPrefix {
                prefix_tokens: prefix_tokens.unwrap_or(input_tokens / 2),
            }),
            _ => Err(Error::Config(format!(
                "unknown workload {spec:?} (expected synthetic, shared-prefix, file:PATH or agent:PATH)"
            ))),
        }
    }

    /// Whether tasks are chains of calls (per-task results are the point).
    pub fn is_agent(&self) -> bool {
        matches!(self, Workload::Agent(_))
    }

    /// Whether some task offers tools (agent task files with `tools`).
    pub fn offers_tools(&self) -> bool {
        match self {
            Workload::Agent(a) => a.offers_tools(),
            _ => false,
        }
    }

    /// Whether prompts are sized by `--input-tokens` (synthetic text).
    pub fn is_sized(&self) -> bool {
        match self {
            Workload::Synthetic | Workload::SharedPrefix { .. } => true,
            Workload::File(_) => false,
            Workload::Agent(a) => a.is_synthetic(),
        }
    }

    /// Task `i`: `words` is the synthetic prompt length in words (input tokens less the
    /// template's own tokens), `max_tokens` the default output length.
    pub fn plan(&self, seed: u64, i: usize, words: usize, max_tokens: usize) -> TaskPlan {
        match self {
            Workload::Synthetic => {
                TaskPlan::single(vec![user(synthetic_prompt(seed, i, words))], max_tokens)
            }
            Workload::SharedPrefix { prefix_tokens } => {
                let shared = (*prefix_tokens).min(words);
                let prefix = synthetic_prompt(seed ^ 0x5A5A, usize::MAX - 1, shared);
                let suffix = synthetic_prompt(seed, i, words - shared);
                let text = [prefix, suffix]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                TaskPlan::single(vec![user(text)], max_tokens)
            }
            Workload::File(f) => {
                let m = f.messages[i % f.messages.len()].clone();
                TaskPlan::single(m.as_array().cloned().unwrap_or_default(), max_tokens)
            }
            Workload::Agent(a) => a.plan(seed, i, words, max_tokens),
        }
    }

    /// Warm-up request `k` (not recorded). With a shared prefix it shares the measured
    /// prefix, so the measured requests find it cached (as a warmed-up deployment would) and
    /// none is cold; its suffix is its own, so no measured prompt is cached whole. Otherwise
    /// an unrelated synthetic prompt, which only warms the connection and the server.
    pub fn warm_up_plan(&self, seed: u64, k: usize, words: usize, max_tokens: usize) -> TaskPlan {
        match self {
            // Indices from the top, clear of the tasks' 0.. and the prefix's own.
            Workload::SharedPrefix { .. } => self.plan(seed, usize::MAX - 2 - k, words, max_tokens),
            _ => TaskPlan::single(vec![user(synthetic_prompt(seed ^ 2, k, words))], max_tokens),
        }
    }

    /// What the warm-up did, for the report.
    pub fn describe_warm_up(&self, warmup: usize) -> String {
        match (self, warmup) {
            (_, 0) => "none".into(),
            (Workload::SharedPrefix { .. }, n) => format!(
                "{n} request(s) sharing the measured prefix (it is cached before the first measured request), not recorded"
            ),
            (_, n) => format!("{n} unrelated synthetic request(s), not recorded"),
        }
    }

    /// What the workload was, for the report (`requests`: tasks sent).
    pub fn describe(&self, requests: usize) -> String {
        match self {
            Workload::Synthetic => "synthetic unique prompts (chat), ignore_eos".into(),
            Workload::SharedPrefix { prefix_tokens } => format!(
                "synthetic prompts sharing their first {prefix_tokens} words, unique after (chat), ignore_eos"
            ),
            Workload::File(f) => format!(
                "prompt file {} ({} prompts{}), ignore_eos",
                f.path,
                f.messages.len(),
                if requests > f.messages.len() {
                    ", cycled: repeats may be served from prefix caches"
                } else {
                    ""
                }
            ),
            Workload::Agent(a) => a.describe(requests),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefix_prompts_share_exactly_the_prefix() {
        let w = Workload::parse("shared-prefix", 100, Some(30)).unwrap();
        let text = |i| {
            let p = w.plan(1, i, 50, 8);
            p.messages[0]["content"].as_str().unwrap().to_string()
        };
        let (a, b) = (text(0), text(1));
        let (wa, wb): (Vec<&str>, Vec<&str>) = (a.split(' ').collect(), b.split(' ').collect());
        assert_eq!((wa.len(), wb.len()), (50, 50));
        assert_eq!(wa[..30], wb[..30]);
        assert_ne!(wa[30..], wb[30..]);
        // The synthetic workload shares nothing from the first word on (with this seed).
        let s = Workload::Synthetic;
        let first = |i| {
            s.plan(1, i, 50, 8).messages[0]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_ne!(first(0).split(' ').next(), first(1).split(' ').next());
        let e = Workload::parse("cached", 1, None).unwrap_err().to_string();
        assert!(e.contains("expected synthetic, shared-prefix"), "{e}");
    }
}
