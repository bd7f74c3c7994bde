//! `SenderIsLocal`: every recipient when the envelope sender is in a local domain.
//!
//! ```xml
//! <mailet match="SenderIsLocal" class="ToProcessor"><processor>relay</processor></mailet>
//! ```

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches all recipients of mail sent from a local domain.
pub struct SenderIsLocal;

impl SenderIsLocal {
    /// Takes no condition.
    pub fn build(_: &MatcherConfig, _: &MailetContext) -> Result<Box<dyn Matcher>, ConfigError> {
        Ok(Box::new(SenderIsLocal))
    }
}

impl Matcher for SenderIsLocal {
    fn match_mail(
        &self,
        mail: &Mail,
        ctx: &MailetContext,
    ) -> Result<Vec<MailAddress>, MatcherError> {
        Ok(match &mail.sender {
            Some(s) if ctx.is_local_domain(&s.domain) => mail.recipients.clone(),
            _ => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::matchers::testing::*;

    #[test]
    fn local_sender() {
        assert_eq!(
            run(
                "SenderIsLocal",
                None,
                &mail(Some("a@example.org"), &["x@r.test"], "")
            ),
            ["x@r.test"]
        );
        assert!(
            run(
                "SenderIsLocal",
                None,
                &mail(Some("a@r.test"), &["x@r.test"], "")
            )
            .is_empty()
        );
        assert!(run("SenderIsLocal", None, &mail(None, &["x@r.test"], "")).is_empty());
    }
}
