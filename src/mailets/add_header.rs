//! `AddHeader`: adds a header at the end of the header block; the body stays byte-identical.
//!
//! ```xml
//! <mailet match="All" class="AddHeader">
//!   <name>X-Collected-By</name>
//!   <value>mailetd</value>
//! </mailet>
//! ```

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::mail::Mail;
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

use crate::mail::headers;

/// Adds `name: value`.
pub struct AddHeader {
    name: String,
    value: String,
}

impl AddHeader {
    /// `name` (a valid header name) and `value` are required.
    pub fn build(config: &MailetConfig, _: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
        let name = config.require("name")?.trim().to_string();
        if name.bytes().any(|b| !(33..=126).contains(&b) || b == b':') {
            return Err(config.error(format!(
                "AddHeader <name> {name:?} is not a header name: expected printable ASCII without ':' or spaces"
            )));
        }
        let value = config
            .get("value")
            .ok_or_else(|| config.error("mailet AddHeader requires the parameter <value>"))?;
        if value.contains(['\r', '\n']) {
            return Err(config.error("AddHeader <value> must be on one line"));
        }
        Ok(Box::new(AddHeader {
            name,
            value: value.to_string(),
        }))
    }
}

#[async_trait]
impl Mailet for AddHeader {
    async fn service(&self, mail: &mut Mail, _: &MailetContext) -> Result<(), MailetError> {
        headers::add(&mut mail.message, &self.name, &self.value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::mailets::testing::*;

    #[tokio::test]
    async fn adds_header_keeps_body() {
        let mut m = mail("Subject: s\r\n\r\nbody\r\n");
        service("AddHeader", &[("name", "X-Seen"), ("value", "yes")], &mut m)
            .await
            .unwrap();
        assert_eq!(m.message, b"Subject: s\r\nX-Seen: yes\r\n\r\nbody\r\n");
        assert!(
            build_err("AddHeader", &[("name", "X Bad"), ("value", "1")])
                .contains("is not a header name")
        );
    }
}
