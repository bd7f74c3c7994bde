//! `SetMailAttribute`: sets string attributes; every parameter is an attribute name and its
//! value.
//!
//! ```xml
//! <mailet match="All" class="SetMailAttribute">
//!   <org.example.source>mirror</org.example.source>
//!   <collected>true</collected>
//! </mailet>
//! ```

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::mail::{AttributeValue, Mail};
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// Sets the configured attributes.
pub struct SetMailAttribute {
    attributes: Vec<(String, String)>,
}

impl SetMailAttribute {
    /// At least one parameter is required.
    pub fn build(config: &MailetConfig, _: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
        if config.all_parameters().is_empty() {
            return Err(config.error(
                "mailet SetMailAttribute needs at least one parameter: <attributeName>value</attributeName>",
            ));
        }
        Ok(Box::new(SetMailAttribute {
            attributes: config
                .parameters
                .iter()
                .map(|p| (p.name.clone(), p.value.clone()))
                .collect(),
        }))
    }
}

#[async_trait]
impl Mailet for SetMailAttribute {
    async fn service(&self, mail: &mut Mail, _: &MailetContext) -> Result<(), MailetError> {
        for (name, value) in &self.attributes {
            mail.set_attribute(name.clone(), AttributeValue::String(value.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::mail::AttributeValue;
    use crate::mailets::testing::*;

    #[tokio::test]
    async fn sets_string_attributes() {
        let mut m = mail("Subject: s\r\n\r\n");
        service("SetMailAttribute", &[("a.b", "1"), ("c", "x")], &mut m)
            .await
            .unwrap();
        assert_eq!(
            m.attribute("a.b"),
            Some(&AttributeValue::String("1".into()))
        );
        assert_eq!(m.attribute("c"), Some(&AttributeValue::String("x".into())));
        assert!(build_err("SetMailAttribute", &[]).contains("at least one parameter"));
    }
}
