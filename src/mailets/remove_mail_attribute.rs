//! `RemoveMailAttribute`: removes attributes.
//!
//! ```xml
//! <mailet match="All" class="RemoveMailAttribute">
//!   <name>rawIcalendar, icalendar</name>  <!-- comma-separated list -->
//! </mailet>
//! ```

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::mail::Mail;
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// Removes the named attributes.
pub struct RemoveMailAttribute {
    names: Vec<String>,
}

impl RemoveMailAttribute {
    /// `name` (a comma-separated list) is required.
    pub fn build(config: &MailetConfig, _: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
        Ok(Box::new(RemoveMailAttribute {
            names: config
                .require("name")?
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
        }))
    }
}

#[async_trait]
impl Mailet for RemoveMailAttribute {
    async fn service(&self, mail: &mut Mail, _: &MailetContext) -> Result<(), MailetError> {
        for name in &self.names {
            mail.attributes.remove(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::mail::AttributeValue;
    use crate::mailets::testing::*;

    #[tokio::test]
    async fn removes_attributes() {
        let mut m = mail("Subject: s\r\n\r\n");
        m.set_attribute("a", AttributeValue::Bool(true));
        m.set_attribute("b", AttributeValue::Bool(true));
        m.set_attribute("c", AttributeValue::Bool(true));
        service("RemoveMailAttribute", &[("name", "a, b")], &mut m)
            .await
            .unwrap();
        assert_eq!(m.attributes.keys().collect::<Vec<_>>(), ["c"]);
    }
}
