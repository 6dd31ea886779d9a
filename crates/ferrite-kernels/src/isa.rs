//! Instruction-set levels and run-time detection.
//!
//! Kernels are compiled for every level this target can have and chosen at run time, so one binary
//! runs on any x86-64 (or aarch64) machine. [`Isa::parse`] accepts the names the `--isa` flag and
//! `FERRITE_FORCE_ISA` use, so tests can force the scalar or AVX2 path on an AVX-512 machine.

use crate::{Error, Result};

/// A kernel family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, the reference every other path is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C (256-bit; `maddubs` int8 products).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL with VNNI (`vpdpbusd` int8 products), plus AVX2/FMA/F16C.
    Avx512,
    /// aarch64 NEON.
    Neon,
}

impl Isa {
    /// Every level, weakest first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// The best level this CPU supports.
    pub fn detect() -> Isa {
        Self::ALL
            .iter()
            .rev()
            .copied()
            .find(|i| i.is_available())
            .unwrap_or(Isa::Scalar)
    }

    /// [`detect`](Self::detect), once per process: for the few kernels picked without a
    /// [`crate::Kernels`] table (conversions and sums whose SIMD and scalar versions give the
    /// same bits).
    pub fn detected() -> Isa {
        static LEVEL: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(Isa::detect)
    }

    /// Whether this CPU can run kernels of this level.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every level this CPU supports, weakest first.
    pub fn available() -> Vec<Isa> {
        Self::ALL
            .iter()
            .copied()
            .filter(|i| i.is_available())
            .collect()
    }

    /// Name used by `--isa` / `FERRITE_FORCE_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Parse a level name; errors list the accepted names.
    pub fn parse(s: &str) -> Result<Isa> {
        Self::ALL
            .iter()
            .copied()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "unknown ISA {s:?} (expected one of: scalar, avx2, avx512, neon)"
                ))
            })
    }

    /// `self` if this CPU supports it, otherwise an error naming the level.
    pub fn require(self) -> Result<Isa> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(Error::Unsupported(format!(
                "this CPU cannot run the {} kernels (detected best: {})",
                self.name(),
                Isa::detect().name()
            )))
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
