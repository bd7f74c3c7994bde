//! What `/api/status` shows besides the metrics: the last errors (mail id and reason), fed
//! by the pipeline, the spooler and the outbox, and which clients feed us mail, fed by ingest.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};

use serde::Serialize;

use crate::mail::now_ms;

/// Errors kept for `/api/status`.
pub const RECENT_ERRORS: usize = 20;
/// Client addresses tracked; past this, the least recently seen is forgotten.
const MAX_CLIENTS: usize = 4096;

/// One error, as `/api/status` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorEntry {
    /// When it happened (ms since epoch).
    pub at_ms: u64,
    /// Where: `pipeline`, `spooler`, `outbox`.
    pub source: &'static str,
    /// The mail's name or spool id.
    pub mail: String,
    /// What went wrong (never a secret: messages carry no credentials).
    pub reason: String,
}

/// Mails received from one client address.
#[derive(Clone, Debug, Serialize)]
pub struct ClientEntry {
    /// The client address.
    pub ip: IpAddr,
    /// Mails it sent that were accepted.
    pub mails: u64,
    /// When its last mail was accepted (ms since epoch).
    pub last_seen_ms: u64,
}

static ERRORS: LazyLock<Mutex<VecDeque<ErrorEntry>>> =
    LazyLock::new(|| Mutex::new(VecDeque::with_capacity(RECENT_ERRORS)));
static CLIENTS: LazyLock<Mutex<HashMap<IpAddr, (u64, u64)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Remembers an error (the oldest of [`RECENT_ERRORS`] is dropped).
pub fn record_error(source: &'static str, mail: impl Into<String>, reason: impl Into<String>) {
    let mut errors = ERRORS.lock().unwrap();
    if errors.len() == RECENT_ERRORS {
        errors.pop_front();
    }
    errors.push_back(ErrorEntry {
        at_ms: now_ms(),
        source,
        mail: mail.into(),
        reason: crate::config::secret::redact_urls(&reason.into()).into_owned(),
    });
}

/// The last errors, newest first.
pub fn recent_errors() -> Vec<ErrorEntry> {
    ERRORS.lock().unwrap().iter().rev().cloned().collect()
}

/// Counts a mail accepted from `ip`.
pub fn record_client_mail(ip: IpAddr) {
    let now = now_ms();
    let mut clients = CLIENTS.lock().unwrap();
    if clients.len() >= MAX_CLIENTS && !clients.contains_key(&ip) {
        let oldest = clients
            .iter()
            .min_by_key(|(_, (_, seen))| *seen)
            .map(|(ip, _)| *ip);
        if let Some(oldest) = oldest {
            clients.remove(&oldest);
        }
    }
    let entry = clients.entry(ip).or_insert((0, now));
    entry.0 += 1;
    entry.1 = now;
}

/// Every client seen, most recent first.
pub fn clients() -> Vec<ClientEntry> {
    let mut list: Vec<ClientEntry> = CLIENTS
        .lock()
        .unwrap()
        .iter()
        .map(|(ip, (mails, seen))| ClientEntry {
            ip: *ip,
            mails: *mails,
            last_seen_ms: *seen,
        })
        .collect();
    list.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then(a.ip.cmp(&b.ip)));
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_twenty_errors_newest_first() {
        for i in 0..25 {
            record_error("test", format!("m{i}"), "boom");
        }
        // other tests of this process may add errors of their own at the same time
        let errors = recent_errors();
        assert_eq!(errors.len(), RECENT_ERRORS);
        let ours: Vec<_> = errors.iter().filter(|e| e.source == "test").collect();
        assert_eq!(ours[0].mail, "m24");
        assert!(ours.len() >= 15 && !ours.iter().any(|e| e.mail == "m4"));
        assert!(ours.windows(2).all(|w| w[0].at_ms >= w[1].at_ms));
    }

    #[test]
    fn counts_mails_per_client() {
        let ip: IpAddr = "192.0.2.77".parse().unwrap();
        record_client_mail(ip);
        record_client_mail(ip);
        let entry = clients().into_iter().find(|c| c.ip == ip).unwrap();
        assert_eq!(entry.mails, 2);
        assert!(entry.last_seen_ms > 0);
    }
}
