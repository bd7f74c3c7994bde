//! Header edits on the raw message bytes: only the header block is touched, the body stays
//! byte-identical. Reading decoded values goes through mail-parser (unfolding, RFC 2047).

use mail_parser::{HeaderName, MessageParser};

/// One header field in the raw header block: name and byte span (including continuation
/// lines and the line ending).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field name as written.
    pub name: String,
    /// First byte of the field.
    pub start: usize,
    /// One past the last byte (after its line ending).
    pub end: usize,
}

/// A field of the header block without copying its name: the name's span, then the
/// field's span (with continuation lines and line ending).
type RawField = (std::ops::Range<usize>, usize, usize);

fn raw_fields(message: &[u8]) -> Vec<RawField> {
    let end_of_headers = crate::mail::header_end(message);
    let mut fields: Vec<RawField> = Vec::new();
    let mut i = 0;
    while i < end_of_headers {
        let line_end = memchr::memchr(b'\n', &message[i..end_of_headers])
            .map(|p| i + p + 1)
            .unwrap_or(end_of_headers);
        let line = &message[i..line_end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(last) = fields.last_mut() {
                last.2 = line_end;
            }
        } else if let Some(colon) = memchr::memchr(b':', line) {
            fields.push((i..i + colon, i, line_end));
        }
        i = line_end;
    }
    fields
}

/// The fields of the header block of `message`.
pub fn fields(message: &[u8]) -> Vec<Field> {
    raw_fields(message)
        .into_iter()
        .map(|(name, start, end)| Field {
            name: String::from_utf8_lossy(&message[name]).trim().to_string(),
            start,
            end,
        })
        .collect()
}

/// The raw value of the first field named `name` (case-insensitively), unfolded and trimmed;
/// no RFC 2047 decoding (see [`decoded_values`]).
pub fn raw_value(message: &[u8], name: &str) -> Option<String> {
    let (span, _, end) = raw_fields(message).into_iter().find(|(n, _, _)| {
        message[n.clone()]
            .trim_ascii()
            .eq_ignore_ascii_case(name.as_bytes())
    })?;
    let value = &message[span.end + 1..end];
    let unfolded: Vec<u8> = value
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    Some(String::from_utf8_lossy(unfolded.trim_ascii()).into_owned())
}

/// Removes every field named (case-insensitively) in `names`; returns how many were removed.
pub fn remove(message: &mut Vec<u8>, names: &[&str]) -> usize {
    let doomed: Vec<(usize, usize)> = raw_fields(message)
        .into_iter()
        .filter(|(name, _, _)| {
            let name = message[name.clone()].trim_ascii();
            names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
        })
        .map(|(_, start, end)| (start, end))
        .collect();
    for (start, end) in doomed.iter().rev() {
        message.drain(*start..*end);
    }
    doomed.len()
}

/// The line ending the message uses (CRLF unless its first line ends with a bare LF).
pub fn line_ending(message: &[u8]) -> &'static [u8] {
    match message.iter().position(|&b| b == b'\n') {
        Some(p) if p > 0 && message[p - 1] == b'\r' => b"\r\n",
        Some(_) => b"\n",
        None => b"\r\n",
    }
}

/// Appends `name: value` at the end of the header block (JavaMail `addHeader`).
pub fn add(message: &mut Vec<u8>, name: &str, value: &str) {
    let eol = line_ending(message);
    let fields = fields(message);
    let at = match fields.last() {
        Some(f) => f.end,
        None => 0,
    };
    let mut line = Vec::with_capacity(name.len() + value.len() + 4);
    // a last field without a line ending (headers-only message) needs one first
    if at > 0 && message[at - 1] != b'\n' {
        line.extend_from_slice(eol);
    }
    line.extend_from_slice(name.as_bytes());
    line.extend_from_slice(b": ");
    line.extend_from_slice(value.as_bytes());
    line.extend_from_slice(eol);
    message.splice(at..at, line);
}

/// The decoded (unfolded, RFC 2047) values of every field named `name`.
pub fn decoded_values(message: &[u8], name: &str) -> Vec<String> {
    let Some(parsed) = MessageParser::new()
        .default_header_text()
        .parse_headers(message)
    else {
        return Vec::new();
    };
    parsed
        .headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().as_text().unwrap_or_default().trim().to_string())
        .collect()
}

/// The top-level Content-Type: lowercased `type/subtype` (default `text/plain`) and its
/// parameters (names lowercased).
pub fn content_type(message: &[u8]) -> (String, Vec<(String, String)>) {
    let parsed = MessageParser::new()
        .with_mime_headers()
        .parse_headers(message);
    let ct = parsed
        .as_ref()
        .and_then(|m| m.header(HeaderName::ContentType))
        .and_then(|v| v.as_content_type());
    match ct {
        Some(ct) => {
            let mime = match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_string(),
            }
            .to_ascii_lowercase();
            let params = ct
                .attributes()
                .unwrap_or_default()
                .iter()
                .map(|a| (a.name.to_ascii_lowercase(), a.value.to_string()))
                .collect();
            (mime, params)
        }
        None => ("text/plain".to_string(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from a\r\n\tby b\r\nBcc: x@y.z,\r\n w@y.z\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\n  folded\r\nContent-Type: text/calendar; method=REQUEST; charset=utf-8\r\n\r\nBcc: not a header\r\n";

    #[test]
    fn remove_keeps_body() {
        let mut m = MSG.to_vec();
        assert_eq!(remove(&mut m, &["BCC"]), 1);
        assert!(m.starts_with(b"Received: from a\r\n\tby b\r\nSubject:"));
        assert!(m.ends_with(b"\r\n\r\nBcc: not a header\r\n"));
    }

    #[test]
    fn add_before_blank_line() {
        let mut m = MSG.to_vec();
        add(&mut m, "X-Test", "1");
        assert!(m.ends_with(b"charset=utf-8\r\nX-Test: 1\r\n\r\nBcc: not a header\r\n"));
        let mut bare = b"A: b".to_vec();
        add(&mut bare, "X", "y");
        assert_eq!(bare, b"A: b\r\nX: y\r\n");
        let mut lf = b"A: b\n\nbody".to_vec();
        add(&mut lf, "X", "y");
        assert_eq!(lf, b"A: b\nX: y\n\nbody");
    }

    #[test]
    fn decodes_and_reads_content_type() {
        assert_eq!(decoded_values(MSG, "subject"), vec!["café folded"]);
        let (mime, params) = content_type(MSG);
        assert_eq!(mime, "text/calendar");
        assert!(params.contains(&("method".into(), "REQUEST".into())));
        assert_eq!(content_type(b"A: b\r\n\r\n").0, "text/plain");
    }
}
