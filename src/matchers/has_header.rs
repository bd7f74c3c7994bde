//! `HasHeader`: every recipient when the message has all the listed headers (terms joined by
//! `+`), each optionally with a value (`Name=value`). Values are compared after unfolding and
//! RFC 2047 decoding.
//!
//! ```xml
//! <mailet match="HasHeader=X-MEETING-METHOD=REQUEST+X-MEETING-UID" class="LogMessage"/>
//! ```

use crate::config::ConfigError;
use crate::mail::headers::decoded_values;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches all recipients when every term holds.
pub struct HasHeader {
    terms: Vec<(String, Option<String>)>,
}

impl HasHeader {
    /// Needs at least one header name.
    pub fn build(
        config: &MatcherConfig,
        _: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        let mut terms = Vec::new();
        for term in config.require_condition()?.split('+') {
            let (name, value) = match term.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().to_string())),
                None => (term.trim(), None),
            };
            if name.is_empty() {
                return Err(config.error(format!(
                    "HasHeader term {term:?} has no header name: expected Name or Name=value, joined by +"
                )));
            }
            terms.push((name.to_string(), value));
        }
        Ok(Box::new(HasHeader { terms }))
    }
}

impl Matcher for HasHeader {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        let header = mail.header_block();
        let all = self.terms.iter().all(|(name, value)| {
            let values = decoded_values(header, name);
            match value {
                None => !values.is_empty(),
                Some(v) => values.iter().any(|x| x == v),
            }
        });
        Ok(if all {
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
    fn terms_values_and_decoding() {
        let m = mail(
            None,
            &["r@y.test"],
            "X-Meeting-Method: REQUEST\r\nSubject: =?ISO-8859-1?Q?R=E9union?=\r\n folded\r\n\r\nbody",
        );
        assert_eq!(
            run("HasHeader", Some("x-meeting-method=REQUEST"), &m),
            ["r@y.test"]
        );
        assert_eq!(
            run(
                "HasHeader",
                Some("Subject=Réunion folded+X-Meeting-Method"),
                &m
            ),
            ["r@y.test"]
        );
        assert!(run("HasHeader", Some("X-Meeting-Method=CANCEL"), &m).is_empty());
        assert!(run("HasHeader", Some("X-Meeting-Method+X-Missing"), &m).is_empty());
        assert!(build_err("HasHeader", Some("A+=b")).contains("has no header name"));
    }
}
