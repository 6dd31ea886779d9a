/// Kernel errors: bad shapes and unsupported formats or instruction sets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Buffer lengths or dimensions that do not fit together.
    #[error("shape error: {0}")]
    Shape(String),
    /// A format, format pair or ISA the kernels do not provide.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
