//! `HasMailAttributeWithValue`: every recipient when the attribute's value, as text, equals the
//! given value. The condition is split at its first comma and both halves are trimmed.
//!
//! ```xml
//! <mailet match="HasMailAttributeWithValue=org.apache.james.SMTPIsAuthNetwork, true" class="LogMessage"/>
//! ```

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches all recipients when the attribute has the value.
pub struct HasMailAttributeWithValue {
    name: String,
    value: String,
}

/// Splits `name, value` at the first comma (both required).
pub(super) fn name_and_value(config: &MatcherConfig) -> Result<(String, String), ConfigError> {
    let condition = config.require_condition()?;
    match condition.split_once(',') {
        Some((n, v)) if !n.trim().is_empty() => Ok((n.trim().to_string(), v.trim().to_string())),
        _ => Err(config.error(format!(
            "{} condition {condition:?}: expected attributeName, value",
            config.class
        ))),
    }
}

impl HasMailAttributeWithValue {
    /// Needs `name, value`.
    pub fn build(
        config: &MatcherConfig,
        _: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        let (name, value) = name_and_value(config)?;
        Ok(Box::new(HasMailAttributeWithValue { name, value }))
    }
}

impl Matcher for HasMailAttributeWithValue {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        let hit = mail
            .attribute(&self.name)
            .is_some_and(|v| v.to_text() == self.value);
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
    fn attribute_value() {
        let mut m = mail(None, &["r@y.test"], "");
        m.set_attribute("flag", AttributeValue::Bool(true));
        assert_eq!(
            run("HasMailAttributeWithValue", Some("flag , true"), &m),
            ["r@y.test"]
        );
        assert!(run("HasMailAttributeWithValue", Some("flag, false"), &m).is_empty());
        assert!(
            build_err("HasMailAttributeWithValue", Some("flag"))
                .contains("expected attributeName, value")
        );
    }
}
