//! `ContactExtractor` (James `org.apache.james.transport.mailets.ContactExtractor`): puts the
//! envelope sender and the To, Cc and Bcc addresses of the message into a mail attribute, as
//! the JSON text `{"userEmail": "<sender>", "emails": ["Name <addr>", …]}`, for a later
//! mailet (in James, `AmqpForwardAttribute` to OpenPaaS's contact collection).
//!
//! ```xml
//! <mailet match="All" class="ContactExtractor">
//!   <attribute>ExtractedContacts</attribute>
//! </mailet>
//! ```
//!
//! As James: nothing is set for a null sender or when the headers name no recipient; each
//! address is written as JavaMail's `InternetAddress.toString()` with the display name
//! decoded (`Bob Smith <bob@example.org>`, the name quoted when it holds specials).

use async_trait::async_trait;
use mail_parser::MessageParser;

use crate::config::ConfigError;
use crate::mail::{AttributeValue, Mail};
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// Extracts the contacts into an attribute.
pub struct ContactExtractor {
    attribute: String,
}

impl ContactExtractor {
    /// `attribute` is required.
    pub fn build(config: &MailetConfig, _: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
        Ok(Box::new(ContactExtractor {
            attribute: config.require("attribute")?.trim().to_string(),
        }))
    }
}

/// The To, Cc and Bcc addresses of the header block, in that order.
fn header_recipients(message: &[u8]) -> Vec<String> {
    let Some(parsed) = MessageParser::new()
        .with_address_headers()
        .parse_headers(message)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for header in [parsed.to(), parsed.cc(), parsed.bcc()]
        .into_iter()
        .flatten()
    {
        for addr in header.iter() {
            let Some(address) = addr.address.as_deref().filter(|a| !a.is_empty()) else {
                continue;
            };
            let name = addr.name.as_deref().map(str::trim).unwrap_or("");
            out.push(if name.is_empty() {
                address.to_string()
            } else {
                format!("{} <{address}>", quote_phrase(name))
            });
        }
    }
    out
}

/// JavaMail's `quotePhrase`: quoted (with `"` and `\` escaped) when it holds RFC 822 specials.
fn quote_phrase(name: &str) -> String {
    if name.contains(|c: char| "()<>@,;:\\\".[]".contains(c) || c.is_ascii_control()) {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        name.to_string()
    }
}

#[async_trait]
impl Mailet for ContactExtractor {
    async fn service(&self, mail: &mut Mail, _: &MailetContext) -> Result<(), MailetError> {
        let Some(sender) = &mail.sender else {
            return Ok(());
        };
        let emails = header_recipients(mail.header_block());
        if emails.is_empty() {
            return Ok(());
        }
        let json = serde_json::json!({ "userEmail": sender.to_string(), "emails": emails });
        mail.set_attribute(
            self.attribute.clone(),
            AttributeValue::String(json.to_string()),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::mail::AttributeValue;
    use crate::mailets::testing::*;

    #[tokio::test]
    async fn sender_and_header_recipients_become_json() {
        let mut m = mail(
            "From: a@remote.test\r\nTo: Bob Smith <bob@example.org>, carol@example.org\r\nCc: \"Doe, Jane\" <jane@example.org>\r\nBcc: =?UTF-8?Q?Ren=C3=A9?= <rene@example.org>\r\nSubject: s\r\n\r\nTo: body@example.org\r\n",
        );
        service(
            "ContactExtractor",
            &[("attribute", "ExtractedContacts")],
            &mut m,
        )
        .await
        .unwrap();
        let Some(AttributeValue::String(text)) = m.attribute("ExtractedContacts") else {
            panic!("no attribute");
        };
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "userEmail": "a@remote.test",
                "emails": ["Bob Smith <bob@example.org>", "carol@example.org", "\"Doe, Jane\" <jane@example.org>", "René <rene@example.org>"]
            })
        );
    }

    #[tokio::test]
    async fn nothing_without_sender_or_recipients() {
        let mut m = mail("Subject: no recipients\r\n\r\n");
        service("ContactExtractor", &[("attribute", "c")], &mut m)
            .await
            .unwrap();
        assert!(m.attribute("c").is_none());
        let mut m = mail("To: bob@example.org\r\n\r\n");
        m.sender = None;
        service("ContactExtractor", &[("attribute", "c")], &mut m)
            .await
            .unwrap();
        assert!(m.attribute("c").is_none());
        assert!(build_err("ContactExtractor", &[]).contains("<attribute>"));
    }
}
