//! What a mailet and a matcher are. They are built from the configuration of
//! [`crate::config::component`]: constructors read and check every parameter once and return a
//! [`crate::config::ConfigError`] pointing at the `<mailet>` element; `service` then does one
//! thing to one mail.

use async_trait::async_trait;

pub use crate::config::component::{MailetConfig, MatcherConfig, Parameter};
use crate::mail::{Mail, MailAddress};

use super::context::MailetContext;

/// A failure while servicing a mail; routed by `onMailetException`.
pub type MailetError = anyhow::Error;
/// A failure while matching a mail; routed by `onMatchException`.
pub type MatcherError = anyhow::Error;

/// A mailet: one processing step applied to a mail (James `Mailet`).
#[async_trait]
pub trait Mailet: Send + Sync {
    /// Processes one mail: may change its message, attributes, recipients or state, or add
    /// outbox jobs. Setting `mail.state` to another processor hands the mail over.
    async fn service(&self, mail: &mut Mail, ctx: &MailetContext) -> Result<(), MailetError>;

    /// States this mailet can send mail to (checked at startup; `ToProcessor`).
    fn target_states(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A matcher: picks the recipients a mailet applies to (James `Matcher`).
pub trait Matcher: Send + Sync {
    /// The matched subset of `mail.recipients` (all = run, none = skip, some = split).
    fn match_mail(
        &self,
        mail: &Mail,
        ctx: &MailetContext,
    ) -> Result<Vec<MailAddress>, MatcherError>;
}
