//! mailetd: a James-compatible mailet container that collects calendar invitations and
//! contacts from mirrored mail into CalDAV/CardDAV servers.
//!
//! Data flow: [`ingest`] (SMTP) → [`spool`] (durable) → [`pipeline`] (processors, matchers,
//! mailets) → [`outbox`] (durable DAV jobs) → [`dav`].

pub mod address;
pub mod allocator;
pub mod broker;
pub mod cli;
pub mod config;
pub mod consolidate;
pub mod dav;
pub mod http;
pub mod ical;
pub mod ical_json;
pub mod ingest;
pub mod logging;
pub mod mail;
pub mod mailets;
pub mod matchers;
pub mod observe;
pub mod outbox;
pub mod pipeline;
pub mod repository;
pub mod server;
pub mod spool;
pub mod store;
pub mod sync;
