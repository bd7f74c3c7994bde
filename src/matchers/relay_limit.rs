//! `RelayLimit`: every recipient when the message has at least N `Received:` headers (a mail
//! loop). N > 0 is required.
//!
//! ```xml
//! <mailet match="RelayLimit=30" class="Null"/>
//! ```

use crate::config::ConfigError;
use crate::mail::headers::fields;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches all recipients of a mail that went through too many hops.
pub struct RelayLimit {
    limit: usize,
}

impl RelayLimit {
    /// Needs a positive number.
    pub fn build(
        config: &MatcherConfig,
        _: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        let condition = config.require_condition()?;
        match condition.parse::<usize>() {
            Ok(limit) if limit > 0 => Ok(Box::new(RelayLimit { limit })),
            _ => Err(config.error(format!(
                "RelayLimit condition {condition:?}: expected a number of Received headers greater than 0"
            ))),
        }
    }
}

impl Matcher for RelayLimit {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        let hops = fields(&mail.message)
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("received"))
            .count();
        Ok(if hops >= self.limit {
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
    fn counts_received_headers() {
        let m = mail(
            None,
            &["r@y.test"],
            "Received: a\r\nreceived: b\r\n c\r\n\r\nReceived: body",
        );
        assert_eq!(run("RelayLimit", Some("2"), &m), ["r@y.test"]);
        assert!(run("RelayLimit", Some("3"), &m).is_empty());
        assert!(build_err("RelayLimit", Some("0")).contains("greater than 0"));
    }
}
