//! `HasMimeType`: every recipient when the **top-level** Content-Type (type/subtype) is in the
//! list. The MIME tree is not walked, as in James.
//!
//! ```xml
//! <mailet match="HasMimeType=text/calendar,multipart/mixed" class="LogMessage"/>
//! ```

use crate::config::ConfigError;
use crate::mail::headers::content_type;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches all recipients when the message's MIME type is listed.
pub struct HasMimeType {
    types: Vec<String>,
}

impl HasMimeType {
    /// Needs a comma-separated list of MIME types.
    pub fn build(
        config: &MatcherConfig,
        _: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        let types = config
            .require_condition()?
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        Ok(Box::new(HasMimeType { types }))
    }
}

impl Matcher for HasMimeType {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        let (mime, _) = content_type(mail.header_block());
        Ok(if self.types.contains(&mime) {
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
    fn top_level_type_only() {
        let cal = mail(
            None,
            &["r@y.test"],
            "Content-Type: Text/Calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\n",
        );
        assert_eq!(
            run("HasMimeType", Some("text/plain, text/calendar"), &cal),
            ["r@y.test"]
        );
        let mixed = mail(
            None,
            &["r@y.test"],
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/calendar\r\n\r\nx\r\n--b--\r\n",
        );
        assert!(run("HasMimeType", Some("text/calendar"), &mixed).is_empty());
        let plain = mail(None, &["r@y.test"], "Subject: x\r\n\r\nhi");
        assert_eq!(run("HasMimeType", Some("text/plain"), &plain), ["r@y.test"]);
    }
}
