//! GGUF files: a validating reader over a memory map and a writer.
//!
//! GGUF is llama.cpp's model container: a header, typed key/value metadata, tensor descriptors and
//! aligned tensor data. Everything the reader returns has been checked against the file first: a
//! truncated file, a bad magic, an unknown value or tensor type, a tensor whose bytes lie outside
//! the file or an integer overflow gives an [`Error`] naming the key or tensor at fault. Nothing
//! panics on malformed input (a fuzz target in `fuzz/` holds the reader to that).
//!
//! This crate must not depend on any other ferrite crate: kernels, models and tokenizers all read
//! through it.
//!
//! ```
//! use ferrite_gguf::{GgmlType, GgufFile, GgufWriter, Value};
//! let mut w = GgufWriter::new();
//! w.add_metadata("general.architecture", Value::String("llama".into()));
//! w.add_tensor("t", &[2], GgmlType::F32, &[0u8; 8]).unwrap();
//! let bytes = w.to_bytes().unwrap();
//! let file = GgufFile::from_bytes(bytes).unwrap();
//! assert_eq!(file.metadata_str("general.architecture").unwrap(), "llama");
//! assert_eq!(file.tensor("t").unwrap().dims, vec![2]);
//! ```
#![deny(missing_docs)]

mod error;
mod ggml_type;
mod reader;
mod value;
mod writer;

pub use error::{Error, Result};
pub use ggml_type::GgmlType;
pub use reader::{GgufFile, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC};
pub use value::{Array, Value, ValueType};
pub use writer::GgufWriter;
