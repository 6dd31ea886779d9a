//! The synthetic models whose llama.cpp logits are committed as fixtures
//! (`crates/ferrite-engine/tests/fixtures/arch/<name>.json`): each a [`TinyModel`] variant that
//! exercises what its architecture adds (a head size other than `dim / heads`, grouped-query
//! attention, routed experts, quantized 3-D expert tensors), and the seeded token ids fed to it.
//!
//! `scripts/arch-fixtures.sh` writes each model with `cargo run -p ferrite-testkit --example
//! arch-fixture`, runs llama.cpp on it (`scripts/reference-logits.sh`) and stores the result;
//! the engine's test writes the same model again (the writer is deterministic) and compares.

use ferrite_kernels::quant::QuantType;

use crate::rng::XorShift;
use crate::tiny::{TinyArch, TinyModel};

/// One fixture: a model, its prompt and how many greedy tokens follow.
#[derive(Debug, Clone)]
pub struct ArchFixture {
    /// File stem of the fixture.
    pub name: &'static str,
    /// The model.
    pub model: TinyModel,
    /// Prompt token ids.
    pub tokens: Vec<u32>,
    /// Greedy tokens decoded after the prompt.
    pub generate: usize,
}

/// Prompt positions each fixture covers.
pub const PROMPT_TOKENS: usize = 64;
/// Greedy tokens each fixture decodes.
pub const GREEDY_TOKENS: usize = 16;

/// Every fixture.
pub fn arch_fixtures() -> Vec<ArchFixture> {
    let qwen3 = |quant: QuantType| {
        let mut m = TinyModel::new(TinyArch::Qwen3).quant(quant).seed(31);
        m.vocab = 260;
        m.head_dim = 96; // ≠ dim / heads = 64
        m.untied_output = true;
        m
    };
    let qwen3moe = |quant: QuantType| {
        let mut m = TinyModel::new(TinyArch::Qwen3Moe).quant(quant).seed(37);
        m.vocab = 260;
        m.kv_heads = 1;
        m
    };
    let deepseek2 = |quant: QuantType| {
        let mut m = TinyModel::new(TinyArch::Deepseek2).quant(quant).seed(41);
        m.vocab = 260;
        m.layers = 3; // one dense, two MoE
        m
    };
    // V2-Lite-like: a plain query projection, softmax routing without groups, bias or
    // renormalization.
    let deepseek2_lite = |quant: QuantType| {
        let mut m = deepseek2(quant);
        let s = &mut m.deepseek;
        s.q_lora = 0;
        s.groups = (1, 1);
        s.sigmoid = false;
        s.selection_bias = false;
        s.norm = false;
        s.scale = 1.0;
        m
    };
    [
        ("qwen3-f32", qwen3(QuantType::F32)),
        ("qwen3-q8_0", qwen3(QuantType::Q8_0)),
        ("qwen3moe-f32", qwen3moe(QuantType::F32)),
        ("qwen3moe-q4_k", qwen3moe(QuantType::Q4_K)),
        ("qwen3moe-q8_0", qwen3moe(QuantType::Q8_0)),
        ("qwen3-q4_k", {
            // K-quant rows need widths in multiples of 256: 4 heads of 128.
            let mut m = qwen3(QuantType::Q4_K);
            m.head_dim = 128;
            m
        }),
        ("deepseek2-f32", deepseek2(QuantType::F32)),
        ("deepseek2-lite-q8_0", deepseek2_lite(QuantType::Q8_0)),
        ("deepseek2-yarn-f32", {
            // V3's scaling (factor 40 over 4K) shrunk: positions past 16 are extrapolated.
            let mut m = deepseek2(QuantType::F32);
            m.deepseek.yarn = Some((4.0, 16, 0.0707));
            m
        }),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, model))| {
        let mut rng = XorShift::new(1000 + i as u64);
        let tokens = (0..PROMPT_TOKENS)
            .map(|_| (rng.next_u64() % model.vocab as u64) as u32)
            .collect();
        ArchFixture {
            name,
            model,
            tokens,
            generate: GREEDY_TOKENS,
        }
    })
    .collect()
}
