//! `HostIsLocal`: the recipients whose domain is local (`domainlist.xml`). Also registered as
//! `RecipientIsLocal`: mailetd has no user repository, so a local recipient is one in a local
//! domain (user-level locality is the DAV mailets' user lookup).
//!
//! ```xml
//! <mailet match="HostIsLocal" class="ToProcessor"><processor>local-address-error</processor></mailet>
//! ```

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches recipients in a local domain.
pub struct HostIsLocal;

impl HostIsLocal {
    /// Takes no condition.
    pub fn build(_: &MatcherConfig, _: &MailetContext) -> Result<Box<dyn Matcher>, ConfigError> {
        Ok(Box::new(HostIsLocal))
    }
}

impl Matcher for HostIsLocal {
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
    fn local_hosts_only() {
        let m = mail(None, &["b@example.org", "c@remote.test"], "");
        assert_eq!(run("HostIsLocal", None, &m), ["b@example.org"]);
    }

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
