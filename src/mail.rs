//! The mail as it travels through mailetd: envelope, raw message, typed attributes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ical::ParsedCalendar;
use crate::ical_json::CalendarJsons;
use crate::outbox::OutboxJob;

/// An envelope address (`local@domain`). The domain is kept lowercased, the local part as given.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MailAddress {
    /// Local part, case preserved (RFC 5321 says it may be case-sensitive).
    pub local: String,
    /// Domain, lowercased; empty for a bare `postmaster`.
    pub domain: String,
}

impl MailAddress {
    /// Parses `local@domain` (angle brackets tolerated). The split is at the last `@`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_start_matches('<').trim_end_matches('>');
        if text.is_empty() {
            return Err("empty address".into());
        }
        if text.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!("invalid address {text:?}"));
        }
        match text.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(MailAddress {
                local: local.to_string(),
                domain: domain.to_ascii_lowercase(),
            }),
            Some(_) => Err(format!("invalid address {text:?}")),
            None => Ok(MailAddress {
                local: text.to_string(),
                domain: String::new(),
            }),
        }
    }

    /// James `MailAddress.equals`: local part compared case-insensitively, domain lowercased.
    pub fn same_as(&self, other: &MailAddress) -> bool {
        self.domain == other.domain && self.local.eq_ignore_ascii_case(&other.local)
    }

    /// The address with its local part lowercased (James `Username` normalisation).
    pub fn lowercased(&self) -> MailAddress {
        MailAddress {
            local: self.local.to_lowercase(),
            domain: self.domain.clone(),
        }
    }
}

impl fmt::Display for MailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.domain.is_empty() {
            f.write_str(&self.local)
        } else {
            write!(f, "{}@{}", self.local, self.domain)
        }
    }
}

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

/// Whether `address` is in a list of lowercase addresses and domains (a mailet's
/// `organizers`, `recipients`…): listed itself, or by its domain.
pub fn in_address_list(list: &[String], address: &str) -> bool {
    let address = address.to_ascii_lowercase();
    let domain = address.rsplit_once('@').map(|(_, d)| d);
    list.iter()
        .any(|item| *item == address || Some(item.as_str()) == domain)
}

/// Process-unique mail identifier, sortable by arrival.
pub type MailId = u64;

/// A mail inside mailetd: what James calls `Mail` (envelope, message, state, attributes).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mail {
    /// Spool identifier (0 until spooled).
    pub id: MailId,
    /// James mail name; splits get `name-!N` suffixes.
    pub name: String,
    /// Processor state (`root` on arrival, `ghost` when done).
    pub state: String,
    /// Envelope MAIL FROM; `None` is the null reverse-path `<>`.
    pub sender: Option<MailAddress>,
    /// Envelope RCPT TO addresses.
    pub recipients: Vec<MailAddress>,
    /// Typed attributes, by name.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// Client address.
    pub remote_addr: IpAddr,
    /// HELO/EHLO name the client gave.
    pub helo: String,
    /// Whether the session was under TLS when the mail was received.
    pub tls: bool,
    /// Reception time, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// Error message set by a failed mailet or a `ToProcessor notice`.
    pub error_message: Option<String>,
    /// DAV work decided by mailets; made durable together with the mail's completion.
    #[serde(default)]
    pub jobs: Vec<OutboxJob>,
    /// Raw RFC 5322 message, exactly as received (after dot-unstuffing).
    #[serde(skip)]
    pub message: Vec<u8>,
}

impl Mail {
    /// A new mail in state `root`.
    pub fn new(
        sender: Option<MailAddress>,
        recipients: Vec<MailAddress>,
        message: Vec<u8>,
    ) -> Self {
        Mail {
            id: 0,
            name: String::new(),
            state: crate::pipeline::ROOT.to_string(),
            sender,
            recipients,
            attributes: BTreeMap::new(),
            remote_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: String::new(),
            tls: false,
            received_at_ms: now_ms(),
            error_message: None,
            jobs: Vec::new(),
            message,
        }
    }

    /// Gets an attribute.
    pub fn attribute(&self, name: &str) -> Option<&AttributeValue> {
        self.attributes.get(name)
    }

    /// Sets an attribute, returning the previous value.
    pub fn set_attribute(
        &mut self,
        name: impl Into<String>,
        value: AttributeValue,
    ) -> Option<AttributeValue> {
        self.attributes.insert(name.into(), value)
    }

    /// The split point between header block and body (index of the body's first byte).
    pub fn header_end(&self) -> usize {
        header_end(&self.message)
    }

    /// The raw header block (including the blank line).
    pub fn header_block(&self) -> &[u8] {
        &self.message[..self.header_end()]
    }

    /// The envelope sender for logs and listings: the address, or `<>` for the null sender.
    pub fn sender_text(&self) -> String {
        self.sender
            .as_ref()
            .map_or_else(|| "<>".to_string(), ToString::to_string)
    }

    /// The envelope recipients for logs and listings, joined by `separator`.
    pub fn recipients_text(&self, separator: &str) -> String {
        self.recipients
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(separator)
    }

    /// The message size in bytes.
    pub fn size(&self) -> usize {
        self.message.len()
    }

    /// Serialises envelope + attributes + message for the spool: `u32 len | JSON | message`.
    pub fn to_spool_bytes(&self) -> Vec<u8> {
        let mut out = self.spool_head();
        out.extend_from_slice(&self.message);
        out
    }

    /// The part of [`Mail::to_spool_bytes`] before the message (`u32 len | JSON`), for a
    /// writer that appends the message from where it is instead of copying it.
    pub fn spool_head(&self) -> Vec<u8> {
        let mut out = vec![0; 4];
        serde_json::to_writer(&mut out, self).expect("mail metadata serialises");
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out
    }

    /// Reverse of [`Mail::to_spool_bytes`].
    pub fn from_spool_bytes(bytes: &[u8]) -> Result<Mail, String> {
        if bytes.len() < 4 {
            return Err("spool record too short".into());
        }
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        let meta = bytes.get(4..4 + len).ok_or("spool record truncated")?;
        let mut mail: Mail =
            serde_json::from_slice(meta).map_err(|e| format!("spool record metadata: {e}"))?;
        mail.message = bytes[4 + len..].to_vec();
        Ok(mail)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Index of the first body byte: just past the first empty line (CRLF CRLF or LF LF);
/// the whole message when there is no body.
pub fn header_end(message: &[u8]) -> usize {
    let mut i = 0;
    while i < message.len() {
        // a line starting at i
        if message[i..].starts_with(b"\r\n") {
            return i + 2;
        }
        if message[i] == b'\n' {
            return i + 1;
        }
        match memchr::memchr(b'\n', &message[i..]) {
            Some(p) => i += p + 1,
            None => return message.len(),
        }
    }
    message.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_parsing_lowercases_domain_only() {
        let a = MailAddress::parse("<Bob.Smith@Example.ORG>").unwrap();
        assert_eq!(a.to_string(), "Bob.Smith@example.org");
        assert!(a.same_as(&MailAddress::parse("bob.smith@example.org").unwrap()));
        assert!(MailAddress::parse("a b@c").is_err());
        assert_eq!(MailAddress::parse("postmaster").unwrap().domain, "");
    }

    #[test]
    fn spool_round_trip_keeps_attributes_and_bytes() {
        let mut mail = Mail::new(
            None,
            vec![MailAddress::parse("a@b.c").unwrap()],
            b"Subject: x\r\n\r\nbody\r\n".to_vec(),
        );
        let mut map = BTreeMap::new();
        map.insert(
            "invite.ics".to_string(),
            AttributeValue::Bytes(vec![0, 1, 2, 255]),
        );
        mail.set_attribute("raw", AttributeValue::Map(map));
        let back = Mail::from_spool_bytes(&mail.to_spool_bytes()).unwrap();
        assert_eq!(back.message, mail.message);
        assert_eq!(back.attributes, mail.attributes);
        assert_eq!(back.sender, None);
    }

    #[test]
    fn header_end_finds_blank_line() {
        assert_eq!(header_end(b"A: b\r\n\r\nbody"), 8);
        assert_eq!(header_end(b"A: b\n\nbody"), 6);
        assert_eq!(header_end(b"A: b\r\n"), 6);
    }
}
