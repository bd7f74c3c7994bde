//! `RecipientToLowerCase` (James `org.apache.james.transport.mailets.RecipientToLowerCase`):
//! lowercases every envelope recipient, local part included, so that `Bob@Example.org` and
//! `bob@example.org` reach the same calendar and address book.
//!
//! ```xml
//! <mailet match="All" class="RecipientToLowerCase"/>
//! ```

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// Lowercases the recipients.
pub struct RecipientToLowerCase;

impl RecipientToLowerCase {
    /// No parameters.
    pub fn build(_: &MailetConfig, _: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
        Ok(Box::new(RecipientToLowerCase))
    }
}

#[async_trait]
impl Mailet for RecipientToLowerCase {
    async fn service(&self, mail: &mut Mail, _: &MailetContext) -> Result<(), MailetError> {
        for recipient in &mut mail.recipients {
            *recipient = MailAddress {
                local: recipient.local.to_lowercase(),
                domain: recipient.domain.to_lowercase(),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::mail::MailAddress;
    use crate::mailets::testing::*;

    #[tokio::test]
    async fn lowercases_local_part_and_domain() {
        let mut m = mail("Subject: s\r\n\r\n");
        m.recipients = vec![
            MailAddress::parse("Bob.Smith@Example.ORG").unwrap(),
            MailAddress::parse("carol@example.org").unwrap(),
        ];
        service("RecipientToLowerCase", &[], &mut m).await.unwrap();
        let got: Vec<String> = m.recipients.iter().map(|r| r.to_string()).collect();
        assert_eq!(got, ["bob.smith@example.org", "carol@example.org"]);
    }
}
