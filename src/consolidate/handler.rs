//! Outbox handler for `consolidated-itip` jobs: applies one iTIP message to the one
//! calendar of a `[destinations.<name>]`, whoever the invitation was addressed to.
//!
//! A CalDAV destination is the caldav dialect's own scheduling agent
//! ([`CalDavItipHandler::run`]) pointed at a fixed collection: the same RFC 5546 rules
//! (SEQUENCE then DTSTAMP decide which copy is newer, REQUEST creates or updates, CANCEL
//! marks the event `STATUS:CANCELLED` or deletes it with `deleteCanceled`, REPLY updates
//! the attendee's PARTSTAT), the same UID lookup and ETag writes. Because the event is found
//! by UID, the same meeting mirrored by two sites is one event: the second copy is "not
//! newer" and changes nothing. A Microsoft 365 destination goes through Graph
//! ([`super::graph`]).

use std::collections::HashMap;
use std::sync::Arc;

use calcard::icalendar::ICalendar;
use serde::{Deserialize, Serialize};

use super::stats;
use crate::config::ConfigError;
use crate::config::consolidate::{DestinationKind, DestinationSettings};
use crate::config::settings::{DavDialect, DavSettings, Settings};
use crate::dav::caldav::apply::{Method, Options};
use crate::dav::caldav::handler::{CalDavItipHandler, ItipJob, Outcome};
use crate::dav::transport::DavError;
use crate::outbox::{Delivery, JobHandler, OutboxJob};

/// The job kind.
pub const KIND: &str = "consolidated-itip";

/// What a `consolidated-itip` job carries. Never a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsolidatedJob {
    /// The `[destinations.<name>]` to apply it to.
    pub destination: String,
    /// The source of the mail it came in, if attributed.
    #[serde(default)]
    pub source: Option<String>,
    /// The iTIP message, already marked with the source (`X-MAILETD-SOURCE`).
    pub ical: String,
    /// How to apply it (the mailet's `updatesOnly`, `deleteCanceled`, …).
    #[serde(default)]
    pub options: Options,
}

impl ConsolidatedJob {
    /// The outbox job (its target is the destination's name).
    pub fn into_job(self) -> OutboxJob {
        let target = self.destination.clone();
        OutboxJob::new(
            KIND,
            target,
            serde_json::to_value(self).expect("serializable"),
        )
    }
}

/// What a destination did with one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The event was created.
    Added,
    /// The event was updated, cancelled or deleted.
    Updated,
    /// Nothing to change (an older or duplicate copy…), for this reason.
    Unchanged(String),
}

/// One consolidated calendar.
#[async_trait::async_trait]
pub trait Destination: Send + Sync {
    /// Applies `message` (its text `ical`, its first UID `uid`) to the calendar.
    async fn apply(
        &self,
        message: &ICalendar,
        ical: &str,
        uid: &str,
        options: &Options,
    ) -> Result<Applied, DavError>;
}

/// A CalDAV collection, written by the caldav dialect's scheduling agent.
pub struct CalDavDestination {
    agent: CalDavItipHandler,
    /// The collection's last path segment: the "owner" the agent's URL template expands.
    owner: String,
    url: String,
}

impl CalDavDestination {
    /// Validates the URL and credentials of a `kind = "caldav"` destination.
    pub fn new(name: &str, settings: &DestinationSettings) -> Result<Self, ConfigError> {
        let url = settings.calendar_url.trim();
        let bad = |why: &str| {
            ConfigError::new(format!(
                "mailetd.toml [destinations.{name}] calendar_url {url:?}: {why}"
            ))
        };
        if reqwest::Url::parse(url).is_err() {
            return Err(bad("not a URL (e.g. http://127.0.0.1:5232/team/calendar/)"));
        }
        let trimmed = url.trim_end_matches('/');
        let (base, owner) = trimmed
            .rsplit_once('/')
            .filter(|(base, owner)| {
                !owner.is_empty() && base.contains("://") && !base.ends_with('/')
            })
            .ok_or_else(|| bad("names no collection"))?;
        if owner.contains('%') {
            return Err(bad("a percent-encoded last segment is not supported"));
        }
        let dav = DavSettings {
            dialect: DavDialect::Caldav,
            base_url: base.to_string(),
            calendar_url: "{base}/{local}/".into(),
            username: settings.username.clone(),
            password: settings.password.clone(),
            trust_all_certs: settings.trust_all_certs,
            timeout_secs: settings.timeout_secs,
            // the same meeting comes from several sources: the UID lookup must see the
            // first copy, and SOGo ignores the If-None-Match of an optimistic create
            lookup_before_create: true,
            ..DavSettings::default()
        };
        Ok(CalDavDestination {
            agent: CalDavItipHandler::new(&dav)?,
            owner: owner.to_string(),
            url: format!("{trimmed}/"),
        })
    }
}

#[async_trait::async_trait]
impl Destination for CalDavDestination {
    async fn apply(
        &self,
        message: &ICalendar,
        ical: &str,
        uid: &str,
        options: &Options,
    ) -> Result<Applied, DavError> {
        let job = ItipJob {
            recipient: self.owner.clone(),
            ical: ical.to_string(),
            options: options.clone(),
            calendar_id: None,
        };
        match self.agent.run(&job, message, uid).await? {
            Outcome::NotAUser(_) => Err(DavError::Permanent(format!(
                "the consolidated calendar {} does not exist (404)",
                self.url
            ))),
            Outcome::NoAction(reason) => Ok(Applied::Unchanged(reason)),
            Outcome::Added => Ok(Applied::Added),
            Outcome::Updated => Ok(Applied::Updated),
        }
    }
}

/// Builds the destination of one `[destinations.<name>]` table.
pub fn destination(
    name: &str,
    settings: &DestinationSettings,
) -> Result<Arc<dyn Destination>, ConfigError> {
    Ok(match settings.kind {
        DestinationKind::Caldav => Arc::new(CalDavDestination::new(name, settings)?),
        DestinationKind::Graph => Arc::new(super::graph::GraphDestination::new(name, settings)?),
    })
}

/// Delivers `consolidated-itip` jobs to their destination.
pub struct ConsolidatedHandler {
    destinations: HashMap<String, Arc<dyn Destination>>,
}

impl ConsolidatedHandler {
    /// One handler for every `[destinations.<name>]`; `None` when there are none.
    pub fn new(settings: &Settings) -> Result<Option<Self>, ConfigError> {
        if settings.destinations.is_empty() {
            return Ok(None);
        }
        let destinations = settings
            .destinations
            .iter()
            .map(|(name, d)| Ok((name.clone(), destination(name, d)?)))
            .collect::<Result<_, ConfigError>>()?;
        Ok(Some(ConsolidatedHandler { destinations }))
    }
}

/// The handlers for `[destinations]` (none when the table is empty).
pub fn handlers(settings: &Settings) -> Result<Vec<Arc<dyn JobHandler>>, ConfigError> {
    Ok(ConsolidatedHandler::new(settings)?
        .map(|h| Arc::new(h) as Arc<dyn JobHandler>)
        .into_iter()
        .collect())
}

fn fail(source: Option<&str>, reason: String) -> Delivery {
    if let Some(source) = source {
        stats::record_failed(source);
    }
    Delivery::Permanent(reason)
}

#[async_trait::async_trait]
impl JobHandler for ConsolidatedHandler {
    fn kinds(&self) -> &[&'static str] {
        &[KIND]
    }

    async fn deliver(&self, job: &OutboxJob) -> Delivery {
        let consolidated = match ConsolidatedJob::deserialize(&job.payload) {
            Ok(j) => j,
            Err(e) => return fail(None, format!("malformed {KIND} job: {e}")),
        };
        let source = consolidated.source.as_deref();
        let Some(destination) = self.destinations.get(&consolidated.destination) else {
            return fail(
                source,
                format!(
                    "no [destinations.{}] in mailetd.toml (any more)",
                    consolidated.destination
                ),
            );
        };
        let message = match crate::ical::parse(&consolidated.ical) {
            Ok(m) => m,
            Err(e) => return fail(source, format!("unparsable iTIP message: {e}")),
        };
        let method = Method::of(&message).map_or("none", Method::as_str);
        let Some(uid) = message.uids().next().map(str::to_string) else {
            return fail(source, "the iTIP message has no UID".into());
        };
        let result = destination
            .apply(&message, &consolidated.ical, &uid, &consolidated.options)
            .await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) if e.is_transient() => return Delivery::Retry(e.to_string()),
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(
                    job = job.id,
                    mail = job.mail_name,
                    destination = consolidated.destination,
                    source,
                    uid,
                    method,
                    outcome = "error",
                    reason,
                    "consolidated-itip failed"
                );
                return fail(source, reason);
            }
        };
        if let Some(source) = source {
            stats::record_applied(source);
        }
        let (name, reason) = match &outcome {
            Applied::Added => ("added", None),
            Applied::Updated => ("updated", None),
            Applied::Unchanged(reason) => ("no_action", Some(reason.as_str())),
        };
        tracing::info!(
            job = job.id,
            mail = job.mail_name,
            destination = consolidated.destination,
            source,
            uid,
            method,
            outcome = name,
            reason,
            "consolidated-itip applied"
        );
        Delivery::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caldav_destinations_need_a_collection_url() {
        let err = |url: &str| {
            CalDavDestination::new(
                "all",
                &DestinationSettings {
                    calendar_url: url.into(),
                    ..DestinationSettings::default()
                },
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        assert!(err("").contains("not a URL"));
        assert!(err("http://h/").contains("names no collection"));
        assert!(err("http://h/a%20b/").contains("percent-encoded"));
        let ok = CalDavDestination::new(
            "all",
            &DestinationSettings {
                calendar_url: "http://127.0.0.1:5232/team/calendar".into(),
                ..DestinationSettings::default()
            },
        )
        .unwrap();
        assert_eq!(ok.owner, "calendar");
        assert_eq!(ok.url, "http://127.0.0.1:5232/team/calendar/");
    }
}
