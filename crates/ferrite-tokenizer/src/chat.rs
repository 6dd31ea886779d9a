//! Chat templates: the Jinja template a model ships in `tokenizer.chat_template`, rendered with
//! `minijinja` plus the helpers Hugging Face templates expect (`raise_exception`, `tojson`,
//! `strftime_now`, `bos_token`, `eos_token`, `add_generation_prompt`, Python string methods).

use std::sync::Arc;

use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Gemma's documented turn format, for Gemma files that carry no template (Gemma-3-270M is a base
/// model). System messages are folded into the first user turn, as Gemma's own template does.
pub(crate) const GEMMA_TURN_TEMPLATE: &str = "{{ bos_token }}\
{%- if messages and messages[0]['role'] == 'system' -%}\
{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\
{%- set loop_messages = messages[1:] -%}\
{%- else -%}\
{%- set first_user_prefix = '' -%}\
{%- set loop_messages = messages -%}\
{%- endif -%}\
{%- for message in loop_messages -%}\
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}\
{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}";

/// Where a template came from (so `ferrite chat` can say when it falls back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateSource {
    /// `tokenizer.chat_template` in the GGUF file.
    Gguf,
    /// ferrite's built-in Gemma turn format (the file had no template).
    BuiltinGemma,
}

/// One chat message, as templates see it (`message['content']`, `message.tool_calls`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Message text (never null: templates concatenate it).
    pub content: String,
    /// An assistant message's calls, in OpenAI's shape with the arguments as an object
    /// (`[{"type": "function", "function": {"name", "arguments"}, "id"}]`), for templates that
    /// render them.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool_calls: Option<serde_json::Value>,
    /// The call a `tool` message answers.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
        }
    }
}

/// A compiled chat template.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    text: Arc<str>,
    source: TemplateSource,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .finish()
    }
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(fmt: String) -> String {
    chrono::Local::now().format(&fmt).to_string()
}

/// Python's `json.dumps` separators: `", "` and `": "` on one line, `","` and `": "` with an
/// indent (what Hugging Face's and llama.cpp's `tojson` print; serde's compact form differs).
struct PythonJson {
    indent: Option<Vec<u8>>,
    depth: usize,
    /// Whether the innermost open container has a member yet (an empty one closes on its
    /// own line: `[]`, `{}`, as Python prints them).
    has_value: bool,
}

impl PythonJson {
    fn newline<W: ?Sized + std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        if let Some(unit) = &self.indent {
            w.write_all(b"\n")?;
            for _ in 0..self.depth {
                w.write_all(unit)?;
            }
        }
        Ok(())
    }

    fn open<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    fn member<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if !first {
            w.write_all(if self.indent.is_some() { b"," } else { b", " })?;
        }
        self.newline(w)
    }

    fn close<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        w.write_all(bracket)
    }
}

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.member(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.member(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

/// `tojson` as Hugging Face's templates expect it (Python's `json.dumps` layout, non-ASCII kept,
/// keys in their order; `indent=N` pretty-prints). Empty containers print as `[]` and `{}`.
fn tojson(
    value: Value,
    kwargs: minijinja::value::Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let invalid = |e: &dyn std::fmt::Display| {
        minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string())
    };
    let json = serde_json::to_value(&value).map_err(|e| invalid(&e))?;
    let mut out = Vec::new();
    let fmt = PythonJson {
        indent: indent.map(|n| vec![b' '; n]),
        depth: 0,
        has_value: false,
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(&json, &mut ser).map_err(|e| invalid(&e))?;
    let text = String::from_utf8(out).map_err(|e| invalid(&e))?;
    Ok(Value::from_safe_string(text))
}

impl ChatTemplate {
    /// Compile `source`; `bos`/`eos` are the texts templates see as `bos_token`/`eos_token`.
    pub fn new(source: &str, kind: TemplateSource, bos: &str, eos: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        // HF renders with trim_blocks and lstrip_blocks on.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Template(format!("cannot parse: {e}")))?;
        Ok(ChatTemplate {
            env: Arc::new(env),
            text: source.into(),
            source: kind,
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// Where this template came from.
    pub fn source(&self) -> TemplateSource {
        self.source
    }

    /// The template's source text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Render a conversation; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`render`](Self::render) with `tools` (OpenAI's `tools` array) for templates that
    /// declare them.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_with(
            messages,
            tools,
            &serde_json::Map::new(),
            add_generation_prompt,
        )
    }

    /// [`render_with_tools`](Self::render_with_tools) with extra template variables
    /// (`chat_template_kwargs`), which may override the defaults such as `enable_thinking`.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        kwargs: &serde_json::Map<String, serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Template(e.to_string()))?;
        // Without tools, `tools` stays undefined (templates test `tools is defined`, and
        // minijinja, unlike Jinja2, calls `none` iterable).
        let tools = tools.map_or(Value::UNDEFINED, Value::from_serialize);
        let fixed = minijinja::context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        };
        // Reasoning on unless asked otherwise, as llama.cpp's server renders by default
        // (Qwen3's template reads only `enable_thinking is false`; others `not enable_thinking`).
        let defaults = minijinja::context! { enable_thinking => true };
        let kwargs = Value::from_serialize(kwargs);
        tmpl.render(minijinja::context! { ..fixed, ..kwargs, ..defaults })
            .map_err(|e| Error::Template(format!("cannot render: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real templates and the text they must produce (TGI-style golden table).
    #[test]
    fn golden_templates() {
        let smollm = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        let cases: Vec<(&str, &str, Vec<ChatMessage>, &str)> = vec![
            (
                "smollm2",
                smollm,
                vec![ChatMessage::new("user", "Write a haiku about the ocean.")],
                "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWrite a haiku about the ocean.<|im_end|>\n<|im_start|>assistant\n",
            ),
            (
                "gemma builtin",
                GEMMA_TURN_TEMPLATE,
                vec![
                    ChatMessage::new("system", "Be brief."),
                    ChatMessage::new("user", "Hi"),
                    ChatMessage::new("assistant", "Hello!"),
                    ChatMessage::new("user", "Bye"),
                ],
                "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n",
            ),
            (
                "python methods and tojson",
                "{% for m in messages %}{{ m['content'].strip().upper() }}|{{ m | tojson }}{% endfor %}",
                vec![ChatMessage::new("user", "  a  ")],
                // Keys in message order and Python's separators, as HF's `tojson`
                // (json.dumps, sort_keys=False) gives.
                "A|{\"role\": \"user\", \"content\": \"  a  \"}",
            ),
        ];
        for (name, src, msgs, want) in cases {
            let t = ChatTemplate::new(src, TemplateSource::Gguf, "<bos>", "<eos>").unwrap();
            assert_eq!(t.render(&msgs, true).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn tojson_prints_like_python_json_dumps() {
        let t = ChatTemplate::new(
            "{{ x | tojson }}|{{ x | tojson(indent=2) }}",
            TemplateSource::Gguf,
            "",
            "",
        )
        .unwrap();
        let env = t.env.get_template("chat").unwrap();
        let x = serde_json::json!({"b": [1, "é"], "a": {}, "c": []});
        let got = env.render(minijinja::context! { x => x }).unwrap();
        assert_eq!(
            got,
            "{\"b\": [1, \"é\"], \"a\": {}, \"c\": []}|{\n  \"b\": [\n    1,\n    \"é\"\n  ],\n  \"a\": {},\n  \"c\": []\n}"
        );
        // Text that looks like an empty container is data, left as it is.
        let x = serde_json::json!({"s": "[  ]"});
        let got = env.render(minijinja::context! { x => x }).unwrap();
        assert_eq!(got, "{\"s\": \"[  ]\"}|{\n  \"s\": \"[  ]\"\n}");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new(
            "{% if messages[0]['role'] == 'tool' %}{{ raise_exception('no tools') }}{% endif %}ok",
            TemplateSource::Gguf,
            "",
            "",
        )
        .unwrap();
        let err = t
            .render(&[ChatMessage::new("tool", "x")], true)
            .unwrap_err();
        assert!(err.to_string().contains("no tools"), "{err}");
        assert_eq!(
            t.render(&[ChatMessage::new("user", "x")], true).unwrap(),
            "ok"
        );
    }

    #[test]
    fn strftime_now_renders_a_date() {
        let t =
            ChatTemplate::new("{{ strftime_now('%Y') }}", TemplateSource::Gguf, "", "").unwrap();
        let year: i32 = t.render(&[], false).unwrap().parse().unwrap();
        assert!(year >= 2024);
    }

    #[test]
    fn bad_template_is_a_clear_error() {
        let err = ChatTemplate::new("{% for %}", TemplateSource::Gguf, "", "").unwrap_err();
        assert!(err.to_string().contains("chat template"), "{err}");
    }
}
