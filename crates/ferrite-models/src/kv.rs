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

/// What a model's KV cache holds per layer and position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    /// Layers.
    pub n_layers: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Elements of one key row.
    pub head_dim: usize,
    /// Values are not stored apart: a row's values are its key row's leading columns
    /// (DeepSeek's latent attention caches `[c | k_pe]` once and attends with `c` as values),
    /// so a cache holds keys only and [`KvStore::read`] hands the key rows out as values.
    pub values_are_keys: bool,
}

impl KvShape {
    /// Bytes per position (all layers and heads, keys and any values) with rows of
    /// `row_bytes` ([`KvFormat::row_bytes`] of the head size).
    pub fn bytes_per_position(&self, row_bytes: usize) -> usize {
        let copies = if self.values_are_keys { 1 } else { 2 };
        copies * self.n_layers * self.n_kv_heads * row_bytes
    }
}

/// Receives runs of stored rows: `(keys, values, n)`, see [`KvStore::read`]. The rows borrow
/// the store (`'s`), so a visitor may keep them, e.g. to hand a paged cache's blocks to
/// attention all at once.
pub type KvVisitor<'f, 's> = dyn FnMut(&'s [u8], &'s [u8], usize) + 'f;

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
    fn read<'s>(
        &'s self,
        layer: usize,
        seq: SeqSlot,
        head: usize,
        range: Range<usize>,
        f: &mut KvVisitor<'_, 's>,
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
    /// Empty when values are the keys' leading columns ([`KvShape::values_are_keys`]).
    v: Vec<u8>,
    values_are_keys: bool,
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
            values_are_keys: false,
        })
    }

    /// A cache of `shape` (as [`ModelConfig::kv_shape`] gives it) storing rows as `format`.
    ///
    /// [`ModelConfig::kv_shape`]: crate::ModelConfig::kv_shape
    pub fn for_shape(
        shape: KvShape,
        format: KvFormat,
        capacity: usize,
        n_slots: usize,
    ) -> Result<ContiguousKvCache> {
        let mut c = Self::with_format(
            format,
            shape.n_layers,
            shape.n_kv_heads,
            shape.head_dim,
            capacity,
            n_slots,
        )?;
        if shape.values_are_keys {
            c.v = Vec::new();
            c.values_are_keys = true;
        }
        Ok(c)
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
        let (d, rb, f) = (self.head_dim, self.row_bytes, self.format);
        for h in 0..self.n_kv_heads {
            let o = self.row_offset(layer, seq, h, pos);
            f.store_row(&mut self.k[o..o + rb], &k[h * d..(h + 1) * d])
                .map_err(Error::Kernel)?;
            if !self.values_are_keys {
                f.store_row(&mut self.v[o..o + rb], &v[h * d..(h + 1) * d])
                    .map_err(Error::Kernel)?;
            }
        }
        Ok(())
    }

    fn format(&self) -> KvFormat {
        self.format
    }

    fn read<'s>(
        &'s self,
        layer: usize,
        seq: SeqSlot,
        head: usize,
        range: Range<usize>,
        f: &mut KvVisitor<'_, 's>,
    ) {
        let range = range.start..range.end.min(self.capacity);
        if range.is_empty() {
            return;
        }
        let a = self.row_offset(layer, seq, head, range.start);
        let b = self.row_offset(layer, seq, head, range.end - 1) + self.row_bytes;
        let values = if self.values_are_keys {
            &self.k
        } else {
            &self.v
        };
        f(&self.k[a..b], &values[a..b], range.len());
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_whose_values_are_keys_stores_each_row_once_and_reads_it_as_both() {
        let shape = |values_are_keys| KvShape {
            n_layers: 2,
            n_kv_heads: 1,
            head_dim: 64,
            values_are_keys,
        };
        let both = ContiguousKvCache::for_shape(shape(false), KvFormat::F16, 8, 1).unwrap();
        let mut once = ContiguousKvCache::for_shape(shape(true), KvFormat::F16, 8, 1).unwrap();
        assert_eq!(2 * once.size_bytes(), both.size_bytes());
        assert_eq!(shape(true).bytes_per_position(128), 2 * 128);
        let row: Vec<f32> = (0..64).map(|i| i as f32).collect();
        // The values passed are ignored: they are the key row.
        once.write(1, 0, 3, &row, &[]).unwrap();
        let mut seen = 0;
        once.read(1, 0, 0, 3..4, &mut |k, v, n| {
            assert_eq!((k, n), (v, 1));
            assert_eq!(k.len(), 128);
            seen += 1;
        });
        assert_eq!(seen, 1);
    }
}
