//! Attention of a batch's queries over their sequences' cached keys and values, one query at a
//! time (decoding, and prompt tokens outside prompt-sized kernel groups); prompt-sized groups go
//! through [`crate::prompt_attention`]'s tiles.

use std::ops::Range;

use ferrite_kernels::ops::{merge_partials, AttentionAccumulator, KvRun, SoftmaxStats};
use ferrite_kernels::KvFormat;

use crate::cpu::Cpu;
use crate::kv::KvStore;
use crate::ForwardBatch;

/// Attention settings of one layer.
#[derive(Debug, Clone, Copy)]
pub struct AttentionParams {
    /// Layer index in the KV store.
    pub layer: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Head size.
    pub head_dim: usize,
    /// Multiplier of Q·K.
    pub scale: f32,
    /// Only the last `window` positions are visible, when set.
    pub window: Option<usize>,
    /// `c·tanh(s/c)` on scores, when set.
    pub softcap: Option<f32>,
}

/// A query that sees at least this many keys of an f16 cache has them split into chunks whose
/// results are merged at the end, as llama.cpp's decoding attention does from 512 keys on
/// (`ggml_compute_forward_flash_attn_ext_f16`'s split-KV path). Below it, and with a Q8_0 cache
/// (which llama.cpp never splits), the keys are one run: llama.cpp's arithmetic exactly.
const SPLIT_MIN_KEYS: usize = 512;

/// About how many keys a chunk of a split query holds: a query over n keys is cut into
/// 2·⌈n / 2·KEY_CHUNK⌉ equal chunks — an even number, so two threads sharing one query (decoding
/// Gemma3: one KV head) get equal halves; a 512-key sliding window makes two chunks of 256.
/// llama.cpp cuts its (padded) cache view into one chunk per thread; chunks that depend only on
/// the keys make a token's result independent of the thread count and of what else is in the
/// batch (greedy output is the same with 1 or 2 threads, batched or alone). Each chunk costs its
/// set-up and a share of the merge: 256-key chunks decoded SmolLM2 at depth 8000 10% slower than
/// the unsplit loop, 1024 and 2048 10% faster (AMD EPYC, 2 threads).
const KEY_CHUNK: usize = 1024;

/// The keys token `t` sees: its window's start (or 0) through its own position.
pub(crate) fn visible_keys(
    batch: &ForwardBatch<'_>,
    t: usize,
    p: &AttentionParams,
) -> Range<usize> {
    let pos = batch.positions[t];
    let lo = match p.window {
        Some(w) => (pos + 1).saturating_sub(w),
        None => 0,
    };
    lo..pos + 1
}

/// Whether a query over `keys` has them split (see [`SPLIT_MIN_KEYS`]).
fn is_split(keys: &Range<usize>, format: KvFormat) -> bool {
    format == KvFormat::F16 && keys.len() >= SPLIT_MIN_KEYS
}

/// The chunks `keys` is accumulated in (see [`KEY_CHUNK`]): one unless [`is_split`].
fn key_chunks(keys: Range<usize>, format: KvFormat) -> impl Iterator<Item = Range<usize>> {
    let n = keys.len();
    let chunks = if is_split(&keys, format) {
        2 * n.div_ceil(2 * KEY_CHUNK)
    } else {
        1
    };
    (0..chunks).map(move |i| keys.start + i * n / chunks..keys.start + (i + 1) * n / chunks)
}

/// Causal attention of every query of the batch over its sequence's cached keys and values;
/// `q` is `T × n_heads·head_dim`, `out` the same shape. The unit of work is a (token, KV head):
/// the query heads that share a KV head attend together, reading each key and value block once
/// (each head's result is exactly what it would be alone).
///
/// Queries with long key ranges ([`SPLIT_MIN_KEYS`]) are split into key chunks that threads
/// take separately; their results are merged per query afterwards. Otherwise, with fewer units
/// than threads (decoding one token: Gemma3 has one KV head), each unit's output columns are
/// cut into parts that threads take separately — every part computes the scores and softmax in
/// full and accumulates only its own value columns, so the result is the same bit for bit.
/// Tokens of prompt-sized kernel groups go through llama.cpp's tiled kernel instead (see
/// [`crate::prompt_attention`]), as llama.cpp does for batches of 64 tokens or more.
pub fn attention(
    cpu: &Cpu,
    kv: &dyn KvStore,
    batch: &ForwardBatch<'_>,
    q: &[f32],
    p: AttentionParams,
    out: &mut Vec<f32>,
) {
    let d = p.head_dim;
    let group = p.n_heads / p.n_kv_heads;
    out.resize(q.len(), 0.0);
    let layer = LayerInputs {
        cpu,
        kv,
        batch,
        q,
        p,
    };
    if crate::prompt_attention::wants_tiles(kv, batch, &p) {
        crate::prompt_attention::attention_tiled(layer, out);
        return;
    }
    let n_tokens = batch.tokens.len();
    if (0..n_tokens).any(|t| is_split(&visible_keys(batch, t, &p), kv.format())) {
        attention_split(layer, out);
        return;
    }
    let units = n_tokens * p.n_kv_heads;
    let parts = column_parts(d, units, cpu.pool.n_threads());
    if parts == 1 {
        // A token's cost grows with its position (causal): units are claimed dearest first.
        cpu.pool
            .par_chunks_mut_growing(out, group * d, |u, o| layer.attend(u, 0..d, o));
        return;
    }
    let w = d / parts;
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        // Laid out (unit, part, head, column of the part): each chunk one (unit, part).
        scratch.resize(units * parts * group * w, 0.0);
        cpu.pool
            .par_chunks_mut_growing(&mut scratch, group * w, |c, o| {
                let (u, part) = (c / parts, c % parts);
                layer.attend(u, part * w..(part + 1) * w, o);
            });
        for (c, chunk) in scratch.chunks_exact(group * w).enumerate() {
            let (u, part) = (c / parts, c % parts);
            for (h, src) in chunk.chunks_exact(w).enumerate() {
                let at = (u * group + h) * d + part * w;
                out[at..at + w].copy_from_slice(src);
            }
        }
    });
}

/// [`attention`] with every (unit, key chunk) a piece of work of its own, then each unit's
/// chunks merged.
fn attention_split(layer: LayerInputs<'_, '_>, out: &mut [f32]) {
    let LayerInputs {
        cpu, kv, batch, p, ..
    } = layer;
    let (d, group) = (p.head_dim, p.n_heads / p.n_kv_heads);
    let stride = group * (2 + d);
    // (unit, keys) per piece, a unit's pieces consecutive from first[unit].
    let mut pieces = Vec::new();
    let mut first = Vec::with_capacity(batch.tokens.len() * p.n_kv_heads + 1);
    for t in 0..batch.tokens.len() {
        for g in 0..p.n_kv_heads {
            first.push(pieces.len());
            let u = t * p.n_kv_heads + g;
            pieces.extend(key_chunks(visible_keys(batch, t, &p), kv.format()).map(|c| (u, c)));
        }
    }
    first.push(pieces.len());
    SCRATCH.with(|cell| {
        let mut partials = cell.borrow_mut();
        partials.resize(pieces.len() * stride, 0.0);
        cpu.pool
            .par_chunks_mut_growing(&mut partials, stride, |i, o| {
                let (u, keys) = &pieces[i];
                layer.attend_partial(*u, keys.clone(), 0..d, o);
            });
        let partials: &[f32] = &partials;
        // One query head per piece of work (decoding Gemma3: one unit, four heads).
        cpu.pool.par_chunks_mut(out, d, |head, o| {
            let (u, h) = (head / group, head % group);
            let unit = &partials[first[u] * stride..first[u + 1] * stride];
            merge_head(unit, group, h, o);
        });
    });
}

/// What every piece of one layer's attention reads.
#[derive(Clone, Copy)]
pub(crate) struct LayerInputs<'a, 'b> {
    pub cpu: &'a Cpu,
    pub kv: &'a dyn KvStore,
    pub batch: &'a ForwardBatch<'b>,
    /// The batch's queries, `T × n_heads·head_dim`.
    pub q: &'a [f32],
    /// The layer's attention settings.
    pub p: AttentionParams,
}

impl LayerInputs<'_, '_> {
    /// Unit `u` (token `u / n_kv_heads`, KV head `u % n_kv_heads`): its query heads' output
    /// columns `cols` into `o` (`group × cols.len()`, head by head).
    pub(crate) fn attend(self, u: usize, cols: Range<usize>, o: &mut [f32]) {
        let (p, kv) = (self.p, self.kv);
        let (group, w) = (p.n_heads / p.n_kv_heads, cols.len());
        let keys = visible_keys(self.batch, u / p.n_kv_heads, &p);
        if is_split(&keys, kv.format()) {
            // The chunks one after another on this thread, then merged: the same arithmetic as
            // [`attention_split`] spreading them over threads.
            CHUNKS.with(|cell| {
                let mut partials = cell.borrow_mut();
                let stride = group * (2 + w);
                partials.clear();
                for chunk in key_chunks(keys, kv.format()) {
                    let at = partials.len();
                    partials.resize(at + stride, 0.0);
                    self.attend_partial(u, chunk, cols.clone(), &mut partials[at..]);
                }
                for (h, oh) in o.chunks_exact_mut(w).enumerate() {
                    merge_head(&partials, group, h, oh);
                }
            });
            return;
        }
        self.with_accumulated(u, keys, cols, |accs| {
            for (acc, oh) in accs.iter().zip(o.chunks_exact_mut(w)) {
                acc.finish(oh);
            }
        });
    }

    /// Unit `u`'s query heads over keys `keys` only, unnormalised: per head `[max, sum, values
    /// of cols…]` into `o` (`group × (2 + cols.len())`), for [`merge_head`].
    fn attend_partial(self, u: usize, keys: Range<usize>, cols: Range<usize>, o: &mut [f32]) {
        let w = cols.len();
        self.with_accumulated(u, keys, cols, |accs| {
            for (acc, oh) in accs.iter().zip(o.chunks_exact_mut(2 + w)) {
                let SoftmaxStats { max, sum } = acc.finish_unnormalised(&mut oh[2..]);
                (oh[0], oh[1]) = (max, sum);
            }
        });
    }

    /// Unit `u`'s query heads fed keys and values `keys` (this thread's accumulators, kept
    /// between calls: no allocation per unit), then handed to `finish`.
    fn with_accumulated(
        self,
        u: usize,
        keys: Range<usize>,
        cols: Range<usize>,
        finish: impl FnOnce(&[AttentionAccumulator]),
    ) {
        let LayerInputs {
            cpu,
            kv,
            batch,
            q,
            p,
        } = self;
        let d = p.head_dim;
        let group = p.n_heads / p.n_kv_heads;
        let (k, mode) = (cpu.kernels, cpu.attn_accum);
        let (t, g) = (u / p.n_kv_heads, u % p.n_kv_heads);
        ACCUMULATORS.with(|cell| {
            let mut accs = cell.borrow_mut();
            let format = kv.format();
            if accs.len() != group
                || accs
                    .iter()
                    .any(|a| a.head_dim() != d || a.mode() != mode || a.kv_format() != format)
            {
                // A head size the format cannot hold was refused when the cache was made.
                *accs = (0..group)
                    .map(|_| {
                        AttentionAccumulator::new(d, mode)
                            .with_kv_format(format)
                            .expect("invariant: the KV store checked the head size")
                    })
                    .collect();
            }
            let q0 = u * group * d; // query heads g·group.. of token t are contiguous in q
            for (h, acc) in accs.iter_mut().enumerate() {
                acc.set_columns(cols.clone());
                acc.begin(&q[q0 + h * d..q0 + (h + 1) * d], p.scale);
            }
            // A paged cache hands out its blocks one by one: all of them go to the accumulators
            // together, so the softmax runs once over the range instead of once per block.
            let mut runs = Vec::with_capacity(keys.len() / 16 + 2);
            kv.read(p.layer, batch.slots[t], g, keys, &mut |keys, values, n| {
                runs.push(KvRun { keys, values, n })
            });
            AttentionAccumulator::add_group_runs(&k, &mut accs, &runs, p.softcap);
            finish(&accs);
        });
    }
}

/// Head `h` of a unit from its chunks' partials (`n_chunks × group × (2 + w)`, as
/// [`LayerInputs::attend_partial`] writes them) into `o` (`w` columns).
fn merge_head(partials: &[f32], group: usize, h: usize, o: &mut [f32]) {
    let w = o.len();
    let chunks = partials.chunks_exact(group * (2 + w)).map(|c| {
        let head = &c[h * (2 + w)..(h + 1) * (2 + w)];
        let stats = SoftmaxStats {
            max: head[0],
            sum: head[1],
        };
        (stats, &head[2..])
    });
    merge_partials(chunks, o);
}

/// How many column parts each (token, KV head) unit is cut into: 1 when there are at least as
/// many units as threads, else the fewest halvings giving that, down to 32-column parts (the
/// value kernels' slice). Only as many as needed: every part recomputes the unit's scores, and
/// narrower parts give the value accumulation fewer independent chains (SmolLM2's three units
/// cut into six 32-column parts decoded 15% slower at depth 4096 than left whole).
fn column_parts(d: usize, units: usize, threads: usize) -> usize {
    let mut parts = 1;
    while units * parts < threads
        && d.is_multiple_of(2 * parts)
        && (d / (2 * parts)).is_multiple_of(32)
    {
        parts *= 2;
    }
    parts
}

thread_local! {
    static ACCUMULATORS: std::cell::RefCell<Vec<AttentionAccumulator>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// The caller's buffer for column parts or key chunks' partials (see [`attention`]).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// [`attend`]'s buffer for the partials of a split query's chunks.
    static CHUNKS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}
