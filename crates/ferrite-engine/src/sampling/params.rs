//! Per-request sampling parameters and their validation. Messages name the field, the limit and
//! the value (`` `top_p` must be > 0 and ≤ 1, got 1.5 ``).

use crate::{Error, Result};

/// Sampling parameters as a request gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Nucleus: smallest set of tokens with probability mass ≥ `top_p`; 1 = off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 = off.
    pub min_p: f32,
    /// Divide positive / multiply negative logits of tokens seen in prompt or output; 1 = off.
    pub repetition_penalty: f32,
    /// Subtract from logits of tokens present in the output (OpenAI), −2..2.
    pub presence_penalty: f32,
    /// Subtract `count ×` this from logits of output tokens (OpenAI), −2..2.
    pub frequency_penalty: f32,
    /// Same seed, same output; `None` draws one.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        }
    }

    /// Whether this picks the arg-max every time.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    /// Check every field; the error names the field, the limit and the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, rule: &str, got: String| {
            Err(Error::InvalidParam {
                field,
                message: format!("`{field}` must be {rule}, got {got}"),
            })
        };
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad("temperature", "≥ 0", self.temperature.to_string());
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", "> 0 and ≤ 1", self.top_p.to_string());
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", "between 0 and 1", self.min_p.to_string());
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return bad(
                "repetition_penalty",
                "> 0",
                self.repetition_penalty.to_string(),
            );
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return bad(
                "presence_penalty",
                "between -2 and 2",
                self.presence_penalty.to_string(),
            );
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return bad(
                "frequency_penalty",
                "between -2 and 2",
                self.frequency_penalty.to_string(),
            );
        }
        Ok(())
    }
}
