//! Requantizing a model file (`ferrite quantize`): every 2-D weight is dequantized to f32 (times
//! its `.scale` if it has one) and quantized to the target format; 1-D tensors, metadata and the
//! tokenizer are copied unchanged.
//!
//! NVFP4 with the second-level scale (`nvfp4-2l`) divides a weight by `s2 = amax(W)/(6·448)`
//! (ModelOpt's `weight_scale_2`) before quantizing, so the per-16 E4M3 scales use their normal
//! range instead of underflowing into subnormals, and stores `s2` as llama.cpp does: an F32
//! tensor of shape {1} named `<weight>.scale`, multiplied into the matmul result. It is written
//! only where llama.cpp's graph applies it (see [`scale_applies`]), so the files load there too;
//! elsewhere the tensor gets single-level NVFP4.

use std::collections::HashMap;

use ferrite_gguf::{GgmlType, GgufFile, GgufWriter, TensorInfo, Value};
use ferrite_kernels::quant::{dequantize_row, quantize_row, QuantType};

use crate::weights::{ggml_type, quant_type};
use crate::{Error, Result};

/// What `ferrite quantize --type` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A plain format.
    Plain(QuantType),
    /// NVFP4 with the per-tensor FP32 second-level scale.
    Nvfp4TwoLevel,
}

impl Target {
    /// Parse a `--type` value: f32, f16, q8_0, q4_0, q4_k, mxfp4, nvfp4, nvfp4-2l.
    pub fn parse(s: &str) -> Result<Target> {
        let t = match s.to_ascii_lowercase().as_str() {
            "f32" => QuantType::F32,
            "f16" => QuantType::F16,
            "q8_0" => QuantType::Q8_0,
            "q4_0" => QuantType::Q4_0,
            "q4_k" => QuantType::Q4_K,
            "mxfp4" => QuantType::MXFP4,
            "nvfp4" => QuantType::NVFP4,
            "nvfp4-2l" => return Ok(Target::Nvfp4TwoLevel),
            other => {
                return Err(Error::Quantize(format!(
                    "unknown quantization type {other:?} (expected one of f32, f16, q8_0, \
                     q4_0, q4_k, mxfp4, nvfp4, nvfp4-2l)"
                )))
            }
        };
        Ok(Target::Plain(t))
    }

    /// The storage format.
    pub fn quant_type(self) -> QuantType {
        match self {
            Target::Plain(t) => t,
            Target::Nvfp4TwoLevel => QuantType::NVFP4,
        }
    }

    /// llama.cpp's `general.file_type` for a file mostly in this format.
    fn file_type(self) -> u32 {
        match self.quant_type() {
            QuantType::F32 => 0,
            QuantType::F16 => 1,
            QuantType::Q4_0 => 2,
            QuantType::Q8_0 => 7,
            QuantType::Q4_K => 14,
            QuantType::MXFP4 => 38,
            _ => 39, // NVFP4
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Plain(t) => f.write_str(t.name()),
            Target::Nvfp4TwoLevel => f.write_str("nvfp4-2l"),
        }
    }
}

/// Options of one requantization.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// Format of the weights.
    pub target: Target,
    /// Format of `token_embd.weight` and `output.weight` (default: the target's).
    pub keep_output: Option<QuantType>,
    /// Allow going from one lossy format to another.
    pub allow_requantize: bool,
    /// Worker threads.
    pub threads: usize,
}

/// What happens to one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorPlan {
    /// Tensor name.
    pub name: String,
    /// Source format.
    pub from: GgmlType,
    /// Written format.
    pub to: GgmlType,
    /// Whether a second-level scale is computed for it and written beside it.
    pub second_level: bool,
    /// That scale, once computed (`None` before quantizing, or for an all-zero tensor).
    pub scale: Option<f32>,
    /// Why the format differs from the target, if it does.
    pub note: Option<String>,
}

/// The result: the new file (not yet written) and what was done per tensor.
#[derive(Debug)]
pub struct Quantized {
    /// The file to write.
    pub writer: GgufWriter,
    /// One entry per weight tensor of the source.
    pub plan: Vec<TensorPlan>,
}

fn is_lossy(t: QuantType) -> bool {
    !matches!(t, QuantType::F32 | QuantType::F16 | QuantType::BF16)
}

/// Whether llama.cpp (the pinned anchor) multiplies `<name>.scale` into this weight's product
/// for architecture `arch`: attention and FFN projections and an untied output for Llama; for
/// Gemma 3 its graph passes no scale to the FFN, so only attention and output. Never the token
/// embedding (llama.cpp reads no `token_embd.scale`).
pub fn scale_applies(arch: &str, name: &str) -> bool {
    let attn = ["attn_q.", "attn_k.", "attn_v.", "attn_output."];
    let ffn = ["ffn_gate.", "ffn_up.", "ffn_down."];
    if name == "output.weight" {
        return true;
    }
    let Some(rest) = name.strip_prefix("blk.") else {
        return false;
    };
    let layer_tensor = rest.split_once('.').map_or("", |(_, t)| t);
    attn.iter().any(|p| layer_tensor.starts_with(p))
        || (arch != "gemma3" && ffn.iter().any(|p| layer_tensor.starts_with(p)))
}

/// Requantize `src` as `opts` says. `progress(done, total, name)` is called after each tensor.
pub fn quantize_model(
    src: &GgufFile,
    opts: &QuantizeOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Quantized> {
    let arch = src
        .metadata_str("general.architecture")
        .unwrap_or("")
        .to_string();
    // Source second-level scales are folded into their weights, then dropped.
    let scales: HashMap<&str, &TensorInfo> = src
        .tensors()
        .iter()
        .filter_map(|t| t.name.strip_suffix(".scale").map(|b| (b, t)))
        .collect();
    let mut plan = Vec::new();
    for info in src.tensors() {
        if info.name.ends_with(".scale") {
            continue;
        }
        plan.push(plan_tensor(&arch, info, &scales, opts)?);
    }

    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        w.add_metadata(k, v.clone());
    }
    w.add_metadata("general.file_type", Value::U32(opts.target.file_type()));
    w.add_metadata("general.quantized_by", Value::String("ferrite".into()));

    let total = plan.len();
    for (i, p) in plan.iter_mut().enumerate() {
        let info = src
            .tensor(&p.name)
            .expect("invariant: planned from the source's tensors");
        let data = src.tensor_data(info);
        let base = p
            .name
            .strip_suffix(".weight")
            .unwrap_or(&p.name)
            .to_string();
        let src_scale = match scales.get(base.as_str()) {
            Some(s) => Some(scale_value(src, s)?),
            None => None,
        };
        if p.from == p.to && src_scale.is_none() && !p.second_level {
            w.add_tensor(&p.name, &info.dims, info.ggml_type, data)?;
        } else {
            let (bytes, s2) = requantize(info, data, src_scale, p, opts)?;
            w.add_tensor(&p.name, &info.dims, p.to, &bytes)?;
            p.scale = s2;
            if let Some(s2) = s2 {
                w.add_tensor(
                    &format!("{base}.scale"),
                    &[1],
                    GgmlType::F32,
                    &s2.to_le_bytes(),
                )?;
            }
        }
        progress(i + 1, total, &p.name);
    }
    Ok(Quantized { writer: w, plan })
}

fn scale_value(src: &GgufFile, info: &TensorInfo) -> Result<f32> {
    let data = src.tensor_data(info);
    if info.ggml_type != GgmlType::F32 || info.n_elements() != 1 || data.len() != 4 {
        return Err(Error::TensorShape {
            tensor: info.name.clone(),
            expected: "F32 [1]".into(),
            found: format!("{} {:?}", info.ggml_type, info.dims),
        });
    }
    Ok(f32::from_le_bytes([data[0], data[1], data[2], data[3]]))
}

fn plan_tensor(
    arch: &str,
    info: &TensorInfo,
    scales: &HashMap<&str, &TensorInfo>,
    opts: &QuantizeOptions,
) -> Result<TensorPlan> {
    let keep = |to: GgmlType, note: Option<String>| TensorPlan {
        name: info.name.clone(),
        from: info.ggml_type,
        to,
        second_level: false,
        scale: None,
        note,
    };
    // Matrices and stacks of them (experts, DeepSeek's per-head `attn_k_b` / `attn_v_b`) are
    // quantized; vectors stay as they are, and so does a MoE router (`ffn_gate_inp`), as
    // llama.cpp's quantizer leaves it: routing picks experts by small score differences that
    // quantized activations would reorder.
    if !matches!(info.dims.len(), 2 | 3) || info.name.contains("ffn_gate_inp.") {
        return Ok(keep(info.ggml_type, None));
    }
    let from = quant_type(info)?;
    let is_output = matches!(info.name.as_str(), "token_embd.weight" | "output.weight");
    let mut want = match (is_output, opts.keep_output) {
        (true, Some(t)) => t,
        _ => opts.target.quant_type(),
    };
    let mut note = None;
    let cols = info.dims[0] as usize;
    if !cols.is_multiple_of(want.block_size()) {
        // llama.cpp's fallbacks where they exist (Q4_K → Q5_0), else the 8-bit or 16-bit format.
        let fallback = if !cols.is_multiple_of(32) {
            QuantType::F16
        } else if want == QuantType::Q4_K {
            QuantType::Q5_0
        } else {
            QuantType::Q8_0
        };
        note = Some(format!(
            "rows of {cols} are not whole {want} blocks of {}: {fallback} instead",
            want.block_size()
        ));
        want = fallback;
    }
    let two_level = opts.target == Target::Nvfp4TwoLevel && want == QuantType::NVFP4;
    let base = info.name.strip_suffix(".weight").unwrap_or(&info.name);
    let unchanged = from == want && !scales.contains_key(base) && !two_level;
    if !unchanged && is_lossy(from) && is_lossy(want) && !opts.allow_requantize {
        return Err(Error::Quantize(format!(
            "tensor {:?} is already quantized ({}); requantizing it to {want} loses quality \
             twice. Quantize from an F32/F16/BF16 file, or pass --allow-requantize",
            info.name, info.ggml_type
        )));
    }
    let second_level = two_level && scale_applies(arch, &info.name);
    if two_level && !second_level {
        note = Some("single-level NVFP4: llama.cpp applies no .scale to this tensor".into());
    }
    Ok(TensorPlan {
        second_level,
        ..keep(ggml_type(want), note)
    })
}

/// Dequantize (times the source scale), optionally divide by a fresh second-level scale, and
/// quantize row by row on `opts.threads` threads. Returns the bytes and the scale written.
fn requantize(
    info: &TensorInfo,
    data: &[u8],
    src_scale: Option<f32>,
    p: &TensorPlan,
    opts: &QuantizeOptions,
) -> Result<(Vec<u8>, Option<f32>)> {
    let from = quant_type(info)?;
    let to = QuantType::from_name(p.to.name()).expect("invariant: planned from a kernel format");
    let cols = info.dims[0] as usize;
    let rows = info.dims[1..].iter().product::<u64>() as usize; // experts stacked
    let in_row = from.row_bytes(cols)?;
    let out_row = to.row_bytes(cols)?;
    let mut f = vec![0f32; rows * cols];
    for (r, out) in f.chunks_exact_mut(cols).enumerate() {
        dequantize_row(from, &data[r * in_row..(r + 1) * in_row], out)?;
    }
    let mut mul = src_scale.unwrap_or(1.0);
    let mut s2 = None;
    if p.second_level {
        let amax = f.iter().fold(0f32, |m, v| m.max(v.abs())) * mul.abs();
        if amax > 0.0 {
            let s = amax / (6.0 * 448.0);
            s2 = Some(s);
            mul /= s;
        }
    }
    if mul != 1.0 {
        f.iter_mut().for_each(|v| *v *= mul);
    }
    let mut out = vec![0u8; rows * out_row];
    let threads = opts.threads.clamp(1, rows.max(1));
    let per = rows.div_ceil(threads);
    let results: Vec<Result<()>> = std::thread::scope(|sc| {
        let handles: Vec<_> = f
            .chunks(per * cols)
            .zip(out.chunks_mut(per * out_row))
            .map(|(fi, oi)| {
                sc.spawn(move || -> Result<()> {
                    for (x, o) in fi.chunks_exact(cols).zip(oi.chunks_exact_mut(out_row)) {
                        quantize_row(to, x, o)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("invariant: quantize workers do not panic"))
            .collect()
    });
    results.into_iter().collect::<Result<()>>()?;
    Ok((out, s2))
}
