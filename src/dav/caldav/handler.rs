//! Outbox handler for `caldav-itip` jobs: applies one iTIP message to one recipient's
//! calendar on a standard CalDAV server. An invitation that looks new (it would create the
//! event and carries SEQUENCE 0) is first written at once with `If-None-Match: *`: one
//! request, since the server refuses it when the event exists under that name (412) or, per
//! RFC 4791 `no-uid-conflict`, under any other (Radicale 409, Xandikos 412). Otherwise, or
//! when refused, it finds the recipient's copy under the name mailetd gives events it
//! creates (one GET), else by UID with a calendar-query (their client may have stored it
//! under any name), applies the message ([`super::apply`]) and writes the result with
//! `If-Match` / `If-None-Match: *`. A 412 (someone wrote in between) re-reads and
//! re-applies, at most [`MAX_CONFLICTS`] times per attempt. `[dav] lookup_before_create`
//! skips the first write for servers that do not check UIDs (SabreDAV 1.8).
//!
//! The outcome (`no_action`, `added`, `updated`, `error`) is known only here, after the
//! mail has left the pipeline (the outbox is asynchronous by design: the mail is done once
//! its jobs are durable). So it is logged with the job id and mail name, and counted
//! ([`CalDavItipHandler::counts`], `mailetd_caldav_itip_outcomes_total` for the process), instead of being a
//! mail attribute as RFC 9671 suggests for a synchronous Sieve action.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use calcard::icalendar::ICalendar;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::apply::{Change, Method, Options, apply};
use super::client::{CalDavClient, Condition, DavError, Fetched, Query};
use super::locate::{Locator, resource_name};
use crate::config::ConfigError;
use crate::config::settings::DavSettings;
use crate::mail::job::{Delivery, JobHandler, OutboxJob};

/// The job kind.
pub const KIND: &str = "caldav-itip";

/// Read-apply-write rounds per attempt before giving up until the next retry.
pub const MAX_CONFLICTS: usize = 5;

/// What a `caldav-itip` job carries. Never a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItipJob {
    /// The recipient's address (local part lowercased).
    pub recipient: String,
    /// The iTIP message, as `ICALToJsonAttribute` gave it; empty when it is the job's
    /// shared text (`OutboxJob::shared`, one copy for all the recipients of a mail).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ical: String,
    /// The mailet's options.
    #[serde(default)]
    pub options: Options,
    /// RFC 9671 `:calendarid`: the calendar new events go to.
    #[serde(default)]
    pub calendar_id: Option<String>,
}

impl ItipJob {
    /// The outbox job.
    pub fn into_job(self) -> OutboxJob {
        let target = self.recipient.clone();
        OutboxJob::new(
            KIND,
            target,
            serde_json::to_value(self).expect("serializable"),
        )
    }
}

/// Per-outcome counters.
#[derive(Debug, Default)]
pub struct Counts {
    /// Applied: nothing to change (older, duplicate, not a user, COUNTER…).
    pub no_action: AtomicU64,
    /// An event was created.
    pub added: AtomicU64,
    /// An event was updated or deleted.
    pub updated: AtomicU64,
    /// Permanent failure (dead letter).
    pub error: AtomicU64,
    /// Writes that met a 412 and were re-applied.
    pub conflicts: AtomicU64,
}

impl Counts {
    /// `(outcome, count)` pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("no_action", self.no_action.load(Ordering::Relaxed)),
            ("added", self.added.load(Ordering::Relaxed)),
            ("updated", self.updated.load(Ordering::Relaxed)),
            ("error", self.error.load(Ordering::Relaxed)),
            ("conflicts", self.conflicts.load(Ordering::Relaxed)),
        ]
    }
}

impl Counts {
    /// The outcome name of one of these counters.
    fn name_of(&self, counter: &AtomicU64) -> &'static str {
        [
            (&self.no_action, "no_action"),
            (&self.added, "added"),
            (&self.updated, "updated"),
            (&self.error, "error"),
            (&self.conflicts, "conflicts"),
        ]
        .into_iter()
        .find(|(c, _)| std::ptr::eq(*c, counter))
        .map_or("error", |(_, name)| name)
    }
}

/// A test seam run between reading the copy and writing it (to provoke a 412).
pub type BeforeWrite = Arc<dyn Fn() + Send + Sync>;

/// Delivers `caldav-itip` jobs.
pub struct CalDavItipHandler {
    client: CalDavClient,
    locator: Locator,
    counts: Counts,
    before_write: Option<BeforeWrite>,
    lookup_before_create: bool,
}

/// What applying one message did.
#[derive(Debug)]
pub enum Outcome {
    /// The recipient has no calendar here (404 on the collection): not an outcome to report.
    NotAUser(String),
    /// Nothing to change, for this reason.
    NoAction(String),
    /// An event was created.
    Added,
    /// An event was updated or deleted.
    Updated,
}

impl CalDavItipHandler {
    /// Validates `[dav]` (base URL, calendar template, credentials) once.
    pub fn new(settings: &DavSettings) -> Result<Self, ConfigError> {
        Ok(CalDavItipHandler {
            client: CalDavClient::new(settings)?,
            locator: Locator::new(settings)?,
            counts: Counts::default(),
            before_write: None,
            lookup_before_create: settings.lookup_before_create,
        })
    }

    /// Runs `hook` (blocking code allowed) after each read and before each write.
    pub fn with_before_write(mut self, hook: BeforeWrite) -> Self {
        self.before_write = Some(hook);
        self
    }

    /// This handler's outcome counts.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        self.counts.snapshot()
    }

    /// HTTP requests sent so far.
    pub fn requests_sent(&self) -> u64 {
        self.client.requests_sent()
    }

    fn count(&self, pick: fn(&Counts) -> &AtomicU64) {
        let counter = pick(&self.counts);
        counter.fetch_add(1, Ordering::Relaxed);
        crate::observe::Metrics::process().caldav_itip_outcome(self.counts.name_of(counter));
    }

    /// The recipient's copy: under the name mailetd gives events it creates, else by UID
    /// anywhere in the calendar (the user's client may have stored it under any name).
    /// `None` when the calendar itself does not exist.
    ///
    /// The cheap GET comes first because a calendar-query is linear in the calendar's size
    /// on some servers (Radicale parses every object: ~3 ms each, measured).
    async fn find(
        &self,
        owner: &str,
        calendar: &str,
        component: &str,
        uid: &str,
    ) -> Result<Option<Option<(Fetched, ICalendar)>>, DavError> {
        let own = format!("{calendar}{}", resource_name(uid));
        if let Some(fetched) = self.client.get(owner, &own).await?
            && let Ok(parsed) = crate::ical::parse(&fetched.data)
            && parsed.uids().any(|u| u == uid)
        {
            return Ok(Some(Some((fetched, parsed))));
        }
        let objects = match self
            .client
            .query_uid(owner, calendar, component, uid)
            .await?
        {
            Query::NoCalendar => return Ok(None),
            Query::Objects(objects) => objects,
        };
        let mut copies = objects.into_iter().filter_map(|o| {
            let parsed = crate::ical::parse(&o.data).ok()?;
            let matches = parsed.uids().any(|u| u == uid);
            matches.then_some((o, parsed))
        });
        let copy = copies.next();
        if copy.is_some() && copies.next().is_some() {
            tracing::warn!(
                owner,
                uid,
                "several calendar objects carry this UID; the first is updated"
            );
        }
        Ok(Some(copy))
    }

    async fn run_before_write_hook(&self) {
        if let Some(hook) = &self.before_write {
            let hook = hook.clone();
            let _ = tokio::task::spawn_blocking(move || hook()).await;
        }
    }

    /// Creates the event without looking for a copy first, when the message looks like a
    /// first invitation. `Ok(true)` when created; `Ok(false)` when it was not tried or the
    /// server refused it (a copy exists, the calendar is missing, any other refusal): the
    /// lookup then decides, and reports what a refusal meant.
    async fn create_at_once(
        &self,
        job: &ItipJob,
        message: &ICalendar,
        target: &str,
        uid: &str,
    ) -> Result<bool, DavError> {
        if self.lookup_before_create || !first_version(message) {
            return Ok(false);
        }
        let Change::Create(cal) = apply(None, message, &job.recipient, &job.options) else {
            return Ok(false);
        };
        self.run_before_write_hook().await;
        let url = format!("{target}{}", resource_name(uid));
        match self
            .client
            .put(&job.recipient, &url, cal.to_string(), Condition::Absent)
            .await
        {
            Ok(status) if status.is_success() => Ok(true),
            Ok(_) => Ok(false),
            Err(e) if !e.is_transient() => Ok(false),
            Err(transient) => Err(transient),
        }
    }

    /// Applies `message` (whose UID is `uid`) to `job.recipient`'s calendar: the whole
    /// read-apply-write round, without the counting and logging of [`JobHandler::deliver`]
    /// (the consolidated destination reuses it with its own).
    pub async fn run(
        &self,
        job: &ItipJob,
        message: &ICalendar,
        uid: &str,
    ) -> Result<Outcome, DavError> {
        let owner = job.recipient.as_str();
        // a task's copy is a VTODO: the calendar-query must filter on that component
        let component = match crate::ical::first_event(message) {
            None if crate::ical::first_scheduled(message).is_some() => "VTODO",
            _ => "VEVENT",
        };
        let Some((calendar, target)) = self
            .locator
            .resolve(&self.client, owner, job.calendar_id.as_deref())
            .await?
        else {
            self.locator.mark_absent(owner);
            return Ok(Outcome::NotAUser("(none discovered)".into()));
        };
        if self.create_at_once(job, message, &target, uid).await? {
            return Ok(Outcome::Added);
        }
        for _ in 0..MAX_CONFLICTS {
            let mut copy = match self.find(owner, &calendar, component, uid).await? {
                None => {
                    self.locator.mark_absent(owner);
                    return Ok(Outcome::NotAUser(calendar));
                }
                Some(copy) => copy,
            };
            if copy.is_none() && target != calendar {
                copy = match self.find(owner, &target, component, uid).await? {
                    None => {
                        return Err(DavError::Permanent(format!(
                            "calendarId collection {target} does not exist"
                        )));
                    }
                    Some(copy) => copy,
                };
            }
            let change = apply(copy.as_ref().map(|(_, c)| c), message, owner, &job.options);
            if !matches!(change, Change::Nothing(_)) {
                self.run_before_write_hook().await;
            }
            let status = match (&change, &copy) {
                (Change::Nothing(reason), _) => return Ok(Outcome::NoAction(reason.clone())),
                (Change::Create(cal), _) | (Change::Update(cal), None) => {
                    let url = format!("{target}{}", resource_name(uid));
                    self.client
                        .put(owner, &url, cal.to_string(), Condition::Absent)
                        .await?
                }
                (Change::Update(cal), Some((fetched, _))) => {
                    self.client
                        .put(owner, &fetched.url, cal.to_string(), condition(fetched))
                        .await?
                }
                (Change::Delete, None) => {
                    return Ok(Outcome::NoAction("nothing to delete".into()));
                }
                (Change::Delete, Some((fetched, _))) => {
                    self.client
                        .delete(owner, &fetched.url, condition(fetched))
                        .await?
                }
            };
            if status == StatusCode::PRECONDITION_FAILED {
                self.count(|c| &c.conflicts);
                tracing::debug!(
                    owner,
                    uid,
                    "412: the copy changed since it was read; re-applying"
                );
                continue;
            }
            return Ok(match change {
                Change::Create(_) => Outcome::Added,
                _ => Outcome::Updated,
            });
        }
        Err(DavError::Transient(format!(
            "the copy kept changing between read and write ({MAX_CONFLICTS} times)"
        )))
    }
}

/// Whether every component of `message` is at SEQUENCE 0: an organizer's first version,
/// most likely new to the recipient. Later versions usually update a copy, which the
/// lookup finds in one request where a refused creation would cost one more.
fn first_version(message: &ICalendar) -> bool {
    message
        .components
        .iter()
        .all(|c| crate::ical::sequence(c).unwrap_or(0) == 0)
}

fn condition(fetched: &Fetched) -> Condition<'_> {
    match &fetched.etag {
        Some(etag) => Condition::Matches(etag),
        None => Condition::Any,
    }
}

#[async_trait::async_trait]
impl JobHandler for CalDavItipHandler {
    fn kinds(&self) -> &[&'static str] {
        &[KIND]
    }

    async fn deliver(&self, job: &OutboxJob) -> Delivery {
        let mut itip = match ItipJob::deserialize(&job.payload) {
            Ok(j) => j,
            Err(e) => {
                self.count(|c| &c.error);
                return Delivery::Permanent(format!("malformed caldav-itip job: {e}"));
            }
        };
        if let Some(shared) = &job.shared
            && itip.ical.is_empty()
        {
            itip.ical = shared.to_string();
        }
        let owner = itip.recipient.as_str();
        let message = match crate::ical::parse(&itip.ical) {
            Ok(m) => m,
            Err(e) => {
                self.count(|c| &c.error);
                return Delivery::Permanent(format!("unparsable iTIP message: {e}"));
            }
        };
        let method = Method::of(&message).map_or("none", Method::as_str);
        let Some(uid) = message.uids().next().map(str::to_string) else {
            self.count(|c| &c.error);
            return Delivery::Permanent("the iTIP message has no UID".into());
        };
        if !self.client.has_credentials(owner) || self.locator.known_absent(owner) {
            self.count(|c| &c.no_action);
            tracing::debug!(
                owner,
                uid,
                "caldav-itip: not a user of the CalDAV server (cached or no credentials); skipped"
            );
            return Delivery::Done;
        }
        match self.run(&itip, &message, &uid).await {
            Ok(Outcome::NotAUser(calendar)) => {
                self.count(|c| &c.no_action);
                tracing::debug!(
                    job = job.id,
                    owner,
                    calendar,
                    "caldav-itip: no calendar there (404), not a user of this server; remembered"
                );
                Delivery::Done
            }
            Ok(Outcome::NoAction(reason)) => {
                self.count(|c| &c.no_action);
                tracing::info!(
                    job = job.id,
                    mail = job.mail_name,
                    owner,
                    uid,
                    method,
                    outcome = "no_action",
                    reason,
                    "caldav-itip applied"
                );
                Delivery::Done
            }
            Ok(outcome) => {
                let name = match outcome {
                    Outcome::Added => {
                        self.count(|c| &c.added);
                        "added"
                    }
                    _ => {
                        self.count(|c| &c.updated);
                        "updated"
                    }
                };
                tracing::info!(
                    job = job.id,
                    mail = job.mail_name,
                    owner,
                    uid,
                    method,
                    outcome = name,
                    "caldav-itip applied"
                );
                Delivery::Done
            }
            Err(e) if e.is_transient() => Delivery::Retry(e.to_string()),
            Err(e) => {
                let reason = e.to_string();
                self.count(|c| &c.error);
                tracing::warn!(
                    job = job.id,
                    mail = job.mail_name,
                    owner,
                    uid,
                    method,
                    outcome = "error",
                    reason,
                    "caldav-itip failed"
                );
                Delivery::Permanent(reason)
            }
        }
    }
}
