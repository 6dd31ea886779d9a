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
    let c = model.config().clone();
    let vocab = c.vocab_size;
    let mut kv = ContiguousKvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, ctx, 1)?;
    let first = ctx / 2;
    let positions: Vec<usize> = (0..ctx).collect();
    let slots = vec![0; ctx];
    let rows: Vec<usize> = (first..ctx - 1).collect();
    let mut logits = Vec::new();
    let (mut nll, mut count) = (0f64, 0usize);
    for ch in 0..n_chunks {
        let mut chunk = tokens[ch * ctx..(ch + 1) * ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        let batch = ForwardBatch {
            tokens: &chunk,
            positions: &positions,
            slots: &slots,
            logits_rows: &rows,
            kernel_groups: None,
        };
        model.forward(&batch, &mut kv, &mut logits)?;
        for (i, &r) in rows.iter().enumerate() {
            let l = &logits[i * vocab..(i + 1) * vocab];
            let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = f64::from(max)
                + l.iter()
                    .map(|&v| f64::from(v - max).exp())
                    .sum::<f64>()
                    .ln();
            // Original tokens are predicted (the BOS substitution affects only the input).
            nll += lse - f64::from(l[tokens[ch * ctx + r + 1] as usize]);
            count += 1;
        }
        progress(ch, (nll / count as f64).exp());
    }
    Ok(Perplexity {
        ppl: (nll / count as f64).exp(),
        tokens_scored: count,
        chunks: n_chunks,
    })
}
