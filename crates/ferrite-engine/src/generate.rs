//! Single-sequence generation for `ferrite run` and `ferrite chat`: prefill in chunks, sample,
//! detokenize incrementally, stop on EOS / stop strings / length. Keeps its KV cache between
//! calls and reuses the longest common prefix, so a chat turn only processes the new tokens.

use std::time::{Duration, Instant};

use ferrite_models::{ContiguousKvCache, ForwardBatch, KvStore, Model};
use ferrite_tokenizer::Tokenizer;

use crate::sampling::{Sampler, SamplingParams, TokenHistory};
use crate::stop::{StopMatcher, StopStep};
use crate::{Error, Result};

/// Tokens per prefill forward pass (bounds activation memory for long prompts).
pub const PREFILL_CHUNK: usize = 512;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or stop string.
    Stop,
    /// `max_tokens` or the context size was reached.
    Length,
}

impl FinishReason {
    /// OpenAI's name.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Prompt token ids (BOS already added if wanted).
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling parameters.
    pub sampling: SamplingParams,
    /// Stop strings (not included in the output).
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// Prompt positions where a new prefill batch must start, besides every
    /// [`PREFILL_CHUNK`] tokens. Batch boundaries change float rounding (kernels differ by batch
    /// size), so reproducing another engine's outputs bit for bit can require its boundaries:
    /// llama-server, for instance, evaluates the last 4 prompt tokens of sliding-window models
    /// as their own batch (to checkpoint the cache). Empty for ordinary use.
    pub prefill_splits: Vec<usize>,
}

/// Timing and counts of one generation.
#[derive(Debug, Clone)]
pub struct GenerationStats {
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV was reused from the previous call.
    pub cached_tokens: usize,
    /// Tokens generated (including a final end-of-generation token).
    pub generated_tokens: usize,
    /// Prefill time.
    pub prompt_time: Duration,
    /// Time from the request to the first generated token.
    pub time_to_first_token: Duration,
    /// Time spent generating after the first token.
    pub decode_time: Duration,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The generated token ids.
    pub tokens: Vec<u32>,
}

impl GenerationStats {
    /// Prompt tokens processed per second.
    pub fn prompt_tok_per_s(&self) -> f64 {
        let n = (self.prompt_tokens - self.cached_tokens) as f64;
        n / self.prompt_time.as_secs_f64().max(1e-9)
    }

    /// Generated tokens per second after the first.
    pub fn gen_tok_per_s(&self) -> f64 {
        (self.generated_tokens.saturating_sub(1)) as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// A model, its tokenizer and a one-sequence KV cache.
#[derive(Debug)]
pub struct Generator {
    model: Box<dyn Model>,
    tokenizer: Tokenizer,
    kv: ContiguousKvCache,
    /// Tokens whose keys and values are in `kv`, in order.
    cached: Vec<u32>,
    logits: Vec<f32>,
}

impl Generator {
    /// A generator with a context of `n_ctx` tokens (at most the model's trained length).
    pub fn new(model: Box<dyn Model>, tokenizer: Tokenizer, n_ctx: usize) -> Result<Generator> {
        let c = model.config().clone();
        let n_ctx = n_ctx.clamp(1, c.context_length);
        let kv = ContiguousKvCache::for_shape(c.kv_shape(), model.cpu().kv_format, n_ctx, 1)?;
        Ok(Generator {
            model,
            tokenizer,
            kv,
            cached: Vec::new(),
            logits: Vec::new(),
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model.
    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }

    /// Context size in tokens.
    pub fn context_size(&self) -> usize {
        self.kv.capacity()
    }

    /// Forget the cached prefix.
    pub fn reset(&mut self) {
        self.cached.clear();
    }

    /// Run `tokens` at positions `start..` and leave the last token's logits in `self.logits`.
    /// Batches break every [`PREFILL_CHUNK`] tokens and at the positions in `splits`.
    fn feed(&mut self, tokens: &[u32], start: usize, splits: &[usize]) -> Result<()> {
        let mut pos = start;
        let end = start + tokens.len();
        while pos < end {
            let next = splits
                .iter()
                .copied()
                .filter(|&b| b > pos && b < end)
                .min()
                .unwrap_or(end)
                .min(pos + PREFILL_CHUNK);
            let chunk = &tokens[pos - start..next - start];
            let positions: Vec<usize> = (pos..pos + chunk.len()).collect();
            let slots = vec![0; chunk.len()];
            let batch = ForwardBatch {
                tokens: chunk,
                positions: &positions,
                slots: &slots,
                logits_rows: &[chunk.len() - 1],
                kernel_groups: None,
            };
            self.model.forward(&batch, &mut self.kv, &mut self.logits)?;
            self.cached.truncate(pos);
            self.cached.extend_from_slice(chunk);
            pos = next;
        }
        Ok(())
    }

    /// Generate, calling `on_text` with each piece of text as soon as it is complete.
    pub fn generate(
        &mut self,
        req: &GenerateRequest,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerationStats> {
        let start = Instant::now();
        let n_ctx = self.context_size();
        if req.prompt.is_empty() {
            return Err(Error::InvalidParam {
                field: "prompt",
                message: "the prompt is empty".into(),
            });
        }
        if req.prompt.len() >= n_ctx {
            return Err(Error::ContextOverflow {
                prompt_tokens: req.prompt.len(),
                context: n_ctx,
            });
        }
        let mut sampler = Sampler::new(req.sampling.clone())?;
        // Reuse the cached prefix; always recompute at least the last prompt token for logits.
        let common = self
            .cached
            .iter()
            .zip(&req.prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(req.prompt.len() - 1);
        self.cached.truncate(common);
        self.feed(&req.prompt[common..], common, &req.prefill_splits)?;
        let prompt_time = start.elapsed();

        let mut history = TokenHistory::new(&req.prompt);
        let mut detok = self.tokenizer.decode_stream(true);
        let mut stops = StopMatcher::new(&req.stop);
        let mut out = Vec::new();
        let mut ttft = None;
        let max_new = req.max_tokens.min(n_ctx - req.prompt.len());
        let mut finish = FinishReason::Length;
        // A stop string ends the text at the match; anything the decoder still holds lies after
        // it. Any other end (EOS, length) flushes what is held, so no output is lost.
        let mut stopped_by_string = false;
        let emit = |text: String, on_text: &mut dyn FnMut(&str)| {
            if !text.is_empty() {
                on_text(&text);
            }
        };
        while out.len() < max_new {
            let tok = sampler.sample(&mut self.logits, &history).token;
            out.push(tok);
            history.push(tok);
            ttft.get_or_insert_with(|| start.elapsed());
            if !req.ignore_eos && self.tokenizer.is_end_of_generation(tok) {
                finish = FinishReason::Stop;
                break;
            }
            if let Some(text) = detok.step(&self.tokenizer, tok)? {
                match stops.push(&text) {
                    StopStep::Emit(t) => emit(t, on_text),
                    StopStep::Stopped { emit: t, .. } => {
                        emit(t, on_text);
                        finish = FinishReason::Stop;
                        stopped_by_string = true;
                        break;
                    }
                }
            }
            if out.len() == max_new {
                break;
            }
            let pos = req.prompt.len() + out.len() - 1;
            self.feed(&[tok], pos, &[])?;
        }
        if !stopped_by_string {
            if let Some(t) = detok.flush(&self.tokenizer)? {
                match stops.push(&t) {
                    StopStep::Emit(t) => emit(t, on_text),
                    StopStep::Stopped { emit: t, .. } => {
                        emit(t, on_text);
                        finish = FinishReason::Stop;
                        stopped_by_string = true;
                    }
                }
            }
            if !stopped_by_string {
                emit(stops.flush(), on_text);
            }
        }
        let ttft = ttft.unwrap_or_else(|| start.elapsed());
        Ok(GenerationStats {
            prompt_tokens: req.prompt.len(),
            cached_tokens: common,
            generated_tokens: out.len(),
            prompt_time,
            time_to_first_token: ttft,
            decode_time: start.elapsed().saturating_sub(ttft),
            finish_reason: finish,
            tokens: out,
        })
    }
}
