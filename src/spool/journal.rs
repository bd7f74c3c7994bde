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
//! Records (put, release, attempt) are in [`record`]. A segment starts with [`MAGIC`]; the
//! syncer keeps the active segment's next bytes written with zeros
//! ([`ZEROED_AHEAD`]), so zeros after the last record are a clean end, not damage.
//! Only the active segment's recent end stays in the page cache ([`KEEP_CACHED`]).
//! Segments are deleted from the oldest while every put in them is released
//! or superseded (deleting a later one first could revive mails its releases ended); a head
//! segment pinned by a few long-lived mails is compacted by copying them forward.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::Incoming;
use crate::mail::MailId;

mod record;

use record::{
    ATTEMPT, HEADER, MAGIC_V1, PUT, PUT_BODY, RELEASE_BODY, append_attempt, append_put,
    append_release, parse_record, u32_at, u64_at,
};
pub use record::{MAGIC, MAX_PAYLOAD};
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

/// A journal operation failed (disk full, I/O error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct JournalError(pub String);

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

type Done = Box<dyn FnOnce(Result<(), JournalError>) + Send>;

/// Writes waiting for the syncer: the file to sync and who to tell.
struct SyncWork {
    file: Arc<File>,
    waiters: Vec<Done>,
}

#[derive(Default)]
struct SyncQueue {
    work: Vec<SyncWork>,
    /// When the oldest put in `work` was written.
    oldest: Option<Instant>,
    /// The syncer waits on `sync_ready`: only then does a put need to wake it.
    sleeping: bool,
    closed: bool,
    /// Set by the syncer after a failed sync: the writer starts a new segment, since what
    /// the kernel kept of the old one's tail is unknown.
    failed: bool,
}

impl SyncQueue {
    fn push(&mut self, work: SyncWork, now: Instant) {
        if !work.waiters.is_empty() {
            self.oldest.get_or_insert(now);
        }
        self.work.push(work);
    }

    /// Everything written so far, for one sync.
    fn take(&mut self) -> Vec<SyncWork> {
        self.oldest = None;
        std::mem::take(&mut self.work)
    }

    /// Puts waiting for a sync.
    fn pending(&self) -> usize {
        self.work.iter().map(|w| w.waiters.len()).sum()
    }

    /// When the waiting puts are to be synced, with `open` mail transactions in progress:
    /// now (`None`) when none of those could add a put, or [`GATHER_PUTS`] wait, else once
    /// the oldest has waited [`GATHER_WAIT`].
    fn sync_due(&self, open: usize) -> Option<Instant> {
        let oldest = self.oldest?;
        let pending = self.pending();
        if open <= pending || pending >= GATHER_PUTS || self.closed {
            return None;
        }
        Some(oldest + GATHER_WAIT)
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
            .map_err(|e| JournalError(format!("cannot create {}: {e}", dir.display())))?;
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| JournalError(format!("cannot list {}: {e}", dir.display())))?
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
            .map_err(|e| JournalError(format!("cannot start the spool syncer: {e}")))?;
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
    fn append(&self, id: MailId, due_ms: u64, payload: &[u8], done: Done) {
        if self.shared.sync.lock().unwrap().closed {
            return done(Err(JournalError("the spool is closed".into())));
        }
        if let Err(e) = payload_fits(id, payload.len()) {
            return done(Err(e));
        }
        let mut writer = self.shared.writer.lock().unwrap();
        // a failed write is reported to the put's `done`
        let _ = writer.write_batch(&self.shared, vec![(id, due_ms, payload, done)], None);
    }

    /// Stores `payload` as mail `id` (replacing an earlier version), due at `due_ms`;
    /// returns once it is on disk.
    pub async fn put(&self, id: MailId, due_ms: u64, payload: Vec<u8>) -> Result<(), JournalError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: Done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.append(id, due_ms, &payload, done);
        rx.await
            .map_err(|_| JournalError("the spool syncer dropped a write".into()))?
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
        self.append(id, due_ms, &payload, done);
        rx.recv()
            .map_err(|_| JournalError("the spool syncer dropped a write".into()))?
    }

    /// Forgets mail `id`; written within [`RELEASE_DELAY`] and durable with the sync that
    /// follows, not awaited.
    pub fn release(&self, id: MailId) {
        if self.shared.sync.lock().unwrap().closed {
            tracing::warn!(
                mail = id,
                "spool: release after close; the mail runs again after a restart"
            );
            return;
        }
        self.shared.releases.lock().unwrap().push(id);
    }

    /// Reads mail `id`'s payload, checking its checksum; `None` when it is not stored.
    pub fn read(&self, id: MailId) -> Result<Option<Vec<u8>>, JournalError> {
        let (slot, file) = {
            let index = self.shared.index.lock().unwrap();
            let Some(slot) = index.slots.get(&id).copied() else {
                return Ok(None);
            };
            let file = index.segments[&slot.segment].file.clone();
            (slot, file)
        };
        let mut record = vec![0u8; HEADER + slot.body_len as usize];
        file.read_exact_at(&mut record, slot.offset)
            .map_err(|e| JournalError(format!("reading mail {id}: {e}")))?;
        match parse_record(&record) {
            Some((body, _)) if body[0] == PUT => Ok(Some(body[PUT_BODY..].to_vec())),
            _ => Err(JournalError(format!(
                "corrupt: record of mail {id} in segment {} fails its checksum",
                slot.segment
            ))),
        }
    }

    /// The mails stored now, by due time then id.
    pub fn stored(&self) -> Vec<Recovered> {
        stored_of(&self.shared.index.lock().unwrap())
    }

    /// Records that processing of mail `id` starts, before it starts, and returns how many
    /// times it has started since the mail was last stored (this one included). The record
    /// is written at once (no waiting for a sync): a process that dies while processing
    /// leaves it in the page cache, which the kernel writes out; only a machine crash before
    /// the next sync can lose it, which costs one more attempt.
    pub fn begin_attempt(&self, id: MailId) -> Result<u32, JournalError> {
        if self.shared.sync.lock().unwrap().closed {
            return Err(JournalError("the spool is closed".into()));
        }
        let mut writer = self.shared.writer.lock().unwrap();
        let attempts = match self.shared.index.lock().unwrap().slots.get(&id) {
            Some(slot) => slot.attempts.saturating_add(1),
            None => return Err(JournalError(format!("mail {id} is not in the spool"))),
        };
        writer.write_batch(&self.shared, Vec::new(), Some((id, attempts)))?;
        Ok(attempts)
    }

    /// Number of segment files.
    pub fn segments(&self) -> usize {
        self.shared.index.lock().unwrap().segments.len()
    }

    /// Writes the queued releases, syncs what is written and stops the syncer.
    pub fn close(&self) {
        {
            let mut sync = self.shared.sync.lock().unwrap();
            sync.closed = true;
            self.shared.sync_ready.notify_all();
        }
        if let Some(syncer) = self.syncer.lock().unwrap().take() {
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
        return Err(JournalError(format!(
            "mail {id}: {len} bytes do not fit in a journal record (at most {MAX_PAYLOAD})"
        )));
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

/// Replays one segment into `index`; returns where its records end, or `None` when it
/// cannot take more appends (torn or corrupt), in which case the next append starts a new
/// segment.
fn recover_segment(
    dir: &Path,
    number: u64,
    newest: bool,
    index: &mut Index,
) -> Result<Option<u64>, JournalError> {
    let path = segment_path(dir, number);
    let bytes = std::fs::read(&path)
        .map_err(|e| JournalError(format!("reading {}: {e}", path.display())))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| JournalError(format!("opening {}: {e}", path.display())))?;
    index.segments.insert(
        number,
        Segment {
            file: Arc::new(file),
            live: 0,
            live_bytes: 0,
        },
    );
    let current = bytes.starts_with(MAGIC);
    if !current && !bytes.starts_with(MAGIC_V1) {
        if newest && bytes.len() < MAGIC.len() && MAGIC.starts_with(&bytes) {
            // created but never written: a crash right after the file appeared
            return Ok(None);
        }
        return Err(JournalError(format!(
            "{} is not a mailetd spool segment",
            path.display()
        )));
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let Some((body, len)) = parse_record(&bytes[at..]) else {
            if bytes[at..].iter().all(|&b| b == 0) {
                // the zeros written ahead of the appends: the records end here
                return Ok(current.then_some(at as u64));
            }
            let rest = bytes.len() - at;
            if newest {
                tracing::warn!(segment = %path.display(), bytes = rest, "spool: dropped a torn record at the journal's end (never acknowledged)");
                let file = &index.segments[&number].file;
                file.set_len(at as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| JournalError(format!("truncating {}: {e}", path.display())))?;
            } else {
                let kept = dir
                    .join("corrupt")
                    .join(format!("segment-{number}-at-{at}.bin"));
                let _ = std::fs::create_dir_all(dir.join("corrupt"));
                let _ = std::fs::write(&kept, &bytes[at..]);
                tracing::error!(segment = %path.display(), offset = at, bytes = rest, kept = %kept.display(), "spool: corrupt record; the rest of the segment is kept for inspection");
            }
            return Ok(None);
        };
        let id = u64_at(body, 1);
        match body[0] {
            PUT => index.place(
                id,
                Slot {
                    segment: number,
                    offset: at as u64,
                    body_len: body.len() as u32,
                    due_ms: u64_at(body, 9),
                    attempts: 0,
                },
            ),
            ATTEMPT => {
                if let Some(slot) = index.slots.get_mut(&id) {
                    slot.attempts = u32_at(body, 9);
                }
            }
            _ => index.forget(id),
        }
        at += len;
    }
    // a segment of the previous format takes no records of the new kind
    Ok(current.then_some(at as u64))
}

/// Deletes the oldest segments while nothing in them is live (never the active one, which
/// is the newest).
fn drop_dead_head(shared: &Shared) {
    let mut index = shared.index.lock().unwrap();
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

/// The segment being appended to.
struct Active {
    number: u64,
    file: Arc<File>,
    /// Where its records end: the next append's offset.
    end: u64,
    /// How far it is written: records, then the zeros written ahead.
    written: u64,
    /// Writing ahead failed here (disk full): appends go on the slower way.
    ahead_failed: bool,
    /// The page cache below this offset has been dropped ([`KEEP_CACHED`]).
    uncached: u64,
}

impl Active {
    fn new(number: u64, file: Arc<File>, end: u64, written: u64) -> Active {
        Active {
            number,
            file,
            end,
            written,
            ahead_failed: false,
            uncached: 0,
        }
    }
}

/// The append side's state, behind [`Shared::writer`].
struct Writer {
    /// `None` until the next write opens a segment.
    active: Option<Active>,
    next_number: u64,
    /// Releases whose write failed, tried again with the next batch.
    pending_releases: Vec<MailId>,
}

/// A put on its way to the file: id, due time, payload, who to tell.
type Put<'a> = (MailId, u64, &'a [u8], Done);

impl Writer {
    fn new(index: &Index, active: Option<(u64, u64)>, next_number: u64) -> Writer {
        let active = active.and_then(|(number, end)| {
            let file = index.segments.get(&number)?.file.clone();
            let written = file.metadata().ok()?.len();
            Some(Active::new(number, file, end, written))
        });
        Writer {
            active,
            next_number,
            pending_releases: Vec::new(),
        }
    }

    /// The range of the active segment whose page cache is to be dropped: all but the last
    /// [`KEEP_CACHED`] bytes, a [`ZEROED_AHEAD`] step at a time.
    fn cache_to_drop(&mut self) -> Option<(Arc<File>, u64, u64)> {
        let active = self.active.as_mut()?;
        let to = active.end.saturating_sub(KEEP_CACHED) & !4095;
        if to < active.uncached + ZEROED_AHEAD {
            return None;
        }
        let from = std::mem::replace(&mut active.uncached, to);
        Some((active.file.clone(), from, to))
    }

    /// Writes zeros past the active segment's end when fewer than [`ZEROED_AHEAD`] bytes
    /// are left; returns the file to sync them in (outside the writer lock). A failure
    /// (disk full) only means the appends go on the slower way.
    fn zero_ahead(&mut self) -> Option<Arc<File>> {
        let active = self.active.as_mut().filter(|a| !a.ahead_failed)?;
        let from = active.written.max(active.end);
        if from - active.end >= ZEROED_AHEAD || from >= SEGMENT_BYTES {
            return None;
        }
        let to = (from + ZEROED_AHEAD).min(SEGMENT_BYTES);
        match active
            .file
            .write_all_at(&vec![0u8; (to - from) as usize], from)
        {
            Ok(()) => {
                active.written = to;
                Some(active.file.clone())
            }
            Err(e) => {
                tracing::debug!(error = %e, "spool: cannot write the journal ahead");
                let _ = active.file.set_len(from);
                active.written = from;
                active.ahead_failed = true;
                None
            }
        }
    }

    /// Writes `buf` at the active segment's end (opened by [`Writer::segment_for`]). On
    /// failure, cuts what part reached the file so that the next write follows whole records.
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let active = self.active.as_mut().expect("segment_for opened a segment");
        let start = active.end;
        match active.file.write_all_at(buf, start) {
            Ok(()) => {
                active.end += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.cut(start);
                Err(e)
            }
        }
    }

    /// Cuts the active segment back to `at`; if even that fails, the segment is abandoned.
    fn cut(&mut self, at: u64) {
        if let Some(active) = self.active.as_mut() {
            if active.file.set_len(at).is_ok() {
                active.end = at;
                active.written = at;
            } else {
                self.active = None;
            }
        }
    }

    /// The segment to append `incoming` bytes to, opening a new one when there is none, the
    /// last sync failed, or the current one is full.
    fn segment_for(
        &mut self,
        shared: &Shared,
        incoming: u64,
    ) -> Result<(u64, Arc<File>, u64), JournalError> {
        let failed = std::mem::take(&mut shared.sync.lock().unwrap().failed);
        if let Some(a) = &self.active
            && !failed
            && (a.end + incoming <= SEGMENT_BYTES || a.end == MAGIC.len() as u64)
        {
            return Ok((a.number, a.file.clone(), a.end));
        }
        if let Some(old) = self.active.take() {
            // the old segment's zeros written ahead are not needed any more
            let _ = old.file.set_len(old.end);
        }
        let number = self.next_number;
        let path = segment_path(&shared.dir, number);
        let created = (|| -> std::io::Result<File> {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            file.write_all(MAGIC)?;
            file.sync_all()?;
            // the new name must be durable before a put in it is acknowledged
            File::open(&shared.dir)?.sync_all()?;
            Ok(file)
        })();
        let file = match created {
            Ok(file) => Arc::new(file),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(JournalError(format!(
                    "cannot start spool segment {}: {e}",
                    path.display()
                )));
            }
        };
        self.next_number += 1;
        shared.index.lock().unwrap().segments.insert(
            number,
            Segment {
                file: file.clone(),
                live: 0,
                live_bytes: 0,
            },
        );
        let size = MAGIC.len() as u64;
        self.active = Some(Active::new(number, file.clone(), size, size));
        Ok((number, file, size))
    }

    /// Writes `puts`, the queued releases and `attempt` with one `pwrite`, then hands the
    /// puts' waiters to the syncer. A failure is told to the puts' waiters and returned.
    fn write_batch(
        &mut self,
        shared: &Shared,
        puts: Vec<Put<'_>>,
        attempt: Option<(MailId, u32)>,
    ) -> Result<(), JournalError> {
        let mut releases = std::mem::take(&mut self.pending_releases);
        releases.append(&mut shared.releases.lock().unwrap());
        // releases of mails the journal does not hold (a refused put) write nothing
        {
            let index = shared.index.lock().unwrap();
            releases.retain(|id| index.slots.contains_key(id));
        }
        if puts.is_empty() && releases.is_empty() && attempt.is_none() {
            return Ok(());
        }
        let incoming: usize = puts
            .iter()
            .map(|(_, _, p, _)| HEADER + PUT_BODY + p.len())
            .sum::<usize>()
            + releases.len() * (HEADER + RELEASE_BODY)
            + attempt.map_or(0, |_| HEADER + record::ATTEMPT_BODY);
        let (number, file, start) = match self.segment_for(shared, incoming as u64) {
            Ok(segment) => segment,
            Err(e) => {
                self.refuse(puts, releases, &e);
                return Err(e);
            }
        };
        let mut buf = Vec::with_capacity(incoming);
        let mut slots = Vec::with_capacity(puts.len());
        let mut waiters = Vec::with_capacity(puts.len());
        for (id, due_ms, payload, done) in puts {
            let offset = start + buf.len() as u64;
            let body_len = append_put(&mut buf, id, due_ms, payload);
            slots.push((
                id,
                Slot {
                    segment: number,
                    offset,
                    body_len,
                    due_ms,
                    attempts: 0,
                },
            ));
            waiters.push(done);
        }
        for &id in &releases {
            append_release(&mut buf, id);
        }
        if let Some((id, attempts)) = attempt {
            append_attempt(&mut buf, id, attempts);
        }
        if let Err(e) = self.append(&buf) {
            let error = JournalError(format!("writing the spool journal: {e}"));
            tracing::error!(error = %error, "spool: journal write failed; the batch is refused");
            let puts = slots
                .into_iter()
                .zip(waiters)
                .map(|((id, _), done)| (id, done));
            self.pending_releases = releases;
            for (_, done) in puts {
                done(Err(error.clone()));
            }
            return Err(error);
        }
        {
            let mut index = shared.index.lock().unwrap();
            for (id, slot) in slots {
                index.place(id, slot);
            }
            for id in releases {
                index.forget(id);
            }
            if let Some((id, attempts)) = attempt
                && let Some(slot) = index.slots.get_mut(&id)
            {
                slot.attempts = attempts;
            }
        }
        // before the waiters hear back, so that a caller sees the segments as they are
        drop_dead_head(shared);
        let mut sync = shared.sync.lock().unwrap();
        // the first put wakes a sleeping syncer to set its deadline; later ones only when
        // the batch is due; releases and attempts alone wait for its timer (nobody waits)
        let first = sync.oldest.is_none();
        let awaited = !waiters.is_empty();
        sync.push(SyncWork { file, waiters }, Instant::now());
        let wake = awaited && sync.sleeping && (first || sync.sync_due(shared.open()).is_none());
        drop(sync);
        if wake {
            shared.sync_ready.notify_one();
        }
        Ok(())
    }

    fn refuse(&mut self, puts: Vec<Put<'_>>, releases: Vec<MailId>, error: &JournalError) {
        tracing::error!(error = %error, "spool: journal unavailable; the batch is refused");
        self.pending_releases = releases;
        for (_, _, _, done) in puts {
            done(Err(error.clone()));
        }
    }

    /// Copies the live mails of a mostly dead oldest segment to the active one, syncs, and
    /// lets [`drop_dead_head`] delete it.
    fn compact(&mut self, shared: &Shared) -> bool {
        let (head, file, moving) = {
            let index = shared.index.lock().unwrap();
            if index.segments.len() <= COMPACT_AFTER_SEGMENTS {
                return false;
            }
            let (&head, segment) = index.segments.first_key_value().expect("not empty");
            if segment.live == 0 || segment.live_bytes > SEGMENT_BYTES / 8 {
                return false;
            }
            let moving: Vec<(MailId, Slot)> = index
                .slots
                .iter()
                .filter(|(_, s)| s.segment == head)
                .map(|(id, s)| (*id, *s))
                .collect();
            (head, segment.file.clone(), moving)
        };
        let mut buf = Vec::new();
        let mut moved = Vec::new();
        for (id, slot) in moving {
            let mut record = vec![0u8; HEADER + slot.body_len as usize];
            if file.read_exact_at(&mut record, slot.offset).is_err() {
                return false;
            }
            moved.push((id, buf.len(), slot));
            buf.extend_from_slice(&record);
            if slot.attempts > 0 {
                // the count lives in records of later segments too, but those may go first
                append_attempt(&mut buf, id, slot.attempts);
            }
        }
        let Ok((number, active, start)) = self.segment_for(shared, buf.len() as u64) else {
            return false;
        };
        if number == head {
            return false;
        }
        if self.append(&buf).is_err() {
            return false;
        }
        if active.sync_data().is_err() {
            self.cut(start);
            return false;
        }
        let mut index = shared.index.lock().unwrap();
        let count = moved.len();
        for (id, at, slot) in moved {
            // a newer put or a release since the copy was taken wins
            if let Some(current) = index.slots.get(&id).filter(|s| s.segment == head) {
                let attempts = current.attempts;
                index.place(
                    id,
                    Slot {
                        segment: number,
                        offset: start + at as u64,
                        attempts,
                        ..slot
                    },
                );
            }
        }
        tracing::info!(
            segment = head,
            mails = count,
            "spool: compacted the oldest journal segment"
        );
        true
    }
}

fn sync_loop(shared: &Shared) {
    loop {
        let (work, closing) = {
            let mut sync = shared.sync.lock().unwrap();
            if sync.work.is_empty() && !sync.closed {
                sync = sleep(shared, sync, RELEASE_DELAY);
            }
            while let Some(due) = sync.sync_due(shared.open()) {
                let Some(left) = due.checked_duration_since(Instant::now()) else {
                    break;
                };
                sync = sleep(shared, sync, left);
            }
            (sync.take(), sync.closed)
        };
        let mut work = work;
        // releases no put carried: written here, at most RELEASE_DELAY late
        if work.is_empty() && !shared.releases.lock().unwrap().is_empty() {
            // a failure keeps the releases queued for the next batch
            let _ = shared
                .writer
                .lock()
                .unwrap()
                .write_batch(shared, Vec::new(), None);
            work = shared.sync.lock().unwrap().take();
        }
        if shared.index.lock().unwrap().segments.len() > COMPACT_AFTER_SEGMENTS
            && shared.writer.lock().unwrap().compact(shared)
        {
            drop_dead_head(shared);
        }
        if work.is_empty() {
            if closing {
                return;
            }
            zero_ahead(shared);
            continue;
        }
        let mut outcomes: Vec<(*const File, Result<(), JournalError>)> = Vec::new();
        for item in &work {
            let key = Arc::as_ptr(&item.file);
            if outcomes.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let outcome = item
                .file
                .sync_data()
                .map_err(|e| JournalError(format!("syncing the spool journal: {e}")));
            if let Err(e) = &outcome {
                tracing::error!(error = %e, "spool: journal sync failed; the writes it covered are refused");
                shared.sync.lock().unwrap().failed = true;
            }
            outcomes.push((key, outcome));
        }
        for item in work {
            let key = Arc::as_ptr(&item.file);
            let outcome = outcomes
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, o)| o.clone())
                .expect("every file was synced");
            for done in item.waiters {
                done(outcome.clone());
            }
        }
        if !closing {
            zero_ahead(shared);
        }
    }
}

/// Waits on `sync_ready` for at most `timeout`, flagged so that puts know to wake the syncer.
fn sleep<'a>(
    shared: &'a Shared,
    mut sync: std::sync::MutexGuard<'a, SyncQueue>,
    timeout: Duration,
) -> std::sync::MutexGuard<'a, SyncQueue> {
    sync.sleeping = true;
    let mut sync = shared.sync_ready.wait_timeout(sync, timeout).unwrap().0;
    sync.sleeping = false;
    sync
}

/// Keeps the active segment written ahead (see [`ZEROED_AHEAD`]) between syncs, so that
/// no put waits for it; the zeros are synced here too, before a put's sync would carry them.
fn zero_ahead(shared: &Shared) {
    let (file, drop) = {
        let mut writer = shared.writer.lock().unwrap();
        (writer.zero_ahead(), writer.cache_to_drop())
    };
    if let Some(file) = file {
        let _ = file.sync_data();
    }
    if let Some((file, from, to)) = drop {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on an open descriptor
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                from as libc::off_t,
                (to - from) as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            )
        };
    }
}

#[cfg(test)]
mod attempt_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (Journal, Vec<(MailId, u64)>) {
        let (j, r) = Journal::open(dir).unwrap();
        (j, r.into_iter().map(|r| (r.id, r.due_ms)).collect())
    }

    #[tokio::test]
    async fn puts_survive_reopen_and_releases_end_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (j, found) = open(dir.path());
            assert!(found.is_empty());
            j.put(1, 0, b"one".to_vec()).await.unwrap();
            j.put(2, 0, b"two".to_vec()).await.unwrap();
            j.put(3, 99, b"three".to_vec()).await.unwrap();
            j.release(2);
            j.put(1, 0, b"one again".to_vec()).await.unwrap();
            assert_eq!(j.read(1).unwrap().unwrap(), b"one again");
        }
        let (j, found) = open(dir.path());
        assert_eq!(found, vec![(1, 0), (3, 99)]);
        assert_eq!(j.read(1).unwrap().unwrap(), b"one again");
        assert_eq!(j.read(3).unwrap().unwrap(), b"three");
        assert!(j.read(2).unwrap().is_none());
    }

    #[test]
    fn a_sync_waits_only_for_puts_that_can_come() {
        let file = Arc::new(tempfile::tempfile().unwrap());
        let puts = |n: usize| SyncWork {
            file: file.clone(),
            waiters: (0..n).map(|_| Box::new(|_| ()) as Done).collect(),
        };
        let t0 = Instant::now();
        let mut queue = SyncQueue::default();
        assert_eq!(queue.sync_due(5), None, "nothing waits");
        queue.push(puts(0), t0);
        assert_eq!(queue.sync_due(5), None, "releases alone wait for nothing");
        queue.push(puts(1), t0);
        assert_eq!(
            queue.sync_due(1),
            None,
            "the one open transaction is this put's"
        );
        assert_eq!(
            queue.sync_due(3),
            Some(t0 + GATHER_WAIT),
            "two mails are on their way"
        );
        queue.push(puts(GATHER_PUTS - 1), t0 + Duration::from_micros(10));
        assert_eq!(queue.sync_due(100), None, "a full batch goes at once");
        assert_eq!(queue.take().len(), 3);
        assert_eq!(queue.sync_due(100), None, "taken: nothing waits");
    }

    #[tokio::test]
    async fn a_transaction_that_never_ends_holds_a_put_back_no_longer_than_the_gather_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = open(dir.path());
        let _stalled = j.incoming(); // a client that sent MAIL and stopped talking
        let _mine = j.incoming();
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), j.put(1, 0, b"mail".to_vec()))
            .await
            .expect("the put is synced although the other mail never comes")
            .unwrap();
        assert!(
            started.elapsed() >= GATHER_WAIT,
            "the sync waited for the other mail"
        );
        drop(j);
        let (_, found) = open(dir.path());
        assert_eq!(found, vec![(1, 0)]);
    }

    fn on_tmpfs(dir: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: statfs fills the zeroed struct it is given for a NUL-terminated path
        unsafe {
            let mut fs: libc::statfs = std::mem::zeroed();
            libc::statfs(path.as_ptr(), &mut fs) == 0 && fs.f_type == libc::TMPFS_MAGIC
        }
    }

    /// Which of `file`'s first `len` bytes' pages are in the page cache.
    fn resident_pages(file: &File, len: usize) -> Vec<bool> {
        use std::os::fd::AsRawFd;
        let pages = len.div_ceil(4096);
        let mut vec = vec![0u8; pages];
        // SAFETY: a read-only shared mapping of an open file, unmapped before returning;
        // mincore writes one byte per page into `vec`, which holds that many
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            assert_eq!(libc::mincore(map, len, vec.as_mut_ptr()), 0);
            libc::munmap(map, len);
        }
        vec.into_iter().map(|b| b & 1 == 1).collect()
    }

    #[tokio::test]
    async fn the_page_cache_keeps_only_the_journals_recent_end() {
        let dir = tempfile::tempdir().unwrap();
        if on_tmpfs(dir.path()) {
            eprintln!("skipped: tmpfs pages cannot leave the cache (they are the file)");
            return;
        }
        let (j, _) = open(dir.path());
        let mail = vec![b'm'; 4000];
        let count = (KEEP_CACHED + 4 * ZEROED_AHEAD) / 4000;
        for id in 0..count {
            j.put(id, 0, mail.clone()).await.unwrap();
        }
        let seg = File::open(segment_path(dir.path(), 1)).unwrap();
        let end = (count * 4000) as usize;
        let resident = resident_pages(&seg, end);
        let dropped = resident.iter().take_while(|r| !**r).count() * 4096;
        assert!(
            dropped as u64 >= end as u64 - KEEP_CACHED - ZEROED_AHEAD,
            "{dropped} of {end} bytes left the cache"
        );
        assert!(
            resident[resident.len() - 8..].iter().all(|r| *r),
            "the last mails stay cached for the spooler"
        );
        // what left the cache is on disk: read back, and found again after a restart
        assert_eq!(j.read(0).unwrap().unwrap(), mail);
        drop(j);
        let (_, found) = open(dir.path());
        assert_eq!(found.len() as u64, count);
    }

    /// A segment's bytes without the zeros written ahead.
    fn records_of(seg: &Path) -> Vec<u8> {
        let mut bytes = std::fs::read(seg).unwrap();
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        bytes
    }

    #[tokio::test]
    async fn zeros_written_ahead_are_a_clean_end() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (j, _) = open(dir.path());
            j.put(1, 0, b"first".to_vec()).await.unwrap();
            // the syncer writes ahead once the put is acknowledged
            eventually_zeroed(&segment_path(dir.path(), 1));
            j.put(2, 0, b"second".to_vec()).await.unwrap();
        }
        let seg = segment_path(dir.path(), 1);
        assert!(std::fs::metadata(&seg).unwrap().len() > records_of(&seg).len() as u64);
        {
            let (j, found) = open(dir.path());
            assert_eq!(found, vec![(1, 0), (2, 0)]);
            assert!(!dir.path().join("corrupt").exists());
            // appends go on where the records end, not after the zeros
            j.put(3, 0, b"third".to_vec()).await.unwrap();
        }
        let (j, found) = open(dir.path());
        assert_eq!(found, vec![(1, 0), (2, 0), (3, 0)]);
        assert_eq!(j.read(3).unwrap().unwrap(), b"third");
        assert_eq!(j.segments(), 1);
    }

    fn eventually_zeroed(seg: &Path) {
        for _ in 0..200 {
            if std::fs::metadata(seg).unwrap().len() >= ZEROED_AHEAD {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{} was not written ahead", seg.display());
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_appends_go_on() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (j, _) = open(dir.path());
            j.put(1, 0, b"whole".to_vec()).await.unwrap();
        }
        let seg = segment_path(dir.path(), 1);
        let mut bytes = records_of(&seg);
        let whole = bytes.len();
        // half of a second record, as a crash mid-write leaves it
        let mut torn = Vec::new();
        append_put(&mut torn, 2, 0, b"never acknowledged");
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        // written into the zeros ahead, as the journal writes
        bytes.extend_from_slice(&[0; 1000]);
        std::fs::write(&seg, &bytes).unwrap();
        {
            let (j, found) = open(dir.path());
            assert_eq!(found, vec![(1, 0)]);
            assert_eq!(std::fs::metadata(&seg).unwrap().len(), whole as u64);
            j.put(3, 0, b"after".to_vec()).await.unwrap();
        }
        let (j, found) = open(dir.path());
        assert_eq!(found, vec![(1, 0), (3, 0)]);
        assert_eq!(j.read(3).unwrap().unwrap(), b"after");
    }

    #[tokio::test]
    async fn a_flipped_bit_is_reported_not_processed() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = open(dir.path());
        j.put(7, 0, b"payload".to_vec()).await.unwrap();
        let seg = segment_path(dir.path(), 1);
        let mut bytes = records_of(&seg);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&seg, &bytes).unwrap();
        let err = j.read(7).unwrap_err();
        assert!(err.0.starts_with("corrupt:"), "{err}");
    }

    #[tokio::test]
    async fn finished_segments_are_deleted_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = open(dir.path());
        let big = vec![b'x'; (SEGMENT_BYTES / 3) as usize];
        j.put(1, 0, big.clone()).await.unwrap();
        j.put(2, 0, big.clone()).await.unwrap();
        j.put(3, 0, big.clone()).await.unwrap();
        assert_eq!(j.segments(), 2);
        // releasing the newest segment's mail must not delete it before the older one
        j.release(3);
        j.put(4, 0, b"small".to_vec()).await.unwrap();
        assert_eq!(j.segments(), 2);
        j.release(1);
        j.release(2);
        j.put(5, 0, b"small".to_vec()).await.unwrap();
        assert_eq!(j.segments(), 1);
        drop(j);
        let (_, found) = open(dir.path());
        assert_eq!(found, vec![(4, 0), (5, 0)]);
    }

    #[tokio::test]
    async fn a_long_lived_mail_does_not_pin_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = open(dir.path());
        j.put(1, 5, b"waits for a retry".to_vec()).await.unwrap();
        let big = vec![b'x'; (SEGMENT_BYTES / 2) as usize];
        for id in 10..22 {
            j.put(id, 0, big.clone()).await.unwrap();
            j.release(id);
        }
        j.put(99, 0, b"flush".to_vec()).await.unwrap();
        assert!(
            j.segments() <= COMPACT_AFTER_SEGMENTS + 1,
            "{}",
            j.segments()
        );
        assert_eq!(j.read(1).unwrap().unwrap(), b"waits for a retry");
        drop(j);
        let (_, found) = open(dir.path());
        assert_eq!(found, vec![(99, 0), (1, 5)]);
    }

    #[test]
    fn a_foreign_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(segment_path(dir.path(), 1), b"not a segment at all").unwrap();
        let err = Journal::open(dir.path()).err().unwrap();
        assert!(err.0.contains("000000000001.seg"), "{err}");
    }
}
