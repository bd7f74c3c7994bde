//! Typed mail attributes (James `AttributeValue`) and the names James gives them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ical::ParsedCalendar;
use crate::ical_json::CalendarJsons;

/// A typed mail attribute value, as in James (`AttributeValue`). Survives the spool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum AttributeValue {
    /// A string.
    String(String),
    /// Raw bytes (base64 in the spool's JSON).
    Bytes(#[serde(with = "base64_bytes")] Vec<u8>),
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Long(i64),
    /// A float.
    Double(f64),
    /// Any JSON document.
    Json(serde_json::Value),
    /// A map of names to values (James `Map<String, AttributeValue>`).
    Map(BTreeMap<String, AttributeValue>),
    /// A list of values.
    List(Vec<AttributeValue>),
    /// A calendar parsed by `ICalendarParser`, shared by the mailets that read it (stored as
    /// its text).
    #[serde(with = "calendar_text")]
    Calendar(Arc<ParsedCalendar>),
    /// The iTIP JSON documents of `ICALToJsonAttribute` (a map of key to JSON bytes to its
    /// readers), each rendered on demand so that the calendar is held once, not once per
    /// recipient.
    #[serde(rename = "calendarjson", with = "shared")]
    CalendarJson(Arc<CalendarJsons>),
}

impl AttributeValue {
    /// The value as text, for matchers and logs (`HasMailAttributeWithValue`).
    pub fn to_text(&self) -> String {
        match self {
            AttributeValue::String(s) => s.clone(),
            AttributeValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            AttributeValue::Bool(b) => b.to_string(),
            AttributeValue::Long(n) => n.to_string(),
            AttributeValue::Double(n) => n.to_string(),
            AttributeValue::Json(v) => v.to_string(),
            AttributeValue::Map(m) => format!("{m:?}"),
            AttributeValue::List(l) => format!("{l:?}"),
            AttributeValue::Calendar(c) => c.text().to_string(),
            AttributeValue::CalendarJson(j) => format!("{j:?}"),
        }
    }

    /// The entries of a `Map` value, if it is one.
    pub fn as_map(&self) -> Option<&BTreeMap<String, AttributeValue>> {
        match self {
            AttributeValue::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The entries of a map of documents as `(key, text)`: a `Map`'s string, byte (read as
    /// UTF-8, lossily) and JSON values, other kinds left out; or the rendered documents of
    /// a `CalendarJson`. `None` for any other value. For the mailets that read what
    /// `ICALToJsonAttribute` (or any other mailet) wrote without caring how it is held.
    pub fn document_texts(&self) -> Option<Vec<(String, String)>> {
        match self {
            AttributeValue::Map(map) => Some(
                map.iter()
                    .filter_map(|(k, v)| {
                        let text = match v {
                            AttributeValue::Json(j) => j.to_string(),
                            other => String::from_utf8_lossy(other.as_bytes()?).into_owned(),
                        };
                        Some((k.clone(), text))
                    })
                    .collect(),
            ),
            AttributeValue::CalendarJson(jsons) => Some(
                jsons
                    .documents()
                    .map(|d| {
                        let text = String::from_utf8_lossy(&d.render()).into_owned();
                        (d.key.to_string(), text)
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The bytes of a `Bytes` or `String` value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            AttributeValue::Bytes(b) => Some(b),
            AttributeValue::String(s) => Some(s.as_bytes()),
            AttributeValue::Calendar(c) => Some(c.text().as_bytes()),
            _ => None,
        }
    }
}

mod base64_bytes {
    use base64::Engine;
    use base64::display::Base64Display;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        // written to the serializer as it is encoded (serde_json writes it through), not
        // first encoded whole: a decoded 25 MB calendar would be 34 MB more for a moment
        s.collect_str(&Base64Display::new(bytes, &STANDARD))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &Arc<T>, s: S) -> Result<S::Ok, S::Error> {
        T::serialize(value, s)
    }
    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Arc<T>, D::Error> {
        T::deserialize(d).map(Arc::new)
    }
}

mod calendar_text {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::ical::ParsedCalendar;

    pub fn serialize<S: Serializer>(
        calendar: &Arc<ParsedCalendar>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(calendar.text())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<ParsedCalendar>, D::Error> {
        let text = String::deserialize(d)?;
        ParsedCalendar::parse(text)
            .map(Arc::new)
            .map_err(serde::de::Error::custom)
    }
}

/// Well-known attribute names, as James spells them.
pub mod attributes {
    /// Set by ingest to the SMTP AUTH user, when there is one.
    pub const SMTP_AUTH_USER: &str = "org.apache.james.SMTPAuthUser";
    /// Set by ingest to `true` when the client is in `authorizedAddresses`.
    pub const SMTP_IS_AUTH_NETWORK: &str = "org.apache.james.SMTPIsAuthNetwork";
    /// Set when a mailet failed and the mail was routed to an error processor.
    pub const MAILET_ERROR: &str = "org.apache.james.MailetError";
    /// Count of propagated processing failures (James `mail-processing-error-count`).
    pub const PROCESSING_ERROR_COUNT: &str = "mail-processing-error-count";
}

/// The raw text of the calendar `key` (see [`crate::ical::calendar_key`]) in a map of decoded ICS bytes:
/// only that VCALENDAR when the entry holds several.
pub fn raw_calendar<'a>(
    raws: &'a BTreeMap<String, AttributeValue>,
    key: &str,
) -> Option<Cow<'a, str>> {
    let (entry, index) = match raws.get(key) {
        Some(entry) => (entry, 0),
        None => {
            let (base, n) = key.rsplit_once('#')?;
            let n: usize = n.parse().ok().filter(|n| *n >= 2)?;
            (raws.get(base)?, n - 1)
        }
    };
    let text = crate::ical::bytes_to_text(entry.as_bytes()?);
    let ranges = crate::ical::calendar_ranges(&text);
    let range = ranges.get(index)?.clone();
    if range == (0..text.len()) {
        return Some(text);
    }
    Some(match text {
        Cow::Borrowed(t) => Cow::Borrowed(&t[range]),
        Cow::Owned(t) => Cow::Owned(t[range].to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ical::calendar_key;

    #[test]
    fn the_nth_calendar_of_a_map_entry_is_found_by_its_key() {
        let one = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:1\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let two = one.replace("UID:1", "UID:2");
        let text = format!("\r\n{one}{two}\r\n");
        let mut raws = BTreeMap::new();
        raws.insert(
            "a.ics".to_string(),
            AttributeValue::Bytes(text.clone().into_bytes()),
        );
        assert_eq!(raw_calendar(&raws, "a.ics").as_deref(), Some(one));
        assert_eq!(
            raw_calendar(&raws, &calendar_key("a.ics", 1)).as_deref(),
            Some(two.as_str())
        );
        assert_eq!(raw_calendar(&raws, "a.ics#3"), None);
        assert_eq!(raw_calendar(&raws, "b.ics"), None);
    }
}
