//! Weight tensors: quantized matrices borrowed from the memory-mapped GGUF file, and norm vectors
//! copied out as f32. Every tensor's type and shape is checked at load with an error naming it.

use std::sync::Arc;

use ferrite_gguf::{GgmlType, GgufFile, TensorInfo};
use ferrite_kernels::quant::{dequantize_row, QuantType};
use ferrite_kernels::stream_panels::repack_stream_panels;
use ferrite_kernels::{Kernels, QMatrix};

use crate::{Error, Result};

/// The kernels' format for a GGUF tensor type, or an error naming the tensor.
pub fn quant_type(info: &TensorInfo) -> Result<QuantType> {
    QuantType::from_name(info.ggml_type.name())
        .filter(|t| QuantType::WEIGHTS.contains(t))
        .ok_or_else(|| Error::UnsupportedTensorType {
            tensor: info.name.clone(),
            ggml_type: info.ggml_type.to_string(),
        })
}

/// The GGUF type of a kernel format (their names are ggml's).
pub fn ggml_type(t: QuantType) -> GgmlType {
    GgmlType::from_name(t.name()).expect("invariant: every kernel format is a ggml type")
}

/// A `rows × cols` weight matrix (ggml dims `[cols, rows]`) in the mapped file.
#[derive(Debug, Clone)]
pub struct Linear {
    file: Arc<GgufFile>,
    info: TensorInfo,
    /// Storage format.
    pub ty: QuantType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Per-tensor factor applied to the product (NVFP4's second-level scale, ModelOpt's
    /// `weight_scale_2`), from the optional F32 tensor `<name>.scale` of shape {1}, as
    /// llama.cpp stores it.
    pub scale: Option<f32>,
    /// Added to the product (after the scale), from the optional tensor `<name>.bias` of
    /// shape {rows}, as llama.cpp adds a bias it finds beside a weight.
    pub bias: Option<Arc<[f32]>>,
    /// The matrix repacked into stream panels for decoding (see [`Linear::repacked`]); shared
    /// by clones (a tied output head and its embedding table).
    panels: Option<Arc<Vec<u8>>>,
}

impl Linear {
    /// Load tensor `name`, checking it is `rows × cols`.
    pub fn load(file: &Arc<GgufFile>, name: &str, rows: usize, cols: usize) -> Result<Linear> {
        let info = file
            .tensor(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))?
            .clone();
        if info.dims.len() != 2 || info.dims[0] as usize != cols || info.dims[1] as usize != rows {
            return Err(Error::TensorShape {
                tensor: name.to_string(),
                expected: format!("[{cols}, {rows}]"),
                found: format!("{:?}", info.dims),
            });
        }
        let ty = quant_type(&info)?;
        let (scale, bias) = match name.strip_suffix(".weight") {
            Some(base) => (
                load_scale(file, &format!("{base}.scale"))?,
                load_bias(file, &format!("{base}.bias"), rows)?,
            ),
            None => (None, None),
        };
        Ok(Linear {
            file: Arc::clone(file),
            info,
            ty,
            rows,
            cols,
            scale,
            bias,
            panels: None,
        })
    }

    /// Load the 3-D expert tensor `name` (ggml dims `[cols, rows, n_experts]`) as one
    /// `rows × cols` matrix per expert, each a view of its slice of the mapped tensor.
    pub fn load_experts(
        file: &Arc<GgufFile>,
        name: &str,
        n_experts: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<Linear>> {
        let info = file
            .tensor(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))?;
        let want = [cols as u64, rows as u64, n_experts as u64];
        // GGUF drops trailing dimensions of 1 (one expert, one head).
        let mut dims = info.dims.clone();
        dims.resize(3, 1);
        if info.dims.len() > 3 || dims != want {
            return Err(Error::TensorShape {
                tensor: name.to_string(),
                expected: format!("{want:?}"),
                found: format!("{:?}", info.dims),
            });
        }
        let ty = quant_type(info)?;
        // Per-expert second-level scales `<name>.scale` {n_experts} (llama.cpp's `*_exps_s`).
        let scales = match name.strip_suffix(".weight") {
            Some(base) if file.tensor(&format!("{base}.scale")).is_some() => {
                let s = load_vector(file, &format!("{base}.scale"), n_experts)?;
                if let Some(bad) = s.iter().find(|v| !v.is_finite()) {
                    return Err(Error::TensorShape {
                        tensor: format!("{base}.scale"),
                        expected: "finite values".to_string(),
                        found: format!("{bad}"),
                    });
                }
                Some(s)
            }
            _ => None,
        };
        // The experts stacked are one matrix of `n_experts · rows` rows; each is a row range.
        let stacked = Linear {
            file: Arc::clone(file),
            info: info.clone(),
            ty,
            rows: n_experts * rows,
            cols,
            scale: None,
            bias: None,
            panels: None,
        };
        (0..n_experts)
            .map(|e| {
                let mut expert = stacked.row_range(e * rows, rows)?;
                expert.scale = scales.as_ref().map(|s| s[e]);
                Ok(expert)
            })
            .collect()
    }

    /// The same matrix without its second-level scale: for tensors whose architecture's graph
    /// in llama.cpp ignores a `.scale` beside them (DeepSeek applies only `attn_output`'s).
    pub fn without_scale(mut self) -> Linear {
        self.scale = None;
        self
    }

    /// Rows `first..first + n` as a matrix of their own (a view of the same bytes): one expert
    /// of a stacked tensor, the gate and up halves of a fused `gate_up` tensor.
    pub fn row_range(&self, first: usize, n: usize) -> Result<Linear> {
        if first + n > self.rows || self.panels.is_some() || self.bias.is_some() {
            return Err(Error::TensorShape {
                tensor: self.info.name.clone(),
                expected: format!("rows {first}..{} of an unpacked matrix", first + n),
                found: format!("{} rows", self.rows),
            });
        }
        let row_bytes = self.ty.row_bytes(self.cols).map_err(Error::Kernel)? as u64;
        let mut info = self.info.clone();
        info.name = format!("{}[{first}..{}]", self.info.name, first + n);
        info.dims = vec![self.cols as u64, n as u64];
        info.offset += first as u64 * row_bytes;
        info.size_bytes = n as u64 * row_bytes;
        Ok(Linear {
            info,
            rows: n,
            ..self.clone()
        })
    }

    /// The matrix with a copy repacked into stream panels (`ferrite_kernels::stream_panels`)
    /// when `kernels` read them for its format: decoding and speculative verification then
    /// stream 16 interleaved rows at a time (same bytes per row, same results), and prompt-sized
    /// products unpack their panels from them. After loading, products no longer touch the
    /// mapped rows (embedding lookups still read single rows), so their pages are handed back
    /// ([`GgufFile::release_tensor_pages`]): the copy replaces the mapped matrix in resident
    /// memory instead of adding to it.
    pub fn repacked(mut self, kernels: &Kernels) -> Result<Linear> {
        if self.panels.is_none() && kernels.uses_stream_panels(self.ty) {
            let data = self.file.tensor_data(&self.info);
            let panels =
                repack_stream_panels(self.ty, self.rows, self.cols, data).map_err(Error::Kernel)?;
            // `Arc<Vec>`, not `Arc<[u8]>`: moving the Vec in needs no second copy of the panels
            // (the tied Gemma 3 head's are 178 MB) at the peak of loading.
            self.panels = Some(Arc::new(panels));
            self.file.release_tensor_pages(&self.info);
        }
        Ok(self)
    }

    /// Kernel view of the matrix.
    pub fn matrix(&self) -> QMatrix<'_> {
        let m = QMatrix::new(
            self.ty,
            self.rows,
            self.cols,
            self.file.tensor_data(&self.info),
        )
        .expect("invariant: shape and size validated at load");
        match &self.panels {
            Some(p) => m
                .with_stream_panels(p)
                .expect("invariant: panels repacked from this matrix"),
            None => m,
        }
    }

    /// Dequantize row `r` into `out` (`cols` elements), times the tensor scale if any:
    /// embedding lookups.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let m = self.matrix();
        dequantize_row(self.ty, m.row(r), out).map_err(Error::Kernel)?;
        if let Some(s) = self.scale {
            out.iter_mut().for_each(|v| *v *= s);
        }
        Ok(())
    }

    /// Tensor name.
    pub fn name(&self) -> &str {
        &self.info.name
    }
}

/// The optional per-tensor scale `name`: one finite f32 (shape {1}), or an error naming it.
fn load_scale(file: &GgufFile, name: &str) -> Result<Option<f32>> {
    let Some(info) = file.tensor(name) else {
        return Ok(None);
    };
    let v = load_vector(file, name, 1)?[0];
    if !v.is_finite() || info.ggml_type != GgmlType::F32 {
        return Err(Error::TensorShape {
            tensor: name.to_string(),
            expected: "one finite F32 value".to_string(),
            found: format!("{} value {v}", info.ggml_type),
        });
    }
    Ok(Some(v))
}

/// The optional bias `name` of `rows` elements.
fn load_bias(file: &GgufFile, name: &str, rows: usize) -> Result<Option<Arc<[f32]>>> {
    if file.tensor(name).is_none() {
        return Ok(None);
    }
    Ok(Some(load_vector(file, name, rows)?.into()))
}

/// Load a 1-D f32 (or f16/bf16) vector of `len` elements.
pub fn load_vector(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let info = file
        .tensor(name)
        .ok_or_else(|| Error::MissingTensor(name.to_string()))?;
    if info.dims.len() != 1 || info.dims[0] as usize != len {
        return Err(Error::TensorShape {
            tensor: name.to_string(),
            expected: format!("[{len}]"),
            found: format!("{:?}", info.dims),
        });
    }
    let ty = quant_type(info)?;
    let mut out = vec![0f32; len];
    dequantize_row(ty, file.tensor_data(info), &mut out).map_err(Error::Kernel)?;
    Ok(out)
}
