//! The syncer: one thread that makes written records durable (group commit) and keeps the
//! active segment written ahead.

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    COMPACT_AFTER_SEGMENTS, GATHER_PUTS, GATHER_WAIT, JournalError, RELEASE_DELAY, Shared,
    drop_dead_head,
};
use crate::sync::Locked;

pub(super) type Done = Box<dyn FnOnce(Result<(), JournalError>) + Send>;

/// Writes waiting for the syncer: the file to sync and who to tell.
pub(super) struct SyncWork {
    pub(super) file: Arc<File>,
    pub(super) waiters: Vec<Done>,
}

#[derive(Default)]
pub(super) struct SyncQueue {
    pub(super) work: Vec<SyncWork>,
    /// When the oldest put in `work` was written.
    pub(super) oldest: Option<Instant>,
    /// The syncer waits on `sync_ready`: only then does a put need to wake it.
    pub(super) sleeping: bool,
    pub(super) closed: bool,
    /// Set by the syncer after a failed sync: the writer starts a new segment, since what
    /// the kernel kept of the old one's tail is unknown.
    pub(super) failed: bool,
}

impl SyncQueue {
    pub(super) fn push(&mut self, work: SyncWork, now: Instant) {
        if !work.waiters.is_empty() {
            self.oldest.get_or_insert(now);
        }
        self.work.push(work);
    }

    /// Everything written so far, for one sync.
    pub(super) fn take(&mut self) -> Vec<SyncWork> {
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
    pub(super) fn sync_due(&self, open: usize) -> Option<Instant> {
        let oldest = self.oldest?;
        let pending = self.pending();
        if open <= pending || pending >= GATHER_PUTS || self.closed {
            return None;
        }
        Some(oldest + GATHER_WAIT)
    }
}

pub(super) fn sync_loop(shared: &Shared) {
    loop {
        let (work, closing) = {
            let mut sync = shared.sync.locked();
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
        if work.is_empty() && !shared.releases.locked().is_empty() {
            // a failure keeps the releases queued for the next batch
            let _ = shared.writer.locked().write_batch(shared, Vec::new(), None);
            work = shared.sync.locked().take();
        }
        if shared.index.locked().segments.len() > COMPACT_AFTER_SEGMENTS
            && shared.writer.locked().compact(shared)
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
                .map_err(|e| JournalError::io("syncing the spool journal", e));
            if let Err(e) = &outcome {
                tracing::error!(error = %e, "spool: journal sync failed; the writes it covered are refused");
                shared.sync.locked().failed = true;
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
        let mut writer = shared.writer.locked();
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
