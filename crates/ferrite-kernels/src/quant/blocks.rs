//! Block layouts, byte for byte as ggml defines them (`ggml/src/ggml-common.h`).
//!
//! Every block is `#[repr(C)]` and built only from byte arrays, so its alignment is 1 and any
//! byte slice of the right length (a memory-mapped tensor, a scratch buffer) can be viewed as a
//! block slice without copying. Multi-byte fields are little-endian; accessors decode them.

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per block of the 32-element formats.
pub const QK: usize = 32;
/// Elements per K-quant super-block.
pub const QK_K: usize = 256;

#[inline(always)]
pub(crate) fn f16_le(b: [u8; 2]) -> f32 {
    f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

#[inline(always)]
pub(crate) fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

macro_rules! block {
    ($(#[$m:meta])* $name:ident, $size:expr, { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
        pub struct $name { $($(#[$fm])* pub $field: $ty),* }
        const _: () = assert!(std::mem::size_of::<$name>() == $size);
        const _: () = assert!(std::mem::align_of::<$name>() == 1);
    };
}

block!(
    /// Q4_0: `d·(q − 8)`, low nibble of `qs[j]` is element j, high nibble element j+16.
    BlockQ4_0, 18, { d: [u8; 2], qs: [u8; 16] }
);
block!(
    /// Q4_1: `d·q + m`.
    BlockQ4_1, 20, { d: [u8; 2], m: [u8; 2], qs: [u8; 16] }
);
block!(
    /// Q5_0: `d·(q − 16)`, bit j of `qh` is bit 4 of element j.
    BlockQ5_0, 22, { d: [u8; 2], qh: [u8; 4], qs: [u8; 16] }
);
block!(
    /// Q5_1: `d·q + m` with 5-bit q.
    BlockQ5_1, 24, { d: [u8; 2], m: [u8; 2], qh: [u8; 4], qs: [u8; 16] }
);
block!(
    /// Q8_0: `d·q`, q signed.
    BlockQ8_0, 34, { d: [u8; 2], qs: [i8; 32] }
);
block!(
    /// Q8_1 (activations for Q4_1/Q5_1): `d·q`, with `s = d·Σq` for the min term.
    BlockQ8_1, 36, { d: [u8; 2], s: [u8; 2], qs: [i8; 32] }
);
block!(
    /// Q4_K: 8 sub-blocks of 32 with 6-bit scales and mins packed in `scales`.
    BlockQ4K, 144, { d: [u8; 2], dmin: [u8; 2], scales: [u8; 12], qs: [u8; 128] }
);
block!(
    /// Q5_K: Q4_K plus one high bit per element in `qh`.
    BlockQ5K, 176, { d: [u8; 2], dmin: [u8; 2], scales: [u8; 12], qh: [u8; 32], qs: [u8; 128] }
);
block!(
    /// Q6_K: 16 sub-blocks of 16 with signed 8-bit scales; `d·sc·(q − 32)`.
    BlockQ6K, 210, { ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: [u8; 2] }
);
block!(
    /// Q8_K (activations for K-quants): f32 scale, and sums of each 16 quants.
    BlockQ8K, 292, { d: [u8; 4], qs: [i8; 256], bsums: [[u8; 2]; 16] }
);

block!(
    /// MXFP4: E8M0 exponent `e`; low nibble of `qs[j]` is element j, high nibble element j+16.
    BlockMxfp4, 17, { e: u8, qs: [u8; 16] }
);
block!(
    /// NVFP4 (ggml): four 16-element sub-blocks, UE4M3 scale `d[s]` each; in sub-block s, byte
    /// `qs[8s + j]` holds element j (low nibble) and j+8 (high nibble).
    BlockNvfp4, 36, { d: [u8; 4], qs: [u8; 32] }
);

impl BlockQ8K {
    /// The block scale.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }
    /// Sum of quants `16·j .. 16·j+16`.
    #[inline(always)]
    pub fn bsum(&self, j: usize) -> i16 {
        i16::from_le_bytes(self.bsums[j])
    }
}

/// Decode the 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block (`get_scale_min_k4`).
#[inline(always)]
pub fn scale_min_k4(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// All eight (scale, min) pairs of a Q4_K/Q5_K block.
#[inline(always)]
pub fn scales_mins_k4(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        (sc[j], mn[j]) = scale_min_k4(j, s);
    }
    (sc, mn)
}
