//! `ICalendarParser`: parses the calendar bytes of a map attribute into calendars.
//!
//! ```xml
//! <mailet match="All" class="ICalendarParser">
//!     <sourceAttribute>rawIcalendar2</sourceAttribute>
//!     <destinationAttribute>icalendar2</destinationAttribute>
//!     <onMailetException>ignore</onMailetException>
//! </mailet>
//! ```
//!
//! `sourceAttribute` (default `icsAttachments`, a map of decoded ICS bytes, as
//! `MimeDecodingMailet` leaves them) → `destinationAttribute` (default `calendars`), a map
//! under the same keys whose values are the parsed calendars, written even when empty, as
//! James does. Each calendar is parsed once per mail: `ICalendarParser`'s value is read by
//! `ICALToHeader`, `ICALToJsonAttribute` and `CalDavCollect`, which share its text instead
//! of copying it (its text value, and its stored form in a repository, is the decoded
//! calendar text). An entry holding several VCALENDAR objects one after the other gives
//! one calendar each, under `key`, `key#2`… (`ICALToJsonAttribute` finds each one's own raw
//! text under the same key).
//!
//! Parsing is lenient like ical4j's relaxed mode (unknown and malformed lines skipped,
//! Outlook's extensions kept, a missing `END` at the end tolerated). Bytes are read as
//! UTF-8, or as Windows-1252 when they are not UTF-8 (an undeclared legacy charset; a
//! declared one was already converted by `MimeDecodingMailet`). An entry that is not an
//! iCalendar object is dropped with one log line naming the mail, the entry and the reason;
//! the mailet itself never fails on content.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::ical;
use crate::mail::{AttributeValue, Mail};
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// Parses each entry of a map of ICS bytes; keeps the ones that are calendars.
#[derive(Debug)]
pub struct ICalendarParser {
    source: String,
    destination: String,
}

impl ICalendarParser {
    /// Reads and checks the parameters.
    pub fn build(
        config: &MailetConfig,
        _ctx: &MailetContext,
    ) -> Result<Box<dyn Mailet>, ConfigError> {
        Ok(Box::new(Self::new(config)?))
    }

    fn new(config: &MailetConfig) -> Result<Self, ConfigError> {
        if let Some(p) = config.parameter("destAttribute") {
            // the James docs name it so, the code does not: say which one works
            return Err(p.position.error(
                "ICalendarParser has no <destAttribute> (a mistake of the James docs): \
                 write <destinationAttribute>",
            ));
        }
        let non_empty = |name: &str, default: &str| -> Result<String, ConfigError> {
            match config.get(name) {
                None => Ok(default.to_string()),
                Some(_) => Ok(config.require(name)?.trim().to_string()),
            }
        };
        Ok(ICalendarParser {
            source: non_empty("sourceAttribute", "icsAttachments")?,
            destination: non_empty("destinationAttribute", "calendars")?,
        })
    }
}

#[async_trait]
impl Mailet for ICalendarParser {
    async fn service(&self, mail: &mut Mail, _ctx: &MailetContext) -> Result<(), MailetError> {
        let Some(entries) = mail
            .attribute(&self.source)
            .and_then(AttributeValue::as_map)
        else {
            return Ok(());
        };
        let mut calendars = BTreeMap::new();
        for (key, value) in entries {
            let Some(bytes) = value.as_bytes() else {
                tracing::warn!(mail = %mail.name, %key, "calendar entry dropped: not bytes");
                continue;
            };
            let whole = ical::bytes_to_text(bytes);
            for (index, range) in ical::calendar_ranges(&whole).into_iter().enumerate() {
                let key = ical::calendar_key(key, index);
                let text: Arc<str> = Arc::from(&whole[range]);
                match ical::ParsedCalendar::parse(text) {
                    Ok(calendar) => {
                        calendars.insert(key, AttributeValue::Calendar(Arc::new(calendar)));
                    }
                    Err(reason) => {
                        tracing::warn!(mail = %mail.name, %key, "unparsable calendar dropped: {reason}");
                    }
                }
            }
        }
        mail.set_attribute(self.destination.clone(), AttributeValue::Map(calendars));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTLOOK: &str = "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nPRODID:Microsoft Exchange Server 2010\r\n\
VERSION:2.0\r\nBEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time\r\nBEGIN:STANDARD\r\n\
DTSTART:16010101T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\n\
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n\
BEGIN:VEVENT\r\nORGANIZER;CN=Jean Dupont:mailto:jean@example.com\r\n\
DESCRIPTION;LANGUAGE=fr-FR:Ordre du jour :\\n- point 1\\n- point 2 avec une ligne \r\n qui continue\r\n\
UID:040000008200E00074C5B7101A82E00800000000\r\nSUMMARY;LANGUAGE=fr-FR:Réunion\r\n\
DTSTART;TZID=W. Europe Standard Time:20240115T100000\r\nX-MICROSOFT-CDO-BUSYSTATUS:TENTATIVE\r\n\
X-MS-OLK-CONFTYPE:0\r\nSEQUENCE:0\r\nDTSTAMP:20240110T090000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    async fn run(params: &[(&str, &str)], entries: &[(&str, &[u8])]) -> Mail {
        let m = ICalendarParser::new(&MailetConfig::inline("ICalendarParser", params)).unwrap();
        let mut mail = Mail::new(None, vec![], b"Subject: x\r\n\r\n".to_vec());
        let map = entries
            .iter()
            .map(|(k, v)| (k.to_string(), AttributeValue::Bytes(v.to_vec())))
            .collect();
        mail.set_attribute("icsAttachments", AttributeValue::Map(map));
        m.service(&mut mail, &MailetContext::for_tests(std::env::temp_dir()))
            .await
            .unwrap();
        mail
    }

    #[tokio::test]
    async fn keeps_calendars_under_their_keys_and_drops_the_rest() {
        let mail = run(
            &[],
            &[
                ("invite.ics", OUTLOOK.as_bytes()),
                (
                    "broken.ics",
                    b"VERSION:2.0\r\nBEGIN:VEVENT\r\nEND:VEVENT\r\n",
                ),
            ],
        )
        .await;
        let calendars = mail.attribute("calendars").unwrap().as_map().unwrap();
        assert_eq!(calendars.keys().collect::<Vec<_>>(), ["invite.ics"]);
        let text = calendars["invite.ics"].to_text();
        assert!(
            text.contains("SUMMARY;LANGUAGE=fr-FR:Réunion\r\n"),
            "{text}"
        );
        assert!(text.contains("X-MS-OLK-CONFTYPE:0"), "{text}");
        assert!(text.contains("TZID:W. Europe Standard Time"), "{text}");
        let reparsed = ical::parse(&text).unwrap();
        let description = ical::first_event(&reparsed)
            .and_then(|e| e.property(&calcard::icalendar::ICalendarProperty::Description))
            .and_then(|p| p.values.first())
            .and_then(|v| v.as_text())
            .unwrap();
        assert!(
            description.contains("ligne qui continue"),
            "{description:?}"
        );
        let fields = ical::SchedulingFields::of(&reparsed).unwrap();
        assert_eq!(
            fields.uid.as_deref(),
            Some("040000008200E00074C5B7101A82E00800000000")
        );
    }

    #[tokio::test]
    async fn undeclared_latin1_keeps_its_accents() {
        let latin1 = b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:u\r\nSUMMARY:R\xe9union\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let mail = run(
            &[("destinationAttribute", "out")],
            &[("a", latin1.as_slice())],
        )
        .await;
        let text = mail.attribute("out").unwrap().as_map().unwrap()["a"].to_text();
        assert!(text.contains("SUMMARY:Réunion"), "{text}");
    }

    #[tokio::test]
    async fn empty_result_is_still_written() {
        let mail = run(&[], &[("x", b"hello".as_slice())]).await;
        assert_eq!(
            mail.attribute("calendars"),
            Some(&AttributeValue::Map(BTreeMap::new()))
        );
    }

    #[test]
    fn parameter_names_follow_the_code_not_the_docs() {
        let cfg =
            |p: &[(&str, &str)]| ICalendarParser::new(&MailetConfig::inline("ICalendarParser", p));
        let m = cfg(&[]).unwrap();
        assert_eq!(
            (m.source.as_str(), m.destination.as_str()),
            ("icsAttachments", "calendars")
        );
        assert!(
            cfg(&[("destAttribute", "x")])
                .unwrap_err()
                .to_string()
                .contains("destinationAttribute")
        );
        assert!(cfg(&[("sourceAttribute", " ")]).is_err());
    }
}
