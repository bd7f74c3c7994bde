//! One unit of DAV work, the outcome of an attempt, and the key that makes the same job
//! from a mail mirrored twice one job (see `outbox::dedup` for the store side).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Mail, now_ms};

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
    pub dedup: Option<DedupKey>,
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

/// What a job carries to be deduplicated; set by the spooler, consumed at insert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupKey {
    /// Hex SHA-256 of (mail key, job kind, target, payload).
    pub key: String,
    /// Until when (ms since epoch) a later identical job is a duplicate.
    pub until_ms: u64,
}

/// The key of "the same mail", or `None` when it has no Message-ID.
pub fn mail_key(mail: &Mail) -> Option<[u8; 32]> {
    // the raw field, not a full header parse: this runs for every mail with DAV jobs
    let raw = super::headers::raw_value(mail.header_block(), "Message-ID")?;
    let message_id = raw.trim_start_matches('<').trim_end_matches('>').trim();
    if message_id.is_empty() {
        return None;
    }
    let sender = mail
        .sender
        .as_ref()
        .map(|s| s.to_string().to_lowercase())
        .unwrap_or_default();
    let body = &mail.message[mail.header_end()..];
    let mut hash = Sha256::new();
    for part in [
        message_id.as_bytes(),
        sender.as_bytes(),
        &Sha256::digest(body)[..],
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    Some(hash.finalize().into())
}

/// Marks `jobs` of the mail whose [`mail_key`] is `mail_key` for deduplication over
/// `window_ms` (0: no deduplication).
pub fn stamp(mail_key: Option<[u8; 32]>, jobs: &mut [OutboxJob], window_ms: u64) {
    if window_ms == 0 || jobs.is_empty() {
        return;
    }
    let Some(mail_key) = mail_key else {
        return;
    };
    let until_ms = now_ms().saturating_add(window_ms);
    for job in jobs {
        let payload = serde_json::to_vec(&job.payload).expect("payloads serialise");
        let mut hash = Sha256::new();
        for part in [
            &mail_key[..],
            job.kind.as_bytes(),
            job.target.as_bytes(),
            &payload,
        ] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        let key = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        job.dedup = Some(DedupKey { key, until_ms });
    }
}
