//! Integration tests: one binary (one link), modules per area. Each test starts its own
//! servers (mailetd, Radicale, SabreDAV, doubles) on free loopback ports in temp directories.

mod broker;
mod broker_queues;
mod caldav;
mod caldav_collections;
mod caldav_requests;
mod calendar_chain;
mod consolidate;
mod contacts;
mod contacts_esn;
mod contacts_smtp;
mod container;
mod default_conf;
mod esn;
mod esn_outbox;
mod faults;
mod hostile;
mod hostile_calendar;
mod hostile_secrets;
mod invitations;
mod james_confs;
mod layers;
mod metrics_rabbitmq;
mod ops;
mod ops_security;
mod poison;
mod ship;
mod ship_radicale;
mod smtp;
mod smtp_limits;
mod smtp_serve;
mod support;
