//! Writes a random-weight model with realistic widths for benchmarks (BENCHMARKS.md, "Mixture
//! of experts"): llama.cpp loads the same file, so `llama-bench` and `ferrite bench-model` run
//! side by side on identical weights. Seeded: the same command writes the same bytes.
//!
//!   synthetic-model qwen3moe-bench OUT.gguf   Qwen3-30B-A3B widths, 8 layers, Q4_K (1.4 GB)
//!   synthetic-model deepseek2-bench OUT.gguf  DeepSeek-V2-Lite widths (64 experts, 6 used,
//!                                             2 shared, latent 512), 5 layers, Q4_K (1.5 GB)

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
        "deepseek2-bench" => {
            let mut m = TinyModel::new(TinyArch::Deepseek2).quant(QuantType::Q4_K);
            m.embed_quant = QuantType::Q6_K;
            m.vocab = 32768;
            m.dim = 2048;
            m.layers = 5;
            m.heads = 16;
            m.ffn = 10752;
            m.experts = 64;
            m.experts_used = 6;
            // V2-Lite's 1408 rounded to whole Q4_K rows.
            m.expert_ffn = 1536;
            m.context = 4096;
            let s = &mut m.deepseek;
            (s.q_lora, s.kv_lora, s.nope, s.rope, s.v_head) = (0, 512, 128, 64, 128);
            (s.dense_layers, s.shared, s.groups) = (1, 2, (1, 1));
            (s.sigmoid, s.selection_bias, s.norm, s.scale) = (false, false, false, 1.0);
            Some(m)
        }
        _ => None,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, out] = &args[..] else {
        return Err(
            "usage: synthetic-model PRESET OUT.gguf (presets: qwen3moe-bench, deepseek2-bench)"
                .into(),
        );
    };
    let m = preset(name).ok_or_else(|| format!("no preset named {name:?}"))?;
    m.write_to(out)?;
    Ok(())
}
