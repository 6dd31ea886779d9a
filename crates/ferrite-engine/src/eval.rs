//! Perplexity with llama.cpp's protocol (`llama-perplexity`): the token stream is cut into
//! ⌊N/ctx⌋ chunks; when the model adds BOS, each chunk's first token is replaced by BOS; each chunk
//! is evaluated from scratch and the predictions at positions ctx/2 .. ctx−2 (of the token that
//! follows) are scored.

use ferrite_models::{ContiguousKvCache, ForwardBatch, Model};

use crate::{Error, Result};

/// Perplexity and what it was computed over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood).
    pub ppl: f64,
    /// Tokens scored.
    pub tokens_scored: usize,
    /// Chunks evaluated.
    pub chunks: usize,
}

/// Evaluate `tokens` in chunks of `ctx`. `bos` replaces each chunk's first token when set.
/// `progress(chunk, ppl_so_far)` is called after each chunk.
pub fn perplexity(
    model: &mut dyn Model,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<Perplexity> {
    let mut chunks = ChunkRunner::new(model, tokens, ctx, bos)?;
    let (mut nll, mut count) = (0f64, 0usize);
    let mut logits = Vec::new();
    for ch in 0..chunks.n_chunks {
        chunks.logits(model, ch, &mut logits)?;
        for (i, next) in chunks.targets(ch).enumerate() {
            let l = &logits[i * chunks.vocab..(i + 1) * chunks.vocab];
            nll += log_sum_exp(l) - f64::from(l[next as usize]);
            count += 1;
        }
        progress(ch, (nll / count as f64).exp());
    }
    Ok(Perplexity {
        ppl: (nll / count as f64).exp(),
        tokens_scored: count,
        chunks: chunks.n_chunks,
    })
}

/// How far a model's next-token distributions are from a reference's on the same tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Mean KL(reference ‖ model) per scored position, in nats.
    pub kl_mean: f64,
    /// 99th percentile of the per-position KL.
    pub kl_p99: f64,
    /// Median per-position KL.
    pub kl_median: f64,
    /// Largest per-position KL.
    pub kl_max: f64,
    /// Fraction of positions where both put the most probability on the same token.
    pub top1_agreement: f64,
    /// Perplexity of the model.
    pub ppl: f64,
    /// Perplexity of the reference.
    pub ppl_reference: f64,
    /// Positions scored.
    pub tokens_scored: usize,
    /// Chunks evaluated.
    pub chunks: usize,
}

/// Compare `model` against `reference` with the perplexity protocol (same chunks, same scored
/// positions): KL divergence of the reference's next-token distribution to the model's (as
/// `llama-perplexity --kl-divergence` reports it), top-1 agreement, and both perplexities.
/// The two must share a vocabulary. `progress(chunk, mean_kl_so_far)` after each chunk.
pub fn compare(
    model: &mut dyn Model,
    reference: &mut dyn Model,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<Comparison> {
    if model.config().vocab_size != reference.config().vocab_size {
        return Err(Error::InvalidParam {
            field: "reference",
            message: format!(
                "vocabularies differ: {} vs {} tokens",
                model.config().vocab_size,
                reference.config().vocab_size
            ),
        });
    }
    let mut a = ChunkRunner::new(model, tokens, ctx, bos)?;
    let mut r = ChunkRunner::new(reference, tokens, ctx, bos)?;
    let vocab = a.vocab;
    let (mut la, mut lr) = (Vec::new(), Vec::new());
    let mut kls = Vec::new();
    let (mut nll_a, mut nll_r, mut same) = (0f64, 0f64, 0usize);
    for ch in 0..a.n_chunks {
        a.logits(model, ch, &mut la)?;
        r.logits(reference, ch, &mut lr)?;
        for (i, next) in a.targets(ch).enumerate() {
            let (pa, pr) = (
                &la[i * vocab..(i + 1) * vocab],
                &lr[i * vocab..(i + 1) * vocab],
            );
            let (za, zr) = (log_sum_exp(pa), log_sum_exp(pr));
            let mut kl = 0f64;
            for (&x, &y) in pa.iter().zip(pr) {
                let (lpa, lpr) = (f64::from(x) - za, f64::from(y) - zr);
                kl += lpr.exp() * (lpr - lpa);
            }
            kls.push(kl.max(0.0));
            nll_a += za - f64::from(pa[next as usize]);
            nll_r += zr - f64::from(pr[next as usize]);
            same += usize::from(argmax(pa) == argmax(pr));
        }
        progress(ch, kls.iter().sum::<f64>() / kls.len() as f64);
    }
    let n = kls.len();
    let mean = kls.iter().sum::<f64>() / n as f64;
    kls.sort_by(f64::total_cmp);
    // Nearest-rank percentiles.
    let pct = |p: f64| kls[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    Ok(Comparison {
        kl_mean: mean,
        kl_p99: pct(0.99),
        kl_median: pct(0.5),
        kl_max: kls[n - 1],
        top1_agreement: same as f64 / n as f64,
        ppl: (nll_a / n as f64).exp(),
        ppl_reference: (nll_r / n as f64).exp(),
        tokens_scored: n,
        chunks: a.n_chunks,
    })
}

/// Logits of every position of `tokens` and the greedy continuation after them.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogits {
    /// Vocabulary size (the width of each logits row).
    pub n_vocab: usize,
    /// One row per input position.
    pub logits: Vec<Vec<f32>>,
    /// Greedy tokens decoded one at a time after the input.
    pub greedy: Vec<u32>,
}

/// Run `tokens` as one prompt batch with logits at every position, then decode `generate`
/// greedy tokens one at a time: the protocol `scripts/reference-logits.sh` runs through
/// llama.cpp's C API, so the two outputs compare position by position.
pub fn token_logits(model: &mut dyn Model, tokens: &[u32], generate: usize) -> Result<TokenLogits> {
    if tokens.is_empty() {
        return Err(Error::InvalidParam {
            field: "tokens",
            message: "at least one token id is needed".into(),
        });
    }
    let c = model.config().clone();
    let n = tokens.len();
    let mut kv =
        ContiguousKvCache::for_shape(c.kv_shape(), model.cpu().kv_format, n + generate, 1)?;
    let positions: Vec<usize> = (0..n).collect();
    let rows: Vec<usize> = (0..n).collect();
    let mut out = Vec::new();
    let batch = ForwardBatch {
        tokens,
        positions: &positions,
        slots: &vec![0; n],
        logits_rows: &rows,
        kernel_groups: None,
    };
    model.forward(&batch, &mut kv, &mut out)?;
    let logits: Vec<Vec<f32>> = out
        .chunks_exact(c.vocab_size)
        .map(<[f32]>::to_vec)
        .collect();
    let mut greedy = Vec::with_capacity(generate);
    let mut next = argmax(&logits[n - 1]) as u32;
    for pos in n..n + generate {
        greedy.push(next);
        if pos + 1 == n + generate {
            break;
        }
        let batch = ForwardBatch {
            tokens: &[next],
            positions: &[pos],
            slots: &[0],
            logits_rows: &[0],
            kernel_groups: None,
        };
        model.forward(&batch, &mut kv, &mut out)?;
        next = argmax(&out) as u32;
    }
    Ok(TokenLogits {
        n_vocab: c.vocab_size,
        logits,
        greedy,
    })
}

fn log_sum_exp(l: &[f32]) -> f64 {
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    f64::from(max)
        + l.iter()
            .map(|&v| f64::from(v - max).exp())
            .sum::<f64>()
            .ln()
}

/// First index of the largest logit.
fn argmax(l: &[f32]) -> usize {
    l.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// The chunking of the perplexity protocol for one model: its cache and the scored rows.
struct ChunkRunner<'t> {
    tokens: &'t [u32],
    ctx: usize,
    bos: Option<u32>,
    n_chunks: usize,
    vocab: usize,
    kv: ContiguousKvCache,
    positions: Vec<usize>,
    slots: Vec<usize>,
    rows: Vec<usize>,
}

impl<'t> ChunkRunner<'t> {
    fn new(
        model: &dyn Model,
        tokens: &'t [u32],
        ctx: usize,
        bos: Option<u32>,
    ) -> Result<ChunkRunner<'t>> {
        if ctx < 4 {
            return Err(Error::InvalidParam {
                field: "ctx",
                message: format!("`ctx` must be ≥ 4, got {ctx}"),
            });
        }
        let n_chunks = tokens.len() / ctx;
        if n_chunks == 0 {
            return Err(Error::InvalidParam {
                field: "file",
                message: format!(
                    "the text has {} tokens, fewer than one context of {ctx}",
                    tokens.len()
                ),
            });
        }
        let c = model.config();
        Ok(ChunkRunner {
            tokens,
            ctx,
            bos,
            n_chunks,
            vocab: c.vocab_size,
            kv: ContiguousKvCache::for_shape(c.kv_shape(), model.cpu().kv_format, ctx, 1)?,
            positions: (0..ctx).collect(),
            slots: vec![0; ctx],
            rows: (ctx / 2..ctx - 1).collect(),
        })
    }

    /// Logits of chunk `ch` at the scored rows (`rows.len() × vocab`).
    fn logits(&mut self, model: &mut dyn Model, ch: usize, out: &mut Vec<f32>) -> Result<()> {
        let mut chunk = self.tokens[ch * self.ctx..(ch + 1) * self.ctx].to_vec();
        if let Some(b) = self.bos {
            chunk[0] = b;
        }
        let batch = ForwardBatch {
            tokens: &chunk,
            positions: &self.positions,
            slots: &self.slots,
            logits_rows: &self.rows,
            kernel_groups: None,
        };
        model.forward(&batch, &mut self.kv, out)?;
        Ok(())
    }

    /// The tokens the scored rows predict (the originals: BOS only replaces the input).
    fn targets(&self, ch: usize) -> impl Iterator<Item = u32> + '_ {
        self.rows
            .iter()
            .map(move |&r| self.tokens[ch * self.ctx + r + 1])
    }
}
