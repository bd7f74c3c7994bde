//! `SizeGreaterThan`: every recipient when the message is larger than N bytes (`k` = ×1024,
//! `m` = ×1024², case-insensitive; N > 0).
//!
//! ```xml
//! <mailet match="SizeGreaterThan=10m" class="Null"/>
//! ```

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches all recipients of a large mail.
pub struct SizeGreaterThan {
    limit: u64,
}

impl SizeGreaterThan {
    /// Needs a positive size.
    pub fn build(
        config: &MatcherConfig,
        _: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        let condition = config.require_condition()?;
        let lower = condition.to_ascii_lowercase();
        let (digits, unit) = match lower.strip_suffix('k') {
            Some(d) => (d, 1024),
            None => match lower.strip_suffix('m') {
                Some(d) => (d, 1024 * 1024),
                None => (lower.as_str(), 1),
            },
        };
        match digits.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Box::new(SizeGreaterThan { limit: n * unit })),
            _ => Err(config.error(format!(
                "SizeGreaterThan condition {condition:?}: expected a size greater than 0, such as 500, 100k or 10m"
            ))),
        }
    }
}

impl Matcher for SizeGreaterThan {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        Ok(if mail.size() as u64 > self.limit {
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
    fn sizes_and_units() {
        let m = mail(
            None,
            &["r@y.test"],
            &format!("A: b\r\n\r\n{}", "x".repeat(1100)),
        );
        assert_eq!(run("SizeGreaterThan", Some("1k"), &m), ["r@y.test"]);
        assert!(run("SizeGreaterThan", Some("2K"), &m).is_empty());
        assert!(run("SizeGreaterThan", Some("1m"), &m).is_empty());
        assert!(build_err("SizeGreaterThan", Some("0")).contains("greater than 0"));
    }
}
