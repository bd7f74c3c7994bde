//! What `/api/status` shows besides the metrics: the last errors (mail and reason), filled
//! from the log by [`ErrorLayer`], and which clients feed us mail ([`Clients`], pushed by
//! ingest).
//!
//! An error reaches the list by being logged: a WARN or ERROR event that carries an
//! `error_source` field (`pipeline`, `spooler`, `outbox`) and a `mail` field. The pipeline,
//! the spooler and the outbox log those lines anyway; the field marks the ones the status
//! page documents (a mail routed to an error processor, a failed processing, a dead letter),
//! so that ordinary warnings (a skipped public calendar) do not push them out.

use std::collections::{HashMap, VecDeque};
use std::fmt::{self, Write};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::mail::now_ms;

/// Errors kept for `/api/status`.
pub const RECENT_ERRORS: usize = 20;
/// Client addresses tracked; past this, the least recently seen is forgotten.
const MAX_CLIENTS: usize = 4096;

/// The field that puts a WARN or ERROR event in the recent errors, naming its source.
pub const ERROR_SOURCE: &str = "error_source";

/// One error, as `/api/status` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorEntry {
    /// When it happened (ms since epoch).
    pub at_ms: u64,
    /// Where: `pipeline`, `spooler`, `outbox`.
    pub source: String,
    /// The mail's name or spool id.
    pub mail: String,
    /// What went wrong: the log message and its other fields, URL passwords redacted.
    pub reason: String,
}

/// The last [`RECENT_ERRORS`] errors.
#[derive(Debug, Default)]
pub struct ErrorRing(Mutex<VecDeque<ErrorEntry>>);

static PROCESS_ERRORS: LazyLock<Arc<ErrorRing>> = LazyLock::new(Arc::default);

impl ErrorRing {
    /// The ring the process's log subscriber fills ([`crate::logging::init`]).
    pub fn process() -> Arc<ErrorRing> {
        PROCESS_ERRORS.clone()
    }

    fn push(&self, entry: ErrorEntry) {
        let mut errors = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() == RECENT_ERRORS {
            errors.pop_front();
        }
        errors.push_back(entry);
    }

    /// The last errors, newest first.
    pub fn recent(&self) -> Vec<ErrorEntry> {
        let errors = self.0.lock().unwrap_or_else(|e| e.into_inner());
        errors.iter().rev().cloned().collect()
    }
}

/// A tracing layer that copies marked WARN and ERROR events into an [`ErrorRing`].
pub struct ErrorLayer(pub Arc<ErrorRing>);

impl<S: Subscriber> Layer<S> for ErrorLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() > Level::WARN
            || !event
                .metadata()
                .fields()
                .iter()
                .any(|f| f.name() == ERROR_SOURCE)
        {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let (Some(source), Some(mail)) = (fields.source, fields.mail) else {
            return;
        };
        let reason = crate::config::secret::redact_urls(&fields.reason).into_owned();
        self.0.push(ErrorEntry {
            at_ms: now_ms(),
            source,
            mail,
            reason,
        });
    }
}

/// The fields of one event: the source, the mail, and the message followed by the others.
#[derive(Default)]
struct Fields {
    source: Option<String>,
    mail: Option<String>,
    reason: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            ERROR_SOURCE => self.source = Some(value.to_string()),
            "mail" => self.mail = Some(value.to_string()),
            _ => self.record_debug(field, &value),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            ERROR_SOURCE => self.source = Some(format!("{value:?}")),
            "mail" => self.mail = Some(format!("{value:?}")),
            "message" => {
                let rest = std::mem::take(&mut self.reason);
                let _ = write!(self.reason, "{value:?}{rest}");
            }
            name => {
                let _ = write!(self.reason, " {name}={value:?}");
            }
        }
    }
}

/// Mails accepted per client address.
#[derive(Debug, Default)]
pub struct Clients(Mutex<HashMap<IpAddr, (u64, u64)>>);

/// Mails received from one client address.
#[derive(Clone, Debug, Serialize)]
pub struct ClientEntry {
    /// The client address.
    pub ip: IpAddr,
    /// Mails it sent that were accepted.
    pub mails: u64,
    /// When its last mail was accepted (ms since epoch).
    pub last_seen_ms: u64,
}

impl Clients {
    /// Counts a mail accepted from `ip`.
    pub fn record_mail(&self, ip: IpAddr) {
        let now = now_ms();
        let mut clients = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&ip) {
            let oldest = clients
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(ip, _)| *ip);
            if let Some(oldest) = oldest {
                clients.remove(&oldest);
            }
        }
        let entry = clients.entry(ip).or_insert((0, now));
        entry.0 += 1;
        entry.1 = now;
    }

    /// Every client seen, most recent first.
    pub fn list(&self) -> Vec<ClientEntry> {
        let mut list: Vec<ClientEntry> = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(ip, (mails, seen))| ClientEntry {
                ip: *ip,
                mails: *mails,
                last_seen_ms: *seen,
            })
            .collect();
        list.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then(a.ip.cmp(&b.ip)));
        list
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Runs `log` with a subscriber whose only layer fills a fresh ring.
    fn logged(log: impl FnOnce()) -> Vec<ErrorEntry> {
        let ring = Arc::new(ErrorRing::default());
        let subscriber = tracing_subscriber::registry().with(ErrorLayer(ring.clone()));
        tracing::subscriber::with_default(subscriber, log);
        ring.recent()
    }

    #[test]
    fn keeps_the_last_twenty_marked_errors_newest_first() {
        let errors = logged(|| {
            for i in 0..25 {
                tracing::warn!(error_source = "spooler", mail = %format!("m{i}"), failures = 1, "processing failed: boom");
            }
        });
        assert_eq!(errors.len(), RECENT_ERRORS);
        assert_eq!(errors[0].mail, "m24");
        assert_eq!(errors[19].mail, "m5");
        assert_eq!(errors[0].source, "spooler");
        assert_eq!(errors[0].reason, "processing failed: boom failures=1");
        assert!(errors.windows(2).all(|w| w[0].at_ms >= w[1].at_ms));
    }

    #[test]
    fn only_marked_warnings_and_errors_count() {
        let errors = logged(|| {
            tracing::warn!(mail = "m1", "CalDavCollect: invitation skipped");
            tracing::info!(error_source = "outbox", mail = "m2", "not an error");
            tracing::error!(error_source = "pipeline", "no mail named");
            tracing::error!(
                error_source = "outbox",
                mail = "m3",
                kind = "esn-itip",
                "dead letter"
            );
        });
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].mail, "m3");
        assert_eq!(errors[0].reason, "dead letter kind=\"esn-itip\"");
    }

    #[test]
    fn url_passwords_never_reach_the_list() {
        let errors = logged(|| {
            tracing::warn!(
                error_source = "outbox",
                mail = "m1",
                reason = "GET https://admin:s3cret@dav.example/ failed",
                "outbox: permanent failure"
            );
        });
        assert!(!errors[0].reason.contains("s3cret"), "{errors:?}");
        assert!(errors[0].reason.contains("dav.example"), "{errors:?}");
    }

    #[test]
    fn counts_mails_per_client() {
        let clients = Clients::default();
        let ip: IpAddr = "192.0.2.77".parse().unwrap();
        clients.record_mail(ip);
        clients.record_mail(ip);
        let list = clients.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].mails, 2);
        assert!(list[0].last_seen_ms > 0);
    }
}
