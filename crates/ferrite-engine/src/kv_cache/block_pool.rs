//! The KV block pool: every block allocated at start-up, reference counts, an intrusive LRU free
//! queue and the prefix-cache map `hash → blocks` (vLLM V1's `BlockPool`).
//!
//! Block 0 is the null block: never handed out, never queued. A block whose reference count drops
//! to zero goes to the back of the free queue but keeps its hash, so a later request can still hit
//! it; it is evicted (hash dropped) only when popped from the head for reuse. Eviction is therefore
//! LRU over the free queue, with no separate pass.

use std::collections::HashMap;

use super::hash::BlockHash;

/// Index of a block in the pool.
pub type BlockId = u32;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct BlockMeta {
    ref_cnt: u32,
    hash: Option<BlockHash>,
    prev: u32,
    next: u32,
    queued: bool,
}

/// Blocks, their reference counts, the free queue and the prefix-cache index.
#[derive(Debug)]
pub struct BlockPool {
    meta: Vec<BlockMeta>,
    head: u32,
    tail: u32,
    num_free: usize,
    cached: HashMap<BlockHash, Vec<BlockId>>,
}

impl BlockPool {
    /// A pool of `n` blocks (block 0 is the null block, so `n − 1` are usable). `n ≥ 2`.
    pub fn new(n: usize) -> BlockPool {
        assert!(
            n >= 2 && n < NONE as usize,
            "a block pool needs 2..2^32 blocks"
        );
        let meta = (0..n)
            .map(|_| BlockMeta {
                ref_cnt: 0,
                hash: None,
                prev: NONE,
                next: NONE,
                queued: false,
            })
            .collect();
        let mut pool = BlockPool {
            meta,
            head: NONE,
            tail: NONE,
            num_free: 0,
            cached: HashMap::new(),
        };
        for b in 1..n as u32 {
            pool.push_back(b);
        }
        pool
    }

    /// Usable blocks (all but the null block).
    pub fn capacity(&self) -> usize {
        self.meta.len() - 1
    }

    /// Blocks in the free queue (cached-but-unreferenced blocks count as free).
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    /// Share of usable blocks referenced by some request, 0..1.
    pub fn usage(&self) -> f64 {
        1.0 - self.num_free as f64 / self.capacity() as f64
    }

    /// Reference count of `b`.
    pub fn ref_cnt(&self, b: BlockId) -> u32 {
        self.meta[b as usize].ref_cnt
    }

    /// The hash `b` is cached under, if any.
    pub fn hash_of(&self, b: BlockId) -> Option<BlockHash> {
        self.meta[b as usize].hash
    }

    /// A cached block holding `hash`, if one exists.
    pub fn lookup(&self, hash: &BlockHash) -> Option<BlockId> {
        self.cached.get(hash).and_then(|v| v.first().copied())
    }

    /// Whether `b` sits in the free queue.
    pub fn is_free(&self, b: BlockId) -> bool {
        self.meta[b as usize].queued
    }

    /// Take a reference on a cached block found by [`lookup`](Self::lookup); a block with no
    /// references leaves the free queue.
    pub fn touch(&mut self, b: BlockId) {
        if self.meta[b as usize].ref_cnt == 0 {
            self.unlink(b);
        }
        self.meta[b as usize].ref_cnt += 1;
    }

    /// Pop a block from the head of the free queue (the least recently freed), evicting its
    /// cache entry, and take one reference on it.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let b = self.head;
        if b == NONE {
            return None;
        }
        self.unlink(b);
        if let Some(h) = self.meta[b as usize].hash.take() {
            self.uncache(h, b);
        }
        self.meta[b as usize].ref_cnt = 1;
        Some(b)
    }

    /// Drop one reference; at zero the block joins the back of the free queue, keeping its hash.
    pub fn release(&mut self, b: BlockId) {
        let m = &mut self.meta[b as usize];
        debug_assert!(m.ref_cnt > 0, "release of free block {b}");
        m.ref_cnt = m.ref_cnt.saturating_sub(1);
        if m.ref_cnt == 0 {
            self.push_back(b);
        }
    }

    /// Register full block `b` under `hash` (no-op if it already has one).
    pub fn cache(&mut self, b: BlockId, hash: BlockHash) {
        let m = &mut self.meta[b as usize];
        if m.hash.is_some() {
            return;
        }
        m.hash = Some(hash);
        self.cached.entry(hash).or_default().push(b);
    }

    /// Drop every cache entry. Only allowed when no block is referenced; returns whether it ran.
    pub fn reset_cache(&mut self) -> bool {
        if self.num_free != self.capacity() {
            return false;
        }
        self.cached.clear();
        for m in &mut self.meta {
            m.hash = None;
        }
        true
    }

    /// Number of distinct cached hashes (tests and metrics).
    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    /// Free-queue order from head to tail (tests).
    pub fn free_queue(&self) -> Vec<BlockId> {
        let mut out = Vec::with_capacity(self.num_free);
        let mut b = self.head;
        while b != NONE {
            out.push(b);
            b = self.meta[b as usize].next;
        }
        out
    }

    /// Check invariants K2/K3 and the queue length (tests and debug builds).
    pub fn check(&self) -> Result<(), String> {
        let q = self.free_queue();
        if q.len() != self.num_free {
            return Err(format!(
                "queue has {} blocks, num_free {}",
                q.len(),
                self.num_free
            ));
        }
        for (b, m) in self.meta.iter().enumerate().skip(1) {
            if m.queued != (m.ref_cnt == 0) {
                return Err(format!(
                    "block {b}: queued {} ref_cnt {}",
                    m.queued, m.ref_cnt
                ));
            }
            if let Some(h) = m.hash {
                if !self.cached.get(&h).is_some_and(|v| v.contains(&(b as u32))) {
                    return Err(format!("block {b} has a hash missing from the index"));
                }
            }
        }
        if self.meta[0].queued {
            return Err("the null block is queued".into());
        }
        for (h, v) in &self.cached {
            for &b in v {
                if self.meta[b as usize].hash != Some(*h) {
                    return Err(format!("index entry for block {b} does not match its hash"));
                }
            }
        }
        Ok(())
    }

    fn uncache(&mut self, h: BlockHash, b: BlockId) {
        if let Some(v) = self.cached.get_mut(&h) {
            v.retain(|&x| x != b);
            if v.is_empty() {
                self.cached.remove(&h);
            }
        }
    }

    fn push_back(&mut self, b: BlockId) {
        let tail = self.tail;
        let m = &mut self.meta[b as usize];
        debug_assert!(!m.queued);
        m.prev = tail;
        m.next = NONE;
        m.queued = true;
        if tail == NONE {
            self.head = b;
        } else {
            self.meta[tail as usize].next = b;
        }
        self.tail = b;
        self.num_free += 1;
    }

    fn unlink(&mut self, b: BlockId) {
        let (prev, next) = {
            let m = &mut self.meta[b as usize];
            debug_assert!(m.queued);
            m.queued = false;
            (
                std::mem::replace(&mut m.prev, NONE),
                std::mem::replace(&mut m.next, NONE),
            )
        };
        if prev == NONE {
            self.head = next;
        } else {
            self.meta[prev as usize].next = next;
        }
        if next == NONE {
            self.tail = prev;
        } else {
            self.meta[next as usize].prev = prev;
        }
        self.num_free -= 1;
    }
}
