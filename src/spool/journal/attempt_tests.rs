//! Attempt counts: durable before processing, reset by a new version of the mail, carried
//! by compaction, and old-format segments still read.

use std::path::Path;

use super::record::{MAGIC_V1, append_put};
use super::*;

fn attempts_of(dir: &Path) -> Vec<(MailId, u32)> {
    let (_j, found) = Journal::open(dir).unwrap();
    found.into_iter().map(|r| (r.id, r.attempts)).collect()
}

#[tokio::test]
async fn attempts_survive_a_reopen_and_a_new_version_resets_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.put(1, 0, b"poison".to_vec()).await.unwrap();
        j.put(2, 0, b"retried".to_vec()).await.unwrap();
        assert_eq!(j.begin_attempt(1).unwrap(), 1);
        assert_eq!(j.begin_attempt(1).unwrap(), 2);
        assert_eq!(j.begin_attempt(2).unwrap(), 1);
        // a processing failure stores the mail again: its unfinished starts are over
        j.put(2, 5, b"retried".to_vec()).await.unwrap();
        assert!(j.begin_attempt(3).is_err(), "not stored");
        // no sync awaited: dropping without close is what a crash leaves (minus the kernel)
        std::mem::forget(j);
    }
    assert_eq!(attempts_of(dir.path()), vec![(1, 2), (2, 0)]);
    let (j, _) = Journal::open(dir.path()).unwrap();
    assert_eq!(j.begin_attempt(1).unwrap(), 3);
}

#[tokio::test]
async fn compaction_carries_the_count_forward() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.put(1, 5, b"long-lived".to_vec()).await.unwrap();
        j.begin_attempt(1).unwrap();
        j.begin_attempt(1).unwrap();
        let big = vec![b'x'; (SEGMENT_BYTES / 2) as usize];
        for id in 10..22 {
            j.put(id, 0, big.clone()).await.unwrap();
            j.release(id);
        }
        j.put(99, 0, b"flush".to_vec()).await.unwrap();
        assert!(j.segments() <= COMPACT_AFTER_SEGMENTS + 1);
        assert!(
            !segment_path(dir.path(), 1).exists(),
            "the first segment was compacted away"
        );
    }
    assert_eq!(attempts_of(dir.path()), vec![(99, 0), (1, 2)]);
}

#[tokio::test]
async fn a_segment_of_the_previous_format_is_read_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = MAGIC_V1.to_vec();
    append_put(&mut old, 4, 0, &[b"from 0.1"]);
    std::fs::write(segment_path(dir.path(), 1), &old).unwrap();
    {
        let (j, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(j.begin_attempt(4).unwrap(), 1);
        assert_eq!(j.read(4).unwrap().unwrap(), b"from 0.1");
    }
    assert_eq!(std::fs::read(segment_path(dir.path(), 1)).unwrap(), old);
    assert!(
        std::fs::read(segment_path(dir.path(), 2))
            .unwrap()
            .starts_with(MAGIC)
    );
    assert_eq!(attempts_of(dir.path()), vec![(4, 1)]);
}

#[test]
fn a_payload_beyond_the_record_length_is_refused_before_writing() {
    // a payload cannot be that large in a test; the check reads only its length
    let err = payload_fits(9, MAX_PAYLOAD + 1).unwrap_err();
    assert!(
        matches!(err, JournalError::TooLarge { .. })
            && err.to_string().contains("do not fit in a journal record"),
        "{err}"
    );
    assert!(payload_fits(9, MAX_PAYLOAD).is_ok());
}
