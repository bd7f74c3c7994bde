//! The iTIP JSON documents of `ICALToJsonAttribute` (James's `ICALAttributeDTO`: one per
//! calendar and envelope recipient), as `CalDavCollect` and the outbox read them.
//!
//! A mail to a thousand recipients has a thousand documents that differ only in
//! `recipient`: they are kept as one [`CalendarJsons`] holding each calendar's text once
//! (shared with `ICalendarParser`'s [`ParsedCalendar`]) and rendered to JSON bytes one at
//! a time, when a reader asks. Stored (spool, mail repository) in the same shape, so a
//! repository file holds each calendar once too.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::address::MailAddress;
use crate::ical::{ParsedCalendar, SchedulingFields};

/// The documents of one mail: sender and reply-to, the calendars, one entry per
/// (calendar, recipient) under a random key (James uses random UUIDs).
#[derive(Clone, Default, PartialEq)]
pub struct CalendarJsons {
    sender: String,
    reply_to: String,
    calendars: Vec<JsonCalendar>,
    documents: Vec<Document>,
}

#[derive(Clone, PartialEq)]
struct JsonCalendar {
    /// The `ical` field: the raw decoded text.
    ical: Arc<str>,
    /// `ical` parsed (the calendar `ICalendarParser` made when it is the same text); `None`
    /// when it is no calendar, which `CalDavCollect` skips as tmail does.
    parsed: Option<Arc<ParsedCalendar>>,
    /// `uid`, `sequence`, `dtstamp`, `method`, `recurrence-id`: from the parsed calendar.
    fields: SchedulingFields,
}

#[derive(Clone, PartialEq)]
struct Document {
    key: String,
    calendar: usize,
    recipient: MailAddress,
}

/// One document, borrowed from its [`CalendarJsons`].
pub struct DocumentRef<'a> {
    /// Its key in the attribute map.
    pub key: &'a str,
    /// The `ical` text, shared.
    pub ical: &'a Arc<str>,
    /// `ical` parsed, when it is a calendar.
    pub parsed: Option<&'a Arc<ParsedCalendar>>,
    /// Every other field.
    pub document: ItipDocument,
}

impl DocumentRef<'_> {
    /// The JSON bytes James would have stored for it.
    pub fn render(&self) -> Vec<u8> {
        self.document.render(self.ical)
    }
}

/// The fields of one iTIP JSON document except `ical` (which is shared): what an outbox
/// job keeps per recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItipDocument {
    /// The first `From:` address, else the envelope sender.
    pub sender: String,
    /// The envelope recipient.
    pub recipient: String,
    /// The first valid `Reply-To:` address, else the sender.
    #[serde(rename = "replyTo")]
    pub reply_to: String,
    /// The first VEVENT's UID.
    pub uid: Option<String>,
    /// The first VEVENT's SEQUENCE, `"0"` when absent.
    pub sequence: String,
    /// The first VEVENT's DTSTAMP.
    pub dtstamp: Option<String>,
    /// The calendar's METHOD.
    pub method: Option<String>,
    /// The first VEVENT's RECURRENCE-ID.
    #[serde(rename = "recurrence-id")]
    pub recurrence_id: Option<String>,
}

/// The JSON James's `ICALAttributeDTO` serialises, field for field and in its order.
#[derive(Serialize)]
struct IcalJson<'a> {
    ical: &'a str,
    sender: &'a str,
    recipient: &'a str,
    #[serde(rename = "replyTo")]
    reply_to: &'a str,
    uid: Option<&'a str>,
    sequence: &'a str,
    dtstamp: Option<&'a str>,
    method: Option<&'a str>,
    #[serde(rename = "recurrence-id")]
    recurrence_id: Option<&'a str>,
}

impl ItipDocument {
    /// The JSON bytes with `ical` as the calendar text.
    pub fn render(&self, ical: &str) -> Vec<u8> {
        serde_json::to_vec(&IcalJson {
            ical,
            sender: &self.sender,
            recipient: &self.recipient,
            reply_to: &self.reply_to,
            uid: self.uid.as_deref(),
            sequence: &self.sequence,
            dtstamp: self.dtstamp.as_deref(),
            method: self.method.as_deref(),
            recurrence_id: self.recurrence_id.as_deref(),
        })
        .expect("strings serialise")
    }
}

impl CalendarJsons {
    /// No documents yet, for a mail with this `sender` and `replyTo`.
    pub fn new(sender: String, reply_to: String) -> Self {
        CalendarJsons {
            sender,
            reply_to,
            ..CalendarJsons::default()
        }
    }

    /// Adds a calendar; returns its index for [`CalendarJsons::add_document`].
    pub fn add_calendar(
        &mut self,
        ical: Arc<str>,
        parsed: Option<Arc<ParsedCalendar>>,
        fields: SchedulingFields,
    ) -> usize {
        self.calendars.push(JsonCalendar {
            ical,
            parsed,
            fields,
        });
        self.calendars.len() - 1
    }

    /// Adds the document of calendar `calendar` for `recipient`, under a random key.
    pub fn add_document(&mut self, calendar: usize, recipient: MailAddress) {
        let key = uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .to_string();
        self.documents.push(Document {
            key,
            calendar,
            recipient,
        });
    }

    /// How many documents.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// The documents, in the order they were added.
    pub fn documents(&self) -> impl Iterator<Item = DocumentRef<'_>> {
        self.documents.iter().map(|d| {
            let calendar = &self.calendars[d.calendar];
            let fields = &calendar.fields;
            DocumentRef {
                key: &d.key,
                ical: &calendar.ical,
                parsed: calendar.parsed.as_ref(),
                document: ItipDocument {
                    sender: self.sender.clone(),
                    recipient: d.recipient.to_string(),
                    reply_to: self.reply_to.clone(),
                    uid: fields.uid.clone(),
                    sequence: fields.sequence.clone().unwrap_or_else(|| "0".into()),
                    dtstamp: fields.dtstamp.clone(),
                    method: fields.method.clone(),
                    recurrence_id: fields.recurrence_id.clone(),
                },
            }
        })
    }
}

impl fmt::Debug for CalendarJsons {
    // the calendars can be megabytes: their sizes, not their text
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CalendarJsons")
            .field("documents", &self.documents.len())
            .field(
                "calendar_bytes",
                &self
                    .calendars
                    .iter()
                    .map(|c| c.ical.len())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The stored shape: each calendar once, documents by calendar index.
#[derive(Serialize, Deserialize)]
struct Stored<S, D> {
    sender: String,
    #[serde(rename = "replyTo")]
    reply_to: String,
    calendars: Vec<StoredCalendar<S>>,
    /// `[key, calendar index, recipient]`.
    documents: Vec<D>,
}

#[derive(Serialize, Deserialize)]
struct StoredCalendar<S> {
    ical: S,
    fields: SchedulingFields,
}

impl Serialize for CalendarJsons {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Stored {
            sender: self.sender.clone(),
            reply_to: self.reply_to.clone(),
            calendars: self
                .calendars
                .iter()
                .map(|c| StoredCalendar {
                    ical: &*c.ical,
                    fields: c.fields.clone(),
                })
                .collect(),
            documents: self
                .documents
                .iter()
                .map(|d| (&d.key, d.calendar, d.recipient.to_string()))
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for CalendarJsons {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let stored = Stored::<String, (String, usize, String)>::deserialize(d)?;
        let calendars: Vec<JsonCalendar> = stored
            .calendars
            .into_iter()
            .map(|c| {
                let ical: Arc<str> = c.ical.into();
                JsonCalendar {
                    parsed: ParsedCalendar::parse(ical.clone()).ok().map(Arc::new),
                    ical,
                    fields: c.fields,
                }
            })
            .collect();
        let mut documents = Vec::with_capacity(stored.documents.len());
        for (key, calendar, recipient) in stored.documents {
            if calendar >= calendars.len() {
                return Err(serde::de::Error::custom(format!(
                    "calendar JSON {key} names calendar {calendar} of {}",
                    calendars.len()
                )));
            }
            let recipient = MailAddress::parse(&recipient).map_err(serde::de::Error::custom)?;
            documents.push(Document {
                key,
                calendar,
                recipient,
            });
        }
        Ok(CalendarJsons {
            sender: stored.sender,
            reply_to: stored.reply_to,
            calendars,
            documents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ICS: &str = "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:u\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    #[test]
    fn stored_shape_holds_each_calendar_once_and_reads_back() {
        let calendar = Arc::new(ParsedCalendar::parse(ICS).unwrap());
        let mut jsons = CalendarJsons::new("a@x.example".into(), "a@x.example".into());
        let fields = calendar.facts().fields.clone().unwrap();
        let i = jsons.add_calendar(calendar.text().clone(), Some(calendar.clone()), fields);
        for n in 0..50 {
            jsons.add_document(i, MailAddress::parse(&format!("r{n}@y.example")).unwrap());
        }
        let stored = serde_json::to_string(&jsons).unwrap();
        assert_eq!(stored.matches("BEGIN:VCALENDAR").count(), 1, "{stored}");
        let back: CalendarJsons = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, jsons);
        let first = back.documents().next().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&first.render()).unwrap();
        assert_eq!(json["ical"], ICS);
        assert_eq!(json["recipient"], "r0@y.example");
        assert_eq!(json["sequence"], "0");
        assert_eq!(json["uid"], "u");
        assert!(first.parsed.is_some());
    }
}
