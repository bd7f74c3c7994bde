//! The journal's record format.
//!
//! Record: `len u32 | crc32 u32 | body`, integers little-endian, crc over the body. Bodies:
//! - put: `kind u8 | id u64 | due u64 | payload`
//! - release: `kind u8 | id u64`
//! - attempt: `kind u8 | id u64 | attempts u32`, the number of times processing of the
//!   mail's current version was started (written before each start, see
//!   [`super::Journal::begin_attempt`]).
//!
//! A segment starts with [`MAGIC`]; segments of version 1 (no attempt records) are still
//! read, but never appended to, so that an older binary opening the journal refuses a
//! segment it cannot read ("not a mailetd spool segment") instead of cutting it as torn.

use crate::mail::MailId;

/// First bytes of every segment file written by this version.
pub const MAGIC: &[u8; 16] = b"mailetd-spool-2\n";
/// First bytes of segments written before attempt records existed; read, not appended to.
pub const MAGIC_V1: &[u8; 16] = b"mailetd-spool-1\n";

pub(super) const PUT: u8 = 1;
pub(super) const RELEASE: u8 = 2;
pub(super) const ATTEMPT: u8 = 3;
pub(super) const HEADER: usize = 8;
pub(super) const PUT_BODY: usize = 17;
pub(super) const RELEASE_BODY: usize = 9;
pub(super) const ATTEMPT_BODY: usize = 13;

/// Largest payload a put can carry: the record length is a `u32`. A longer one is refused
/// before anything is written (cutting it to 32 bits would acknowledge a mail that recovery
/// then reads as a torn record and drops).
pub const MAX_PAYLOAD: usize = u32::MAX as usize - PUT_BODY;

/// `(body, total record length)` of the record at the start of `bytes`, if it is whole and
/// its checksum matches.
pub(super) fn parse_record(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(HEADER..HEADER + len)?;
    let well_formed = match body.first() {
        Some(&PUT) => len >= PUT_BODY,
        Some(&RELEASE) => len == RELEASE_BODY,
        Some(&ATTEMPT) => len == ATTEMPT_BODY,
        _ => false,
    };
    (well_formed && crc32fast::hash(body) == crc).then_some((body, HEADER + len))
}

pub(super) fn u64_at(body: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(body[at..at + 8].try_into().expect("length checked"))
}

pub(super) fn u32_at(body: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(body[at..at + 4].try_into().expect("length checked"))
}

/// Appends a put record whose payload is `payload`'s parts put together; returns its body
/// length. The caller checked the payload against
/// [`MAX_PAYLOAD`].
pub(super) fn append_put(buf: &mut Vec<u8>, id: MailId, due_ms: u64, payload: &[&[u8]]) -> u32 {
    let payload_len: usize = payload.iter().map(|p| p.len()).sum();
    let body_len = u32::try_from(PUT_BODY + payload_len).expect("checked against MAX_PAYLOAD");
    let start = buf.len();
    buf.extend_from_slice(&body_len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(PUT);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&due_ms.to_le_bytes());
    for part in payload {
        buf.extend_from_slice(part);
    }
    seal(buf, start);
    body_len
}

pub(super) fn append_release(buf: &mut Vec<u8>, id: MailId) {
    let start = buf.len();
    buf.extend_from_slice(&(RELEASE_BODY as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(RELEASE);
    buf.extend_from_slice(&id.to_le_bytes());
    seal(buf, start);
}

pub(super) fn append_attempt(buf: &mut Vec<u8>, id: MailId, attempts: u32) {
    let start = buf.len();
    buf.extend_from_slice(&(ATTEMPT_BODY as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(ATTEMPT);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&attempts.to_le_bytes());
    seal(buf, start);
}

fn seal(buf: &mut [u8], start: usize) {
    let crc = crc32fast::hash(&buf[start + HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_round_trips_and_a_bad_length_is_refused() {
        let mut buf = Vec::new();
        append_put(&mut buf, 7, 9, &[b"ma", b"il"]);
        append_attempt(&mut buf, 7, 3);
        append_release(&mut buf, 7);
        let (put, len) = parse_record(&buf).unwrap();
        assert_eq!((put[0], u64_at(put, 1), u64_at(put, 9)), (PUT, 7, 9));
        let (attempt, len2) = parse_record(&buf[len..]).unwrap();
        assert_eq!((attempt[0], u32_at(attempt, 9)), (ATTEMPT, 3));
        let (release, _) = parse_record(&buf[len + len2..]).unwrap();
        assert_eq!(release[0], RELEASE);
        // an attempt record claiming another length is damage, not a record
        let mut bad = Vec::new();
        append_attempt(&mut bad, 1, 1);
        bad[0] = ATTEMPT_BODY as u8 + 1;
        assert!(parse_record(&bad).is_none());
    }
}
