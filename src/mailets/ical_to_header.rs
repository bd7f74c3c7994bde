//! `ICALToHeader`: writes the scheduling fields of the mail's first calendar as
//! `X-MEETING-*` headers.
//!
//! ```xml
//! <mailet match="All" class="ICALToHeader">
//!     <attribute>icalendar2</attribute>
//!     <onMailetException>ignore</onMailetException>
//! </mailet>
//! ```
//!
//! `attribute` (default `icalendar`) names the map `ICalendarParser` produced. From its
//! first calendar (first key in order) the headers `X-MEETING-UID`, `X-MEETING-METHOD`,
//! `X-MEETING-RECURRENCE-ID`, `X-MEETING-SEQUENCE` and `X-MEETING-DTSTAMP` are written,
//! each only when the calendar has that field. They go at the end of the header block and
//! replace any header of the same name already there, so a mail that went through another
//! collector does not carry two; the body is untouched. The fields are the first VEVENT's,
//! else the first VTODO's (a task assignment); a calendar with neither (VFREEBUSY,
//! VJOURNAL) gets no headers and a debug line, where James fails the mailet and logs a
//! warning for every such mail.

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::ical;
use crate::mail::{AttributeValue, Mail};
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// The headers written, in this order.
pub const HEADERS: [&str; 5] = [
    "X-MEETING-UID",
    "X-MEETING-METHOD",
    "X-MEETING-RECURRENCE-ID",
    "X-MEETING-SEQUENCE",
    "X-MEETING-DTSTAMP",
];

/// Adds the `X-MEETING-*` headers of the first calendar.
#[derive(Debug)]
pub struct ICALToHeader {
    attribute: String,
}

impl ICALToHeader {
    /// Reads and checks the parameters.
    pub fn build(
        config: &MailetConfig,
        _ctx: &MailetContext,
    ) -> Result<Box<dyn Mailet>, ConfigError> {
        let attribute = match config.get("attribute") {
            None => "icalendar".to_string(),
            Some(_) => config.require("attribute")?.trim().to_string(),
        };
        Ok(Box::new(ICALToHeader { attribute }))
    }
}

#[async_trait]
impl Mailet for ICALToHeader {
    async fn service(&self, mail: &mut Mail, _ctx: &MailetContext) -> Result<(), MailetError> {
        let (key, fields) = match mail.attribute(&self.attribute) {
            None => return Ok(()),
            Some(AttributeValue::Map(calendars)) => match calendars.iter().next() {
                None => return Ok(()),
                // parsed by ICalendarParser: read, not parsed again
                Some((key, AttributeValue::Calendar(calendar))) => {
                    (key.clone(), calendar.facts().fields.clone())
                }
                Some((key, value)) => (
                    key.clone(),
                    ical::scheduling_fields(&value.to_text()).map_err(|e| {
                        anyhow::anyhow!("calendar {key} of mail {}: {e}", mail.name)
                    })?,
                ),
            },
            Some(_) => anyhow::bail!(
                "attribute {} of mail {} is not a map of calendars",
                self.attribute,
                mail.name
            ),
        };
        let Some(fields) = fields else {
            // a VFREEBUSY or VJOURNAL: nothing to write, and nothing wrong with the mail
            tracing::debug!(mail = %mail.name, %key, "no VEVENT or VTODO: no X-MEETING headers");
            return Ok(());
        };
        let values = [
            fields.uid,
            fields.method,
            fields.recurrence_id,
            fields.sequence,
            fields.dtstamp,
        ];
        let headers: Vec<(&str, String)> = HEADERS
            .iter()
            .zip(values)
            .filter_map(|(name, value)| value.map(|v| (*name, v)))
            .collect();
        set_headers_in(&mut mail.message, &headers);
        Ok(())
    }
}

/// Rewrites the header block in place: the body stays where it is (a rebuilt message would
/// be a second copy of a mail that may be 25 MB).
fn set_headers_in(message: &mut Vec<u8>, headers: &[(&str, String)]) {
    let end = crate::mail::header_end(message);
    let block = header_block(message, end, headers);
    message.splice(..end, block);
}

#[cfg(test)]
fn set_headers(message: &[u8], headers: &[(&str, String)]) -> Vec<u8> {
    let mut message = message.to_vec();
    set_headers_in(&mut message, headers);
    message
}

/// The header block (`message[..end]`) rewritten: drops the fields named in `headers` (with
/// their continuation lines) and appends the new ones before the blank line, in the
/// message's line ending.
fn header_block(message: &[u8], end: usize, headers: &[(&str, String)]) -> Vec<u8> {
    let block = &message[..end];
    let bare_lf = block.contains(&b'\n') && !block.windows(2).any(|w| w == b"\r\n");
    let newline: &[u8] = if bare_lf { b"\n" } else { b"\r\n" };
    let mut lines: Vec<&[u8]> = block.split_inclusive(|&b| b == b'\n').collect();
    // the blank line that ends the header block, if there is a body
    let blank = match lines.last() {
        Some(l) if l.iter().all(|b| matches!(b, b'\r' | b'\n')) => lines.pop(),
        _ => None,
    };
    let mut out = Vec::with_capacity(end + 200);
    let mut dropping = false;
    for line in lines {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            dropping = headers.iter().any(|(name, _)| is_field(line, name));
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(newline);
    }
    for (name, value) in headers {
        let value: String = value
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(newline);
    }
    match blank {
        Some(blank) => out.extend_from_slice(blank),
        None if end < message.len() => out.extend_from_slice(newline),
        None => {}
    }
    out
}

fn is_field(line: &[u8], name: &str) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        && line[name.len()..]
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t'))
            .is_some_and(|&b| b == b':')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const MESSAGE: &str = "From: a@example.com\r\nX-Meeting-UID: stale\r\n  continued\r\nSubject: Invitation\r\n\r\nBody stays\r\n";

    fn mail_with(calendars: &[(&str, &str)]) -> Mail {
        let mut mail = Mail::new(None, vec![], MESSAGE.as_bytes().to_vec());
        let map: BTreeMap<_, _> = calendars
            .iter()
            .map(|(k, v)| (k.to_string(), AttributeValue::String(v.to_string())))
            .collect();
        mail.set_attribute("icalendar", AttributeValue::Map(map));
        mail
    }

    async fn run(mail: &mut Mail) -> Result<(), MailetError> {
        let ctx = MailetContext::for_tests(std::env::temp_dir());
        let m = ICALToHeader::build(&MailetConfig::inline("ICALToHeader", &[]), &ctx).unwrap();
        m.service(mail, &ctx).await
    }

    #[tokio::test]
    async fn writes_the_fields_of_the_first_calendar() {
        let mut mail = mail_with(&[
            (
                "a.ics",
                "BEGIN:VCALENDAR\r\nMETHOD:CANCEL\r\nBEGIN:VEVENT\r\nUID:first\r\nSEQUENCE:3\r\n\
                 DTSTAMP:20240110T090000Z\r\nRECURRENCE-ID:20240115T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            ),
            (
                "b.ics",
                "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:second\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            ),
        ]);
        run(&mut mail).await.unwrap();
        assert_eq!(
            String::from_utf8(mail.message).unwrap(),
            "From: a@example.com\r\nSubject: Invitation\r\nX-MEETING-UID: first\r\n\
             X-MEETING-METHOD: CANCEL\r\nX-MEETING-RECURRENCE-ID: 20240115T100000Z\r\n\
             X-MEETING-SEQUENCE: 3\r\nX-MEETING-DTSTAMP: 20240110T090000Z\r\n\r\nBody stays\r\n"
        );
    }

    #[tokio::test]
    async fn only_present_fields_are_written() {
        let mut mail = mail_with(&[(
            "a",
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:only-uid\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        )]);
        run(&mut mail).await.unwrap();
        let text = String::from_utf8(mail.message).unwrap();
        assert!(
            text.contains("X-MEETING-UID: only-uid\r\n\r\nBody stays"),
            "{text}"
        );
        assert!(!text.contains("X-MEETING-METHOD"), "{text}");
    }

    #[tokio::test]
    async fn a_task_gives_its_headers_free_busy_and_no_calendar_give_none() {
        let mut mail = mail_with(&[(
            "a",
            "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VTODO\r\nUID:t\r\nEND:VTODO\r\nEND:VCALENDAR\r\n",
        )]);
        run(&mut mail).await.unwrap();
        let text = String::from_utf8(mail.message).unwrap();
        assert!(
            text.contains("X-MEETING-UID: t\r\nX-MEETING-METHOD: REQUEST\r\n"),
            "{text}"
        );
        let mut busy = mail_with(&[(
            "a",
            "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:f\r\nEND:VFREEBUSY\r\nEND:VCALENDAR\r\n",
        )]);
        run(&mut busy).await.unwrap();
        assert_eq!(busy.message, MESSAGE.as_bytes());
        let mut empty = mail_with(&[]);
        run(&mut empty).await.unwrap();
        assert_eq!(empty.message, MESSAGE.as_bytes());
    }

    #[test]
    fn header_only_and_lf_messages() {
        let h = [("X-MEETING-UID", "u".to_string())];
        assert_eq!(
            set_headers(b"A: b\nC: d\n\nbody\n", &h),
            b"A: b\nC: d\nX-MEETING-UID: u\n\nbody\n"
        );
        assert_eq!(
            set_headers(b"A: b\r\n", &h),
            b"A: b\r\nX-MEETING-UID: u\r\n"
        );
        assert_eq!(set_headers(b"A: b", &h), b"A: b\r\nX-MEETING-UID: u\r\n");
    }
}
