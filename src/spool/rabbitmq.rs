//! The spool on RabbitMQ, for nodes that share the work (issue 10).
//!
//! ```toml
//! [spool]
//! backend = "rabbitmq"
//! uri = "amqp://mailetd:secret@rabbitmq:5672/%2f"
//! queue = "mailetd.spool"          # received mails
//! outbox_queue = "mailetd.outbox"  # DAV jobs
//! quorum = true                    # on a RabbitMQ cluster
//! max_message_bytes = 67108864     # larger mails get 552 at SMTP
//! ```
//!
//! - `enqueue` publishes a persistent message and returns after the broker's confirm, so
//!   SMTP answers 250 only for a mail the broker holds; an unreachable broker is an error
//!   (451 4.3.0).
//! - `dequeue` takes deliveries of a consumer with manual acks and a prefetch equal to the
//!   processing concurrency. A node that dies with mails in hand leaves them unacked, and
//!   the broker redelivers them to another node.
//! - `complete` publishes the outbox jobs (confirmed) and only then acks the mail, so a
//!   crash in between costs a repeated job, never a lost one.
//! - `retry_at` publishes the updated mail to the retry queue of the step at least as long
//!   as the delay (TTL + dead-letter back to the work queue), then acks the original.
//! - `begin_attempt` reads the broker's own count: a quorum queue stamps each redelivery
//!   with `x-delivery-count`, so a mail whose processing kills its node is recognised as
//!   it comes back. A classic queue only says "redelivered" without counting, so poison
//!   mails are detected with `quorum = true` only.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Spool, SpoolError};
use crate::broker::{self, Broker};
use crate::mail::job::OutboxJob;
use crate::mail::{Mail, MailId, now_ms};
use crate::sync::Locked;

/// The RabbitMQ spool.
pub struct RabbitSpool {
    broker: Arc<Broker>,
    queue: String,
    outbox_queue: String,
    prefetch: u16,
    deliveries: Mutex<Option<mpsc::Receiver<lapin::message::Delivery>>>,
    consumer_started: AtomicBool,
    /// Each leased mail's acker and its delivery number, when the queue counts deliveries
    /// (quorum queues).
    leased: std::sync::Mutex<HashMap<MailId, (Acker, Option<u32>)>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    shutdown: CancellationToken,
}

impl RabbitSpool {
    /// A spool on `queue` whose jobs go to `outbox_queue`; `prefetch` is the number of mails
    /// processed at once on this node.
    pub fn new(
        broker: Arc<Broker>,
        queue: &str,
        outbox_queue: &str,
        prefetch: usize,
    ) -> Arc<RabbitSpool> {
        Arc::new(RabbitSpool {
            broker,
            queue: queue.to_string(),
            outbox_queue: outbox_queue.to_string(),
            prefetch: prefetch.clamp(1, u16::MAX as usize) as u16,
            deliveries: Mutex::new(None),
            consumer_started: AtomicBool::new(false),
            leased: std::sync::Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
        })
    }

    /// The consumer starts with the first `dequeue`: ingest-only nodes never consume.
    async fn receiver(
        &self,
    ) -> tokio::sync::MutexGuard<'_, Option<mpsc::Receiver<lapin::message::Delivery>>> {
        let mut guard = self.deliveries.lock().await;
        if !self.consumer_started.swap(true, Ordering::AcqRel) {
            let (tx, rx) = mpsc::channel(self.prefetch as usize);
            tokio::spawn(self.broker.clone().consume(
                self.queue.clone(),
                self.prefetch,
                tx,
                self.shutdown.clone(),
            ));
            *guard = Some(rx);
        }
        guard
    }

    fn take_lease(&self, id: MailId) -> Result<Acker, SpoolError> {
        self.leased
            .locked()
            .remove(&id)
            .map(|(acker, _)| acker)
            .ok_or_else(|| SpoolError::Unavailable(format!("mail {id} is not leased here")))
    }

    /// Runs `publish`, then acks the mail; when publishing fails the mail goes back to the
    /// queue at once (a live channel would otherwise hold it until this node stops).
    async fn publish_then_ack(
        &self,
        id: MailId,
        acker: Acker,
        publish: impl std::future::Future<Output = Result<(), broker::BrokerError>>,
    ) -> Result<(), SpoolError> {
        if let Err(e) = publish.await {
            let _ = acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
            return Err(e.into());
        }
        self.ack(id, acker).await
    }

    async fn ack(&self, id: MailId, acker: Acker) -> Result<(), SpoolError> {
        acker
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(|source| SpoolError::Ack { id, source })
    }
}

#[async_trait]
impl Spool for RabbitSpool {
    async fn enqueue(&self, mut mail: Mail) -> Result<MailId, SpoolError> {
        let id: MailId = rand::random::<u64>() >> 11;
        mail.id = id;
        if mail.name.is_empty() {
            mail.name = format!("mail-{id:x}");
        }
        self.broker
            .publish(&self.queue, &mail.to_spool_bytes(), None)
            .await?;
        Ok(id)
    }

    async fn dequeue(&self) -> Option<Mail> {
        let mut guard = self.receiver().await;
        let rx = guard.as_mut()?;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            let delivery = tokio::select! {
                d = rx.recv() => d?,
                _ = self.shutdown.cancelled() => return None,
            };
            match Mail::from_spool_bytes(&delivery.data) {
                Ok(mut mail) => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    mail.id = id;
                    let delivery_number = delivery_count(&delivery.properties).map(|n| n + 1);
                    self.leased
                        .locked()
                        .insert(id, (delivery.acker, delivery_number));
                    return Some(mail);
                }
                Err(reason) => {
                    // Rejected without requeue: the queue dead-letters it to `.corrupt`.
                    tracing::error!(
                        reason,
                        queue = self.queue,
                        "spool: undecodable message moved to the corrupt queue"
                    );
                    let _ = delivery
                        .acker
                        .reject(BasicRejectOptions { requeue: false })
                        .await;
                }
            }
        }
    }

    async fn begin_attempt(&self, mail: &Mail) -> Result<Option<u32>, SpoolError> {
        // the broker counted the delivery before handing it over: nothing to write
        Ok(self.leased.locked().get(&mail.id).and_then(|(_, n)| *n))
    }

    async fn complete(&self, id: MailId, jobs: Vec<OutboxJob>) -> Result<(), SpoolError> {
        let acker = self.take_lease(id)?;
        if !acker.usable() {
            // Its channel is gone: the broker already gave the mail to another consumer, so
            // publishing the jobs here would apply it twice.
            return Err(SpoolError::Unavailable(format!(
                "mail {id}: the broker connection was lost while it was processed; it will be delivered again"
            )));
        }
        let publish = async {
            let now = now_ms();
            // one message per target: the outbox consumers deliver and retry them one by one
            for mut job in jobs.into_iter().flat_map(OutboxJob::into_each) {
                job.id = rand::random::<u64>() >> 11;
                if job.first_seen_ms == 0 {
                    job.first_seen_ms = now;
                }
                if job.next_attempt_ms == 0 {
                    job.next_attempt_ms = now;
                }
                let bytes = serde_json::to_vec(&job).expect("jobs serialise");
                self.broker
                    .publish(&self.outbox_queue, &bytes, None)
                    .await?;
            }
            Ok(())
        };
        self.publish_then_ack(id, acker, publish).await
    }

    async fn retry_at(&self, mail: &Mail, at_ms: u64) -> Result<(), SpoolError> {
        let acker = self.take_lease(mail.id)?;
        let step = broker::retry_step(at_ms.saturating_sub(now_ms()));
        let (record, queue) = (
            mail.to_spool_bytes(),
            broker::retry_queue(&self.queue, step),
        );
        let publish = self.broker.publish(&queue, &record, None);
        self.publish_then_ack(mail.id, acker, publish).await
    }

    /// Mails this node holds unacknowledged (the queue itself is the broker's to count).
    fn depth(&self) -> usize {
        self.leased.locked().len()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.shutdown.cancel();
    }
}

/// Earlier deliveries of a message, as a quorum queue counts them (absent on the first
/// delivery): `x-delivery-count` (RabbitMQ 3.x counts every return, a dead consumer's too),
/// `x-acquired-count` (4.x, where `x-delivery-count` leaves those out). `None` on a classic
/// queue, which does not count.
fn delivery_count(properties: &lapin::BasicProperties) -> Option<u32> {
    use lapin::types::AMQPValue;
    let headers = properties.headers().as_ref()?;
    ["x-delivery-count", "x-acquired-count"]
        .iter()
        .filter_map(|name| match headers.inner().get(*name)? {
            AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongUInt(n) => Some(*n),
            AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
            AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
            _ => None,
        })
        .max()
}
