//! `ferrite_models::quantize` on tiny models: every target format loads and computes what the
//! f32 reference forward computes from the written file (second-level scales included), stays
//! close to the unquantized model, and the requantization guard holds.

use std::sync::Arc;

use ferrite_gguf::{GgmlType, GgufFile};
use ferrite_kernels::quant::{dequantize_row, QuantType};
use ferrite_models::quantize::{quantize_model, scale_applies, QuantizeOptions, Target};
use ferrite_models::{load_model_from, LoadOptions};
use ferrite_testkit::{reference, TinyArch, TinyModel};

mod common;
use common::{prefill_all, rel_err};

const PROMPT: [u32; 10] = [72, 101, 108, 108, 111, 32, 119, 111, 114, 108];

fn opts(target: Target) -> QuantizeOptions {
    QuantizeOptions {
        target,
        keep_output: None,
        allow_requantize: false,
        threads: 2,
    }
}

fn requantized(src: &[u8], o: &QuantizeOptions) -> GgufFile {
    let src = GgufFile::from_bytes(src.to_vec()).unwrap();
    let q = quantize_model(&src, o, &mut |_, _, _| {}).unwrap();
    GgufFile::from_bytes(q.writer.to_bytes().unwrap()).unwrap()
}

fn logits(f: GgufFile) -> Vec<Vec<f32>> {
    let mut m = load_model_from(&Arc::new(f), &LoadOptions::default()).unwrap();
    prefill_all(m.as_mut(), &PROMPT)
}

#[test]
fn every_target_computes_what_its_file_says() {
    for arch in TinyArch::ALL {
        let src = TinyModel::new(arch).seed(5).every_expert().to_bytes();
        let original =
            reference::logits(&GgufFile::from_bytes(src.clone()).unwrap(), &PROMPT).unwrap();
        for (name, max_drift) in [
            ("f16", 0.01),
            ("q8_0", 0.05),
            ("q4_k", 0.3),
            ("q4_0", 0.4),
            ("mxfp4", 0.5),
            ("nvfp4", 0.5),
            ("nvfp4-2l", 0.5),
        ] {
            let target = Target::parse(name).unwrap();
            let f = requantized(&src, &opts(target));
            let want_type = GgmlType::from_name(target.quant_type().name()).unwrap();
            let q = f.tensor("blk.0.attn_q.weight").unwrap();
            assert_eq!(q.ggml_type, want_type, "{arch:?} {name}");
            assert_eq!(
                f.tensor("blk.0.attn_norm.weight").unwrap().ggml_type,
                GgmlType::F32,
                "norms stay f32"
            );
            // Second-level scales exactly where llama.cpp applies them, and far from 1, so a
            // loader that ignored them would be caught below.
            let arch_name = f.metadata_str("general.architecture").unwrap().to_string();
            for t in f.tensors().iter().filter(|t| t.name.ends_with(".weight")) {
                let base = t.name.strip_suffix(".weight").unwrap();
                let scale = f.tensor(&format!("{base}.scale"));
                let expect = target == Target::Nvfp4TwoLevel
                    && t.dims.len() == 2
                    && scale_applies(&arch_name, &t.name);
                assert_eq!(scale.is_some(), expect, "{arch:?} {name} {}", t.name);
                if let Some(s) = scale {
                    let v = f.tensor_data(s);
                    let v = f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                    assert!(v > 0.0 && v < 0.01, "{}: scale {v}", t.name);
                }
            }
            let file_ref = reference::logits(&f, &PROMPT).unwrap();
            let got = logits(f);
            let e = rel_err(&got, &file_ref);
            assert!(
                e < 0.04,
                "{arch:?} {name}: forward vs reference of the file: {e}"
            );
            let drift = rel_err(&got, &original);
            assert!(drift < max_drift, "{arch:?} {name}: vs unquantized {drift}");
            eprintln!("{arch:?} {name}: file {e:.4}, vs unquantized {drift:.4}");
        }
    }
}

/// Relative RMS error of tensor `name` of `q` (times its `.scale`) against the f32 `orig`.
fn weight_error(q: &GgufFile, orig: &GgufFile, name: &str) -> f64 {
    let dequant = |f: &GgufFile| {
        let t = f.tensor(name).unwrap();
        let ty = QuantType::from_name(t.ggml_type.name()).unwrap();
        let mut out = vec![0f32; t.n_elements() as usize];
        let cols = t.dims[0] as usize;
        let rb = ty.row_bytes(cols).unwrap();
        for (r, o) in out.chunks_exact_mut(cols).enumerate() {
            dequantize_row(ty, &f.tensor_data(t)[r * rb..(r + 1) * rb], o).unwrap();
        }
        let base = name.strip_suffix(".weight").unwrap();
        if let Some(s) = f.tensor(&format!("{base}.scale")) {
            let b = f.tensor_data(s);
            let s = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            out.iter_mut().for_each(|v| *v *= s);
        }
        out
    };
    let (a, b) = (dequant(q), dequant(orig));
    let num: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn two_level_scales_rescue_small_weights() {
    // Weights scaled down 1000x push single-level NVFP4 block scales below E4M3's smallest
    // subnormal (2^-9), so whole blocks collapse; the second-level scale keeps them in range.
    let src = TinyModel::new(TinyArch::Llama).seed(9);
    let mut w = src.writer();
    let f = GgufFile::from_bytes(src.to_bytes()).unwrap();
    for t in f.tensors() {
        if t.dims.len() == 2 && t.name.starts_with("blk.") {
            let data: Vec<u8> = f
                .tensor_data(t)
                .chunks_exact(4)
                .flat_map(|b| (f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * 1e-3).to_le_bytes())
                .collect();
            w.replace_tensor_data(&t.name, &data).unwrap();
        }
    }
    let bytes = w.to_bytes().unwrap();
    let small = GgufFile::from_bytes(bytes.clone()).unwrap();
    let one = requantized(&bytes, &opts(Target::Plain(QuantType::NVFP4)));
    let two = requantized(&bytes, &opts(Target::Nvfp4TwoLevel));
    for name in ["blk.0.attn_q.weight", "blk.1.ffn_down.weight"] {
        let (e1, e2) = (
            weight_error(&one, &small, name),
            weight_error(&two, &small, name),
        );
        eprintln!("{name}: single-level {e1:.4}, two-level {e2:.4}");
        assert!(e2 < 0.15, "{name}: two-level error {e2}");
        assert!(e1 > 2.0 * e2, "{name}: single-level {e1} vs two-level {e2}");
    }
    // At ordinary magnitudes both are near NVFP4's own error.
    let one = requantized(&src.to_bytes(), &opts(Target::Plain(QuantType::NVFP4)));
    let e = weight_error(&one, &f, "blk.0.attn_q.weight");
    assert!(e < 0.15, "single-level at normal scale: {e}");
}

#[test]
fn requantizing_lossy_weights_needs_consent() {
    let src = TinyModel::new(TinyArch::Llama)
        .quant(QuantType::Q4_1)
        .to_bytes();
    let f = GgufFile::from_bytes(src.clone()).unwrap();
    let err = quantize_model(
        &f,
        &opts(Target::Plain(QuantType::NVFP4)),
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--allow-requantize"), "{err}");
    let mut o = opts(Target::Plain(QuantType::NVFP4));
    o.allow_requantize = true;
    let q = requantized(&src, &o);
    assert_eq!(
        q.tensor("blk.1.ffn_down.weight").unwrap().ggml_type,
        GgmlType::NVFP4
    );
    // Dequantizing to f16 is never a second lossy step; same-format tensors are copied.
    let q = requantized(&src, &opts(Target::Plain(QuantType::F16)));
    assert_eq!(
        q.tensor("blk.0.attn_k.weight").unwrap().ggml_type,
        GgmlType::F16
    );
    let same = requantized(&src, &opts(Target::Plain(QuantType::Q4_1)));
    let (a, b) = (
        f.tensor("blk.0.attn_k.weight").unwrap(),
        same.tensor("blk.0.attn_k.weight").unwrap(),
    );
    assert_eq!(f.tensor_data(a), same.tensor_data(b));
    assert!(Target::parse("q3_k")
        .unwrap_err()
        .to_string()
        .contains("expected one of"));
}

#[test]
fn keep_output_and_metadata() {
    let src = TinyModel::new(TinyArch::Gemma3).to_bytes();
    let mut o = opts(Target::Nvfp4TwoLevel);
    o.keep_output = Some(QuantType::Q8_0);
    let q = requantized(&src, &o);
    assert_eq!(
        q.tensor("token_embd.weight").unwrap().ggml_type,
        GgmlType::Q8_0
    );
    assert!(q.tensor("token_embd.scale").is_none());
    assert_eq!(q.metadata_u64("general.file_type").unwrap(), 39);
    assert_eq!(q.metadata_str("general.architecture").unwrap(), "gemma3");
    let f = GgufFile::from_bytes(src).unwrap();
    assert_eq!(
        q.metadata_array("tokenizer.ggml.tokens").unwrap().len(),
        f.metadata_array("tokenizer.ggml.tokens").unwrap().len()
    );
}

#[test]
fn rows_that_are_not_whole_blocks_fall_back_like_llama_cpp() {
    let mut tiny = TinyModel::new(TinyArch::Llama);
    tiny.dim = 320; // not a multiple of 256 (Q4_K) nor 64 (NVFP4): 5 × 64 is, 320 % 256 isn't
    tiny.head_dim = 80;
    let src = tiny.to_bytes();
    let q = requantized(&src, &opts(Target::Plain(QuantType::Q4_K)));
    let ty = |n: &str| q.tensor(n).unwrap().ggml_type;
    assert_eq!(
        ty("blk.0.attn_q.weight"),
        GgmlType::Q5_0,
        "320 columns: Q5_0 as llama.cpp"
    );
    assert_eq!(
        ty("blk.0.ffn_down.weight"),
        GgmlType::Q4_K,
        "512 columns fit"
    );
    let src = GgufFile::from_bytes(src).unwrap();
    let plan = quantize_model(
        &src,
        &opts(Target::Plain(QuantType::Q4_K)),
        &mut |_, _, _| {},
    )
    .unwrap()
    .plan;
    let p = plan
        .iter()
        .find(|p| p.name == "blk.0.attn_q.weight")
        .unwrap();
    assert!(p.note.as_deref().unwrap().contains("Q5_0 instead"), "{p:?}");
    let _ = logits(q); // and it still loads and runs
}

#[test]
fn bad_second_level_scales_are_named() {
    for (dims, value, want) in [
        (vec![1u64], f32::NAN, "one finite F32 value"),
        (vec![2u64], 1.0, "expected [1]"),
    ] {
        let mut w = TinyModel::new(TinyArch::Llama).writer();
        let data: Vec<u8> = (0..dims[0]).flat_map(|_| value.to_le_bytes()).collect();
        w.add_tensor("blk.0.attn_q.scale", &dims, GgmlType::F32, &data)
            .unwrap();
        let f = Arc::new(GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap());
        let e = match load_model_from(&f, &LoadOptions::default()) {
            Ok(_) => panic!("a bad scale must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("blk.0.attn_q.scale") && e.contains(want), "{e}");
    }
}
