//! Architecture-specific kernels. Only compiled for their target; chosen at run time.

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;
