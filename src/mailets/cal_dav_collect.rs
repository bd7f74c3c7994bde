//! `CalDavCollect` (tmail `com.linagora.tmail.mailet.CalDavCollect`): decides, for each iTIP
//! JSON made by `ICALToJsonAttribute`, whether esn-sabre should receive it, and queues it in
//! the durable outbox (job kind `esn-itip`) instead of sending it inline and dropping it on
//! failure as tmail does.
//!
//! ```xml
//! <mailet match="All" class="com.linagora.tmail.mailet.CalDavCollect">
//!     <source>icalendarAsJson2</source>            <!-- default icalendarJson -->
//!     <alignmentMode>strict</alignmentMode>        <!-- strict | sameDomain | none -->
//!     <skipNonLocalRecipients>false</skipNonLocalRecipients>  <!-- mailetd extension -->
//!     <allowPublic>false</allowPublic>             <!-- mailetd: pass PUBLISH / no METHOD on -->
//! </mailet>
//! ```
//!
//! Per JSON, as tmail: skip without `ical` or `recipient`; skip unparsable ICS; unless
//! `alignmentMode` is `none`, the JSON `sender` must be an ATTENDEE (the attendee messages
//! of RFC 5546: REPLY, COUNTER, REFRESH) or the ORGANIZER (any other method) of some VEVENT
//! or VTODO, comparing whole addresses (`strict`) or domains (`sameDomain`); an address is
//! the `mailto:` value or, for Apple's principal URLs, the `EMAIL=` parameter (RFC 7986).
//! An attendee message whose recipient is itself an ATTENDEE is the attendee's own copy
//! and is skipped. The user lookup and the `ITIP` request are the outbox handler's
//! ([`crate::dav::esn_itip`]). With `skipNonLocalRecipients=true`, recipients outside the
//! local domains are skipped before any call.
//!
//! Beyond tmail, a calendar that is not an iTIP message (METHOD:PUBLISH, or no METHOD: an
//! event announcement, a `.ics` to import) is not passed on unless `<allowPublic>true`
//! (both dialects), and the esn dialect passes on events only (a VTODO is for the caldav
//! dialect); both are counted in `mailetd_itip_skipped_total{reason}`.
//!
//! With `[dav] dialect = "caldav"` in `mailetd.toml`, the same decision queues
//! `caldav-itip` jobs instead (one per recipient per iTIP message) and mailetd applies the
//! message to the recipient's calendar itself ([`crate::dav::caldav`]). Only recipients
//! in the local domains are considered. Parameters after RFC 9671 (`processcalendar`):
//!
//! ```xml
//! <mailet match="All" class="CalDavCollect">
//!     <source>icalendarAsJson2</source>
//!     <alignmentMode>strict</alignmentMode>
//!     <updatesOnly>false</updatesOnly>          <!-- only events the recipient already has -->
//!     <deleteCanceled>false</deleteCanceled>    <!-- CANCEL deletes instead of STATUS:CANCELLED -->
//!     <organizers>partner.example, boss@corp.example</organizers> <!-- who may create events -->
//!     <calendarId>work</calendarId>             <!-- the calendar new events go to -->
//!     <tasksCalendarId>tasks</tasksCalendarId>  <!-- the one new tasks go to (default: calendarId's) -->
//!     <allowPublic>false</allowPublic>          <!-- apply METHOD:PUBLISH too -->
//! </mailet>
//! ```
//!
//! The dialect is chosen once, at construction: an [`ItipTarget`] (esn-sabre's `ITIP` or
//! the standard CalDAV apply) turns each accepted document into its outbox job.
//!
//! The outcome (`no_action`, `added`, `updated`, `error`) is known only when the outbox
//! delivers the job, after the mail has left the pipeline: it is logged and counted there
//! (`mailetd_caldav_itip_outcomes_total`), not set as a mail attribute.

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::config::settings::DavDialect;
use crate::dav::DavServices;
use crate::dav::caldav::apply::Options;
use crate::dav::caldav::target::CalDavItipTarget;
use crate::dav::esn_itip::EsnItipTarget;
use crate::dav::itip_target::{ItipMessage, ItipTarget, ItipText};
use crate::mail::job::OutboxJob;
use crate::mail::{AttributeValue, Mail};
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

mod decision;

pub use decision::{Accepted, AlignmentMode, Policy, Skip, decide, decide_on};

/// Queues one outbox job per accepted iTIP JSON and recipient, for the dialect's target.
pub struct CalDavCollect {
    source: String,
    policy: Policy,
    skip_non_local: bool,
    /// esn-sabre or the standard CalDAV server, after `[dav] dialect`.
    target: Box<dyn ItipTarget>,
}

/// The caldav dialect's parameters (RFC 9671 tagged arguments).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CalDavParams {
    /// How the handler applies the message.
    pub options: Options,
    /// The calendar new events go to.
    pub calendar_id: Option<String>,
    /// The calendar new tasks (VTODO) go to; `calendar_id`'s when not set.
    pub tasks_calendar_id: Option<String>,
}

/// Parameters that exist only for the caldav dialect.
const CALDAV_PARAMETERS: &[&str] = &[
    "updatesOnly",
    "deleteCanceled",
    "organizers",
    "calendarId",
    "tasksCalendarId",
];

impl CalDavParams {
    /// Reads and validates the caldav parameters.
    pub fn from_config(config: &MailetConfig) -> Result<CalDavParams, ConfigError> {
        let organizers = match config.parameter("organizers") {
            None => Vec::new(),
            Some(p) => super::address_list::addresses_or_domains(
                p,
                "leave it out to let any organizer create events",
            )?,
        };
        let collection = |name: &str| -> Result<Option<String>, ConfigError> {
            let Some(p) = config.parameter(name) else {
                return Ok(None);
            };
            let id = p.value.trim();
            if id.is_empty() || id.contains('/') || id == "." || id == ".." {
                return Err(p.position.error(format!(
                    "{name} {:?} is not a calendar collection name",
                    p.value
                )));
            }
            Ok(Some(id.to_string()))
        };
        let calendar_id = collection("calendarId")?;
        let tasks_calendar_id = collection("tasksCalendarId")?;
        Ok(CalDavParams {
            options: Options {
                updates_only: config.get_bool("updatesOnly", false)?,
                delete_canceled: config.get_bool("deleteCanceled", false)?,
                organizers,
                allow_public: config.get_bool("allowPublic", false)?,
            },
            calendar_id,
            tasks_calendar_id,
        })
    }
}

impl From<CalDavParams> for CalDavItipTarget {
    fn from(params: CalDavParams) -> Self {
        CalDavItipTarget {
            options: params.options,
            calendar_id: params.calendar_id,
            tasks_calendar_id: params.tasks_calendar_id,
        }
    }
}

impl CalDavCollect {
    /// Reads `source`, `alignmentMode`, `skipNonLocalRecipients`; needs the OpenPaaS and DAV
    /// settings of `openpaas.properties` unless running dry.
    pub fn build(
        config: &MailetConfig,
        ctx: &MailetContext,
    ) -> Result<Box<dyn Mailet>, ConfigError> {
        let source = config.get_or("source", "icalendarJson").trim().to_string();
        if source.is_empty() {
            return Err(config.error("parameter <source> of CalDavCollect is empty"));
        }
        let alignment = AlignmentMode::from_config(config)?;
        let skip_non_local = config.get_bool("skipNonLocalRecipients", false)?;
        let allow_public = config.get_bool("allowPublic", false)?;
        let target: Box<dyn ItipTarget> = match ctx.settings.dav.dialect {
            DavDialect::Caldav => {
                // `mailetd check` builds the mailets, not the outbox handlers: [dav] is
                // validated here too so that check reports a bad base_url or template.
                crate::dav::caldav::locate::Locator::new(&ctx.settings.dav)?;
                Box::new(CalDavItipTarget::from(CalDavParams::from_config(config)?))
            }
            DavDialect::Esn => Box::new(Self::esn_target(config, ctx)?),
        };
        Ok(Box::new(CalDavCollect {
            source,
            policy: Policy {
                alignment,
                allow_public,
                allow_tasks: target.takes_tasks(),
            },
            skip_non_local: skip_non_local || target.local_recipients_only(),
            target,
        }))
    }

    /// The esn dialect's target: `updatesOnly` only, and the OpenPaaS and DAV settings of
    /// `openpaas.properties` unless running dry.
    fn esn_target(
        config: &MailetConfig,
        ctx: &MailetContext,
    ) -> Result<EsnItipTarget, ConfigError> {
        let updates_only = config.get_bool("updatesOnly", false)?;
        if let Some(name) = CALDAV_PARAMETERS
            .iter()
            .filter(|n| **n != "updatesOnly")
            .find(|n| config.parameter(n).is_some())
        {
            return Err(config.error(format!(
                "parameter <{name}> of CalDavCollect applies to [dav] dialect = \"caldav\" only (mailetd.toml)"
            )));
        }
        let target = EsnItipTarget::new(
            DavServices::shared(&ctx.properties, &ctx.dav)?,
            updates_only,
        );
        if target.dav_uri().is_none() && !ctx.dry_run {
            return Err(config.error(
                "CalDavCollect needs openpaas.properties with openpaas.api.uri, dav.api.uri and their admin credentials",
            ));
        }
        Ok(target)
    }

    /// tmail's `RestrictiveCalDavCollect`: `CalDavCollect` that only updates events already
    /// in the recipient's calendar (`updatesOnly` defaults to true); replies go through.
    pub fn build_restrictive(
        config: &MailetConfig,
        ctx: &MailetContext,
    ) -> Result<Box<dyn Mailet>, ConfigError> {
        let mut config = config.clone();
        if config.parameter("updatesOnly").is_none() {
            config.parameters.push(crate::pipeline::api::Parameter {
                name: "updatesOnly".into(),
                value: "true".into(),
                position: config.position.clone(),
            });
        }
        Self::build(&config, ctx)
    }

    /// tmail's decision for one JSON document.
    pub fn decide(&self, json: &serde_json::Value) -> Result<Accepted, Skip> {
        decide(self.policy, json)
    }
}

#[async_trait]
impl Mailet for CalDavCollect {
    async fn service(&self, mail: &mut Mail, ctx: &MailetContext) -> Result<(), MailetError> {
        let Some(value) = mail.attribute(&self.source) else {
            return Ok(());
        };
        let mut jobs = Vec::new();
        if let AttributeValue::CalendarJson(jsons) = value {
            for d in jsons.documents() {
                let decision = match d.parsed {
                    Some(calendar) => decide_on(
                        self.policy,
                        calendar.facts(),
                        &d.document.recipient,
                        Some(&d.document.sender),
                    ),
                    None => Err(Skip::BadIcs),
                };
                let recipient = d.document.recipient.clone();
                self.queue(
                    mail,
                    ctx,
                    &recipient,
                    decision,
                    ItipText::Shared(&d),
                    &mut jobs,
                );
            }
            mail.jobs.extend(jobs);
            return Ok(());
        }
        let Some(entries) = value.document_texts() else {
            tracing::error!(
                mail = mail.name,
                attribute = self.source,
                "CalDavCollect: the attribute is not a map of JSON documents"
            );
            return Ok(());
        };
        for (key, text) in entries {
            let json: serde_json::Value = match serde_json::from_str(&text) {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(mail = mail.name, key, error = %e, "CalDavCollect: not JSON; skipped");
                    continue;
                }
            };
            let recipient = json.get("recipient").and_then(|v| v.as_str()).unwrap_or("");
            let decision = self.decide(&json);
            self.queue(
                mail,
                ctx,
                recipient,
                decision,
                ItipText::Json(&text),
                &mut jobs,
            );
        }
        mail.jobs.extend(jobs);
        Ok(())
    }
}

impl CalDavCollect {
    /// Turns one decided document into an outbox job (or a dry-run printout).
    fn queue(
        &self,
        mail: &Mail,
        ctx: &MailetContext,
        recipient: &str,
        decision: Result<Accepted, Skip>,
        text: ItipText<'_>,
        jobs: &mut Vec<OutboxJob>,
    ) {
        let accepted = match decision {
            Ok(a) => a,
            Err(skip) => {
                match skip {
                    Skip::BadIcs | Skip::BadRecipient(_) | Skip::NoSender => {
                        tracing::warn!(mail = mail.name, recipient, reason = ?skip, "CalDavCollect: invitation skipped")
                    }
                    Skip::NotItip | Skip::NoEvent => {
                        let reason = if skip == Skip::NotItip {
                            "not_itip"
                        } else {
                            "no_event"
                        };
                        ctx.metrics.itip_skipped(reason);
                        tracing::info!(
                            mail = mail.name,
                            recipient,
                            reason,
                            "CalDavCollect: not passed on (not_itip: PUBLISH or no METHOD without allowPublic; no_event: a task, esn-sabre takes events)"
                        )
                    }
                    _ => {
                        tracing::debug!(mail = mail.name, recipient, reason = ?skip, "CalDavCollect: invitation not for this recipient's calendar")
                    }
                }
                return;
            }
        };
        if self.skip_non_local && !ctx.is_local_domain(&accepted.recipient.domain) {
            tracing::debug!(mail = mail.name, recipient = %accepted.recipient, "CalDavCollect: recipient outside the local domains; skipped");
            return;
        }
        let recipient = accepted.recipient.to_string();
        if self.target.known_absent(&recipient) {
            tracing::debug!(
                mail = mail.name,
                recipient,
                "CalDavCollect: not a user of the DAV server (cached); skipped"
            );
            return;
        }
        let message = ItipMessage {
            recipient: &recipient,
            is_task: accepted.is_task,
            text,
        };
        if ctx.dry_run {
            println!("{}", self.target.describe(&message));
            return;
        }
        let mut job = self.target.job(&message);
        job.mail_name = mail.name.clone();
        // the recipients of one calendar whose jobs differ only by recipient: one job
        if !jobs.last_mut().is_some_and(|last| last.absorb(&job)) {
            jobs.push(job);
        }
    }
}

#[cfg(test)]
mod tests;
