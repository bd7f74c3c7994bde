//! `HasMailAttributeWithValueRegex`: every recipient when the attribute's value, as text,
//! contains a match of the regular expression (split at the first comma, as
//! `HasMailAttributeWithValue`).
//!
//! ```xml
//! <mailet match="HasMailAttributeWithValueRegex=org.apache.james.SMTPAuthUser, ^admin@" class="LogMessage"/>
//! ```

use regex::Regex;

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

use super::has_mail_attribute_with_value::name_and_value;

/// Matches all recipients when the attribute's value matches.
pub struct HasMailAttributeWithValueRegex {
    name: String,
    regex: Regex,
}

impl HasMailAttributeWithValueRegex {
    /// Needs `name, regex`; the regex is compiled once.
    pub fn build(
        config: &MatcherConfig,
        _: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        let (name, pattern) = name_and_value(config)?;
        let regex = Regex::new(&pattern)
            .map_err(|e| config.error(format!("invalid regular expression {pattern:?}: {e}")))?;
        Ok(Box::new(HasMailAttributeWithValueRegex { name, regex }))
    }
}

impl Matcher for HasMailAttributeWithValueRegex {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        let hit = mail
            .attribute(&self.name)
            .is_some_and(|v| self.regex.is_match(&v.to_text()));
        Ok(if hit {
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
    fn attribute_regex() {
        let mut m = mail(None, &["r@y.test"], "");
        m.set_attribute("user", AttributeValue::String("admin@x.test".into()));
        assert_eq!(
            run("HasMailAttributeWithValueRegex", Some("user, ^admin@"), &m),
            ["r@y.test"]
        );
        assert!(run("HasMailAttributeWithValueRegex", Some("user, ^bob"), &m).is_empty());
        assert!(
            build_err("HasMailAttributeWithValueRegex", Some("user, ("))
                .contains("invalid regular expression")
        );
    }
}
