//! Outbox handler for `amqp-forward` jobs (made by the `AmqpForwardAttribute` mailet): one
//! message published to an AMQP exchange, answered by a publisher confirm. A broker that is
//! down, refuses or does not confirm leaves the job to be retried, so nothing is lost.
//!
//! The exchange is looked up passively first, so an exchange the consumer declared (any
//! type, any durability) is used as it is; a missing one is declared with the mailet's
//! `exchange_type` (default direct, as James) and durable, so that it outlives a broker
//! restart. Messages are persistent.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{Delivery, JobHandler, OutboxJob};
use crate::config::Secret;
use crate::config::mailetcontainer::MailetContainerConfig;

/// The job kind.
pub const KIND: &str = "amqp-forward";

/// An attempt (connect, declare, publish, confirm) taking longer fails and is retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a message goes. Serialised into the job without the password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The AMQP URI with its password hidden: the key of the real one.
    pub redacted_uri: String,
    /// The exchange.
    pub exchange: String,
    /// The type given to the exchange when mailetd declares it.
    pub exchange_type: String,
    /// The routing key.
    pub routing_key: String,
    /// The URI with its password; not in the job.
    #[serde(skip)]
    pub uri: Secret,
}

impl Endpoint {
    /// Validates the parameters of an `AmqpForwardAttribute`. Of a comma-separated list of
    /// URIs (James's high-availability form) the first is used.
    pub fn new(
        uri: &str,
        exchange: &str,
        exchange_type: &str,
        routing_key: &str,
    ) -> Result<Endpoint, String> {
        let first = uri.split(',').next().unwrap_or("").trim();
        if !(first.starts_with("amqp://") || first.starts_with("amqps://")) {
            return Err(format!(
                "uri {:?} is not an AMQP URI: expected amqp://user:password@host:5672/vhost",
                crate::config::secret::redact_url_value(first).into_owned()
            ));
        }
        lapin::uri::AMQPUri::from_str(first).map_err(|e| {
            format!(
                "uri {:?} is not an AMQP URI: {e}",
                crate::config::secret::redact_url_value(first).into_owned()
            )
        })?;
        if kind(exchange_type).is_none() {
            return Err(format!(
                "exchange_type is {exchange_type:?}: expected direct, fanout, topic or headers"
            ));
        }
        Ok(Endpoint {
            redacted_uri: crate::config::secret::redact_url_value(first).into_owned(),
            exchange: exchange.to_string(),
            exchange_type: exchange_type.to_string(),
            routing_key: routing_key.to_string(),
            uri: Secret::new(first),
        })
    }
}

fn kind(exchange_type: &str) -> Option<ExchangeKind> {
    match exchange_type.to_ascii_lowercase().as_str() {
        "direct" => Some(ExchangeKind::Direct),
        "fanout" => Some(ExchangeKind::Fanout),
        "topic" => Some(ExchangeKind::Topic),
        "headers" => Some(ExchangeKind::Headers),
        _ => None,
    }
}

/// One open connection with its confirm channel and the exchanges known to exist on it.
struct Link {
    connection: Connection,
    channel: Channel,
    exchanges: Vec<String>,
}

/// Delivers `amqp-forward` jobs.
pub struct AmqpForwardHandler {
    /// Redacted URI → URI, from the configuration's `AmqpForwardAttribute` mailets.
    uris: HashMap<String, Secret>,
    links: Mutex<HashMap<String, Link>>,
}

/// The handler for the `AmqpForwardAttribute` mailets of `container`, if it has any.
pub fn handler(container: &MailetContainerConfig) -> Option<AmqpForwardHandler> {
    let mut uris = HashMap::new();
    for step in container.processors.iter().flat_map(|p| &p.mailets) {
        let config = &step.mailet;
        if config.name != "AmqpForwardAttribute" {
            continue;
        }
        let uri = config.get("uri").unwrap_or_default();
        let (exchange, kind) = (
            config.get_or("exchange", ""),
            config.get_or("exchange_type", "direct"),
        );
        if let Ok(endpoint) = Endpoint::new(uri, exchange, kind, "") {
            uris.insert(endpoint.redacted_uri, endpoint.uri);
        }
    }
    (!uris.is_empty()).then(|| AmqpForwardHandler {
        uris,
        links: Mutex::default(),
    })
}

impl AmqpForwardHandler {
    async fn connect(uri: &Secret) -> Result<Link, lapin::Error> {
        let connection = Connection::connect(
            uri.expose(),
            ConnectionProperties::default().with_connection_name("mailetd-amqp-forward".into()),
        )
        .await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Link {
            connection,
            channel,
            exchanges: Vec::new(),
        })
    }

    /// A confirm channel on which `endpoint.exchange` exists.
    async fn channel(&self, endpoint: &Endpoint, uri: &Secret) -> Result<Channel, String> {
        let mut links = self.links.lock().await;
        let key = &endpoint.redacted_uri;
        let alive = links
            .get(key)
            .is_some_and(|l| l.connection.status().connected() && l.channel.status().connected());
        if !alive {
            if let Some(old) = links.remove(key) {
                let _ = old.connection.close(320, "reconnecting".into()).await;
            }
            let link = Self::connect(uri)
                .await
                .map_err(|e| format!("connect to {key}: {e}"))?;
            links.insert(key.clone(), link);
        }
        let link = links.get_mut(key).expect("just inserted");
        if !link.exchanges.contains(&endpoint.exchange) {
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            };
            let kind = kind(&endpoint.exchange_type).unwrap_or_default();
            let found = link
                .channel
                .exchange_declare(
                    endpoint.exchange.as_str().into(),
                    kind.clone(),
                    passive,
                    FieldTable::default(),
                )
                .await;
            if found.is_err() {
                // the failed passive declare closed the channel
                let channel = link
                    .connection
                    .create_channel()
                    .await
                    .map_err(|e| format!("channel on {key}: {e}"))?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| format!("confirm mode on {key}: {e}"))?;
                let durable = ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                };
                channel
                    .exchange_declare(
                        endpoint.exchange.as_str().into(),
                        kind,
                        durable,
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| format!("declare exchange {:?}: {e}", endpoint.exchange))?;
                tracing::info!(
                    exchange = endpoint.exchange,
                    "amqp-forward: exchange declared"
                );
                link.channel = channel;
            }
            link.exchanges.push(endpoint.exchange.clone());
        }
        Ok(link.channel.clone())
    }

    async fn publish(&self, endpoint: &Endpoint, uri: &Secret, body: &[u8]) -> Result<(), String> {
        let channel = self.channel(endpoint, uri).await?;
        let confirm = channel
            .basic_publish(
                endpoint.exchange.as_str().into(),
                endpoint.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .map_err(|e| format!("publish: {e}"))?
            .await
            .map_err(|e| format!("confirm: {e}"))?;
        if confirm.is_ack() {
            Ok(())
        } else {
            Err("the broker refused the message (nack)".into())
        }
    }
}

#[async_trait::async_trait]
impl JobHandler for AmqpForwardHandler {
    fn kinds(&self) -> &[&'static str] {
        &[KIND]
    }

    async fn deliver(&self, job: &OutboxJob) -> Delivery {
        let endpoint = match Endpoint::deserialize(&job.payload["endpoint"]) {
            Ok(e) => e,
            Err(e) => return Delivery::Permanent(format!("malformed amqp-forward job: {e}")),
        };
        let Some(body) = job.payload["body"]
            .as_str()
            .and_then(|b| STANDARD.decode(b).ok())
        else {
            return Delivery::Permanent("malformed amqp-forward job: no body".into());
        };
        let Some(uri) = self.uris.get(&endpoint.redacted_uri) else {
            return Delivery::Permanent(format!(
                "no AmqpForwardAttribute with uri {} in mailetcontainer.xml any more",
                endpoint.redacted_uri
            ));
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.publish(&endpoint, uri, &body)).await {
            Ok(Ok(())) => {
                tracing::info!(
                    job = job.id,
                    exchange = endpoint.exchange,
                    routing_key = endpoint.routing_key,
                    "amqp-forward: published"
                );
                Delivery::Done
            }
            Ok(Err(reason)) => {
                self.links.lock().await.remove(&endpoint.redacted_uri);
                Delivery::Retry(reason)
            }
            Err(_) => {
                self.links.lock().await.remove(&endpoint.redacted_uri);
                Delivery::Retry(format!("no confirm within {} s", ATTEMPT_TIMEOUT.as_secs()))
            }
        }
    }
}
