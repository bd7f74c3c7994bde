//! The decision whether one iTIP JSON document is passed on: sender alignment, own replies,
//! PUBLISH and task filtering (shared by `CalDavCollect` and `ConsolidatedCalendar`).

use crate::address::MailAddress;
use crate::config::ConfigError;
use crate::ical::{self, CalendarFacts};
use crate::pipeline::MailetConfig;

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

    /// The `alignmentMode` parameter of a mailet (default `strict`), or an error at its line.
    pub fn from_config(config: &MailetConfig) -> Result<AlignmentMode, ConfigError> {
        match config.parameter("alignmentMode") {
            None => Ok(AlignmentMode::Strict),
            Some(p) => AlignmentMode::parse(&p.value).ok_or_else(|| {
                p.position.error(format!(
                    "alignmentMode is {:?}: expected strict, sameDomain or none",
                    p.value
                ))
            }),
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
    /// A task (VTODO, no VEVENT): goes to the tasks calendar.
    pub is_task: bool,
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
        is_task: !calendar.has_event,
    })
}
