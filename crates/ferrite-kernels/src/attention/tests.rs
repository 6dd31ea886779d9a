//! The accumulator against plain softmax arithmetic, across ISAs, groups, column slices,
//! runs of rows and merged key chunks.

use super::*;
use crate::test_util::bits;
use crate::Isa;

/// f32 values as little-endian f16 bytes (a K/V cache row).
fn to_f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| f16::from_f32(*x).to_bits().to_le_bytes())
        .collect()
}

#[test]
fn attention_matches_two_pass_softmax() {
    let k = Kernels::new(Isa::Scalar).unwrap();
    let d = 8;
    let n = 13;
    let q: Vec<f32> = (0..d).map(|i| (i as f32 * 0.3).sin()).collect();
    let keys: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.17).cos()).collect();
    let vals: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.11).sin()).collect();
    let (kb, vb) = (to_f16_bytes(&keys), to_f16_bytes(&vals));
    let mut outs = Vec::new();
    for mode in [AttnAccum::F32, AttnAccum::F16] {
        let mut acc = AttentionAccumulator::new(d, mode);
        acc.begin(&q, 0.5);
        // Two blocks: online softmax must equal one pass.
        acc.add(&k, &kb[..5 * d * 2], &vb[..5 * d * 2], 5, None);
        acc.add(&k, &kb[5 * d * 2..], &vb[5 * d * 2..], n - 5, None);
        let mut out = vec![0f32; d];
        acc.finish(&mut out);
        outs.push((mode, out));
    }
    let h = |x: f32| f16::from_f32(x).to_f32();
    let scores: Vec<f32> = (0..n)
        .map(|j| (0..d).map(|i| h(q[i]) * h(keys[j * d + i])).sum::<f32>() * 0.5)
        .collect();
    let m = scores.iter().cloned().fold(f32::MIN, f32::max);
    let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
    let z: f32 = e.iter().sum();
    for (mode, out) in outs {
        // f16 accumulation rounds each step to 11 significant bits.
        let tol = if mode == AttnAccum::F32 { 1e-5 } else { 4e-3 };
        for i in 0..d {
            let want: f32 = (0..n).map(|j| e[j] / z * h(vals[j * d + i])).sum();
            assert!(
                (out[i] - want).abs() < tol,
                "{mode:?} {i}: {} vs {want}",
                out[i]
            );
        }
    }
}

#[test]
fn block_scores_equal_the_f16_dot_key_by_key() {
    let mut rnd = crate::test_util::uniform(0x9e37_79b9_7f4a_7c15u64, -3.0, 6.0);
    for d in [64usize, 128, 256] {
        for n in [0usize, 1, 15, 16, 17, 40] {
            let q: Vec<u16> = (0..d).map(|_| f16::from_f32(rnd()).to_bits()).collect();
            let keys: Vec<u8> = (0..n * d)
                .flat_map(|_| f16::from_f32(rnd()).to_bits().to_le_bytes())
                .collect();
            for isa in Isa::available() {
                let k = Kernels::new(isa).unwrap();
                let mut got = vec![0f32; n];
                if !k.attn_scores_f16(&q, &keys, &mut got) {
                    assert!(isa != Isa::Avx512, "AVX-512 has block scores for d {d}");
                    continue;
                }
                let qb: &[u8] = bytemuck::cast_slice(&q);
                for (j, g) in got.iter().enumerate() {
                    let want = k.dot(QuantType::F16, d, &keys[j * 2 * d..(j + 1) * 2 * d], qb);
                    assert_eq!(
                        g.to_bits(),
                        want.unwrap().to_bits(),
                        "{isa} d {d} key {j}/{n}"
                    );
                }
                // Groups of queries: each query's scores as the one-query call gives them.
                for g in 2..=4usize {
                    let qs: Vec<Vec<u16>> = (0..g)
                        .map(|i| q.iter().map(|&h| h ^ (i as u16 * 0x0101)).collect())
                        .collect();
                    let refs: Vec<&[u16]> = qs.iter().map(|q| q.as_slice()).collect();
                    let mut outs = vec![vec![0f32; n]; g];
                    let mut views: Vec<&mut [f32]> =
                        outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                    assert!(
                        k.attn_scores_f16_group(&refs, &keys, &mut views),
                        "{isa} {d}"
                    );
                    for (qi, (qq, o)) in qs.iter().zip(&outs).enumerate() {
                        let mut alone = vec![0f32; n];
                        assert!(k.attn_scores_f16(qq, &keys, &mut alone));
                        assert_eq!(
                            bits(o),
                            bits(&alone),
                            "{isa} d {d} n {n} group {g} query {qi}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn grouped_queries_equal_each_query_alone() {
    let mut rnd = crate::test_util::uniform(0x1405_7b7e_f767_814fu64, -2.0, 4.0);
    for d in [64usize, 72, 256] {
        for g in [1usize, 2, 3, 4] {
            let n = 41;
            let qs: Vec<Vec<f32>> = (0..g).map(|_| (0..d).map(|_| rnd()).collect()).collect();
            let kb = to_f16_bytes(&(0..n * d).map(|_| rnd()).collect::<Vec<_>>());
            let vb = to_f16_bytes(&(0..n * d).map(|_| rnd()).collect::<Vec<_>>());
            for isa in Isa::available() {
                let k = Kernels::new(isa).unwrap();
                let blocks = [1usize, 16, 3, 21];
                let mut group: Vec<AttentionAccumulator> = qs
                    .iter()
                    .map(|q| {
                        let mut a = AttentionAccumulator::new(d, AttnAccum::F16);
                        a.begin(q, 0.7);
                        a
                    })
                    .collect();
                let mut start = 0;
                for len in blocks {
                    let (a, b) = (start * d * 2, (start + len) * d * 2);
                    AttentionAccumulator::add_group(
                        &k,
                        &mut group,
                        &kb[a..b],
                        &vb[a..b],
                        len,
                        None,
                    );
                    start += len;
                }
                for (qi, q) in qs.iter().enumerate() {
                    let mut alone = AttentionAccumulator::new(d, AttnAccum::F16);
                    alone.begin(q, 0.7);
                    let mut start = 0;
                    for len in blocks {
                        let (a, b) = (start * d * 2, (start + len) * d * 2);
                        alone.add(&k, &kb[a..b], &vb[a..b], len, None);
                        start += len;
                    }
                    let (mut x, mut y) = (vec![0f32; d], vec![0f32; d]);
                    group[qi].finish(&mut x);
                    alone.finish(&mut y);
                    assert_eq!(bits(&x), bits(&y), "{isa} d {d} group {g} query {qi}");
                }
            }
        }
    }
}

#[test]
fn column_slices_equal_the_whole_head() {
    let mut rnd = crate::test_util::uniform(0x6a09_e667_f3bc_c908u64, -2.0, 4.0);
    // (head size, column cuts): halves, quarters, a 32-column slice, and a head size
    // without a vector path (72) cut unevenly.
    let cases: [(usize, &[usize]); 4] = [
        (64, &[0, 32, 64]),
        (256, &[0, 128, 256]),
        (256, &[0, 64, 96, 192, 256]),
        (72, &[0, 40, 72]),
    ];
    for (d, cuts) in cases {
        for g in [1usize, 3, 4] {
            let n = 37;
            let qs: Vec<Vec<f32>> = (0..g).map(|_| (0..d).map(|_| rnd()).collect()).collect();
            let kb = to_f16_bytes(&(0..n * d).map(|_| rnd()).collect::<Vec<_>>());
            let vb = to_f16_bytes(&(0..n * d).map(|_| rnd()).collect::<Vec<_>>());
            let blocks = [5usize, 16, 16];
            let run = |k: &Kernels, cols: std::ops::Range<usize>, mode| -> Vec<Vec<f32>> {
                let mut accs: Vec<AttentionAccumulator> = qs
                    .iter()
                    .map(|q| {
                        let mut a = AttentionAccumulator::new(d, mode).with_columns(cols.clone());
                        a.begin(q, 0.6);
                        a
                    })
                    .collect();
                let mut start = 0;
                for len in blocks {
                    let (a, b) = (start * d * 2, (start + len) * d * 2);
                    if g == 1 {
                        accs[0].add(k, &kb[a..b], &vb[a..b], len, Some(20.0));
                    } else {
                        AttentionAccumulator::add_group(
                            k,
                            &mut accs,
                            &kb[a..b],
                            &vb[a..b],
                            len,
                            Some(20.0),
                        );
                    }
                    start += len;
                }
                accs.iter()
                    .map(|a| {
                        let mut o = vec![0f32; a.columns().len()];
                        a.finish(&mut o);
                        o
                    })
                    .collect()
            };
            for isa in Isa::available() {
                let k = Kernels::new(isa).unwrap();
                for mode in [AttnAccum::F16, AttnAccum::F32] {
                    let whole = run(&k, 0..d, mode);
                    for w in cuts.windows(2) {
                        let part = run(&k, w[0]..w[1], mode);
                        for (qi, (p, full)) in part.iter().zip(&whole).enumerate() {
                            assert_eq!(
                                bits(p),
                                bits(&full[w[0]..w[1]]),
                                "{isa} {mode:?} d {d} group {g} query {qi} cols {w:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Rows handed over as several runs at once ([`AttentionAccumulator::add_group_runs`], a
/// paged cache's blocks) give exactly what one call per run gives: f16 and Q8_0 rows, both
/// accumulation modes, groups of 1–5 queries, whole heads and column slices, every ISA.
#[test]
fn runs_at_once_equal_one_call_per_run() {
    let mut rnd = crate::test_util::uniform(0x3c6e_f372_fe94_f82bu64, -2.0, 4.0);
    let d = 64;
    let runs = [1usize, 16, 3, 21, 16];
    let n: usize = runs.iter().sum();
    for format in [KvFormat::F16, KvFormat::Q8_0] {
        let row = format.row_bytes(d).unwrap();
        let (mut kb, mut vb) = (vec![0u8; n * row], vec![0u8; n * row]);
        for j in 0..n {
            let (kr, vr): (Vec<f32>, Vec<f32>) = (0..d).map(|_| (rnd(), rnd())).unzip();
            format
                .store_row(&mut kb[j * row..(j + 1) * row], &kr)
                .unwrap();
            format
                .store_row(&mut vb[j * row..(j + 1) * row], &vr)
                .unwrap();
        }
        for g in 1..=5usize {
            let qs: Vec<Vec<f32>> = (0..g).map(|_| (0..d).map(|_| rnd()).collect()).collect();
            for isa in Isa::available() {
                let k = Kernels::new(isa).unwrap();
                for mode in [AttnAccum::F16, AttnAccum::F32] {
                    for cols in [0..d, 32..64] {
                        let fresh = || -> Vec<AttentionAccumulator> {
                            qs.iter()
                                .map(|q| {
                                    let mut a = AttentionAccumulator::new(d, mode)
                                        .with_kv_format(format)
                                        .unwrap()
                                        .with_columns(cols.clone());
                                    a.begin(q, 0.4);
                                    a
                                })
                                .collect()
                        };
                        let (mut once, mut each) = (fresh(), fresh());
                        let mut all = Vec::new();
                        let mut start = 0;
                        for len in runs {
                            let (a, b) = (start * row, (start + len) * row);
                            let run = KvRun {
                                keys: &kb[a..b],
                                values: &vb[a..b],
                                n: len,
                            };
                            all.push(run);
                            AttentionAccumulator::add_group(
                                &k,
                                &mut each,
                                run.keys,
                                run.values,
                                len,
                                Some(6.0),
                            );
                            start += len;
                        }
                        AttentionAccumulator::add_group_runs(&k, &mut once, &all, Some(6.0));
                        for (x, y) in once.iter().zip(&each) {
                            let (mut a, mut b) = (vec![0f32; cols.len()], vec![0f32; cols.len()]);
                            x.finish(&mut a);
                            y.finish(&mut b);
                            assert_eq!(
                                bits(&a),
                                bits(&b),
                                "{isa} {format:?} {mode:?} g {g} {cols:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Keys accumulated in chunks and merged ([`merge_partials`]) give the one-pass softmax
/// (to f32 rounding, in f32 accumulation), whatever the chunks and however the maximum
/// moves between them; one chunk merged is exactly [`AttentionAccumulator::finish`]; chunks
/// without keys are skipped.
#[test]
fn merged_chunks_equal_one_pass() {
    let mut rnd = crate::test_util::uniform(0xa54f_f53a_5f1d_36f1u64, -3.0, 6.0);
    let (d, n) = (64usize, 90usize);
    let k = Kernels::new(Isa::Scalar).unwrap();
    let q: Vec<f32> = (0..d).map(|_| rnd()).collect();
    // Rising scores: later chunks raise the maximum the earlier ones were kept under.
    let keys: Vec<f32> = (0..n * d).map(|i| rnd() + (i / d) as f32 * 0.05).collect();
    let (kb, vb) = (
        to_f16_bytes(&keys),
        to_f16_bytes(&(0..n * d).map(|_| rnd()).collect::<Vec<_>>()),
    );
    let one_pass = |range: std::ops::Range<usize>, mode| {
        let mut a = AttentionAccumulator::new(d, mode);
        a.begin(&q, 0.3);
        let (x, y) = (range.start * 2 * d, range.end * 2 * d);
        a.add(&k, &kb[x..y], &vb[x..y], range.len(), None);
        a
    };
    let mut whole = vec![0f32; d];
    one_pass(0..n, AttnAccum::F32).finish(&mut whole);
    for cuts in [
        &[0usize, 90][..],
        &[0, 1, 90],
        &[0, 30, 60, 90],
        &[0, 89, 90],
    ] {
        let parts: Vec<(SoftmaxStats, Vec<f32>)> = cuts
            .windows(2)
            .map(|w| {
                let mut v = vec![0f32; d];
                let stats = one_pass(w[0]..w[1], AttnAccum::F32).finish_unnormalised(&mut v);
                (stats, v)
            })
            .collect();
        let empty = (
            SoftmaxStats {
                max: f32::NEG_INFINITY,
                sum: 0.0,
            },
            vec![0f32; d],
        );
        let mut merged = vec![0f32; d];
        merge_partials(
            std::iter::once(&empty)
                .chain(&parts)
                .map(|(s, v)| (*s, v.as_slice())),
            &mut merged,
        );
        if cuts.len() == 2 {
            assert_eq!(bits(&merged), bits(&whole), "one chunk");
        }
        for (i, (m, w)) in merged.iter().zip(&whole).enumerate() {
            assert!(
                (m - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{cuts:?} col {i}: {m} vs {w}"
            );
        }
    }
}

#[test]
fn attention_is_bit_identical_on_every_isa() {
    // Head sizes with and without a fused vector path (72 is not a multiple of 16), blocks
    // of uneven length, scores that raise the maximum mid-block, with and without softcap.
    let mut rnd = crate::test_util::uniform(0x2545_f491_4f6c_dd1du64, -2.0, 4.0);
    for d in [16usize, 64, 72, 256] {
        let n = 37;
        let q: Vec<f32> = (0..d).map(|_| rnd()).collect();
        let kb = to_f16_bytes(&(0..n * d).map(|_| rnd()).collect::<Vec<_>>());
        let vb = to_f16_bytes(&(0..n * d).map(|_| rnd()).collect::<Vec<_>>());
        for softcap in [None, Some(3.0f32)] {
            let run = |isa: Isa| {
                let k = Kernels::new(isa).unwrap();
                let mut acc = AttentionAccumulator::new(d, AttnAccum::F16);
                acc.begin(&q, 0.7);
                let mut start = 0;
                for len in [1usize, 16, 3, 17] {
                    let (a, b) = (start * d * 2, (start + len) * d * 2);
                    acc.add(&k, &kb[a..b], &vb[a..b], len, softcap);
                    start += len;
                }
                let mut out = vec![0f32; d];
                acc.finish(&mut out);
                bits(&out)
            };
            let want = run(Isa::Scalar);
            for isa in Isa::available() {
                assert_eq!(run(isa), want, "{isa} d {d} softcap {softcap:?}");
            }
        }
    }
}
