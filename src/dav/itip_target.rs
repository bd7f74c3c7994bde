//! Where an accepted iTIP message goes: the DAV dialect's outbox job. `CalDavCollect`
//! decides whether a message is passed on (alignment, PUBLISH, own replies) and asks its
//! [`ItipTarget`] for the job: esn-sabre's `ITIP` endpoint
//! ([`EsnItipTarget`](super::esn_itip::EsnItipTarget)) or mailetd's own scheduling agent
//! on a standard CalDAV server ([`CalDavItipTarget`](super::caldav::target::CalDavItipTarget)).

use crate::ical_json::DocumentRef;
use crate::mail::job::OutboxJob;

/// One iTIP JSON document as `CalDavCollect` read it.
pub enum ItipText<'a> {
    /// The JSON text another mailet wrote.
    Json(&'a str),
    /// One of `ICALToJsonAttribute`'s documents, whose calendar text is shared.
    Shared(&'a DocumentRef<'a>),
}

impl ItipText<'_> {
    /// The JSON text, as James would have stored it.
    pub fn json(&self) -> String {
        match self {
            ItipText::Json(text) => text.to_string(),
            ItipText::Shared(d) => String::from_utf8_lossy(&d.render()).into_owned(),
        }
    }

    /// The `ical` field (empty when a JSON text has none).
    pub fn ical(&self) -> String {
        match self {
            ItipText::Shared(d) => d.ical.to_string(),
            ItipText::Json(text) => serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|j| j.get("ical")?.as_str().map(str::to_string))
                .unwrap_or_default(),
        }
    }
}

/// An iTIP message accepted for one recipient.
pub struct ItipMessage<'a> {
    /// The recipient's address, local part lowercased (James `Username`).
    pub recipient: &'a str,
    /// A task (VTODO, no VEVENT).
    pub is_task: bool,
    /// The document.
    pub text: ItipText<'a>,
}

/// A DAV dialect as the destination of accepted iTIP messages.
pub trait ItipTarget: Send + Sync {
    /// Whether tasks (calendars without VEVENT) are passed on: esn-sabre takes events only.
    fn takes_tasks(&self) -> bool;

    /// Whether only recipients in the local domains are considered, whatever the mailet's
    /// `skipNonLocalRecipients` says (a standard server has no user directory to ask).
    fn local_recipients_only(&self) -> bool;

    /// Whether the recipient is known, without asking anyone, to have no calendar there
    /// (a user lookup that recently found nobody): then no job is queued.
    fn known_absent(&self, recipient: &str) -> bool;

    /// What the job would send, for `--dry-run`.
    fn describe(&self, message: &ItipMessage<'_>) -> String;

    /// The outbox job delivering `message`.
    fn job(&self, message: &ItipMessage<'_>) -> OutboxJob;
}
