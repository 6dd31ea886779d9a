//! Attention for the tokens of a prompt-sized batch: llama.cpp's tiled flash attention
//! ([`ferrite_kernels::attention_tiled`]), which it runs when a batch (a ubatch; here a kernel
//! group, see [`ForwardBatch::kernel_groups`]) holds at least
//! [`TILED_MIN_QUERIES`] tokens. A unit of work is a block of up to [`BLOCK_TOKENS`] consecutive
//! tokens of one sequence and one KV head: their query heads (the block's tokens times the heads
//! sharing that KV head) read each key and value tile once and run both products as
//! register-tiled matrix products. Tokens of smaller groups in the same batch (decode rows,
//! short chunks) keep the one-query kernel, one unit per (token, KV head).

use ferrite_kernels::attention_tiled::{TiledAttention, TILED_MIN_QUERIES};
use ferrite_kernels::KvFormat;

use crate::cpu::{attend, AttentionParams, Cpu};
use crate::kv::KvStore;
use crate::ForwardBatch;

/// Tokens per tiled unit: 16 tokens give 48 query rows on SmolLM2 (3 heads per KV head) and 64
/// on Gemma3 (4), enough rows to amortize widening each key tile, few enough that a prompt of
/// 512 tokens still makes 32–96 units for the threads to claim.
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

/// A unit of work: tokens `t0..t0 + len` (tiled) or token `t0` alone, KV head `kv_head`.
#[derive(Debug, Clone, Copy)]
struct Unit {
    t0: usize,
    len: usize,
    kv_head: usize,
    tiled: bool,
}

/// Causal attention of every query of the batch (as [`crate::cpu::attention`]), the tokens of
/// prompt-sized kernel groups through the tiled kernel.
pub fn attention_tiled(
    cpu: &Cpu,
    kv: &dyn KvStore,
    batch: &ForwardBatch<'_>,
    q: &[f32],
    p: AttentionParams,
    out: &mut [f32],
) {
    let (d, n) = (p.head_dim, batch.tokens.len());
    let group = p.n_heads / p.n_kv_heads;
    let mut units = Vec::new();
    let mut t = 0;
    while t < n {
        let tiled = group_size(batch, t) >= TILED_MIN_QUERIES;
        let mut len = 1;
        while tiled && len < BLOCK_TOKENS && t + len < n && same_group(batch, t + len - 1) {
            len += 1;
        }
        units.extend((0..p.n_kv_heads).map(|kv_head| Unit {
            t0: t,
            len,
            kv_head,
            tiled,
        }));
        t += len;
    }
    let chunk = BLOCK_TOKENS * group * d;
    UNIT_OUT.with(|cell| {
        let mut scratch = cell.borrow_mut();
        scratch.resize(units.len() * chunk, 0.0);
        // Later units see more keys (causal): claimed dearest first.
        cpu.pool
            .par_chunks_mut_growing(&mut scratch, chunk, |i, o| {
                let u = units[i];
                if u.tiled {
                    attend_block(cpu, kv, batch, q, &p, u, o);
                } else {
                    let unit = u.t0 * p.n_kv_heads + u.kv_head;
                    attend(cpu, kv, batch, q, p, unit, 0..d, &mut o[..group * d]);
                }
            });
        // Unit rows are (token of the unit, head of the group); `out` is (token, head).
        for (u, o) in units.iter().zip(scratch.chunks_exact(chunk)) {
            for i in 0..u.len {
                let at = ((u.t0 + i) * p.n_heads + u.kv_head * group) * d;
                out[at..at + group * d].copy_from_slice(&o[i * group * d..(i + 1) * group * d]);
            }
        }
    });
}

/// One tiled unit: its rows' outputs into `o` (row = token of the unit × group + head).
fn attend_block(
    cpu: &Cpu,
    kv: &dyn KvStore,
    batch: &ForwardBatch<'_>,
    q: &[f32],
    p: &AttentionParams,
    u: Unit,
    o: &mut [f32],
) {
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
            let pos = batch.positions[t];
            let lo = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            (first, end) = (first.min(lo), end.max(pos + 1));
            for h in 0..group {
                let at = (t * p.n_heads + u.kv_head * group + h) * d;
                tiles.push_query(&q[at..at + d], lo..pos + 1);
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
        tiles.finish(|r, row| o[r * d..(r + 1) * d].copy_from_slice(row));
    });
}

thread_local! {
    /// Each pool thread's tiled-attention buffers, kept between calls.
    static TILED: std::cell::RefCell<Option<TiledAttention>> =
        const { std::cell::RefCell::new(None) };
    /// The caller's buffer of unit outputs.
    static UNIT_OUT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}
