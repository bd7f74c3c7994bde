//! The default spool: mails in an append-only [`Journal`] beside the embedded [`Store`]
//! (which keeps the outbox), a due-time queue in memory, and the newest mails kept in memory
//! too so that processing them reads nothing back from disk.
//!
//! Why a journal and not the redb store: a received mail is written once, read once and
//! dropped, and the journal makes one `write` per batch with its `fdatasync` overlapping the
//! next batch, where a B-tree commit rewrites pages and syncs serially. A file per mail would
//! need a file fsync plus a directory fsync per mail. Mails left in the spool's tables by an
//! earlier version are moved into the journal when the spool opens.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition};
use tokio::sync::Notify;

use super::journal::Journal;
use super::{Incoming, Spool, SpoolError};
use crate::mail::job::OutboxJob;
use crate::mail::{Mail, MailId, now_ms};
use crate::store::{JobSink, Store, StoreError};
use crate::sync::Locked;

/// Where versions up to 0.1 kept spooled mails (id → `Mail::to_spool_bytes`), read once to
/// move them into the journal.
const LEGACY_MAILS: TableDefinition<u64, &[u8]> = TableDefinition::new("spool_mails");
/// Their retry due times (id → ms since epoch).
const LEGACY_DELAYED: TableDefinition<u64, u64> = TableDefinition::new("spool_delayed");

/// Delay before a mail whose release failed is processed again.
const RELEASE_RETRY_MS: u64 = 5000;
/// Bytes of waiting mails kept in memory; beyond, mails are read back from the journal.
const HOT_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Queue {
    ready: VecDeque<MailId>,
    delayed: BTreeSet<(u64, MailId)>,
    leased: HashSet<MailId>,
    /// Waiting mails still in memory, by id.
    hot: HashMap<MailId, Mail>,
    hot_bytes: usize,
    stored: usize,
}

/// The embedded spool.
pub struct EmbeddedSpool {
    store: Arc<Store>,
    jobs: Arc<dyn JobSink>,
    journal: Journal,
    corrupt_dir: PathBuf,
    queue: Mutex<Queue>,
    notify: Notify,
    next_id: AtomicU64,
    closed: AtomicBool,
}

impl EmbeddedSpool {
    /// Opens the journal in `journal_dir` beside `store`, queueing every mail found there
    /// (crash recovery); finished mails' jobs go to `jobs`.
    pub fn open(
        store: Arc<Store>,
        journal_dir: &Path,
        jobs: Arc<dyn JobSink>,
    ) -> Result<Arc<EmbeddedSpool>, SpoolError> {
        let (journal, recovered) = Journal::open(journal_dir)?;
        let mut queue = Queue::default();
        let now = now_ms();
        let mut max_id = 0;
        for mail in &recovered {
            max_id = max_id.max(mail.id);
            queue.stored += 1;
            if mail.due_ms > now {
                queue.delayed.insert((mail.due_ms, mail.id));
            } else {
                queue.ready.push_back(mail.id);
            }
        }
        let moved = migrate_legacy(&store, &journal, &mut queue)?;
        if queue.stored > 0 {
            tracing::info!(
                mails = queue.stored,
                "spool: recovered mails left from a previous run"
            );
        }
        if moved > 0 {
            tracing::info!(
                mails = moved,
                "spool: moved mails from the store's tables into the journal"
            );
        }
        Ok(Arc::new(EmbeddedSpool {
            store,
            jobs,
            journal,
            corrupt_dir: journal_dir.join("corrupt"),
            queue: Mutex::new(queue),
            notify: Notify::new(),
            next_id: AtomicU64::new(max_id.max(now * 1000) + 1),
            closed: AtomicBool::new(false),
        }))
    }

    /// Opens the store file at `path` and the spool's journal beside it (`spool/` in the
    /// same directory).
    pub fn open_path(
        path: &Path,
        jobs: Arc<dyn JobSink>,
    ) -> Result<(Arc<Store>, Arc<EmbeddedSpool>), SpoolError> {
        let store = Store::open(path)?;
        let dir = path.parent().unwrap_or(Path::new(".")).join("spool");
        let spool = Self::open(store.clone(), &dir, jobs)?;
        Ok((store, spool))
    }

    /// The shared store (the outbox lives there).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Number of records set aside as undecodable (for status and tests).
    pub fn corrupt_count(&self) -> usize {
        std::fs::read_dir(&self.corrupt_dir).map_or(0, |d| d.count())
    }

    /// Time (ms since epoch) the oldest stored mail was queued, if any is waiting.
    pub fn oldest_id(&self) -> Option<MailId> {
        let q = self.queue.locked();
        q.ready
            .iter()
            .chain(q.delayed.iter().map(|(_, id)| id))
            .chain(q.leased.iter())
            .min()
            .copied()
    }

    /// The mails stored, by due time then id, with their processing attempts.
    pub fn stored(&self) -> Vec<super::journal::Recovered> {
        self.journal.stored()
    }

    /// Mail `id` as stored (an undecodable record is set aside, as when processing).
    pub fn read(&self, id: MailId) -> Result<Option<Mail>, SpoolError> {
        self.load(id)
    }

    /// Takes mail `id` out of the spool for good, durably (for `mailetd spool drop`, with the
    /// server stopped: nothing else may run on this spool afterwards).
    pub fn remove(&self, id: MailId) -> Result<(), SpoolError> {
        self.journal.release(id);
        self.journal.close();
        if self.journal.stored().iter().any(|m| m.id == id) {
            return Err(SpoolError::Unavailable(format!(
                "mail {id}: the release could not be written to the journal"
            )));
        }
        Ok(())
    }

    fn load(&self, id: MailId) -> Result<Option<Mail>, SpoolError> {
        let Some(bytes) = self.journal.read(id)? else {
            return Ok(None);
        };
        match Mail::from_spool_bytes(&bytes) {
            Ok(mut mail) => {
                mail.id = id;
                Ok(Some(mail))
            }
            Err(reason) => {
                self.quarantine(id, &reason, &bytes);
                Ok(None)
            }
        }
    }

    /// The release of a leased mail could not be stored (disk full, I/O error): the stored
    /// copy is still the truth, so it is processed again later instead of staying leased
    /// until a restart.
    fn release_later(&self, id: MailId) {
        let mut q = self.queue.locked();
        if q.leased.remove(&id) {
            q.delayed.insert((now_ms() + RELEASE_RETRY_MS, id));
        }
        drop(q);
        self.notify.notify_one();
    }

    /// Sets an undecodable record aside in `corrupt/` and forgets it.
    fn quarantine(&self, id: MailId, reason: &str, bytes: &[u8]) {
        let kept = self.corrupt_dir.join(format!("mail-{id}.bin"));
        let saved =
            std::fs::create_dir_all(&self.corrupt_dir).and_then(|()| std::fs::write(&kept, bytes));
        match saved {
            Ok(()) => {
                tracing::error!(mail = id, reason, kept = %kept.display(), "spool: undecodable record set aside");
                self.journal.release(id);
                let mut q = self.queue.locked();
                q.leased.remove(&id);
                q.stored = q.stored.saturating_sub(1);
            }
            Err(e) => {
                tracing::error!(mail = id, reason, error = %e, "spool: undecodable record kept in the journal (cannot copy it aside)");
                self.release_later(id);
            }
        }
    }
}

/// Moves mails an earlier version kept in the store's tables into the journal, then empties
/// those tables; returns how many moved.
fn migrate_legacy(
    store: &Store,
    journal: &Journal,
    queue: &mut Queue,
) -> Result<usize, SpoolError> {
    let mut legacy = Vec::new();
    {
        let read = store.read()?;
        let delayed: HashMap<u64, u64> = match read.open_table(LEGACY_DELAYED) {
            Ok(table) => table
                .iter()
                .map_err(StoreError::from)?
                .filter_map(Result::ok)
                .map(|(k, v)| (k.value(), v.value()))
                .collect(),
            Err(_) => HashMap::new(),
        };
        if let Ok(table) = read.open_table(LEGACY_MAILS) {
            for entry in table.iter().map_err(StoreError::from)? {
                let (id, bytes) = entry.map_err(StoreError::from)?;
                let id = id.value();
                legacy.push((
                    id,
                    delayed.get(&id).copied().unwrap_or(0),
                    bytes.value().to_vec(),
                ));
            }
        }
    }
    if legacy.is_empty() {
        return Ok(0);
    }
    let now = now_ms();
    let moved = legacy.len();
    for (id, due_ms, bytes) in legacy {
        journal.put_blocking(id, due_ms, bytes)?;
        queue.stored += 1;
        if due_ms > now {
            queue.delayed.insert((due_ms, id));
        } else {
            queue.ready.push_back(id);
        }
    }
    futures_lite::future::block_on(store.write(|txn| {
        txn.delete_table(LEGACY_MAILS)?;
        txn.delete_table(LEGACY_DELAYED)?;
        Ok(())
    }))?;
    Ok(moved)
}

#[async_trait]
impl Spool for EmbeddedSpool {
    fn incoming(&self) -> Incoming {
        self.journal.incoming()
    }

    async fn enqueue(&self, mut mail: Mail) -> Result<MailId, SpoolError> {
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
        mail.id = id;
        if mail.name.is_empty() {
            mail.name = format!("mail-{id}");
        }
        // the message is written from where it is, not copied into one payload first
        let head = mail.spool_head();
        if let Err(e) = self.journal.put_parts(id, 0, &[&head, &mail.message]).await {
            // the bytes may have reached the file: the client was told to retry, so the
            // copy must not be processed as well
            self.journal.release(id);
            return Err(e.into());
        }
        // the hot copy counts what it holds, not its length: a body received into a 16 KiB
        // buffer is 4 KiB of mail and 12 KiB of spare capacity until shrunk (in place)
        mail.message.shrink_to_fit();
        {
            let mut q = self.queue.locked();
            q.ready.push_back(id);
            q.stored += 1;
            if q.hot_bytes + mail.message.capacity() <= HOT_BYTES {
                q.hot_bytes += mail.message.capacity();
                q.hot.insert(id, mail);
            }
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
            let (next, hot, wait_ms) = {
                let mut q = self.queue.locked();
                let now = now_ms();
                while let Some(&(at, id)) = q.delayed.first() {
                    if at > now {
                        break;
                    }
                    q.delayed.pop_first();
                    q.ready.push_back(id);
                }
                let next = q.ready.pop_front();
                let mut hot = None;
                if let Some(id) = next {
                    q.leased.insert(id);
                    hot = q.hot.remove(&id);
                    if let Some(mail) = &hot {
                        q.hot_bytes -= mail.message.capacity();
                    }
                }
                if next.is_some() && !q.ready.is_empty() {
                    self.notify.notify_one();
                }
                let wait = q.delayed.first().map(|(at, _)| at.saturating_sub(now));
                (next, hot, wait)
            };
            if let Some(mail) = hot {
                return Some(mail);
            }
            if let Some(id) = next {
                match self.load(id) {
                    Ok(Some(mail)) => return Some(mail),
                    Ok(None) => {
                        let mut q = self.queue.locked();
                        q.leased.remove(&id);
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(mail = id, error = %e, "spool: cannot read a mail; retrying in 1 s");
                        let mut q = self.queue.locked();
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

    async fn begin_attempt(&self, mail: &Mail) -> Result<Option<u32>, SpoolError> {
        Ok(Some(self.journal.begin_attempt(mail.id)?))
    }

    async fn complete(&self, id: MailId, jobs: Vec<OutboxJob>) -> Result<(), SpoolError> {
        // The jobs are durable before the mail is released: a crash in between runs the
        // mail again, and the outbox's dedup keys absorb the repeated jobs.
        let stored_jobs = !jobs.is_empty();
        if stored_jobs {
            self.store
                .write({
                    let sink = self.jobs.clone();
                    move |txn| sink.insert(txn, jobs)
                })
                .await
                .map_err(SpoolError::from)
                .inspect_err(|_| self.release_later(id))?;
        }
        self.journal.release(id);
        {
            let mut q = self.queue.locked();
            q.leased.remove(&id);
            q.stored = q.stored.saturating_sub(1);
        }
        if stored_jobs {
            self.jobs.added();
        }
        Ok(())
    }

    fn rereads(&self) -> bool {
        true
    }

    async fn reread(&self, id: MailId) -> Result<Mail, SpoolError> {
        match self.load(id) {
            Ok(Some(mail)) => Ok(mail),
            Ok(None) => {
                // not there, or quarantined as corrupt: nothing to put back
                let mut q = self.queue.locked();
                q.leased.remove(&id);
                Err(SpoolError::Unavailable(format!(
                    "mail {id} is not in the spool any more"
                )))
            }
            Err(e) => {
                self.release_later(id);
                Err(e)
            }
        }
    }

    async fn retry_at(&self, mail: &Mail, at_ms: u64) -> Result<(), SpoolError> {
        let id = mail.id;
        self.journal
            .put_parts(id, at_ms, &[&mail.spool_head(), &mail.message])
            .await
            .map_err(SpoolError::from)
            .inspect_err(|_| self.release_later(id))?;
        {
            let mut q = self.queue.locked();
            q.leased.remove(&id);
            q.delayed.insert((at_ms, id));
        }
        self.notify.notify_one();
        Ok(())
    }

    fn depth(&self) -> usize {
        self.queue.locked().stored
    }

    fn oldest_received_ms(&self) -> Option<u64> {
        // ids start at the enqueue time in µs-like units (ms · 1000 + sequence)
        self.oldest_id().map(|id| id / 1000)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn finish(&self) {
        // the releases of the last processed mails, so a restart does not run them again
        self.journal.close();
    }
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
            let (_store, spool) =
                EmbeddedSpool::open_path(&path, crate::outbox::store::OutboxSink::shared())
                    .unwrap();
            for n in 0..3 {
                spool.enqueue(mail(n)).await.unwrap();
            }
            let first = spool.dequeue().await.unwrap();
            spool.complete(first.id, vec![]).await.unwrap();
            assert_eq!(spool.depth(), 2);
            spool.close();
        }
        let (_store, spool) =
            EmbeddedSpool::open_path(&path, crate::outbox::store::OutboxSink::shared()).unwrap();
        assert_eq!(spool.depth(), 2);
        let a = spool.dequeue().await.unwrap();
        let b = spool.dequeue().await.unwrap();
        assert_eq!(a.message, b"Subject: 1\r\n\r\nhello\r\n");
        assert_eq!(b.message, b"Subject: 2\r\n\r\nhello\r\n");
        assert_eq!(a.recipients[0].to_string(), "b@example.org");
    }

    #[test]
    fn mails_an_earlier_version_left_in_the_store_are_moved_into_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.redb");
        {
            let store = Store::open(&path).unwrap();
            let mut ready = mail(1);
            ready.id = 11;
            let mut later = mail(2);
            later.id = 12;
            let (a, b) = (ready.to_spool_bytes(), later.to_spool_bytes());
            futures_lite::future::block_on(store.write(move |txn| {
                let mut mails = txn.open_table(LEGACY_MAILS)?;
                mails.insert(11, a.as_slice())?;
                mails.insert(12, b.as_slice())?;
                txn.open_table(LEGACY_DELAYED)?.insert(12, u64::MAX)?;
                Ok(())
            }))
            .unwrap();
        }
        for _ in 0..2 {
            // the second open finds them in the journal only, not twice
            let (store, spool) =
                EmbeddedSpool::open_path(&path, crate::outbox::store::OutboxSink::shared())
                    .unwrap();
            assert_eq!(spool.depth(), 2);
            let q = spool.queue.locked();
            assert_eq!(q.ready, [11]);
            assert_eq!(
                q.delayed.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
                [12]
            );
            drop(q);
            assert!(store.read().unwrap().open_table(LEGACY_MAILS).is_err());
            let back = Mail::from_spool_bytes(&spool.journal.read(11).unwrap().unwrap()).unwrap();
            assert_eq!(back.message, b"Subject: 1\r\n\r\nhello\r\n");
        }
    }

    #[tokio::test]
    async fn retry_waits_until_due() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, spool) = EmbeddedSpool::open_path(
            &dir.path().join("s.redb"),
            crate::outbox::store::OutboxSink::shared(),
        )
        .unwrap();
        spool.enqueue(mail(1)).await.unwrap();
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
        let (_store, spool) = EmbeddedSpool::open_path(
            &dir.path().join("s.redb"),
            crate::outbox::store::OutboxSink::shared(),
        )
        .unwrap();
        let mut tasks = Vec::new();
        for n in 0..50u8 {
            let spool = spool.clone();
            tasks.push(tokio::spawn(async move {
                spool.enqueue(mail(n)).await.unwrap()
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
