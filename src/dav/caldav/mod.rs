//! The `caldav` dialect: mailetd as the recipients' scheduling agent on a standard CalDAV
//! server (Radicale, SabreDAV, Nextcloud, Baikal), which has no inbound iTIP of its own.

pub mod apply;
pub mod client;
pub mod handler;
pub mod locate;
pub mod target;
