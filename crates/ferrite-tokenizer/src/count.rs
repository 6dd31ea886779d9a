//! Counting tokens of plain text with a model's tokenizer, loaded from a GGUF file's metadata or
//! a Hugging Face `tokenizer.json` (`ferrite bench --tokenizer`, for servers that report no
//! usage). Text is encoded as generated text: no BOS/EOS, control-token text left as text.

use std::path::Path;

use crate::{EncodeOptions, Error, Result, Tokenizer};

/// A tokenizer used only to count.
#[derive(Debug)]
pub enum TextTokenizer {
    /// From a GGUF file's `tokenizer.*` metadata.
    Gguf(Box<Tokenizer>),
    /// From a Hugging Face `tokenizer.json`.
    Hf(Box<tokenizers::Tokenizer>),
}

impl TextTokenizer {
    /// Open `path`: a GGUF file (by its magic) or a `tokenizer.json`.
    pub fn open(path: &Path) -> Result<TextTokenizer> {
        let mut magic = [0u8; 4];
        let is_gguf = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .map(|_| &magic == b"GGUF");
        match is_gguf {
            Err(e) => Err(Error::Build(format!("{}: {e}", path.display()))),
            Ok(true) => {
                let f = ferrite_gguf::GgufFile::open(path)?;
                Ok(TextTokenizer::Gguf(Box::new(Tokenizer::from_gguf(&f)?)))
            }
            Ok(false) => tokenizers::Tokenizer::from_file(path)
                .map(|t| TextTokenizer::Hf(Box::new(t)))
                .map_err(|e| {
                    Error::Build(format!(
                        "{}: neither a GGUF file nor a tokenizer.json ({e})",
                        path.display()
                    ))
                }),
        }
    }

    /// Tokens of `text`.
    pub fn count(&self, text: &str) -> Result<usize> {
        match self {
            TextTokenizer::Gguf(t) => Ok(t
                .encode(
                    text,
                    EncodeOptions {
                        add_special: false,
                        parse_special: false,
                    },
                )?
                .len()),
            TextTokenizer::Hf(t) => t
                .encode(text, false)
                .map(|e| e.len())
                .map_err(|e| Error::Build(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_a_tokenizer_json_and_refuses_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(
            &p,
            r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
                "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
                "post_processor": null, "decoder": null,
                "model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1, "[UNK]": 2},
                          "unk_token": "[UNK]"}}"#,
        )
        .unwrap();
        let t = TextTokenizer::open(&p).unwrap();
        assert_eq!(t.count("a b a zz").unwrap(), 4);
        let bad = dir.path().join("notes.txt");
        std::fs::write(&bad, "hello").unwrap();
        let e = TextTokenizer::open(&bad).unwrap_err().to_string();
        assert!(
            e.contains("neither a GGUF file nor a tokenizer.json"),
            "{e}"
        );
        let e = TextTokenizer::open(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn counts_with_a_gguf_vocabulary_without_special_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tiny.gguf");
        // Byte-level BPE without merges: one token per byte, BOS not added for counting.
        let mut m = ferrite_testkit::TinyModel::new(ferrite_testkit::TinyArch::Llama);
        m.add_bos = true;
        m.write_to(&p).unwrap();
        let t = TextTokenizer::open(&p).unwrap();
        assert!(matches!(t, TextTokenizer::Gguf(_)));
        assert_eq!(t.count("hello").unwrap(), 5);
        assert_eq!(t.count("<|im_end|>").unwrap(), "<|im_end|>".len());
    }
}
