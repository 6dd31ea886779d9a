//! Incremental detokenization: text is emitted only once it is complete UTF-8, so a character
//! split across byte-fallback or byte-level tokens is never printed half-way. The state is owned
//! (no borrow of the tokenizer), so one shared tokenizer serves many concurrent streams.

use crate::{Error, Result, TokenId, Tokenizer};

/// Per-stream decoding state (see [`Tokenizer::decode_stream`]).
#[derive(Debug, Clone)]
pub struct DecodeStream {
    skip_special: bool,
    ids: Vec<TokenId>,
    prefix: String,
    prefix_index: usize,
}

impl DecodeStream {
    pub(crate) fn new(skip_special: bool) -> DecodeStream {
        DecodeStream {
            skip_special,
            ids: Vec::new(),
            prefix: String::new(),
            prefix_index: 0,
        }
    }

    /// Feed one token; returns the new text it completes, if any.
    pub fn step(&mut self, tok: &Tokenizer, id: TokenId) -> Result<Option<String>> {
        tok.check_ids(&[id])?;
        tokenizers::tokenizer::step_decode_stream(
            tok.hf(),
            vec![id],
            self.skip_special,
            &mut self.ids,
            &mut self.prefix,
            &mut self.prefix_index,
        )
        .map_err(|e| Error::Build(e.to_string()))
    }

    /// At the end of a generation: whatever is still held back (an incomplete character is
    /// rendered as U+FFFD rather than dropped).
    pub fn flush(&mut self, tok: &Tokenizer) -> Result<Option<String>> {
        let text = tok.decode(&self.ids, self.skip_special)?;
        let rest = text.get(self.prefix.len()..).unwrap_or("").to_string();
        self.ids.clear();
        self.prefix.clear();
        self.prefix_index = 0;
        Ok((!rest.is_empty()).then_some(rest))
    }
}
