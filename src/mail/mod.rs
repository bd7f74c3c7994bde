//! The mail as it travels through mailetd: envelope, raw message, typed attributes, the
//! processing states, its header helpers and the outbox jobs it yields. This is the
//! foundation every other layer builds on; it imports nothing above it.

pub mod attribute;
pub mod headers;
pub mod job;
pub mod state;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use crate::address::{MailAddress, in_address_list};
pub use attribute::{AttributeValue, attributes};
use job::OutboxJob;

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
            state: state::ROOT.to_string(),
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

/// Lowercase hex of `bytes` (digests used as keys and names).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
