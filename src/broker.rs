//! The RabbitMQ link shared by the broker spool and the broker outbox: one connection,
//! one publisher-confirm channel, consumers on channels of their own, the queue topology,
//! and reconnection with backoff.
//!
//! Topology, for a work queue `Q` (the spool queue and the outbox queue each get one):
//! - `Q`: durable (quorum when configured); rejected (undecodable) messages dead-letter to
//!   `Q.corrupt`;
//! - `Q.retry.<N>s` for each step of [`RETRY_STEPS`]: message TTL N s, dead-lettering back
//!   to `Q` through the default exchange. No broker plugin (delayed-message) is needed;
//! - `Q.dead`: outbox jobs given up, with the reason in the `x-mailetd-reason` header.
//!
//! Every message is persistent and every publish waits for the broker's confirm.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::settings::SpoolSettings;
use crate::sync::Locked;

/// Delays (seconds) of the retry queues: a retry waits for the smallest step at least as
/// long as the delay asked for (the last one when none is).
pub const RETRY_STEPS: [u64; 9] = [1, 4, 16, 60, 300, 900, 3600, 4 * 3600, 12 * 3600];

/// Header carrying the reason of a dead letter.
pub const REASON_HEADER: &str = "x-mailetd-reason";

/// The broker could not be reached or refused an operation.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The AMQP client failed (connection, channel, protocol).
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    /// No usable connection now (`not connected`, waiting before the next attempt, timed out).
    #[error("broker: {0}")]
    Unreachable(&'static str),
    /// The broker nacked a published message.
    #[error("broker: the broker refused a message for {0}")]
    Refused(String),
    /// No publisher confirm came in time.
    #[error("broker: no confirm from the broker within {} s", .0.as_secs())]
    NoConfirm(std::time::Duration),
}

/// Queue names of one work queue.
pub fn retry_queue(queue: &str, step_secs: u64) -> String {
    format!("{queue}.retry.{step_secs}s")
}

/// The dead-letter queue of `queue`.
pub fn dead_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

/// The queue of undecodable messages of `queue`.
pub fn corrupt_queue(queue: &str) -> String {
    format!("{queue}.corrupt")
}

/// The retry step (seconds) used for a delay of `delay_ms`.
pub fn retry_step(delay_ms: u64) -> u64 {
    RETRY_STEPS
        .iter()
        .copied()
        .find(|s| s * 1000 >= delay_ms)
        .unwrap_or(RETRY_STEPS[RETRY_STEPS.len() - 1])
}

struct Link {
    connection: Connection,
    publisher: Channel,
}

/// A shared, self-healing link to RabbitMQ.
pub struct Broker {
    uri: String,
    quorum: bool,
    queues: Vec<String>,
    link: Mutex<Option<Link>>,
    /// No connection attempt before this instant (backoff after a failure), so that a down
    /// broker costs each SMTP transaction an immediate 451, not a connect storm.
    retry_after: std::sync::Mutex<(Instant, Duration)>,
    connected: AtomicBool,
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A publish not confirmed by then is reported failed (SMTP: 451; the sender retries).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

impl Broker {
    /// A broker link for `settings` (not connected until first used).
    pub fn new(settings: &SpoolSettings) -> Arc<Broker> {
        Arc::new(Broker {
            uri: settings.uri.expose().to_string(),
            quorum: settings.quorum,
            queues: vec![settings.queue.clone(), settings.outbox_queue.clone()],
            link: Mutex::new(None),
            retry_after: std::sync::Mutex::new((Instant::now(), BACKOFF_MIN)),
            connected: AtomicBool::new(false),
        })
    }

    /// Whether the last operation found the broker reachable (for `/health/ready`).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Connects now (declaring the topology), or fails; used at startup and by the CLI.
    pub async fn connect(&self) -> Result<(), BrokerError> {
        self.publisher().await.map(drop)
    }

    async fn publisher(&self) -> Result<Channel, BrokerError> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref()
            && l.connection.status().connected()
            && l.publisher.status().connected()
        {
            return Ok(l.publisher.clone());
        }
        if let Some(old) = link.take() {
            self.lost();
            let _ = old.connection.close(320, "reconnecting".into()).await;
        }
        {
            let (after, _) = *self.retry_after.locked();
            if Instant::now() < after {
                return Err(BrokerError::Unreachable(
                    "unreachable (waiting before the next connection attempt)",
                ));
            }
        }
        match self.open().await {
            Ok(new) => {
                let channel = new.publisher.clone();
                *link = Some(new);
                *self.retry_after.locked() = (Instant::now(), BACKOFF_MIN);
                if !self.connected.swap(true, Ordering::Relaxed) {
                    tracing::info!("broker: connected");
                }
                Ok(channel)
            }
            Err(e) => {
                let mut r = self.retry_after.locked();
                let delay = r.1;
                *r = (Instant::now() + delay, (delay * 2).min(BACKOFF_MAX));
                self.lost();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "broker: cannot connect");
                Err(e)
            }
        }
    }

    fn lost(&self) {
        if self.connected.swap(false, Ordering::Relaxed) {
            tracing::error!("broker: connection lost");
        }
    }

    async fn open(&self) -> Result<Link, BrokerError> {
        let connection = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(
                &self.uri,
                ConnectionProperties::default().with_connection_name("mailetd".into()),
            ),
        )
        .await
        .map_err(|_| BrokerError::Unreachable("connection timed out"))??;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        for queue in &self.queues {
            self.declare(&publisher, queue).await?;
        }
        Ok(Link {
            connection,
            publisher,
        })
    }

    fn queue_args(&self, extra: &[(&str, AMQPValue)]) -> FieldTable {
        let mut args = FieldTable::default();
        if self.quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        for (k, v) in extra {
            args.insert((*k).into(), v.clone());
        }
        args
    }

    async fn declare(&self, channel: &Channel, queue: &str) -> Result<(), BrokerError> {
        let durable = QueueDeclareOptions::durable();
        let to = |q: &str| AMQPValue::LongString(q.into());
        for side in [corrupt_queue(queue), dead_queue(queue)] {
            channel
                .queue_declare(side.as_str().into(), durable, self.queue_args(&[]))
                .await?;
        }
        channel
            .queue_declare(
                queue.into(),
                durable,
                self.queue_args(&[
                    ("x-dead-letter-exchange", to("")),
                    ("x-dead-letter-routing-key", to(&corrupt_queue(queue))),
                ]),
            )
            .await?;
        for step in RETRY_STEPS {
            channel
                .queue_declare(
                    retry_queue(queue, step).as_str().into(),
                    durable,
                    self.queue_args(&[
                        (
                            "x-message-ttl",
                            AMQPValue::LongLongInt((step * 1000) as i64),
                        ),
                        ("x-dead-letter-exchange", to("")),
                        ("x-dead-letter-routing-key", to(queue)),
                    ]),
                )
                .await?;
        }
        Ok(())
    }

    /// Publishes a persistent message to `queue` and returns once the broker confirmed it.
    pub async fn publish(
        &self,
        queue: &str,
        payload: &[u8],
        headers: Option<FieldTable>,
    ) -> Result<(), BrokerError> {
        let channel = self.publisher().await?;
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if let Some(headers) = headers {
            properties = properties.with_headers(headers);
        }
        let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, async {
            channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    payload,
                    properties,
                )
                .await?
                .await
        })
        .await;
        match outcome {
            Ok(Ok(confirm)) if confirm.is_ack() => Ok(()),
            Ok(Ok(_)) => Err(BrokerError::Refused(queue.to_string())),
            Ok(Err(e)) => {
                self.lost();
                Err(e.into())
            }
            Err(_) => Err(BrokerError::NoConfirm(CONFIRM_TIMEOUT)),
        }
    }

    /// A channel of its own (for the CLI's gets), on the shared connection.
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        self.publisher().await?;
        let link = self.link.lock().await;
        let link = link
            .as_ref()
            .ok_or(BrokerError::Unreachable("not connected"))?;
        Ok(link.connection.create_channel().await?)
    }

    /// Consumes `queue` with manual acks and `prefetch` unacknowledged messages at most,
    /// handing each delivery to `tx`; reconnects with backoff until `shutdown`.
    pub async fn consume(
        self: Arc<Self>,
        queue: String,
        prefetch: u16,
        tx: tokio::sync::mpsc::Sender<lapin::message::Delivery>,
        shutdown: CancellationToken,
    ) {
        let mut delay = BACKOFF_MIN;
        while !shutdown.is_cancelled() {
            let consumer = async {
                let channel = self.channel().await?;
                channel
                    .basic_qos(prefetch.max(1), BasicQosOptions::default())
                    .await?;
                let consumer = channel
                    .basic_consume(
                        queue.as_str().into(),
                        ShortString::from(""),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                Ok::<_, BrokerError>((channel, consumer))
            }
            .await;
            match consumer {
                Ok((channel, mut consumer)) => {
                    delay = BACKOFF_MIN;
                    tracing::info!(queue, prefetch, "broker: consuming");
                    loop {
                        let next = tokio::select! {
                            _ = shutdown.cancelled() => break,
                            next = consumer.next() => next,
                        };
                        match next {
                            Some(Ok(delivery)) => {
                                if tx.send(delivery).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(e)) => {
                                tracing::warn!(queue, error = %e, "broker: consumer stopped");
                                self.lost();
                                break;
                            }
                            None => break,
                        }
                    }
                    // Unacked deliveries of this channel go back to the queue when it closes.
                    if shutdown.is_cancelled() {
                        return;
                    }
                    let _ = channel.close(200, "reconsuming".into()).await;
                }
                Err(e) => {
                    tracing::debug!(queue, error = %e, "broker: cannot consume yet");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }
}

/// A header table holding the dead-letter reason.
pub fn reason_headers(reason: &str) -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert(
        REASON_HEADER.into(),
        AMQPValue::LongString(reason.as_bytes().to_vec().into()),
    );
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_for_the_next_step_up() {
        assert_eq!(retry_step(0), 1);
        assert_eq!(retry_step(1000), 1);
        assert_eq!(retry_step(1001), 4);
        assert_eq!(retry_step(59_000), 60);
        assert_eq!(retry_step(u64::MAX / 2), 12 * 3600);
        assert_eq!(retry_queue("q", 4), "q.retry.4s");
    }
}
