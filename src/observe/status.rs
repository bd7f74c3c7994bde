//! What `/api/status` shows besides the metrics and the recent errors
//! ([`crate::logging::ErrorRing`]): which clients feed us mail, pushed by ingest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::Serialize;

use crate::mail::now_ms;
use crate::sync::Locked;

/// Client addresses tracked; past this, the least recently seen is forgotten.
const MAX_CLIENTS: usize = 4096;

/// Mails accepted per client address.
#[derive(Debug, Default)]
pub struct Clients(Mutex<HashMap<IpAddr, (u64, u64)>>);

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

impl Clients {
    /// Counts a mail accepted from `ip`.
    pub fn record_mail(&self, ip: IpAddr) {
        let now = now_ms();
        let mut clients = self.0.locked();
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
    pub fn list(&self) -> Vec<ClientEntry> {
        let mut list: Vec<ClientEntry> = self
            .0
            .locked()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_mails_per_client() {
        let clients = Clients::default();
        let ip: IpAddr = "192.0.2.77".parse().unwrap();
        clients.record_mail(ip);
        clients.record_mail(ip);
        let list = clients.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].mails, 2);
        assert!(list[0].last_seen_ms > 0);
    }
}
