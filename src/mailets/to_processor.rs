//! `ToProcessor`: hands the mail to another processor.
//!
//! ```xml
//! <mailet match="RecipientIsLocal" class="ToProcessor">
//!   <processor>local-delivery</processor>
//!   <notice>optional text appended to the error message</notice>
//! </mailet>
//! ```

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::mail::Mail;
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// Sets the mail's state to `processor`; the container checks at startup that it exists.
pub struct ToProcessor {
    processor: String,
    notice: Option<String>,
}

impl ToProcessor {
    /// `processor` is required; `notice` is optional.
    pub fn build(config: &MailetConfig, _: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
        Ok(Box::new(ToProcessor {
            processor: config.require("processor")?.trim().to_string(),
            notice: config
                .get("notice")
                .map(str::to_string)
                .filter(|n| !n.is_empty()),
        }))
    }
}

#[async_trait]
impl Mailet for ToProcessor {
    async fn service(&self, mail: &mut Mail, _: &MailetContext) -> Result<(), MailetError> {
        if let Some(notice) = &self.notice {
            mail.error_message = Some(match mail.error_message.take() {
                Some(previous) => format!("{previous}\r\n{notice}"),
                None => notice.clone(),
            });
        }
        mail.state = self.processor.clone();
        Ok(())
    }

    fn target_states(&self) -> Vec<String> {
        vec![self.processor.clone()]
    }
}

#[cfg(test)]
mod tests {
    use crate::mailets::testing::*;

    #[tokio::test]
    async fn sets_state_and_notice() {
        let mut m = mail("Subject: x\r\n\r\nbody");
        service(
            "ToProcessor",
            &[("processor", "transport"), ("notice", "relay denied")],
            &mut m,
        )
        .await
        .unwrap();
        assert_eq!(m.state, "transport");
        assert_eq!(m.error_message.as_deref(), Some("relay denied"));
        assert_eq!(
            build_err("ToProcessor", &[]),
            "<inline>:1:1: mailet ToProcessor requires the parameter <processor>"
        );
    }
}
