//! The mailet container: processors by state, matchers, mailets, error routing.

pub mod api;
pub mod composite;
pub mod container;
pub mod context;
pub mod fault;
pub mod processor;
pub mod registry;
pub mod spooler;

pub use api::{Mailet, MailetConfig, MailetError, Matcher, MatcherConfig, MatcherError};
pub use container::{Container, Run, TraceEvent};
pub use context::MailetContext;
pub use registry::{Loaders, Registry};

pub use crate::mail::state::{ERROR, GHOST, ROOT};
#[cfg(test)]
mod tests;
