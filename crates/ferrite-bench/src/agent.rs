//! Agent tasks: a task is a chain of calls, each sending the conversation so far plus what the
//! previous call's tool returned (or the user's next turn), with optional think time and
//! fan-out. Per-task wall-clock is the result that matters to an agent's user.
//!
//! ## Task file format (`--workload agent:FILE`, schema `ferrite-bench/agent-tasks/v1`)
//!
//! ```json
//! {
//!   "schema": "ferrite-bench/agent-tasks/v1",
//!   "tasks": [
//!     {
//!       "name": "fix-failing-test",
//!       "messages": [{"role": "system", "content": "You are a coding agent."},
//!                    {"role": "user", "content": "The test in parser.rs fails; fix it."}],
//!       "tools": [{"type": "function", "function": {"name": "run", "parameters": {...}}}],
//!       "calls": [
//!         {"max_tokens": 128, "tool_result": "error[E0308]: mismatched types ...", "think_ms": 300},
//!         {"max_tokens": 128, "fan_out": 3, "tool_result_tokens": 400},
//!         {"max_tokens": 256, "user": "Summarize the change."},
//!         {"max_tokens": 256}
//!       ]
//!     }
//!   ]
//! }
//! ```
//!
//! - `messages` (or `"prompt": "text"`, one user message) is what the first call sends.
//! - Each call: `max_tokens` (default `--output-tokens`), `fan_out` (copies sent at once,
//!   default 1; the conversation continues with the first copy's answer), `think_ms` (client
//!   pause after the answers, default 0: tool execution or a user reading), and what the next
//!   call appends after the assistant's answer: `tool_result` (text), `tool_result_tokens`
//!   (that many synthetic words) or `user` (the next user turn: multi-turn chat). Every call but
//!   the last names one of them; the last names none.
//! - `tools` (OpenAI's array) and `tool_choice` (default `auto`) make every call of the task
//!   offer those tools. When an answer calls tools, the next call sends the assistant's
//!   `tool_calls` and one `tool` message per call (`tool_call_id` set) carrying the scripted
//!   result; the report checks every call against its tool's schema (`tool_calls.valid_rate`).
//! - Otherwise (no tools, or an answer without calls) a result is sent as a user message
//!   starting `Tool result:`, which servers accept on any chat template.
//!
//! `--agent-calls N --agent-tool-tokens T [--agent-think-ms MS]` generates tasks instead: a
//! synthetic prompt of `--input-tokens`, then N calls of `--output-tokens`, each but the last
//! followed by a synthetic tool result of T words.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::workload::{synthetic_prompt, user, CallPlan, TaskPlan};
use crate::{Error, Result};

/// The schema id task files may carry.
pub const TASK_SCHEMA: &str = "ferrite-bench/agent-tasks/v1";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    #[serde(default)]
    schema: Option<String>,
    tasks: Vec<TaskSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskSpec {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Value>>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    calls: Vec<CallSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallSpec {
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    fan_out: Option<usize>,
    #[serde(default)]
    think_ms: Option<f64>,
    #[serde(default)]
    tool_result: Option<String>,
    #[serde(default)]
    tool_result_tokens: Option<usize>,
    #[serde(default)]
    user: Option<String>,
}

/// Agent tasks: from a file, or generated.
#[derive(Debug, Clone)]
pub enum AgentWorkload {
    /// Tasks of a task file, cycled.
    File {
        /// Where they came from.
        path: String,
        /// The validated tasks.
        tasks: Arc<Vec<TaskPlanSpec>>,
    },
    /// `--agent-calls` / `--agent-tool-tokens` / `--agent-think-ms`.
    Synthetic {
        /// Calls per task.
        calls: usize,
        /// Words of each synthetic tool result.
        tool_tokens: usize,
        /// Pause after each call but the last.
        think_ms: f64,
    },
}

/// A validated task of a file; synthetic tool results are filled in per task instance.
#[derive(Debug, Clone)]
pub struct TaskPlanSpec {
    name: Option<String>,
    messages: Vec<Value>,
    calls: Vec<CallSpec>,
    tools: Option<(Value, Value)>,
}

fn bad(source: &str, task: usize, what: String) -> Error {
    Error::Config(format!("{source}: task {task}: {what}"))
}

impl AgentWorkload {
    /// Read and validate the task file at `path`.
    pub fn read(path: &Path) -> Result<AgentWorkload> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("agent task file {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and validate a task file's text (`source` names it in errors).
    pub fn parse(text: &str, source: &str) -> Result<AgentWorkload> {
        let file: TaskFile = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("{source}: not an agent task file: {e}")))?;
        if let Some(s) = file.schema.as_deref().filter(|s| *s != TASK_SCHEMA) {
            return Err(Error::Config(format!(
                "{source}: schema {s:?} is not {TASK_SCHEMA:?}"
            )));
        }
        if file.tasks.is_empty() {
            return Err(Error::Config(format!("{source}: no tasks")));
        }
        let mut tasks = Vec::new();
        for (t, spec) in file.tasks.into_iter().enumerate() {
            let messages = match (spec.messages, spec.prompt) {
                (Some(m), None) if !m.is_empty() => m,
                (None, Some(p)) => vec![user(p)],
                _ => {
                    return Err(bad(
                        source,
                        t,
                        "give either a non-empty \"messages\" array or a \"prompt\"".into(),
                    ))
                }
            };
            if spec.calls.is_empty() {
                return Err(bad(source, t, "no calls".into()));
            }
            let last = spec.calls.len() - 1;
            for (k, c) in spec.calls.iter().enumerate() {
                let appends = [
                    c.tool_result.is_some(),
                    c.tool_result_tokens.is_some(),
                    c.user.is_some(),
                ]
                .iter()
                .filter(|x| **x)
                .count();
                let why = if appends > 1 {
                    Some("name only one of tool_result, tool_result_tokens, user")
                } else if appends == 0 && k < last {
                    Some("needs tool_result, tool_result_tokens or user (what the next call adds)")
                } else if appends == 1 && k == last {
                    Some("is the last call; what it appends would never be sent")
                } else if c.fan_out == Some(0) || c.max_tokens == Some(0) {
                    Some("fan_out and max_tokens must be at least 1")
                } else if c.think_ms.is_some_and(|t| !(t.is_finite() && t >= 0.0)) {
                    Some("think_ms must be a non-negative number")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(bad(source, t, format!("call {k} {why}")));
                }
            }
            let tools = match (spec.tools, spec.tool_choice) {
                (None, None) => None,
                (None, Some(_)) => return Err(bad(source, t, "tool_choice needs tools".into())),
                (Some(ts), _) if ts.is_empty() => {
                    return Err(bad(source, t, "tools is empty".into()))
                }
                (Some(ts), choice) => {
                    if let Some(i) = ts.iter().position(|t| !t["function"]["name"].is_string()) {
                        return Err(bad(
                            source,
                            t,
                            format!("tools[{i}] needs {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"),
                        ));
                    }
                    Some((
                        Value::Array(ts),
                        choice.unwrap_or_else(|| Value::from("auto")),
                    ))
                }
            };
            tasks.push(TaskPlanSpec {
                name: spec.name,
                messages,
                calls: spec.calls,
                tools,
            });
        }
        Ok(AgentWorkload::File {
            path: source.to_string(),
            tasks: Arc::new(tasks),
        })
    }

    /// Generated tasks; refuses zero calls or a bad think time.
    pub fn synthetic(calls: usize, tool_tokens: usize, think_ms: f64) -> Result<AgentWorkload> {
        if calls == 0 {
            return Err(Error::Config("--agent-calls must be at least 1".into()));
        }
        if !(think_ms.is_finite() && think_ms >= 0.0) {
            return Err(Error::Config(format!(
                "--agent-think-ms must be a non-negative number, got {think_ms}"
            )));
        }
        Ok(AgentWorkload::Synthetic {
            calls,
            tool_tokens,
            think_ms,
        })
    }

    /// Whether some task offers tools.
    pub fn offers_tools(&self) -> bool {
        match self {
            AgentWorkload::File { tasks, .. } => tasks.iter().any(|t| t.tools.is_some()),
            AgentWorkload::Synthetic { .. } => false,
        }
    }

    /// Whether the first prompt is sized by `--input-tokens`.
    pub fn is_synthetic(&self) -> bool {
        matches!(self, AgentWorkload::Synthetic { .. })
    }

    /// Task `i` (file tasks are cycled); synthetic text is seeded by task and call.
    pub fn plan(&self, seed: u64, i: usize, words: usize, max_tokens: usize) -> TaskPlan {
        let tool_text =
            |k: usize, n: usize| synthetic_prompt(seed ^ 0x7001, i.wrapping_mul(1009) + k, n);
        let tool = |k: usize, n: usize| user(format!("Tool result:\n{}", tool_text(k, n)));
        match self {
            AgentWorkload::Synthetic {
                calls,
                tool_tokens,
                think_ms,
            } => TaskPlan {
                name: None,
                messages: vec![user(synthetic_prompt(seed, i, words))],
                calls: (0..*calls)
                    .map(|k| {
                        let last = k + 1 == *calls;
                        CallPlan {
                            max_tokens,
                            fan_out: 1,
                            think_ms: if last { 0.0 } else { *think_ms },
                            append: if last {
                                vec![]
                            } else {
                                vec![tool(k, *tool_tokens)]
                            },
                            tool_result: None,
                        }
                    })
                    .collect(),
                tools: None,
            },
            AgentWorkload::File { tasks, .. } => {
                let t = &tasks[i % tasks.len()];
                TaskPlan {
                    name: t.name.clone(),
                    messages: t.messages.clone(),
                    calls: t
                        .calls
                        .iter()
                        .enumerate()
                        .map(|(k, c)| CallPlan {
                            max_tokens: c.max_tokens.unwrap_or(max_tokens),
                            fan_out: c.fan_out.unwrap_or(1),
                            think_ms: c.think_ms.unwrap_or(0.0),
                            append: match (&c.tool_result, c.tool_result_tokens, &c.user) {
                                (Some(r), _, _) => vec![user(format!("Tool result:\n{r}"))],
                                (_, Some(n), _) => vec![tool(k, n)],
                                (_, _, Some(u)) => vec![user(u.clone())],
                                _ => vec![],
                            },
                            tool_result: match (&c.tool_result, c.tool_result_tokens) {
                                (Some(r), _) => Some(r.clone()),
                                (_, Some(n)) => Some(tool_text(k, n)),
                                _ => None,
                            },
                        })
                        .collect(),
                    tools: t.tools.clone(),
                }
            }
        }
    }

    /// For the report.
    pub fn describe(&self, tasks: usize) -> String {
        match self {
            AgentWorkload::Synthetic {
                calls,
                tool_tokens,
                think_ms,
            } => format!(
                "synthetic agent tasks: {calls} calls each, a {tool_tokens}-word tool result and {think_ms} ms think time between calls, ignore_eos"
            ),
            AgentWorkload::File { path, tasks: t } => format!(
                "agent task file {path} ({} tasks{}), ignore_eos",
                t.len(),
                if tasks > t.len() { ", cycled" } else { "" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"schema": "ferrite-bench/agent-tasks/v1", "tasks": [
        {"name": "t", "prompt": "fix it",
         "calls": [{"max_tokens": 4, "tool_result": "ok", "think_ms": 5},
                   {"fan_out": 2, "tool_result_tokens": 3},
                   {"max_tokens": 6, "user": "thanks"},
                   {}]}]}"#;

    #[test]
    fn task_files_become_call_chains() {
        let w = AgentWorkload::parse(FILE, "f.json").unwrap();
        let p = w.plan(1, 0, 10, 9);
        assert_eq!(p.name.as_deref(), Some("t"));
        assert_eq!(p.messages, vec![user("fix it")]);
        let mt: Vec<usize> = p.calls.iter().map(|c| c.max_tokens).collect();
        assert_eq!(mt, [4, 9, 6, 9]);
        assert_eq!(p.calls[1].fan_out, 2);
        assert_eq!(p.calls[0].think_ms, 5.0);
        assert_eq!(p.calls[0].append, vec![user("Tool result:\nok")]);
        let tool = p.calls[1].append[0]["content"].as_str().unwrap();
        assert_eq!(tool.split_whitespace().count(), 2 + 3, "{tool}");
        assert_eq!(p.calls[2].append, vec![user("thanks")]);
        assert!(p.calls[3].append.is_empty());
    }

    #[test]
    fn bad_task_files_are_refused_with_the_reason() {
        let cases = [
            ("{\"tasks\": []}", "no tasks"),
            ("[1]", "not an agent task file"),
            (
                r#"{"tasks": [{"prompt": "x", "calls": [{"max_tokens": 1}, {}]}]}"#,
                "task 0: call 0 needs tool_result",
            ),
            (
                r#"{"tasks": [{"prompt": "x", "calls": [{"user": "y"}]}]}"#,
                "call 0 is the last call",
            ),
            (
                r#"{"tasks": [{"prompt": "x", "calls": [{"fan_out": 0}]}]}"#,
                "at least 1",
            ),
            (
                r#"{"tasks": [{"prompt": "x", "calls": [{"think_ms": -1}]}]}"#,
                "non-negative",
            ),
            (
                r#"{"tasks": [{"messages": [], "calls": [{}]}]}"#,
                "non-empty \"messages\"",
            ),
            (
                r#"{"tasks": [{"prompt": "x", "calls": [{"sleep": 1}]}]}"#,
                "unknown field `sleep`",
            ),
            (
                r#"{"schema": "v0", "tasks": [{"prompt": "x", "calls": [{}]}]}"#,
                "is not \"ferrite-bench/agent-tasks/v1\"",
            ),
        ];
        for (text, want) in cases {
            let e = AgentWorkload::parse(text, "f.json")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn synthetic_tasks_have_the_asked_shape() {
        let w = AgentWorkload::synthetic(3, 7, 20.0).unwrap();
        let p = w.plan(5, 2, 11, 8);
        assert_eq!(
            p.messages[0]["content"]
                .as_str()
                .unwrap()
                .split(' ')
                .count(),
            11
        );
        assert_eq!(p.calls.len(), 3);
        assert_eq!(
            p.calls.iter().map(|c| c.think_ms).collect::<Vec<_>>(),
            [20.0, 20.0, 0.0]
        );
        assert!(p.calls[2].append.is_empty());
        // "Tool result:" is two words, then the 7 synthetic ones.
        let t = p.calls[0].append[0]["content"].as_str().unwrap();
        assert_eq!(t.split_whitespace().count(), 9);
        assert!(AgentWorkload::synthetic(0, 1, 0.0).is_err());
        assert!(AgentWorkload::synthetic(1, 1, f64::NAN).is_err());
    }
}
