//! Per-request block tables over the [`BlockPool`], with prefix-cache lookups
//! (vLLM V1's `KVCacheManager`).

use std::collections::HashMap;

use super::block_pool::{BlockId, BlockPool};
use super::hash::BlockHash;

/// Request identity inside the engine.
pub type RequestId = u64;

/// Block tables of running requests, and the pool they draw from.
#[derive(Debug)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    watermark_blocks: usize,
    tables: HashMap<RequestId, Vec<BlockId>>,
    num_cached_blocks: HashMap<RequestId, usize>,
}

impl KvCacheManager {
    /// A manager over `num_blocks` blocks (block 0 is the null block) of `block_size` tokens.
    /// `watermark_blocks` stay free when admitting new requests, so running ones can grow.
    pub fn new(num_blocks: usize, block_size: usize, watermark_blocks: usize) -> KvCacheManager {
        KvCacheManager {
            pool: BlockPool::new(num_blocks),
            block_size,
            watermark_blocks,
            tables: HashMap::new(),
            num_cached_blocks: HashMap::new(),
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The pool (metrics, tests).
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// Share of blocks referenced by requests, 0..1 (`1 − free/(N−1)`).
    pub fn usage(&self) -> f64 {
        self.pool.usage()
    }

    /// The block table of `req`.
    pub fn blocks(&self, req: RequestId) -> &[BlockId] {
        self.tables.get(&req).map_or(&[], |v| v.as_slice())
    }

    /// Longest cached prefix of a request's full blocks: the blocks and the tokens they hold.
    /// At most `num_tokens − 1` tokens (floored to a block) are returned, because the last
    /// token must be computed to produce logits.
    pub fn get_computed_blocks(
        &self,
        hashes: &[BlockHash],
        num_tokens: usize,
    ) -> (Vec<BlockId>, usize) {
        let max_blocks = num_tokens.saturating_sub(1) / self.block_size;
        let mut hit = Vec::new();
        for h in hashes.iter().take(max_blocks) {
            match self.pool.lookup(h) {
                Some(b) => hit.push(b),
                None => break,
            }
        }
        let n = hit.len() * self.block_size;
        (hit, n)
    }

    /// Give `req` slots for `num_new` more tokens after its `num_computed` (which include the
    /// prefix hit `hit`, taken on here). Full blocks up to `num_tokens` (finalized tokens only,
    /// never drafts) are registered in the prefix cache under `hashes`. Returns `false`, with
    /// no change at all, when the pool cannot supply the blocks.
    #[allow(clippy::too_many_arguments)]
    pub fn allocate_slots(
        &mut self,
        req: RequestId,
        num_computed: usize,
        num_new: usize,
        hit: &[BlockId],
        hashes: &[BlockHash],
        num_tokens: usize,
        apply_watermark: bool,
    ) -> bool {
        let bs = self.block_size;
        let held = self.tables.get(&req).map_or(0, Vec::len);
        let total = (num_computed + num_new).div_ceil(bs);
        let new_blocks = total.saturating_sub(held + hit.len());
        let revived = hit.iter().filter(|&&b| self.pool.ref_cnt(b) == 0).count();
        let reserve = if apply_watermark {
            self.watermark_blocks
        } else {
            0
        };
        if new_blocks + revived + reserve > self.pool.num_free() {
            return false;
        }
        let table = self.tables.entry(req).or_default();
        for &b in hit {
            self.pool.touch(b);
            table.push(b);
        }
        for _ in 0..new_blocks {
            // Checked above: the queue holds enough blocks.
            if let Some(b) = self.pool.allocate() {
                table.push(b);
            }
        }
        let full = ((num_computed + num_new).min(num_tokens) / bs).min(hashes.len());
        let cached = self.num_cached_blocks.entry(req).or_insert(0);
        for i in *cached..full {
            self.pool.cache(table[i], hashes[i]);
        }
        *cached = (*cached).max(full);
        true
    }

    /// Release every block of `req`, tail first, so the longest (least shared) prefixes are
    /// evicted first.
    pub fn free(&mut self, req: RequestId) {
        if let Some(table) = self.tables.remove(&req) {
            for &b in table.iter().rev() {
                self.pool.release(b);
            }
        }
        self.num_cached_blocks.remove(&req);
    }

    /// Drop every prefix-cache entry; only when no request holds blocks.
    pub fn reset_prefix_cache(&mut self) -> bool {
        self.pool.reset_cache()
    }

    /// Check K1 (reference counts equal table membership) and the pool's invariants.
    pub fn check(&self) -> Result<(), String> {
        self.pool.check()?;
        let mut counts: HashMap<BlockId, u32> = HashMap::new();
        for t in self.tables.values() {
            for &b in t {
                *counts.entry(b).or_default() += 1;
            }
        }
        for b in 1..=self.pool.capacity() as BlockId {
            let want = counts.get(&b).copied().unwrap_or(0);
            if self.pool.ref_cnt(b) != want {
                return Err(format!(
                    "block {b}: ref_cnt {} but {want} tables hold it",
                    self.pool.ref_cnt(b)
                ));
            }
        }
        Ok(())
    }
}
