//! Observability: the [`metrics`] of a process and the [`status`] memory (clients) that the
//! HTTP admin endpoint ([`crate::http`]) exposes; the recent errors come from the log
//! ([`crate::logging`]). Producers push into them; nothing here imports from the layers
//! above (only the foundation and config).

pub mod metrics;
pub mod status;

pub use metrics::{Metrics, Sampled};
