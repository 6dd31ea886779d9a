//! Build a Hugging Face `tokenizers` tokenizer from GGUF vocabulary metadata.
//!
//! Two vocabulary kinds are supported, as llama.cpp names them in `tokenizer.ggml.model`:
//! - `gpt2`: byte-level BPE with merges; the pre-tokenizer regex comes from `tokenizer.ggml.pre`
//!   (`smollm` splits digits one by one, then applies the GPT-2 regex, as llama.cpp does).
//! - `llama`: SentencePiece with scores. llama.cpp merges the adjacent pair whose concatenation is
//!   the highest-scoring vocabulary entry, leftmost first; a BPE whose merge ranks are the
//!   vocabulary entries ordered by score is the same algorithm, so we derive one merge per way of
//!   splitting each entry into two entries. Unknown characters fall back to `<0xXX>` byte tokens.
//!
//! Control tokens become special added tokens (matched in text only when special-token parsing
//! is on); user-defined tokens are always matched, as in llama.cpp.

use ahash::AHashMap;
use ferrite_gguf::GgufFile;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

use crate::{Error, Result};

/// llama.cpp token types (`llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// Ordinary vocabulary entry.
    Normal,
    /// The unknown token.
    Unknown,
    /// Control token (BOS, EOS, chat markers): special.
    Control,
    /// User-defined token, always matched as a whole in text.
    UserDefined,
    /// Reserved, never produced by tokenization.
    Unused,
    /// `<0xXX>` byte-fallback token.
    Byte,
}

impl TokenType {
    fn from_i64(v: i64) -> TokenType {
        match v {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        }
    }
}

/// Vocabulary kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// Byte-level BPE (`gpt2`).
    Bpe,
    /// SentencePiece with scores (`llama`).
    Spm,
}

/// What [`build`] extracts besides the tokenizer itself.
pub(crate) struct GgufVocab {
    pub kind: VocabKind,
    pub tokens: Vec<String>,
    pub types: Vec<TokenType>,
    pub tokenizer: tokenizers::Tokenizer,
}

const LLAMA3_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn tk(e: impl std::fmt::Display) -> Error {
    Error::Build(e.to_string())
}

pub(crate) fn build(f: &GgufFile) -> Result<GgufVocab> {
    let model = f.metadata_str("tokenizer.ggml.model")?.to_string();
    if matches!(model.as_str(), "none" | "test") {
        return Err(Error::NoTextVocabulary(model));
    }
    let tokens: Vec<String> = f
        .metadata_array("tokenizer.ggml.tokens")?
        .as_strings()
        .ok_or_else(|| Error::Metadata("tokenizer.ggml.tokens is not a string array".into()))?
        .to_vec();
    if tokens.is_empty() {
        return Err(Error::Metadata("tokenizer.ggml.tokens is empty".into()));
    }
    let types: Vec<TokenType> = match f.get("tokenizer.ggml.token_type") {
        Some(v) => {
            let arr = v.as_array().and_then(|a| a.to_i64_vec()).ok_or_else(|| {
                Error::Metadata("tokenizer.ggml.token_type is not an integer array".into())
            })?;
            if arr.len() != tokens.len() {
                return Err(Error::Metadata(format!(
                    "tokenizer.ggml.token_type has {} entries for {} tokens",
                    arr.len(),
                    tokens.len()
                )));
            }
            arr.into_iter().map(TokenType::from_i64).collect()
        }
        None => vec![TokenType::Normal; tokens.len()],
    };
    let mut vocab: AHashMap<String, u32> = AHashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        // Keep the first id of a duplicated string, so ids stay stable.
        vocab.entry(t.clone()).or_insert(i as u32);
    }
    let add_space_prefix = f
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.as_bool());

    let (kind, mut tokenizer) = match model.as_str() {
        "gpt2" => {
            let merges = read_merges(f)?;
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .build()
                .map_err(tk)?;
            let pre = f
                .get("tokenizer.ggml.pre")
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            let mut t = tokenizers::Tokenizer::new(bpe);
            t.with_pre_tokenizer(Some(bpe_pre_tokenizer(pre)?));
            t.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
            (VocabKind::Bpe, t)
        }
        "llama" => {
            let scores = f
                .metadata_array("tokenizer.ggml.scores")?
                .to_f32_vec()
                .ok_or_else(|| Error::Metadata("tokenizer.ggml.scores is not numeric".into()))?;
            if scores.len() != tokens.len() {
                return Err(Error::Metadata(format!(
                    "tokenizer.ggml.scores has {} entries for {} tokens",
                    scores.len(),
                    tokens.len()
                )));
            }
            let merges = spm_merges(&tokens, &types, &scores, &vocab);
            let unk = tokens
                .iter()
                .zip(&types)
                .find(|(_, t)| **t == TokenType::Unknown)
                .map(|(s, _)| s.clone());
            let mut b = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .byte_fallback(true)
                .fuse_unk(true);
            if let Some(unk) = unk {
                b = b.unk_token(unk);
            }
            let bpe = b.build().map_err(tk)?;
            let prefix = add_space_prefix.unwrap_or(true);
            let mut t = tokenizers::Tokenizer::new(bpe);
            let replace = NormalizerWrapper::Replace(Replace::new(" ", "▁").map_err(tk)?);
            let normalizer = if prefix {
                NormalizerWrapper::Sequence(tokenizers::normalizers::Sequence::new(vec![
                    NormalizerWrapper::Prepend(Prepend::new("▁".into())),
                    replace,
                ]))
            } else {
                replace
            };
            t.with_normalizer(Some(normalizer));
            let mut decoders = vec![
                DecoderWrapper::Replace(Replace::new("▁", " ").map_err(tk)?),
                DecoderWrapper::ByteFallback(ByteFallback::default()),
                DecoderWrapper::Fuse(Fuse::default()),
            ];
            if prefix {
                decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
            }
            t.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(
                decoders,
            ))));
            (VocabKind::Spm, t)
        }
        other => {
            return Err(Error::Unsupported(format!(
                "tokenizer model {other:?} (supported: gpt2, llama)"
            )))
        }
    };

    let mut special = Vec::new();
    let mut user = Vec::new();
    for (t, ty) in tokens.iter().zip(&types) {
        if t.is_empty() {
            continue;
        }
        match ty {
            TokenType::Control | TokenType::Unknown => {
                special.push(AddedToken::from(t.clone(), true).normalized(false))
            }
            TokenType::UserDefined => {
                user.push(AddedToken::from(t.clone(), false).normalized(false))
            }
            _ => {}
        }
    }
    tokenizer.add_special_tokens(&special);
    tokenizer.add_tokens(&user);
    Ok(GgufVocab {
        kind,
        tokens,
        types,
        tokenizer,
    })
}

fn read_merges(f: &GgufFile) -> Result<Vec<(String, String)>> {
    let merges = f
        .metadata_array("tokenizer.ggml.merges")?
        .as_strings()
        .ok_or_else(|| Error::Metadata("tokenizer.ggml.merges is not a string array".into()))?;
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::Metadata(format!("merge {i} ({m:?}) has no space")))
        })
        .collect()
}

fn bpe_pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let byte_level = |regex: bool| {
        PreTokenizerWrapper::ByteLevel(
            ByteLevel::default()
                .add_prefix_space(false)
                .use_regex(regex),
        )
    };
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        Ok(PreTokenizerWrapper::Split(
            Split::new(
                SplitPattern::Regex(pattern.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tk)?,
        ))
    };
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" | "phi-2" => byte_level(true),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            PreTokenizerWrapper::Sequence(PreSequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level(true),
            ]))
        }
        "llama3" | "llama-bpe" | "falcon3" | "pixtral" => {
            PreTokenizerWrapper::Sequence(PreSequence::new(vec![split(LLAMA3_PATTERN)?, byte_level(false)]))
        }
        "qwen2" | "deepseek-r1-qwen" => {
            PreTokenizerWrapper::Sequence(PreSequence::new(vec![split(QWEN2_PATTERN)?, byte_level(false)]))
        }
        other => {
            return Err(Error::Unsupported(format!(
                "BPE pre-tokenizer {other:?} (supported: default, gpt2, smollm, starcoder, llama3, qwen2)"
            )))
        }
    })
}

/// One merge per way of writing a vocabulary entry as the concatenation of two entries, ranked
/// by the entry's score (highest first): SentencePiece-by-score as BPE.
fn spm_merges(
    tokens: &[String],
    types: &[TokenType],
    scores: &[f32],
    vocab: &AHashMap<String, u32>,
) -> Vec<(String, String)> {
    let mut cand: Vec<(f32, u32, usize)> = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        if types[id] == TokenType::Byte || tok.chars().nth(1).is_none() {
            continue;
        }
        if vocab.get(tok.as_str()) != Some(&(id as u32)) {
            continue; // a duplicate string: the first id wins
        }
        for (k, _) in tok.char_indices().skip(1) {
            if vocab.contains_key(&tok[..k]) && vocab.contains_key(&tok[k..]) {
                cand.push((scores[id], id as u32, k));
            }
        }
    }
    cand.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
    });
    cand.into_iter()
        .map(|(_, id, k)| {
            let t = &tokens[id as usize];
            (t[..k].to_string(), t[k..].to_string())
        })
        .collect()
}
