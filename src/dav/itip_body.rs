//! The JSON body of an `esn-itip` request, streamed: the same bytes as
//! [`ItipDocument::render`], produced a slice of the calendar at a time while the request is
//! sent. A thousand recipients of a 2.6 MB invitation, eight of them delivered at once,
//! would otherwise hold eight rendered copies of the escaped calendar; the stream holds one
//! slice per request, the calendar text itself being shared by the jobs.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::ical_json::ItipDocument;

/// Bytes of calendar text escaped per frame.
const SLICE: usize = 64 * 1024;

/// `{"ical":"` — how [`ItipDocument::render`] starts (the `ical` field comes first).
const HEAD: &[u8] = br#"{"ical":""#;

/// An [`http_body::Body`] yielding `{"ical":"`, the escaped calendar slice by slice, then the
/// other fields; its exact length is known up front, so the request carries a
/// `Content-Length` as the rendered body did.
pub struct ItipBody {
    ical: Arc<str>,
    /// Where the next slice of `ical` starts; `None` before the head is sent.
    at: Option<usize>,
    /// The fields after `ical` (`",` to `}`); `None` once sent.
    tail: Option<Bytes>,
    remaining: u64,
}

impl ItipBody {
    /// The body of `document` with `ical` as its calendar.
    pub fn new(document: &ItipDocument, ical: Arc<str>) -> ItipBody {
        let empty = document.render("");
        debug_assert!(empty.starts_with(HEAD), "the ical field comes first");
        let tail = Bytes::copy_from_slice(&empty[HEAD.len()..]);
        let escaped: u64 = slices(&ical).map(|s| escaped(s).len() as u64).sum();
        let remaining = HEAD.len() as u64 + escaped + tail.len() as u64;
        ItipBody {
            ical,
            at: None,
            tail: Some(tail),
            remaining,
        }
    }

    fn next_frame(&mut self) -> Option<Bytes> {
        let frame = self.render_next();
        if let Some(bytes) = &frame {
            self.remaining -= bytes.len() as u64;
        }
        frame
    }

    fn render_next(&mut self) -> Option<Bytes> {
        let Some(at) = self.at else {
            self.at = Some(0);
            return Some(Bytes::from_static(HEAD));
        };
        if let Some(slice) = slices(&self.ical[at..]).next() {
            self.at = Some(at + slice.len());
            return Some(Bytes::from(escaped(slice)));
        }
        self.tail.take()
    }
}

/// `text` cut into slices of about [`SLICE`] bytes, on character boundaries.
fn slices(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = SLICE.min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        let (slice, after) = rest.split_at(end);
        rest = after;
        Some(slice)
    })
}

/// `slice` as a JSON string's content (escaped as serde_json escapes it, without quotes):
/// JSON escapes character by character, so the slices' escapes put together are the
/// whole text's.
fn escaped(slice: &str) -> Vec<u8> {
    let mut quoted = serde_json::to_vec(slice).expect("strings serialise");
    quoted.pop();
    quoted.remove(0);
    quoted
}

impl http_body::Body for ItipBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(
            self.get_mut()
                .next_frame()
                .map(|bytes| Ok(Frame::data(bytes))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.tail.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> ItipDocument {
        ItipDocument {
            sender: "alice@example.org".into(),
            recipient: "bob@example.org".into(),
            reply_to: "alice@example.org".into(),
            uid: Some("uid-1".into()),
            sequence: "0".into(),
            dtstamp: None,
            method: Some("REQUEST".into()),
            recurrence_id: None,
        }
    }

    fn streamed(body: &mut ItipBody) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(bytes) = body.next_frame() {
            out.extend_from_slice(&bytes);
        }
        out
    }

    #[test]
    fn streams_the_bytes_render_gives_with_their_exact_length() {
        // slices end inside multi-byte characters and between the two bytes of CRLF
        let line = "DESCRIPTION:caf\u{e9} \"quoted\" \\ tab\there \u{1f600}\u{1}\r\n";
        let ical: Arc<str> = Arc::from(format!(
            "BEGIN:VCALENDAR\r\n{}END:VCALENDAR\r\n",
            line.repeat(3 * SLICE / line.len() + 7)
        ));
        let document = document();
        let mut body = ItipBody::new(&document, ical.clone());
        let announced = http_body::Body::size_hint(&body).exact();
        let bytes = streamed(&mut body);
        assert_eq!(bytes, document.render(&ical));
        assert_eq!(announced, Some(bytes.len() as u64));
        assert!(http_body::Body::is_end_stream(&body));
    }

    #[test]
    fn an_empty_calendar_streams_too() {
        let document = document();
        let mut body = ItipBody::new(&document, Arc::from(""));
        assert_eq!(streamed(&mut body), document.render(""));
    }
}
