//! The spool's journal: append-only segment files of checksummed records, made durable by
//! one syncer thread.
//!
//! Why not a B-tree store: a received mail is written once and read at most once, so a
//! log is all the spool needs. A put is written by its caller (one `pwrite` into the page
//! cache, under the writer lock) and waits for the syncer, which runs `fdatasync` on what has
//! been written and acknowledges every put that sync covered, while callers already write
//! the next ones (group commit without a serial write-then-sync loop, and no thread handoff
//! before the sync). Like Postgres's `commit_delay` with `commit_siblings`, the syncer holds
//! a sync back briefly while other mail transactions are open ([`Journal::incoming`]), so
//! that their puts share it ([`GATHER_PUTS`]). Releases are queued without waking anyone:
//! the next put or the syncer's timer writes them, the next sync makes them durable, and a
//! crash before that only makes a processed mail run again (at least once, as James's spool).
//!
//! Records (put, release, attempt) are in [`record`], the append side in [`writer`], the
//! syncer in [`sync`], replay at open in [`recovery`]. A segment starts with [`MAGIC`]; the
//! syncer keeps the active segment's next bytes written with zeros
//! ([`ZEROED_AHEAD`]), so zeros after the last record are a clean end, not damage.
//! Only the active segment's recent end stays in the page cache ([`KEEP_CACHED`]).
//! Segments are deleted from the oldest while every put in them is released
//! or superseded (deleting a later one first could revive mails its releases ended); a head
//! segment pinned by a few long-lived mails is compacted by copying them forward.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::Incoming;
use crate::mail::MailId;
use crate::sync::Locked;

mod record;
mod recovery;
mod sync;
mod writer;

use record::{HEADER, PUT, PUT_BODY, parse_record};
pub use record::{MAGIC, MAX_PAYLOAD};
use recovery::recover_segment;
use sync::{Done, SyncQueue, sync_loop};
use writer::Writer;

/// A segment is closed once it is this large (a single bigger record still fits: it is
/// written whole into a fresh segment).
const SEGMENT_BYTES: u64 = if cfg!(test) { 1 << 20 } else { 64 << 20 };
/// Compaction starts when this many segments exist and the oldest is mostly dead.
const COMPACT_AFTER_SEGMENTS: usize = 4;
/// The active segment is kept written with zeros this far ahead of its end, in steps of
/// this size: overwriting written blocks, `fdatasync` only flushes data (no extent or size
/// to journal), which halves its latency on ext4 (0.25 → 0.14 ms measured in
/// docs/ingest.md), and every acknowledged put waits for one.
const ZEROED_AHEAD: u64 = if cfg!(test) { 64 << 10 } else { 1 << 20 };
/// The active segment's page cache is dropped (`POSIX_FADV_DONTNEED`, as Postgres does
/// with WAL) but for its last this many bytes, which the spooler reads back soon. A mail is
/// written once and read once, so keeping the journal cached only crowds out other files;
/// and on this VM a page-cache page the guest has not used recently costs ~17 µs to fault
/// in from the host against ~0.5 µs for a recycled one (docs/ingest.md): dropped pages are
/// the ones the next writes reuse.
const KEEP_CACHED: u64 = if cfg!(test) { 256 << 10 } else { 16 << 20 };
/// Longest time a release waits to be written when no put comes to carry it.
const RELEASE_DELAY: Duration = Duration::from_millis(20);
/// While other mail transactions are open, a sync waits for their puts until this many
/// wait or the oldest has waited [`GATHER_WAIT`]. Each `fdatasync` costs ~40 µs of CPU here
/// whatever it carries (two device round trips through the hypervisor), and CPU spent
/// syncing is throughput lost on a machine shared with the clients; a sync simulated as
/// 100 µs of sleep cost a tenth as much as one simulated as 40 µs of work (docs/ingest.md).
const GATHER_PUTS: usize = 16;
const GATHER_WAIT: Duration = Duration::from_millis(1);

/// A journal operation failed (disk full, I/O error, a damaged segment). Cloneable because
/// one failed write or sync is the outcome of every put it covered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed; `doing` says which, on which file.
    #[error("{doing}: {source}")]
    Io {
        /// What was being done (`syncing the spool journal`, `reading mail 12`).
        doing: String,
        /// The system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Stored bytes that fail their checks.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// A mail too large for a record.
    #[error("mail {id}: {len} bytes do not fit in a journal record (at most {max})")]
    TooLarge {
        /// The mail.
        id: MailId,
        /// Its size.
        len: usize,
        /// The largest record payload.
        max: usize,
    },
    /// The mail is not (or no longer) in the spool.
    #[error("mail {0} is not in the spool")]
    NotInSpool(MailId),
    /// The spool is closing, or its syncer is gone.
    #[error("{0}")]
    Closed(&'static str),
}

impl JournalError {
    /// An I/O error while `doing` something.
    pub fn io(doing: impl Into<String>, source: std::io::Error) -> Self {
        JournalError::Io {
            doing: doing.into(),
            source: Arc::new(source),
        }
    }
}

/// Where a put's record lives.
#[derive(Clone, Copy, Debug)]
struct Slot {
    segment: u64,
    offset: u64,
    body_len: u32,
    due_ms: u64,
    /// Processing starts of this version of the mail ([`Journal::begin_attempt`]).
    attempts: u32,
}

/// A mail found in the journal when it was opened.
#[derive(Debug)]
pub struct Recovered {
    /// The mail's spool id.
    pub id: MailId,
    /// When it is due (0: at once).
    pub due_ms: u64,
    /// How many times its processing was started since it was last stored (a crash or a
    /// kill during processing leaves this above zero).
    pub attempts: u32,
}

struct Segment {
    file: Arc<File>,
    live: usize,
    live_bytes: u64,
}

#[derive(Default)]
struct Index {
    slots: HashMap<MailId, Slot>,
    segments: BTreeMap<u64, Segment>,
}

impl Index {
    fn forget(&mut self, id: MailId) {
        if let Some(old) = self.slots.remove(&id)
            && let Some(seg) = self.segments.get_mut(&old.segment)
        {
            seg.live -= 1;
            seg.live_bytes -= u64::from(old.body_len);
        }
    }

    fn place(&mut self, id: MailId, slot: Slot) {
        self.forget(id);
        if let Some(seg) = self.segments.get_mut(&slot.segment) {
            seg.live += 1;
            seg.live_bytes += u64::from(slot.body_len);
        }
        self.slots.insert(id, slot);
    }
}

struct Shared {
    dir: PathBuf,
    index: Mutex<Index>,
    /// The append side: one writer at a time.
    writer: Mutex<Writer>,
    /// Releases waiting to be written with the next put, or by the syncer within
    /// [`RELEASE_DELAY`]: a release wakes no thread.
    releases: Mutex<Vec<MailId>>,
    sync: Mutex<SyncQueue>,
    sync_ready: Condvar,
    /// Mail transactions in progress ([`Journal::incoming`]): puts that may come soon.
    open: Arc<AtomicUsize>,
}

impl Shared {
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// The journal: open it, put and release mails, read them back.
pub struct Journal {
    shared: Arc<Shared>,
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, returning the mails it holds, oldest first.
    /// A torn record at the end of the newest segment (a crash mid-write) is cut off: it was
    /// never acknowledged.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<Recovered>), JournalError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| JournalError::io(format!("cannot create {}", dir.display()), e))?;
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| JournalError::io(format!("cannot list {}", dir.display()), e))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut index = Index::default();
        let mut active = None;
        for (i, &number) in numbers.iter().enumerate() {
            let newest = i + 1 == numbers.len();
            let end = recover_segment(dir, number, newest, &mut index)?;
            if newest && let Some(end) = end {
                active = Some((number, end));
            }
        }
        let recovered = stored_of(&index);
        let next_number = numbers.last().map_or(1, |n| n + 1);
        let writer = Writer::new(&index, active, next_number);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            index: Mutex::new(index),
            writer: Mutex::new(writer),
            releases: Mutex::new(Vec::new()),
            sync: Mutex::new(SyncQueue::default()),
            sync_ready: Condvar::new(),
            open: Arc::default(),
        });
        drop_dead_head(&shared);
        let syncer_shared = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("spool-syncer".into())
            .spawn(move || sync_loop(&syncer_shared))
            .map_err(|e| JournalError::io("cannot start the spool syncer", e))?;
        Ok((
            Journal {
                shared,
                syncer: Mutex::new(Some(syncer)),
            },
            recovered,
        ))
    }

    /// Counts a mail transaction as in progress until dropped, so that a sync may wait a
    /// little for its put.
    pub fn incoming(&self) -> Incoming {
        Incoming::counted_in(&self.shared.open)
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Writes the put (and the queued releases) and hands it to the syncer, which calls
    /// `done` once it is durable or failed.
    fn append(&self, id: MailId, due_ms: u64, payload: &[&[u8]], done: Done) {
        if self.shared.sync.locked().closed {
            return done(Err(JournalError::Closed("the spool is closed")));
        }
        if let Err(e) = payload_fits(id, payload.iter().map(|p| p.len()).sum()) {
            return done(Err(e));
        }
        let mut writer = self.shared.writer.locked();
        // a failed write is reported to the put's `done`
        let _ = writer.write_batch(&self.shared, vec![(id, due_ms, payload, done)], None);
    }

    /// Stores `payload` as mail `id` (replacing an earlier version), due at `due_ms`;
    /// returns once it is on disk.
    pub async fn put(&self, id: MailId, due_ms: u64, payload: Vec<u8>) -> Result<(), JournalError> {
        self.put_parts(id, due_ms, &[&payload]).await
    }

    /// [`Journal::put`] of the payload made of `parts` put together (written one after
    /// the other, not first copied into one buffer).
    pub async fn put_parts(
        &self,
        id: MailId,
        due_ms: u64,
        parts: &[&[u8]],
    ) -> Result<(), JournalError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: Done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.append(id, due_ms, parts, done);
        rx.await
            .map_err(|_| JournalError::Closed("the spool syncer dropped a write"))?
    }

    /// [`Journal::put`] for callers outside the async runtime (start-up migration).
    pub fn put_blocking(
        &self,
        id: MailId,
        due_ms: u64,
        payload: Vec<u8>,
    ) -> Result<(), JournalError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let done: Done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.append(id, due_ms, &[&payload], done);
        rx.recv()
            .map_err(|_| JournalError::Closed("the spool syncer dropped a write"))?
    }

    /// Forgets mail `id`; written within [`RELEASE_DELAY`] and durable with the sync that
    /// follows, not awaited.
    pub fn release(&self, id: MailId) {
        if self.shared.sync.locked().closed {
            tracing::warn!(
                mail = id,
                "spool: release after close; the mail runs again after a restart"
            );
            return;
        }
        self.shared.releases.locked().push(id);
    }

    /// Reads mail `id`'s payload, checking its checksum; `None` when it is not stored.
    pub fn read(&self, id: MailId) -> Result<Option<Vec<u8>>, JournalError> {
        let (slot, file) = {
            let index = self.shared.index.locked();
            let Some(slot) = index.slots.get(&id).copied() else {
                return Ok(None);
            };
            let file = index.segments[&slot.segment].file.clone();
            (slot, file)
        };
        let mut record = vec![0u8; HEADER + slot.body_len as usize];
        file.read_exact_at(&mut record, slot.offset)
            .map_err(|e| JournalError::io(format!("reading mail {id}"), e))?;
        match parse_record(&record) {
            Some((body, _)) if body[0] == PUT => Ok(Some(body[PUT_BODY..].to_vec())),
            _ => Err(JournalError::Corrupt(format!(
                "record of mail {id} in segment {} fails its checksum",
                slot.segment
            ))),
        }
    }

    /// The mails stored now, by due time then id.
    pub fn stored(&self) -> Vec<Recovered> {
        stored_of(&self.shared.index.locked())
    }

    /// Records that processing of mail `id` starts, before it starts, and returns how many
    /// times it has started since the mail was last stored (this one included). The record
    /// is written at once (no waiting for a sync): a process that dies while processing
    /// leaves it in the page cache, which the kernel writes out; only a machine crash before
    /// the next sync can lose it, which costs one more attempt.
    pub fn begin_attempt(&self, id: MailId) -> Result<u32, JournalError> {
        if self.shared.sync.locked().closed {
            return Err(JournalError::Closed("the spool is closed"));
        }
        let mut writer = self.shared.writer.locked();
        let attempts = match self.shared.index.locked().slots.get(&id) {
            Some(slot) => slot.attempts.saturating_add(1),
            None => return Err(JournalError::NotInSpool(id)),
        };
        writer.write_batch(&self.shared, Vec::new(), Some((id, attempts)))?;
        Ok(attempts)
    }

    /// Number of segment files.
    pub fn segments(&self) -> usize {
        self.shared.index.locked().segments.len()
    }

    /// Writes the queued releases, syncs what is written and stops the syncer.
    pub fn close(&self) {
        {
            let mut sync = self.shared.sync.locked();
            sync.closed = true;
            self.shared.sync_ready.notify_all();
        }
        if let Some(syncer) = self.syncer.locked().take() {
            let _ = syncer.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// A put of `len` bytes must fit in a record (see [`MAX_PAYLOAD`]).
fn payload_fits(id: MailId, len: usize) -> Result<(), JournalError> {
    if len > MAX_PAYLOAD {
        return Err(JournalError::TooLarge {
            id,
            len,
            max: MAX_PAYLOAD,
        });
    }
    Ok(())
}

/// The mails of `index`, by due time then id.
fn stored_of(index: &Index) -> Vec<Recovered> {
    let mut order: Vec<(MailId, Slot)> = index.slots.iter().map(|(k, v)| (*k, *v)).collect();
    order.sort_by_key(|(id, slot)| (slot.due_ms, *id));
    order
        .into_iter()
        .map(|(id, slot)| Recovered {
            id,
            due_ms: slot.due_ms,
            attempts: slot.attempts,
        })
        .collect()
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:012}.seg"))
}

/// Deletes the oldest segments while nothing in them is live (never the active one, which
/// is the newest).
fn drop_dead_head(shared: &Shared) {
    let mut index = shared.index.locked();
    while index.segments.len() > 1 {
        let (&number, segment) = index.segments.first_key_value().expect("not empty");
        if segment.live > 0 {
            break;
        }
        index.segments.pop_first();
        let path = segment_path(&shared.dir, number);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(segment = %path.display(), error = %e, "spool: cannot delete a finished segment");
        }
    }
}

#[cfg(test)]
mod attempt_tests;
#[cfg(test)]
mod tests;
