//! One unit of DAV work and the outcome of an attempt.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A durable DAV job. Mailets create it with [`OutboxJob::new`]; the store fills in the rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxJob {
    /// Store identifier (0 until stored).
    #[serde(default)]
    pub id: u64,
    /// Which handler delivers it (`esn-itip`, `esn-contact`, `caldav-itip`, `carddav-contact`).
    pub kind: String,
    /// Who or what it is for, for listings (`bob@example.org`); never a secret.
    pub target: String,
    /// Handler-specific data (URL parts, body, …); never a secret.
    pub payload: serde_json::Value,
    /// Name of the mail that produced it.
    #[serde(default)]
    pub mail_name: String,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the first attempt was scheduled (ms since epoch).
    #[serde(default)]
    pub first_seen_ms: u64,
    /// When the next attempt is due (ms since epoch).
    #[serde(default)]
    pub next_attempt_ms: u64,
    /// The last failure, for listings and dead letters.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Mirrored-twice deduplication key, checked and dropped when the job is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<super::dedup::DedupKey>,
    /// A large text other jobs of the same mail share (an invitation's ICS, sent to each of
    /// its recipients): kept once in memory, and once in the embedded outbox (see
    /// [`OutboxJob::shared_ref`]); the handler reads it from here, not from `payload`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "shared_text")]
    pub shared: Option<Arc<str>>,
    /// In the embedded outbox: the key of [`OutboxJob::shared`] in its table of shared
    /// texts (the job's own row does not repeat the text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_ref: Option<String>,
}

mod shared_text {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(text: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
        match text {
            Some(text) => s.serialize_some(&**text),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(Arc::from))
    }
}

impl OutboxJob {
    /// A new job of `kind` for `target`.
    pub fn new(kind: &str, target: impl Into<String>, payload: serde_json::Value) -> Self {
        OutboxJob {
            id: 0,
            kind: kind.to_string(),
            target: target.into(),
            payload,
            mail_name: String::new(),
            attempts: 0,
            first_seen_ms: 0,
            next_attempt_ms: 0,
            last_error: None,
            dedup: None,
            shared: None,
            shared_ref: None,
        }
    }
}

/// The outcome of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Done; remove the job.
    Done,
    /// Transient failure (connect error, timeout, 5xx, 429): retry later.
    Retry(String),
    /// Permanent failure (400, 403, unknown user…): dead-letter with this reason.
    Permanent(String),
}

/// Delivers the jobs of one or more kinds (esn ITIP, CardDAV contact, …).
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync {
    /// The job kinds this handler delivers.
    fn kinds(&self) -> &[&'static str];
    /// One attempt at delivering `job`.
    async fn deliver(&self, job: &OutboxJob) -> Delivery;
}
