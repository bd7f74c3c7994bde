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
//! The outcome (`no_action`, `added`, `updated`, `error`) is known only when the outbox
//! delivers the job, after the mail has left the pipeline: it is logged and counted there
//! ([`crate::dav::caldav::handler::outcome_counts`]), not set as a mail attribute.

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::config::settings::DavDialect;
use crate::dav::DavServices;
use crate::dav::caldav::apply::Options;
use crate::dav::caldav::handler::ItipJob;
use crate::dav::esn_itip;
use crate::ical::{self, CalendarFacts};
use crate::ical_json::DocumentRef;
use crate::mail::{AttributeValue, Mail, MailAddress};
use crate::outbox::OutboxJob;
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// How the JSON `sender` must relate to the calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlignmentMode {
    /// Same address (local part case-insensitive).
    Strict,
    /// Same domain.
    SameDomain,
    /// No check.
    None,
}

impl AlignmentMode {
    /// Parses the parameter, case-insensitively.
    pub fn parse(text: &str) -> Option<AlignmentMode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "strict" => Some(AlignmentMode::Strict),
            "samedomain" => Some(AlignmentMode::SameDomain),
            "none" => Some(AlignmentMode::None),
            _ => None,
        }
    }

    fn matches(self, a: &MailAddress, b: &MailAddress) -> bool {
        match self {
            AlignmentMode::Strict => a.same_as(b),
            AlignmentMode::SameDomain => a.domain == b.domain,
            AlignmentMode::None => true,
        }
    }
}

/// Queues one `esn-itip` outbox job per accepted iTIP JSON.
pub struct CalDavCollect {
    source: String,
    policy: Policy,
    skip_non_local: bool,
    /// `dav.api.uri`, for dry-run printouts.
    dav_uri: Option<String>,
    /// For the user cache: a recipient the OpenPaaS API just said it does not know gets
    /// no job (one lookup per unknown partner per TTL, not one dead letter per mail).
    services: Option<Arc<DavServices>>,
    /// The caldav dialect's settings; `None` for esn.
    caldav: Option<CalDavParams>,
    /// esn: `updatesOnly` (RestrictiveCalDavCollect): the outbox looks the event up first.
    esn_updates_only: bool,
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
        let mut organizers = Vec::new();
        if let Some(p) = config.parameter("organizers") {
            for item in p.value.split([',', ' ', '\n', '\t']).map(str::trim) {
                if item.is_empty() {
                    continue;
                }
                let item = item.trim_start_matches("mailto:").to_ascii_lowercase();
                let valid = match item.split_once('@') {
                    Some((local, domain)) => {
                        !local.is_empty()
                            && MailAddress::parse(&item).is_ok()
                            && domain.contains('.')
                    }
                    None => item.contains('.') && !item.contains(['/', ':', '<', '>']),
                };
                if !valid {
                    return Err(p.position.error(format!(
                        "organizers: {item:?} is neither an address nor a domain"
                    )));
                }
                organizers.push(item);
            }
            if organizers.is_empty() {
                return Err(p.position.error(
                    "organizers is empty: leave it out to let any organizer create events",
                ));
            }
        }
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

/// Why a JSON is not sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Skip {
    /// No `ical` or no `recipient`.
    Incomplete,
    /// `recipient` is not an address.
    BadRecipient(String),
    /// `ical` does not parse.
    BadIcs,
    /// No or invalid `sender` while alignment is on.
    NoSender,
    /// The sender is not the organizer (or, for a REPLY, an attendee).
    NotAligned,
    /// An attendee message (REPLY, COUNTER, REFRESH) to one of its own attendees.
    OwnReply,
    /// METHOD:PUBLISH or no METHOD, without `allowPublic`.
    NotItip,
    /// No VEVENT (a task): esn-sabre takes events only.
    NoEvent,
}

/// What decides, beyond the JSON itself, whether it is passed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How the sender must relate to the calendar.
    pub alignment: AlignmentMode,
    /// Pass on METHOD:PUBLISH and calendars without METHOD.
    pub allow_public: bool,
    /// Pass on calendars without VEVENT (tasks): the caldav dialect does.
    pub allow_tasks: bool,
}

/// RFC 5546 methods an attendee sends (the others are the organizer's).
fn is_attendee_method(method: &str) -> bool {
    ["REPLY", "COUNTER", "REFRESH"]
        .iter()
        .any(|m| method.eq_ignore_ascii_case(m))
}

/// What to send for one JSON: the recipient (lowercased as James `Username`) and the text.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Recipient email, local part lowercased.
    pub recipient: MailAddress,
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
        let alignment = match config.parameter("alignmentMode") {
            None => AlignmentMode::Strict,
            Some(p) => AlignmentMode::parse(&p.value).ok_or_else(|| {
                p.position.error(format!(
                    "alignmentMode is {:?}: expected strict, sameDomain or none",
                    p.value
                ))
            })?,
        };
        let skip_non_local = config.get_bool("skipNonLocalRecipients", false)?;
        let allow_public = config.get_bool("allowPublic", false)?;
        if ctx.settings.dav.dialect == DavDialect::Caldav {
            // `mailetd check` builds the mailets, not the outbox handlers: [dav] is
            // validated here too so that check reports a bad base_url or template.
            crate::dav::caldav::locate::Locator::new(&ctx.settings.dav)?;
            return Ok(Box::new(CalDavCollect {
                source,
                policy: Policy {
                    alignment,
                    allow_public,
                    allow_tasks: true,
                },
                skip_non_local: true,
                dav_uri: None,
                services: None,
                caldav: Some(CalDavParams::from_config(config)?),
                esn_updates_only: false,
            }));
        }
        let esn_updates_only = config.get_bool("updatesOnly", false)?;
        if let Some(name) = CALDAV_PARAMETERS
            .iter()
            .filter(|n| **n != "updatesOnly")
            .find(|n| config.parameter(n).is_some())
        {
            return Err(config.error(format!(
                "parameter <{name}> of CalDavCollect applies to [dav] dialect = \"caldav\" only (mailetd.toml)"
            )));
        }
        let services = DavServices::get(ctx)?;
        let dav_uri = services
            .as_ref()
            .and_then(|s| s.openpaas.dav.as_ref())
            .map(|d| d.api_uri.as_str().trim_end_matches('/').to_string());
        if dav_uri.is_none() && !ctx.dry_run {
            return Err(config.error(
                "CalDavCollect needs openpaas.properties with openpaas.api.uri, dav.api.uri and their admin credentials",
            ));
        }
        Ok(Box::new(CalDavCollect {
            source,
            policy: Policy {
                alignment,
                allow_public,
                allow_tasks: false,
            },
            skip_non_local,
            dav_uri,
            services,
            caldav: None,
            esn_updates_only,
        }))
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

/// tmail's decision for one JSON document (steps 1–4 of the spec), and mailetd's
/// iTIP-only and events-only checks.
pub fn decide(policy: Policy, json: &serde_json::Value) -> Result<Accepted, Skip> {
    let text = |k: &str| {
        json.get(k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    let (Some(ics), Some(recipient)) = (text("ical"), text("recipient")) else {
        return Err(Skip::Incomplete);
    };
    let calendar = ical::facts(ics).map_err(|_| Skip::BadIcs)?;
    decide_on(policy, &calendar, recipient, text("sender"))
}

/// The same decision for a document whose `ical` is already parsed.
pub fn decide_on(
    policy: Policy,
    calendar: &CalendarFacts,
    recipient: &str,
    sender: Option<&str>,
) -> Result<Accepted, Skip> {
    let alignment = policy.alignment;
    let recipient = MailAddress::parse(recipient).map_err(Skip::BadRecipient)?;
    let method = calendar.method.as_deref().map(str::trim);
    if !policy.allow_public && method.is_none_or(|m| m.eq_ignore_ascii_case("PUBLISH")) {
        return Err(Skip::NotItip);
    }
    if !policy.allow_tasks && !calendar.has_event {
        return Err(Skip::NoEvent);
    }
    let is_reply = method.is_some_and(is_attendee_method);
    if alignment != AlignmentMode::None {
        let sender = sender
            .and_then(|s| MailAddress::parse(s).ok())
            .filter(|a| !a.domain.is_empty())
            .ok_or(Skip::NoSender)?;
        let candidates = if is_reply {
            &calendar.attendees
        } else {
            &calendar.organizers
        };
        if !candidates.iter().any(|c| alignment.matches(&sender, c)) {
            return Err(Skip::NotAligned);
        }
    }
    if is_reply && calendar.attendees.iter().any(|a| a.same_as(&recipient)) {
        return Err(Skip::OwnReply);
    }
    Ok(Accepted {
        recipient: recipient.lowercased(),
    })
}

/// One iTIP JSON document as `CalDavCollect` reads it: the text some other mailet wrote,
/// or one of `ICALToJsonAttribute`'s, whose calendar is parsed and shared.
enum Document<'a> {
    Text(String),
    Shared(DocumentRef<'a>),
}

impl Document<'_> {
    fn text(&self) -> String {
        match self {
            Document::Text(text) => text.clone(),
            Document::Shared(d) => String::from_utf8_lossy(&d.render()).into_owned(),
        }
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
                    Document::Shared(d),
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
                Document::Text(text.clone()),
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
        document: Document<'_>,
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
                        crate::observe::metrics().itip_skipped.with(&[reason]).inc();
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
        if let Some(params) = &self.caldav {
            if ctx.dry_run {
                let ical = match &document {
                    Document::Shared(d) => d.ical.to_string(),
                    Document::Text(text) => serde_json::from_str::<serde_json::Value>(text)
                        .ok()
                        .and_then(|j| j.get("ical")?.as_str().map(str::to_string))
                        .unwrap_or_default(),
                };
                println!("caldav-itip for {recipient}: apply to their calendar\n\n{ical}\n");
                return;
            }
            let (ical, shared) = match &document {
                // one copy of the calendar for all the recipients' jobs
                Document::Shared(d) => (String::new(), Some(d.ical.clone())),
                Document::Text(text) => (
                    serde_json::from_str::<serde_json::Value>(text)
                        .ok()
                        .and_then(|j| j.get("ical")?.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    None,
                ),
            };
            let is_task = match &document {
                Document::Shared(d) => d.parsed.is_some_and(|c| !c.facts().has_event),
                Document::Text(_) => ical::facts(&ical).is_ok_and(|f| !f.has_event),
            };
            let calendar_id = match &params.tasks_calendar_id {
                Some(tasks) if is_task => Some(tasks.clone()),
                _ => params.calendar_id.clone(),
            };
            let mut job = ItipJob {
                recipient,
                ical,
                options: params.options.clone(),
                calendar_id,
            }
            .into_job();
            job.shared = shared;
            job.mail_name = mail.name.clone();
            jobs.push(job);
            return;
        }
        if let Some(services) = &self.services
            && services.users.cached(&recipient) == Some(None)
        {
            tracing::debug!(
                mail = mail.name,
                recipient,
                "CalDavCollect: not an OpenPaaS user (cached); skipped"
            );
            return;
        }
        if ctx.dry_run {
            println!(
                "ITIP {}/calendars/{{OpenPaaS _id of {recipient}}}\nContent-Type: application/json\nAuthorization: Basic base64(<dav.admin.user>&{recipient}:***)\n\n{}\n",
                self.dav_uri.as_deref().unwrap_or("{dav.api.uri}"),
                document.text()
            );
            return;
        }
        let mut job = match &document {
            Document::Shared(d) => {
                let mut job = OutboxJob::new(
                    esn_itip::KIND,
                    recipient.clone(),
                    esn_itip::shared_payload(&recipient, &d.document),
                );
                job.shared = Some(d.ical.clone());
                job
            }
            Document::Text(text) => OutboxJob::new(
                esn_itip::KIND,
                recipient.clone(),
                esn_itip::payload(&recipient, text),
            ),
        };
        if self.esn_updates_only {
            job.payload["updatesOnly"] = true.into();
        }
        job.mail_name = mail.name.clone();
        jobs.push(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ics(method: &str, organizer: &str, attendees: &[&str]) -> String {
        let mut s = format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nMETHOD:{method}\r\nBEGIN:VEVENT\r\nUID:u1\r\nDTSTAMP:20260101T100000Z\r\nDTSTART:20260102T100000Z\r\nORGANIZER;CN=Org:mailto:{organizer}\r\n"
        );
        for a in attendees {
            s.push_str(&format!("ATTENDEE;PARTSTAT=NEEDS-ACTION:MAILTO:{a}\r\n"));
        }
        s.push_str("END:VEVENT\r\nEND:VCALENDAR\r\n");
        s
    }

    fn policy(alignment: AlignmentMode) -> Policy {
        Policy {
            alignment,
            allow_public: false,
            allow_tasks: false,
        }
    }

    fn doc(ical: &str, sender: &str, recipient: &str) -> serde_json::Value {
        json!({"ical": ical, "sender": sender, "recipient": recipient, "replyTo": sender,
               "uid": "u1", "sequence": "0", "dtstamp": "20260101T100000Z", "method": "REQUEST", "recurrence-id": null})
    }

    #[test]
    fn alignment_matrix() {
        use AlignmentMode::*;
        let request = ics(
            "REQUEST",
            "Alice@Org.example",
            &["bob@corp.example", "carol@corp.example"],
        );
        let reply = ics("REPLY", "alice@org.example", &["bob@corp.example"]);
        let cases = [
            // (mode, ics, sender, expected ok)
            (Strict, &request, "alice@org.example", true),
            (Strict, &request, "ALICE@org.example", true),
            (Strict, &request, "mallory@org.example", false),
            (SameDomain, &request, "mallory@org.example", true),
            (SameDomain, &request, "alice@evil.example", false),
            (None, &request, "alice@evil.example", true),
            (Strict, &reply, "bob@corp.example", true),
            (Strict, &reply, "alice@org.example", false),
            (SameDomain, &reply, "dave@corp.example", true),
            (None, &reply, "nobody@nowhere.example", true),
        ];
        for (mode, ical, sender, ok) in cases {
            let got = decide(policy(mode), &doc(ical, sender, "zoe@org.example"));
            assert_eq!(got.is_ok(), ok, "{mode:?} {sender}: {got:?}");
            if !ok {
                assert_eq!(got, Err(Skip::NotAligned));
            }
        }
    }

    #[test]
    fn reply_to_an_attendee_is_their_own_copy() {
        let reply = ics("REPLY", "alice@org.example", &["bob@corp.example"]);
        assert_eq!(
            decide(
                policy(AlignmentMode::Strict),
                &doc(&reply, "bob@corp.example", "Bob@corp.example")
            ),
            Err(Skip::OwnReply)
        );
        // the organizer receives the reply
        assert_eq!(
            decide(
                policy(AlignmentMode::Strict),
                &doc(&reply, "bob@corp.example", "alice@org.example")
            )
            .unwrap()
            .recipient
            .to_string(),
            "alice@org.example"
        );
        // a REQUEST to an attendee goes through
        let request = ics("REQUEST", "alice@org.example", &["bob@corp.example"]);
        assert!(
            decide(
                policy(AlignmentMode::Strict),
                &doc(&request, "alice@org.example", "bob@corp.example")
            )
            .is_ok()
        );
    }

    #[test]
    fn attendee_messages_announcements_and_tasks() {
        let strict = policy(AlignmentMode::Strict);
        for method in ["COUNTER", "REFRESH", "Reply"] {
            let message = ics(method, "alice@org.example", &["bob@corp.example"]);
            // from the attendee to the organizer; the attendee's own copy is not theirs
            assert!(
                decide(
                    strict,
                    &doc(&message, "bob@corp.example", "alice@org.example")
                )
                .is_ok()
            );
            assert_eq!(
                decide(
                    strict,
                    &doc(&message, "alice@org.example", "zoe@org.example")
                ),
                Err(Skip::NotAligned)
            );
            assert_eq!(
                decide(
                    strict,
                    &doc(&message, "bob@corp.example", "bob@corp.example")
                ),
                Err(Skip::OwnReply)
            );
        }
        let publish = ics("PUBLISH", "alice@org.example", &[]);
        let no_method = publish.replace("METHOD:PUBLISH\r\n", "");
        let public = Policy {
            allow_public: true,
            ..strict
        };
        for announcement in [&publish, &no_method] {
            let json = doc(announcement, "alice@org.example", "zoe@org.example");
            assert_eq!(decide(strict, &json), Err(Skip::NotItip));
            assert!(decide(public, &json).is_ok());
        }
        let task =
            ics("REQUEST", "alice@org.example", &["zoe@org.example"]).replace("VEVENT", "VTODO");
        let json = doc(&task, "alice@org.example", "zoe@org.example");
        assert_eq!(decide(strict, &json), Err(Skip::NoEvent));
        let tasks = Policy {
            allow_tasks: true,
            ..strict
        };
        assert!(decide(tasks, &json).is_ok());
    }

    #[test]
    fn incomplete_or_broken_documents_are_skipped() {
        let request = ics("REQUEST", "alice@org.example", &[]);
        assert_eq!(
            decide(policy(AlignmentMode::Strict), &json!({"ical": request})),
            Err(Skip::Incomplete)
        );
        assert_eq!(
            decide(
                policy(AlignmentMode::Strict),
                &json!({"ical": "", "recipient": "a@b.c"})
            ),
            Err(Skip::Incomplete)
        );
        assert_eq!(
            decide(
                policy(AlignmentMode::Strict),
                &doc("this is not a calendar", "alice@org.example", "b@c.d")
            ),
            Err(Skip::BadIcs)
        );
        let mut no_sender = doc(&request, "x", "b@c.d");
        no_sender["sender"] = serde_json::Value::Null;
        assert_eq!(
            decide(policy(AlignmentMode::Strict), &no_sender),
            Err(Skip::NoSender)
        );
        assert!(decide(policy(AlignmentMode::None), &no_sender).is_ok());
    }

    #[test]
    fn recipient_is_lowercased_like_a_james_username() {
        let request = ics("REQUEST", "alice@org.example", &[]);
        let a = decide(
            policy(AlignmentMode::Strict),
            &doc(&request, "alice@org.example", "Bob.Smith@Corp.Example"),
        )
        .unwrap();
        assert_eq!(a.recipient.to_string(), "bob.smith@corp.example");
    }

    #[test]
    fn alignment_mode_is_case_insensitive_and_validated() {
        assert_eq!(
            AlignmentMode::parse("SAMEDOMAIN"),
            Some(AlignmentMode::SameDomain)
        );
        assert_eq!(AlignmentMode::parse("Strict"), Some(AlignmentMode::Strict));
        assert_eq!(AlignmentMode::parse("loose"), None);
        let mut ctx = MailetContext::for_tests(std::env::temp_dir());
        ctx.dry_run = true;
        let err = CalDavCollect::build(
            &MailetConfig::inline("CalDavCollect", &[("alignmentMode", "loose")]),
            &ctx,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("alignmentMode is \"loose\""),
            "{err}"
        );
        ctx.dry_run = false;
        let err = CalDavCollect::build(&MailetConfig::inline("CalDavCollect", &[]), &ctx)
            .err()
            .unwrap();
        assert!(err.to_string().contains("openpaas.properties"), "{err}");
    }

    #[tokio::test]
    async fn accepted_documents_become_outbox_jobs_with_the_json_unchanged() {
        let mut ctx = MailetContext::for_tests(std::env::temp_dir());
        ctx.properties = crate::config::Properties::parse(
            "openpaas.api.uri=http://127.0.0.1:1/api\nopenpaas.admin.user=a\nopenpaas.admin.password=b\ndav.api.uri=http://127.0.0.1:1\ndav.admin.user=admin\ndav.admin.password=p\n",
            std::path::Path::new("openpaas.properties"),
        )
        .unwrap();
        let mailet = CalDavCollect::build(
            &MailetConfig::inline(
                "CalDavCollect",
                &[
                    ("source", "icalendarAsJson2"),
                    ("skipNonLocalRecipients", "true"),
                ],
            ),
            &ctx,
        )
        .unwrap();
        let request = ics("REQUEST", "alice@org.example", &["bob@example.org"]);
        let local =
            serde_json::to_string(&doc(&request, "alice@org.example", "Bob@example.org")).unwrap();
        let external =
            serde_json::to_string(&doc(&request, "alice@org.example", "x@elsewhere.example"))
                .unwrap();
        let mut map = std::collections::BTreeMap::new();
        map.insert(
            "k1".to_string(),
            AttributeValue::Bytes(local.clone().into_bytes()),
        );
        map.insert(
            "k2".to_string(),
            AttributeValue::Bytes(external.into_bytes()),
        );
        let mut mail = Mail::new(None, vec![], b"\r\n".to_vec());
        mail.name = "m1".into();
        mail.set_attribute("icalendarAsJson2", AttributeValue::Map(map));
        mailet.service(&mut mail, &ctx).await.unwrap();
        assert_eq!(mail.jobs.len(), 1);
        let job = &mail.jobs[0];
        assert_eq!(job.kind, "esn-itip");
        assert_eq!(job.target, "bob@example.org");
        assert_eq!(job.mail_name, "m1");
        assert_eq!(job.payload["body"].as_str().unwrap(), local);
        assert_eq!(job.payload["recipient"], "bob@example.org");

        // a recipient the API said it does not know gets no job while that is cached
        DavServices::get(&ctx)
            .unwrap()
            .unwrap()
            .users
            .remember("bob@example.org", &None, None);
        let mut again = Mail::new(None, vec![], b"\r\n".to_vec());
        again.set_attribute(
            "icalendarAsJson2",
            mail.attribute("icalendarAsJson2").unwrap().clone(),
        );
        mailet.service(&mut again, &ctx).await.unwrap();
        assert!(again.jobs.is_empty());
    }

    fn caldav_ctx() -> MailetContext {
        let mut ctx = MailetContext::for_tests(std::env::temp_dir());
        ctx.settings.dav.dialect = DavDialect::Caldav;
        ctx.settings.dav.base_url = "http://127.0.0.1:1".into();
        ctx
    }

    #[tokio::test]
    async fn caldav_dialect_queues_one_caldav_itip_job_per_local_recipient() {
        let ctx = caldav_ctx();
        let mailet = CalDavCollect::build(
            &MailetConfig::inline(
                "CalDavCollect",
                &[
                    ("source", "json"),
                    ("updatesOnly", "true"),
                    ("deleteCanceled", "true"),
                    ("organizers", "Org.example, boss@corp.example"),
                    ("calendarId", "work"),
                    ("allowPublic", "true"),
                ],
            ),
            &ctx,
        )
        .expect("no openpaas.properties needed for caldav");
        let request = ics("REQUEST", "alice@org.example", &["bob@example.org"]);
        let mut map = std::collections::BTreeMap::new();
        for (k, rcpt) in [("k1", "Bob@example.org"), ("k2", "x@elsewhere.example")] {
            let text = serde_json::to_string(&doc(&request, "alice@org.example", rcpt)).unwrap();
            map.insert(k.to_string(), AttributeValue::Bytes(text.into_bytes()));
        }
        let mut mail = Mail::new(None, vec![], b"\r\n".to_vec());
        mail.name = "m2".into();
        mail.set_attribute("json", AttributeValue::Map(map));
        mailet.service(&mut mail, &ctx).await.unwrap();
        assert_eq!(
            mail.jobs.len(),
            1,
            "the external recipient has no calendar here"
        );
        let job = &mail.jobs[0];
        assert_eq!(job.kind, "caldav-itip");
        assert_eq!(job.target, "bob@example.org");
        assert_eq!(job.mail_name, "m2");
        let itip: ItipJob = serde_json::from_value(job.payload.clone()).unwrap();
        assert_eq!(itip.ical, request);
        assert_eq!(itip.calendar_id.as_deref(), Some("work"));
        assert_eq!(
            itip.options,
            Options {
                updates_only: true,
                delete_canceled: true,
                organizers: vec!["org.example".into(), "boss@corp.example".into()],
                allow_public: true,
            }
        );
    }

    #[tokio::test]
    async fn restrictive_collect_is_collect_with_updates_only_on_both_dialects() {
        let request = ics("REQUEST", "alice@org.example", &["bob@example.org"]);
        let text =
            serde_json::to_string(&doc(&request, "alice@org.example", "bob@example.org")).unwrap();
        let mut esn = MailetContext::for_tests(std::env::temp_dir());
        esn.properties = crate::config::Properties::parse(
            "openpaas.api.uri=http://127.0.0.1:1/api\nopenpaas.admin.user=a\nopenpaas.admin.password=b\ndav.api.uri=http://127.0.0.1:1\ndav.admin.user=admin\ndav.admin.password=p\n",
            std::path::Path::new("openpaas.properties"),
        )
        .unwrap();
        for ctx in [caldav_ctx(), esn] {
            let mailet = crate::mailets::build(
                &MailetConfig::inline("RestrictiveCalDavCollect", &[("source", "json")]),
                &ctx,
            )
            .unwrap();
            let mut map = std::collections::BTreeMap::new();
            map.insert("k".into(), AttributeValue::Bytes(text.clone().into_bytes()));
            let mut mail = Mail::new(None, vec![], b"\r\n".to_vec());
            mail.set_attribute("json", AttributeValue::Map(map));
            mailet.service(&mut mail, &ctx).await.unwrap();
            let job = &mail.jobs[0];
            let updates_only = match job.kind.as_str() {
                "caldav-itip" => job.payload["options"]["updates_only"].clone(),
                _ => job.payload["updatesOnly"].clone(),
            };
            assert_eq!(updates_only, serde_json::Value::Bool(true), "{job:?}");
        }
    }

    #[test]
    fn caldav_parameters_are_validated_at_construction() {
        let ctx = caldav_ctx();
        let err = |params: &[(&str, &str)]| {
            CalDavCollect::build(&MailetConfig::inline("CalDavCollect", params), &ctx)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(&[("updatesOnly", "maybe")]).contains("updatesOnly"));
        assert!(
            err(&[("organizers", "not an address@")]).contains("neither an address nor a domain")
        );
        assert!(err(&[("organizers", " , ")]).contains("organizers is empty"));
        assert!(err(&[("calendarId", "a/b")]).contains("calendarId"));
        assert!(err(&[("allowPublic", "yes please")]).contains("allowPublic"));
        let mut no_base = caldav_ctx();
        no_base.settings.dav.base_url.clear();
        let e = CalDavCollect::build(&MailetConfig::inline("CalDavCollect", &[]), &no_base)
            .err()
            .unwrap();
        assert!(e.to_string().contains("base_url"), "{e}");
        // the esn dialect refuses them rather than ignoring them
        let mut esn = MailetContext::for_tests(std::env::temp_dir());
        esn.dry_run = true;
        let e = CalDavCollect::build(
            &MailetConfig::inline("CalDavCollect", &[("deleteCanceled", "true")]),
            &esn,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("caldav"), "{e}");
    }
}
