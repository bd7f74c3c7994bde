//! `RecipientIs`: the recipients that are listed (separators `,`, space, tab).
//!
//! ```xml
//! <mailet match="RecipientIs=calendar@example.org" class="Null"/>
//! ```

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

use super::sender_is::parse_addresses;

/// Matches the listed recipients.
pub struct RecipientIs {
    recipients: Vec<MailAddress>,
}

impl RecipientIs {
    /// Needs a non-empty address list.
    pub fn build(
        config: &MatcherConfig,
        _: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        Ok(Box::new(RecipientIs {
            recipients: parse_addresses(config)?.into_iter().flatten().collect(),
        }))
    }
}

impl Matcher for RecipientIs {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        Ok(mail
            .recipients
            .iter()
            .filter(|r| self.recipients.iter().any(|l| l.same_as(r)))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::matchers::testing::*;

    #[test]
    fn listed_recipients_only() {
        let m = mail(None, &["a@x.test", "b@x.test", "c@x.test"], "");
        assert_eq!(
            run("RecipientIs", Some("a@x.test c@X.TEST"), &m),
            ["a@x.test", "c@x.test"]
        );
    }
}
