//! `SMTPAuthSuccessful`: every recipient when the client authenticated (attribute
//! `org.apache.james.SMTPAuthUser` is set by ingest).
//!
//! ```xml
//! <mailet match="SMTPAuthSuccessful" class="ToProcessor"><processor>relay</processor></mailet>
//! ```

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress, attributes};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches all recipients of authenticated mail.
pub struct SMTPAuthSuccessful;

impl SMTPAuthSuccessful {
    /// Takes no condition.
    pub fn build(_: &MatcherConfig, _: &MailetContext) -> Result<Box<dyn Matcher>, ConfigError> {
        Ok(Box::new(SMTPAuthSuccessful))
    }
}

impl Matcher for SMTPAuthSuccessful {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        let authed = mail.attribute(attributes::SMTP_AUTH_USER).is_some();
        Ok(if authed {
            mail.recipients.clone()
        } else {
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::mail::{AttributeValue, attributes};
    use crate::matchers::testing::*;

    #[test]
    fn auth_user_attribute() {
        let mut m = mail(None, &["r@y.test"], "");
        assert!(run("SMTPAuthSuccessful", None, &m).is_empty());
        m.set_attribute(
            attributes::SMTP_AUTH_USER,
            AttributeValue::String("bob".into()),
        );
        assert_eq!(run("SMTPAuthSuccessful", None, &m), ["r@y.test"]);
    }
}
