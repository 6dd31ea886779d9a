//! Server-sent events as OpenAI-compatible servers send them: `data:` lines (with or without a
//! space after the colon), `:` comment lines (keep-alives), events separated by a blank line,
//! `data: [DONE]` at the end. Bytes may arrive split anywhere, including inside a UTF-8
//! character; the parser buffers until a whole line is there.

/// One parsed event.
#[derive(Debug, Clone, PartialEq)]
pub enum SseEvent {
    /// A `data:` payload that is not `[DONE]`.
    Data(String),
    /// `data: [DONE]`.
    Done,
}

/// Incremental parser.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    /// Feed received bytes; returns the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                self.dispatch(&mut out);
            } else if let Some(rest) = line.strip_prefix("data:") {
                self.data
                    .push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
            }
            // Comment lines (":" prefix) and other fields (event:, id:, retry:) are ignored.
        }
        out
    }

    /// End of stream: dispatch a final event not followed by a blank line.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            out.extend(self.feed(&rest));
            out.extend(self.feed(b"\n"));
        }
        self.dispatch(&mut out);
        out
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.data.is_empty() {
            return;
        }
        let data = self.data.join("\n");
        self.data.clear();
        out.push(if data.trim() == "[DONE]" {
            SseEvent::Done
        } else {
            SseEvent::Data(data)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_bytes_comments_and_both_data_spellings() {
        let stream = "data: {\"a\":1}\n\n: ping\n\ndata:{\"b\":\"é\"}\r\n\r\ndata: [DONE]\n\n";
        let bytes = stream.as_bytes();
        // Every split point, including inside the two-byte é.
        for cut in 0..bytes.len() {
            let mut p = SseParser::default();
            let mut ev = p.feed(&bytes[..cut]);
            ev.extend(p.feed(&bytes[cut..]));
            ev.extend(p.finish());
            assert_eq!(
                ev,
                vec![
                    SseEvent::Data("{\"a\":1}".into()),
                    SseEvent::Data("{\"b\":\"é\"}".into()),
                    SseEvent::Done
                ],
                "cut at {cut}"
            );
        }
        // A last event without the blank line is still delivered.
        let mut p = SseParser::default();
        assert!(p.feed(b"data: x").is_empty());
        assert_eq!(p.finish(), vec![SseEvent::Data("x".into())]);
    }
}
