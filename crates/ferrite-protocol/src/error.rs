//! API errors: one kind → HTTP status → `error.type` mapping, in one place
//! (../shared/docs/metrics-and-api.md §5). `type` doubles as the `error_type` metric label.

use serde::Serialize;

/// What went wrong, as the client should see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad field, bad JSON, bad schema.
    InvalidRequest,
    /// The prompt (plus requested output) does not fit the context.
    ContextLengthExceeded,
    /// Missing or wrong API key.
    Unauthenticated,
    /// Unknown model or route.
    NotFound,
    /// Body over the size limit.
    PayloadTooLarge,
    /// Admission queue full.
    Overloaded,
    /// Loading, warming up or draining.
    Unavailable,
    /// A bug or a failed forward pass.
    Internal,
}

impl ErrorKind {
    /// HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::ContextLengthExceeded => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::NotFound => 404,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Overloaded => 429,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// Stable `error.type` and metric label.
    pub fn error_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "validation",
            ErrorKind::ContextLengthExceeded => "context_length",
            ErrorKind::Unauthenticated => "auth",
            ErrorKind::NotFound => "not_found",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::Overloaded => "overload",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error with the client-facing message, the offending field and an optional code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Class.
    pub kind: ErrorKind,
    /// Message naming the field, the limit and the value.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// OpenAI-style machine code (`context_length_exceeded`, `invalid_api_key`).
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A validation error about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            kind: ErrorKind::InvalidRequest,
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }

    /// An error of `kind` with no field.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// Set the machine code.
    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// The wire body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorObject {
                message: &self.message,
                r#type: self.kind.error_type(),
                param: self.param.as_deref(),
                code: self.code,
            },
        }
    }
}

/// Serialized error envelope.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error object.
    pub error: ErrorObject<'a>,
}

/// OpenAI's error object.
#[derive(Debug, Serialize)]
pub struct ErrorObject<'a> {
    /// Human-readable message.
    pub message: &'a str,
    /// Stable class.
    pub r#type: &'static str,
    /// Field at fault.
    pub param: Option<&'a str>,
    /// Machine code.
    pub code: Option<&'static str>,
}
