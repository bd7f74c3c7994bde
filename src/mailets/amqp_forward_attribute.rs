//! `AmqpForwardAttribute` (James `org.apache.james.transport.mailets.AmqpForwardAttribute`):
//! publishes the content of a mail attribute to an AMQP exchange. OpenPaaS ESN and the James
//! docs' collecting pipeline receive the iTIP JSON of `ICALToJsonAttribute` this way.
//!
//! ```xml
//! <mailet match="All" class="AmqpForwardAttribute">
//!   <uri>amqp://guest:guest@rabbitmq:5672</uri>   <!-- several, comma-separated: the first -->
//!   <exchange>james:events</exchange>
//!   <exchange_type>topic</exchange_type>          <!-- when mailetd declares it; default direct -->
//!   <routing_key>icalendar_routing_key</routing_key>  <!-- default empty -->
//!   <attribute>icalendarJson</attribute>
//! </mailet>
//! ```
//!
//! As James: a map attribute gives one message per value, a list one per item, a string one
//! message; no attribute, no message; any other type is a mailet error. Unlike James, which
//! publishes inline and logs the message away when the broker is down, each message becomes
//! a durable outbox job (kind `amqp-forward`, [`crate::outbox::amqp_forward`]) published
//! with a publisher confirm and retried until the broker takes it. The job holds the URI
//! without its password; the handler takes the password from this configuration.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::config::ConfigError;
use crate::mail::job::OutboxJob;
use crate::mail::{AttributeValue, Mail};
use crate::outbox::amqp_forward::{self, Endpoint};
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// Publishes an attribute's content.
pub struct AmqpForwardAttribute {
    endpoint: Endpoint,
    attribute: String,
}

impl AmqpForwardAttribute {
    /// `uri`, `exchange` and `attribute` are required; the URI must be an AMQP URI.
    pub fn build(config: &MailetConfig, _: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
        let uri = config.require("uri")?;
        let exchange = config.require("exchange")?.trim().to_string();
        let attribute = config.require("attribute")?.trim().to_string();
        let routing_key = config.get_or("routing_key", "").trim().to_string();
        let exchange_type = config.get_or("exchange_type", "direct").trim().to_string();
        let endpoint =
            Endpoint::new(uri, &exchange, &exchange_type, &routing_key).map_err(|e| {
                config
                    .parameter("uri")
                    .map_or(config.error(&e), |p| p.position.error(e))
            })?;
        Ok(Box::new(AmqpForwardAttribute {
            endpoint,
            attribute,
        }))
    }
}

/// The messages of an attribute value, as James extracts them.
fn messages(value: &AttributeValue) -> Option<Vec<Vec<u8>>> {
    let one = |v: &AttributeValue| match v {
        AttributeValue::Bytes(b) => Some(b.clone()),
        AttributeValue::String(s) => Some(s.as_bytes().to_vec()),
        AttributeValue::Json(j) => Some(j.to_string().into_bytes()),
        _ => None,
    };
    match value {
        AttributeValue::Map(map) => map.values().map(one).collect(),
        AttributeValue::CalendarJson(_) => Some(
            value
                .document_texts()?
                .into_iter()
                .map(|(_, text)| text.into_bytes())
                .collect(),
        ),
        AttributeValue::List(items) => items.iter().map(one).collect(),
        AttributeValue::String(s) => Some(vec![s.as_bytes().to_vec()]),
        _ => None,
    }
}

#[async_trait]
impl Mailet for AmqpForwardAttribute {
    async fn service(&self, mail: &mut Mail, ctx: &MailetContext) -> Result<(), MailetError> {
        let Some(value) = mail.attribute(&self.attribute) else {
            return Ok(());
        };
        let Some(bodies) = messages(value) else {
            anyhow::bail!(
                "AmqpForwardAttribute: attribute {} is not a map, a list or a string of content",
                self.attribute
            );
        };
        for body in bodies {
            if ctx.dry_run {
                println!(
                    "AMQP publish to exchange {:?} routing key {:?} on {}\n\n{}\n",
                    self.endpoint.exchange,
                    self.endpoint.routing_key,
                    self.endpoint.redacted_uri,
                    String::from_utf8_lossy(&body)
                );
                continue;
            }
            let mut job = OutboxJob::new(
                amqp_forward::KIND,
                format!("{}/{}", self.endpoint.exchange, self.endpoint.routing_key),
                serde_json::json!({
                    "endpoint": self.endpoint,
                    "body": STANDARD.encode(&body),
                }),
            );
            job.mail_name = mail.name.clone();
            mail.jobs.push(job);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::mail::AttributeValue;
    use crate::mailets::testing::*;

    const PARAMS: &[(&str, &str)] = &[
        ("uri", "amqp://james:s3cret@rabbit.local:5672/vh"),
        ("exchange", "james:events"),
        ("routing_key", "icalendar"),
        ("attribute", "icalendarJson"),
    ];

    #[tokio::test]
    async fn one_durable_job_per_map_value_without_the_password() {
        let mut m = mail("Subject: s\r\n\r\n");
        let mut map = BTreeMap::new();
        map.insert(
            "a".to_string(),
            AttributeValue::Bytes(b"{\"x\":1}".to_vec()),
        );
        map.insert(
            "b".to_string(),
            AttributeValue::Bytes(b"{\"x\":2}".to_vec()),
        );
        m.set_attribute("icalendarJson", AttributeValue::Map(map));
        service("AmqpForwardAttribute", PARAMS, &mut m)
            .await
            .unwrap();
        assert_eq!(m.jobs.len(), 2);
        assert_eq!(m.jobs[0].kind, "amqp-forward");
        assert_eq!(m.jobs[0].target, "james:events/icalendar");
        let text = serde_json::to_string(&m.jobs).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(m.jobs[1].payload["body"], "eyJ4IjoyfQ==");
    }

    #[tokio::test]
    async fn no_attribute_no_job_and_a_wrong_type_is_an_error() {
        let mut m = mail("Subject: s\r\n\r\n");
        service("AmqpForwardAttribute", PARAMS, &mut m)
            .await
            .unwrap();
        assert!(m.jobs.is_empty());
        m.set_attribute("icalendarJson", AttributeValue::Long(3));
        assert!(
            service("AmqpForwardAttribute", PARAMS, &mut m)
                .await
                .is_err()
        );
    }

    #[test]
    fn parameters_are_validated() {
        assert!(build_err("AmqpForwardAttribute", &PARAMS[1..]).contains("<uri>"));
        let mut bad = PARAMS.to_vec();
        bad[0] = ("uri", "http://rabbit.local");
        assert!(build_err("AmqpForwardAttribute", &bad).contains("amqp"));
        bad[0] = PARAMS[0];
        bad.push(("exchange_type", "fan"));
        assert!(build_err("AmqpForwardAttribute", &bad).contains("exchange_type"));
    }
}
