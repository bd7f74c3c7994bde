//! Observability: the [`metrics`] of a process and the [`status`] memory (recent errors,
//! clients) that the HTTP admin endpoint ([`crate::http`]) exposes. Producers push into them;
//! nothing here imports from the layers above (only the foundation and config).

pub mod metrics;
pub mod status;

pub use metrics::{Metrics, Sampled};
pub use status::{ErrorLayer, ErrorRing};
