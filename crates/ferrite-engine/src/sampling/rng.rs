//! The sampler's RNG: a PCG-XSH-RR 64/32 generator kept in-tree so that a seed means the same
//! output on every platform and release (no dependence on an external crate's stream).

/// Seeded generator.
#[derive(Debug, Clone)]
pub struct SamplerRng {
    state: u64,
}

const MUL: u64 = 6364136223846793005;
const INC: u64 = 1442695040888963407;

impl SamplerRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SamplerRng {
        let mut r = SamplerRng { state: 0 };
        r.next_u32();
        r.state = r.state.wrapping_add(seed);
        r.next_u32();
        r
    }

    /// A generator seeded from the clock and a per-process counter.
    pub fn from_entropy() -> SamplerRng {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        SamplerRng::new(t ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed))
    }

    /// Next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(MUL).wrapping_add(INC);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rot = (old >> 59) as u32;
        xorshifted.rotate_right(rot)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn uniform(&mut self) -> f64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        ((hi << 21) ^ lo) as f64 / (1u64 << 53) as f64
    }
}
