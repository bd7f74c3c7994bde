//! Per-source counters for `/api/status` (what a sync master's `/api/sync/status` shows):
//! mails attributed, the last one's time, and the invitations of the source that the
//! `ConsolidatedCalendar` mailet queued (`seen`), that a destination took (`applied`,
//! including "already up to date") or refused for good (`failed`, dead letter). Kept in
//! memory since the start of the process, like the client list.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

use serde::Serialize;

use crate::mail::now_ms;
use crate::sync::Locked;

/// The counters of one source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceStats {
    /// Mails attributed to it.
    pub mails: u64,
    /// When the last one was attributed (ms since epoch); 0: none yet.
    pub last_mail_ms: u64,
    /// Invitations queued for a consolidated calendar.
    pub seen: u64,
    /// Invitations a destination applied (or already had).
    pub applied: u64,
    /// Invitations a destination refused for good (dead letters).
    pub failed: u64,
}

static STATS: LazyLock<Mutex<BTreeMap<String, SourceStats>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

fn update(name: &str, change: impl FnOnce(&mut SourceStats)) {
    let mut stats = STATS.locked();
    match stats.get_mut(name) {
        Some(s) => change(s),
        None => change(stats.entry(name.to_string()).or_default()),
    }
}

/// Lists the configured sources even before their first mail.
pub fn register<'a>(names: impl Iterator<Item = &'a str>) {
    for name in names {
        update(name, |_| {});
    }
}

/// Counts a mail attributed to `name`.
pub fn record_mail(name: &str) {
    let now = now_ms();
    update(name, |s| {
        s.mails += 1;
        s.last_mail_ms = now;
    });
}

/// Counts an invitation of `name` queued for a consolidated calendar.
pub fn record_seen(name: &str) {
    update(name, |s| s.seen += 1);
}

/// Counts an invitation of `name` applied by its destination.
pub fn record_applied(name: &str) {
    update(name, |s| s.applied += 1);
}

/// Counts an invitation of `name` its destination refused for good.
pub fn record_failed(name: &str) {
    update(name, |s| s.failed += 1);
}

/// Every source with its counters, by name.
pub fn snapshot() -> Vec<(String, SourceStats)> {
    STATS
        .locked()
        .iter()
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect()
}

/// The `sources` array of `/api/status`.
pub fn status_json() -> serde_json::Value {
    let list: Vec<_> = snapshot()
        .into_iter()
        .map(|(name, s)| {
            serde_json::json!({
                "name": name,
                "mails": s.mails,
                "last_mail": (s.last_mail_ms > 0).then(|| {
                    mail_parser::DateTime::from_timestamp((s.last_mail_ms / 1000) as i64).to_rfc3339()
                }),
                "last_mail_ms": (s.last_mail_ms > 0).then_some(s.last_mail_ms),
                "invitations": {"seen": s.seen, "applied": s.applied, "failed": s.failed},
            })
        })
        .collect();
    serde_json::Value::Array(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_source() {
        register(["stats-test-a"].into_iter());
        record_mail("stats-test-a");
        record_seen("stats-test-a");
        record_seen("stats-test-a");
        record_applied("stats-test-a");
        record_failed("stats-test-a");
        let (_, a) = snapshot()
            .into_iter()
            .find(|(n, _)| n == "stats-test-a")
            .unwrap();
        assert_eq!((a.mails, a.seen, a.applied, a.failed), (1, 2, 1, 1));
        assert!(a.last_mail_ms > 0);
        let json = status_json();
        let entry = json
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "stats-test-a")
            .unwrap();
        assert_eq!(entry["invitations"]["seen"], 2);
        assert!(entry["last_mail"].as_str().unwrap().ends_with('Z'));
    }
}
