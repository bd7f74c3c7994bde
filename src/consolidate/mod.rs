//! Consolidating calendars from many mail systems (docs/consolidating.md): each mirrored
//! mail is attributed to a source ([`sources`]), `/api/status` reports per source
//! ([`stats`]), and the `ConsolidatedCalendar` mailet queues `consolidated-itip` jobs that
//! [`handler`] applies to one destination calendar, CalDAV (with the caldav dialect's RFC
//! 5546 rules) or Microsoft Graph ([`graph`]).

pub mod graph;
pub mod handler;
pub mod sources;
pub mod stats;

pub use sources::{SOURCE_ATTRIBUTE, Sources};
