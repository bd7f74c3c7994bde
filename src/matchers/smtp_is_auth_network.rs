//! `SMTPIsAuthNetwork`: every recipient when the client was in `authorizedAddresses`
//! (attribute `org.apache.james.SMTPIsAuthNetwork` is true).
//!
//! ```xml
//! <mailet match="SMTPIsAuthNetwork" class="ToProcessor"><processor>relay</processor></mailet>
//! ```

use crate::config::ConfigError;
use crate::mail::{AttributeValue, Mail, MailAddress, attributes};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches all recipients of mail from an authorized network.
pub struct SMTPIsAuthNetwork;

impl SMTPIsAuthNetwork {
    /// Takes no condition.
    pub fn build(_: &MatcherConfig, _: &MailetContext) -> Result<Box<dyn Matcher>, ConfigError> {
        Ok(Box::new(SMTPIsAuthNetwork))
    }
}

impl Matcher for SMTPIsAuthNetwork {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        let authorized = match mail.attribute(attributes::SMTP_IS_AUTH_NETWORK) {
            Some(AttributeValue::Bool(b)) => *b,
            Some(AttributeValue::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        Ok(if authorized {
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
    fn auth_network_attribute() {
        let mut m = mail(None, &["r@y.test"], "");
        assert!(run("SMTPIsAuthNetwork", None, &m).is_empty());
        m.set_attribute(
            attributes::SMTP_IS_AUTH_NETWORK,
            AttributeValue::Bool(false),
        );
        assert!(run("SMTPIsAuthNetwork", None, &m).is_empty());
        m.set_attribute(attributes::SMTP_IS_AUTH_NETWORK, AttributeValue::Bool(true));
        assert_eq!(run("SMTPIsAuthNetwork", None, &m), ["r@y.test"]);
    }
}
