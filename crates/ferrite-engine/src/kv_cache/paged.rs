//! Paged KV storage: the block pool's blocks as f16 memory, laid out
//! `[block][layer][kv_head][slot in block][head_dim]` so one block of one head is a contiguous
//! run that attention reads in one piece. Before each forward the engine installs the block
//! table of every batch slot; the model only sees [`KvStore`].

use std::ops::Range;

use ferrite_models::{store_f16_row, KvStore, KvVisitor, SeqSlot};

use super::block_pool::BlockId;

/// f16 keys and values for every block of the pool.
#[derive(Debug)]
pub struct PagedKvStore {
    n_layers: usize,
    n_kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    num_blocks: usize,
    max_len: usize,
    k: Vec<u8>,
    v: Vec<u8>,
    tables: Vec<Vec<BlockId>>,
}

impl PagedKvStore {
    /// Bytes one block takes (keys and values).
    pub fn block_bytes(n_layers: usize, n_kv_heads: usize, head_dim: usize, bs: usize) -> usize {
        2 * n_layers * n_kv_heads * bs * head_dim * 2
    }

    /// Storage for `num_blocks` blocks; sequences are limited to `max_len` positions.
    pub fn new(
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        block_size: usize,
        num_blocks: usize,
        max_len: usize,
    ) -> PagedKvStore {
        let half = Self::block_bytes(n_layers, n_kv_heads, head_dim, block_size) / 2 * num_blocks;
        PagedKvStore {
            n_layers,
            n_kv_heads,
            head_dim,
            block_size,
            num_blocks,
            max_len,
            k: vec![0; half],
            v: vec![0; half],
            tables: Vec::new(),
        }
    }

    /// Install the block tables of this step's batch slots (slot i uses `tables[i]`).
    pub fn set_tables<'a>(&mut self, tables: impl IntoIterator<Item = &'a [BlockId]>) {
        let mut n = 0;
        for (i, t) in tables.into_iter().enumerate() {
            if i < self.tables.len() {
                self.tables[i].clear();
                self.tables[i].extend_from_slice(t);
            } else {
                self.tables.push(t.to_vec());
            }
            n = i + 1;
        }
        self.tables.truncate(n);
    }

    /// Total bytes of keys and values.
    pub fn size_bytes(&self) -> usize {
        self.k.len() + self.v.len()
    }

    fn offset(&self, block: BlockId, layer: usize, head: usize, within: usize) -> usize {
        let rows = ((block as usize * self.n_layers + layer) * self.n_kv_heads + head)
            * self.block_size
            + within;
        rows * self.head_dim * 2
    }

    fn block_of(&self, seq: SeqSlot, pos: usize) -> Option<BlockId> {
        self.tables
            .get(seq)?
            .get(pos / self.block_size)
            .copied()
            .filter(|&b| (b as usize) < self.num_blocks)
    }
}

impl KvStore for PagedKvStore {
    fn write(
        &mut self,
        layer: usize,
        seq: SeqSlot,
        pos: usize,
        k: &[f32],
        v: &[f32],
    ) -> ferrite_models::Result<()> {
        let block = self.block_of(seq, pos).ok_or_else(|| {
            ferrite_models::Error::Batch(format!(
                "no KV block allocated for slot {seq} position {pos}"
            ))
        })?;
        let d = self.head_dim;
        for h in 0..self.n_kv_heads {
            let o = self.offset(block, layer, h, pos % self.block_size);
            store_f16_row(&mut self.k[o..o + 2 * d], &k[h * d..(h + 1) * d]);
            store_f16_row(&mut self.v[o..o + 2 * d], &v[h * d..(h + 1) * d]);
        }
        Ok(())
    }

    fn read(
        &self,
        layer: usize,
        seq: SeqSlot,
        head: usize,
        range: Range<usize>,
        f: &mut KvVisitor<'_>,
    ) {
        let bs = self.block_size;
        let mut pos = range.start;
        while pos < range.end {
            let Some(block) = self.block_of(seq, pos) else {
                return;
            };
            let end = ((pos / bs + 1) * bs).min(range.end);
            let a = self.offset(block, layer, head, pos % bs);
            let b = a + (end - pos) * self.head_dim * 2;
            f(&self.k[a..b], &self.v[a..b], end - pos);
            pos = end;
        }
    }

    fn capacity(&self) -> usize {
        self.max_len
    }
}
