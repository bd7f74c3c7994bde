//! The durable spool: every mail that got a 250 is here until the pipeline is done with it.
//! The [`Spool`] trait is what ingest and the spooler see; [`embedded`] is the default
//! implementation (an append-only journal), and [`rabbitmq`] the broker-backed one.

pub mod embedded;
pub mod journal;
pub mod rabbitmq;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use crate::mail::job::OutboxJob;
use crate::mail::{Mail, MailId};

use crate::store::StoreError;
pub use embedded::EmbeddedSpool;

/// A spool operation failed (disk full, I/O error, corrupt record, broker down), with its
/// source kept.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The redb store (legacy tables, the jobs written with a release).
    #[error("spool: {0}")]
    Store(#[from] StoreError),
    /// The journal of the embedded spool.
    #[error("spool: {0}")]
    Journal(#[from] crate::spool::journal::JournalError),
    /// The RabbitMQ spool's broker.
    #[error("spool: {0}")]
    Broker(#[from] crate::broker::BrokerError),
    /// The broker refused an ack (its channel is gone): it delivers the mail again.
    #[error("spool: cannot ack mail {id} (the broker will deliver it again): {source}")]
    Ack {
        /// The mail.
        id: MailId,
        /// The AMQP client's error.
        #[source]
        source: lapin::Error,
    },
    /// The spool cannot do this now (a mail not leased here, a connection lost mid-way...).
    #[error("spool: {0}")]
    Unavailable(String),
}

/// A mail transaction in progress, from MAIL to its end: while some are open, the spool may
/// hold a sync back briefly so that their mails share it.
#[derive(Default)]
pub struct Incoming(Option<Arc<AtomicUsize>>);

impl Incoming {
    fn counted_in(open: &Arc<AtomicUsize>) -> Incoming {
        open.fetch_add(1, Ordering::Relaxed);
        Incoming(Some(open.clone()))
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(open) = &self.0 {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A durable queue of received mails.
#[async_trait]
pub trait Spool: Send + Sync {
    /// Stores a mail durably (fsync'd) and returns its id; only then may SMTP answer 250.
    /// Taken, not borrowed: the spool may keep it for the spooler instead of a copy.
    async fn enqueue(&self, mail: Mail) -> Result<MailId, SpoolError>;

    /// Marks a mail transaction as started; dropped when it ends (see [`Incoming`]).
    fn incoming(&self) -> Incoming {
        Incoming::default()
    }

    /// Waits for the next due mail and leases it to the caller; `None` once closed.
    async fn dequeue(&self) -> Option<Mail>;

    /// Records, before processing starts, that it starts for a leased mail; returns how many
    /// times processing of this version of the mail has started (this one included). A
    /// count above one means earlier attempts never finished: the process died or was
    /// killed while running it. `None`: this spool cannot count (the mail is processed).
    async fn begin_attempt(&self, _mail: &Mail) -> Result<Option<u32>, SpoolError> {
        Ok(None)
    }

    /// The mail is fully processed: remove it and store its outbox jobs, in one transaction.
    async fn complete(&self, id: MailId, jobs: Vec<OutboxJob>) -> Result<(), SpoolError>;

    /// Whether [`Spool::reread`] gives back a leased mail as it is stored, so the spooler
    /// need not keep a copy of each mail it processes for its failure path.
    fn rereads(&self) -> bool {
        false
    }

    /// A leased mail as it is stored (before processing changed it). On failure the mail
    /// is put back as it is stored, due again later.
    async fn reread(&self, id: MailId) -> Result<Mail, SpoolError> {
        Err(SpoolError::Unavailable(format!(
            "mail {id}: this spool cannot read a leased mail again"
        )))
    }

    /// Puts a leased mail back (with its updated attributes) for another attempt at `at_ms`.
    async fn retry_at(&self, mail: &Mail, at_ms: u64) -> Result<(), SpoolError>;

    /// Mails stored and not yet completed.
    fn depth(&self) -> usize;

    /// When the oldest stored mail was enqueued (ms since epoch), when the spool knows.
    fn oldest_received_ms(&self) -> Option<u64> {
        None
    }

    /// Wakes every waiting `dequeue` with `None`; used at shutdown.
    fn close(&self);

    /// Makes everything pending durable (releases included) once processing has stopped;
    /// nothing is stored after it.
    fn finish(&self) {}
}
