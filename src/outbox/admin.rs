//! What `mailetd outbox list|retry|purge` needs from an outbox, whichever backend holds it.

use std::sync::Arc;

use async_trait::async_trait;

use super::OutboxJob;
use super::store::{self, JobState};
use crate::store::Store;

/// Operator actions on pending jobs and dead letters.
#[async_trait]
pub trait OutboxAdmin: Send + Sync {
    /// Every job of `state`.
    async fn list(&self, state: JobState) -> anyhow::Result<Vec<OutboxJob>>;
    /// Requeues dead letters (all when `ids` is empty) with a fresh age; returns how many.
    async fn retry(&self, ids: Vec<u64>) -> anyhow::Result<usize>;
    /// Deletes jobs of `state` (all when `ids` is empty); returns how many.
    async fn purge(&self, state: JobState, ids: Vec<u64>) -> anyhow::Result<usize>;
}

/// The outbox tables of the embedded store.
pub struct EmbeddedOutbox(pub Arc<Store>);

#[async_trait]
impl OutboxAdmin for EmbeddedOutbox {
    async fn list(&self, state: JobState) -> anyhow::Result<Vec<OutboxJob>> {
        Ok(store::list(&self.0, state)?)
    }
    async fn retry(&self, ids: Vec<u64>) -> anyhow::Result<usize> {
        Ok(store::retry(&self.0, ids).await?)
    }
    async fn purge(&self, state: JobState, ids: Vec<u64>) -> anyhow::Result<usize> {
        Ok(store::purge(&self.0, state, ids).await?)
    }
}
