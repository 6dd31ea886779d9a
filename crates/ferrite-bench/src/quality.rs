//! Answer quality: do two endpoints (or two models) give the same greedy answers? Used by
//! `ferrite bench quality` over HTTP and by `ferrite eval greedy` in process, so both read the same
//! prompt files and compute the same numbers.
//!
//! Prompt file: one JSON object per line, `{"prompt": "..."}` (a raw completion) or
//! `{"messages": [...]}` (a chat), with an optional `"expect": "regex"` that a correct answer
//! matches, and for chats optional `"tools"` / `"tool_choice"` (then the answers' tool calls are
//! compared too). Blank lines are skipped; errors name the line.

use std::time::Instant;

use serde_json::{json, Value};

use crate::{Error, Result};

/// One prompt of a quality set.
#[derive(Debug, Clone)]
pub struct QualityPrompt {
    /// 1-based line in the file.
    pub line: usize,
    /// Raw prompt text.
    pub prompt: Option<String>,
    /// Chat messages (OpenAI shape).
    pub messages: Option<Vec<Value>>,
    /// What a correct answer matches.
    pub expect: Option<regex::Regex>,
    /// Tools offered (OpenAI's array) and `tool_choice`, for chats.
    pub tools: Option<(Value, Value)>,
}

/// Parse a prompt file's text; `source` names it in errors.
pub fn parse_prompts(text: &str, source: &str) -> Result<Vec<QualityPrompt>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{source}:{}", i + 1);
        let v: Value = serde_json::from_str(line)
            .map_err(|e| Error::Config(format!("{at}: not a JSON object ({e})")))?;
        let prompt = v.get("prompt").map(|p| p.as_str().map(str::to_string));
        let messages = v.get("messages").map(|m| m.as_array().cloned());
        let (prompt, messages) = match (prompt, messages) {
            (Some(Some(p)), None) => (Some(p), None),
            (None, Some(Some(m))) if !m.is_empty() => (None, Some(m)),
            _ => {
                return Err(Error::Config(format!(
                    "{at}: give exactly one of \"prompt\" (a string) or \"messages\" (a \
                     non-empty array)"
                )))
            }
        };
        let expect = match v.get("expect") {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) => Some(
                regex::Regex::new(r)
                    .map_err(|e| Error::Config(format!("{at}: bad \"expect\" regex: {e}")))?,
            ),
            Some(_) => return Err(Error::Config(format!("{at}: \"expect\" must be a string"))),
        };
        let tools = match (v.get("tools"), &messages) {
            (None | Some(Value::Null), _) => None,
            (Some(Value::Array(t)), Some(_)) if !t.is_empty() => Some((
                Value::Array(t.clone()),
                v.get("tool_choice")
                    .cloned()
                    .unwrap_or_else(|| json!("auto")),
            )),
            _ => {
                return Err(Error::Config(format!(
                    "{at}: \"tools\" must be a non-empty array, with \"messages\""
                )))
            }
        };
        out.push(QualityPrompt {
            line: i + 1,
            prompt,
            messages,
            expect,
            tools,
        });
    }
    if out.is_empty() {
        return Err(Error::Config(format!("{source} has no prompts")));
    }
    Ok(out)
}

/// Read and parse the prompt file at `path`.
pub fn read_prompts(path: &std::path::Path) -> Result<Vec<QualityPrompt>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
    parse_prompts(&text, &path.display().to_string())
}

/// One side's greedy answer: its tokens (ids, or token strings over HTTP) and text.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    /// Generated tokens; `None` when the server did not say (no logprobs).
    pub tokens: Option<Vec<T>>,
    /// Generated text.
    pub text: String,
    /// Tool calls: name and arguments (parsed where they are JSON, so spacing does not count).
    pub tool_calls: Vec<(String, Value)>,
}

/// Compare answers `a[i]` and `b[i]` to `prompts[i]`. Returns the summary (the `quality` object
/// of a report) and one object per prompt. The common prefix is counted in tokens when both
/// sides gave tokens for every prompt, else in characters (and the summary says which).
pub fn compare_answers<T: PartialEq>(
    prompts: &[QualityPrompt],
    a: &[Answer<T>],
    b: &[Answer<T>],
) -> (Value, Vec<Value>) {
    let by_tokens = a.iter().chain(b).all(|x| x.tokens.is_some());
    let (mut exact, mut prefix_sum) = (0usize, 0usize);
    let (mut with_expect, mut ok_a, mut ok_b) = (0usize, 0usize, 0usize);
    let mut per = Vec::new();
    let (mut with_tools, mut same_calls) = (0usize, 0usize);
    for ((p, x), y) in prompts.iter().zip(a).zip(b) {
        let calls_agree = x.tool_calls == y.tool_calls;
        if p.tools.is_some() {
            with_tools += 1;
            same_calls += usize::from(calls_agree);
        }
        let same = x.text == y.text && (!by_tokens || x.tokens == y.tokens) && calls_agree;
        let prefix = match (&x.tokens, &y.tokens) {
            (Some(s), Some(t)) if by_tokens => common_prefix(s, t),
            _ => {
                let (s, t): (Vec<char>, Vec<char>) =
                    (x.text.chars().collect(), y.text.chars().collect());
                common_prefix(&s, &t)
            }
        };
        exact += usize::from(same);
        prefix_sum += prefix;
        let (sa, sb) = match &p.expect {
            Some(re) => {
                with_expect += 1;
                let (sa, sb) = (re.is_match(&x.text), re.is_match(&y.text));
                ok_a += usize::from(sa);
                ok_b += usize::from(sb);
                (Some(sa), Some(sb))
            }
            None => (None, None),
        };
        let mut entry = json!({
            "line": p.line, "exact_match": same, "common_prefix": prefix,
            "a_success": sa, "b_success": sb, "a_text": x.text, "b_text": y.text,
        });
        if p.tools.is_some() {
            let show = |c: &[(String, Value)]| -> Vec<Value> {
                c.iter()
                    .map(|(n, a)| json!({"name": n, "arguments": a}))
                    .collect()
            };
            entry["tool_calls_match"] = json!(calls_agree);
            entry["a_tool_calls"] = json!(show(&x.tool_calls));
            entry["b_tool_calls"] = json!(show(&y.tool_calls));
        }
        per.push(entry);
    }
    let n = prompts.len().max(1) as f64;
    let rate = |k: usize| (with_expect > 0).then(|| k as f64 / with_expect as f64);
    let summary = json!({
        "prompts": prompts.len(),
        "exact_match_rate": exact as f64 / n,
        "mean_common_prefix": prefix_sum as f64 / n,
        "common_prefix_unit": if by_tokens { "tokens" } else { "characters" },
        "prompts_with_expect": with_expect,
        "a_success_rate": rate(ok_a),
        "b_success_rate": rate(ok_b),
        "prompts_with_tools": with_tools,
        "tool_calls_match_rate": (with_tools > 0).then(|| same_calls as f64 / with_tools as f64),
    });
    (summary, per)
}

fn common_prefix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// One endpoint of a quality comparison.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL (`http://host:port`).
    pub url: String,
    /// `model` field of requests.
    pub model: String,
    /// Bearer token.
    pub api_key: Option<String>,
}

/// Greedy answer of `e` to `p`: `/v1/completions` for a raw prompt, `/v1/chat/completions` for
/// messages, temperature 0, with logprobs asked for so the answer's tokens are known.
pub async fn ask(
    client: &reqwest::Client,
    e: &Endpoint,
    p: &QualityPrompt,
    max_tokens: usize,
) -> Result<Answer<String>> {
    let base = e.url.trim_end_matches('/');
    let (url, body) = match (&p.prompt, &p.messages) {
        (Some(text), _) => (
            format!("{base}/v1/completions"),
            json!({"model": e.model, "prompt": text, "max_tokens": max_tokens,
                   "temperature": 0, "logprobs": 1}),
        ),
        (None, Some(m)) => {
            let mut body = json!({"model": e.model, "messages": m, "max_tokens": max_tokens,
                                  "temperature": 0, "logprobs": true, "top_logprobs": 1});
            if let Some((tools, choice)) = &p.tools {
                body["tools"] = tools.clone();
                body["tool_choice"] = choice.clone();
            }
            (format!("{base}/v1/chat/completions"), body)
        }
        (None, None) => return Err(Error::Config(format!("line {}: empty prompt", p.line))),
    };
    let mut req = client.post(&url).json(&body);
    if let Some(k) = &e.api_key {
        req = req.bearer_auth(k);
    }
    let resp = req
        .send()
        .await
        .map_err(|err| Error::Http(format!("{url}: {err}")))?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .map_err(|err| Error::Http(format!("{url}: HTTP {status}, body is not JSON: {err}")))?;
    if !status.is_success() {
        return Err(Error::Http(format!(
            "{url}: HTTP {status}: {}",
            v["error"]["message"].as_str().unwrap_or("(no message)")
        )));
    }
    let choice = &v["choices"][0];
    let text = choice["message"]["content"]
        .as_str()
        .or_else(|| choice["text"].as_str())
        .unwrap_or("")
        .to_string();
    let strings = |a: &Value, key: Option<&str>| -> Option<Vec<String>> {
        a.as_array()?
            .iter()
            .map(|t| match key {
                Some(k) => t[k].as_str().map(str::to_string),
                None => t.as_str().map(str::to_string),
            })
            .collect()
    };
    let tokens = strings(&choice["logprobs"]["content"], Some("token"))
        .or_else(|| strings(&choice["logprobs"]["tokens"], None));
    let tool_calls = choice["message"]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let args = c["function"]["arguments"].as_str().unwrap_or("");
            let args = serde_json::from_str(args).unwrap_or_else(|_| Value::from(args));
            (
                c["function"]["name"].as_str().unwrap_or("").to_string(),
                args,
            )
        })
        .collect();
    Ok(Answer {
        tokens,
        text,
        tool_calls,
    })
}

/// `ferrite bench quality`: every prompt, greedily, to both endpoints (one request at a time,
/// so load does not matter); the report holds the comparison under `quality`.
pub async fn run_quality(
    a: &Endpoint,
    b: &Endpoint,
    prompts: &[QualityPrompt],
    max_tokens: usize,
) -> Result<Value> {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let (mut xa, mut xb) = (Vec::new(), Vec::new());
    for p in prompts {
        xa.push(ask(&client, a, p, max_tokens).await?);
        xb.push(ask(&client, b, p, max_tokens).await?);
    }
    let (quality, per) = compare_answers(prompts, &xa, &xb);
    Ok(json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "a": {"url": a.url, "model": a.model},
        "b": {"url": b.url, "model": b.model},
        "max_tokens": max_tokens,
        "seconds": start.elapsed().as_secs_f64(),
        "quality": quality,
        "per_prompt": per,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(tokens: &[&str]) -> Answer<String> {
        Answer {
            tokens: Some(tokens.iter().map(|s| s.to_string()).collect()),
            text: tokens.concat(),
            tool_calls: vec![],
        }
    }

    #[test]
    fn tool_calls_are_compared_by_name_and_parsed_arguments() {
        let prompts = parse_prompts(
            "{\"messages\": [{\"role\": \"user\", \"content\": \"w\"}], \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]}\n{\"messages\": [{\"role\": \"user\", \"content\": \"v\"}], \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]}",
            "f",
        )
        .unwrap();
        let call = |a: Value| Answer::<String> {
            tokens: None,
            text: String::new(),
            tool_calls: vec![("f".into(), a)],
        };
        let a = [call(json!({"x": 1})), call(json!({"x": 1}))];
        let b = [call(json!({"x": 1})), call(json!({"x": 2}))];
        let (q, per) = compare_answers(&prompts, &a, &b);
        assert_eq!(q["prompts_with_tools"], 2);
        assert_eq!(q["tool_calls_match_rate"], 0.5);
        assert_eq!(q["exact_match_rate"], 0.5);
        assert_eq!(per[1]["b_tool_calls"][0]["arguments"]["x"], 2);
        assert!(parse_prompts("{\"prompt\": \"p\", \"tools\": []}", "f").is_err());
    }

    #[test]
    fn prompt_files_are_checked_line_by_line() {
        let ok = "{\"prompt\": \"a\", \"expect\": \"x+\"}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"b\"}]}\n";
        let p = parse_prompts(ok, "f").unwrap();
        assert_eq!((p.len(), p[0].line, p[1].line), (2, 1, 3));
        assert!(p[0].expect.is_some() && p[1].messages.is_some());
        for (bad, want) in [
            (
                "{\"prompt\": \"a\", \"messages\": []}",
                "f:1: give exactly one",
            ),
            ("{\"expect\": \"a\"}", "f:1: give exactly one"),
            ("{\"prompt\": 3}", "f:1: give exactly one"),
            ("not json", "f:1: not a JSON object"),
            (
                "{\"prompt\": \"a\", \"expect\": \"(\"}",
                "f:1: bad \"expect\" regex",
            ),
            ("\n\n", "f has no prompts"),
        ] {
            let e = parse_prompts(bad, "f").unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn exact_match_prefix_and_success() {
        let prompts = parse_prompts(
            "{\"prompt\": \"1\", \"expect\": \"Paris\"}\n{\"prompt\": \"2\"}\n{\"prompt\": \"3\", \"expect\": \"^no$\"}",
            "f",
        )
        .unwrap();
        let a = [
            answer(&[" Paris", "."]),
            answer(&["a", "b", "c"]),
            answer(&["x"]),
        ];
        let b = [
            answer(&[" Paris", "!"]),
            answer(&["a", "b", "c"]),
            answer(&["no"]),
        ];
        let (q, per) = compare_answers(&prompts, &a, &b);
        assert_eq!(q["exact_match_rate"], 1.0 / 3.0);
        assert_eq!(q["mean_common_prefix"], (1.0 + 3.0 + 0.0) / 3.0);
        assert_eq!(q["common_prefix_unit"], "tokens");
        assert_eq!(q["prompts_with_expect"], 2);
        assert_eq!(q["a_success_rate"], 0.5);
        assert_eq!(q["b_success_rate"], 1.0);
        assert_eq!(per[2]["b_success"], true);
        // Without tokens from one side, the prefix is counted in characters.
        let mut b2 = b.clone();
        b2[0].tokens = None;
        let (q, _) = compare_answers(&prompts, &a, &b2);
        assert_eq!(q["common_prefix_unit"], "characters");
        assert_eq!(q["mean_common_prefix"], (6.0 + 3.0 + 0.0) / 3.0);
    }
}
