//! iTIP application (RFC 5546) to the recipient's stored copy of an event or a task
//! (VTODO, scheduled the same way), as a CalDAV
//! server's own scheduling would do it: pure functions on calcard values, no I/O. The
//! handler reads the stored copy, calls [`apply`] and writes what it returns.
//!
//! Versions are compared as RFC 5546 §2.1.5 says: SEQUENCE first, then DTSTAMP. A REQUEST
//! with a master replaces every stored VEVENT (the organizer sends the whole event); one
//! with only RECURRENCE-ID components adds or replaces those instances. The user's own
//! data survives where RFC 5546 lets it: the attendee's PARTSTAT when the SEQUENCE did not
//! change, and VALARMs the organizer's copy does not carry.

use calcard::icalendar::{ICalendar, ICalendarProperty};
use serde::{Deserialize, Serialize};

use add::add;
use cancel::cancel;
use reply::reply;
use request::request;
use tree::Node;

/// The iTIP methods (RFC 5546 §1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// PUBLISH: an event without attendee semantics.
    Publish,
    /// REQUEST: an invitation or an update from the organizer.
    Request,
    /// REPLY: an attendee's answer, to the organizer.
    Reply,
    /// ADD: new instances of a recurring event.
    Add,
    /// CANCEL: the event or some instances are cancelled.
    Cancel,
    /// REFRESH: an attendee asks for the latest version.
    Refresh,
    /// COUNTER: an attendee proposes a change.
    Counter,
    /// DECLINECOUNTER: the organizer refuses a COUNTER.
    DeclineCounter,
}

impl Method {
    /// The METHOD of a calendar, if it is an iTIP one.
    pub fn of(calendar: &ICalendar) -> Option<Method> {
        Method::named(crate::ical::method(calendar)?)
    }

    /// The iTIP method of that name (any case, surrounding blanks ignored).
    pub fn named(text: &str) -> Option<Method> {
        Some(match text.trim().to_ascii_uppercase().as_str() {
            "PUBLISH" => Method::Publish,
            "REQUEST" => Method::Request,
            "REPLY" => Method::Reply,
            "ADD" => Method::Add,
            "CANCEL" => Method::Cancel,
            "REFRESH" => Method::Refresh,
            "COUNTER" => Method::Counter,
            "DECLINECOUNTER" => Method::DeclineCounter,
            _ => return None,
        })
    }

    /// The METHOD as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Publish => "PUBLISH",
            Method::Request => "REQUEST",
            Method::Reply => "REPLY",
            Method::Add => "ADD",
            Method::Cancel => "CANCEL",
            Method::Refresh => "REFRESH",
            Method::Counter => "COUNTER",
            Method::DeclineCounter => "DECLINECOUNTER",
        }
    }
}

/// The `CalDavCollect` parameters that change how a message is applied (after RFC 9671's
/// `processcalendar` tagged arguments). Travels in the job payload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// `:updatesonly`: never create an event the recipient does not have.
    pub updates_only: bool,
    /// `:deletecancelled`: a CANCEL of the whole event deletes it.
    pub delete_canceled: bool,
    /// `:organizers`: addresses or domains (lowercase) allowed to create events; empty = any.
    pub organizers: Vec<String>,
    /// `:allowpublic`: apply METHOD:PUBLISH too.
    pub allow_public: bool,
}

impl Options {
    fn may_create(&self, organizer: Option<&str>) -> Result<(), CreateRefused> {
        if self.updates_only {
            return Err(CreateRefused::UpdatesOnly);
        }
        if self.organizers.is_empty() {
            return Ok(());
        }
        let organizer = organizer.unwrap_or("").to_ascii_lowercase();
        if crate::address::in_address_list(&self.organizers, &organizer) {
            Ok(())
        } else {
            Err(CreateRefused::Organizer(organizer))
        }
    }
}

/// Why a message may not create an event the recipient does not have.
#[derive(Debug, thiserror::Error)]
enum CreateRefused {
    /// `updatesOnly`.
    #[error("the event is not in the calendar and updatesOnly is set")]
    UpdatesOnly,
    /// The organizer is not in `organizers`.
    #[error("organizer {0:?} is not in organizers: it may not create events")]
    Organizer(String),
}

/// What to do with the stored copy.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// No copy exists: store this one (`If-None-Match: *`).
    Create(ICalendar),
    /// Replace the stored copy with this one (`If-Match`).
    Update(ICalendar),
    /// Delete the stored copy (`If-Match`).
    Delete,
    /// Leave the calendar alone, for this reason.
    Nothing(String),
}

/// Applies the iTIP `message` for `recipient` (an address, any case) to the `stored` copy
/// of the event (none when the recipient has no copy).
pub fn apply(
    stored: Option<&ICalendar>,
    message: &ICalendar,
    recipient: &str,
    options: &Options,
) -> Change {
    let written = message
        .components
        .first()
        .is_some_and(|root| root.property(&ICalendarProperty::Method).is_some());
    let method = match Method::of(message) {
        Some(method) => method,
        // a calendar to import (no METHOD) is published, when published ones are wanted
        None if !written && options.allow_public => Method::Publish,
        None => return Change::Nothing("no iTIP METHOD".into()),
    };
    let Some(msg) = Node::root(message) else {
        return Change::Nothing("not a VCALENDAR".into());
    };
    if !msg.children.iter().any(Node::is_event) {
        return Change::Nothing("no VEVENT or VTODO".into());
    }
    let stored = stored.and_then(Node::root);
    let recipient = recipient.trim().to_ascii_lowercase();
    match method {
        Method::Request => request(stored, msg, &recipient, options),
        Method::Publish if options.allow_public => request(stored, msg, &recipient, options),
        Method::Publish => {
            Change::Nothing("METHOD:PUBLISH is applied only with allowPublic".into())
        }
        Method::Cancel => cancel(stored, &msg, options),
        Method::Reply => reply(stored, &msg),
        Method::Add => add(stored, &msg),
        Method::Refresh | Method::Counter | Method::DeclineCounter => Change::Nothing(format!(
            "METHOD:{} is for the organizer's client; not applied",
            method.as_str()
        )),
    }
}

mod add;
mod cancel;
mod props;
mod reply;
mod request;
mod tree;

#[cfg(test)]
mod tests;
