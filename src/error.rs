//! The crate's one error type.

use std::fmt;

/// Everything that can go wrong before a stanza is routed: bad options at
/// load time, bad arguments from the caller. Routing itself never fails; a
/// stanza it cannot route gets a [`Verdict`](crate::core::Verdict) saying so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A configuration option is missing or out of range.
    Option {
        /// The option's name as the operator writes it.
        name: &'static str,
        /// What it must be, and what it was.
        message: String,
    },
    /// The caller passed something the API does not take.
    Argument(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Option { name, message } => write!(f, "option '{name}' {message}"),
            Error::Argument(message) => write!(f, "bad argument: {message}"),
        }
    }
}

impl std::error::Error for Error {}
