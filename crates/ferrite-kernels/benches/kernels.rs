//! Kernel microbenchmarks, each printed as a throughput next to the machine's limits:
//!
//! - `limits::stream_read_*`: streaming read bandwidth (bytes/s) from L2, L3 and memory;
//! - `limits::int8_peak`: AVX-512 VNNI int8 multiply-accumulates per second (items = MACs);
//! - `matvec::*`: one activation row × a weight matrix (decoding), bytes/s of weights read from
//!   memory (the bench cycles through ≥ 256 MiB of copies), to compare with
//!   `stream_read_256mib`;
//! - `matmul::*`: 512 activation rows × a weight matrix (prompt processing), items = MACs,
//!   to compare with `int8_peak`.
//!
//! Run: `cargo bench -p ferrite-kernels --bench kernels` (add `-- matmul` to filter). Threads:
//! each bench runs with 1 and 2 pool threads.

use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;
use ferrite_kernels::quant::{quantize_row, QuantType};
use ferrite_kernels::stream_panels::repack_stream_panels;
use ferrite_kernels::{matmul, probe, Kernels, QMatrix, ThreadPool};

fn main() {
    divan::main();
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, mut seed: u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// A `rows × cols` matrix of `ty` filled with quantized random values. Large matrices repeat one
/// quantized 64-row slab (the bytes read are what matters, not their values).
fn matrix(ty: QuantType, rows: usize, cols: usize) -> Vec<u8> {
    let rb = ty.row_bytes(cols).expect("valid shape");
    let slab_rows = rows.min(64);
    let wf = values(slab_rows * cols, 0x9e3779b97f4a7c15);
    let mut slab = vec![0u8; rb * slab_rows];
    for (src, dst) in wf.chunks(cols).zip(slab.chunks_mut(rb)) {
        quantize_row(ty, src, dst).expect("quantize");
    }
    slab.iter().copied().cycle().take(rb * rows).collect()
}

mod limits {
    use super::*;

    fn stream(bencher: Bencher, mib: usize) {
        let buf: Vec<u64> = (0..mib * 1024 * 1024 / 8).map(|i| i as u64).collect();
        bencher
            .counter(BytesCount::new(buf.len() * 8))
            .bench_local(|| probe::stream_read(divan::black_box(&buf)));
    }

    #[divan::bench]
    fn stream_read_1mib(b: Bencher) {
        stream(b, 1);
    }

    #[divan::bench]
    fn stream_read_16mib(b: Bencher) {
        stream(b, 16);
    }

    #[divan::bench(sample_count = 20)]
    fn stream_read_256mib(b: Bencher) {
        stream(b, 256);
    }

    #[divan::bench]
    fn int8_peak(b: Bencher) {
        let iters = 1 << 16;
        b.counter(ItemsCount::new(probe::int8_peak_macs(iters)))
            .bench_local(|| probe::int8_peak(divan::black_box(iters)));
    }
}

fn run_matmul(bencher: Bencher, ty: QuantType, rows: usize, cols: usize, m: usize, threads: usize) {
    let k = Kernels::detect();
    let pool = ThreadPool::new(threads);
    let data = matrix(ty, rows, cols);
    // Decoding reads every weight from memory (a model does not fit in cache), so a few rows of
    // activations (one, or a speculative verification's) cycle through copies of the matrix adding up to ≥ 256 MiB; prompt
    // processing reuses one matrix, as a layer does across a prompt's rows.
    let copies = if m <= 16 {
        (256usize << 20).div_ceil(data.len())
    } else {
        1
    };
    let data: Vec<u8> = data.repeat(copies);
    // Stream panels, as the model loader makes them (FERRITE_BENCH_ROWS=1 measures the rows).
    let panels: Vec<Vec<u8>> =
        if k.uses_stream_panels(ty) && std::env::var_os("FERRITE_BENCH_ROWS").is_none() {
            data.chunks_exact(data.len() / copies)
                .map(|d| repack_stream_panels(ty, rows, cols, d).expect("shape"))
                .collect()
        } else {
            Vec::new()
        };
    let mats: Vec<QMatrix<'_>> = data
        .chunks_exact(data.len() / copies)
        .enumerate()
        .map(|(i, d)| {
            let w = QMatrix::new(ty, rows, cols, d).expect("shape");
            match panels.get(i) {
                Some(p) => w.with_stream_panels(p).expect("panels"),
                None => w,
            }
        })
        .collect();
    let x = values(m * cols, 7);
    let mut y = vec![0f32; m * rows];
    let mut scratch = Vec::new();
    let mut next = 0;
    let run = || {
        let w = &mats[next % copies];
        next += 1;
        matmul(&k, &pool, w, &x, m, &mut y, &mut scratch).expect("matmul");
    };
    if m == 1 {
        bencher
            .counter(BytesCount::new(data.len() / copies))
            .bench_local(run);
    } else {
        bencher
            .counter(ItemsCount::new(rows * cols * m))
            .bench_local(run);
    }
}

/// Decoding: one activation row. Shapes are the models' largest: SmolLM2's FFN (1536 × 576),
/// Gemma3's FFN (2048 × 640) and down projection (640 × 2048), and Gemma3's tied output head
/// (262144 × 640 Q8_0, 178 MB: a read from memory).
mod matvec {
    use super::*;

    #[divan::bench(args = [1, 2])]
    fn q4_1_1536x576(b: Bencher, t: usize) {
        run_matmul(b, QuantType::Q4_1, 1536, 576, 1, t);
    }

    #[divan::bench(args = [1, 2])]
    fn q5_0_2048x640(b: Bencher, t: usize) {
        run_matmul(b, QuantType::Q5_0, 2048, 640, 1, t);
    }

    #[divan::bench(args = [1, 2])]
    fn q4_k_640x2048(b: Bencher, t: usize) {
        run_matmul(b, QuantType::Q4_K, 640, 2048, 1, t);
    }

    #[divan::bench(args = [1, 2])]
    fn q6_k_640x2048(b: Bencher, t: usize) {
        run_matmul(b, QuantType::Q6_K, 640, 2048, 1, t);
    }

    #[divan::bench(args = [1, 2], sample_count = 20)]
    fn q8_0_262144x640(b: Bencher, t: usize) {
        run_matmul(b, QuantType::Q8_0, 262144, 640, 1, t);
    }
}

/// Speculative verification and small batches: 1–16 activation rows against weights read from
/// memory (SmolLM2's FFN and output head); items are int8 MACs, so the time per row shows what
/// each extra row costs.
mod few_rows {
    use super::*;

    #[divan::bench(args = [1, 2, 3, 4, 5, 8, 16])]
    fn q4_1_1536x576(b: Bencher, m: usize) {
        run_matmul(b, QuantType::Q4_1, 1536, 576, m, 1);
    }

    #[divan::bench(args = [1, 2, 3, 4, 5, 8, 16], sample_count = 20)]
    fn q8_0_49152x576(b: Bencher, m: usize) {
        run_matmul(b, QuantType::Q8_0, 49152, 576, m, 1);
    }

    #[divan::bench(args = [1, 2, 3, 4, 5, 8, 16])]
    fn q4_1_1536x576_2t(b: Bencher, m: usize) {
        run_matmul(b, QuantType::Q4_1, 1536, 576, m, 2);
    }

    #[divan::bench(args = [1, 2, 3, 4, 5, 8, 16], sample_count = 20)]
    fn q8_0_49152x576_2t(b: Bencher, m: usize) {
        run_matmul(b, QuantType::Q8_0, 49152, 576, m, 2);
    }
}

/// Prompt processing: 512 activation rows, the same weight shapes; items are int8 MACs.
mod matmul512 {
    use super::*;

    #[divan::bench(args = [1, 2], sample_count = 10)]
    fn q4_1_1536x576(b: Bencher, t: usize) {
        run_matmul(b, QuantType::Q4_1, 1536, 576, 512, t);
    }

    #[divan::bench(args = [1, 2], sample_count = 10)]
    fn q5_0_2048x640(b: Bencher, t: usize) {
        run_matmul(b, QuantType::Q5_0, 2048, 640, 512, t);
    }

    #[divan::bench(args = [1, 2], sample_count = 10)]
    fn q8_0_2048x640(b: Bencher, t: usize) {
        run_matmul(b, QuantType::Q8_0, 2048, 640, 512, t);
    }

    #[divan::bench(args = [1, 2], sample_count = 10)]
    fn q4_k_640x2048(b: Bencher, t: usize) {
        run_matmul(b, QuantType::Q4_K, 640, 2048, 512, t);
    }

    #[divan::bench(args = [1, 2], sample_count = 10)]
    fn q6_k_640x2048(b: Bencher, t: usize) {
        run_matmul(b, QuantType::Q6_K, 640, 2048, 512, t);
    }
}
