//! Mirrored-twice deduplication: an internal mail reaches mailetd twice, once as the
//! outgoing copy (all envelope recipients) and once as the incoming copy (only the local
//! ones, often with extra `Received:` headers). Both produce the same DAV jobs; only the
//! first may reach the outbox.
//!
//! What identifies "the same mail": the Message-ID, the envelope sender (lowercased) and a
//! SHA-256 of the body (the bytes after the header block, which relays do not touch while
//! they do add headers). The envelope *recipients* are deliberately not part of it: the two
//! copies differ there by design. Instead the key is taken per job: `(mail key, job kind,
//! target, payload)`. A job is about one recipient (an iTIP) or one owner/contact pair, so
//! the incoming copy's jobs are a subset of the outgoing copy's, and each of them is dropped
//! exactly when the same job from the same mail was stored within the window. A mail
//! without a Message-ID is never deduplicated: nothing reliable tells two such mails apart.
//!
//! Why at outbox insert time, in the transaction that releases the mail: the check and the
//! insert are atomic with the job insert, so two copies processed at once by two spooler
//! threads (or committed in the same group commit) cannot both pass, and the keys live in
//! the same redb file, so they survive a restart or a kill -9. Filtering earlier (before
//! running the container) would need the recipients to match, which they do not.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::mail::job::OutboxJob;
use crate::mail::now_ms;

/// Dedup keys: SHA-256 of (mail key, job) → expiry (ms since epoch).
pub const KEYS: TableDefinition<&[u8], u64> = TableDefinition::new("outbox_dedup");
/// The same keys by expiry, so expired ones are pruned without a scan.
pub const EXPIRY: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("outbox_dedup_expiry");

/// Largest number of expired keys removed per insert (bounds the work of one commit).
const PRUNE_BATCH: usize = 256;

/// Inside the insert transaction: `true` when `job` duplicates one stored within its window
/// (drop it); otherwise records its key and returns `false`. Also prunes expired keys.
pub fn is_duplicate(txn: &WriteTransaction, job: &OutboxJob) -> Result<bool, redb::Error> {
    let Some(dedup) = &job.dedup else {
        return Ok(false);
    };
    let now = now_ms();
    let mut keys = txn.open_table(KEYS)?;
    let mut expiry = txn.open_table(EXPIRY)?;
    let expired: Vec<(u64, Vec<u8>)> = expiry
        .range::<(u64, &[u8])>(..(now, &[][..]))?
        .take(PRUNE_BATCH)
        .filter_map(Result::ok)
        .map(|(k, _)| {
            let (at, key) = k.value();
            (at, key.to_vec())
        })
        .collect();
    for (at, key) in expired {
        expiry.remove((at, key.as_slice()))?;
        if keys.get(key.as_slice())?.map(|v| v.value()) == Some(at) {
            keys.remove(key.as_slice())?;
        }
    }
    let key = dedup.key.as_bytes();
    if let Some(until) = keys.get(key)?.map(|v| v.value())
        && until > now
    {
        return Ok(true);
    }
    keys.insert(key, dedup.until_ms)?;
    expiry.insert((dedup.until_ms, key), ())?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::job::{mail_key, stamp};
    use crate::mail::{Mail, MailAddress};
    use crate::outbox::store::{JobState, insert_jobs, list};
    use crate::store::Store;

    fn mail(headers: &str, rcpts: &[&str], body: &str) -> Mail {
        Mail::new(
            Some(MailAddress::parse("Alice@example.org").unwrap()),
            rcpts
                .iter()
                .map(|r| MailAddress::parse(r).unwrap())
                .collect(),
            format!("{headers}Message-ID: <m1@example.org>\r\nSubject: s\r\n\r\n{body}")
                .into_bytes(),
        )
    }

    fn jobs(rcpts: &[&str]) -> Vec<OutboxJob> {
        rcpts
            .iter()
            .map(|r| OutboxJob::new("esn-itip", *r, serde_json::json!({"recipient": r})))
            .collect()
    }

    async fn insert(store: &Store, mail: &Mail, mut jobs: Vec<OutboxJob>, window_ms: u64) {
        stamp(mail_key(mail), &mut jobs, window_ms);
        store.write(move |t| insert_jobs(t, jobs)).await.unwrap();
    }

    fn pending_targets(store: &Store) -> Vec<String> {
        list(store, JobState::Pending)
            .unwrap()
            .into_iter()
            .map(|j| j.target)
            .collect()
    }

    #[tokio::test]
    async fn incoming_copy_of_a_mirrored_mail_adds_only_what_the_outgoing_copy_did_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let outgoing = mail("", &["bob@example.org", "x@partner.example"], "hello");
        let incoming = mail(
            "Received: from mx by mirror; Sun, 22 Nov 2026\r\n",
            &["bob@example.org"],
            "hello",
        );
        assert_eq!(mail_key(&outgoing), mail_key(&incoming));
        {
            let store = Store::open(&path).unwrap();
            insert(&store, &outgoing, jobs(&["bob@example.org"]), 600_000).await;
        }
        // after a restart, the incoming copy's job is recognised; a new recipient is not
        let store = Store::open(&path).unwrap();
        insert(
            &store,
            &incoming,
            jobs(&["bob@example.org", "carol@example.org"]),
            600_000,
        )
        .await;
        assert_eq!(
            pending_targets(&store),
            vec!["bob@example.org", "carol@example.org"]
        );
    }

    #[tokio::test]
    async fn a_different_body_sender_or_message_id_is_another_mail() {
        let a = mail("", &["bob@example.org"], "hello");
        let b = mail("", &["bob@example.org"], "hello again");
        assert_ne!(mail_key(&a), mail_key(&b));
        let mut c = a.clone();
        c.sender = Some(MailAddress::parse("eve@example.org").unwrap());
        assert_ne!(mail_key(&a), mail_key(&c));
        let mut d = a.clone();
        d.message = b"Message-ID: <other@example.org>\r\n\r\nhello".to_vec();
        assert_ne!(mail_key(&a), mail_key(&d));
        let mut no_id = a.clone();
        no_id.message = b"Subject: s\r\n\r\nhello".to_vec();
        assert_eq!(mail_key(&no_id), None);

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        insert(&store, &a, jobs(&["bob@example.org"]), 600_000).await;
        insert(&store, &b, jobs(&["bob@example.org"]), 600_000).await;
        insert(&store, &no_id, jobs(&["bob@example.org"]), 600_000).await;
        insert(&store, &no_id, jobs(&["bob@example.org"]), 600_000).await;
        assert_eq!(pending_targets(&store).len(), 4);
    }

    #[tokio::test]
    async fn window_zero_disables_and_an_expired_key_lets_the_job_through() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let m = mail("", &["bob@example.org"], "hello");
        insert(&store, &m, jobs(&["bob@example.org"]), 0).await;
        insert(&store, &m, jobs(&["bob@example.org"]), 0).await;
        assert_eq!(pending_targets(&store).len(), 2);

        insert(&store, &m, jobs(&["bob@example.org"]), 1).await;
        std::thread::sleep(std::time::Duration::from_millis(5));
        insert(&store, &m, jobs(&["bob@example.org"]), 600_000).await;
        assert_eq!(pending_targets(&store).len(), 4);
        insert(&store, &m, jobs(&["bob@example.org"]), 600_000).await;
        assert_eq!(pending_targets(&store).len(), 4, "within the window");
        let read = store.read().unwrap();
        let expiry = read.open_table(EXPIRY).unwrap();
        assert_eq!(
            redb::ReadableTableMetadata::len(&expiry).unwrap(),
            1,
            "the expired key was pruned"
        );
    }
}
