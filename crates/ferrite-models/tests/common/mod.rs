//! Helpers shared by the model test files.

use ferrite_models::{ContiguousKvCache, ForwardBatch, KvFormat, Model};

/// A one-sequence cache of 64 positions for `m`, rows stored as `format`.
pub fn cache(m: &dyn Model, format: KvFormat) -> ContiguousKvCache {
    let c = m.config();
    ContiguousKvCache::with_format(format, c.n_layers, c.n_kv_heads, c.head_dim, 64, 1).unwrap()
}

/// Logits at every prompt position, as one prefill batch.
pub fn prefill_all(m: &mut dyn Model, tokens: &[u32]) -> Vec<Vec<f32>> {
    prefill_in(m, tokens, KvFormat::F16)
}

/// [`prefill_all`] with a cache storing rows as `format`.
pub fn prefill_in(m: &mut dyn Model, tokens: &[u32], format: KvFormat) -> Vec<Vec<f32>> {
    let c = m.config().clone();
    let mut kv = cache(m, format);
    let pos: Vec<usize> = (0..tokens.len()).collect();
    let slots = vec![0; tokens.len()];
    let rows: Vec<usize> = (0..tokens.len()).collect();
    let mut out = Vec::new();
    let b = ForwardBatch {
        tokens,
        positions: &pos,
        slots: &slots,
        logits_rows: &rows,
        kernel_groups: None,
    };
    m.forward(&b, &mut kv, &mut out).unwrap();
    out.chunks(c.vocab_size).map(|r| r.to_vec()).collect()
}

/// Relative L2 error of `a` against `b`.
pub fn rel_err(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            num += f64::from(p - q).powi(2);
            den += f64::from(*q).powi(2);
        }
    }
    (num / den).sqrt()
}
