//! Contacts already in an owner's collected address book, remembered across restarts so
//! that a user who writes to the same people all day costs one DAV request per person,
//! not one per mail (tmail sends a GET for every recipient of every mail).
//!
//! Two tables in the spool's redb file: pair → sequence, and sequence → pair. The second
//! gives the insertion order, so the oldest pairs are evicted first once `max` is reached.
//! A pair is refreshed (moved to the newest end) each time a handler sees it exist again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableError};

use crate::store::{Store, StoreError};

/// Known pairs: `kind \0 owner \0 contact` → sequence number.
const KNOWN: TableDefinition<&str, u64> = TableDefinition::new("known_contacts");
/// Eviction order: sequence number → `kind \0 owner \0 contact`.
const ORDER: TableDefinition<u64, &str> = TableDefinition::new("known_contacts_order");

/// The bounded, persistent set of (owner, contact) pairs known to exist on the DAV server.
/// Without a store (`mailetd check`, dry runs) nothing is remembered.
#[derive(Clone)]
pub struct KnownContacts {
    store: Option<Arc<Store>>,
    max: usize,
}

impl std::fmt::Debug for KnownContacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownContacts")
            .field("persistent", &self.store.is_some())
            .field("max", &self.max)
            .finish()
    }
}

/// Local parts are compared case-insensitively: `ZOE@x` written after `zoe@x` is the same
/// mailbox in practice, and must not become a near-duplicate card.
fn key(kind: &str, owner: &str, contact: &str) -> String {
    format!(
        "{kind}\0{}\0{}",
        owner.to_lowercase(),
        contact.to_lowercase()
    )
}

impl KnownContacts {
    /// A set kept in `store`, holding at most `max` pairs (at least one).
    pub fn new(store: Option<Arc<Store>>, max: usize) -> Self {
        KnownContacts {
            store,
            max: max.max(1),
        }
    }

    /// For each of `contacts`, whether (owner, contact) is known for job kind `kind`.
    /// A store that cannot be read counts as "not known": the DAV server is then asked.
    pub fn known(&self, kind: &str, owner: &str, contacts: &[&str]) -> Vec<bool> {
        let answers = self.lookup(kind, owner, contacts);
        crate::observe::Metrics::process().known_contacts(&answers);
        answers
    }

    fn lookup(&self, kind: &str, owner: &str, contacts: &[&str]) -> Vec<bool> {
        let none = || vec![false; contacts.len()];
        let Some(store) = &self.store else {
            return none();
        };
        let Ok(txn) = store.read() else {
            return none();
        };
        let table = match txn.open_table(KNOWN) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return none(),
            Err(e) => {
                tracing::warn!(error = %e, "known-contacts cache unreadable; asking the DAV server");
                return none();
            }
        };
        contacts
            .iter()
            .map(|c| matches!(table.get(key(kind, owner, c).as_str()), Ok(Some(_))))
            .collect()
    }

    /// Records that (owner, contact) exists, evicting the oldest pairs beyond the bound.
    pub async fn remember(&self, kind: &str, owner: &str, contact: &str) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let k = key(kind, owner, contact);
        let max = self.max as u64;
        store
            .write(move |txn| {
                let mut known = txn.open_table(KNOWN)?;
                let mut order = txn.open_table(ORDER)?;
                let next = order.last()?.map(|(s, _)| s.value() + 1).unwrap_or(1);
                let previous = known.insert(k.as_str(), next)?.map(|v| v.value());
                if let Some(previous) = previous {
                    order.remove(previous)?;
                }
                order.insert(next, k.as_str())?;
                while known.len()? > max {
                    let Some(oldest) = order.pop_first()?.map(|(_, v)| v.value().to_string())
                    else {
                        break;
                    };
                    known.remove(oldest.as_str())?;
                }
                Ok(())
            })
            .await
    }

    /// How many pairs are remembered.
    pub fn len(&self) -> usize {
        let Some(store) = &self.store else {
            return 0;
        };
        store
            .read()
            .ok()
            .and_then(|txn| txn.open_table(KNOWN).ok())
            .and_then(|t| t.len().ok())
            .unwrap_or(0) as usize
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Pairs queued within the last `ttl`, in memory only: the mirrored copy of a mail, or
/// a burst of mails to the same person arriving before the first job is delivered, queue
/// nothing more. After `ttl` a pair is queued again (its job may have been dead-lettered).
pub struct RecentlyQueued {
    ttl: Duration,
    max: usize,
    marks: Mutex<HashMap<String, Instant>>,
}

impl RecentlyQueued {
    /// At most `max` pairs remembered for `ttl` each.
    pub fn new(ttl: Duration, max: usize) -> Self {
        RecentlyQueued {
            ttl,
            max: max.max(1),
            marks: Mutex::new(HashMap::new()),
        }
    }

    /// Marks the pair; `false` when it was already queued within `ttl`.
    pub fn mark(&self, kind: &str, owner: &str, contact: &str) -> bool {
        let now = Instant::now();
        let mut marks = self.marks.lock().expect("not poisoned");
        let k = key(kind, owner, contact);
        if marks
            .get(&k)
            .is_some_and(|t| now.duration_since(*t) < self.ttl)
        {
            return false;
        }
        if marks.len() >= self.max {
            marks.retain(|_, t| now.duration_since(*t) < self.ttl);
            if marks.len() >= self.max {
                // Every mark is fresh: forgetting them only costs 412s, never a contact.
                marks.clear();
            }
        }
        marks.insert(k, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recently_queued_pairs_are_not_queued_again_until_the_ttl() {
        let q = RecentlyQueued::new(Duration::from_secs(600), 10);
        assert!(q.mark("k", "a@x", "b@y"));
        assert!(!q.mark("k", "A@x", "B@y"));
        assert!(q.mark("k", "a@x", "c@y"));
        let expired = RecentlyQueued::new(Duration::ZERO, 10);
        assert!(expired.mark("k", "a@x", "b@y"));
        assert!(expired.mark("k", "a@x", "b@y"));
    }

    #[tokio::test]
    async fn remembers_across_reopen_and_evicts_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.redb");
        {
            let known = KnownContacts::new(Some(Store::open(&path).unwrap()), 2);
            assert_eq!(known.known("k", "a@x", &["b@y"]), vec![false]);
            known.remember("k", "a@x", "b@y").await.unwrap();
            known.remember("k", "a@x", "c@y").await.unwrap();
            // refreshing b makes c the oldest
            known.remember("k", "a@x", "b@y").await.unwrap();
            known.remember("k", "a@x", "d@y").await.unwrap();
            assert_eq!(known.len(), 2);
        }
        let known = KnownContacts::new(Some(Store::open(&path).unwrap()), 2);
        assert_eq!(
            known.known("k", "a@x", &["b@y", "c@y", "d@y"]),
            vec![true, false, true]
        );
        assert_eq!(known.known("other", "a@x", &["b@y"]), vec![false]);
    }
}
