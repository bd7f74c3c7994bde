//! `SenderIs`: every recipient when the envelope sender is one of the listed addresses
//! (separators `,`, space, tab; `<>` is the null sender).
//!
//! ```xml
//! <mailet match="SenderIs=calendar@example.org, <>" class="Null"/>
//! ```

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches all recipients when the sender is listed.
pub struct SenderIs {
    senders: Vec<Option<MailAddress>>,
}

/// Parses a James address list; `<>` is `None` (the null sender).
pub(super) fn parse_addresses(
    config: &MatcherConfig,
) -> Result<Vec<Option<MailAddress>>, ConfigError> {
    let condition = config.require_condition()?;
    condition
        .split([',', ' ', '\t'])
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s == "<>" {
                Ok(None)
            } else {
                MailAddress::parse(s).map(Some).map_err(|e| {
                    config.error(format!(
                        "{} condition: {e}: expected addresses separated by commas",
                        config.class
                    ))
                })
            }
        })
        .collect()
}

impl SenderIs {
    /// Needs a non-empty address list.
    pub fn build(
        config: &MatcherConfig,
        _: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        Ok(Box::new(SenderIs {
            senders: parse_addresses(config)?,
        }))
    }
}

impl Matcher for SenderIs {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        let listed = self.senders.iter().any(|s| match (s, &mail.sender) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_as(b),
            _ => false,
        });
        Ok(if listed {
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
    fn listed_senders_and_null() {
        let cond = Some("a@x.test, <>");
        assert_eq!(
            run("SenderIs", cond, &mail(Some("A@X.test"), &["r@y.test"], "")),
            ["r@y.test"]
        );
        assert_eq!(
            run("SenderIs", cond, &mail(None, &["r@y.test"], "")),
            ["r@y.test"]
        );
        assert!(run("SenderIs", cond, &mail(Some("b@x.test"), &["r@y.test"], "")).is_empty());
        assert!(build_err("SenderIs", None).contains("needs a condition"));
    }
}
