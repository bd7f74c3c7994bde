//! `ICALToJsonAttribute`: one JSON document per calendar and envelope recipient, the input
//! of `CalDavCollect`. Beyond James, the same calendar carried twice in one mail (Google
//! sends it inline and as `invite.ics`) yields one JSON per recipient, not two.
//!
//! ```xml
//! <mailet match="All" class="org.apache.james.transport.mailets.ICALToJsonAttribute">
//!     <source>icalendar2</source>
//!     <rawSource>rawIcalendar2</rawSource>
//!     <destination>icalendarAsJson2</destination>
//!     <onMailetException>ignore</onMailetException>
//! </mailet>
//! ```
//!
//! Parameters (names from the James code; its docs say `sourceAttribute`/
//! `destinationAttribute`, which James ignores and mailetd refuses): `source` (default
//! `icalendar`, the parsed calendars), `rawSource` (default `attachments`, the decoded ICS
//! bytes under the same keys), `destination` (default `icalendarJson`), and, a mailetd
//! extension, `maxJsonDocuments` (default 10000): at most that many documents per mail
//! (calendars × recipients); beyond it the mail's remaining documents are left out with
//! one WARN line naming the mail and the counts.
//!
//! The output is a map random UUID → UTF-8 JSON bytes, set only when not empty. It is held
//! as one [`CalendarJsons`] value: each calendar's text once, shared with
//! `ICalendarParser`'s calendar, every document rendered when read (a 100 KB invitation to
//! 1,000 recipients is 100 KB, not 140 MB, in memory and in a repository file):
//! ```json
//! {"ical":"BEGIN:VCALENDAR…","sender":"a@x","recipient":"b@y","replyTo":"a@x",
//!  "uid":"…","sequence":"0","dtstamp":"20170106T115036Z","method":"REQUEST","recurrence-id":null}
//! ```
//! - `ical` is the raw decoded text (already UTF-8 when `MimeDecodingMailet` saw a declared
//!   charset; undeclared non-UTF-8 bytes are read as Windows-1252 rather than garbled); of
//!   a body holding several VCALENDAR objects, only this calendar's.
//! - `sender` is the first `From:` address, else the envelope sender; with neither, the mail
//!   yields nothing. `replyTo` is the first valid `Reply-To:` address, else the sender.
//! - `recipient` iterates the envelope recipients (not To/Cc).
//! - `uid`, `dtstamp`, `method`, `recurrence-id` are `null` when absent (dtstamp also when
//!   invalid); `sequence` defaults to `"0"`. All come from the first VEVENT (else, beyond
//!   James, the first VTODO: a task assignment); a calendar with neither, or without a raw
//!   entry under its key, is skipped.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use mail_parser::{Address, MessageParser};

use crate::config::ConfigError;
use crate::ical;
use crate::ical_json::CalendarJsons;
use crate::mail::{AttributeValue, Mail, MailAddress};
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// Calendar JSON documents made per mail by default (`maxJsonDocuments`).
pub const DEFAULT_MAX_DOCUMENTS: usize = 10_000;

/// Builds the per-recipient iTIP JSON documents from parsed and raw calendars.
#[derive(Debug)]
pub struct ICALToJsonAttribute {
    source: String,
    raw_source: String,
    destination: String,
    max_documents: usize,
}

impl ICALToJsonAttribute {
    /// Reads and checks the parameters.
    pub fn build(
        config: &MailetConfig,
        _ctx: &MailetContext,
    ) -> Result<Box<dyn Mailet>, ConfigError> {
        Ok(Box::new(Self::new(config)?))
    }

    fn new(config: &MailetConfig) -> Result<Self, ConfigError> {
        for (wrong, right) in [
            ("sourceAttribute", "source"),
            ("destinationAttribute", "destination"),
        ] {
            if let Some(p) = config.parameter(wrong) {
                return Err(p.position.error(format!(
                    "ICALToJsonAttribute has no <{wrong}> (a mistake of the James docs): write <{right}>"
                )));
            }
        }
        let non_empty = |name: &str, default: &str| -> Result<String, ConfigError> {
            match config.get(name) {
                None => Ok(default.to_string()),
                Some(_) => Ok(config.require(name)?.trim().to_string()),
            }
        };
        Ok(ICALToJsonAttribute {
            source: non_empty("source", "icalendar")?,
            raw_source: non_empty("rawSource", "attachments")?,
            destination: non_empty("destination", "icalendarJson")?,
            max_documents: match config.parameter("maxJsonDocuments") {
                None => DEFAULT_MAX_DOCUMENTS,
                Some(p) => p
                    .value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        p.position.error(format!(
                            "maxJsonDocuments is {:?}: expected a positive number",
                            p.value
                        ))
                    })?,
            },
        })
    }
}

fn map_attribute<'a>(
    mail: &'a Mail,
    name: &str,
) -> Result<Option<&'a BTreeMap<String, AttributeValue>>, MailetError> {
    match mail.attribute(name) {
        None => Ok(None),
        Some(AttributeValue::Map(m)) => Ok(Some(m)),
        Some(_) => anyhow::bail!("attribute {name} of mail {} is not a map", mail.name),
    }
}

/// A header address usable as a JSON address: `local@domain`.
fn valid(address: Option<&str>) -> Option<MailAddress> {
    MailAddress::parse(address?)
        .ok()
        .filter(|a| !a.domain.is_empty())
}

/// `sender` and `replyTo` as James computes them.
fn sender_and_reply_to(mail: &Mail) -> Option<(String, String)> {
    let headers = MessageParser::new()
        .with_address_headers()
        .parse_headers(&mail.message);
    let list = |address: Option<&Address<'_>>| -> Vec<Option<String>> {
        address
            .map(|a| a.iter().map(|x| x.address().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let from = list(headers.as_ref().and_then(|h| h.from()))
        .into_iter()
        .next()
        .and_then(|first| valid(first.as_deref()));
    let sender = from.or_else(|| mail.sender.clone())?.to_string();
    let reply_to = list(headers.as_ref().and_then(|h| h.reply_to()))
        .into_iter()
        .find_map(|a| valid(a.as_deref()))
        .map(|a| a.to_string())
        .unwrap_or_else(|| sender.clone());
    Some((sender, reply_to))
}

#[async_trait]
impl Mailet for ICALToJsonAttribute {
    async fn service(&self, mail: &mut Mail, _ctx: &MailetContext) -> Result<(), MailetError> {
        let (Some(calendars), Some(raws)) = (
            map_attribute(mail, &self.source)?,
            map_attribute(mail, &self.raw_source)?,
        ) else {
            return Ok(());
        };
        if calendars.is_empty() {
            return Ok(());
        }
        let Some((sender, reply_to)) = sender_and_reply_to(mail) else {
            tracing::info!(mail = %mail.name, "no sender and no From: no calendar JSON");
            return Ok(());
        };
        let mut jsons = CalendarJsons::new(sender, reply_to);
        let mut seen = HashSet::new();
        let mut calendar_count = 0;
        for (key, calendar) in calendars {
            let Some(raw_text) = crate::mail::attribute::raw_calendar(raws, key) else {
                tracing::debug!(mail = %mail.name, %key, "calendar without raw entry skipped");
                continue;
            };
            // parsed once by ICalendarParser; a map written otherwise is parsed here
            let (parsed, fields) = match calendar {
                AttributeValue::Calendar(c) => (Some(c), c.facts().fields.clone()),
                other => (
                    None,
                    ical::scheduling_fields(&other.to_text()).unwrap_or(None),
                ),
            };
            let Some(fields) = fields else {
                tracing::debug!(mail = %mail.name, %key, "calendar without VEVENT or VTODO skipped");
                continue;
            };
            // `ical` is the raw text: the parsed calendar's own when it is the same (the
            // Twake configuration), so that one copy serves every recipient
            let (ical_text, ical_parsed) = match parsed {
                Some(c) if **c.text() == *raw_text => (c.text().clone(), Some(c.clone())),
                _ => {
                    let text: Arc<str> = raw_text.into();
                    let parsed = ical::ParsedCalendar::parse(text.clone()).ok().map(Arc::new);
                    (text, parsed)
                }
            };
            // Google's inline part and invite.ics are one invitation: the iTIP identity of a
            // message is UID + SEQUENCE + RECURRENCE-ID + METHOD; without UID, its text
            let identity = match &fields.uid {
                Some(_) => format!("{fields:?}"),
                None => ical_text.to_string(),
            };
            if !seen.insert(identity) {
                tracing::debug!(mail = %mail.name, %key, "same calendar twice in the mail, kept once");
                continue;
            }
            calendar_count += 1;
            let index = jsons.add_calendar(ical_text, ical_parsed, fields);
            for recipient in &mail.recipients {
                if jsons.len() < self.max_documents {
                    jsons.add_document(index, recipient.clone());
                }
            }
        }
        let wanted = calendar_count * mail.recipients.len();
        if wanted > jsons.len() {
            tracing::warn!(
                mail = %mail.name,
                calendars = calendar_count,
                rcpts = mail.recipients.len(),
                max = self.max_documents,
                "ICALToJsonAttribute: {calendar_count} calendars x {} recipients exceed maxJsonDocuments {}: \
                 calendar JSON made for the first {} only, {} left out",
                mail.recipients.len(),
                self.max_documents,
                jsons.len(),
                wanted - jsons.len()
            );
        }
        if !jsons.is_empty() {
            mail.set_attribute(
                self.destination.clone(),
                AttributeValue::CalendarJson(Arc::new(jsons)),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const ICS: &str = "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:uid-1\r\n\
DTSTAMP:20170106T115036Z\r\nSUMMARY:Réunion\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    fn addr(a: &str) -> MailAddress {
        MailAddress::parse(a).unwrap()
    }

    fn mail(
        headers: &str,
        sender: Option<&str>,
        recipients: &[&str],
        ics: &[(&str, &str)],
    ) -> Mail {
        let mut mail = Mail::new(
            sender.map(addr),
            recipients.iter().map(|r| addr(r)).collect(),
            format!("{headers}Subject: x\r\n\r\nbody\r\n").into_bytes(),
        );
        let parsed = ics
            .iter()
            .map(|(k, v)| (k.to_string(), AttributeValue::String(v.to_string())))
            .collect();
        let raw = ics
            .iter()
            .map(|(k, v)| (k.to_string(), AttributeValue::Bytes(v.as_bytes().to_vec())))
            .collect();
        mail.set_attribute("icalendar", AttributeValue::Map(parsed));
        mail.set_attribute("attachments", AttributeValue::Map(raw));
        mail
    }

    async fn jsons(mail: &mut Mail) -> Vec<Value> {
        let ctx = MailetContext::for_tests(std::env::temp_dir());
        let m =
            ICALToJsonAttribute::new(&MailetConfig::inline("ICALToJsonAttribute", &[])).unwrap();
        m.service(mail, &ctx).await.unwrap();
        let mut out: Vec<Value> = match mail.attribute("icalendarJson") {
            Some(AttributeValue::CalendarJson(jsons)) => jsons
                .documents()
                .map(|d| serde_json::from_slice(&d.render()).unwrap())
                .collect(),
            None => Vec::new(),
            Some(other) => panic!("not calendar JSON: {other:?}"),
        };
        out.sort_by_key(|v| v["recipient"].as_str().unwrap_or_default().to_string());
        out
    }

    #[tokio::test]
    async fn one_json_per_recipient_with_james_fields() {
        let mut m = mail(
            "From: Alice <alice@example.com>\r\n",
            Some("bounce@example.com"),
            &["bob@example.org", "carol@example.net"],
            &[("invite.ics", ICS)],
        );
        let got = jsons(&mut m).await;
        assert_eq!(
            got,
            [
                json!({"ical": ICS, "sender": "alice@example.com", "recipient": "bob@example.org",
                       "replyTo": "alice@example.com", "uid": "uid-1", "sequence": "0",
                       "dtstamp": "20170106T115036Z", "method": "REQUEST", "recurrence-id": null}),
                json!({"ical": ICS, "sender": "alice@example.com", "recipient": "carol@example.net",
                       "replyTo": "alice@example.com", "uid": "uid-1", "sequence": "0",
                       "dtstamp": "20170106T115036Z", "method": "REQUEST", "recurrence-id": null}),
            ]
        );
    }

    #[tokio::test]
    async fn sender_falls_back_to_envelope_and_reply_to_is_honoured() {
        let mut m = mail(
            "From: not an address\r\nReply-To: =?UTF-8?Q?Z=C3=A9lie?= <zelie@example.com>\r\n",
            Some("envelope@example.com"),
            &["bob@example.org"],
            &[("a", ICS)],
        );
        let got = jsons(&mut m).await;
        assert_eq!(got[0]["sender"], "envelope@example.com");
        assert_eq!(got[0]["replyTo"], "zelie@example.com");
        let mut nobody = mail("", None, &["bob@example.org"], &[("a", ICS)]);
        assert!(jsons(&mut nobody).await.is_empty());
        assert!(nobody.attribute("icalendarJson").is_none());
    }

    #[tokio::test]
    async fn same_invitation_twice_counts_once_but_distinct_ones_count() {
        let update = ICS.replace("UID:uid-1\r\n", "UID:uid-1\r\nSEQUENCE:1\r\n");
        let mut m = mail(
            "From: alice@example.com\r\n",
            None,
            &["bob@example.org"],
            &[
                ("Content-Type", ICS),
                ("invite.ics", ICS),
                ("update.ics", &update),
            ],
        );
        let got = jsons(&mut m).await;
        let sequences: Vec<_> = got
            .iter()
            .map(|j| j["sequence"].as_str().unwrap())
            .collect();
        assert_eq!(sequences.len(), 2, "{got:?}");
        assert!(sequences.contains(&"0") && sequences.contains(&"1"));
    }

    #[tokio::test]
    async fn calendars_without_vevent_or_vtodo_or_raw_entry_are_skipped() {
        let todo =
            "BEGIN:VCALENDAR\r\nBEGIN:VFREEBUSY\r\nUID:t\r\nEND:VFREEBUSY\r\nEND:VCALENDAR\r\n";
        let mut m = mail(
            "From: alice@example.com\r\n",
            None,
            &["bob@example.org"],
            &[("todo", todo), ("ok", ICS)],
        );
        if let Some(AttributeValue::Map(raw)) = m.attributes.get_mut("attachments") {
            raw.remove("ok");
        }
        assert!(jsons(&mut m).await.is_empty());
    }

    #[tokio::test]
    async fn documents_beyond_max_json_documents_are_left_out() {
        let update = ICS.replace("UID:uid-1\r\n", "UID:uid-2\r\n");
        let rcpts: Vec<String> = (0..4).map(|i| format!("r{i}@example.org")).collect();
        let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let mut m = mail(
            "From: alice@example.com\r\n",
            None,
            &rcpts,
            &[("a.ics", ICS), ("b.ics", &update)],
        );
        let ctx = MailetContext::for_tests(std::env::temp_dir());
        let mailet = ICALToJsonAttribute::new(&MailetConfig::inline(
            "ICALToJsonAttribute",
            &[("maxJsonDocuments", "5")],
        ))
        .unwrap();
        mailet.service(&mut m, &ctx).await.unwrap();
        let Some(AttributeValue::CalendarJson(jsons)) = m.attribute("icalendarJson") else {
            panic!("no documents");
        };
        assert_eq!(jsons.len(), 5, "2 calendars x 4 recipients, capped at 5");
        assert!(
            ICALToJsonAttribute::new(&MailetConfig::inline(
                "ICALToJsonAttribute",
                &[("maxJsonDocuments", "0")],
            ))
            .is_err()
        );
    }

    #[tokio::test]
    async fn every_document_shares_the_parsed_calendar_text() {
        let mut m = mail(
            "From: alice@example.com\r\n",
            None,
            &["a@example.org", "b@example.org"],
            &[("a.ics", ICS)],
        );
        let calendar = Arc::new(ical::ParsedCalendar::parse(ICS).unwrap());
        let mut parsed = BTreeMap::new();
        parsed.insert(
            "a.ics".to_string(),
            AttributeValue::Calendar(calendar.clone()),
        );
        m.set_attribute("icalendar", AttributeValue::Map(parsed));
        let got = jsons(&mut m).await;
        assert_eq!(got.len(), 2);
        let Some(AttributeValue::CalendarJson(docs)) = m.attribute("icalendarJson") else {
            panic!("no documents");
        };
        assert!(
            docs.documents()
                .all(|d| Arc::ptr_eq(d.ical, calendar.text()))
        );
    }

    #[test]
    fn documented_but_wrong_parameter_names_are_refused() {
        let cfg = |p: &[(&str, &str)]| {
            ICALToJsonAttribute::new(&MailetConfig::inline("ICALToJsonAttribute", p))
        };
        assert!(
            cfg(&[("sourceAttribute", "x")])
                .unwrap_err()
                .to_string()
                .contains("<source>")
        );
        assert!(cfg(&[("rawSource", "")]).is_err());
        let m = cfg(&[("source", "s"), ("rawSource", "r"), ("destination", "d")]).unwrap();
        assert_eq!(
            (
                m.source.as_str(),
                m.raw_source.as_str(),
                m.destination.as_str()
            ),
            ("s", "r", "d")
        );
    }
}
