//! The outbox on RabbitMQ: jobs are persistent messages of the outbox queue, consumed with
//! manual acks by any number of `deliver` nodes.
//!
//! An attempt that fails transiently republishes the job (attempts + 1, last error) to the
//! retry queue of the step at least as long as the backoff delay; its TTL dead-letters it
//! back to the outbox queue. A permanent failure, or a job past `max_age_secs`, goes to
//! `<outbox>.dead` with the reason in the `x-mailetd-reason` header. The job is acked only
//! after that publish is confirmed: a node killed mid-attempt leaves it to another node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicRejectOptions, QueuePurgeOptions};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::admin::OutboxAdmin;
use super::store::JobState;
use super::worker::{Decision, count_attempt, decide, deliver, handlers_by_kind};
use crate::broker::{self, Broker, BrokerError, RETRY_STEPS};
use crate::config::settings::OutboxSettings;
use crate::mail::job::{JobHandler, OutboxJob};
use crate::mail::now_ms;

/// Runs the delivery workers on `queue` until `shutdown`; attempts in flight finish first.
pub async fn run(
    broker: Arc<Broker>,
    queue: String,
    handlers: Vec<Arc<dyn JobHandler>>,
    settings: OutboxSettings,
    shutdown: CancellationToken,
) {
    let workers = settings.workers.clamp(1, u16::MAX as usize);
    let by_kind = Arc::new(handlers_by_kind(handlers));
    let settings = Arc::new(settings);
    let (tx, mut rx) = mpsc::channel(workers);
    let consuming = CancellationToken::new();
    tokio::spawn(
        broker
            .clone()
            .consume(queue.clone(), workers as u16, tx, consuming.clone()),
    );
    let slots = Arc::new(Semaphore::new(workers));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("never closed"),
        };
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            d = rx.recv() => d,
        };
        let Some(delivery) = delivery else { break };
        let (broker, queue, by_kind, settings) = (
            broker.clone(),
            queue.clone(),
            by_kind.clone(),
            settings.clone(),
        );
        tokio::spawn(async move {
            attempt(&broker, &queue, &by_kind, &settings, delivery).await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), slots.acquire_many(workers as u32)).await;
    consuming.cancel();
}

async fn attempt(
    broker: &Broker,
    queue: &str,
    handlers: &HashMap<&'static str, Arc<dyn JobHandler>>,
    settings: &OutboxSettings,
    delivery: lapin::message::Delivery,
) {
    let mut job: OutboxJob = match serde_json::from_slice(&delivery.data) {
        Ok(job) => job,
        Err(e) => {
            tracing::error!(error = %e, queue, "outbox: undecodable job moved to the corrupt queue");
            let _ = delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await;
            return;
        }
    };
    let started = std::time::Instant::now();
    let outcome = deliver(handlers, &job).await;
    job.attempts += 1;
    count_attempt(&job, &outcome, started.elapsed());
    let published = match decide(settings, &job, outcome) {
        Decision::Done => Ok(()),
        Decision::Dead(reason) => {
            job.last_error = Some(reason.clone());
            broker
                .publish(
                    &broker::dead_queue(queue),
                    &encode(&job),
                    Some(broker::reason_headers(&reason)),
                )
                .await
        }
        Decision::RetryAt(at, reason) => {
            job.next_attempt_ms = at;
            job.last_error = Some(reason);
            let step = broker::retry_step(at.saturating_sub(now_ms()));
            broker
                .publish(&broker::retry_queue(queue, step), &encode(&job), None)
                .await
        }
    };
    match published {
        Ok(()) => {
            if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                tracing::warn!(job = job.id, error = %e, "outbox: cannot ack a job; the broker will deliver it again");
            }
        }
        Err(e) => {
            // Not acked: back in the queue now, or with the channel when it closed.
            tracing::error!(job = job.id, error = %e, "outbox: cannot record an attempt");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = delivery
                .acker
                .reject(BasicRejectOptions { requeue: true })
                .await;
        }
    }
}

fn encode(job: &OutboxJob) -> Vec<u8> {
    serde_json::to_vec(job).expect("jobs serialise")
}

/// `mailetd outbox list|retry|purge` on the broker: messages are taken with `basic.get`
/// and those not acted upon go back to their queue when the channel closes.
pub struct BrokerOutbox {
    broker: Arc<Broker>,
    queue: String,
}

impl BrokerOutbox {
    /// The admin view of the outbox queue `queue`.
    pub fn new(broker: Arc<Broker>, queue: &str) -> BrokerOutbox {
        BrokerOutbox {
            broker,
            queue: queue.to_string(),
        }
    }

    fn pending_queues(&self) -> Vec<String> {
        std::iter::once(self.queue.clone())
            .chain(
                RETRY_STEPS
                    .iter()
                    .map(|s| broker::retry_queue(&self.queue, *s)),
            )
            .collect()
    }

    fn queues(&self, state: JobState) -> Vec<String> {
        match state {
            JobState::Pending => self.pending_queues(),
            JobState::Dead => vec![broker::dead_queue(&self.queue)],
        }
    }

    /// Every message of `queues`, unacked on `channel`.
    async fn take_all(
        channel: &lapin::Channel,
        queues: &[String],
    ) -> Result<Vec<(OutboxJob, lapin::Acker)>, BrokerError> {
        let mut out = Vec::new();
        for queue in queues {
            while let Some(message) = channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                .await?
            {
                let delivery = message.delivery;
                match serde_json::from_slice::<OutboxJob>(&delivery.data) {
                    Ok(job) => out.push((job, delivery.acker)),
                    Err(e) => {
                        tracing::warn!(queue, error = %e, "outbox: undecodable job left in place")
                    }
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl OutboxAdmin for BrokerOutbox {
    async fn list(&self, state: JobState) -> anyhow::Result<Vec<OutboxJob>> {
        let channel = self.broker.channel().await?;
        let jobs = Self::take_all(&channel, &self.queues(state)).await?;
        let _ = channel.close(200, "listed".into()).await;
        let mut jobs: Vec<OutboxJob> = jobs.into_iter().map(|(j, _)| j).collect();
        jobs.sort_by_key(|j| (j.next_attempt_ms, j.id));
        Ok(jobs)
    }

    async fn retry(&self, ids: Vec<u64>) -> anyhow::Result<usize> {
        let channel = self.broker.channel().await?;
        let dead = Self::take_all(&channel, &self.queues(JobState::Dead)).await?;
        let now = now_ms();
        let mut count = 0;
        for (mut job, acker) in dead {
            if !ids.is_empty() && !ids.contains(&job.id) {
                continue;
            }
            job.attempts = 0;
            job.first_seen_ms = now;
            job.next_attempt_ms = now;
            self.broker
                .publish(&self.queue, &encode(&job), None)
                .await?;
            acker.ack(BasicAckOptions::default()).await?;
            count += 1;
        }
        let _ = channel.close(200, "retried".into()).await;
        Ok(count)
    }

    async fn purge(&self, state: JobState, ids: Vec<u64>) -> anyhow::Result<usize> {
        let channel = self.broker.channel().await?;
        let mut count = 0;
        if ids.is_empty() {
            for queue in self.queues(state) {
                count += channel
                    .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                    .await? as usize;
            }
        } else {
            for (job, acker) in Self::take_all(&channel, &self.queues(state)).await? {
                if ids.contains(&job.id) {
                    acker.ack(BasicAckOptions::default()).await?;
                    count += 1;
                }
            }
        }
        let _ = channel.close(200, "purged".into()).await;
        Ok(count)
    }
}
