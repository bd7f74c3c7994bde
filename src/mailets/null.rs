//! `Null`: discards the mail.
//!
//! ```xml
//! <mailet match="All" class="Null"/>
//! ```

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::mail::Mail;
use crate::pipeline::{GHOST, Mailet, MailetConfig, MailetContext, MailetError};

/// Sets the mail's state to `ghost`: processing ends, nothing is stored or relayed.
pub struct Null;

impl Null {
    /// Takes no parameters.
    pub fn build(
        _config: &MailetConfig,
        _ctx: &MailetContext,
    ) -> Result<Box<dyn Mailet>, ConfigError> {
        Ok(Box::new(Null))
    }
}

#[async_trait]
impl Mailet for Null {
    async fn service(&self, mail: &mut Mail, _ctx: &MailetContext) -> Result<(), MailetError> {
        mail.state = GHOST.to_string();
        Ok(())
    }
}
