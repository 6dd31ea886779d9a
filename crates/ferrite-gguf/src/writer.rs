//! GGUF v3 writer. Tests use it to write tiny synthetic models; `ferrite quantize` writes real
//! ones. Tensors are laid out in the order added, each at an aligned offset.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::ggml_type::GgmlType;
use crate::reader::{DEFAULT_ALIGNMENT, GGUF_MAGIC};
use crate::value::{Array, Value};

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF file in memory, then writes it out.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl std::fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Set a metadata key (replacing an earlier value for the same key).
    pub fn add_metadata(&mut self, key: &str, value: Value) {
        if let Some(slot) = self.metadata.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.metadata.push((key.to_string(), value));
        }
    }

    /// Add a tensor with its raw (already encoded) bytes. `dims` are innermost first.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ggml_type: GgmlType,
        data: &[u8],
    ) -> Result<()> {
        if dims.is_empty() || dims.len() > 4 {
            return Err(Error::Write(format!(
                "tensor {name:?} has {} dimensions",
                dims.len()
            )));
        }
        let n: u64 = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::Write(format!("tensor {name:?}: element count overflows")))?;
        let bytes = ggml_type
            .row_bytes(dims[0])
            .map(|row| row * (n / dims[0].max(1)));
        let expected = if n == 0 { Some(0) } else { bytes };
        if expected != Some(data.len() as u64) {
            return Err(Error::Write(format!(
                "tensor {name:?}: {} bytes given, {ggml_type} {dims:?} needs {expected:?}",
                data.len()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(Error::Write(format!("duplicate tensor {name:?}")));
        }
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ggml_type,
            data: data.to_vec(),
        });
        Ok(())
    }

    /// Replace the bytes of tensor `name` with `data` of the same length (tests that edit a
    /// generated model).
    pub fn replace_tensor_data(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let t = self
            .tensors
            .iter_mut()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::Write(format!("no tensor {name:?} to replace")))?;
        if t.data.len() != data.len() {
            return Err(Error::Write(format!(
                "tensor {name:?}: {} bytes given, it has {}",
                data.len(),
                t.data.len()
            )));
        }
        t.data.copy_from_slice(data);
        Ok(())
    }

    fn alignment(&self) -> Result<u64> {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT),
            Some((_, Value::U32(a))) if *a > 0 && a.is_power_of_two() => Ok(u64::from(*a)),
            Some(_) => Err(Error::Write(
                "general.alignment must be a u32 power of two".into(),
            )),
        }
    }

    /// The encoded file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let align = self.alignment()?;
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            write_string(&mut out, k);
            out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            write_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            write_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len() as u64).next_multiple_of(align);
        }
        let data_start = (out.len() as u64).next_multiple_of(align);
        out.resize(data_start as usize, 0);
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend_from_slice(&t.data);
        }
        Ok(out)
    }

    /// Write the file to `path`.
    pub fn write_to(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::fs::File::create(path).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.flush().map_err(io)
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => write_string(out, s),
        Value::Array(a) => write_array(out, a),
    }
}

fn write_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.element_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&x| u8::from(x))),
        Array::String(v) => {
            for s in v {
                write_string(out, s);
            }
        }
        Array::Array(v) => {
            for inner in v {
                write_array(out, inner);
            }
        }
    }
}
