//! Attention for the tokens of a prompt-sized batch: llama.cpp's tiled flash attention
//! ([`ferrite_kernels::attention_tiled`]), which it runs when a batch (a ubatch; here a kernel
//! group, see [`ForwardBatch::kernel_groups`]) holds at least
//! [`TILED_MIN_QUERIES`] tokens. The threads claim blocks of [`BLOCK_TOKENS`] batch tokens; in a
//! block, the tokens of one tiled group and the query heads of one KV head form a unit that reads
//! each key and value tile once and runs both products as register-tiled matrix products. Tokens
//! of smaller groups in the same batch (decode rows, short chunks) keep the one-query kernel, one
//! unit per (token, KV head).

use ferrite_kernels::attention_tiled::{TiledAttention, TILED_MIN_QUERIES};
use ferrite_kernels::KvFormat;

use crate::attention::{visible_keys, AttentionParams, LayerInputs};
use crate::kv::KvStore;
use crate::ForwardBatch;

/// Tokens per claimed block (and most per tiled unit): 16 tokens give 48 query rows on SmolLM2
/// (3 heads per KV head) and 64 on Gemma3 (4), enough rows to amortize widening each key tile,
/// few enough that a prompt of 512 tokens still makes 32 blocks for the threads to claim.
pub const BLOCK_TOKENS: usize = 16;

/// Whether `batch` has tokens for the tiled kernel: an f16 cache, no score soft-capping (which
/// the tiled arithmetic would apply differently) and a kernel group of at least
/// [`TILED_MIN_QUERIES`] tokens.
pub fn wants_tiles(kv: &dyn KvStore, batch: &ForwardBatch<'_>, p: &AttentionParams) -> bool {
    kv.format() == KvFormat::F16
        && p.softcap.is_none()
        && (0..batch.tokens.len()).any(|t| group_size(batch, t) >= TILED_MIN_QUERIES)
}

/// Size of token `t`'s kernel group (the whole batch when there are none).
fn group_size(batch: &ForwardBatch<'_>, t: usize) -> usize {
    batch.kernel_groups.map_or(batch.tokens.len(), |g| g[t].1)
}

/// Whether token `t + 1` continues token `t`'s kernel group.
fn same_group(batch: &ForwardBatch<'_>, t: usize) -> bool {
    batch.slots[t] == batch.slots[t + 1]
        && batch
            .kernel_groups
            .is_none_or(|g| g[t + 1].0 == g[t].0 + 1 && g[t + 1].1 == g[t].1)
}

/// A run of tokens `t0..t0 + len` of one tiled kernel group, for KV head `kv_head`.
#[derive(Debug, Clone, Copy)]
struct Unit {
    t0: usize,
    len: usize,
    kv_head: usize,
}

/// Causal attention of every query of the batch (as [`crate::attention::attention`]), the tokens of
/// prompt-sized kernel groups through the tiled kernel. The threads claim blocks of
/// [`BLOCK_TOKENS`] batch tokens (dearest first) and write each block's rows of `out` in place;
/// inside a block, each run of one tiled group is a unit per KV head, and any other token is
/// attended alone per KV head. Cutting a group's tokens into runs changes nothing: a tiled row's
/// result does not depend on which rows share its unit.
pub fn attention_tiled(layer: LayerInputs<'_, '_>, out: &mut [f32]) {
    let LayerInputs { cpu, batch, p, .. } = layer;
    let (d, n) = (p.head_dim, batch.tokens.len());
    let group = p.n_heads / p.n_kv_heads;
    let row = p.n_heads * d; // one token's output
    cpu.pool
        .par_chunks_mut_growing(&mut out[..n * row], BLOCK_TOKENS * row, |c, o| {
            let first = c * BLOCK_TOKENS;
            let end = first + o.len() / row;
            let mut t = first;
            while t < end {
                let tiled = group_size(batch, t) >= TILED_MIN_QUERIES;
                let mut len = 1;
                while tiled && t + len < end && same_group(batch, t + len - 1) {
                    len += 1;
                }
                let at = (t - first) * row;
                for kv_head in 0..p.n_kv_heads {
                    if tiled {
                        let u = Unit {
                            t0: t,
                            len,
                            kv_head,
                        };
                        attend_block(layer, u, &mut o[at..at + len * row]);
                    } else {
                        let heads = at + kv_head * group * d;
                        let unit = t * p.n_kv_heads + kv_head;
                        layer.attend(unit, 0..d, &mut o[heads..heads + group * d]);
                    }
                }
                t += len;
            }
        });
}

/// One tiled unit: its rows' outputs into `o`, the unit's tokens' output rows (`len ×
/// n_heads·d`), at the heads of its KV head.
fn attend_block(layer: LayerInputs<'_, '_>, u: Unit, o: &mut [f32]) {
    let LayerInputs {
        cpu,
        kv,
        batch,
        q,
        p,
    } = layer;
    let d = p.head_dim;
    let group = p.n_heads / p.n_kv_heads;
    TILED.with(|cell| {
        let mut slot = cell.borrow_mut();
        let tiles = match &mut *slot {
            Some(t) if t.dims() == (d, d) => t,
            other => other.insert(TiledAttention::new(&cpu.kernels, d, d)),
        };
        tiles.begin(p.scale);
        // The keys any row of the unit sees: from the lowest window start to the last position.
        let (mut first, mut end) = (usize::MAX, 0);
        for t in u.t0..u.t0 + u.len {
            let keys = visible_keys(batch, t, &p);
            (first, end) = (first.min(keys.start), end.max(keys.end));
            for h in 0..group {
                let at = (t * p.n_heads + u.kv_head * group + h) * d;
                tiles.push_query(&q[at..at + d], keys.clone());
            }
        }
        let mut at = first;
        kv.read(
            p.layer,
            batch.slots[u.t0],
            u.kv_head,
            first..end,
            &mut |k, v, n| {
                tiles.feed(at, k, v, n);
                at += n;
            },
        );
        tiles.finish(|r, row| {
            // Row r is head r % group of token r / group of the unit.
            let at = ((r / group) * p.n_heads + u.kv_head * group + r % group) * d;
            o[at..at + d].copy_from_slice(row)
        });
    });
}

thread_local! {
    /// Each pool thread's tiled-attention buffers, kept between calls.
    static TILED: std::cell::RefCell<Option<TiledAttention>> =
        const { std::cell::RefCell::new(None) };
}
