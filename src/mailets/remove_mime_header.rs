//! `RemoveMimeHeader`: removes headers (every occurrence) from the message; the body stays
//! byte-identical.
//!
//! ```xml
//! <mailet match="All" class="RemoveMimeHeader">
//!   <name>bcc</name>  <!-- comma-separated list -->
//! </mailet>
//! ```

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::mail::Mail;
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

use crate::mail::headers;

/// Removes the named headers.
pub struct RemoveMimeHeader {
    names: Vec<String>,
}

impl RemoveMimeHeader {
    /// `name` (a comma-separated list) is required.
    pub fn build(config: &MailetConfig, _: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
        let names: Vec<String> = config
            .require("name")?
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        Ok(Box::new(RemoveMimeHeader { names }))
    }
}

#[async_trait]
impl Mailet for RemoveMimeHeader {
    async fn service(&self, mail: &mut Mail, _: &MailetContext) -> Result<(), MailetError> {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        headers::remove(&mut mail.message, &names);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::mailets::testing::*;

    #[tokio::test]
    async fn removes_listed_headers() {
        let mut m = mail("Bcc: a@x.test\r\nSubject: s\r\nX-A: 1\r\n\r\nBcc: body\r\n");
        service("RemoveMimeHeader", &[("name", "bcc, x-a")], &mut m)
            .await
            .unwrap();
        assert_eq!(m.message, b"Subject: s\r\n\r\nBcc: body\r\n");
    }
}
