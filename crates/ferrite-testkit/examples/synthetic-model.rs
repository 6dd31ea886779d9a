//! Writes a random-weight model with realistic widths for benchmarks (BENCHMARKS.md, "Mixture
//! of experts"): llama.cpp loads the same file, so `llama-bench` and `ferrite bench-model` run
//! side by side on identical weights. Seeded: the same command writes the same bytes.
//!
//!   synthetic-model qwen3moe-bench OUT.gguf   Qwen3-30B-A3B widths, 8 layers, Q4_K (1.4 GB)

use ferrite_kernels::quant::QuantType;
use ferrite_testkit::{TinyArch, TinyModel};

fn preset(name: &str) -> Option<TinyModel> {
    match name {
        "qwen3moe-bench" => {
            let mut m = TinyModel::new(TinyArch::Qwen3Moe).quant(QuantType::Q4_K);
            m.embed_quant = QuantType::Q6_K;
            m.vocab = 32768;
            m.dim = 2048;
            m.layers = 8;
            m.heads = 32;
            m.kv_heads = 4;
            m.head_dim = 128;
            m.ffn = 6144;
            m.experts = 64;
            m.experts_used = 8;
            m.expert_ffn = 768;
            m.context = 4096;
            Some(m)
        }
        _ => None,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, out] = &args[..] else {
        return Err("usage: synthetic-model PRESET OUT.gguf (presets: qwen3moe-bench)".into());
    };
    let m = preset(name).ok_or_else(|| format!("no preset named {name:?}"))?;
    m.write_to(out)?;
    Ok(())
}
