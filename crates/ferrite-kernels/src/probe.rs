//! Probes of the machine's physical limits, so kernel benchmarks can print how far each kernel
//! is from them: streaming read bandwidth and the int8 dot-product peak.

/// Sum `buf` as u64 words (the compiler vectorizes it): a streaming read of every byte. Returns
/// the sum so the read cannot be optimised away.
pub fn stream_read(buf: &[u64]) -> u64 {
    // Four independent sums keep several loads in flight.
    let mut s = [0u64; 4];
    for c in buf.chunks_exact(4) {
        for (s, &v) in s.iter_mut().zip(c) {
            *s = s.wrapping_add(v);
        }
    }
    s.iter().fold(0u64, |a, &b| a.wrapping_add(b))
}

/// Int8 multiply-accumulates per call of [`int8_peak`] with `iters` iterations.
pub fn int8_peak_macs(iters: u64) -> u64 {
    iters * PEAK_CHAINS as u64 * 64
}

const PEAK_CHAINS: usize = 12;

/// Run `iters` rounds of [`PEAK_CHAINS`] independent 512-bit `vpdpbusd` (64 int8 MACs each)
/// where the CPU has AVX-512 VNNI; elsewhere a scalar loop of the same shape, whose figure is
/// then not an int8 peak (the benchmark's items count 64 per step regardless). Returns a
/// checksum.
pub fn int8_peak(iters: u64) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::Isa::Avx512.is_available() {
            // SAFETY: AVX-512 F/BW/VNNI were just detected.
            return unsafe { peak_vnni(iters) };
        }
    }
    // Portable fallback: a scalar loop of the same shape (measures the scalar path only).
    let mut acc = [0i32; PEAK_CHAINS];
    for i in 0..iters {
        for (j, a) in acc.iter_mut().enumerate() {
            *a = a.wrapping_add((i as i32).wrapping_mul(j as i32 + 1));
        }
    }
    acc.iter().fold(0i32, |a, &b| a.wrapping_add(b))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn peak_vnni(iters: u64) -> i32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_epi8(3);
    let b = _mm512_set1_epi8(-2);
    let mut acc = [_mm512_setzero_si512(); PEAK_CHAINS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbusd_epi32(*v, a, b);
        }
        // Keep the inputs opaque so the loop is not folded into a multiplication.
        std::hint::black_box(&a);
    }
    let mut s = _mm512_setzero_si512();
    for v in acc {
        s = _mm512_add_epi32(s, v);
    }
    _mm512_reduce_add_epi32(s)
}
