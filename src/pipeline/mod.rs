//! The mailet container: processors by state, matchers, mailets, error routing.

pub mod api;
pub mod composite;
pub mod container;
pub mod context;
pub mod fault;
pub mod processor;
pub mod spooler;

pub use api::{Mailet, MailetConfig, MailetError, Matcher, MatcherConfig, MatcherError};
pub use container::{Container, Run, TraceEvent};
pub use context::MailetContext;

/// The initial state of every mail.
pub const ROOT: &str = "root";
/// The state of a mail that is done (disposed of).
pub const GHOST: &str = "ghost";
/// The state failed mails are routed to.
pub const ERROR: &str = "error";
#[cfg(test)]
mod tests;
