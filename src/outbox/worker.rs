//! Outbox delivery: N concurrent workers take due jobs, hand each to the handler of its
//! kind, and record the outcome (done, retry later with backoff, dead letter).
//!
//! The scheduler keeps the due times in memory (loaded at start, then only the new ids,
//! which grow) so a backlog of an outage costs no rescans; the store stays the truth.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::store;
use crate::config::settings::OutboxSettings;
use crate::mail::job::{Delivery, JobHandler, OutboxJob};
use crate::mail::now_ms;
use crate::store::Store;

/// The delay before attempt `attempts + 1`: `base·2^(attempts-1)` capped at `max`, scaled
/// by a random factor in [0.5, 1] so that jobs failed together do not retry together.
pub fn backoff(attempts: u32, base: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let base = base.max(Duration::from_millis(100));
    let exponent = attempts.saturating_sub(1).min(30);
    let delay = base.saturating_mul(1u32 << exponent).min(max.max(base));
    delay.mul_f64(rng.random_range(0.5..=1.0))
}

enum Outcome {
    /// Gone from the queue (done, dead, purged).
    Finished,
    /// Try again at this time.
    Again(u64),
}

/// Runs the delivery workers until `shutdown`; attempts in flight are finished first.
pub async fn run(
    store: Arc<Store>,
    handlers: Vec<Arc<dyn JobHandler>>,
    settings: OutboxSettings,
    shutdown: CancellationToken,
) {
    let by_kind = Arc::new(handlers_by_kind(handlers));
    let settings = Arc::new(settings);
    let slots = Arc::new(Semaphore::new(settings.workers.max(1)));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Outcome)>();
    let mut due: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut max_seen = 0u64;
    let notify = store::job_notify();
    loop {
        // Enabled before the scan, so jobs added during it still wake us.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // a few targets of a job with many at a time, between the scans that start them
        let more_to_split = store::split_fan_out(&store).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "outbox: cannot split a job with several targets");
            false
        });
        match store::pending_since(&store, max_seen) {
            Ok(new) => {
                for (id, at) in new {
                    max_seen = max_seen.max(id);
                    due.insert((at, id));
                }
            }
            Err(e) => tracing::error!(error = %e, "outbox: cannot read pending jobs"),
        }
        while let Ok((id, outcome)) = done_rx.try_recv() {
            if let Outcome::Again(at) = outcome {
                due.insert((at, id));
            }
        }
        let now = now_ms();
        while let Some(&(at, id)) = due.first() {
            if at > now || shutdown.is_cancelled() {
                break;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break;
            };
            due.pop_first();
            let (store, by_kind, settings, done_tx) = (
                store.clone(),
                by_kind.clone(),
                settings.clone(),
                done_tx.clone(),
            );
            tokio::spawn(async move {
                let outcome = attempt(&store, &by_kind, &settings, id).await;
                let _ = done_tx.send((id, outcome));
                drop(permit);
            });
        }
        if shutdown.is_cancelled() {
            break;
        }
        let sleep = match due.first() {
            _ if more_to_split => Duration::ZERO,
            Some(&(at, _)) if slots.available_permits() > 0 => {
                Duration::from_millis(at.saturating_sub(now_ms()).max(1))
            }
            _ => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = &mut notified => {}
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(sleep) => {}
            Some((id, outcome)) = done_rx.recv() => {
                if let Outcome::Again(at) = outcome {
                    due.insert((at, id));
                }
            }
        }
    }
    // Let attempts in flight record their outcome before the store closes.
    let _ = slots
        .acquire_many(settings.workers.max(1) as u32)
        .await
        .map(drop);
}

async fn attempt(
    store: &Store,
    handlers: &HashMap<&'static str, Arc<dyn JobHandler>>,
    settings: &OutboxSettings,
    id: u64,
) -> Outcome {
    let job = match store::pending_job(store, id) {
        Ok(Some(job)) => job,
        Ok(None) => return Outcome::Finished,
        Err(e) => {
            tracing::error!(job = id, error = %e, "outbox: cannot read a job; retrying in 5 s");
            return Outcome::Again(now_ms() + 5000);
        }
    };
    let started = std::time::Instant::now();
    let delivery = deliver(handlers, &job).await;
    let mut job = job;
    job.attempts += 1;
    count_attempt(&job, &delivery, started.elapsed());
    let result = record(store, settings, job, delivery).await;
    match result {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::error!(job = id, error = %e, "outbox: cannot record an attempt; retrying in 5 s");
            Outcome::Again(now_ms() + 5000)
        }
    }
}

/// Counts one attempt of `job` in the metrics (by kind, iTIP method and outcome); the same
/// counting for every backend.
pub fn count_attempt(job: &OutboxJob, delivery: &Delivery, elapsed: Duration) {
    let outcome = match delivery {
        Delivery::Done => "done",
        Delivery::Retry(_) => "retry",
        Delivery::Permanent(_) => "dead",
    };
    let method = itip_method(&job.payload);
    crate::observe::Metrics::process().outbox_attempt(
        &job.kind,
        method.as_deref(),
        outcome,
        elapsed,
    );
}

/// The iTIP method a job payload carries: `method`, inside the esn `document`, or inside the
/// esn `body` JSON (or the `document` as JSON text, see `esn_itip::shared_payload`); `None`
/// for jobs without one (contacts).
fn itip_method(payload: &serde_json::Value) -> Option<String> {
    if let Some(m) = payload
        .get("method")
        .or_else(|| payload.get("document")?.get("method"))
        .and_then(|m| m.as_str())
    {
        return Some(m.to_string());
    }
    let text = payload
        .get("body")
        .or_else(|| payload.get("document"))?
        .as_str()?;
    // only the method field: the esn body also holds the whole ICS, which a full parse into
    // a JSON tree would copy at every attempt
    #[derive(serde::Deserialize)]
    struct MethodOnly<'a> {
        #[serde(borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
    }
    let body: MethodOnly<'_> = serde_json::from_str(text).ok()?;
    body.method.map(std::borrow::Cow::into_owned)
}

/// What to do with a job after an attempt; the same policy for every backend.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Delivered: forget it.
    Done,
    /// Given up: dead-letter it with this reason.
    Dead(String),
    /// Try again at this time (ms since epoch), recording this error.
    RetryAt(u64, String),
}

/// Applies the retry policy to the outcome of attempt number `job.attempts`, logging it.
pub fn decide(settings: &OutboxSettings, job: &OutboxJob, delivery: Delivery) -> Decision {
    let (id, kind, target, attempts) = (job.id, &job.kind, &job.target, job.attempts);
    // The reason goes to the log, /api/status and the stored job: no URL password in it,
    // whatever a handler quoted.
    let hide = |reason: String| crate::config::secret::redact_urls(&reason).into_owned();
    let delivery = match delivery {
        Delivery::Retry(reason) => Delivery::Retry(hide(reason)),
        Delivery::Permanent(reason) => Delivery::Permanent(hide(reason)),
        Delivery::Done => Delivery::Done,
    };
    match delivery {
        Delivery::Done => Decision::Done,
        Delivery::Permanent(reason) => {
            tracing::warn!(
                error_source = "outbox",
                mail = %job.mail_name,
                job = id,
                kind,
                target,
                attempts,
                reason,
                "outbox: permanent failure, moved to the dead letters"
            );
            Decision::Dead(reason)
        }
        Delivery::Retry(reason) => {
            let now = now_ms();
            let deadline = job
                .first_seen_ms
                .saturating_add(settings.max_age_secs.saturating_mul(1000));
            if now >= deadline {
                let reason = format!(
                    "gave up after {attempts} attempts over {} s: {reason}",
                    now.saturating_sub(job.first_seen_ms) / 1000
                );
                tracing::warn!(
                    error_source = "outbox",
                    mail = %job.mail_name,
                    job = id,
                    kind,
                    target,
                    reason,
                    "outbox: job too old, moved to the dead letters"
                );
                return Decision::Dead(reason);
            }
            let delay = backoff(
                attempts,
                Duration::from_secs(settings.retry_base_secs),
                Duration::from_secs(settings.retry_max_secs),
                &mut rand::rng(),
            );
            let at = (now + delay.as_millis() as u64).min(deadline);
            tracing::info!(
                job = id,
                kind,
                target,
                attempts,
                retry_in_ms = at - now,
                reason,
                "outbox: transient failure, will retry"
            );
            Decision::RetryAt(at, reason)
        }
    }
}

async fn record(
    store: &Store,
    settings: &OutboxSettings,
    job: OutboxJob,
    delivery: Delivery,
) -> Result<Outcome, crate::store::StoreError> {
    match decide(settings, &job, delivery) {
        Decision::Done => {
            store::done(store, job.id).await?;
            Ok(Outcome::Finished)
        }
        Decision::Dead(reason) => {
            store::dead_letter(store, job, reason).await?;
            Ok(Outcome::Finished)
        }
        Decision::RetryAt(at, reason) => {
            store::reschedule(store, job, at, reason).await?;
            Ok(Outcome::Again(at))
        }
    }
}

/// The handler of each job kind.
pub fn handlers_by_kind(
    handlers: Vec<Arc<dyn JobHandler>>,
) -> HashMap<&'static str, Arc<dyn JobHandler>> {
    let mut by_kind: HashMap<&'static str, Arc<dyn JobHandler>> = HashMap::new();
    for handler in handlers {
        for kind in handler.kinds() {
            by_kind.insert(kind, handler.clone());
        }
    }
    by_kind
}

/// One attempt with the handler of the job's kind.
pub async fn deliver(
    handlers: &HashMap<&'static str, Arc<dyn JobHandler>>,
    job: &OutboxJob,
) -> Delivery {
    match handlers.get(job.kind.as_str()) {
        Some(handler) => handler.deliver(job).await,
        None => Delivery::Retry(format!(
            "no handler for jobs of kind {:?} (is its DAV server configured?)",
            job.kind
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::store::{JobState, insert_jobs, list};
    use crate::sync::Locked;
    use std::sync::Mutex;

    #[test]
    fn itip_method_comes_from_the_payload_or_the_esn_body() {
        let method = |v: serde_json::Value| itip_method(&v);
        let esn = serde_json::json!({"recipient": "b@x", "body": "{\"method\":\"CANCEL\"}"});
        assert_eq!(method(esn).as_deref(), Some("CANCEL"));
        let shared = serde_json::json!({"recipient": "b@x", "document": {"method": "REQUEST"}});
        assert_eq!(method(shared).as_deref(), Some("REQUEST"));
        let text = serde_json::json!({"recipient": "b@x", "document": "{\"method\":\"COUNTER\"}"});
        assert_eq!(method(text).as_deref(), Some("COUNTER"));
        assert_eq!(
            method(serde_json::json!({"method": "reply"})).as_deref(),
            Some("reply")
        );
        assert_eq!(method(serde_json::json!({"vcard": "…"})), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut rng = rand::rng();
        let base = Duration::from_secs(5);
        let max = Duration::from_secs(3600);
        for attempts in 1..=20u32 {
            let d = backoff(attempts, base, max, &mut rng);
            let full = base.saturating_mul(1 << (attempts - 1).min(30)).min(max);
            assert!(
                d <= full && d >= full / 2,
                "attempt {attempts}: {d:?} vs {full:?}"
            );
        }
        assert!(backoff(40, base, max, &mut rng) <= max);
    }

    struct Scripted {
        answers: Mutex<Vec<Delivery>>,
        seen: Mutex<Vec<u64>>,
    }

    #[async_trait::async_trait]
    impl JobHandler for Scripted {
        fn kinds(&self) -> &[&'static str] {
            &["test"]
        }
        async fn deliver(&self, job: &OutboxJob) -> Delivery {
            self.seen.locked().push(job.id);
            let mut answers = self.answers.locked();
            if answers.is_empty() {
                Delivery::Done
            } else {
                answers.remove(0)
            }
        }
    }

    async fn run_until_empty(store: Arc<Store>, handler: Arc<Scripted>, settings: OutboxSettings) {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            store.clone(),
            vec![handler],
            settings,
            shutdown.clone(),
        ));
        for _ in 0..400 {
            if list(&store, JobState::Pending).unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        shutdown.cancel();
        task.await.unwrap();
    }

    fn settings() -> OutboxSettings {
        OutboxSettings {
            workers: 2,
            retry_base_secs: 0,
            retry_max_secs: 0,
            max_age_secs: 3600,
        }
    }

    #[tokio::test]
    async fn retries_then_succeeds_and_dead_letters_permanent_failures() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .write(|txn| {
                insert_jobs(
                    txn,
                    vec![
                        OutboxJob::new("test", "a@x", serde_json::json!({})),
                        OutboxJob::new("test", "b@x", serde_json::json!({})),
                    ],
                )
            })
            .await
            .unwrap();
        let handler = Arc::new(Scripted {
            answers: Mutex::new(vec![
                Delivery::Retry("503".into()),
                Delivery::Permanent("HTTP 400: missing uid".into()),
            ]),
            seen: Mutex::new(Vec::new()),
        });
        run_until_empty(store.clone(), handler.clone(), settings()).await;
        assert!(list(&store, JobState::Pending).unwrap().is_empty());
        let dead = list(&store, JobState::Dead).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 400: missing uid"));
        assert_eq!(handler.seen.locked().len(), 3);
    }

    #[tokio::test]
    async fn too_old_jobs_are_dead_lettered_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut old = OutboxJob::new("test", "a@x", serde_json::json!({}));
        old.first_seen_ms = now_ms() - 7_200_000;
        store
            .write(|txn| insert_jobs(txn, vec![old]))
            .await
            .unwrap();
        let handler = Arc::new(Scripted {
            answers: Mutex::new(vec![Delivery::Retry("HTTP 503: down".into())]),
            seen: Mutex::new(Vec::new()),
        });
        run_until_empty(store.clone(), handler, settings()).await;
        let dead = list(&store, JobState::Dead).unwrap();
        assert_eq!(dead.len(), 1);
        let reason = dead[0].last_error.clone().unwrap();
        assert!(
            reason.starts_with("gave up after 1 attempts") && reason.ends_with("HTTP 503: down"),
            "{reason}"
        );
        assert_eq!(
            crate::outbox::store::retry(&store, vec![]).await.unwrap(),
            1
        );
        assert_eq!(list(&store, JobState::Pending).unwrap()[0].attempts, 0);
    }
}
