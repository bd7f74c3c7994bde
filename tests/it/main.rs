//! Integration tests: one binary (one link), modules per area. Each test starts its own
//! servers (mailetd, Radicale, SabreDAV, doubles) on free loopback ports in temp directories.

mod broker;
mod caldav;
mod calendar_chain;
mod contacts;
mod container;
mod default_conf;
mod esn;
mod faults;
mod hostile_calendar;
mod ops;
mod ship;
mod smtp;
mod support;
