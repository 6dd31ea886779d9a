//! Tokenizers for GGUF models: a Hugging Face `tokenizers` tokenizer built from the file's
//! vocabulary, llama.cpp's special-token and BOS/EOS rules, chat templates rendered with
//! `minijinja`, and streaming detokenization that never splits a UTF-8 character.
//!
//! Depends on `ferrite-gguf` only; the engine, server, router and bench use it.
//!
//! ```no_run
//! use ferrite_tokenizer::{EncodeOptions, Tokenizer};
//! let file = ferrite_gguf::GgufFile::open("model.gguf").unwrap();
//! let tok = Tokenizer::from_gguf(&file).unwrap();
//! let ids = tok.encode("Hello", EncodeOptions::default()).unwrap();
//! assert_eq!(tok.decode(&ids, true).unwrap(), "Hello");
//! ```
#![forbid(unsafe_code)]

mod bytes;
mod chat;
mod count;
mod stream;
mod vocab;

pub use bytes::TokenBytes;
pub use chat::{ChatMessage, ChatTemplate, TemplateSource};
pub use count::TextTokenizer;
pub use stream::DecodeStream;
pub use vocab::{TokenType, VocabKind};

use ferrite_gguf::GgufFile;

/// Token id.
pub type TokenId = u32;

/// Tokenizer errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing or malformed tokenizer metadata.
    #[error("tokenizer metadata: {0}")]
    Metadata(String),
    /// A tokenizer kind or option we do not implement.
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
    /// The file has no text vocabulary (llama.cpp's `none` and `test` tokenizer models, as in
    /// its random-weight test files): the model runs from token ids only.
    #[error("the model has no text vocabulary (tokenizer model {0:?}), so it cannot take text; run it from token ids with `ferrite eval logits --tokens 1,2,3`")]
    NoTextVocabulary(String),
    /// The HF tokenizer refused to build or run.
    #[error("tokenizer: {0}")]
    Build(String),
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab_size}")]
    BadToken {
        /// The id.
        id: TokenId,
        /// Vocabulary size.
        vocab_size: usize,
    },
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// GGUF access failed.
    #[error(transparent)]
    Gguf(#[from] ferrite_gguf::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// How to encode text.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// Add BOS/EOS as the model's metadata asks (`tokenizer.ggml.add_bos_token` etc.).
    pub add_special: bool,
    /// Turn the text of control tokens (`<|im_start|>`) into those tokens.
    pub parse_special: bool,
}

impl Default for EncodeOptions {
    /// llama.cpp's defaults for a prompt: add BOS/EOS per metadata, parse special tokens.
    fn default() -> Self {
        EncodeOptions {
            add_special: true,
            parse_special: true,
        }
    }
}

/// A tokenizer with its model's special-token rules and chat template.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    /// Parses control tokens in text.
    with_special: tokenizers::Tokenizer,
    /// Treats control-token text as plain text.
    without_special: tokenizers::Tokenizer,
    kind: VocabKind,
    tokens: Vec<String>,
    types: Vec<TokenType>,
    bos: Option<TokenId>,
    eos: Option<TokenId>,
    add_bos: bool,
    add_eos: bool,
    eog: Vec<TokenId>,
    template: Option<ChatTemplate>,
}

/// Control tokens that end a generation in the chat formats we know (llama.cpp's EOG set).
const EOG_TEXTS: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<eos>",
    "</s>",
    "<|return|>",
    "<|call|>",
];

impl Tokenizer {
    /// Build from a GGUF file's `tokenizer.*` metadata.
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer> {
        let v = vocab::build(f)?;
        let id_key = |k: &str| -> Result<Option<TokenId>> {
            match f.get(k) {
                None => Ok(None),
                Some(val) => {
                    let id = val
                        .as_u64()
                        .ok_or_else(|| Error::Metadata(format!("{k} is not an integer")))?;
                    if id as usize >= v.tokens.len() {
                        // llama.cpp tolerates some out-of-range ids (e.g. -1 as "none").
                        return Ok(None);
                    }
                    Ok(Some(id as TokenId))
                }
            }
        };
        let bos = id_key("tokenizer.ggml.bos_token_id")?;
        let eos = id_key("tokenizer.ggml.eos_token_id")?;
        let eot = id_key("tokenizer.ggml.eot_token_id")?;
        let flag = |k: &str, default: bool| f.get(k).and_then(|x| x.as_bool()).unwrap_or(default);
        // llama.cpp: SPM vocabularies add BOS unless told otherwise; BPE ones do not.
        let add_bos =
            flag("tokenizer.ggml.add_bos_token", v.kind == VocabKind::Spm) && bos.is_some();
        let add_eos = flag("tokenizer.ggml.add_eos_token", false) && eos.is_some();
        let mut eog: Vec<TokenId> = eos.into_iter().chain(eot).collect();
        for (i, (t, ty)) in v.tokens.iter().zip(&v.types).enumerate() {
            if *ty == TokenType::Control
                && EOG_TEXTS.contains(&t.as_str())
                && !eog.contains(&(i as u32))
            {
                eog.push(i as TokenId);
            }
        }
        let arch = f
            .get("general.architecture")
            .and_then(|x| x.as_str())
            .unwrap_or("");
        let bos_text = bos
            .map(|b| v.tokens[b as usize].clone())
            .unwrap_or_default();
        let eos_text = eos
            .map(|e| v.tokens[e as usize].clone())
            .unwrap_or_default();
        let template = match f.get("tokenizer.chat_template").and_then(|x| x.as_str()) {
            Some(src) => Some(ChatTemplate::new(
                src,
                TemplateSource::Gguf,
                &bos_text,
                &eos_text,
            )?),
            None if arch.starts_with("gemma") => Some(ChatTemplate::new(
                chat::GEMMA_TURN_TEMPLATE,
                TemplateSource::BuiltinGemma,
                &bos_text,
                &eos_text,
            )?),
            None => None,
        };
        let mut without_special = v.tokenizer.clone();
        without_special.set_encode_special_tokens(true);
        Ok(Tokenizer {
            with_special: v.tokenizer,
            without_special,
            kind: v.kind,
            tokens: v.tokens,
            types: v.types,
            bos,
            eos,
            add_bos,
            add_eos,
            eog,
            template,
        })
    }

    /// Encode text to token ids.
    pub fn encode(&self, text: &str, opts: EncodeOptions) -> Result<Vec<TokenId>> {
        let t = if opts.parse_special {
            &self.with_special
        } else {
            &self.without_special
        };
        let enc = t
            .encode_fast(text, false)
            .map_err(|e| Error::Build(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 2);
        if opts.add_special && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        if opts.add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// Decode ids to text; `skip_special` drops control tokens.
    pub fn decode(&self, ids: &[TokenId], skip_special: bool) -> Result<String> {
        self.check_ids(ids)?;
        self.with_special
            .decode(ids, skip_special)
            .map_err(|e| Error::Build(e.to_string()))
    }

    fn check_ids(&self, ids: &[TokenId]) -> Result<()> {
        match ids.iter().find(|&&i| i as usize >= self.tokens.len()) {
            Some(&id) => Err(Error::BadToken {
                id,
                vocab_size: self.tokens.len(),
            }),
            None => Ok(()),
        }
    }

    /// An incremental decoder that emits only complete UTF-8 text.
    pub fn decode_stream(&self, skip_special: bool) -> DecodeStream {
        DecodeStream::new(skip_special)
    }

    pub(crate) fn hf(&self) -> &tokenizers::Tokenizer {
        &self.with_special
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The stored text of a token (byte-level or `▁`-encoded as in the file).
    pub fn token_text(&self, id: TokenId) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// What every token stands for: its text bytes, or its name for a control token (for
    /// grammar engines, which match documents byte by byte).
    pub fn token_bytes(&self) -> Vec<TokenBytes> {
        bytes::token_bytes(self.kind, &self.tokens, &self.types)
    }

    /// A token's type.
    pub fn token_type(&self, id: TokenId) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// Vocabulary kind.
    pub fn kind(&self) -> VocabKind {
        self.kind
    }

    /// BOS id.
    pub fn bos(&self) -> Option<TokenId> {
        self.bos
    }

    /// EOS id.
    pub fn eos(&self) -> Option<TokenId> {
        self.eos
    }

    /// Whether encoding with `add_special` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `id` ends generation (EOS, EOT and the chat end-of-turn markers).
    pub fn is_end_of_generation(&self, id: TokenId) -> bool {
        self.eog.contains(&id)
    }

    /// All end-of-generation ids.
    pub fn end_of_generation_ids(&self) -> &[TokenId] {
        &self.eog
    }

    /// The model's chat template (or the built-in Gemma turn format for Gemma files without one).
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// Render `messages` with the chat template and encode the result. BOS is added only when the
    /// template did not already write it, so a prompt never starts with two.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<(String, Vec<TokenId>)> {
        self.encode_chat_with_tools(messages, None, add_generation_prompt)
    }

    /// [`encode_chat`](Self::encode_chat) with `tools` passed to the template.
    pub fn encode_chat_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<(String, Vec<TokenId>)> {
        self.encode_chat_with(
            messages,
            tools,
            &serde_json::Map::new(),
            add_generation_prompt,
        )
    }

    /// [`encode_chat_with_tools`](Self::encode_chat_with_tools) with extra template variables
    /// (`chat_template_kwargs`).
    pub fn encode_chat_with(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        kwargs: &serde_json::Map<String, serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<(String, Vec<TokenId>)> {
        let t = self.template.as_ref().ok_or_else(|| {
            Error::Template(
                "this model has no chat template (tokenizer.chat_template is absent)".into(),
            )
        })?;
        let text = t.render_with(messages, tools, kwargs, add_generation_prompt)?;
        let starts_with_bos = self
            .bos
            .and_then(|b| self.token_text(b))
            .is_some_and(|b| !b.is_empty() && text.starts_with(b));
        let ids = self.encode(
            &text,
            EncodeOptions {
                add_special: !starts_with_bos,
                parse_special: true,
            },
        )?;
        Ok((text, ids))
    }
}
