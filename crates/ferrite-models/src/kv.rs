//! The KV-cache interface the forward passes use, and a contiguous implementation.
//!
//! Models only `write` the rotated key and value of a token and read back, per (layer, sequence,
//! KV head), the stored rows of a position range as contiguous runs of rows in the store's
//! [`KvFormat`] (f16 by default, or Q8_0). A paged cache
//! (the server's block pool) implements the same trait with one run per block, so the model code
//! does not change when the cache does.

use std::ops::Range;

pub use ferrite_kernels::KvFormat;

use crate::{Error, Result};

/// Identifies a sequence inside a cache (a slot index; the engine maps requests to slots).
pub type SeqSlot = usize;

/// Receives runs of stored rows: `(keys, values, n)`, see [`KvStore::read`].
pub type KvVisitor<'a> = dyn FnMut(&[u8], &[u8], usize) + 'a;

/// Storage for keys and values, in f16 (llama.cpp's default cache type) or another
/// [`KvFormat`].
pub trait KvStore: Sync {
    /// How rows are stored (what [`read`](Self::read) hands out).
    fn format(&self) -> KvFormat {
        KvFormat::F16
    }

    /// Store the key and value of `seq` at `pos` in layer `layer`. `k` and `v` hold
    /// `n_kv_heads · head_dim` values, head after head.
    fn write(&mut self, layer: usize, seq: SeqSlot, pos: usize, k: &[f32], v: &[f32])
        -> Result<()>;

    /// Call `f(keys, values, n)` for runs of stored rows of `head` covering positions `range` in
    /// order: `keys` and `values` are `n` rows of `head_dim` values in the store's format
    /// (f16: little-endian bytes; Q8_0: its blocks).
    fn read(
        &self,
        layer: usize,
        seq: SeqSlot,
        head: usize,
        range: Range<usize>,
        f: &mut KvVisitor<'_>,
    );

    /// Positions a sequence can hold.
    fn capacity(&self) -> usize;
}

/// One contiguous cache per sequence slot, laid out `[slot][layer][kv_head][pos][row]` so each
/// head's rows are contiguous.
#[derive(Debug)]
pub struct ContiguousKvCache {
    n_layers: usize,
    n_kv_heads: usize,
    head_dim: usize,
    format: KvFormat,
    /// Bytes of one stored row (`head_dim` elements).
    row_bytes: usize,
    capacity: usize,
    n_slots: usize,
    k: Vec<u8>,
    v: Vec<u8>,
}

impl ContiguousKvCache {
    /// An f16 cache for `n_slots` sequences of up to `capacity` positions each.
    pub fn new(
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        n_slots: usize,
    ) -> Result<ContiguousKvCache> {
        Self::with_format(
            KvFormat::F16,
            n_layers,
            n_kv_heads,
            head_dim,
            capacity,
            n_slots,
        )
    }

    /// [`new`](Self::new) storing rows as `format`; errors if the head size does not fit it.
    pub fn with_format(
        format: KvFormat,
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        n_slots: usize,
    ) -> Result<ContiguousKvCache> {
        let row_bytes = format
            .row_bytes(head_dim)
            .map_err(|e| Error::Config(format!("{format} KV cache: {e}")))?;
        let bytes = [n_layers, n_kv_heads, row_bytes, capacity, n_slots]
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| Error::Config("KV cache size overflows".into()))?;
        Ok(ContiguousKvCache {
            n_layers,
            n_kv_heads,
            head_dim,
            format,
            row_bytes,
            capacity,
            n_slots,
            k: vec![0; bytes],
            v: vec![0; bytes],
        })
    }

    /// Bytes used by keys and values together.
    pub fn size_bytes(&self) -> usize {
        self.k.len() + self.v.len()
    }

    fn row_offset(&self, layer: usize, seq: SeqSlot, head: usize, pos: usize) -> usize {
        let rows = (((seq * self.n_layers + layer) * self.n_kv_heads + head) * self.capacity) + pos;
        rows * self.row_bytes
    }
}

impl KvStore for ContiguousKvCache {
    fn write(
        &mut self,
        layer: usize,
        seq: SeqSlot,
        pos: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<()> {
        if pos >= self.capacity {
            return Err(Error::ContextFull {
                position: pos,
                capacity: self.capacity,
            });
        }
        if seq >= self.n_slots || layer >= self.n_layers {
            return Err(Error::Config(format!(
                "KV write to slot {seq} layer {layer} outside {} slots × {} layers",
                self.n_slots, self.n_layers
            )));
        }
        let (d, rb) = (self.head_dim, self.row_bytes);
        for h in 0..self.n_kv_heads {
            let o = self.row_offset(layer, seq, h, pos);
            let f = self.format;
            f.store_row(&mut self.k[o..o + rb], &k[h * d..(h + 1) * d])
                .and_then(|()| f.store_row(&mut self.v[o..o + rb], &v[h * d..(h + 1) * d]))
                .map_err(Error::Kernel)?;
        }
        Ok(())
    }

    fn format(&self) -> KvFormat {
        self.format
    }

    fn read(
        &self,
        layer: usize,
        seq: SeqSlot,
        head: usize,
        range: Range<usize>,
        f: &mut KvVisitor<'_>,
    ) {
        let range = range.start..range.end.min(self.capacity);
        if range.is_empty() {
            return;
        }
        let a = self.row_offset(layer, seq, head, range.start);
        let b = self.row_offset(layer, seq, head, range.end - 1) + self.row_bytes;
        f(&self.k[a..b], &self.v[a..b], range.len());
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}
