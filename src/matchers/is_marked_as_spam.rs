//! `IsMarkedAsSpam` (James `org.apache.james.transport.matchers.IsMarkedAsSpam`): the
//! recipients a spam filter marked as spam. tmail's collector configurations wrap
//! `CalDavCollect` in `notmatch="IsMarkedAsSpam=org.apache.james.rspamd.status"`.
//!
//! ```xml
//! <mailet notmatch="IsMarkedAsSpam=org.apache.james.rspamd.status" class="CalDavCollect"/>
//! ```
//!
//! The condition names the status (default `org.apache.james.spamassassin.status`); a
//! recipient matches when the status value starts with `yes`, case-insensitively
//! (`Yes, hits=6.8 required=5.0`). James reads it from the per-recipient headers its
//! SpamAssassin/Rspamd mailets add; mailetd runs no spam filter, so it reads the mail
//! attribute of that name (a string, or a map from recipient to string, per recipient) and
//! otherwise a message header of that name, which the filter of the mirroring server may
//! have written. Neither present: no recipient matches, as in James.

use crate::config::ConfigError;
use crate::mail::headers;
use crate::mail::{AttributeValue, Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// James's default status name.
pub const DEFAULT_STATUS: &str = "org.apache.james.spamassassin.status";

/// Matches the recipients marked as spam.
pub struct IsMarkedAsSpam {
    status: String,
}

impl IsMarkedAsSpam {
    /// The condition is the status name; empty or absent means [`DEFAULT_STATUS`].
    pub fn build(
        config: &MatcherConfig,
        _: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        let status = config
            .condition
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or(DEFAULT_STATUS);
        if status.contains(|c: char| c.is_whitespace() || c == ':') {
            return Err(config.error(format!(
                "IsMarkedAsSpam={status}: the condition is a status name such as org.apache.james.rspamd.status"
            )));
        }
        Ok(Box::new(IsMarkedAsSpam {
            status: status.to_string(),
        }))
    }
}

fn says_yes(value: &str) -> bool {
    value.trim_start().to_lowercase().starts_with("yes")
}

impl Matcher for IsMarkedAsSpam {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        let marked = |recipient: &MailAddress| match mail.attribute(&self.status) {
            Some(AttributeValue::Map(per_recipient)) => per_recipient
                .iter()
                .find(|(r, _)| MailAddress::parse(r).is_ok_and(|r| r.same_as(recipient)))
                .is_some_and(|(_, v)| says_yes(&v.to_text())),
            Some(value) => says_yes(&value.to_text()),
            None => {
                headers::raw_value(mail.header_block(), &self.status).is_some_and(|v| says_yes(&v))
            }
        };
        Ok(mail
            .recipients
            .iter()
            .filter(|r| marked(r))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::mail::AttributeValue;
    use crate::matchers::testing::*;

    #[test]
    fn yes_statuses_match_per_recipient() {
        let rspamd = Some("org.apache.james.rspamd.status");
        let mut m = mail(
            Some("s@x.test"),
            &["a@y.test", "b@y.test"],
            "Subject: s\r\n\r\n",
        );
        assert!(run("IsMarkedAsSpam", rspamd, &m).is_empty(), "no status");
        m.set_attribute(
            "org.apache.james.rspamd.status",
            AttributeValue::String("No, score=1.2".into()),
        );
        assert!(run("IsMarkedAsSpam", rspamd, &m).is_empty());
        m.set_attribute(
            "org.apache.james.rspamd.status",
            AttributeValue::String("YES, score=9.1".into()),
        );
        assert_eq!(run("IsMarkedAsSpam", rspamd, &m), ["a@y.test", "b@y.test"]);
        let mut per = BTreeMap::new();
        per.insert("A@y.test".to_string(), AttributeValue::String("Yes".into()));
        per.insert("b@y.test".to_string(), AttributeValue::String("No".into()));
        m.set_attribute("org.apache.james.rspamd.status", AttributeValue::Map(per));
        assert_eq!(run("IsMarkedAsSpam", rspamd, &m), ["a@y.test"]);
        // the default status, from a header the mirroring server's filter wrote
        let h = mail(
            None,
            &["a@y.test"],
            "org.apache.james.spamassassin.status: Yes, hits=6.8 required=5.0\r\n\r\n",
        );
        assert_eq!(run("IsMarkedAsSpam", None, &h), ["a@y.test"]);
        assert!(build_err("IsMarkedAsSpam", Some("a status")).contains("status name"));
    }
}
