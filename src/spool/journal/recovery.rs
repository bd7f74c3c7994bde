//! Recovery: replaying a segment into the index when the journal is opened.

use std::path::Path;
use std::sync::Arc;

use super::record::{ATTEMPT, MAGIC, MAGIC_V1, PUT, parse_record, u32_at, u64_at};
use super::{Index, JournalError, Segment, Slot, segment_path};

/// Replays one segment into `index`; returns where its records end, or `None` when it
/// cannot take more appends (torn or corrupt), in which case the next append starts a new
/// segment.
pub(super) fn recover_segment(
    dir: &Path,
    number: u64,
    newest: bool,
    index: &mut Index,
) -> Result<Option<u64>, JournalError> {
    let path = segment_path(dir, number);
    let bytes = std::fs::read(&path)
        .map_err(|e| JournalError::io(format!("reading {}", path.display()), e))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| JournalError::io(format!("opening {}", path.display()), e))?;
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
        return Err(JournalError::Corrupt(format!(
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
                    .map_err(|e| JournalError::io(format!("truncating {}", path.display()), e))?;
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
