//! Outbox tables in the embedded store.

use std::sync::OnceLock;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::Notify;

use super::job::OutboxJob;
use crate::mail::now_ms;

/// Pending jobs: id → JSON of [`OutboxJob`].
pub const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox_jobs");
/// Dead letters: id → JSON of [`OutboxJob`] with `last_error` set.
pub const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox_dead");
/// Counters (`job_seq`).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("outbox_meta");

/// Stores new jobs inside a spool transaction (the one that completes their mail).
pub fn insert_jobs(txn: &WriteTransaction, jobs: Vec<OutboxJob>) -> Result<(), redb::Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut meta = txn.open_table(META)?;
    let mut seq = meta.get("job_seq")?.map(|v| v.value()).unwrap_or(0);
    let mut table = txn.open_table(JOBS)?;
    let now = now_ms();
    for mut job in jobs {
        seq += 1;
        job.id = seq;
        if job.first_seen_ms == 0 {
            job.first_seen_ms = now;
        }
        if job.next_attempt_ms == 0 {
            job.next_attempt_ms = now;
        }
        let bytes = serde_json::to_vec(&job).expect("jobs serialise");
        table.insert(seq, bytes.as_slice())?;
    }
    meta.insert("job_seq", seq)?;
    Ok(())
}

/// Wakes delivery workers when jobs were added.
pub fn jobs_added() {
    job_notify().notify_waiters();
}

/// The notifier delivery workers wait on.
pub fn job_notify() -> &'static Notify {
    static NOTIFY: OnceLock<Notify> = OnceLock::new();
    NOTIFY.get_or_init(Notify::new)
}
