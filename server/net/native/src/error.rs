//! Errors as JS errors: the message is one readable line (Display, not Debug, of iroh's errors) and
//! `code` is a stable string the TypeScript side may test.
use napi::{Error, Status};

pub fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::new(Status::InvalidArg, msg.to_string())
}

/// An iroh error, first line of its Display output, with its source chain in one line.
pub fn iroh(context: &str, e: impl std::fmt::Display) -> Error {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    Error::new(Status::GenericFailure, format!("{context}: {first}"))
}
