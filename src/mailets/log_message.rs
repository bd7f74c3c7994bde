//! `LogMessage`: logs the mail (at INFO) and, by default, lets it continue.
//!
//! ```xml
//! <mailet match="All" class="LogMessage">
//!   <passThrough>true</passThrough>  <!-- false: the mail is then deleted (ghost) -->
//!   <headers>true</headers>
//!   <body>true</body>
//!   <maxBody>0</maxBody>             <!-- bytes of body logged; 0 = all -->
//!   <comment>arrived</comment>
//! </mailet>
//! ```

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::mail::Mail;
use crate::pipeline::{GHOST, Mailet, MailetConfig, MailetContext, MailetError};

/// Logs envelope, headers and body.
pub struct LogMessage {
    pass_through: bool,
    headers: bool,
    body: bool,
    max_body: usize,
    comment: Option<String>,
}

impl LogMessage {
    /// All parameters are optional.
    pub fn build(config: &MailetConfig, _: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
        Ok(Box::new(LogMessage {
            pass_through: config.get_bool("passThrough", true)?,
            headers: config.get_bool("headers", true)?,
            body: config.get_bool("body", true)?,
            max_body: config.get_u64("maxBody", 0)? as usize,
            comment: config.get("comment").map(str::to_string),
        }))
    }
}

#[async_trait]
impl Mailet for LogMessage {
    async fn service(&self, mail: &mut Mail, _: &MailetContext) -> Result<(), MailetError> {
        let mut text = format!(
            "Logging mail {}{}: from {} to {}",
            mail.name,
            self.comment
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default(),
            mail.sender_text(),
            mail.recipients_text(", ")
        );
        let split = mail.header_end();
        if self.headers {
            text.push('\n');
            text.push_str(String::from_utf8_lossy(&mail.message[..split]).trim_end());
        }
        if self.body {
            let body = &mail.message[split..];
            let shown = if self.max_body > 0 {
                &body[..body.len().min(self.max_body)]
            } else {
                body
            };
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(shown));
        }
        tracing::info!("{text}");
        if !self.pass_through {
            mail.state = GHOST.to_string();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::mailets::testing::*;

    #[tokio::test]
    async fn pass_through_or_ghost() {
        let mut m = mail("Subject: x\r\n\r\nbody");
        service("LogMessage", &[("comment", "hi"), ("maxBody", "2")], &mut m)
            .await
            .unwrap();
        assert_eq!(m.state, "root");
        service("LogMessage", &[("passThrough", "false")], &mut m)
            .await
            .unwrap();
        assert_eq!(m.state, "ghost");
        assert!(
            build_err("LogMessage", &[("headers", "maybe")]).contains("expected true or false")
        );
    }
}
