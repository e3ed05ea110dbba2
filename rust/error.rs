//! The one error type of the kernels. Every variant is caused by the caller's input, so the
//! bindings turn each into `penchant.ValidationError` with the message below.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum KernelError {
    /// Two inputs that must have the same length do not.
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A value that must be finite is NaN or infinite.
    NotFinite { what: &'static str, index: usize },
    /// A row or feature index points outside its table.
    OutOfRange {
        what: &'static str,
        index: usize,
        len: usize,
    },
    /// A parameter outside its allowed domain.
    Invalid(String),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::LengthMismatch {
                what,
                expected,
                got,
            } => {
                write!(f, "{what}: expected length {expected}, got {got}")
            }
            KernelError::NotFinite { what, index } => {
                write!(f, "{what}: value at position {index} is NaN or infinite")
            }
            KernelError::OutOfRange { what, index, len } => {
                write!(f, "{what}: index {index} is out of range for length {len}")
            }
            KernelError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for KernelError {}

pub type Result<T> = std::result::Result<T, KernelError>;

/// Fails with `NotFinite` at the first NaN or infinite value.
pub fn check_finite(what: &'static str, values: &[f64]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(KernelError::NotFinite { what, index }),
        None => Ok(()),
    }
}

pub fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::LengthMismatch {
            what,
            expected,
            got,
        })
    }
}
