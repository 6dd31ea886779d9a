//! Tool calling behind one seam, [`ToolFormat`]: how a model is told about tools, how its history
//! of calls and results is written into the prompt, the grammar its calls must follow, and how
//! calls are read back out of its text ([`parse`]).
//!
//! - `hermes`: the model's own template declares tools (Hermes 2/3, Qwen 2.5/3): the template
//!   gets `tools`, calls are `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>`.
//! - `apigen`: SmolLM2's function-calling format (its GGUF template has no tools block; the
//!   model was trained on APIGen data): tools listed in the system turn, calls as
//!   `<tool_call>[{"name": …, "arguments": …}]</tool_call>`, results as `<tool_response>` in a
//!   user turn.
//! - `generic` (as llama.cpp does for templates without tools): a system message describes the
//!   tools and the answer is one JSON object, `{"tool_calls": [...]}` or `{"response": …}`.
//!
//! `tool_choice` `required` or a named function constrains the output from its first token;
//! `auto` leaves text free until the format's opening tag (a lazy grammar), except in the
//! generic format, where the whole answer is JSON anyway.

pub mod parse;

use ferrite_engine::grammar::{bounded, GrammarSpec};
use ferrite_protocol::{Message, OutputFormat, Tool, ToolChoice};
use ferrite_tokenizer::{ChatMessage, ChatTemplate};
use serde_json::{json, Value};

/// How tools are presented to and read from a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// The template's own `<tool_call>{…}</tool_call>` (Hermes, Qwen).
    Hermes,
    /// SmolLM2's APIGen format, built in.
    ApiGen,
    /// One JSON object per answer, for templates that know nothing of tools.
    Generic,
}

impl ToolFormat {
    /// The format for a model: its template's own when it declares tools, SmolLM2's built-in
    /// one for SmolLM2, the generic one otherwise.
    pub fn detect(template: Option<&ChatTemplate>) -> ToolFormat {
        let text = template.map_or("", |t| t.text());
        if text.contains("tools") && text.contains("<tool_call>") {
            ToolFormat::Hermes
        } else if text.contains("SmolLM") {
            ToolFormat::ApiGen
        } else {
            ToolFormat::Generic
        }
    }

    /// `--tool-format` values.
    pub fn parse(s: &str) -> Option<ToolFormat> {
        match s {
            "hermes" => Some(ToolFormat::Hermes),
            "apigen" => Some(ToolFormat::ApiGen),
            "generic" => Some(ToolFormat::Generic),
            _ => None,
        }
    }

    /// Its name in logs and `/v1/models`.
    pub fn name(self) -> &'static str {
        match self {
            ToolFormat::Hermes => "hermes",
            ToolFormat::ApiGen => "apigen",
            ToolFormat::Generic => "generic",
        }
    }

    /// The conversation as the template sees it, and the `tools` value for a template that
    /// declares tools. Calls and results in the history are written in this format; `offer`
    /// (tool_choice is not `none`) lists the tools for the model.
    pub fn conversation(
        self,
        msgs: &[Message],
        tools: &[Tool],
        offer: bool,
    ) -> (Vec<ChatMessage>, Option<Value>) {
        let listing = offer.then(|| tool_listing(tools));
        let mut out: Vec<ChatMessage> = Vec::with_capacity(msgs.len() + 1);
        for m in msgs {
            let mut c = ChatMessage::new(m.role.clone(), m.content.clone());
            match (self, m.role.as_str()) {
                (ToolFormat::Hermes, _) => {
                    if !m.tool_calls.is_empty() {
                        let calls: Vec<Value> = m
                            .tool_calls
                            .iter()
                            .map(|t| {
                                json!({"id": t.id, "type": "function",
                                       "function": {"name": t.name, "arguments": arguments(&t.arguments)}})
                            })
                            .collect();
                        c.tool_calls = Some(Value::Array(calls));
                    }
                    c.tool_call_id = m.tool_call_id.clone();
                }
                (_, "tool") => {
                    c.role = "user".into();
                    c.content = match self {
                        ToolFormat::ApiGen => format!("<tool_response>\n{}\n</tool_response>", m.content),
                        _ => json!({"tool_response": {"tool_call_id": m.tool_call_id, "content": m.content}}).to_string(),
                    };
                }
                (_, "assistant") if !m.tool_calls.is_empty() => {
                    let calls: Vec<Value> = m
                        .tool_calls
                        .iter()
                        .map(|t| json!({"name": t.name, "arguments": arguments(&t.arguments)}))
                        .collect();
                    let written = match self {
                        ToolFormat::ApiGen => {
                            format!("<tool_call>{}</tool_call>", Value::Array(calls))
                        }
                        _ => json!({"tool_calls": calls}).to_string(),
                    };
                    c.content = if m.content.is_empty() {
                        written
                    } else {
                        format!("{}\n{written}", m.content)
                    };
                }
                _ => {}
            }
            out.push(c);
        }
        match (self, listing) {
            (ToolFormat::Hermes, listing) => (out, listing),
            (_, None) => (out, None),
            (_, Some(listing)) => {
                let intro = self.instructions(&listing);
                match out.first_mut() {
                    Some(first) if first.role == "system" || first.role == "developer" => {
                        first.content = format!("{}\n\n{intro}", first.content);
                    }
                    _ => out.insert(0, ChatMessage::new("system", intro)),
                }
                (out, None)
            }
        }
    }

    /// The system-turn text that offers the tools (apigen and generic).
    fn instructions(self, listing: &Value) -> String {
        let tools = serde_json::to_string(listing).unwrap_or_default();
        match self {
            ToolFormat::ApiGen => format!(
                "You can call functions to answer the question. These are the functions you \
                 may call:\n<tools>{tools}</tools>\nTo call functions, answer with a list of \
                 calls and nothing else, in this form:\n<tool_call>[{{\"name\": \"function_name\", \
                 \"arguments\": {{\"argument\": \"value\"}}}}]</tool_call>\nEach function's \
                 arguments must follow its parameters. Results come back inside \
                 <tool_response></tool_response>."
            ),
            _ => format!(
                "You can call these tools:\n{tools}\nAnswer with one JSON object. To call \
                 tools: {{\"tool_calls\": [{{\"name\": \"tool_name\", \"arguments\": {{...}}}}]}}. \
                 To answer directly: {{\"response\": \"your answer\"}}. Tool results come back as \
                 {{\"tool_response\": ...}}."
            ),
        }
    }

    /// The grammar for an answer with tools: the calls in this format (at least one for
    /// `required`, one call of the named function for a named choice, one call unless
    /// `parallel`),
    /// and for `auto` also a plain answer — `answer` when the request set a format, free text
    /// otherwise. `None` for `tool_choice: none` without a format.
    pub fn grammar(
        self,
        tools: &[Tool],
        choice: &ToolChoice,
        parallel: bool,
        answer: Option<&GrammarSpec>,
    ) -> Option<GrammarSpec> {
        let offered: Vec<&Tool> = match choice {
            ToolChoice::None => return answer.cloned(),
            ToolChoice::Function(name) => tools.iter().filter(|t| &t.name == name).collect(),
            ToolChoice::Auto | ToolChoice::Required => tools.iter().collect(),
        };
        let must_call = !matches!(choice, ToolChoice::Auto);
        // A named function is called once (as OpenAI and vLLM do).
        let parallel = parallel && !matches!(choice, ToolChoice::Function(_));
        // One rule per tool: the call object written out, its arguments an inline schema (each
        // its own root, so the tool's `$defs`/`$ref` resolve).
        let mut g = String::from("%llguidance {}\n");
        for (i, t) in offered.iter().enumerate() {
            let schema = serde_json::to_string(&bounded(&t.parameters)).unwrap_or_default();
            g.push_str(&format!(
                "call_{i}: \"{{\\\"name\\\": \\\"{}\\\", \\\"arguments\\\": \" %json {schema} \"}}\"\n",
                t.name
            ));
        }
        let calls: Vec<String> = (0..offered.len()).map(|i| format!("call_{i}")).collect();
        g.push_str(&format!("call: {}\n", calls.join(" | ")));
        let more = |sep: &str| {
            if parallel {
                format!("(\"{sep}\" call)*")
            } else {
                String::new()
            }
        };
        let answer_rule = match answer {
            Some(GrammarSpec::JsonSchema(s)) => {
                format!(
                    "%json {}",
                    serde_json::to_string(&bounded(s)).unwrap_or_default()
                )
            }
            // Other answer formats (regex, choice, Lark) with tools: the answer is free text.
            _ => "TEXT".to_string(),
        };
        let json_answer = matches!(answer, Some(GrammarSpec::JsonSchema(_)));
        match self {
            ToolFormat::Hermes | ToolFormat::ApiGen => {
                let (open, sep, close) = match self {
                    ToolFormat::Hermes => (
                        "<tool_call>\\n",
                        "\\n</tool_call>\\n<tool_call>\\n",
                        "\\n</tool_call>",
                    ),
                    _ => ("<tool_call>[", ", ", "]</tool_call>"),
                };
                g.push_str(&format!("calls: call {} \"{close}\"\n", more(sep)));
                g.push_str("TEXT: /(.|\\n)*/\n");
                if must_call {
                    g.push_str(&format!("start: \"{open}\" calls\n"));
                } else if json_answer {
                    g.push_str(&format!(
                        "start: answer | \"{open}\" calls\nanswer: {answer_rule}\n"
                    ));
                } else {
                    // Free text until the opening tag, then a constrained call.
                    g.push_str(&format!(
                        "start: TEXT | head calls\nhead[lazy]: TEXT \"{open}\"\n"
                    ));
                }
            }
            ToolFormat::Generic => {
                g.push_str(&format!(
                    "calls: \"{{\\\"tool_calls\\\": [\" call {} \"]}}\"\n",
                    more(", ")
                ));
                if must_call {
                    g.push_str("start: calls\n");
                } else {
                    let response = if json_answer {
                        answer_rule
                    } else {
                        "%json {\"type\": \"string\"}".to_string()
                    };
                    g.push_str(&format!(
                        "start: calls | \"{{\\\"response\\\": \" {response} \"}}\"\n"
                    ));
                }
            }
        }
        Some(GrammarSpec::Lark(g))
    }
}

/// The tools in OpenAI's shape, as templates and listings show them.
fn tool_listing(tools: &[Tool]) -> Value {
    Value::Array(
        tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name, "parameters": t.parameters});
                if let Some(d) = &t.description {
                    f["description"] = json!(d);
                }
                json!({"type": "function", "function": f})
            })
            .collect(),
    )
}

/// Arguments as an object where they parse (templates print them with `tojson`).
fn arguments(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The grammar for a request's `response_format` / `structured_outputs`.
pub fn output_grammar(f: &OutputFormat) -> GrammarSpec {
    match f {
        OutputFormat::JsonObject => GrammarSpec::JsonSchema(json!({"type": "object"})),
        OutputFormat::JsonSchema { schema, .. } => GrammarSpec::JsonSchema(schema.clone()),
        OutputFormat::Regex(r) => GrammarSpec::Regex(r.clone()),
        OutputFormat::Choice(c) => GrammarSpec::Choice(c.clone()),
        OutputFormat::Grammar(g) => GrammarSpec::Lark(g.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse::{Piece, ToolCallParser};
    use super::*;
    use ferrite_engine::grammar::{Constraint, GrammarCompiler};
    use ferrite_tokenizer::Tokenizer;

    fn tokenizer() -> Tokenizer {
        let bytes = ferrite_testkit::TinyModel::new(ferrite_testkit::TinyArch::Llama).to_bytes();
        Tokenizer::from_gguf(&ferrite_gguf::GgufFile::from_bytes(bytes).unwrap()).unwrap()
    }

    fn tools() -> Vec<Tool> {
        vec![
            Tool {
                name: "get_weather".into(),
                description: None,
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}},
                                   "required": ["city"], "additionalProperties": false}),
            },
            Tool {
                name: "ping".into(),
                description: None,
                parameters: json!({"type": "object", "properties": {}, "additionalProperties": false}),
            },
        ]
    }

    /// Feed `text` byte by byte (the tiny vocabulary is bytes); false at the first byte the
    /// grammar refuses, or when the grammar is complete before the text ends.
    fn takes(c: &mut Constraint, tok: &Tokenizer, text: &str) -> bool {
        let mut complete = false;
        for id in tok.encode(text, Default::default()).unwrap() {
            if complete {
                return false;
            }
            let mut l = vec![0.0; tok.vocab_size()];
            c.mask(&mut l, false).unwrap();
            if !l[id as usize].is_finite() {
                return false;
            }
            complete = c.advance(id).unwrap();
        }
        true
    }

    /// What each format writes for two calls, as the model must write it.
    fn written(format: ToolFormat) -> &'static str {
        match format {
            ToolFormat::Hermes => "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>",
            ToolFormat::ApiGen => "<tool_call>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}, {\"name\": \"ping\", \"arguments\": {}}]</tool_call>",
            ToolFormat::Generic => "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}, {\"name\": \"ping\", \"arguments\": {}}]}",
        }
    }

    #[test]
    fn each_format_takes_its_own_calls_and_reads_them_back() {
        let tok = tokenizer();
        let g = GrammarCompiler::new(&tok).unwrap();
        for format in [ToolFormat::Hermes, ToolFormat::ApiGen, ToolFormat::Generic] {
            let spec = format
                .grammar(&tools(), &ToolChoice::Required, true, None)
                .unwrap();
            let mut c = g.compile(&spec).unwrap();
            assert!(takes(&mut c, &tok, written(format)), "{format:?}");
            assert!(c.is_accepting(), "{format:?}");
            let mut p = ToolCallParser::new(format);
            let mut pieces = p.push(written(format));
            pieces.extend(p.finish());
            assert_eq!(
                pieces,
                vec![
                    Piece::CallStart {
                        index: 0,
                        name: "get_weather".into()
                    },
                    Piece::CallArgs {
                        index: 0,
                        text: "{\"city\": \"Oslo\"}".into()
                    },
                    Piece::CallStart {
                        index: 1,
                        name: "ping".into()
                    },
                    Piece::CallArgs {
                        index: 1,
                        text: "{}".into()
                    },
                ],
                "{format:?}"
            );
            // One call only without parallel calls; a named choice takes only that function.
            let one = format
                .grammar(&tools(), &ToolChoice::Required, false, None)
                .unwrap();
            assert!(
                !takes(&mut g.compile(&one).unwrap(), &tok, written(format)),
                "{format:?}"
            );
            let named = format
                .grammar(&tools(), &ToolChoice::Function("ping".into()), true, None)
                .unwrap();
            assert!(
                !takes(&mut g.compile(&named).unwrap(), &tok, written(format)),
                "{format:?}"
            );
            let ping_twice = written(format)
                .replace("get_weather", "ping")
                .replace("{\"city\": \"Oslo\"}", "{}");
            assert!(
                !takes(&mut g.compile(&named).unwrap(), &tok, &ping_twice),
                "{format:?}: one named call"
            );
            // Required: no plain text.
            assert!(
                !takes(&mut g.compile(&spec).unwrap(), &tok, "Hello"),
                "{format:?}"
            );
        }
    }

    #[test]
    fn auto_leaves_text_free_until_the_tag_and_then_constrains() {
        let tok = tokenizer();
        let g = GrammarCompiler::new(&tok).unwrap();
        for format in [ToolFormat::Hermes, ToolFormat::ApiGen] {
            let spec = format
                .grammar(&tools(), &ToolChoice::Auto, true, None)
                .unwrap();
            let mut c = g.compile(&spec).unwrap();
            assert!(
                takes(&mut c, &tok, "Any text at all, even <tool"),
                "{format:?}"
            );
            assert!(c.is_accepting(), "text alone is an answer");
            let mut c = g.compile(&spec).unwrap();
            assert!(takes(&mut c, &tok, "Let me look. "), "{format:?}");
            assert!(takes(&mut c, &tok, written(format)), "{format:?}");
            // After the opening tag, only a call.
            let mut c = g.compile(&spec).unwrap();
            let open = &written(format)[..written(format).find('{').unwrap()];
            assert!(takes(&mut c, &tok, &format!("Hi {open}")), "{format:?}");
            assert!(!takes(&mut c.clone(), &tok, "nonsense"), "{format:?}");
            assert!(takes(&mut c, &tok, "{\"name\": \"ping\""), "{format:?}");
        }
        // With a response format, auto means: that document, or calls.
        let answer = GrammarSpec::JsonSchema(
            json!({"type": "object", "properties": {"n": {"type": "integer"}},
                                                     "required": ["n"], "additionalProperties": false}),
        );
        for format in [ToolFormat::Hermes, ToolFormat::Generic] {
            let spec = format
                .grammar(&tools(), &ToolChoice::Auto, true, Some(&answer))
                .unwrap();
            let doc = if format == ToolFormat::Generic {
                "{\"response\": {\"n\": 3}}"
            } else {
                "{\"n\": 3}"
            };
            let mut c = g.compile(&spec).unwrap();
            assert!(takes(&mut c, &tok, doc) && c.is_accepting(), "{format:?}");
            assert!(
                !takes(&mut g.compile(&spec).unwrap(), &tok, "free text"),
                "{format:?}"
            );
            assert!(
                takes(&mut g.compile(&spec).unwrap(), &tok, written(format)),
                "{format:?}"
            );
        }
    }

    #[test]
    fn history_with_calls_and_results_renders_in_each_format() {
        use ferrite_protocol::ToolCall;
        let msgs = vec![
            Message {
                role: "user".into(),
                content: "Weather in Oslo?".into(),
                tool_calls: vec![],
                tool_call_id: None,
            },
            Message {
                role: "assistant".into(),
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "get_weather".into(),
                    arguments: "{\"city\": \"Oslo\"}".into(),
                }],
                tool_call_id: None,
            },
            Message {
                role: "tool".into(),
                content: "-3 C".into(),
                tool_calls: vec![],
                tool_call_id: Some("call_1".into()),
            },
        ];
        let (m, tools_value) = ToolFormat::ApiGen.conversation(&msgs, &tools(), true);
        assert!(tools_value.is_none());
        assert_eq!(m[0].role, "system");
        assert!(m[0].content.contains("<tools>") && m[0].content.contains("get_weather"));
        assert_eq!(
            m[2].content,
            "<tool_call>[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}]</tool_call>"
        );
        assert_eq!(
            (m[3].role.as_str(), m[3].content.as_str()),
            ("user", "<tool_response>\n-3 C\n</tool_response>")
        );
        let (m, tools_value) = ToolFormat::Hermes.conversation(&msgs, &tools(), true);
        assert_eq!(tools_value.unwrap().as_array().unwrap().len(), 2);
        assert_eq!(
            m[1].tool_calls.as_ref().unwrap()[0]["function"]["arguments"],
            json!({"city": "Oslo"})
        );
        assert_eq!(m[2].tool_call_id.as_deref(), Some("call_1"));
        // SmolLM2's template (plain ChatML, no tools block) renders the rewritten history.
        let smol = ChatTemplate::new(
            "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}",
            ferrite_tokenizer::TemplateSource::Gguf, "", "").unwrap();
        let (m, _) = ToolFormat::ApiGen.conversation(&msgs, &tools(), false);
        let text = smol.render(&m, true).unwrap();
        assert!(text.contains("<|im_start|>user\n<tool_response>"), "{text}");
        assert!(
            !text.contains("<tools>"),
            "tools are listed only when offered"
        );
    }
}
