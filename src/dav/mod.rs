//! DAV clients: the esn (Twake) dialect and standard CalDAV/CardDAV.

/// HTTP clients, the user-lookup cache and DAV settings shared by the DAV mailets and the
/// outbox handlers of one process (built once, on first use, from the configuration).
#[derive(Debug, Default)]
pub struct DavServices {}

pub mod carddav;
pub mod contact;
pub mod esn_contact;
pub mod known_contacts;
