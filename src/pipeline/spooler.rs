//! The spooler: takes mails from the [`Spool`], runs `threads` of them at once through the
//! [`Container`], and releases each with the outbox jobs of all its copies.
//!
//! A `propagate`d failure puts the mail back with exponential backoff (James re-queues at
//! once, which spins on a failing dependency) and counts it in `mail-processing-error-count`;
//! the 6th consecutive failure stores the mail in the `errorRepository` and releases it.
//!
//! A mail whose processing never ends because it kills the process (a crash, the memory
//! cap, a kill) would run again at every restart and kill it again. Each start is recorded
//! in the spool before processing; past `[spool] max_attempts` unfinished starts the mail
//! is set aside in the `errorRepository` unprocessed, with the reason, and its neighbours
//! go on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::mail::job::OutboxJob;
use crate::mail::{AttributeValue, Mail, attributes, now_ms};
use crate::repository::Repository;
use crate::spool::Spool;

use super::{Container, Run};

/// Failures after which a mail goes to the error repository (James: count > 5).
pub const MAX_FAILURES: i64 = 6;
/// Attribute of a mail set aside as poison: how many processing starts never finished.
pub const UNFINISHED_ATTEMPTS: &str = "mailetd.unfinished-attempts";

/// The spooler's settings.
#[derive(Clone, Debug)]
pub struct SpoolerSettings {
    /// Mails processed at once (`spooler/threads`, or `workers` of mailetd.toml).
    pub threads: usize,
    /// The first retry delay; doubled at each failure.
    pub retry_base: Duration,
    /// Where mails failing [`MAX_FAILURES`] times go.
    pub error_repository: Repository,
    /// Unfinished processing starts after which a mail is set aside as poison.
    pub max_attempts: u32,
    /// How long to wait for running mails at shutdown.
    pub shutdown_timeout: Duration,
    /// Mirrored-twice deduplication window (`[dedup] window_secs`); zero disables it.
    pub dedup_window: Duration,
}

/// Runs until `shutdown` is cancelled, then waits (up to the timeout) for running mails.
/// Mails still running after that stay in the spool and are processed again at restart.
pub async fn run(
    container: Arc<Container>,
    spool: Arc<dyn Spool>,
    settings: SpoolerSettings,
    shutdown: CancellationToken,
) {
    if settings.threads == 0 {
        tracing::warn!("spooler/threads is 0: the spooler is disabled and mails stay in the spool");
        shutdown.cancelled().await;
        return;
    }
    let permits = Arc::new(Semaphore::new(settings.threads));
    let settings = Arc::new(settings);
    tracing::info!(threads = settings.threads, "spooler started");
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let mail = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = spool.dequeue() => m,
        };
        let Some(mail) = mail else { break };
        let container = container.clone();
        let spool = spool.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            handle(&container, spool.as_ref(), &settings, mail).await;
            drop(permit);
        });
    }
    let all = settings.threads as u32;
    if tokio::time::timeout(settings.shutdown_timeout, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "shutdown: mails still running are left in the spool and will be processed again"
        );
    }
    tracing::info!("spooler stopped");
}

/// Processes one leased mail and releases it (complete, retry or error repository).
pub async fn handle(
    container: &Container,
    spool: &dyn Spool,
    settings: &SpoolerSettings,
    mail: Mail,
) {
    let id = mail.id;
    match spool.begin_attempt(&mail).await {
        Ok(Some(attempt)) if attempt > settings.max_attempts => {
            return set_aside(container, spool, settings, mail, attempt - 1).await;
        }
        Ok(_) => {}
        Err(e) => {
            // processing it uncounted could crash-loop: wait until the spool can count
            tracing::error!(
                mail = id,
                "cannot record the processing attempt, retrying later: {e}"
            );
            if let Err(e) = spool
                .retry_at(&mail, now_ms() + backoff_ms(settings, 1))
                .await
            {
                tracing::error!(mail = id, "cannot release the mail in the spool: {e}");
            }
            return;
        }
    }
    super::fault::abort_if_named(&mail);
    let size = mail.size();
    let (sender, rcpts) = (mail.sender_text(), mail.recipients.len());
    // What the failure path needs of the mail as it came: the spool's stored copy when it
    // can read it again, else a copy held here (the mailets change the mail they process;
    // a second copy of a 25 MB mail for a path rarely taken is what this avoids).
    let original = (!spool.rereads()).then(|| mail.clone());
    // the dedup key covers the mail as received (the mailets may change its headers)
    let mail_key = (!settings.dedup_window.is_zero())
        .then(|| crate::mail::job::mail_key(&mail))
        .flatten();
    let mut run = Run::default();
    let result = container.process(mail, &mut run).await;
    crate::mail::job::stamp(
        mail_key,
        &mut run.jobs,
        settings.dedup_window.as_millis() as u64,
    );
    let released = match result {
        Ok(()) => {
            // logged before the release: a crash in between re-processes the mail and logs it
            // again, so every acknowledged mail shows up at least once (the field names are
            // the ones ingest's tests and operators grep for)
            tracing::info!(
                mail = id,
                from = %sender,
                rcpts,
                size,
                jobs = run.jobs.iter().map(OutboxJob::target_count).sum::<usize>(),
                "mail processed"
            );
            container.context().metrics.mail_processed("done");
            spool.complete(id, run.jobs).await
        }
        Err(e) => {
            let mut mail = match original {
                Some(mail) => mail,
                None => match spool.reread(id).await {
                    Ok(mail) => mail,
                    Err(reread) => {
                        // the spool put it back as it was stored: it runs again later
                        tracing::error!(
                            mail = id,
                            "processing failed ({e:#}) and the mail cannot be read again from the spool to count the failure: {reread}"
                        );
                        return;
                    }
                },
            };
            let count = match mail.attribute(attributes::PROCESSING_ERROR_COUNT) {
                Some(AttributeValue::Long(n)) => *n,
                _ => 0,
            } + 1;
            mail.set_attribute(
                attributes::PROCESSING_ERROR_COUNT,
                AttributeValue::Long(count),
            );
            if count >= MAX_FAILURES {
                container
                    .context()
                    .metrics
                    .mail_processed("error_repository");
                tracing::error!(error_source = "spooler", mail = %mail.name, failures = count, "processing failed {count} times, storing it in {}: {e:#}", settings.error_repository.url);
                mail.error_message = Some(format!("{e:#}"));
                match settings.error_repository.store(&mail) {
                    Ok(_) => spool.complete(id, Vec::new()).await,
                    Err(store_error) => {
                        tracing::error!(mail = %mail.name, "cannot store it in the error repository, retrying later: {store_error:#}");
                        spool
                            .retry_at(&mail, now_ms() + backoff_ms(settings, count))
                            .await
                    }
                }
            } else {
                container.context().metrics.mail_processed("retry");
                let delay = backoff_ms(settings, count);
                tracing::warn!(error_source = "spooler", mail = %mail.name, failures = count, "processing failed, retrying in {} s: {e:#}", delay / 1000);
                spool.retry_at(&mail, now_ms() + delay).await
            }
        }
    };
    if let Err(e) = released {
        // the mail stays leased in the spool and is processed again after a restart
        tracing::error!(mail = id, "cannot release the mail in the spool: {e}");
    }
    if size >= LARGE_MAIL {
        return_memory();
    }
}

/// A mail from which size on the memory it took is given back to the OS once it is done.
const LARGE_MAIL: usize = 1 << 20;

/// glibc keeps freed memory in its arenas (one per thread that allocated it): after a large
/// mail the process would stay at its peak RSS. `malloc_trim` hands the free pages back;
/// it walks the heap, so it is called after large mails only.
fn return_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Stores a mail whose last `unfinished` processing starts never ended in the error
/// repository, unprocessed, and releases it.
async fn set_aside(
    container: &Container,
    spool: &dyn Spool,
    settings: &SpoolerSettings,
    mut mail: Mail,
    unfinished: u32,
) {
    let reason = format!(
        "processing started {unfinished} times and never finished (the process died or was killed each time); set aside unprocessed as a poison mail"
    );
    container.context().metrics.mail_processed("poison");
    mail.error_message = Some(reason.clone());
    mail.set_attribute(
        UNFINISHED_ATTEMPTS,
        AttributeValue::Long(i64::from(unfinished)),
    );
    match settings.error_repository.store(&mail) {
        Ok(key) => {
            tracing::error!(error_source = "spooler", mail = %mail.name, id = mail.id, from = %mail.sender_text(), size = mail.size(), key, "{reason}; stored in {}", settings.error_repository.url);
            if let Err(e) = spool.complete(mail.id, Vec::new()).await {
                tracing::error!(mail = mail.id, "cannot release the mail in the spool: {e}");
            }
        }
        Err(e) => {
            // Stored again, it would count from zero and run again: it stays leased,
            // unprocessed, and the next start sets it aside again.
            tracing::error!(error_source = "spooler", mail = %mail.name, "{reason}; cannot store it in the error repository ({e:#}); it stays in the spool unprocessed");
        }
    }
}

fn backoff_ms(settings: &SpoolerSettings, failures: i64) -> u64 {
    let base = settings.retry_base.as_millis() as u64;
    let exp = (failures - 1).clamp(0, 20) as u32;
    base.saturating_mul(1u64 << exp)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::MailetContainerConfig;
    use crate::mail::MailAddress;
    use crate::pipeline::MailetContext;
    use crate::spool::EmbeddedSpool;

    async fn spool_run(
        root: &str,
        dir: &Path,
    ) -> (Arc<EmbeddedSpool>, Repository, CancellationToken) {
        let xml = format!(
            "<mailetcontainer><processors><processor state=\"root\">{root}</processor><processor state=\"error\"><mailet class=\"Null\"/></processor></processors></mailetcontainer>"
        );
        let config = MailetContainerConfig::parse(&xml, Path::new("mc.xml")).unwrap();
        let ctx = MailetContext::for_tests(dir.to_path_buf());
        let container =
            Arc::new(Container::build(&config, &ctx, crate::server::loaders()).unwrap());
        let (_store, spool) = EmbeddedSpool::open_path(
            &dir.join("spool.redb"),
            crate::outbox::store::OutboxSink::shared(),
        )
        .unwrap();
        let errors = Repository::open("file://mail/error/", dir).unwrap();
        let shutdown = CancellationToken::new();
        let settings = SpoolerSettings {
            threads: 4,
            retry_base: Duration::from_millis(1),
            error_repository: errors.clone(),
            max_attempts: 3,
            shutdown_timeout: Duration::from_secs(5),
            dedup_window: Duration::from_secs(600),
        };
        tokio::spawn(run(container, spool.clone(), settings, shutdown.clone()));
        (spool, errors, shutdown)
    }

    fn mail() -> Mail {
        Mail::new(
            None,
            vec![MailAddress::parse("bob@example.org").unwrap()],
            b"Subject: s\r\n\r\nbody".to_vec(),
        )
    }

    async fn until(mut done: impl FnMut() -> bool) {
        let wait = async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("the spooler did not get there");
    }

    #[tokio::test]
    async fn processed_mail_leaves_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, errors, shutdown) = spool_run("<mailet class=\"Null\"/>", dir.path()).await;
        for _ in 0..10 {
            spool.enqueue(mail()).await.unwrap();
        }
        until(|| spool.depth() == 0).await;
        assert!(errors.list().unwrap().is_empty());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn sixth_propagated_failure_goes_to_the_error_repository() {
        let dir = tempfile::tempdir().unwrap();
        let failing = "<mailet class=\"ToRepository\"><repositoryPath>file:///dev/null/x</repositoryPath><onMailetException>propagate</onMailetException></mailet>";
        let (spool, errors, shutdown) = spool_run(failing, dir.path()).await;
        spool.enqueue(mail()).await.unwrap();
        until(|| spool.depth() == 0).await;
        let keys = errors.list().unwrap();
        assert_eq!(keys.len(), 1);
        let stored = errors.load(&keys[0]).unwrap();
        assert_eq!(
            stored.attribute(attributes::PROCESSING_ERROR_COUNT),
            Some(&AttributeValue::Long(MAX_FAILURES))
        );
        assert!(
            stored
                .error_message
                .unwrap()
                .contains("mailet ToRepository in processor root")
        );
        assert_eq!(stored.message, b"Subject: s\r\n\r\nbody");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_failure_after_a_mailet_changed_the_mail_counts_on_the_mail_as_received() {
        // the spooler keeps no copy of the mail: the failure path reads the spool's
        let dir = tempfile::tempdir().unwrap();
        let chain = "<mailet class=\"AddHeader\"><name>X-Seen</name><value>yes</value></mailet>\
                     <mailet class=\"ToRepository\"><repositoryPath>file:///dev/null/x</repositoryPath><onMailetException>propagate</onMailetException></mailet>";
        let (spool, errors, shutdown) = spool_run(chain, dir.path()).await;
        spool.enqueue(mail()).await.unwrap();
        until(|| spool.depth() == 0).await;
        let keys = errors.list().unwrap();
        assert_eq!(keys.len(), 1);
        let stored = errors.load(&keys[0]).unwrap();
        assert_eq!(stored.message, b"Subject: s\r\n\r\nbody", "without X-Seen");
        assert_eq!(
            stored.attribute(attributes::PROCESSING_ERROR_COUNT),
            Some(&AttributeValue::Long(MAX_FAILURES))
        );
        shutdown.cancel();
    }
}
