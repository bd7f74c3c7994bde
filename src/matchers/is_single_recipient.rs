//! `IsSingleRecipient`: every recipient when there is exactly one.
//!
//! ```xml
//! <mailet match="IsSingleRecipient" class="LogMessage"/>
//! ```

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches a mail with one recipient.
pub struct IsSingleRecipient;

impl IsSingleRecipient {
    /// Takes no condition.
    pub fn build(_: &MatcherConfig, _: &MailetContext) -> Result<Box<dyn Matcher>, ConfigError> {
        Ok(Box::new(IsSingleRecipient))
    }
}

impl Matcher for IsSingleRecipient {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        Ok(if mail.recipients.len() == 1 {
            mail.recipients.clone()
        } else {
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::matchers::testing::*;

    #[test]
    fn one_recipient() {
        assert_eq!(
            run("IsSingleRecipient", None, &mail(None, &["a@x.test"], "")),
            ["a@x.test"]
        );
        assert!(
            run(
                "IsSingleRecipient",
                None,
                &mail(None, &["a@x.test", "b@x.test"], "")
            )
            .is_empty()
        );
    }
}
