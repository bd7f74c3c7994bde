//! Journal behaviour: reopen, group commit, page cache, torn and corrupt records, segment
//! deletion and compaction.

use super::record::append_put;
use super::sync::{Done, SyncQueue, SyncWork};
use std::time::Instant;

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
    append_put(&mut torn, 2, 0, &[b"never acknowledged"]);
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
    assert!(
        matches!(err, JournalError::Corrupt(_)) && err.to_string().starts_with("corrupt:"),
        "{err}"
    );
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
    assert!(err.to_string().contains("000000000001.seg"), "{err}");
}
