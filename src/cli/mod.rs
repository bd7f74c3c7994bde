//! Subcommands other than `serve`: `check`, `replay`, `repo`, `spool`. Each prints for a human and
//! returns an error (non-zero exit) when something is wrong.

pub mod check;
pub mod outbox;
pub mod replay;
pub mod repo;
pub mod spool;
