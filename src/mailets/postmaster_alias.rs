//! `PostmasterAlias`: rewrites `postmaster@<local domain>` (and a bare `postmaster`) to the
//! configured postmaster (`<context><postmaster>`).
//!
//! ```xml
//! <mailet match="All" class="PostmasterAlias"/>
//! ```

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::mail::Mail;
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// Replaces local postmaster recipients with the postmaster address.
pub struct PostmasterAlias;

impl PostmasterAlias {
    /// Takes no parameters.
    pub fn build(_: &MailetConfig, _: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
        Ok(Box::new(PostmasterAlias))
    }
}

#[async_trait]
impl Mailet for PostmasterAlias {
    async fn service(&self, mail: &mut Mail, ctx: &MailetContext) -> Result<(), MailetError> {
        let is_alias = |r: &crate::mail::MailAddress| {
            r.local.eq_ignore_ascii_case("postmaster")
                && (r.domain.is_empty() || ctx.is_local_domain(&r.domain))
        };
        if !mail.recipients.iter().any(is_alias) {
            return Ok(());
        }
        let mut rewritten = Vec::with_capacity(mail.recipients.len());
        for r in mail.recipients.drain(..) {
            let r = if is_alias(&r) {
                ctx.postmaster.clone()
            } else {
                r
            };
            if !rewritten.contains(&r) {
                rewritten.push(r);
            }
        }
        mail.recipients = rewritten;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::mail::MailAddress;
    use crate::mailets::testing::*;

    #[tokio::test]
    async fn rewrites_local_postmaster() {
        let mut m = mail("Subject: s\r\n\r\n");
        m.recipients = [
            "PostMaster@example.org",
            "postmaster@remote.test",
            "bob@example.org",
        ]
        .iter()
        .map(|a| MailAddress::parse(a).unwrap())
        .collect();
        service("PostmasterAlias", &[], &mut m).await.unwrap();
        let r: Vec<String> = m.recipients.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            r,
            [
                "postmaster@example.org",
                "postmaster@remote.test",
                "bob@example.org"
            ]
        );
    }
}
