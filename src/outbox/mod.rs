//! The durable outbox: DAV work decided by mailets (an iTIP to send, a contact to collect),
//! stored in the same transaction that releases the mail, then delivered with retries.

pub mod admin;
pub mod amqp_forward;
pub mod dedup;
pub mod rabbitmq;
pub mod store;
pub mod worker;

pub use crate::mail::job::{Delivery, JobHandler, OutboxJob};
