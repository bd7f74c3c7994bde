//! `HasMailAttribute`: every recipient when the mail has the named attribute.
//!
//! ```xml
//! <mailet match="HasMailAttribute=icalendarJson" class="LogMessage"/>
//! ```

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches all recipients when the attribute exists.
pub struct HasMailAttribute {
    name: String,
}

impl HasMailAttribute {
    /// Needs the attribute name.
    pub fn build(
        config: &MatcherConfig,
        _: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        Ok(Box::new(HasMailAttribute {
            name: config.require_condition()?.to_string(),
        }))
    }
}

impl Matcher for HasMailAttribute {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        Ok(if mail.attribute(&self.name).is_some() {
            mail.recipients.clone()
        } else {
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::mail::AttributeValue;
    use crate::matchers::testing::*;

    #[test]
    fn attribute_presence() {
        let mut m = mail(None, &["r@y.test"], "");
        assert!(run("HasMailAttribute", Some("x"), &m).is_empty());
        m.set_attribute("x", AttributeValue::Bool(false));
        assert_eq!(run("HasMailAttribute", Some("x"), &m), ["r@y.test"]);
    }
}
