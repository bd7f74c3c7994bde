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
//! bytes under the same keys), `destination` (default `icalendarJson`).
//!
//! The output is a map random UUID → UTF-8 JSON bytes, set only when not empty:
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

use async_trait::async_trait;
use mail_parser::{Address, MessageParser};
use serde::Serialize;

use crate::config::ConfigError;
use crate::ical;
use crate::mail::{AttributeValue, Mail, MailAddress};
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// Builds the per-recipient iTIP JSON documents from parsed and raw calendars.
#[derive(Debug)]
pub struct ICALToJsonAttribute {
    source: String,
    raw_source: String,
    destination: String,
}

/// The JSON James's `ICALAttributeDTO` serialises, field for field.
#[derive(Serialize)]
struct IcalJson<'a> {
    ical: &'a str,
    sender: &'a str,
    recipient: String,
    #[serde(rename = "replyTo")]
    reply_to: &'a str,
    uid: Option<&'a str>,
    sequence: &'a str,
    dtstamp: Option<&'a str>,
    method: Option<&'a str>,
    #[serde(rename = "recurrence-id")]
    recurrence_id: Option<&'a str>,
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
        let mut seen = HashSet::new();
        let mut out = BTreeMap::new();
        for (key, calendar) in calendars {
            let Some(ical_text) = ical::raw_calendar(raws, key) else {
                tracing::debug!(mail = %mail.name, %key, "calendar without raw entry skipped");
                continue;
            };
            let fields = ical::scheduling_fields(&calendar.to_text()).unwrap_or(None);
            let Some(fields) = fields else {
                tracing::debug!(mail = %mail.name, %key, "calendar without VEVENT or VTODO skipped");
                continue;
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
            for recipient in &mail.recipients {
                let json = IcalJson {
                    ical: &ical_text,
                    sender: &sender,
                    recipient: recipient.to_string(),
                    reply_to: &reply_to,
                    uid: fields.uid.as_deref(),
                    sequence: fields.sequence.as_deref().unwrap_or("0"),
                    dtstamp: fields.dtstamp.as_deref(),
                    method: fields.method.as_deref(),
                    recurrence_id: fields.recurrence_id.as_deref(),
                };
                let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
                out.insert(
                    id.to_string(),
                    AttributeValue::Bytes(serde_json::to_vec(&json)?),
                );
            }
        }
        if !out.is_empty() {
            mail.set_attribute(self.destination.clone(), AttributeValue::Map(out));
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
        let mut out: Vec<Value> = mail
            .attribute("icalendarJson")
            .and_then(AttributeValue::as_map)
            .map(|m| {
                m.values()
                    .map(|v| serde_json::from_slice(v.as_bytes().unwrap()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
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
