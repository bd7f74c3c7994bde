//! `HasMimeTypeParameter`: every recipient when a top-level Content-Type parameter has one of
//! the listed values (`name=value` pairs separated by commas).
//!
//! ```xml
//! <mailet match="HasMimeTypeParameter=method=REQUEST,method=CANCEL" class="LogMessage"/>
//! ```

use crate::config::ConfigError;
use crate::mail::headers::content_type;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches all recipients when a Content-Type parameter matches.
pub struct HasMimeTypeParameter {
    pairs: Vec<(String, String)>,
}

impl HasMimeTypeParameter {
    /// Needs `name=value` pairs.
    pub fn build(
        config: &MatcherConfig,
        _: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        let mut pairs = Vec::new();
        for item in config
            .require_condition()?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let Some((name, value)) = item.split_once('=') else {
                return Err(config.error(format!(
                    "HasMimeTypeParameter condition item {item:?}: expected name=value"
                )));
            };
            pairs.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        Ok(Box::new(HasMimeTypeParameter { pairs }))
    }
}

impl Matcher for HasMimeTypeParameter {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        let (_, params) = content_type(mail.header_block());
        let hit = self
            .pairs
            .iter()
            .any(|(n, v)| params.iter().any(|(pn, pv)| pn == n && pv == v));
        Ok(if hit {
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
    fn parameter_values() {
        let cal = mail(
            None,
            &["r@y.test"],
            "Content-Type: text/calendar; METHOD=REQUEST\r\n\r\nx",
        );
        assert_eq!(
            run(
                "HasMimeTypeParameter",
                Some("method=CANCEL,method=REQUEST"),
                &cal
            ),
            ["r@y.test"]
        );
        assert!(run("HasMimeTypeParameter", Some("method=CANCEL"), &cal).is_empty());
        assert!(build_err("HasMimeTypeParameter", Some("method")).contains("expected name=value"));
    }
}
