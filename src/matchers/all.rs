//! `All`: matches every recipient (the default when a mailet has no `match`).
//!
//! ```xml
//! <mailet match="All" class="Null"/>
//! ```

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// Matches all recipients.
pub struct All;

impl All {
    /// Takes no condition.
    pub fn build(
        _config: &MatcherConfig,
        _ctx: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        Ok(Box::new(All))
    }
}

impl Matcher for All {
    fn match_mail(
        &self,
        mail: &Mail,
        _ctx: &MailetContext,
    ) -> Result<Vec<MailAddress>, MatcherError> {
        Ok(mail.recipients.clone())
    }
}
