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
//! (base64, quoted-printable) undone; an entry that cannot be decoded is dropped.
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
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
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
    async fn service(&self, mail: &mut Mail, _ctx: &MailetContext) -> Result<(), MailetError> {
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
                Ok(content) => {
                    decoded.insert(key.clone(), AttributeValue::Bytes(content));
                }
                Err(reason) => {
                    tracing::info!(mail = %mail.name, %key, "cannot decode MIME part, entry dropped: {reason}");
                }
            }
        }
        mail.set_attribute(self.attribute.clone(), AttributeValue::Map(decoded));
        Ok(())
    }
}

/// The body of one raw MIME part, transfer-decoded, in UTF-8 when it is text with a
/// declared charset.
pub fn decode_part(raw: &[u8]) -> Result<Vec<u8>, String> {
    let message = MessageParser::new()
        .with_mime_headers()
        .parse(raw)
        .ok_or("empty MIME part")?;
    let part = &message.parts[0];
    let body = raw
        .get(part.offset_body as usize..part.offset_end as usize)
        .unwrap_or_default();
    let encoding = part
        .content_transfer_encoding()
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let content = match encoding.as_str() {
        "base64" => base64_decode(body).ok_or("invalid base64 body")?,
        "quoted-printable" => {
            quoted_printable_decode(body).ok_or("invalid quoted-printable body")?
        }
        _ => body.to_vec(),
    };
    let charset = part.content_type().and_then(|ct| {
        let textual = ct.ctype().eq_ignore_ascii_case("text")
            || (ct.ctype().eq_ignore_ascii_case("application")
                && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("ics")));
        textual.then(|| ct.attribute("charset")).flatten()
    });
    Ok(match charset {
        Some(cs) if !is_utf8_compatible(cs) => match charset_decoder(cs.as_bytes()) {
            Some(to_utf8) => to_utf8(&content).into_bytes(),
            None => content,
        },
        _ => content,
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
