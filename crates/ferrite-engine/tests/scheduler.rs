//! The scheduler against a fake model (serving-design.md §3.3): the fake "samples" token
//! f(id, position), so any scheduling, chunking or preemption must yield the same streams.

use std::collections::HashMap;

use ferrite_engine::kv_cache::KvCacheManager;
use ferrite_engine::scheduler::{Scheduler, SchedulerConfig};
use proptest::prelude::*;

fn fake_token(id: u64, pos: usize) -> u32 {
    ((id as usize * 31 + pos * 7) % 50_000) as u32 + 1
}

struct Work {
    prompt_len: usize,
    out_len: usize,
}

/// Run a workload to completion; returns each request's output and the number of
/// preemptions. Checks S1, S3, S6/S8 (no output before prefill completes) every step.
fn simulate(
    work: &[Work],
    blocks: usize,
    budget: usize,
    max_seqs: usize,
    abort_every: Option<usize>,
) -> (HashMap<u64, Vec<u32>>, u64) {
    let cfg = SchedulerConfig {
        max_num_seqs: max_seqs,
        max_num_batched_tokens: budget,
        max_model_len: 4096,
        long_prefill_token_threshold: 0,
        block_size: 4,
        hash_seed: 1,
    };
    let mut s = Scheduler::new(cfg, KvCacheManager::new(blocks, 4, 0));
    let mut want: HashMap<u64, usize> = HashMap::new();
    for (i, w) in work.iter().enumerate() {
        let id = i as u64 + 1;
        // Shared prefixes between neighbours exercise the prefix cache.
        let prompt: Vec<u32> = (0..w.prompt_len)
            .map(|p| if p < 8 { 9 } else { fake_token(id, p) })
            .collect();
        s.add(id, prompt, None);
        want.insert(id, w.out_len);
    }
    let mut outputs: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut steps = 0;
    while s.has_work() {
        steps += 1;
        assert!(steps < 100_000, "no progress: livelock");
        let plan = s.schedule();
        assert!(
            plan.iter().map(|p| p.len).sum::<usize>() <= budget,
            "S1 budget"
        );
        assert!(s.num_running() <= max_seqs, "S1 max_num_seqs");
        s.check().unwrap();
        for p in plan {
            let r = s.request(p.id).unwrap();
            assert!(
                p.start + p.len <= r.num_tokens(),
                "computes only known tokens"
            );
            assert!(
                s.kv().blocks(p.id).len() * 4 >= p.start + p.len,
                "S2 slots held"
            );
            if p.start + p.len < r.num_tokens() {
                continue; // prefill chunk: no output (S8)
            }
            let t = fake_token(p.id, r.num_tokens());
            s.append_token(p.id, t);
            let out = s.request(p.id).unwrap().output().to_vec();
            if out.len() >= want[&p.id] {
                outputs.insert(p.id, out);
                s.finish(p.id);
            }
        }
        if let Some(k) = abort_every {
            if steps % k == 0 {
                // S6: aborting the oldest running request restores its blocks.
                if let Some(id) = (1..=work.len() as u64).find(|id| {
                    s.request(*id)
                        .is_some_and(|r| !s.kv().blocks(r.id).is_empty())
                }) {
                    s.finish(id);
                    want.remove(&id);
                }
            }
        }
        s.check().unwrap();
    }
    assert_eq!(s.kv().usage(), 0.0, "every block returns to the pool");
    (outputs, s.counters().preemptions)
}

fn expected(id: u64, w: &Work) -> Vec<u32> {
    (0..w.out_len)
        .map(|k| fake_token(id, w.prompt_len + k))
        .collect()
}

#[test]
fn small_pool_preempts_and_still_produces_identical_streams() {
    let work: Vec<Work> = (0..12)
        .map(|i| Work {
            prompt_len: 10 + 7 * i,
            out_len: 20 + 3 * i,
        })
        .collect();
    let (big, p_big) = simulate(&work, 1000, 64, 8, None);
    let (small, p_small) = simulate(&work, 40, 64, 8, None);
    assert_eq!(p_big, 0);
    assert!(p_small > 0, "the small pool must force preemption");
    for (i, w) in work.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(big[&id], expected(id, w));
        assert_eq!(small[&id], expected(id, w), "S5 request {id}");
    }
}

#[test]
fn every_budget_gives_the_same_streams() {
    // S7: budgets {1, 7, 64, ∞}.
    let work: Vec<Work> = (0..6)
        .map(|i| Work {
            prompt_len: 5 + 11 * i,
            out_len: 9,
        })
        .collect();
    for budget in [1, 7, 64, 100_000] {
        let (out, _) = simulate(&work, 200, budget, 4, None);
        for (i, w) in work.iter().enumerate() {
            let id = i as u64 + 1;
            assert_eq!(out[&id], expected(id, w), "budget {budget}");
        }
    }
}

#[test]
fn running_requests_go_first_and_waiting_ones_wait_for_room() {
    let cfg = SchedulerConfig {
        max_num_seqs: 2,
        max_num_batched_tokens: 10,
        max_model_len: 4096,
        long_prefill_token_threshold: 0,
        block_size: 4,
        hash_seed: 0,
    };
    let mut s = Scheduler::new(cfg, KvCacheManager::new(100, 4, 0));
    s.add(1, vec![1; 8], None);
    s.add(2, vec![2; 8], None);
    s.add(3, vec![3; 3], None);
    let p = s.schedule();
    // Budget 10: request 1 gets 8, request 2 a 2-token chunk; request 3 waits (max_num_seqs).
    assert_eq!(
        p.iter().map(|x| (x.id, x.len)).collect::<Vec<_>>(),
        [(1, 8), (2, 2)]
    );
    s.append_token(1, 5);
    let p = s.schedule();
    assert_eq!(
        p.iter().map(|x| (x.id, x.start, x.len)).collect::<Vec<_>>(),
        [(1, 8, 1), (2, 2, 6)]
    );
    s.finish(1);
    let p = s.schedule();
    assert_eq!(
        p.iter().map(|x| x.id).collect::<Vec<_>>(),
        [3],
        "2 has nothing to compute"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// S4 liveness and S6 abort safety on random workloads and pool sizes.
    #[test]
    fn random_workloads_finish(
        lens in prop::collection::vec((1usize..60, 1usize..30), 1..10),
        blocks in 20usize..80,
        budget in 1usize..80,
        abort in prop::option::of(3usize..20),
    ) {
        let work: Vec<Work> = lens.iter().map(|&(p, o)| Work { prompt_len: p, out_len: o }).collect();
        // The largest request must fit the pool for liveness to be required.
        prop_assume!(work.iter().all(|w| (w.prompt_len + w.out_len).div_ceil(4) < blocks));
        let (out, _) = simulate(&work, blocks, budget, 4, abort);
        for (id, o) in out {
            let w = &work[id as usize - 1];
            prop_assert_eq!(o, expected(id, w));
        }
    }
}
