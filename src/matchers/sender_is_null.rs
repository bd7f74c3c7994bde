//! `SenderIsNull`: every recipient when the reverse-path is null (`MAIL FROM:<>`, bounces).
//!
//! ```xml
//! <mailet match="SenderIsNull" class="Null"/>
//! ```

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches all recipients of mail with a null sender.
pub struct SenderIsNull;

impl SenderIsNull {
    /// Takes no condition.
    pub fn build(_: &MatcherConfig, _: &MailetContext) -> Result<Box<dyn Matcher>, ConfigError> {
        Ok(Box::new(SenderIsNull))
    }
}

impl Matcher for SenderIsNull {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        Ok(if mail.sender.is_none() {
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
    fn null_sender() {
        assert_eq!(
            run("SenderIsNull", None, &mail(None, &["r@y.test"], "")),
            ["r@y.test"]
        );
        assert!(
            run(
                "SenderIsNull",
                None,
                &mail(Some("a@x.test"), &["r@y.test"], "")
            )
            .is_empty()
        );
    }
}
