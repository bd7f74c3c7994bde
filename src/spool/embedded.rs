//! The default spool: mails in the embedded [`Store`], a due-time index in memory.
//!
//! Why redb: a single-file ACID store with one fsync per commit, so a writer thread can
//! commit many sessions' mails at once (group commit) and a kill -9 leaves either the whole
//! mail or nothing. A file-per-mail spool needs a file fsync plus a directory fsync per mail.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::Notify;

use super::store::{Store, StoreError};
use super::{Spool, SpoolError};
use crate::mail::{Mail, MailId, now_ms};
use crate::outbox::OutboxJob;

/// Spooled mails: id → `Mail::to_spool_bytes`.
pub const MAILS: TableDefinition<u64, &[u8]> = TableDefinition::new("spool_mails");
/// Mails waiting for a retry: id → due time (ms since epoch).
pub const DELAYED: TableDefinition<u64, u64> = TableDefinition::new("spool_delayed");
/// Records that could not be decoded, kept for inspection instead of being dropped.
pub const CORRUPT: TableDefinition<u64, &[u8]> = TableDefinition::new("spool_corrupt");

/// Delay before a mail whose release failed is processed again.
const RELEASE_RETRY_MS: u64 = 5000;

#[derive(Default)]
struct Queue {
    ready: VecDeque<MailId>,
    delayed: BTreeSet<(u64, MailId)>,
    leased: HashSet<MailId>,
    stored: usize,
}

/// The embedded spool.
pub struct EmbeddedSpool {
    store: Arc<Store>,
    queue: Mutex<Queue>,
    notify: Notify,
    next_id: AtomicU64,
    closed: AtomicBool,
}

impl EmbeddedSpool {
    /// Opens the spool in `store`, queueing every mail found there (crash recovery).
    pub fn open(store: Arc<Store>) -> Result<Arc<EmbeddedSpool>, SpoolError> {
        let mut queue = Queue::default();
        let mut max_id = 0;
        {
            let read = store.read()?;
            let now = now_ms();
            let delayed: std::collections::HashMap<u64, u64> = match read.open_table(DELAYED) {
                Ok(table) => table
                    .iter()
                    .map_err(redb_err)?
                    .filter_map(Result::ok)
                    .map(|(k, v)| (k.value(), v.value()))
                    .collect(),
                Err(redb::TableError::TableDoesNotExist(_)) => Default::default(),
                Err(e) => return Err(redb_err(e)),
            };
            match read.open_table(MAILS) {
                Ok(table) => {
                    for entry in table.iter().map_err(redb_err)? {
                        let (id, _) = entry.map_err(redb_err)?;
                        let id = id.value();
                        max_id = max_id.max(id);
                        queue.stored += 1;
                        match delayed.get(&id) {
                            Some(&at) if at > now => {
                                queue.delayed.insert((at, id));
                            }
                            _ => queue.ready.push_back(id),
                        }
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(redb_err(e)),
            }
            if let Ok(table) = read.open_table(CORRUPT) {
                max_id = max_id.max(
                    table
                        .last()
                        .ok()
                        .flatten()
                        .map(|(k, _)| k.value())
                        .unwrap_or(0),
                );
            }
        }
        if queue.stored > 0 {
            tracing::info!(
                mails = queue.stored,
                "spool: recovered mails left from a previous run"
            );
        }
        Ok(Arc::new(EmbeddedSpool {
            store,
            queue: Mutex::new(queue),
            notify: Notify::new(),
            next_id: AtomicU64::new(max_id.max(now_ms() * 1000) + 1),
            closed: AtomicBool::new(false),
        }))
    }

    /// Opens a store file at `path` and the spool in it.
    pub fn open_path(path: &Path) -> Result<(Arc<Store>, Arc<EmbeddedSpool>), SpoolError> {
        let store = Store::open(path)?;
        let spool = Self::open(store.clone())?;
        Ok((store, spool))
    }

    /// The shared store (the outbox lives in the same file).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Time (ms since epoch) the oldest stored mail was queued, if any is waiting.
    pub fn oldest_id(&self) -> Option<MailId> {
        let q = self.queue.lock().unwrap();
        q.ready
            .iter()
            .chain(q.delayed.iter().map(|(_, id)| id))
            .chain(q.leased.iter())
            .min()
            .copied()
    }

    fn load(&self, id: MailId) -> Result<Option<Mail>, StoreError> {
        let read = self.store.read()?;
        let table = match read.open_table(MAILS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(StoreError(e.to_string())),
        };
        let Some(bytes) = table.get(id).map_err(|e| StoreError(e.to_string()))? else {
            return Ok(None);
        };
        match Mail::from_spool_bytes(bytes.value()) {
            Ok(mut mail) => {
                mail.id = id;
                Ok(Some(mail))
            }
            Err(reason) => Err(StoreError(format!("corrupt:{reason}"))),
        }
    }

    /// The release of a leased mail could not be stored (disk full, I/O error): the stored
    /// copy is still the truth, so it is processed again later instead of staying leased
    /// until a restart.
    fn release_later(&self, id: MailId) {
        let mut q = self.queue.lock().unwrap();
        if q.leased.remove(&id) {
            q.delayed.insert((now_ms() + RELEASE_RETRY_MS, id));
        }
        drop(q);
        self.notify.notify_one();
    }

    async fn quarantine(&self, id: MailId, reason: &str) {
        tracing::error!(
            mail = id,
            reason,
            "spool: undecodable record moved to the corrupt table"
        );
        let result = self
            .store
            .write(move |txn| {
                let mut mails = txn.open_table(MAILS)?;
                let record = mails.remove(id)?.map(|v| v.value().to_vec());
                if let Some(record) = record {
                    txn.open_table(CORRUPT)?.insert(id, record.as_slice())?;
                }
                txn.open_table(DELAYED)?.remove(id)?;
                Ok(())
            })
            .await;
        let mut q = self.queue.lock().unwrap();
        q.leased.remove(&id);
        if result.is_ok() {
            q.stored = q.stored.saturating_sub(1);
        }
    }
}

fn redb_err(e: impl std::fmt::Display) -> SpoolError {
    SpoolError(e.to_string())
}

#[async_trait]
impl Spool for EmbeddedSpool {
    async fn enqueue(&self, mail: &Mail) -> Result<MailId, SpoolError> {
        // ids follow the clock (ms · 1000, then +1 per mail within a ms), so the oldest id
        // tells the age of the oldest mail
        let now = now_ms() * 1000;
        let previous = self
            .next_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                Some(cur.max(now) + 1)
            })
            .expect("the closure always returns Some");
        let id = previous.max(now);
        let mut mail = mail.clone();
        mail.id = id;
        if mail.name.is_empty() {
            mail.name = format!("mail-{id}");
        }
        let record = mail.to_spool_bytes();
        self.store
            .write(move |txn| {
                txn.open_table(MAILS)?.insert(id, record.as_slice())?;
                Ok(())
            })
            .await?;
        {
            let mut q = self.queue.lock().unwrap();
            q.ready.push_back(id);
            q.stored += 1;
        }
        self.notify.notify_one();
        Ok(id)
    }

    async fn dequeue(&self) -> Option<Mail> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            let notified = self.notify.notified();
            let (next, wait_ms) = {
                let mut q = self.queue.lock().unwrap();
                let now = now_ms();
                while let Some(&(at, id)) = q.delayed.first() {
                    if at > now {
                        break;
                    }
                    q.delayed.pop_first();
                    q.ready.push_back(id);
                }
                let next = q.ready.pop_front();
                if let Some(id) = next {
                    q.leased.insert(id);
                }
                let wait = q.delayed.first().map(|(at, _)| at.saturating_sub(now));
                (next, wait)
            };
            if let Some(id) = next {
                if !self.queue.lock().unwrap().ready.is_empty() {
                    self.notify.notify_one();
                }
                match self.load(id) {
                    Ok(Some(mail)) => return Some(mail),
                    Ok(None) => {
                        let mut q = self.queue.lock().unwrap();
                        q.leased.remove(&id);
                        continue;
                    }
                    Err(StoreError(reason)) if reason.starts_with("corrupt:") => {
                        self.quarantine(id, &reason["corrupt:".len()..]).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(mail = id, error = %e, "spool: cannot read a mail; retrying in 1 s");
                        let mut q = self.queue.lock().unwrap();
                        q.leased.remove(&id);
                        q.delayed.insert((now_ms() + 1000, id));
                        continue;
                    }
                }
            }
            match wait_ms {
                Some(ms) => {
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_millis(ms.max(1)), notified)
                            .await;
                }
                None => notified.await,
            }
        }
    }

    async fn complete(&self, id: MailId, jobs: Vec<OutboxJob>) -> Result<(), SpoolError> {
        let stored_jobs = !jobs.is_empty();
        self.store
            .write(move |txn| {
                txn.open_table(MAILS)?.remove(id)?;
                txn.open_table(DELAYED)?.remove(id)?;
                crate::outbox::store::insert_jobs(txn, jobs)?;
                Ok(())
            })
            .await
            .inspect_err(|_| self.release_later(id))?;
        {
            let mut q = self.queue.lock().unwrap();
            q.leased.remove(&id);
            q.stored = q.stored.saturating_sub(1);
        }
        if stored_jobs {
            crate::outbox::store::jobs_added();
        }
        Ok(())
    }

    async fn retry_at(&self, mail: &Mail, at_ms: u64) -> Result<(), SpoolError> {
        let id = mail.id;
        let record = mail.to_spool_bytes();
        self.store
            .write(move |txn| {
                txn.open_table(MAILS)?.insert(id, record.as_slice())?;
                txn.open_table(DELAYED)?.insert(id, at_ms)?;
                Ok(())
            })
            .await
            .inspect_err(|_| self.release_later(id))?;
        {
            let mut q = self.queue.lock().unwrap();
            q.leased.remove(&id);
            q.delayed.insert((at_ms, id));
        }
        self.notify.notify_one();
        Ok(())
    }

    fn depth(&self) -> usize {
        self.queue.lock().unwrap().stored
    }

    fn oldest_received_ms(&self) -> Option<u64> {
        // ids start at the enqueue time in µs-like units (ms · 1000 + sequence)
        self.oldest_id().map(|id| id / 1000)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// Number of records in the corrupt table (for status and tests).
pub fn corrupt_count(store: &Store) -> usize {
    store
        .read()
        .ok()
        .and_then(|r| r.open_table(CORRUPT).ok())
        .and_then(|t| t.len().ok())
        .unwrap_or(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::MailAddress;

    fn mail(n: u8) -> Mail {
        Mail::new(
            Some(MailAddress::parse("a@example.org").unwrap()),
            vec![MailAddress::parse("b@example.org").unwrap()],
            format!("Subject: {n}\r\n\r\nhello\r\n").into_bytes(),
        )
    }

    #[tokio::test]
    async fn mails_survive_reopen_until_completed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.redb");
        {
            let (_store, spool) = EmbeddedSpool::open_path(&path).unwrap();
            for n in 0..3 {
                spool.enqueue(&mail(n)).await.unwrap();
            }
            let first = spool.dequeue().await.unwrap();
            spool.complete(first.id, vec![]).await.unwrap();
            assert_eq!(spool.depth(), 2);
            spool.close();
        }
        let (_store, spool) = EmbeddedSpool::open_path(&path).unwrap();
        assert_eq!(spool.depth(), 2);
        let a = spool.dequeue().await.unwrap();
        let b = spool.dequeue().await.unwrap();
        assert_eq!(a.message, b"Subject: 1\r\n\r\nhello\r\n");
        assert_eq!(b.message, b"Subject: 2\r\n\r\nhello\r\n");
        assert_eq!(a.recipients[0].to_string(), "b@example.org");
    }

    #[tokio::test]
    async fn retry_waits_until_due() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, spool) = EmbeddedSpool::open_path(&dir.path().join("s.redb")).unwrap();
        spool.enqueue(&mail(1)).await.unwrap();
        let m = spool.dequeue().await.unwrap();
        let due = now_ms() + 150;
        spool.retry_at(&m, due).await.unwrap();
        let again = spool.dequeue().await.unwrap();
        assert!(now_ms() >= due);
        assert_eq!(again.id, m.id);
    }

    #[tokio::test]
    async fn concurrent_enqueues_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, spool) = EmbeddedSpool::open_path(&dir.path().join("s.redb")).unwrap();
        let mut tasks = Vec::new();
        for n in 0..50u8 {
            let spool = spool.clone();
            tasks.push(tokio::spawn(async move {
                spool.enqueue(&mail(n)).await.unwrap()
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 50);
        assert_eq!(spool.depth(), 50);
    }
}
