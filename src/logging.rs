//! Log setup: `RUST_LOG`-style filter in `MAILETD_LOG` (default `info`), to stderr; and the
//! recent errors of `/api/status`, filled from the log by [`ErrorLayer`] whatever the filter.
//!
//! An error reaches that list by being logged: a WARN or ERROR event that carries an
//! `error_source` field (`pipeline`, `spooler`, `outbox`) and a `mail` field. The pipeline,
//! the spooler and the outbox log those lines anyway; the field marks the ones the status
//! page documents (a mail routed to an error processor, a failed processing, a dead letter),
//! so that ordinary warnings (a skipped public calendar) do not push them out.

use std::collections::VecDeque;
use std::fmt::{self, Write};
use std::sync::{Arc, LazyLock, Mutex};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::mail::now_ms;
use crate::sync::Locked;

/// Errors kept for `/api/status`.
pub const RECENT_ERRORS: usize = 20;

/// Installs the global subscriber once.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILETD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer()
        // Whatever a line quotes, a URL's user:password never reaches the log.
        .with_writer(|| crate::config::secret::RedactingWriter(std::io::stderr()))
        // Colour codes only on a terminal: log files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(log)
        // a filter of its own, so that DEBUG lines stay disabled at their call sites
        .with(
            ErrorLayer(ErrorRing::process())
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
        )
        .try_init();
}

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
    /// The ring the process's log subscriber fills ([`init`]).
    pub fn process() -> Arc<ErrorRing> {
        PROCESS_ERRORS.clone()
    }

    fn push(&self, entry: ErrorEntry) {
        let mut errors = self.0.locked();
        if errors.len() == RECENT_ERRORS {
            errors.pop_front();
        }
        errors.push_back(entry);
    }

    /// The last errors, newest first.
    pub fn recent(&self) -> Vec<ErrorEntry> {
        let errors = self.0.locked();
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

#[cfg(test)]
mod tests {
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
}
