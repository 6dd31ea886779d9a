//! Block pool and KV manager invariants (serving-design.md §4.4): reference counts, free queue,
//! hash index, no side effects on failed allocation, eviction order, prefix hits.

use ferrite_engine::kv_cache::{extend_block_hashes, BlockHash, KvCacheManager};
use proptest::prelude::*;

const BS: usize = 4;

fn hashes(tokens: &[u32], salt: Option<&str>) -> Vec<BlockHash> {
    let mut h = Vec::new();
    extend_block_hashes(&mut h, tokens, BS, 7, salt);
    h
}

/// Allocate a whole prompt for `id` the way the scheduler admits a request.
fn admit(m: &mut KvCacheManager, id: u64, tokens: &[u32]) -> Option<usize> {
    let h = hashes(tokens, None);
    let (hit, n_hit) = m.get_computed_blocks(&h, tokens.len());
    m.allocate_slots(
        id,
        n_hit,
        tokens.len() - n_hit,
        &hit,
        &h,
        tokens.len(),
        false,
    )
    .then_some(n_hit)
}

#[test]
fn identical_prompts_hit_all_but_the_last_token_floored_to_a_block() {
    // P1: the second of two identical L-token prompts has floor((L−1)/bs)·bs cached tokens.
    for len in [1usize, 3, 4, 5, 8, 9, 17] {
        let mut m = KvCacheManager::new(64, BS, 0);
        let t: Vec<u32> = (0..len as u32).collect();
        assert_eq!(admit(&mut m, 1, &t), Some(0));
        assert_eq!(admit(&mut m, 2, &t), Some((len - 1) / BS * BS), "len {len}");
        m.check().unwrap();
        m.free(1);
        m.free(2);
        m.check().unwrap();
        assert_eq!(m.usage(), 0.0);
    }
}

#[test]
fn different_salt_or_reset_gives_no_hits() {
    let mut m = KvCacheManager::new(64, BS, 0);
    let t: Vec<u32> = (0..16).collect();
    admit(&mut m, 1, &t).unwrap();
    // P2: a different cache_salt changes every block hash.
    let salted = hashes(&t, Some("tenant-b"));
    assert_eq!(m.get_computed_blocks(&salted, t.len()).1, 0);
    assert_ne!(hashes(&t, Some("a"))[0], hashes(&t, Some("b"))[0]);
    // P4: reset only works when nothing is referenced, then nothing hits.
    assert!(!m.reset_prefix_cache());
    m.free(1);
    assert!(m.reset_prefix_cache());
    assert_eq!(m.get_computed_blocks(&hashes(&t, None), t.len()).1, 0);
    m.check().unwrap();
}

#[test]
fn failed_allocation_changes_nothing_and_eviction_takes_the_tail_first() {
    let mut m = KvCacheManager::new(6, BS, 0); // 5 usable blocks
    let a: Vec<u32> = (0..12).collect(); // 3 blocks
    admit(&mut m, 1, &a).unwrap();
    let before = m.pool().free_queue();
    // K7: 3 more blocks do not fit in 2; nothing changes.
    let b: Vec<u32> = (100..112).collect();
    assert!(admit(&mut m, 2, &b).is_none());
    assert_eq!(m.pool().free_queue(), before);
    assert!(m.blocks(2).is_empty());
    m.check().unwrap();
    // K8: freeing [b0, b1, b2] queues b2 first, so it is evicted before b0.
    let table = m.blocks(1).to_vec();
    m.free(1);
    let q = m.pool().free_queue();
    let tail = &q[q.len() - 3..];
    assert_eq!(tail, &[table[2], table[1], table[0]]);
    // The freed blocks are still cached: the same prompt hits 2 blocks (the last token of
    // the third block must be recomputed).
    assert_eq!(admit(&mut m, 3, &a), Some(8));
    m.check().unwrap();
}

#[test]
fn hit_blocks_of_a_running_request_are_never_evicted() {
    // P5/K4: under eviction pressure, blocks with references stay.
    let mut m = KvCacheManager::new(7, BS, 0); // 6 usable
    let a: Vec<u32> = (0..9).collect(); // 3 blocks, 2 full
    admit(&mut m, 1, &a).unwrap();
    let held = m.blocks(1).to_vec();
    for i in 0..10u64 {
        let t: Vec<u32> = (1000 * (i as u32 + 1)..1000 * (i as u32 + 1) + 12).collect();
        if admit(&mut m, 10 + i, &t).is_some() {
            m.free(10 + i);
        }
        assert_eq!(m.blocks(1), held.as_slice());
        m.check().unwrap();
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8, u8),
    Free(u8),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            (0u8..4, 1u8..30).prop_map(|(p, l)| Op::Add(p, l)),
            (0u8..16).prop_map(Op::Free),
        ],
        1..60,
    )
}

proptest! {
    /// Random admissions and frees keep K1–K3, and every hit is a true prefix no longer than
    /// the brute-force longest common prefix (floored to blocks, capped at len − 1).
    #[test]
    fn random_workloads_keep_the_invariants(ops in ops()) {
        let mut m = KvCacheManager::new(24, BS, 0);
        let mut live: Vec<(u64, Vec<u32>)> = Vec::new();
        let mut seen: Vec<Vec<u32>> = Vec::new();
        let mut next = 1u64;
        for op in ops {
            match op {
                Op::Add(family, len) => {
                    // Prompts of one family share prefixes.
                    let t: Vec<u32> = (0..u32::from(len)).map(|i| u32::from(family) * 1000 + i).collect();
                    let h = hashes(&t, None);
                    let (hit, n_hit) = m.get_computed_blocks(&h, t.len());
                    let best = seen
                        .iter()
                        .map(|s| s.iter().zip(&t).take_while(|(a, b)| a == b).count())
                        .max()
                        .unwrap_or(0);
                    prop_assert!(n_hit <= best.min(t.len() - 1) / BS * BS);
                    if m.allocate_slots(next, n_hit, t.len() - n_hit, &hit, &h, t.len(), false) {
                        seen.push(t.clone());
                        live.push((next, t));
                    }
                    next += 1;
                }
                Op::Free(i) => {
                    if !live.is_empty() {
                        let (id, _) = live.remove(usize::from(i) % live.len());
                        m.free(id);
                    }
                }
            }
            m.check().map_err(TestCaseError::fail)?;
        }
        for (id, _) in live {
            m.free(id);
        }
        m.check().map_err(TestCaseError::fail)?;
        prop_assert_eq!(m.usage(), 0.0);
    }
}
