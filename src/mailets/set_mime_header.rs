//! `SetMimeHeader` (James `org.apache.james.transport.mailets.SetMimeHeader`): sets a header
//! of the message, replacing every field of that name (JavaMail `setHeader`).
//!
//! ```xml
//! <mailet match="All" class="SetMimeHeader">
//!   <name>X-Collected-By</name>
//!   <value>mailetd</value>
//! </mailet>
//! ```

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::mail::Mail;
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

use crate::mail::headers;

/// Sets one header.
pub struct SetMimeHeader {
    name: String,
    value: String,
}

impl SetMimeHeader {
    /// `name` and `value` are required and non-blank (as James); the name must be a field name.
    pub fn build(config: &MailetConfig, _: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
        let name = config.require("name")?.trim().to_string();
        let value = config.require("value")?.trim().to_string();
        if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(config.error(format!(
                "parameter <name> of SetMimeHeader is {name:?}: a header name is printable ASCII without ':' or spaces"
            )));
        }
        if value.contains(['\r', '\n']) {
            return Err(config.error("parameter <value> of SetMimeHeader holds a line break"));
        }
        Ok(Box::new(SetMimeHeader { name, value }))
    }
}

#[async_trait]
impl Mailet for SetMimeHeader {
    async fn service(&self, mail: &mut Mail, _: &MailetContext) -> Result<(), MailetError> {
        headers::remove(&mut mail.message, &[&self.name]);
        headers::add(&mut mail.message, &self.name, &self.value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::mailets::testing::*;

    #[tokio::test]
    async fn replaces_every_field_of_the_name_and_keeps_the_body() {
        let mut m = mail("X-Tag: old\r\nSubject: s\r\nx-tag: older\r\n\r\nX-Tag: body\r\n");
        service(
            "SetMimeHeader",
            &[("name", "X-Tag"), ("value", "new")],
            &mut m,
        )
        .await
        .unwrap();
        assert_eq!(
            m.message,
            b"Subject: s\r\nX-Tag: new\r\n\r\nX-Tag: body\r\n"
        );
    }

    #[test]
    fn name_and_value_are_required() {
        assert!(build_err("SetMimeHeader", &[("value", "v")]).contains("<name>"));
        assert!(build_err("SetMimeHeader", &[("name", "X-A"), ("value", " ")]).contains("empty"));
        assert!(
            build_err("SetMimeHeader", &[("name", "X A"), ("value", "v")]).contains("header name")
        );
    }
}
