//! Constrained decoding with `llguidance`: a request may carry a grammar (a JSON schema, a
//! regular expression or a Lark grammar) that its output must match.
//!
//! - Per model, one [`GrammarCompiler`]: a token trie built from the GGUF vocabulary (each
//!   token's bytes, control tokens marked special, every end-of-generation token as EOS) and one
//!   shared `ParserFactory`. Building it takes 0.1–2 s (the vocabulary's size), so it is built
//!   once, at load.
//! - Per request, a [`Constraint`] (an llguidance `Matcher`): before each token is sampled, the
//!   tokens the grammar cannot take are masked to −∞ (before penalties, temperature and the
//!   top-k/top-p/min-p cuts, and for every row of a speculative verification); end-of-generation
//!   tokens are allowed only where the grammar accepts; the sampled token is consumed; a grammar
//!   that can take nothing more ends the request with `stop`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_tokenizer::{EncodeOptions, TokenBytes, Tokenizer, VocabKind};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::{Error, Result};

/// What a request's output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// A JSON schema. Keywords llguidance does not support are an error naming them; whitespace
    /// between tokens is bounded (see [`JSON_WHITESPACE`]) unless the schema sets `x-guidance`.
    JsonSchema(Value),
    /// A regular expression (Rust `regex` syntax), matched by the whole output.
    Regex(String),
    /// One of these strings exactly.
    Choice(Vec<String>),
    /// A grammar in llguidance's Lark dialect (`%json {…}` inlines a schema).
    Lark(String),
}

/// Whitespace allowed at each place JSON allows it: at most 16 characters, so a small model
/// cannot fill `max_tokens` with blank lines (vLLM #38696).
pub const JSON_WHITESPACE: &str = r"[\x20\x0A\x0D\x09]{1,16}";

impl GrammarSpec {
    /// The llguidance grammar.
    fn top_level(&self) -> TopLevelGrammar {
        match self {
            GrammarSpec::JsonSchema(schema) => TopLevelGrammar::from_json_schema(bounded(schema)),
            GrammarSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
            GrammarSpec::Choice(options) => {
                let alternatives: Vec<String> = options.iter().map(|o| regex_escape(o)).collect();
                TopLevelGrammar::from_regex(&alternatives.join("|"))
            }
            GrammarSpec::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
        }
    }
}

/// `schema` with bounded whitespace, unless it chose its own (`x-guidance`).
pub fn bounded(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Value::Object(o) = &mut s {
        o.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({"whitespace_pattern": JSON_WHITESPACE}));
    }
    s
}

/// `text` as a regex matching exactly it.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The model's vocabulary as llguidance sees it.
struct VocabEnv {
    trie: TokTrie,
    tokenizer: Tokenizer,
    canonical: bool,
}

impl TokenizerEnv for VocabEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        // The model's own split where the bytes are text a byte-level BPE encodes as-is;
        // SentencePiece prepends a space to what it encodes, so there the trie's greedy split.
        let plain = EncodeOptions {
            add_special: false,
            parse_special: false,
        };
        match std::str::from_utf8(s) {
            Ok(text) if self.canonical => self
                .tokenizer
                .encode(text, plain)
                .unwrap_or_else(|_| self.trie.greedy_tokenize(s)),
            _ => self.trie.greedy_tokenize(s),
        }
    }

    fn tokenize_is_canonical(&self) -> bool {
        self.canonical
    }
}

/// Per model: the token trie and the shared parser factory.
pub struct GrammarCompiler {
    factory: Arc<ParserFactory>,
    vocab: usize,
    eog: Arc<[u32]>,
    built_in: Duration,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler")
            .field("vocab", &self.vocab)
            .field("built_in", &self.built_in)
            .finish_non_exhaustive()
    }
}

impl GrammarCompiler {
    /// Build the token trie from `tokenizer`'s vocabulary.
    pub fn new(tokenizer: &Tokenizer) -> Result<GrammarCompiler> {
        let started = Instant::now();
        let eog: Vec<u32> = tokenizer.end_of_generation_ids().to_vec();
        let Some(&eos) = eog.first() else {
            return Err(Error::Grammar(
                "the vocabulary has no end-of-generation token; constrained decoding needs one"
                    .into(),
            ));
        };
        let words: Vec<Vec<u8>> = tokenizer
            .token_bytes()
            .into_iter()
            .map(|b| match b {
                TokenBytes::Text(t) => t,
                TokenBytes::Special(name) => {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(name.as_bytes());
                    w
                }
            })
            .collect();
        let mut info = TokRxInfo::new(words.len() as u32, eos);
        info.tok_bos = tokenizer.bos();
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&eog);
        let env = VocabEnv {
            trie,
            tokenizer: tokenizer.clone(),
            canonical: tokenizer.kind() == VocabKind::Bpe,
        };
        let env: llguidance::toktrie::TokEnv = Arc::new(env);
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| Error::Grammar(format!("cannot set up the grammar engine: {e}")))?;
        // Errors go back to the client; nothing is printed.
        factory.quiet();
        Ok(GrammarCompiler {
            factory: Arc::new(factory),
            vocab: words.len(),
            eog: eog.into(),
            built_in: started.elapsed(),
        })
    }

    /// How long building the token trie and factory took.
    pub fn build_time(&self) -> Duration {
        self.built_in
    }

    /// Compile `spec` for one request. The error says what is wrong with it (a keyword llguidance
    /// does not support is named).
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Constraint> {
        let parser = self.factory.create_parser(spec.top_level());
        let matcher = Matcher::new(parser);
        if let Some(e) = matcher.get_error() {
            return Err(Error::Grammar(e));
        }
        Ok(Constraint {
            matcher,
            vocab: self.vocab,
            eog: self.eog.clone(),
        })
    }
}

/// One request's grammar state.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    vocab: usize,
    eog: Arc<[u32]>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stopped", &self.matcher.is_stopped())
            .finish_non_exhaustive()
    }
}

impl Constraint {
    /// Set the logits of every token the grammar cannot take next to −∞ (ids past the
    /// vocabulary too). End-of-generation tokens stay only where the grammar accepts; with
    /// `no_eog` (the request ignores EOS) they go too, unless nothing else is left. Returns the
    /// time spent computing the mask.
    pub fn mask(&mut self, logits: &mut [f32], no_eog: bool) -> Result<Duration> {
        let started = Instant::now();
        let mask = self
            .matcher
            .compute_mask()
            .map_err(|e| Error::Grammar(format!("computing the token mask: {e}")))?;
        let took = started.elapsed();
        let words = mask.as_slice();
        for (w, chunk) in logits.chunks_mut(32).enumerate() {
            let bits = words.get(w).copied().unwrap_or(0);
            if bits == 0 {
                chunk.fill(f32::NEG_INFINITY);
                continue;
            }
            if bits == u32::MAX {
                continue;
            }
            // Bits past the vocabulary are clear, so those ids go to −∞ too.
            for (b, l) in chunk.iter_mut().enumerate() {
                if bits & (1 << b) == 0 {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        if no_eog {
            let others = mask.num_set() > self.eog.iter().filter(|&&t| mask.is_allowed(t)).count();
            if others {
                for &t in self.eog.iter() {
                    if let Some(l) = logits.get_mut(t as usize) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
        }
        Ok(took)
    }

    /// Whether the grammar takes `token` next (end-of-generation: where it accepts, unless
    /// `no_eog`), without computing the whole mask.
    pub fn allows(&mut self, token: u32, no_eog: bool) -> bool {
        if self.eog.contains(&token) {
            return !no_eog && self.is_accepting();
        }
        (token as usize) < self.vocab && self.matcher.validate_tokens(&[token]).unwrap_or(0) == 1
    }

    /// Consume a sampled token. End-of-generation tokens end the request without entering the
    /// grammar. Returns whether the grammar can take nothing more (the request is complete).
    pub fn advance(&mut self, token: u32) -> Result<bool> {
        if self.eog.contains(&token) {
            return Ok(true);
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| Error::Grammar(format!("token {token} does not fit the grammar: {e}")))?;
        Ok(self.matcher.is_stopped())
    }

    /// How many of `tokens` (drafts) the grammar takes in order from the current state, without
    /// consuming them.
    pub fn valid_prefix(&mut self, tokens: &[u32]) -> usize {
        // An end-of-generation draft would end the request: keep drafts before it only.
        let upto = tokens
            .iter()
            .position(|t| self.eog.contains(t))
            .unwrap_or(tokens.len());
        self.matcher.validate_tokens(&tokens[..upto]).unwrap_or(0)
    }

    /// Whether the output so far is a complete match.
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }
}
