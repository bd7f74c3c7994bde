//! Observability: process-wide [`metrics`] and the [`status`] memory (recent errors, clients)
//! that the HTTP admin endpoint ([`crate::http`]) exposes.

pub mod metrics;
pub mod status;

pub use metrics::{Sampled, metrics};
