//! `RecipientIsLocal`: the recipients in a local domain (`domainlist.xml`).
//! User-level locality (does the mailbox exist) comes with the DAV mailets.
//!
//! ```xml
//! <mailet match="RecipientIsLocal" class="ToProcessor"><processor>local-delivery</processor></mailet>
//! ```

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches recipients whose domain is local.
pub struct RecipientIsLocal;

impl RecipientIsLocal {
    /// Takes no condition.
    pub fn build(_: &MatcherConfig, _: &MailetContext) -> Result<Box<dyn Matcher>, ConfigError> {
        Ok(Box::new(RecipientIsLocal))
    }
}

impl Matcher for RecipientIsLocal {
    fn match_mail(
        &self,
        mail: &Mail,
        ctx: &MailetContext,
    ) -> Result<Vec<MailAddress>, MatcherError> {
        Ok(mail
            .recipients
            .iter()
            .filter(|r| ctx.is_local_domain(&r.domain))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::matchers::testing::*;

    #[test]
    fn local_recipients_only() {
        let m = mail(
            Some("a@remote.test"),
            &["b@example.org", "c@remote.test", "d@EXAMPLE.org"],
            "",
        );
        assert_eq!(
            run("RecipientIsLocal", None, &m),
            ["b@example.org", "d@example.org"]
        );
    }
}
