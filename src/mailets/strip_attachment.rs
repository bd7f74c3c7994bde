//! `StripAttachment`: collects (and optionally removes) the MIME parts of a mail that match
//! a MIME type or a filename pattern. Beyond James, a single-part mail whose own type
//! matches is collected too, and `mimeType=text/calendar` also takes `application/ics`.
//!
//! ```xml
//! <mailet match="All" class="StripAttachment">
//!     <mimeType>text/calendar</mimeType>
//!     <attribute>rawIcalendar2</attribute>
//!     <onMailetException>ignore</onMailetException>
//! </mailet>
//! ```
//!
//! Parameters (James names and defaults):
//! - `mimeType`: `type/subtype`, compared without parameters, case-insensitively.
//! - `pattern`: a regular expression the **whole** filename must match.
//! - `notpattern`: matches the parts whose filename does **not** match it.
//!   At least one of `mimeType`, `pattern`, `notpattern` is required; a part is taken when
//!   its type or its filename matches.
//! - `attribute`: where collected parts go, as a map filename → whole part (headers and the
//!   still-encoded body, which is why `MimeDecodingMailet` follows). The key is the
//!   Content-Disposition `filename`, else the Content-Type `name`, else the literal
//!   `Content-Type` (what James's `Field::getName` fallback yields, per the spec §3.1); when
//!   a key is already there the later part is skipped, so two unnamed parts keep the first.
//! - `remove`: `no` (default), `matched` (drop the matched parts from the message) or `all`
//!   (drop every leaf part of the multipart; James names every part, so it drops them all).
//! - `decodeFilename` (`false`): accepted; filenames are always RFC 2047/2231-decoded here,
//!   as mail-parser does, which is what `true` asks of James.
//!
//! James's `directory` and `replaceFilenamePattern` are refused at startup rather than
//! silently ignored. Parts of attached messages (`message/rfc822`) are not scanned, as in James.

use std::collections::BTreeMap;
use std::ops::Range;

use async_trait::async_trait;
use mail_parser::{MessageParser, MessagePart, MimeHeaders, PartType};
use regex::Regex;

use crate::config::ConfigError;
use crate::mail::{AttributeValue, Mail};
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// What `remove` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Remove {
    No,
    Matched,
    All,
}

/// Collects matching MIME parts into an attribute and optionally removes parts.
#[derive(Debug)]
pub struct StripAttachment {
    mime_type: Option<(String, String)>,
    pattern: Option<Regex>,
    notpattern: Option<Regex>,
    attribute: Option<String>,
    remove: Remove,
}

/// The literal key James ends up with for a part that has no filename.
const UNNAMED_KEY: &str = "Content-Type";

impl StripAttachment {
    /// Reads and checks the parameters.
    pub fn build(
        config: &MailetConfig,
        _ctx: &MailetContext,
    ) -> Result<Box<dyn Mailet>, ConfigError> {
        Ok(Box::new(Self::new(config)?))
    }

    fn new(config: &MailetConfig) -> Result<Self, ConfigError> {
        for unsupported in ["directory", "replaceFilenamePattern"] {
            if let Some(p) = config.parameter(unsupported) {
                return Err(p.position.error(format!(
                    "StripAttachment parameter <{unsupported}> is not supported by mailetd; \
                     use <attribute> to keep the parts"
                )));
            }
        }
        let mime_type = match config.parameter("mimeType") {
            None => None,
            Some(p) => {
                let value = p.value.trim().to_ascii_lowercase();
                match value.split_once('/') {
                    Some((t, s)) if !t.is_empty() && !s.is_empty() && !s.contains('/') => {
                        Some((t.to_string(), s.to_string()))
                    }
                    _ => {
                        return Err(p.position.error(format!(
                            "parameter <mimeType> is {:?}: expected type/subtype such as text/calendar",
                            p.value
                        )));
                    }
                }
            }
        };
        let pattern = compile(config, "pattern")?;
        let notpattern = compile(config, "notpattern")?;
        if mime_type.is_none() && pattern.is_none() && notpattern.is_none() {
            return Err(config.error(
                "StripAttachment needs at least one of <mimeType>, <pattern> or <notpattern>",
            ));
        }
        let remove = match config.parameter("remove") {
            None => Remove::No,
            Some(p) => match p.value.trim().to_ascii_lowercase().as_str() {
                "no" | "" => Remove::No,
                "matched" => Remove::Matched,
                "all" => Remove::All,
                other => {
                    return Err(p.position.error(format!(
                        "parameter <remove> is {other:?}: expected no, matched or all"
                    )));
                }
            },
        };
        config.get_bool("decodeFilename", false)?;
        let attribute = config
            .get("attribute")
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from);
        if attribute.is_none() && remove == Remove::No {
            return Err(config.error(
                "StripAttachment does nothing without <attribute> or <remove>matched|all</remove>",
            ));
        }
        Ok(StripAttachment {
            mime_type,
            pattern,
            notpattern,
            attribute,
            remove,
        })
    }

    fn type_matches(&self, part: &MessagePart<'_>) -> bool {
        let Some((want_type, want_subtype)) = &self.mime_type else {
            return false;
        };
        let (ctype, subtype) = match part.content_type() {
            Some(ct) => (ct.ctype(), ct.subtype().unwrap_or("")),
            None => ("text", "plain"),
        };
        let is =
            |t: &str, s: &str| ctype.eq_ignore_ascii_case(t) && subtype.eq_ignore_ascii_case(s);
        is(want_type, want_subtype)
            || (want_type == "text" && want_subtype == "calendar" && is("application", "ics"))
    }

    fn name_matches(&self, filename: Option<&str>) -> bool {
        let Some(name) = filename else {
            return false;
        };
        self.pattern.as_ref().is_some_and(|re| re.is_match(name))
            || self
                .notpattern
                .as_ref()
                .is_some_and(|re| !re.is_match(name))
    }
}

fn compile(config: &MailetConfig, name: &str) -> Result<Option<Regex>, ConfigError> {
    let Some(p) = config.parameter(name) else {
        return Ok(None);
    };
    // Java's Matcher.matches(): the whole filename must match
    Regex::new(&format!("^(?:{})$", p.value))
        .map(Some)
        .map_err(|e| {
            p.position
                .error(format!("parameter <{name}> is not a valid regex: {e}"))
        })
}

fn filename(part: &MessagePart<'_>) -> Option<String> {
    part.content_disposition()
        .and_then(|cd| cd.attribute("filename"))
        .or_else(|| part.content_type().and_then(|ct| ct.attribute("name")))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
}

#[async_trait]
impl Mailet for StripAttachment {
    async fn service(&self, mail: &mut Mail, _ctx: &MailetContext) -> Result<(), MailetError> {
        // only the MIME headers are read: Received, address and date fields stay raw
        let Some(message) = MessageParser::new()
            .with_mime_headers()
            .parse(&mail.message)
        else {
            return Ok(());
        };
        let raw = &mail.message;
        let mut collected: Vec<(String, Vec<u8>)> = Vec::new();
        let mut removed: Vec<Range<usize>> = Vec::new();
        let root = &message.parts[0];
        if root.is_multipart() {
            for part in message.parts.iter().skip(1) {
                if part.is_multipart() {
                    continue;
                }
                let name = filename(part);
                let matched = self.type_matches(part) || self.name_matches(name.as_deref());
                let range = part.offset_header as usize..part.offset_end as usize;
                if matched {
                    let key = name.unwrap_or_else(|| UNNAMED_KEY.to_string());
                    collected.push((key, raw[range.clone()].to_vec()));
                }
                if self.remove == Remove::All || (self.remove == Remove::Matched && matched) {
                    removed.push(range);
                }
            }
        } else if !matches!(root.body, PartType::Message(_)) {
            // Beyond James: a bare text/calendar mail (no multipart) is an invitation too.
            // Its whole message is the part; there is nothing to remove it from.
            let name = filename(root);
            if self.type_matches(root) || self.name_matches(name.as_deref()) {
                collected.push((name.unwrap_or_else(|| UNNAMED_KEY.into()), raw.clone()));
            }
        }
        drop(message);

        if let Some(attribute) = &self.attribute
            && !collected.is_empty()
        {
            let mut map = match mail.attribute(attribute) {
                Some(AttributeValue::Map(m)) => m.clone(),
                _ => BTreeMap::new(),
            };
            for (key, bytes) in collected {
                if map.contains_key(&key) {
                    tracing::debug!(mail = %mail.name, %key, "duplicated file name, part skipped");
                    continue;
                }
                map.insert(key, AttributeValue::Bytes(bytes));
            }
            mail.set_attribute(attribute.clone(), AttributeValue::Map(map));
        }
        if !removed.is_empty() {
            mail.message = remove_parts(&mail.message, &removed);
        }
        Ok(())
    }
}

/// Cuts each part out of the message together with the boundary line that introduces it,
/// so the multipart stays well-formed. Ranges are in document order and do not overlap.
fn remove_parts(raw: &[u8], parts: &[Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut cursor = 0;
    for part in parts {
        let start = delimiter_start(raw, part.start).max(cursor);
        out.extend_from_slice(&raw[cursor..start]);
        cursor = part.end;
    }
    out.extend_from_slice(&raw[cursor..]);
    out
}

/// Start of the `CRLF--boundary` line just before a part's headers.
fn delimiter_start(raw: &[u8], part_start: usize) -> usize {
    let before = &raw[..part_start];
    // the line before the part is the delimiter; back up over its line break, then to the
    // line break that ends the previous body (which belongs to the delimiter, RFC 2046)
    let mut line_end = before.len();
    if before[..line_end].ends_with(b"\n") {
        line_end -= 1;
    }
    if before[..line_end].ends_with(b"\r") {
        line_end -= 1;
    }
    let line_start = before[..line_end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    if !before[line_start..line_end].starts_with(b"--") {
        return part_start;
    }
    let mut start = line_start;
    if start > 0 && before[start - 1] == b'\n' {
        start -= 1;
        if start > 0 && before[start - 1] == b'\r' {
            start -= 1;
        }
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOGLE_LIKE: &str = "From: a@example.com\r\nTo: b@example.org\r\nSubject: Invitation\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
--outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n\
--inner\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\n\r\nYou are invited.\r\n\
--inner\r\nContent-Type: text/calendar; charset=\"UTF-8\"; method=REQUEST\r\n\
Content-Transfer-Encoding: 7bit\r\n\r\nBEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n\
--inner--\r\n\r\n\
--outer\r\nContent-Type: application/ics; name=\"invite.ics\"\r\n\
Content-Disposition: attachment; filename=\"invite.ics\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nQkVHSU46VkNBTEVOREFSDQpFTkQ6VkNBTEVOREFSDQo=\r\n\
--outer--\r\n";

    fn mailet(params: &[(&str, &str)]) -> Result<StripAttachment, ConfigError> {
        StripAttachment::new(&MailetConfig::inline("StripAttachment", params))
    }

    async fn run(m: &StripAttachment, message: &str) -> Mail {
        let mut mail = Mail::new(None, vec![], message.as_bytes().to_vec());
        let ctx = MailetContext::for_tests(std::env::temp_dir());
        m.service(&mut mail, &ctx).await.unwrap();
        mail
    }

    fn entries(mail: &Mail, attribute: &str) -> BTreeMap<String, String> {
        mail.attribute(attribute)
            .and_then(AttributeValue::as_map)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            String::from_utf8(v.as_bytes().unwrap().to_vec()).unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn collects_whole_calendar_parts_keyed_by_filename() {
        let m = mailet(&[("mimeType", "text/calendar"), ("attribute", "raw")]).unwrap();
        let mail = run(&m, GOOGLE_LIKE).await;
        let got = entries(&mail, "raw");
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got["Content-Type"],
            "Content-Type: text/calendar; charset=\"UTF-8\"; method=REQUEST\r\n\
             Content-Transfer-Encoding: 7bit\r\n\r\nBEGIN:VCALENDAR\r\nEND:VCALENDAR"
        );
        assert!(
            got["invite.ics"].starts_with("Content-Type: application/ics; name=\"invite.ics\"\r\n")
        );
        assert!(
            got["invite.ics"].ends_with("\r\n\r\nQkVHSU46VkNBTEVOREFSDQpFTkQ6VkNBTEVOREFSDQo=")
        );
        assert_eq!(
            mail.message,
            GOOGLE_LIKE.as_bytes(),
            "remove=no leaves the message"
        );
    }

    #[tokio::test]
    async fn single_part_calendar_mail_is_collected() {
        let message = "From: a@example.com\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n";
        let m = mailet(&[("mimeType", "text/calendar"), ("attribute", "raw")]).unwrap();
        let got = entries(&run(&m, message).await, "raw");
        assert_eq!(got["Content-Type"], message);
        let plain = "Content-Type: text/plain\r\n\r\nhello\r\n";
        assert!(entries(&run(&m, plain).await, "raw").is_empty());
    }

    #[tokio::test]
    async fn first_duplicate_name_wins_and_existing_entries_stay() {
        let message = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/calendar\r\n\r\nFIRST\r\n--b\r\nContent-Type: text/calendar\r\n\r\nSECOND\r\n--b--\r\n";
        let m = mailet(&[("mimeType", "text/calendar"), ("attribute", "raw")]).unwrap();
        let mut mail = Mail::new(None, vec![], message.as_bytes().to_vec());
        let mut earlier = BTreeMap::new();
        earlier.insert(
            "old.ics".to_string(),
            AttributeValue::Bytes(b"OLD".to_vec()),
        );
        mail.set_attribute("raw", AttributeValue::Map(earlier));
        let ctx = MailetContext::for_tests(std::env::temp_dir());
        m.service(&mut mail, &ctx).await.unwrap();
        let got = entries(&mail, "raw");
        assert_eq!(got.len(), 2);
        assert!(got["Content-Type"].ends_with("FIRST"));
        assert_eq!(got["old.ics"], "OLD");
    }

    #[tokio::test]
    async fn patterns_match_whole_filenames() {
        let message = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nbody\r\n--b\r\n\
Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\n\r\nPDF\r\n--b\r\n\
Content-Type: image/png; name=\"logo.png\"\r\n\r\nPNG\r\n--b--\r\n";
        let pdf = mailet(&[("pattern", ".*\\.pdf"), ("attribute", "a")]).unwrap();
        assert_eq!(
            entries(&run(&pdf, message).await, "a")
                .keys()
                .collect::<Vec<_>>(),
            ["report.pdf"]
        );
        let partial = mailet(&[("pattern", "\\.pdf"), ("attribute", "a")]).unwrap();
        assert!(entries(&run(&partial, message).await, "a").is_empty());
        let not_pdf = mailet(&[("notpattern", ".*\\.pdf"), ("attribute", "a")]).unwrap();
        assert_eq!(
            entries(&run(&not_pdf, message).await, "a")
                .keys()
                .collect::<Vec<_>>(),
            ["logo.png"]
        );
    }

    #[tokio::test]
    async fn remove_matched_cuts_the_part_and_its_boundary() {
        let m = mailet(&[("mimeType", "application/ics"), ("remove", "matched")]).unwrap();
        let mail = run(&m, GOOGLE_LIKE).await;
        let text = String::from_utf8(mail.message.clone()).unwrap();
        assert!(!text.contains("invite.ics"), "{text}");
        assert!(text.contains("text/calendar"));
        assert!(text.ends_with("--inner--\r\n\r\n--outer--\r\n"), "{text}");
        let reparsed = MessageParser::default().parse(&mail.message).unwrap();
        assert_eq!(
            reparsed.parts.len(),
            4,
            "root, alternative, plain, calendar"
        );
    }

    #[test]
    fn bad_parameters_fail_at_startup() {
        assert!(
            mailet(&[("attribute", "a")])
                .unwrap_err()
                .to_string()
                .contains("mimeType")
        );
        assert!(mailet(&[("mimeType", "calendar"), ("attribute", "a")]).is_err());
        assert!(mailet(&[("pattern", "(["), ("attribute", "a")]).is_err());
        assert!(mailet(&[("mimeType", "text/calendar"), ("remove", "some")]).is_err());
        assert!(mailet(&[("mimeType", "text/calendar")]).is_err());
        assert!(mailet(&[("mimeType", "text/calendar"), ("directory", "/tmp")]).is_err());
        assert!(mailet(&[("mimeType", "text/calendar"), ("remove", "all")]).is_ok());
    }
}
