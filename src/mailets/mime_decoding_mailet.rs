//! `MimeDecodingMailet`: turns the raw MIME parts collected by `StripAttachment` into their
//! decoded content.
//!
//! ```xml
//! <mailet match="All" class="MimeDecodingMailet">
//!     <attribute>rawIcalendar2</attribute>
//!     <onMailetException>ignore</onMailetException>
//! </mailet>
//! ```
//!
//! `attribute` (required) names a map of raw parts (headers + encoded body). Each value is
//! re-parsed as a MIME part and replaced by its body with the Content-Transfer-Encoding
//! (base64, quoted-printable) undone. An entry that cannot be decoded is dropped with a
//! WARN line naming the mail and the entry, and counted (`mailetd_mime_parts_undecodable_total`).
//!
//! Quoted-printable is decoded as RFC 2045 §6.7 asks of a robust decoder, and as JavaMail
//! (James), Python and Thunderbird do: an `=` not followed by two hexadecimal digits (a
//! gateway that left `CN=Bob` unencoded) is kept as it is, not a reason to lose the
//! invitation; `=` at the end of a line is a soft line break; trailing blanks are dropped.
//!
//! `text/calendar; method=…` (RFC 6047 §2.4): a calendar whose body has no METHOD gets the
//! parameter's as its METHOD line, so every reader downstream (the X-MEETING headers, the
//! JSON and its `ical`, esn-sabre, the caldav dialect) sees an iTIP message. When both are
//! there and differ, the body wins (it is what the calendar clients act on) and the
//! mismatch is logged.
//!
//! Beyond James (which never converts charsets, so ICALToJsonAttribute later reads every
//! part as UTF-8): a `text/*` or `application/ics` part that declares a charset other than
//! UTF-8 is converted to UTF-8 here. This is the one place that still sees the part's
//! headers, and both readers of the map downstream (`ICalendarParser` and the `ical`
//! field of `ICALToJsonAttribute`) then get the same, correct text. A charset mail-parser
//! does not know leaves the bytes as they are.

use std::collections::BTreeMap;

use async_trait::async_trait;
use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{MessageParser, MimeHeaders};

use crate::config::ConfigError;
use crate::mail::{AttributeValue, Mail};
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// Replaces each raw MIME part of a map attribute by its decoded content.
#[derive(Debug)]
pub struct MimeDecodingMailet {
    attribute: String,
}

impl MimeDecodingMailet {
    /// Reads and checks the parameters.
    pub fn build(
        config: &MailetConfig,
        _ctx: &MailetContext,
    ) -> Result<Box<dyn Mailet>, ConfigError> {
        Ok(Box::new(MimeDecodingMailet {
            attribute: config.require("attribute")?.trim().to_string(),
        }))
    }
}

#[async_trait]
impl Mailet for MimeDecodingMailet {
    async fn service(&self, mail: &mut Mail, ctx: &MailetContext) -> Result<(), MailetError> {
        let entries = match mail.attribute(&self.attribute) {
            None => return Ok(()),
            Some(AttributeValue::Map(entries)) => entries,
            Some(_) => anyhow::bail!(
                "attribute {} of mail {} is not a map of MIME parts",
                self.attribute,
                mail.name
            ),
        };
        let mut decoded = BTreeMap::new();
        for (key, value) in entries {
            let Some(raw) = value.as_bytes() else {
                tracing::debug!(mail = %mail.name, %key, "not bytes, entry dropped");
                continue;
            };
            match decode_part(raw) {
                Ok(part) => {
                    if let Some(notice) = part.notice {
                        tracing::info!(mail = %mail.name, %key, "{notice}");
                    }
                    decoded.insert(key.clone(), AttributeValue::Bytes(part.content));
                }
                Err(reason) => {
                    ctx.metrics.mime_part_undecodable();
                    tracing::warn!(mail = %mail.name, id = mail.id, %key, "cannot decode MIME part, entry dropped: {reason}");
                }
            }
        }
        mail.set_attribute(self.attribute.clone(), AttributeValue::Map(decoded));
        Ok(())
    }
}

/// A decoded MIME part.
#[derive(Debug, PartialEq, Eq)]
pub struct DecodedPart {
    /// The body, transfer-decoded, in UTF-8 when it is text with a declared charset.
    pub content: Vec<u8>,
    /// Something worth a log line (a METHOD that differs from the Content-Type's).
    pub notice: Option<String>,
}

/// The body of one raw MIME part, transfer-decoded, in UTF-8 when it is text with a
/// declared charset; a calendar without METHOD gets the Content-Type's `method`.
pub fn decode_part(raw: &[u8]) -> Result<DecodedPart, String> {
    // only the headers are parsed: parsing the whole part would decode its body as well,
    // a second decoded copy of a part that may be the size of the mail
    if raw.is_empty() {
        return Err("empty MIME part".into());
    }
    let header_end = crate::mail::header_end(raw);
    let message = MessageParser::new()
        .with_mime_headers()
        .parse(&raw[..header_end]);
    // no headers at all (the part starts with its blank line): a 7bit body of no type
    let part = message.as_ref().and_then(|m| m.parts.first());
    let body = &raw[header_end..];
    let encoding = part
        .and_then(|p| p.content_transfer_encoding())
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let content = match encoding.as_str() {
        "base64" => base64_decode(body).ok_or("invalid base64 body")?,
        "quoted-printable" => quoted_printable_lenient(body),
        _ => body.to_vec(),
    };
    let charset = part.and_then(|p| p.content_type()).and_then(|ct| {
        let textual = ct.ctype().eq_ignore_ascii_case("text")
            || (ct.ctype().eq_ignore_ascii_case("application")
                && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("ics")));
        textual.then(|| ct.attribute("charset")).flatten()
    });
    let content = match charset {
        Some(cs) if !is_utf8_compatible(cs) => match charset_decoder(cs.as_bytes()) {
            Some(to_utf8) => to_utf8(&content).into_bytes(),
            None => content,
        },
        _ => content,
    };
    let method = part.and_then(|p| p.content_type()).and_then(|ct| {
        let calendar = ct.ctype().eq_ignore_ascii_case("text")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("calendar"));
        calendar.then(|| ct.attribute("method")).flatten()
    });
    Ok(match method.map(str::trim).filter(|m| !m.is_empty()) {
        Some(method) => with_method(content, method),
        None => DecodedPart {
            content,
            notice: None,
        },
    })
}

/// Quoted-printable decoding after RFC 2045 §6.7 with the robustness its note (4) asks
/// for: `=XX` (hex digits, either case) is a byte, `=` ending a line a soft line break,
/// any other `=` is kept literally; blanks at the end of a line are transport padding.
fn quoted_printable_lenient(body: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        let eol_len = if line.ends_with(b"\r\n") {
            2
        } else {
            usize::from(line.ends_with(b"\n"))
        };
        let (text, eol) = line.split_at(line.len() - eol_len);
        let text = text.trim_ascii_end();
        let mut soft_break = false;
        let mut i = 0;
        while i < text.len() {
            match (
                text[i],
                text.get(i + 1).copied().and_then(hex),
                text.get(i + 2).copied().and_then(hex),
            ) {
                (b'=', Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                (b'=', _, _) if i + 1 == text.len() => {
                    soft_break = true;
                    i += 1;
                }
                (byte, _, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        if !soft_break {
            out.extend_from_slice(eol);
        }
    }
    out
}

/// Gives each VCALENDAR of `content` that has no METHOD the Content-Type's `method`
/// (RFC 6047 §2.4); a differing METHOD in the body is kept and reported.
fn with_method(content: Vec<u8>, method: &str) -> DecodedPart {
    let Ok(text) = std::str::from_utf8(&content) else {
        return DecodedPart {
            content,
            notice: None,
        };
    };
    let calendars: Vec<(&str, Option<&str>)> = crate::ical::calendar_ranges(text)
        .into_iter()
        .map(|range| {
            let calendar = &text[range];
            (calendar, written_method(calendar))
        })
        .collect();
    let notice = calendars
        .iter()
        .filter_map(|(_, written)| *written)
        .rfind(|body| !body.eq_ignore_ascii_case(method))
        .map(|body| format!(
            "Content-Type says method={method} but the calendar says METHOD:{body} (RFC 6047 2.4 wants them equal); the calendar's is kept"
        ));
    // the usual case, every calendar with its METHOD and nothing around them: the content
    // as it is, not a copy (a 25 MB calendar would be held twice)
    let covered: usize = calendars.iter().map(|(c, _)| c.len()).sum();
    if covered == text.len() && calendars.iter().all(|(_, written)| written.is_some()) {
        return DecodedPart { content, notice };
    }
    let mut out = String::with_capacity(text.len() + 32);
    for (calendar, written) in calendars {
        if written.is_some() {
            out.push_str(calendar);
            continue;
        }
        let mut inserted = false;
        for line in calendar.split_inclusive('\n') {
            out.push_str(line);
            if !inserted && line.trim().eq_ignore_ascii_case("BEGIN:VCALENDAR") {
                let eol = if line.ends_with("\r\n") { "\r\n" } else { "\n" };
                out.push_str(&format!("METHOD:{}{eol}", method.to_ascii_uppercase()));
                inserted = true;
            }
        }
    }
    DecodedPart {
        content: out.into_bytes(),
        notice,
    }
}

/// The value of the first METHOD line of a calendar, if it has one.
fn written_method(calendar: &str) -> Option<&str> {
    calendar.split_inclusive('\n').find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.split(';').next().unwrap_or_default().trim();
        name.eq_ignore_ascii_case("METHOD").then(|| value.trim())
    })
}

fn is_utf8_compatible(charset: &str) -> bool {
    let cs = charset.trim().to_ascii_lowercase();
    matches!(cs.as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail_with(entries: &[(&str, &[u8])]) -> Mail {
        let mut mail = Mail::new(None, vec![], b"Subject: x\r\n\r\n".to_vec());
        let map = entries
            .iter()
            .map(|(k, v)| (k.to_string(), AttributeValue::Bytes(v.to_vec())))
            .collect();
        mail.set_attribute("raw", AttributeValue::Map(map));
        mail
    }

    async fn run(mail: &mut Mail) -> BTreeMap<String, Vec<u8>> {
        let m = MimeDecodingMailet::build(
            &MailetConfig::inline("MimeDecodingMailet", &[("attribute", "raw")]),
            &MailetContext::for_tests(std::env::temp_dir()),
        )
        .unwrap();
        m.service(mail, &MailetContext::for_tests(std::env::temp_dir()))
            .await
            .unwrap();
        mail.attribute("raw")
            .and_then(AttributeValue::as_map)
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bytes().unwrap().to_vec()))
            .collect()
    }

    #[tokio::test]
    async fn undoes_base64_and_quoted_printable() {
        let mut mail = mail_with(&[
            (
                "b64",
                b"Content-Type: application/ics\r\nContent-Transfer-Encoding: base64\r\n\r\nQkVHSU46VkNB\r\nTEVOREFSDQo=",
            ),
            (
                "qp",
                b"Content-Type: text/calendar; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nSUMMARY:R=C3=A9union tr=\r\n=C3=A8s longue\r\n",
            ),
            ("plain", b"Content-Type: text/calendar\r\n\r\nBEGIN:VCALENDAR\r\n"),
        ]);
        let got = run(&mut mail).await;
        assert_eq!(got["b64"], b"BEGIN:VCALENDAR\r\n");
        assert_eq!(
            String::from_utf8(got["qp"].clone()).unwrap(),
            "SUMMARY:Réunion très longue\r\n"
        );
        assert_eq!(got["plain"], b"BEGIN:VCALENDAR\r\n");
    }

    #[tokio::test]
    async fn declared_charset_becomes_utf8() {
        let mut mail = mail_with(&[
            (
                "latin1",
                b"Content-Type: text/calendar; charset=ISO-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSUMMARY:R\xe9union \xe0 Orl\xe9ans\r\n",
            ),
            (
                "binary",
                b"Content-Type: image/png; charset=ISO-8859-1\r\nContent-Transfer-Encoding: base64\r\n\r\n6Q==",
            ),
        ]);
        let got = run(&mut mail).await;
        assert_eq!(
            String::from_utf8(got["latin1"].clone()).unwrap(),
            "SUMMARY:Réunion à Orléans\r\n"
        );
        assert_eq!(got["binary"], [0xe9], "non-text bytes are never converted");
    }

    #[tokio::test]
    async fn undecodable_entries_are_dropped() {
        let mut mail = mail_with(&[
            (
                "bad",
                b"Content-Type: text/calendar\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!",
            ),
            ("good", b"Content-Type: text/calendar\r\n\r\nOK"),
        ]);
        let got = run(&mut mail).await;
        assert_eq!(got.keys().collect::<Vec<_>>(), ["good"]);
    }

    #[test]
    fn quoted_printable_keeps_bare_equals_signs() {
        let decoded = |body: &[u8]| String::from_utf8(quoted_printable_lenient(body)).unwrap();
        assert_eq!(
            decoded(b"ATTENDEE;CN=Bob;ROLE=REQ-PARTICIPANT:mailto:b@x\r\n"),
            "ATTENDEE;CN=Bob;ROLE=REQ-PARTICIPANT:mailto:b@x\r\n"
        );
        assert_eq!(
            decoded(b"R=C3=a9union tr=  \r\n=C3=A8s =\r\nB=2 \t\r\nend="),
            "Réunion très B=2\r\nend"
        );
        assert_eq!(decoded(b"a=\nb\nc= =ZZ\n"), "ab\nc= =ZZ\n");
    }

    #[test]
    fn the_content_type_method_fills_a_calendar_without_one() {
        let part = |ct: &str, body: &str| {
            decode_part(format!("Content-Type: {ct}\r\n\r\n{body}").as_bytes()).unwrap()
        };
        let bare = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:u\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let filled = part("text/calendar; method=request", bare);
        assert_eq!(
            String::from_utf8(filled.content).unwrap(),
            bare.replacen("VCALENDAR\r\n", "VCALENDAR\r\nMETHOD:REQUEST\r\n", 1)
        );
        assert_eq!(filled.notice, None);
        let cancel = bare.replace("VERSION:2.0", "METHOD:CANCEL");
        let kept = part("text/calendar; method=REQUEST", &cancel);
        assert_eq!(String::from_utf8(kept.content).unwrap(), cancel);
        assert!(kept.notice.unwrap().contains("METHOD:CANCEL"));
        // no parameter, or not a calendar: untouched
        assert_eq!(part("text/calendar", bare).content, bare.as_bytes());
        assert_eq!(
            part("text/plain; method=REQUEST", bare).content,
            bare.as_bytes()
        );
    }

    #[tokio::test]
    async fn absent_attribute_is_left_alone_and_wrong_type_is_an_error() {
        let ctx = MailetContext::for_tests(std::env::temp_dir());
        let m = MimeDecodingMailet::build(
            &MailetConfig::inline("MimeDecodingMailet", &[("attribute", "raw")]),
            &ctx,
        )
        .unwrap();
        let mut mail = Mail::new(None, vec![], b"Subject: x\r\n\r\n".to_vec());
        m.service(&mut mail, &ctx).await.unwrap();
        assert!(mail.attribute("raw").is_none());
        mail.set_attribute("raw", AttributeValue::String("x".into()));
        assert!(m.service(&mut mail, &ctx).await.is_err());
        assert!(
            MimeDecodingMailet::build(&MailetConfig::inline("MimeDecodingMailet", &[]), &ctx)
                .is_err()
        );
    }
}
