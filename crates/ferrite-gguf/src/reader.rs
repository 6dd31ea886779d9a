//! Validating GGUF reader.
//!
//! Layout (GGUF v2/v3, little-endian): magic `GGUF`, u32 version, u64 tensor count, u64 metadata
//! count, metadata key/value pairs, tensor infos (name, u32 n_dims, u64 dims, u32 type, u64
//! offset), padding to `general.alignment` (default 32), then tensor data. Every count is bounded by
//! the bytes left before anything is allocated, so a hostile header cannot make us allocate more
//! than a small multiple of the file's size.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::ggml_type::GgmlType;
use crate::value::{Array, Value, ValueType};

/// `GGUF` read as a little-endian u32.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Deepest array nesting we accept (real files use one level; this bounds recursion).
const MAX_ARRAY_DEPTH: u32 = 8;

/// Where a tensor's bytes are and how to read them.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost (contiguous) first, as ggml's `ne`.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Number of bytes of data.
    pub size_bytes: u64,
}

impl TensorInfo {
    /// Total number of elements.
    pub fn n_elements(&self) -> u64 {
        // Validated at parse time not to overflow.
        self.dims.iter().product()
    }

    /// Rows (product of all dims but the first) and columns (the first dim).
    pub fn rows_cols(&self) -> (u64, u64) {
        let cols = self.dims.first().copied().unwrap_or(1);
        let rows = self.dims.iter().skip(1).product();
        (rows, cols)
    }
}

enum Storage {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed, validated GGUF file. Tensor data is borrowed from the memory map, never copied.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-map and validate the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process. Another process truncating
        // the file underneath us is the one case mmap cannot protect against; model files are not
        // modified while in use.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(Storage::Mmap(map))
    }

    /// Validate a GGUF image held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::parse(Storage::Owned(bytes))
    }

    fn parse(storage: Storage) -> Result<GgufFile> {
        let header = parse_header(storage.bytes())?;
        let mut file = GgufFile {
            storage,
            version: header.version,
            alignment: header.alignment,
            data_offset: header.data_offset,
            metadata_index: HashMap::with_capacity(header.metadata.len()),
            metadata: header.metadata,
            tensor_index: HashMap::with_capacity(header.tensors.len()),
            tensors: header.tensors,
        };
        for (i, (k, _)) in file.metadata.iter().enumerate() {
            if file.metadata_index.insert(k.clone(), i).is_some() {
                return Err(Error::Invalid(format!("duplicate metadata key {k:?}")));
            }
        }
        for (i, t) in file.tensors.iter().enumerate() {
            if file.tensor_index.insert(t.name.clone(), i).is_some() {
                return Err(Error::Invalid(format!(
                    "duplicate tensor name {:?}",
                    t.name
                )));
            }
        }
        Ok(file)
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data-section alignment in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset where tensor data begins.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| Error::MissingKey(key.to_string()))
    }

    fn wrong(key: &str, expected: &'static str, v: &Value) -> Error {
        Error::WrongType {
            key: key.to_string(),
            expected,
            found: v.value_type().name(),
        }
    }

    /// A string value, or an error naming the key.
    pub fn metadata_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong(key, "string", v))
    }

    /// An unsigned integer value of any width.
    pub fn metadata_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| Self::wrong(key, "unsigned integer", v))
    }

    /// A float (or integer) value.
    pub fn metadata_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| Self::wrong(key, "number", v))
    }

    /// A bool value.
    pub fn metadata_bool(&self, key: &str) -> Result<bool> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| Self::wrong(key, "bool", v))
    }

    /// An array value.
    pub fn metadata_array(&self, key: &str) -> Result<&Array> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| Self::wrong(key, "array", v))
    }

    /// All tensor descriptors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// One tensor descriptor.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor (validated at open to lie inside the file).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        &self.storage.bytes()[start..start + info.size_bytes as usize]
    }

    /// Hand the pages holding a tensor's bytes back to the operating system, for a tensor that
    /// was copied at load and is rarely read again (weights repacked for the kernels): they
    /// leave this process's resident memory and stay in the page cache, and a later read of
    /// the tensor faults them back in with the same contents. Best effort; nothing for a file
    /// held in memory.
    pub fn release_tensor_pages(&self, info: &TensorInfo) {
        #[cfg(unix)]
        if let Storage::Mmap(map) = &self.storage {
            let start = (self.data_offset + info.offset) as usize;
            // SAFETY: the map is read-only and backed by the file (see `open`), never written:
            // MADV_DONTNEED only drops this process's mapping of the pages, so any slice of it,
            // now or later, reads the file's bytes exactly as before.
            // An error (a kernel without madvise) leaves the pages resident, nothing else.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    info.size_bytes as usize,
                )
            };
        }
        #[cfg(not(unix))]
        let _ = info;
    }

    /// Descriptor and bytes of a tensor by name.
    pub fn tensor_by_name(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self
            .tensor(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))?;
        Ok((info, self.tensor_data(info)))
    }

    /// The whole file image.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }
}

struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                len: self.bytes.len() as u64,
            });
        }
        let n = n as usize;
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let b = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| Error::InvalidUtf8 { what: what() })
    }

    /// Reserve capacity for `count` elements of at least `min_size` bytes each, refusing counts
    /// the remaining bytes cannot hold.
    fn bounded_count(&self, count: u64, min_size: u64, what: &dyn Fn() -> String) -> Result<usize> {
        let needed = count.checked_mul(min_size).ok_or_else(|| Error::Overflow {
            what: format!("size of {}", what()),
        })?;
        if needed > self.remaining() {
            return Err(Error::Truncated {
                what: format!("{} ({count} elements)", what()),
                offset: self.pos as u64,
                needed,
                len: self.bytes.len() as u64,
            });
        }
        Ok(count as usize)
    }
}

fn parse_header(bytes: &[u8]) -> Result<Header> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic: [u8; 4] = c.array(&|| "magic".into())?;
    if magic != GGUF_MAGIC {
        return Err(Error::BadMagic { found: magic });
    }
    let version = c.u32(&|| "version".into())?;
    if version != 2 && version != 3 {
        return Err(Error::UnsupportedVersion { version });
    }
    let n_tensors = c.u64(&|| "tensor count".into())?;
    let n_kv = c.u64(&|| "metadata count".into())?;
    // A key/value pair is at least 8 (key length) + 4 (type) + 1 bytes.
    let n_kv = c.bounded_count(n_kv, 13, &|| "metadata entries".into())?;
    let mut metadata = Vec::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = c.string(&|| format!("key of metadata entry {i}"))?;
        let type_id = c.u32(&|| format!("value type of {key:?}"))?;
        let vt = ValueType::from_id(type_id).ok_or_else(|| Error::UnknownValueType {
            key: key.clone(),
            type_id,
        })?;
        let value = read_value(&mut c, vt, &key, 0)?;
        metadata.push((key, value));
    }

    let mut alignment = DEFAULT_ALIGNMENT;
    if let Some((_, v)) = metadata.iter().find(|(k, _)| k == "general.alignment") {
        let a = match v {
            Value::U32(a) => u64::from(*a),
            other => {
                return Err(Error::WrongType {
                    key: "general.alignment".into(),
                    expected: "u32",
                    found: other.value_type().name(),
                })
            }
        };
        if a == 0 || !a.is_power_of_two() {
            return Err(Error::Invalid(format!(
                "general.alignment = {a} is not a power of two"
            )));
        }
        alignment = a;
    }

    // A tensor info is at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    let n_tensors = c.bounded_count(n_tensors, 24, &|| "tensor infos".into())?;
    let mut tensors = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("name of tensor {i}"))?;
        let n_dims = c.u32(&|| format!("n_dims of tensor {name:?}"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Error::Invalid(format!(
                "tensor {name:?} has {n_dims} dimensions (ggml allows 1 to {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| format!("dimension {d} of tensor {name:?}"))?);
        }
        let type_id = c.u32(&|| format!("type of tensor {name:?}"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| Error::UnknownTensorType {
            tensor: name.clone(),
            type_id,
        })?;
        let offset = c.u64(&|| format!("data offset of tensor {name:?}"))?;
        let size_bytes = tensor_size(&name, &dims, ggml_type)?;
        if offset % alignment != 0 {
            return Err(Error::Invalid(format!(
                "tensor {name:?} data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            size_bytes,
        });
    }

    let data_offset = (c.pos as u64)
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| Error::Overflow {
            what: "data section offset".into(),
        })?;
    let len = bytes.len() as u64;
    if !tensors.is_empty() && data_offset > len {
        return Err(Error::Truncated {
            what: "padding before the tensor data section".into(),
            offset: c.pos as u64,
            needed: data_offset - c.pos as u64,
            len,
        });
    }
    for t in &tensors {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.size_bytes));
        match (start, end) {
            (Some(_), Some(end)) if end <= len => {}
            _ => {
                return Err(Error::TensorOutOfBounds {
                    tensor: t.name.clone(),
                    start: data_offset.saturating_add(t.offset),
                    end: data_offset
                        .saturating_add(t.offset)
                        .saturating_add(t.size_bytes),
                    len,
                })
            }
        }
    }
    check_no_overlap(&tensors)?;
    Ok(Header {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
    })
}

fn tensor_size(name: &str, dims: &[u64], t: GgmlType) -> Result<u64> {
    let overflow = || Error::Overflow {
        what: format!("element count of tensor {name:?} (dims {dims:?})"),
    };
    // Zero dimensions are allowed (empty tensors), but the other dimensions must still have a
    // product that fits: callers multiply subsets of them (rows = product of dims[1..]).
    let mut nonzero: u64 = 1;
    for &d in dims.iter().filter(|&&d| d != 0) {
        nonzero = nonzero.checked_mul(d).ok_or_else(overflow)?;
    }
    // ggml stores element counts in int64.
    if nonzero > i64::MAX as u64 {
        return Err(overflow());
    }
    let n = if dims.contains(&0) { 0 } else { nonzero };
    let bs = t.block_size() as u64;
    if !dims[0].is_multiple_of(bs) {
        return Err(Error::Invalid(format!(
            "tensor {name:?}: first dimension {} is not a multiple of the {} block size {bs}",
            dims[0], t
        )));
    }
    (n / bs)
        .checked_mul(t.type_size() as u64)
        .ok_or_else(|| Error::Overflow {
            what: format!("byte size of tensor {name:?}"),
        })
}

fn check_no_overlap(tensors: &[TensorInfo]) -> Result<()> {
    let mut spans: Vec<(u64, u64, &str)> = tensors
        .iter()
        .filter(|t| t.size_bytes > 0)
        .map(|t| (t.offset, t.offset + t.size_bytes, t.name.as_str()))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(Error::Invalid(format!(
                "tensors {:?} and {:?} overlap in the data section",
                w[0].2, w[1].2
            )));
        }
    }
    Ok(())
}

fn read_value(c: &mut Cursor<'_>, vt: ValueType, key: &str, depth: u32) -> Result<Value> {
    let what = || format!("value of {key:?}");
    Ok(match vt {
        ValueType::U8 => Value::U8(c.array::<1>(&what)?[0]),
        ValueType::I8 => Value::I8(c.array::<1>(&what)?[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array(&what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array(&what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.array(&what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array(&what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array(&what)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.array(&what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array(&what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array(&what)?)),
        ValueType::Bool => {
            let b = c.array::<1>(&what)?[0];
            match b {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => {
                    return Err(Error::Invalid(format!(
                        "bool value {other} for key {key:?} (must be 0 or 1)"
                    )))
                }
            }
        }
        ValueType::String => Value::String(c.string(&what)?),
        ValueType::Array => Value::Array(read_array(c, key, depth)?),
    })
}

fn read_array(c: &mut Cursor<'_>, key: &str, depth: u32) -> Result<Array> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(Error::Invalid(format!(
            "arrays nested deeper than {MAX_ARRAY_DEPTH} levels in key {key:?}"
        )));
    }
    let type_id = c.u32(&|| format!("array element type of {key:?}"))?;
    let et = ValueType::from_id(type_id).ok_or_else(|| Error::UnknownValueType {
        key: key.to_string(),
        type_id,
    })?;
    let len = c.u64(&|| format!("array length of {key:?}"))?;
    let n = c.bounded_count(len, et.min_encoded_size(), &|| format!("array {key:?}"))?;
    let what = || format!("array {key:?}");

    macro_rules! fixed {
        ($variant:ident, $ty:ty) => {{
            const W: usize = std::mem::size_of::<$ty>();
            let raw = c.take((n * W) as u64, &what)?;
            Array::$variant(
                raw.chunks_exact(W)
                    .map(|b| <$ty>::from_le_bytes(b.try_into().expect("chunk of W bytes")))
                    .collect(),
            )
        }};
    }
    Ok(match et {
        ValueType::U8 => Array::U8(c.take(n as u64, &what)?.to_vec()),
        ValueType::I8 => Array::I8(c.take(n as u64, &what)?.iter().map(|&b| b as i8).collect()),
        ValueType::U16 => fixed!(U16, u16),
        ValueType::I16 => fixed!(I16, i16),
        ValueType::U32 => fixed!(U32, u32),
        ValueType::I32 => fixed!(I32, i32),
        ValueType::F32 => fixed!(F32, f32),
        ValueType::U64 => fixed!(U64, u64),
        ValueType::I64 => fixed!(I64, i64),
        ValueType::F64 => fixed!(F64, f64),
        ValueType::Bool => {
            let raw = c.take(n as u64, &what)?;
            let mut out = Vec::with_capacity(n);
            for (i, &b) in raw.iter().enumerate() {
                match b {
                    0 => out.push(false),
                    1 => out.push(true),
                    other => {
                        return Err(Error::Invalid(format!(
                            "bool value {other} at index {i} of array {key:?}"
                        )))
                    }
                }
            }
            Array::Bool(out)
        }
        ValueType::String => {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(c.string(&|| format!("element {i} of array {key:?}"))?);
            }
            Array::String(out)
        }
        ValueType::Array => {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(read_array(c, key, depth + 1)?);
            }
            Array::Array(out)
        }
    })
}
