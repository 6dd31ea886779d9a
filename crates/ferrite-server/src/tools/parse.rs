//! Tool calls out of generated text, as it streams: text before a call is content, a call's
//! name is sent once known, and its arguments are sent as the raw text the model wrote, piece
//! by piece (never re-serialized: diffing partially parsed JSON corrupts arguments, vLLM #9693).
//! The same parser assembles the unary answer, so streamed and unary calls agree.

use super::ToolFormat;

/// What a piece of generated text turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Answer text.
    Content(String),
    /// Call `index` starts: its function name.
    CallStart {
        /// Call number within the choice.
        index: usize,
        /// Function name.
        name: String,
    },
    /// More argument text of call `index`.
    CallArgs {
        /// Call number within the choice.
        index: usize,
        /// Raw JSON text.
        text: String,
    },
}

/// Where a JSON value's scan stands after a character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Whitespace before the value: not part of it.
    Before,
    /// Part of the value; more follows.
    Inside,
    /// The last character of the value.
    Last,
    /// The value had already ended; this character follows it.
    After,
}

/// Follows one JSON value character by character.
#[derive(Debug, Default, Clone)]
struct ValueScan {
    started: bool,
    depth: usize,
    in_string: bool,
    escaped: bool,
    done: bool,
}

impl ValueScan {
    fn feed(&mut self, c: char) -> Scan {
        if self.done {
            return Scan::After;
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if c == '\\' {
                self.escaped = true;
            } else if c == '"' {
                self.in_string = false;
                if self.depth == 0 {
                    self.done = true;
                    return Scan::Last;
                }
            }
            return Scan::Inside;
        }
        match c {
            c if c.is_whitespace() && !self.started => Scan::Before,
            '"' => {
                self.started = true;
                self.in_string = true;
                Scan::Inside
            }
            '{' | '[' => {
                self.started = true;
                self.depth += 1;
                Scan::Inside
            }
            '}' | ']' if self.depth > 0 => {
                self.depth -= 1;
                if self.depth == 0 {
                    self.done = true;
                    return Scan::Last;
                }
                Scan::Inside
            }
            // A scalar (number, true, false, null) ends at the first character that cannot
            // continue it.
            ',' | '}' | ']' if self.depth == 0 && self.started => {
                self.done = true;
                Scan::After
            }
            c if c.is_whitespace() && self.depth == 0 => {
                self.done = true;
                Scan::After
            }
            _ => {
                self.started = true;
                Scan::Inside
            }
        }
    }
}

/// One `{"name": …, "arguments": …}` object (`parameters` is taken for `arguments`).
#[derive(Debug, Clone)]
enum Obj {
    Open,
    KeyOrClose,
    Key {
        text: String,
        escaped: bool,
    },
    Colon(String),
    Value {
        key: String,
        scan: ValueScan,
        text: String,
    },
    Done,
}

/// A streamed JSON string value, decoded as far as it is complete.
#[derive(Debug, Default, Clone)]
struct StringValue {
    raw: String,
    sent: usize,
    closed: bool,
}

impl StringValue {
    /// Decoded text not sent before; `raw` holds the characters after the opening quote.
    fn fresh(&mut self) -> String {
        let raw = if self.closed {
            &self.raw[..self.raw.len().saturating_sub(1)]
        } else {
            &self.raw
        };
        let body = &raw[..complete_escapes(raw)];
        let decoded: String =
            serde_json::from_str(&format!("\"{body}\"")).unwrap_or_else(|_| body.to_string());
        let out = decoded.get(self.sent..).unwrap_or("").to_string();
        self.sent = decoded.len();
        out
    }
}

/// How much of a JSON string's inside (`raw`) ends on a whole character: an escape sequence
/// not finished yet (`\`, `\u00`, the first half of a surrogate pair) is left out.
fn complete_escapes(raw: &str) -> usize {
    let b = raw.as_bytes();
    let (mut i, mut safe) = (0, 0);
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            if raw.is_char_boundary(i) {
                safe = i;
            }
            continue;
        }
        let need = match b.get(i + 1) {
            Some(b'u') => {
                // A high surrogate needs its low half too.
                let high = raw
                    .get(i + 2..i + 6)
                    .and_then(|h| u16::from_str_radix(h, 16).ok())
                    .is_some_and(|u| (0xD800..0xDC00).contains(&u));
                if high {
                    12
                } else {
                    6
                }
            }
            _ => 2,
        };
        if i + need > b.len() {
            break;
        }
        i += need;
        safe = i;
    }
    safe
}

#[derive(Debug, Clone)]
enum State {
    /// Free text, watching for the format's opening tag.
    Text { held: String },
    /// Inside the tag: before, between or after the calls of a list (`[` … `]`).
    Between { in_list: bool },
    /// Inside one call object.
    Call(Obj),
    /// The closing tag, `matched` characters of it seen so far.
    Closing { matched: usize },
    /// Generic format: the top-level object `{"tool_calls": [...]}` or `{"response": ...}`.
    Generic(Obj),
    /// Generic format: the calls array.
    GenericCalls,
    /// Generic format: streaming the `response` string.
    Response(StringValue),
    /// Nothing more is expected; further text is ignored.
    End,
}

/// Turns a choice's text into content and tool-call pieces.
#[derive(Debug, Clone)]
pub struct ToolCallParser {
    format: ToolFormat,
    state: State,
    /// Calls started so far.
    calls: usize,
    /// Whether the current call has sent argument text.
    args_sent: bool,
    /// The current call's name, once read.
    name: Option<String>,
    /// Argument text seen before the name (sent after it).
    early_args: String,
    /// Whitespace after a call, sent as content only if real text follows it.
    trailing: String,
}

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

impl ToolCallParser {
    /// A parser for `format`'s output.
    pub fn new(format: ToolFormat) -> ToolCallParser {
        let state = match format {
            ToolFormat::Generic => State::Generic(Obj::Open),
            _ => State::Text {
                held: String::new(),
            },
        };
        ToolCallParser {
            format,
            state,
            calls: 0,
            args_sent: false,
            name: None,
            early_args: String::new(),
            trailing: String::new(),
        }
    }

    /// Calls started so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Feed more generated text.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        for c in text.chars() {
            self.step(c, &mut out);
        }
        if let State::Text { held } = &mut self.state {
            // Send all but what could still become the opening tag.
            let keep = (1..=held.len().min(OPEN.len() - 1))
                .rev()
                .find(|&n| {
                    held.is_char_boundary(held.len() - n)
                        && OPEN.starts_with(&held[held.len() - n..])
                })
                .unwrap_or(0);
            let send: String = held.drain(..held.len() - keep).collect();
            self.content(send, &mut out);
        }
        if let State::Response(s) = &mut self.state {
            let t = s.fresh();
            if !t.is_empty() {
                out.push(Piece::Content(t));
            }
        }
        merge(out)
    }

    /// The text has ended: send what was held back, and `{}` for a call without arguments.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        match std::mem::replace(&mut self.state, State::End) {
            State::Text { held } => self.content(held, &mut out),
            State::Call(_) | State::Generic(_) => self.end_call(&mut out),
            _ => {}
        }
        merge(out)
    }

    fn content(&mut self, text: String, out: &mut Vec<Piece>) {
        if text.is_empty() {
            return;
        }
        if self.calls > 0 && text.trim().is_empty() {
            self.trailing.push_str(&text);
            return;
        }
        let mut t = std::mem::take(&mut self.trailing);
        t.push_str(&text);
        out.push(Piece::Content(t));
    }

    fn start_call(&mut self) {
        self.args_sent = false;
        self.name = None;
        self.early_args.clear();
    }

    fn end_call(&mut self, out: &mut Vec<Piece>) {
        if self.name.is_none() {
            return;
        }
        if !self.args_sent {
            out.push(Piece::CallArgs {
                index: self.calls - 1,
                text: "{}".into(),
            });
        }
        self.name = None;
    }

    fn args(&mut self, c: char, out: &mut Vec<Piece>) {
        match &self.name {
            Some(_) => {
                self.args_sent = true;
                out.push(Piece::CallArgs {
                    index: self.calls - 1,
                    text: c.to_string(),
                });
            }
            None => self.early_args.push(c),
        }
    }

    fn named(&mut self, name: String, out: &mut Vec<Piece>) {
        self.calls += 1;
        out.push(Piece::CallStart {
            index: self.calls - 1,
            name: name.clone(),
        });
        self.name = Some(name);
        if !self.early_args.is_empty() {
            self.args_sent = true;
            out.push(Piece::CallArgs {
                index: self.calls - 1,
                text: std::mem::take(&mut self.early_args),
            });
        }
    }

    fn step(&mut self, c: char, out: &mut Vec<Piece>) {
        match &mut self.state {
            State::Text { held } => {
                held.push(c);
                if let Some(at) = held.find(OPEN) {
                    let before = held[..at].to_string();
                    self.content(before, out);
                    self.state = State::Between { in_list: false };
                }
            }
            State::Between { in_list } => match c {
                c if c.is_whitespace() => {}
                '[' if self.format == ToolFormat::ApiGen && !*in_list => *in_list = true,
                ',' if *in_list => {}
                '{' => {
                    self.start_call();
                    self.state = State::Call(Obj::KeyOrClose);
                }
                ']' if *in_list => self.state = State::Closing { matched: 0 },
                '<' => self.state = State::Closing { matched: 1 },
                _ => {}
            },
            State::Call(obj) => {
                let mut o = std::mem::replace(obj, Obj::Done);
                self.object(&mut o, c, out);
                if matches!(o, Obj::Done) {
                    self.end_call(out);
                    let in_list = self.format == ToolFormat::ApiGen;
                    self.state = State::Between { in_list };
                } else {
                    self.state = State::Call(o);
                }
            }
            State::Closing { matched } => {
                if CLOSE[*matched..].starts_with(c) {
                    *matched += c.len_utf8();
                    if *matched == CLOSE.len() {
                        self.state = State::Text {
                            held: String::new(),
                        };
                    }
                } else if !c.is_whitespace() {
                    // Not the closing tag: back to text.
                    self.state = State::Text {
                        held: c.to_string(),
                    };
                }
            }
            State::Generic(obj) => {
                let mut o = std::mem::replace(obj, Obj::Done);
                match &o {
                    Obj::Value { key, scan, .. }
                        if !scan.started && key == "tool_calls" && c == '[' =>
                    {
                        self.state = State::GenericCalls;
                        return;
                    }
                    Obj::Value { key, scan, .. }
                        if !scan.started && key == "response" && c == '"' =>
                    {
                        self.state = State::Response(StringValue::default());
                        return;
                    }
                    _ => {}
                }
                self.object(&mut o, c, out);
                self.state = if matches!(o, Obj::Done) {
                    State::End
                } else {
                    State::Generic(o)
                };
            }
            State::GenericCalls => match c {
                '{' => {
                    self.start_call();
                    self.state = State::Call(Obj::KeyOrClose);
                }
                ']' => self.state = State::End,
                _ => {}
            },
            State::Response(s) => {
                if s.closed {
                    return;
                }
                // A quote ends the string unless an odd number of backslashes precede it.
                let escaped = s.raw.chars().rev().take_while(|&x| x == '\\').count() % 2 == 1;
                s.raw.push(c);
                if c == '"' && !escaped {
                    s.closed = true;
                    let t = s.fresh();
                    if !t.is_empty() {
                        out.push(Piece::Content(t));
                    }
                    self.state = State::End;
                }
            }
            State::End => {}
        }
        // After a generic call list, more calls follow `,`: handled by GenericCalls; a call
        // object that ends returns to the list.
        if let (ToolFormat::Generic, State::Between { .. }) = (self.format, &self.state) {
            self.state = State::GenericCalls;
        }
    }

    /// One character of a call object (or of the generic top-level object, whose values other
    /// than `tool_calls`/`response` are skipped).
    fn object(&mut self, o: &mut Obj, c: char, out: &mut Vec<Piece>) {
        match o {
            Obj::Open => {
                if c == '{' {
                    *o = Obj::KeyOrClose;
                }
            }
            Obj::KeyOrClose => match c {
                '"' => {
                    *o = Obj::Key {
                        text: String::new(),
                        escaped: false,
                    }
                }
                '}' => *o = Obj::Done,
                _ => {}
            },
            Obj::Key { text, escaped } => {
                if *escaped {
                    *escaped = false;
                    text.push(c);
                } else if c == '\\' {
                    *escaped = true;
                } else if c == '"' {
                    *o = Obj::Colon(std::mem::take(text));
                } else {
                    text.push(c);
                }
            }
            Obj::Colon(key) => {
                if c == ':' {
                    *o = Obj::Value {
                        key: std::mem::take(key),
                        scan: ValueScan::default(),
                        text: String::new(),
                    };
                }
            }
            Obj::Value { key, scan, text } => {
                let is_args = key == "arguments" || key == "parameters";
                let r = scan.feed(c);
                if matches!(r, Scan::Inside | Scan::Last) {
                    if is_args {
                        self.args(c, out);
                    } else {
                        text.push(c);
                    }
                }
                if scan.done {
                    match key.as_str() {
                        "name" => {
                            let name = serde_json::from_str::<String>(text)
                                .unwrap_or_else(|_| text.clone());
                            self.named(name, out);
                        }
                        // Generic format: an answer that is JSON itself (a response_format).
                        "response" => out.push(Piece::Content(std::mem::take(text))),
                        _ => {}
                    }
                    // The character after a scalar may close the object.
                    *o = if r == Scan::After && c == '}' {
                        Obj::Done
                    } else {
                        Obj::KeyOrClose
                    };
                }
            }
            Obj::Done => {}
        }
    }
}

/// Adjacent pieces of the same kind joined, so a chunk carries one content delta and one
/// argument delta per call.
fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
    for p in pieces {
        match (out.last_mut(), p) {
            (Some(Piece::Content(a)), Piece::Content(b)) => a.push_str(&b),
            (
                Some(Piece::CallArgs { index: i, text: a }),
                Piece::CallArgs { index: j, text: b },
            ) if *i == j => a.push_str(&b),
            (_, p) => out.push(p),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Content and calls `(name, arguments)` of `text` fed in pieces of `step` characters.
    fn parse(format: ToolFormat, text: &str, step: usize) -> (String, Vec<(String, String)>) {
        let mut p = ToolCallParser::new(format);
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = Vec::new();
        for chunk in chars.chunks(step) {
            pieces.extend(p.push(&chunk.iter().collect::<String>()));
        }
        pieces.extend(p.finish());
        let mut content = String::new();
        let mut calls: Vec<(String, String)> = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Content(t) => content.push_str(&t),
                Piece::CallStart { index, name } => {
                    assert_eq!(index, calls.len());
                    calls.push((name, String::new()));
                }
                Piece::CallArgs { index, text } => calls[index].1.push_str(&text),
            }
        }
        (content, calls)
    }

    #[test]
    fn every_format_gives_the_same_calls_however_the_text_is_split() {
        let w = || {
            (
                "get_weather".to_string(),
                r#"{"city": "Paris, \"FR\"", "n": [1, {"a": 2}]}"#.to_string(),
            )
        };
        let t = || ("time".to_string(), "{}".to_string());
        let cases = [
            (ToolFormat::Hermes, "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris, \\\"FR\\\"\", \"n\": [1, {\"a\": 2}]}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>", "Let me check.\n"),
            (ToolFormat::ApiGen, "<tool_call>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris, \\\"FR\\\"\", \"n\": [1, {\"a\": 2}]}}, {\"name\": \"time\", \"arguments\": {}}]</tool_call>", ""),
            (ToolFormat::Generic, "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris, \\\"FR\\\"\", \"n\": [1, {\"a\": 2}]}}, {\"name\": \"time\"}]}", ""),
        ];
        for (format, text, content) in cases {
            for step in [1, 2, 3, 7, 1000] {
                let (c, calls) = parse(format, text, step);
                assert_eq!(c, content, "{format:?} step {step}");
                assert_eq!(calls, vec![w(), t()], "{format:?} step {step}");
                for (_, args) in &calls {
                    serde_json::from_str::<serde_json::Value>(args).unwrap();
                }
            }
        }
    }

    #[test]
    fn text_without_calls_is_content_and_partial_tags_are_held_back() {
        let mut p = ToolCallParser::new(ToolFormat::Hermes);
        assert_eq!(p.push("a < b <tool"), vec![Piece::Content("a < b ".into())]);
        assert_eq!(p.push("box>"), vec![Piece::Content("<toolbox>".into())]);
        assert_eq!(p.finish(), vec![]);
        let (c, calls) = parse(
            ToolFormat::Generic,
            r#"{"response": "caf\u00e9 \"ok\"\nbye"}"#,
            1,
        );
        assert_eq!(c, "café \"ok\"\nbye");
        assert!(calls.is_empty());
        let (c, _) = parse(ToolFormat::Generic, r#"{"response": {"a": [1, "}"]}}"#, 3);
        assert_eq!(c, r#"{"a": [1, "}"]}"#);
    }

    proptest::proptest! {
        /// Any text (any characters, any split) parses without a panic, and text with no call
        /// in it comes back whole as content.
        #[test]
        fn any_text_in_any_pieces_is_safe(text in "\\PC{0,60}", cuts in proptest::collection::vec(0usize..8, 0..20)) {
            for format in [ToolFormat::Hermes, ToolFormat::ApiGen, ToolFormat::Generic] {
                let mut p = ToolCallParser::new(format);
                let chars: Vec<char> = text.chars().collect();
                let (mut at, mut content) = (0usize, String::new());
                for n in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                    let end = at.saturating_add(*n).min(chars.len());
                    for piece in p.push(&chars[at..end].iter().collect::<String>()) {
                        if let Piece::Content(t) = piece { content.push_str(&t); }
                    }
                    at = end;
                }
                for piece in p.finish() {
                    if let Piece::Content(t) = piece { content.push_str(&t); }
                }
                if format != ToolFormat::Generic && !text.contains("<tool_call>") {
                    proptest::prop_assert_eq!(&content, &text);
                }
            }
        }

        /// The generic format's response string, however it is split and escaped.
        #[test]
        fn generic_responses_decode_whole(answer in "\\PC{0,40}", step in 1usize..6) {
            let text = serde_json::json!({"response": answer}).to_string();
            let (c, calls) = parse(ToolFormat::Generic, &text, step);
            proptest::prop_assert_eq!(c, answer);
            proptest::prop_assert!(calls.is_empty());
        }
    }

    #[test]
    fn a_call_cut_off_by_the_length_limit_keeps_what_it_had() {
        let (_, calls) = parse(
            ToolFormat::Hermes,
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1",
            4,
        );
        assert_eq!(calls, vec![("f".to_string(), "{\"x\": 1".to_string())]);
        let (_, calls) = parse(ToolFormat::Hermes, "<tool_call>\n{\"name\": \"f\"", 4);
        assert_eq!(calls, vec![("f".to_string(), "{}".to_string())]);
    }
}
