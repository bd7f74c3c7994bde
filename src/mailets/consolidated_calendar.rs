//! `ConsolidatedCalendar` (mailetd): applies every invitation of the selected sources to
//! one destination calendar (`[destinations.<name>]` of `mailetd.toml`), whoever it was
//! addressed to, beside or instead of `CalDavCollect`'s per-recipient delivery. Reads the
//! iTIP JSON documents of `ICALToJsonAttribute`, as `CalDavCollect` does, and queues one
//! durable `consolidated-itip` job per distinct iTIP message of the mail.
//!
//! ```xml
//! <mailet match="All" class="ConsolidatedCalendar">
//!     <destination>all-sites</destination>        <!-- required: [destinations.all-sites] -->
//!     <attribute>icalendarAsJson2</attribute>     <!-- default icalendarJson -->
//!     <sources>paris, lyon</sources>              <!-- [[sources]] names; default: every mail -->
//!     <recipients>corp.example, ceo@corp.example</recipients> <!-- default: any recipient -->
//!     <methods>REQUEST, CANCEL</methods>          <!-- default REQUEST, CANCEL, REPLY, ADD -->
//!     <alignmentMode>strict</alignmentMode>       <!-- as CalDavCollect -->
//!     <categories>false</categories>              <!-- also CATEGORIES:<source> -->
//!     <deleteCanceled>false</deleteCanceled>      <!-- and updatesOnly, organizers, allowPublic: as CalDavCollect -->
//! </mailet>
//! ```
//!
//! Each VEVENT of the message gets `X-MAILETD-SOURCE:<source>` (and, with `categories`,
//! `CATEGORIES:<source>`, which calendar clients show and filter on). The event is keyed
//! by its UID in the destination, so the same meeting mirrored by two sites is one event,
//! carrying the source whose copy was applied first (the second copy is not newer). A
//! CANCEL marks the event `STATUS:CANCELLED`, or deletes it with `deleteCanceled=true`.

use std::collections::BTreeSet;

use async_trait::async_trait;

use crate::config::ConfigError;
use crate::consolidate::handler::ConsolidatedJob;
use crate::consolidate::sources::{self, Sources};
use crate::consolidate::stats;
use crate::dav::caldav::apply::{Method, Options};
use crate::ical::CalendarFacts;
use crate::mail::{AttributeValue, Mail, in_address_list};
use crate::mailets::address_list;
use crate::mailets::cal_dav_collect::{AlignmentMode, CalDavParams, Policy, decide_on};
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// The methods applied when `methods` is absent.
const DEFAULT_METHODS: &[Method] = &[Method::Request, Method::Cancel, Method::Reply, Method::Add];

/// Queues `consolidated-itip` jobs for one destination.
pub struct ConsolidatedCalendar {
    destination: String,
    attribute: String,
    /// Empty: every mail, attributed or not.
    sources: Vec<String>,
    /// Lowercased addresses and domains; empty: any recipient.
    recipients: Vec<String>,
    methods: Vec<Method>,
    alignment: AlignmentMode,
    categories: bool,
    options: Options,
}

impl ConsolidatedCalendar {
    /// Reads and validates the parameters against `[[sources]]` and `[destinations]`.
    pub fn build(
        config: &MailetConfig,
        ctx: &MailetContext,
    ) -> Result<Box<dyn Mailet>, ConfigError> {
        let destination = config.require("destination")?.trim().to_string();
        let Some(settings) = ctx.settings.destinations.get(&destination) else {
            let known: Vec<&str> = ctx
                .settings
                .destinations
                .keys()
                .map(String::as_str)
                .collect();
            return Err(config.error(format!(
                "ConsolidatedCalendar: destination {destination:?} is not a [destinations.<name>] of mailetd.toml (known: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        };
        // validated here too, so that `mailetd check` reports a bad URL or missing secret
        crate::consolidate::handler::destination(&destination, settings)?;
        let attribute = config
            .get_or("attribute", "icalendarJson")
            .trim()
            .to_string();
        if attribute.is_empty() {
            return Err(config.error("parameter <attribute> of ConsolidatedCalendar is empty"));
        }
        let configured = Sources::new(&ctx.settings.sources)?;
        let mut sources = Vec::new();
        if let Some(p) = config.parameter("sources") {
            for name in address_list::items(&p.value) {
                if !configured.contains(name) {
                    return Err(p.position.error(format!(
                        "sources: {name:?} is not the name of a [[sources]] entry of mailetd.toml"
                    )));
                }
                sources.push(name.to_string());
            }
            if sources.is_empty() {
                return Err(p
                    .position
                    .error("sources is empty: leave it out to take every mail"));
            }
        }
        let recipients = match config.parameter("recipients") {
            None => Vec::new(),
            Some(p) => address_list::addresses_or_domains(p, "leave it out to take any recipient")?,
        };
        let methods = match config.parameter("methods") {
            None => DEFAULT_METHODS.to_vec(),
            Some(p) => {
                let mut methods = Vec::new();
                for name in address_list::items(&p.value) {
                    let method = Method::named(name).ok_or_else(|| {
                        p.position.error(format!(
                            "methods: {name:?} is not an iTIP method (REQUEST, CANCEL, REPLY, ADD, PUBLISH…)"
                        ))
                    })?;
                    methods.push(method);
                }
                if methods.is_empty() {
                    return Err(p.position.error("methods is empty"));
                }
                methods
            }
        };
        let alignment = AlignmentMode::from_config(config)?;
        if config.parameter("calendarId").is_some() {
            return Err(config.error(
                "parameter <calendarId> does not apply to ConsolidatedCalendar: the destination's calendar_url names the calendar",
            ));
        }
        let params = CalDavParams::from_config(config)?;
        Ok(Box::new(ConsolidatedCalendar {
            destination,
            attribute,
            sources,
            recipients,
            methods,
            alignment,
            categories: config.get_bool("categories", false)?,
            options: params.options,
        }))
    }

    fn wants_recipient(&self, recipient: &str) -> bool {
        self.recipients.is_empty() || in_address_list(&self.recipients, recipient)
    }
}

/// `ical` with `X-MAILETD-SOURCE` (and `CATEGORIES` when asked) in each VEVENT, the line
/// ending of the message kept.
pub fn mark_source(ical: &str, source: &str, categories: bool) -> String {
    let mut out = String::with_capacity(ical.len() + 64);
    for line in ical.split_inclusive('\n') {
        if line.trim_end().eq_ignore_ascii_case("END:VEVENT") {
            let eol = if line.ends_with("\r\n") { "\r\n" } else { "\n" };
            out.push_str(&format!("X-MAILETD-SOURCE:{source}{eol}"));
            if categories {
                out.push_str(&format!("CATEGORIES:{source}{eol}"));
            }
        }
        out.push_str(line);
    }
    out
}

#[async_trait]
impl Mailet for ConsolidatedCalendar {
    async fn service(&self, mail: &mut Mail, ctx: &MailetContext) -> Result<(), MailetError> {
        let source = sources::source_of(mail);
        if !self.sources.is_empty() && !source.as_ref().is_some_and(|s| self.sources.contains(s)) {
            return Ok(());
        }
        let Some(value) = mail.attribute(&self.attribute) else {
            return Ok(());
        };
        // Each document is one recipient's view of a calendar: the calendar's facts, parsed
        // once (by ICalendarParser for ICALToJsonAttribute's documents), decide for all.
        let mut messages = BTreeSet::new();
        let mut consider = |key: &str,
                            ical: &str,
                            facts: &CalendarFacts,
                            recipient: &str,
                            sender: Option<&str>| {
            let policy = Policy {
                alignment: self.alignment,
                allow_public: false,
                allow_tasks: false,
            };
            let accepted = match decide_on(policy, facts, recipient, sender) {
                Ok(a) => a,
                Err(skip) => {
                    tracing::debug!(mail = mail.name, key, reason = ?skip, "ConsolidatedCalendar: skipped");
                    return;
                }
            };
            if !self.wants_recipient(&accepted.recipient.to_string()) {
                return;
            }
            let method = facts.method.as_deref().and_then(Method::named);
            if !method.is_some_and(|m| self.methods.contains(&m)) {
                tracing::debug!(mail = mail.name, key, method = ?method, "ConsolidatedCalendar: method not selected");
                return;
            }
            if !messages.contains(ical) {
                messages.insert(ical.to_string());
            }
        };
        if let AttributeValue::CalendarJson(jsons) = value {
            for d in jsons.documents() {
                match d.parsed {
                    Some(calendar) => consider(
                        d.key,
                        d.ical,
                        calendar.facts(),
                        &d.document.recipient,
                        Some(&d.document.sender),
                    ),
                    None => tracing::debug!(
                        mail = mail.name,
                        key = d.key,
                        "ConsolidatedCalendar: not a calendar; skipped"
                    ),
                }
            }
        } else {
            for (key, text) in value.document_texts().unwrap_or_default() {
                let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
                    tracing::warn!(
                        mail = mail.name,
                        key,
                        "ConsolidatedCalendar: not JSON; skipped"
                    );
                    continue;
                };
                let field = |k: &str| {
                    json.get(k)
                        .and_then(|v| v.as_str())
                        .filter(|s| !s.is_empty())
                };
                let (Some(ical), Some(recipient)) = (field("ical"), field("recipient")) else {
                    continue;
                };
                match crate::ical::facts(ical) {
                    Ok(facts) => consider(&key, ical, &facts, recipient, field("sender")),
                    Err(_) => tracing::debug!(
                        mail = mail.name,
                        key,
                        "ConsolidatedCalendar: unparsable calendar; skipped"
                    ),
                }
            }
        }
        for ical in messages {
            let ical = match &source {
                Some(s) => mark_source(&ical, s, self.categories),
                None => ical,
            };
            if ctx.dry_run {
                println!(
                    "consolidated-itip to destination {}: apply\n\n{ical}\n",
                    self.destination
                );
                continue;
            }
            if let Some(s) = &source {
                stats::record_seen(s);
            }
            let mut job = ConsolidatedJob {
                destination: self.destination.clone(),
                source: source.clone(),
                ical,
                options: self.options.clone(),
            }
            .into_job();
            job.mail_name = mail.name.clone();
            mail.jobs.push(job);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::consolidate::{DestinationSettings, SourceSettings};

    fn ics(method: &str, uid: &str) -> String {
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nMETHOD:{method}\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T100000Z\r\nDTSTART:20260102T100000Z\r\nORGANIZER:mailto:alice@paris.example\r\nATTENDEE:mailto:bob@corp.example\r\nATTENDEE:mailto:carol@other.example\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    }

    fn ctx() -> MailetContext {
        let mut ctx = MailetContext::for_tests(std::env::temp_dir());
        ctx.settings.sources = vec![SourceSettings {
            name: "paris".into(),
            helo: vec!["mx.paris.example".into()],
            ..SourceSettings::default()
        }];
        ctx.settings.destinations.insert(
            "all".into(),
            DestinationSettings {
                calendar_url: "http://127.0.0.1:1/team/calendar/".into(),
                ..DestinationSettings::default()
            },
        );
        ctx
    }

    fn mail_with(docs: &[(&str, &str)], source: Option<&str>) -> Mail {
        let mut map = std::collections::BTreeMap::new();
        for (i, (ical, rcpt)) in docs.iter().enumerate() {
            let json = serde_json::json!({"ical": ical, "sender": "alice@paris.example", "recipient": rcpt});
            map.insert(
                format!("k{i}"),
                AttributeValue::Bytes(json.to_string().into_bytes()),
            );
        }
        let mut mail = Mail::new(None, vec![], b"\r\n".to_vec());
        mail.name = "m".into();
        mail.set_attribute("icalendarJson", AttributeValue::Map(map));
        if let Some(s) = source {
            mail.set_attribute(sources::SOURCE_ATTRIBUTE, AttributeValue::String(s.into()));
        }
        mail
    }

    async fn jobs(params: &[(&str, &str)], mail: &mut Mail) -> Vec<ConsolidatedJob> {
        let ctx = ctx();
        let mailet = ConsolidatedCalendar::build(
            &MailetConfig::inline("ConsolidatedCalendar", params),
            &ctx,
        )
        .unwrap();
        mailet.service(mail, &ctx).await.unwrap();
        mail.jobs
            .iter()
            .map(|j| serde_json::from_value(j.payload.clone()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn one_job_per_distinct_message_marked_with_the_source() {
        let request = ics("REQUEST", "u1");
        let mut mail = mail_with(
            &[
                (&request, "bob@corp.example"),
                (&request, "carol@other.example"),
            ],
            Some("paris"),
        );
        let got = jobs(&[("destination", "all"), ("categories", "true")], &mut mail).await;
        assert_eq!(got.len(), 1, "two recipients, one message");
        assert_eq!(got[0].destination, "all");
        assert_eq!(got[0].source.as_deref(), Some("paris"));
        assert!(
            got[0]
                .ical
                .contains("X-MAILETD-SOURCE:paris\r\nCATEGORIES:paris\r\nEND:VEVENT\r\n")
        );
        assert_eq!(mail.jobs[0].kind, "consolidated-itip");
    }

    #[tokio::test]
    async fn filters_by_source_recipient_and_method() {
        let request = ics("REQUEST", "u1");
        let cancel = ics("CANCEL", "u2");
        let docs = [
            (request.as_str(), "bob@corp.example"),
            (cancel.as_str(), "carol@other.example"),
        ];
        let base = [("destination", "all")];
        assert_eq!(jobs(&base, &mut mail_with(&docs, None)).await.len(), 2);
        let with = |extra: (&'static str, &'static str)| [base[0], extra];
        assert!(
            jobs(&with(("sources", "paris")), &mut mail_with(&docs, None))
                .await
                .is_empty()
        );
        assert_eq!(
            jobs(
                &with(("sources", "paris")),
                &mut mail_with(&docs, Some("paris"))
            )
            .await
            .len(),
            2
        );
        let got = jobs(
            &with(("recipients", "corp.example")),
            &mut mail_with(&docs, None),
        )
        .await;
        assert_eq!(got.len(), 1);
        assert!(got[0].ical.contains("UID:u1"));
        let got = jobs(&with(("methods", "cancel")), &mut mail_with(&docs, None)).await;
        assert_eq!(got.len(), 1);
        assert!(got[0].ical.contains("UID:u2"));
        assert!(
            !got[0].ical.contains("X-MAILETD-SOURCE"),
            "no source, no mark"
        );
    }

    #[test]
    fn parameters_are_validated_at_construction() {
        let ctx = ctx();
        let err = |params: &[(&str, &str)]| {
            ConsolidatedCalendar::build(&MailetConfig::inline("ConsolidatedCalendar", params), &ctx)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(&[]).contains("destination"));
        assert!(err(&[("destination", "nope")]).contains("known: all"));
        assert!(err(&[("destination", "all"), ("sources", "rome")]).contains("\"rome\""));
        assert!(err(&[("destination", "all"), ("methods", "REQUEST, FOO")]).contains("\"FOO\""));
        assert!(err(&[("destination", "all"), ("recipients", "nobody")]).contains("neither"));
        assert!(err(&[("destination", "all"), ("calendarId", "x")]).contains("calendarId"));
        assert!(
            err(&[("destination", "all"), ("alignmentMode", "loose")]).contains("alignmentMode")
        );
    }
}
