use std::path::PathBuf;

/// Everything that can go wrong reading or writing a GGUF file. Each variant names what was being
/// read (key, tensor, field) so the message alone says where the file is broken.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or mapped.
    #[error("cannot open GGUF file {path}: {source}")]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: bad magic {found:02x?} (expected \"GGUF\")")]
    BadMagic {
        /// The bytes found instead.
        found: [u8; 4],
    },
    /// A GGUF version this reader does not handle.
    #[error("unsupported GGUF version {version} (supported: 2 and 3)")]
    UnsupportedVersion {
        /// Version field as read (little-endian).
        version: u32,
    },
    /// The file ends before a field it declares.
    #[error("truncated GGUF file: {what} needs {needed} bytes at offset {offset}, file has {len}")]
    Truncated {
        /// What was being read.
        what: String,
        /// Offset of the read.
        offset: u64,
        /// Bytes needed.
        needed: u64,
        /// File length.
        len: u64,
    },
    /// A metadata value type id outside the GGUF specification.
    #[error("unknown metadata value type {type_id} for key {key:?}")]
    UnknownValueType {
        /// Key being read.
        key: String,
        /// Type id found.
        type_id: u32,
    },
    /// A tensor type id outside ggml's type list.
    #[error("unknown tensor type id {type_id} for tensor {tensor:?}")]
    UnknownTensorType {
        /// Tensor name.
        tensor: String,
        /// Type id found.
        type_id: u32,
    },
    /// A string that is not valid UTF-8.
    #[error("invalid UTF-8 in {what}")]
    InvalidUtf8 {
        /// Which string.
        what: String,
    },
    /// Arithmetic on sizes or offsets overflowed 64 bits.
    #[error("integer overflow computing {what}")]
    Overflow {
        /// What was being computed.
        what: String,
    },
    /// A structural problem: bad dimension count, misaligned offset, overlapping data, etc.
    #[error("invalid GGUF file: {0}")]
    Invalid(String),
    /// A tensor's data range lies (partly) outside the file.
    #[error(
        "tensor {tensor:?}: data [{start}, {end}) lies outside the file's data section (file length {len})"
    )]
    TensorOutOfBounds {
        /// Tensor name.
        tensor: String,
        /// Absolute start offset.
        start: u64,
        /// Absolute end offset.
        end: u64,
        /// File length.
        len: u64,
    },
    /// A metadata key that was asked for is not in the file.
    #[error("missing metadata key {0:?}")]
    MissingKey(String),
    /// A metadata key holds a different type than the caller needs.
    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongType {
        /// Key.
        key: String,
        /// Expected type description.
        expected: &'static str,
        /// Found type.
        found: ValueTypeName,
    },
    /// A tensor that was asked for is not in the file.
    #[error("missing tensor {0:?}")]
    MissingTensor(String),
    /// Something the writer was asked to write is inconsistent.
    #[error("cannot write GGUF: {0}")]
    Write(String),
}

/// Printable name of a value type (kept separate so `Error` stays `Send + Sync + 'static`).
pub type ValueTypeName = &'static str;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
