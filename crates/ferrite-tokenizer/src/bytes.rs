//! The bytes each token stands for, as llama.cpp's `token_to_piece` gives them: what a grammar
//! engine needs to know which tokens can extend a document (llguidance builds its token trie
//! from these).
//!
//! - Byte-level BPE (`gpt2`): a normal token's characters are GPT-2's byte-to-unicode stand-ins
//!   (`Ġ` for a space); each maps back to one byte.
//! - SentencePiece (`llama`): `▁` is a space, `<0xXX>` byte tokens are that byte.
//! - Control and unknown tokens are not text: they are reported as special, with their name.
//! - User-defined tokens are their text as written.

use crate::vocab::{TokenType, VocabKind};

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenBytes {
    /// Text bytes (possibly part of a UTF-8 character).
    Text(Vec<u8>),
    /// A control token (`<|im_end|>`), by name: it produces no text.
    Special(String),
}

/// GPT-2's byte-to-unicode table, inverted: the byte a stand-in character encodes. Printable
/// bytes stand for themselves; the other 68 are shifted to 256 + their rank.
fn byte_level_inverse() -> [Option<u8>; 324] {
    let mut inv = [None; 324];
    let mut shifted = 0usize;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let ch = if printable {
            b as usize
        } else {
            shifted += 1;
            255 + shifted
        };
        inv[ch] = Some(b);
    }
    inv
}

/// The bytes of every token of a vocabulary.
pub(crate) fn token_bytes(
    kind: VocabKind,
    tokens: &[String],
    types: &[TokenType],
) -> Vec<TokenBytes> {
    let inv = byte_level_inverse();
    tokens
        .iter()
        .zip(types)
        .map(|(t, ty)| match ty {
            TokenType::Control | TokenType::Unknown => TokenBytes::Special(t.clone()),
            TokenType::Unused => TokenBytes::Text(Vec::new()),
            TokenType::UserDefined => TokenBytes::Text(t.as_bytes().to_vec()),
            TokenType::Byte => {
                TokenBytes::Text(byte_token(t).map_or_else(|| t.as_bytes().to_vec(), |b| vec![b]))
            }
            TokenType::Normal => TokenBytes::Text(match kind {
                VocabKind::Bpe => {
                    let mut out = Vec::with_capacity(t.len());
                    for c in t.chars() {
                        match inv.get(c as usize).copied().flatten() {
                            Some(b) => out.push(b),
                            // Not a stand-in: the character itself (never in a well-formed file).
                            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                        }
                    }
                    out
                }
                VocabKind::Spm => t.replace('▁', " ").into_bytes(),
            }),
        })
        .collect()
}

/// `<0xAB>` → 0xAB.
fn byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_stand_ins_map_back_to_every_byte_once() {
        let inv = byte_level_inverse();
        let mut seen: Vec<u8> = inv.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..=255).collect::<Vec<u8>>());
        // Space is Ġ (U+0120), newline Ċ (U+010A), as in every GPT-2 vocabulary.
        assert_eq!(inv['Ġ' as usize], Some(b' '));
        assert_eq!(inv['Ċ' as usize], Some(b'\n'));
        assert_eq!(inv['a' as usize], Some(b'a'));
    }

    #[test]
    fn tokens_of_both_kinds_give_their_bytes() {
        let toks = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let n = TokenType::Normal;
        let got = token_bytes(
            VocabKind::Bpe,
            &toks(&["Ġhello", "<|im_end|>", "Ã©"]),
            &[n, TokenType::Control, n],
        );
        assert_eq!(got[0], TokenBytes::Text(b" hello".to_vec()));
        assert_eq!(got[1], TokenBytes::Special("<|im_end|>".into()));
        assert_eq!(got[2], TokenBytes::Text("é".as_bytes().to_vec()));
        let got = token_bytes(
            VocabKind::Spm,
            &toks(&["▁the", "<0x0A>", "<eos>"]),
            &[n, TokenType::Byte, TokenType::Control],
        );
        assert_eq!(got[0], TokenBytes::Text(b" the".to_vec()));
        assert_eq!(got[1], TokenBytes::Text(vec![b'\n']));
        assert_eq!(got[2], TokenBytes::Special("<eos>".into()));
    }
}
