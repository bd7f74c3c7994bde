//! The caldav dialect as an [`ItipTarget`]: one `caldav-itip` job per recipient, applied by
//! [`CalDavItipHandler`](super::handler::CalDavItipHandler) to the recipient's calendar.

use super::apply::Options;
use super::handler::ItipJob;
use crate::dav::itip_target::{ItipMessage, ItipTarget, ItipText};
use crate::mail::job::OutboxJob;

/// Queues `caldav-itip` jobs with the mailet's options (RFC 9671 tagged arguments).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CalDavItipTarget {
    /// How the handler applies the message.
    pub options: Options,
    /// The calendar new events go to.
    pub calendar_id: Option<String>,
    /// The calendar new tasks (VTODO) go to; `calendar_id`'s when not set.
    pub tasks_calendar_id: Option<String>,
}

impl ItipTarget for CalDavItipTarget {
    fn takes_tasks(&self) -> bool {
        true
    }

    fn local_recipients_only(&self) -> bool {
        true
    }

    fn known_absent(&self, _recipient: &str) -> bool {
        // the handler remembers the users without a calendar; the mailet has no cache
        false
    }

    fn describe(&self, message: &ItipMessage<'_>) -> String {
        format!(
            "caldav-itip for {}: apply to their calendar\n\n{}\n",
            message.recipient,
            message.text.ical()
        )
    }

    fn job(&self, message: &ItipMessage<'_>) -> OutboxJob {
        let (ical, shared) = match &message.text {
            // one copy of the calendar for all the recipients' jobs
            ItipText::Shared(d) => (String::new(), Some(d.ical.clone())),
            ItipText::Json(_) => (message.text.ical(), None),
        };
        let calendar_id = match &self.tasks_calendar_id {
            Some(tasks) if message.is_task => Some(tasks.clone()),
            _ => self.calendar_id.clone(),
        };
        let mut job = ItipJob {
            recipient: message.recipient.to_string(),
            ical,
            options: self.options.clone(),
            calendar_id,
        }
        .into_job();
        job.shared = shared;
        job
    }
}
