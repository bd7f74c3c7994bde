//! One unit of DAV work, the outcome of an attempt, and the key that makes the same job
//! from a mail mirrored twice one job (see `outbox::dedup` for the store side).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Mail, hex, now_ms};

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
    /// More targets this job stands for: the same job (kind, payload, shared text) for each
    /// of them as for `target`. An invitation to a thousand recipients is one such job until
    /// the outbox has stored it, so that neither the mail's processing nor the transaction
    /// that releases the mail holds a thousand jobs; see [`OutboxJob::take_targets`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fan_out: Vec<String>,
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
            fan_out: Vec::new(),
        }
    }

    /// Takes `other`'s target as one more target of this job when `other` is this job for
    /// someone else (same kind, payload, shared text and mail, nothing stored or attempted
    /// yet); `false` otherwise. Callers offer each new job to the last one they made.
    pub fn absorb(&mut self, other: &OutboxJob) -> bool {
        let same_text = match (&self.shared, &other.shared) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        let fresh = |j: &OutboxJob| j.id == 0 && j.attempts == 0 && j.dedup.is_none();
        if same_text
            && fresh(self)
            && fresh(other)
            && other.fan_out.is_empty()
            && self.shared_ref.is_none()
            && other.shared_ref.is_none()
            && self.kind == other.kind
            && self.mail_name == other.mail_name
            && self.payload == other.payload
        {
            self.fan_out.push(other.target.clone());
            true
        } else {
            false
        }
    }

    /// How many targets this job stands for (1 unless it fans out).
    pub fn target_count(&self) -> usize {
        1 + self.fan_out.len()
    }

    /// Every target, `target` first.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.target.as_str()).chain(self.fan_out.iter().map(String::as_str))
    }

    /// Splits off the jobs of this job's first `n` targets (each a plain job with its own
    /// deduplication key); the job of the other targets comes back, `None` when none is left.
    pub fn take_targets(mut self, n: usize) -> (Vec<OutboxJob>, Option<OutboxJob>) {
        let mut targets = std::mem::take(&mut self.fan_out);
        targets.insert(0, std::mem::take(&mut self.target));
        let mut rest = targets.split_off(n.clamp(1, targets.len())).into_iter();
        let taken = targets.into_iter().map(|t| self.for_target(t)).collect();
        let left = rest.next().map(|target| OutboxJob {
            target,
            fan_out: rest.collect(),
            ..self
        });
        (taken, left)
    }

    /// One plain job per target, `target` first.
    pub fn into_each(mut self) -> impl Iterator<Item = OutboxJob> {
        let mut targets = std::mem::take(&mut self.fan_out);
        targets.insert(0, std::mem::take(&mut self.target));
        targets.into_iter().map(move |t| self.for_target(t))
    }

    /// This job for `target` alone, with the key its deduplication needs as a plain job.
    fn for_target(&self, target: String) -> OutboxJob {
        let mut job = OutboxJob {
            target,
            fan_out: Vec::new(),
            dedup: None,
            ..self.clone()
        };
        if let Some(dedup) = &self.dedup {
            job.dedup = Some(match dedup.mail_key() {
                Some(mail_key) => DedupKey {
                    key: job_key(&mail_key, &job),
                    until_ms: dedup.until_ms,
                    of_mail: false,
                },
                None => dedup.clone(),
            });
        }
        job
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
    /// Hex SHA-256 of (mail key, job kind, target, payload); for a job that fans out
    /// (`of_mail`), the hex mail key its targets' keys are made from.
    pub key: String,
    /// Until when (ms since epoch) a later identical job is a duplicate.
    pub until_ms: u64,
    /// `key` is the mail key, not the job's own (set on jobs with several targets).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub of_mail: bool,
}

impl DedupKey {
    /// The mail key of an `of_mail` key.
    fn mail_key(&self) -> Option<[u8; 32]> {
        if !self.of_mail || self.key.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(self.key.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(out)
    }
}

/// The deduplication key of one plain job of the mail whose key is `mail_key`.
fn job_key(mail_key: &[u8; 32], job: &OutboxJob) -> String {
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
    hex(&hash.finalize())
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
        // a job with several targets carries the mail key; each target's key is made when
        // the job is split (`take_targets`), from the same recipe as a plain job's
        let (key, of_mail) = if job.fan_out.is_empty() {
            (job_key(&mail_key, job), false)
        } else {
            (hex(&mail_key), true)
        };
        job.dedup = Some(DedupKey {
            key,
            until_ms,
            of_mail,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(target: &str, ics: &Arc<str>) -> OutboxJob {
        let mut job = OutboxJob::new("esn-itip", target, serde_json::json!({"document": "d"}));
        job.mail_name = "m1".into();
        job.shared = Some(ics.clone());
        job
    }

    #[test]
    fn the_same_job_for_another_target_is_absorbed_and_any_other_is_not() {
        let ics: Arc<str> = Arc::from("BEGIN:VCALENDAR");
        let mut first = job("a@x", &ics);
        assert!(first.absorb(&job("b@x", &ics)));
        let mut other_payload = job("c@x", &ics);
        other_payload.payload = serde_json::json!({"document": "e"});
        assert!(!first.absorb(&other_payload));
        // equal text, but not the same shared copy: not known to be the same calendar
        assert!(!first.absorb(&job("d@x", &Arc::from("BEGIN:VCALENDAR"))));
        let mut other_mail = job("e@x", &ics);
        other_mail.mail_name = "m2".into();
        assert!(!first.absorb(&other_mail));
        assert_eq!(first.targets().collect::<Vec<_>>(), ["a@x", "b@x"]);
        assert_eq!(first.target_count(), 2);
    }

    #[test]
    fn splitting_a_job_gives_each_target_the_key_of_its_own_plain_job() {
        let ics: Arc<str> = Arc::from("BEGIN:VCALENDAR");
        let targets: Vec<String> = (0..5).map(|i| format!("r{i}@x")).collect();
        let mut plain: Vec<OutboxJob> = targets.iter().map(|t| job(t, &ics)).collect();
        let mut fan = vec![job(&targets[0], &ics)];
        for t in &targets[1..] {
            assert!(fan[0].absorb(&job(t, &ics)));
        }
        let mail_key = Some([7u8; 32]);
        stamp(mail_key, &mut plain, 60_000);
        stamp(mail_key, &mut fan, 60_000);
        assert!(fan[0].dedup.as_ref().unwrap().of_mail);

        let (first, left) = fan.pop().unwrap().take_targets(2);
        let left = left.expect("three targets left");
        assert_eq!(left.targets().collect::<Vec<_>>(), ["r2@x", "r3@x", "r4@x"]);
        let (rest, none) = left.take_targets(64);
        assert!(none.is_none());
        let split: Vec<OutboxJob> = first.into_iter().chain(rest).collect();
        assert_eq!(split.len(), 5);
        for (one, plain) in split.iter().zip(&plain) {
            assert_eq!(one.target, plain.target);
            assert!(one.fan_out.is_empty());
            assert!(Arc::ptr_eq(one.shared.as_ref().unwrap(), &ics));
            let (one, plain) = (one.dedup.as_ref().unwrap(), plain.dedup.as_ref().unwrap());
            // (the two stamps may fall a millisecond apart)
            assert_eq!(one.key, plain.key, "a copy sent plainly is its duplicate");
            assert!(!one.of_mail && one.until_ms.abs_diff(plain.until_ms) < 1000);
        }
    }

    #[test]
    fn each_target_of_a_job_becomes_one_plain_job() {
        let ics: Arc<str> = Arc::from("x");
        let mut fan = job("a@x", &ics);
        assert!(fan.absorb(&job("b@x", &ics)));
        let each: Vec<String> = fan.into_each().map(|j| j.target).collect();
        assert_eq!(each, ["a@x", "b@x"]);
        let single: Vec<OutboxJob> = job("c@x", &ics).into_each().collect();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].dedup, None);
    }
}
