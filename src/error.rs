//! One error type for the whole library. Its kind maps one to one onto the C ABI's
//! `pariskv_status`; its message names the argument, the value and the limit.

use std::fmt;

/// What went wrong, as the C ABI reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A null pointer, a size out of range, a config value outside its domain.
    InvalidArgument,
    /// Valid input that this build cannot handle (head size, dtype, feature).
    Unsupported,
    /// An allocation failed.
    OutOfMemory,
    /// A bug: a broken invariant or a panic caught at the ABI boundary.
    Internal,
    /// The CUDA driver failed (its message is kept), or no driver or GPU is there.
    Cuda,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(message: impl Into<String>) -> Error {
        Error { kind: ErrorKind::InvalidArgument, message: message.into() }
    }

    pub fn unsupported(message: impl Into<String>) -> Error {
        Error { kind: ErrorKind::Unsupported, message: message.into() }
    }

    pub fn out_of_memory(what: &str, bytes: usize) -> Error {
        Error {
            kind: ErrorKind::OutOfMemory,
            message: format!("out of memory: could not allocate {bytes} bytes for {what}"),
        }
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error { kind: ErrorKind::Internal, message: message.into() }
    }

    pub fn cuda(message: impl Into<String>) -> Error {
        Error { kind: ErrorKind::Cuda, message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Grows `v` by `additional` elements or reports which buffer could not grow.
pub fn try_reserve<T>(v: &mut Vec<T>, additional: usize, what: &str) -> Result<()> {
    v.try_reserve(additional)
        .map_err(|_| Error::out_of_memory(what, additional.saturating_mul(std::mem::size_of::<T>())))
}
