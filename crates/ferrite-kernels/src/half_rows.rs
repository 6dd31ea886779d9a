//! f16 ↔ f32 rows as the f16 KV cache stores and reads them (little-endian bytes, any
//! alignment): AVX-512 or F16C where the CPU has them, `half`'s element conversion otherwise and
//! as the reference. All paths round to nearest even, so they give the same bits; the SIMD ones
//! are what keep a prompt's cache writes and the tiled attention's key widening off the profile
//! (`half`'s slice conversion calls a dispatched function per 8 elements).

use half::f16;

use crate::isa::Isa;

/// `dst` (2 bytes per element) = `src` rounded to f16.
///
/// # Panics
/// If `dst` is not exactly `2 · src.len()` bytes (callers size it; a mismatch is a bug).
pub fn f32_to_f16(src: &[f32], dst: &mut [u8]) {
    f32_to_f16_at(Isa::detected(), src, dst)
}

/// [`f32_to_f16`] with the conversion of `isa` (which the CPU must have).
fn f32_to_f16_at(isa: Isa, src: &[f32], dst: &mut [u8]) {
    assert_eq!(dst.len(), 2 * src.len(), "invariant: 2 bytes per element");
    assert!(isa.is_available(), "invariant: a detected level");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both slices hold src.len() elements, the CPU has the level (both asserted).
        Isa::Avx512 => unsafe {
            crate::arch::x86_64::half_rows::to_f16_avx512(src.as_ptr(), dst.as_mut_ptr(), src.len())
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above (the AVX2 level includes F16C).
        Isa::Avx2 => unsafe {
            crate::arch::x86_64::half_rows::to_f16_f16c(src.as_ptr(), dst.as_mut_ptr(), src.len())
        },
        _ => f32_to_f16_ref(src, dst),
    }
}

/// `dst` = the f16 values in `src` (2 bytes each) as f32.
///
/// # Panics
/// If `src` is not exactly `2 · dst.len()` bytes.
pub fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
    f16_to_f32_at(Isa::detected(), src, dst)
}

/// [`f16_to_f32`] with the conversion of `isa` (which the CPU must have).
fn f16_to_f32_at(isa: Isa, src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), 2 * dst.len(), "invariant: 2 bytes per element");
    assert!(isa.is_available(), "invariant: a detected level");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both slices hold dst.len() elements, the CPU has the level (both asserted).
        Isa::Avx512 => unsafe {
            crate::arch::x86_64::half_rows::to_f32_avx512(src.as_ptr(), dst.as_mut_ptr(), dst.len())
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above (the AVX2 level includes F16C).
        Isa::Avx2 => unsafe {
            crate::arch::x86_64::half_rows::to_f32_f16c(src.as_ptr(), dst.as_mut_ptr(), dst.len())
        },
        _ => f16_to_f32_ref(src, dst),
    }
}

/// The reference of [`f32_to_f16`]: `half::f16::from_f32` per element.
pub fn f32_to_f16_ref(src: &[f32], dst: &mut [u8]) {
    for (b, &x) in dst.chunks_exact_mut(2).zip(src) {
        b.copy_from_slice(&f16::from_f32(x).to_bits().to_le_bytes());
    }
}

/// The reference of [`f16_to_f32`].
pub fn f16_to_f32_ref(src: &[u8], dst: &mut [f32]) {
    for (o, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{bits, uniform};

    /// Every length up to past two vectors, from odd byte offsets, over values that round
    /// (ties included), overflow to ±∞, fall into f16 subnormals or below, and the infinities.
    #[test]
    fn simd_rows_equal_the_element_conversion() {
        let mut r = uniform(3, -1.0, 2.0);
        let mut vals: Vec<f32> = (0..300).map(|i| r() * 2f32.powi((i % 40) - 26)).collect();
        vals.extend([
            65504.0,
            65520.0,
            -70000.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.0 + 2f32.powi(-11), // a tie: rounds to even
            1.0 + 3.0 * 2f32.powi(-11),
            6e-8,
            2e-8,
            -0.0,
        ]);
        for (isa, n) in Isa::available()
            .into_iter()
            .flat_map(|i| (0..40).map(move |n| (i, n)))
        {
            for start in [0, 1, 7] {
                let src = &vals[start..start + n];
                let mut buf = vec![0u8; 2 * n + 1];
                let mut want = vec![0u8; 2 * n];
                f32_to_f16_ref(src, &mut want);
                f32_to_f16_at(isa, src, &mut buf[1..]);
                assert_eq!(&buf[1..], &want[..], "{isa:?} to f16, {n} from {start}");
                let mut back = vec![0.0; n];
                let mut back_ref = vec![0.0; n];
                f16_to_f32_at(isa, &buf[1..], &mut back);
                f16_to_f32_ref(&want, &mut back_ref);
                assert_eq!(
                    bits(&back),
                    bits(&back_ref),
                    "{isa:?} to f32, {n} from {start}"
                );
            }
        }
        let tail = &vals[290..];
        let mut want = vec![0u8; 2 * tail.len()];
        let mut got = vec![0u8; 2 * tail.len()];
        f32_to_f16_ref(tail, &mut want);
        f32_to_f16(tail, &mut got); // the detected level
        assert_eq!(got, want, "special values");
    }
}
