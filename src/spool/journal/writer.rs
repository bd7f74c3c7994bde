//! The append side: batches of records written into the active segment, new segments,
//! and compaction of a mostly dead oldest segment.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use super::record::{
    self, HEADER, MAGIC, PUT_BODY, RELEASE_BODY, append_attempt, append_put, append_release,
};
use super::sync::{Done, SyncWork};
use super::{
    COMPACT_AFTER_SEGMENTS, Index, JournalError, KEEP_CACHED, SEGMENT_BYTES, Segment, Shared, Slot,
    ZEROED_AHEAD, drop_dead_head, segment_path,
};
use crate::mail::MailId;
use crate::sync::Locked;

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
pub(super) struct Writer {
    /// `None` until the next write opens a segment.
    active: Option<Active>,
    next_number: u64,
    /// Releases whose write failed, tried again with the next batch.
    pending_releases: Vec<MailId>,
    /// The previous batch's buffer, kept for the next one: a new one per batch above the
    /// allocator's mmap threshold (128 KiB, src/allocator.rs) was mapped, zeroed page by
    /// page and unmapped again at every batch.
    scratch: Vec<u8>,
}

/// Largest batch buffer kept between batches.
const SCRATCH_KEPT: usize = 4 << 20;

/// A put on its way to the file: id, due time, payload, who to tell.
type Put<'a> = (MailId, u64, &'a [&'a [u8]], Done);

/// Writes zeros over `from..to` of `file`, a slice of a small static buffer at a time (a
/// buffer of the whole megabyte was a megabyte more at every step).
fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = from;
    while at < to {
        let len = (to - at).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..len as usize], at)?;
        at += len;
    }
    Ok(())
}

impl Writer {
    pub(super) fn new(index: &Index, active: Option<(u64, u64)>, next_number: u64) -> Writer {
        let active = active.and_then(|(number, end)| {
            let file = index.segments.get(&number)?.file.clone();
            let written = file.metadata().ok()?.len();
            Some(Active::new(number, file, end, written))
        });
        Writer {
            active,
            next_number,
            pending_releases: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The range of the active segment whose page cache is to be dropped: all but the last
    /// [`KEEP_CACHED`] bytes, a [`ZEROED_AHEAD`] step at a time.
    pub(super) fn cache_to_drop(&mut self) -> Option<(Arc<File>, u64, u64)> {
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
    pub(super) fn zero_ahead(&mut self) -> Option<Arc<File>> {
        let active = self.active.as_mut().filter(|a| !a.ahead_failed)?;
        let from = active.written.max(active.end);
        if from - active.end >= ZEROED_AHEAD || from >= SEGMENT_BYTES {
            return None;
        }
        let to = (from + ZEROED_AHEAD).min(SEGMENT_BYTES);
        match write_zeros(&active.file, from, to) {
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
        let failed = std::mem::take(&mut shared.sync.locked().failed);
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
                return Err(JournalError::io(
                    format!("cannot start spool segment {}", path.display()),
                    e,
                ));
            }
        };
        self.next_number += 1;
        shared.index.locked().segments.insert(
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
    pub(super) fn write_batch(
        &mut self,
        shared: &Shared,
        puts: Vec<Put<'_>>,
        attempt: Option<(MailId, u32)>,
    ) -> Result<(), JournalError> {
        let mut releases = std::mem::take(&mut self.pending_releases);
        releases.append(&mut shared.releases.locked());
        // releases of mails the journal does not hold (a refused put) write nothing
        {
            let index = shared.index.locked();
            releases.retain(|id| index.slots.contains_key(id));
        }
        if puts.is_empty() && releases.is_empty() && attempt.is_none() {
            return Ok(());
        }
        let incoming: usize = puts
            .iter()
            .map(|(_, _, parts, _)| {
                HEADER + PUT_BODY + parts.iter().map(|p| p.len()).sum::<usize>()
            })
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
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.reserve(incoming);
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
        let appended = self.append(&buf);
        if buf.capacity() <= SCRATCH_KEPT {
            self.scratch = buf;
        }
        if let Err(e) = appended {
            let error = JournalError::io("writing the spool journal", e);
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
            let mut index = shared.index.locked();
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
        let mut sync = shared.sync.locked();
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
    pub(super) fn compact(&mut self, shared: &Shared) -> bool {
        let (head, file, moving) = {
            let index = shared.index.locked();
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
        let mut index = shared.index.locked();
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
