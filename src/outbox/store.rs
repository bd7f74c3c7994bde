//! Outbox tables in the embedded store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::mail::job::OutboxJob;
use crate::mail::{hex, now_ms};
use crate::store::{JobSink, Store, StoreError};
use crate::sync::Locked;

/// Pending jobs: id → JSON of [`OutboxJob`].
pub const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox_jobs");
/// Jobs with more than [`SPLIT_BATCH`] targets ([`OutboxJob::fan_out`]) not yet split into
/// [`JOBS`]: id → JSON of [`OutboxJob`]. The transaction that releases a mail stores its
/// invitation to a thousand recipients as one row here; [`split_fan_out`] then moves the
/// targets to [`JOBS`] a batch at a time.
pub const FAN_OUT: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox_fan_out");

/// How many targets of a [`FAN_OUT`] row one transaction turns into jobs.
const SPLIT_BATCH: usize = 64;
/// Dead letters: id → JSON of [`OutboxJob`] with `last_error` set.
pub const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox_dead");
/// Counters (`job_seq`).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("outbox_meta");
/// Texts several jobs share ([`OutboxJob::shared`]): SHA-256 → text, stored once.
pub const SHARED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("outbox_shared");
/// How many jobs (pending or dead) refer to each shared text: SHA-256 → count.
pub const SHARED_REFS: TableDefinition<&[u8], u64> = TableDefinition::new("outbox_shared_refs");

/// Stores `job.shared` in [`SHARED`] (once per text: `known` remembers the texts of this
/// transaction by address, so a thousand jobs sharing one calendar hash it once) and
/// leaves its key in `job.shared_ref`.
fn share_text(
    txn: &WriteTransaction,
    job: &mut OutboxJob,
    known: &mut Vec<(Arc<str>, String)>,
) -> Result<(), redb::Error> {
    let Some(text) = job.shared.take() else {
        return Ok(());
    };
    let key = match known.iter().find(|(t, _)| Arc::ptr_eq(t, &text)) {
        Some((_, key)) => key.clone(),
        None => {
            let key = hex(&Sha256::digest(text.as_bytes()));
            known.push((text.clone(), key.clone()));
            key
        }
    };
    let refs = txn.open_table(SHARED_REFS)?;
    let count = refs.get(key.as_bytes())?.map_or(0, |v| v.value());
    drop(refs);
    if count == 0 {
        txn.open_table(SHARED)?
            .insert(key.as_bytes(), text.as_bytes())?;
    }
    add_ref(txn, &key)?;
    job.shared_ref = Some(key);
    Ok(())
}

/// One more job refers to the shared text under `key`.
fn add_ref(txn: &WriteTransaction, key: &str) -> Result<(), redb::Error> {
    let mut refs = txn.open_table(SHARED_REFS)?;
    let count = refs.get(key.as_bytes())?.map_or(0, |v| v.value());
    refs.insert(key.as_bytes(), count + 1)?;
    Ok(())
}

/// A job removed for good no longer holds its shared text; the last one deletes it.
fn release_text(txn: &WriteTransaction, removed: &[u8]) -> Result<(), redb::Error> {
    let Some(key) = decode(removed).and_then(|j| j.shared_ref) else {
        return Ok(());
    };
    let mut refs = txn.open_table(SHARED_REFS)?;
    let count = refs.get(key.as_bytes())?.map_or(0, |v| v.value());
    if count <= 1 {
        refs.remove(key.as_bytes())?;
        txn.open_table(SHARED)?.remove(key.as_bytes())?;
    } else {
        refs.insert(key.as_bytes(), count - 1)?;
    }
    Ok(())
}

/// Puts a read job's shared text back in `job.shared`.
fn resolve_text(read: &redb::ReadTransaction, job: &mut OutboxJob) -> Result<(), StoreError> {
    let Some(key) = &job.shared_ref else {
        return Ok(());
    };
    let table = read.open_table(SHARED).map_err(StoreError::from)?;
    // jobs in flight at once (a thousand recipients of one invitation) share one copy
    let mut live = live_texts().locked();
    live.retain(|_, text| text.strong_count() > 0);
    if let Some(text) = live.get(key).and_then(Weak::upgrade) {
        job.shared = Some(text);
        return Ok(());
    }
    let text: Option<Arc<str>> = table
        .get(key.as_bytes())
        .map_err(StoreError::from)?
        .map(|v| String::from_utf8_lossy(v.value()).into());
    if let Some(text) = &text {
        live.insert(key.clone(), Arc::downgrade(text));
    }
    job.shared = text;
    Ok(())
}

/// Shared texts that jobs being delivered hold, by key.
fn live_texts() -> &'static Mutex<HashMap<String, Weak<str>>> {
    static LIVE: OnceLock<Mutex<HashMap<String, Weak<str>>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

/// Stores new jobs inside a spool transaction (the one that completes their mail).
pub fn insert_jobs(txn: &WriteTransaction, jobs: Vec<OutboxJob>) -> Result<(), redb::Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut meta = txn.open_table(META)?;
    let mut seq = meta.get("job_seq")?.map(|v| v.value()).unwrap_or(0);
    let mut table = txn.open_table(JOBS)?;
    let now = now_ms();
    let mut known = Vec::new();
    // a few targets become jobs at once (a row to split later would cost a transaction
    // more); a job with one target, nearly every job, goes through as it is
    let mut each = Vec::with_capacity(jobs.len());
    for job in jobs {
        match job.fan_out.len() {
            more if (1..SPLIT_BATCH).contains(&more) => each.extend(job.into_each()),
            _ => each.push(job),
        }
    }
    for mut job in each {
        if job.first_seen_ms == 0 {
            job.first_seen_ms = now;
        }
        if job.next_attempt_ms == 0 {
            job.next_attempt_ms = now;
        }
        if !job.fan_out.is_empty() {
            // deduplicated target by target when split (the key is the mail's until then)
            seq += 1;
            job.id = seq;
            share_text(txn, &mut job, &mut known)?;
            txn.open_table(FAN_OUT)?
                .insert(seq, encode(&job).as_slice())?;
            continue;
        }
        if super::dedup::is_duplicate(txn, &job)? {
            tracing::info!(mail = %job.mail_name, kind = %job.kind, target = %job.target, "outbox: same job from the same mail stored within the dedup window (mirrored twice); dropped");
            continue;
        }
        job.dedup = None;
        seq += 1;
        job.id = seq;
        if job.shared.is_some() {
            share_text(txn, &mut job, &mut known)?;
        } else if let Some(key) = &job.shared_ref {
            // a target of a fan-out row: one more job refers to the row's text
            add_ref(txn, key)?;
        }
        table.insert(seq, encode(&job).as_slice())?;
    }
    meta.insert("job_seq", seq)?;
    Ok(())
}

/// Turns the first targets of the oldest [`FAN_OUT`] row into jobs (at most
/// [`SPLIT_BATCH`] per transaction, so a thousand recipients never sit in one); returns
/// whether rows are left. A crash between two transactions leaves the row with the targets
/// not yet split, and the next call goes on from there.
pub async fn split_fan_out(store: &Store) -> Result<bool, StoreError> {
    // a read first: the delivery loop asks at every turn, and nearly always for nothing
    if rows(store, FAN_OUT)? == 0 {
        return Ok(false);
    }
    let more = store
        .write(|txn| {
            let mut fan_out = txn.open_table(FAN_OUT)?;
            let first = fan_out
                .first()?
                .map(|(id, bytes)| (id.value(), bytes.value().to_vec()));
            let Some((id, bytes)) = first else {
                return Ok(false);
            };
            let Some(job) = decode(&bytes) else {
                tracing::error!(
                    row = id,
                    "outbox: a fan-out row cannot be read; moved to the dead letters"
                );
                fan_out.remove(id)?;
                txn.open_table(DEAD)?.insert(id, bytes.as_slice())?;
                return Ok(true);
            };
            let (jobs, left) = job.take_targets(SPLIT_BATCH);
            drop(fan_out);
            insert_jobs(txn, jobs)?;
            let mut fan_out = txn.open_table(FAN_OUT)?;
            match left {
                Some(left) => {
                    fan_out.insert(id, encode(&left).as_slice())?;
                }
                None => {
                    fan_out.remove(id)?;
                    release_text(txn, &bytes)?;
                }
            }
            Ok(fan_out.len()? > 0)
        })
        .await?;
    jobs_added();
    Ok(more)
}

/// Wakes delivery workers when jobs were added.
pub fn jobs_added() {
    job_notify().notify_waiters();
}

/// The notifier delivery workers wait on.
pub fn job_notify() -> &'static Notify {
    static NOTIFY: OnceLock<Notify> = OnceLock::new();
    NOTIFY.get_or_init(Notify::new)
}

/// The outbox as the embedded spool's [`JobSink`].
pub struct OutboxSink;

impl OutboxSink {
    /// The sink to open an embedded spool with.
    pub fn shared() -> Arc<dyn JobSink> {
        Arc::new(OutboxSink)
    }
}

impl JobSink for OutboxSink {
    fn insert(&self, txn: &WriteTransaction, jobs: Vec<OutboxJob>) -> Result<(), redb::Error> {
        insert_jobs(txn, jobs)
    }

    fn added(&self) {
        jobs_added();
    }
}

/// Which table a listed job is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for its (next) attempt.
    Pending,
    /// Given up: a permanent failure or too old.
    Dead,
}

fn decode(bytes: &[u8]) -> Option<OutboxJob> {
    serde_json::from_slice(bytes).ok()
}

/// A job's row: its shared text stays in [`SHARED`], under `shared_ref`.
fn encode(job: &OutboxJob) -> Vec<u8> {
    if job.shared.is_some() && job.shared_ref.is_some() {
        let row = OutboxJob {
            shared: None,
            ..job.clone()
        };
        return serde_json::to_vec(&row).expect("jobs serialise");
    }
    serde_json::to_vec(job).expect("jobs serialise")
}

/// A table of `read`, or `None` when no transaction has created it yet.
fn open_read(
    read: &redb::ReadTransaction,
    table: TableDefinition<'static, u64, &'static [u8]>,
) -> Result<Option<redb::ReadOnlyTable<u64, &'static [u8]>>, StoreError> {
    match read.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(StoreError::from(e)),
    }
}

/// How many rows `table` holds (0 before its first write).
pub fn rows(
    store: &Store,
    table: TableDefinition<'static, u64, &'static [u8]>,
) -> Result<u64, StoreError> {
    match open_read(&store.read()?, table)? {
        Some(t) => t.len().map_err(StoreError::from),
        None => Ok(0),
    }
}

/// Ids and due times of pending jobs with an id above `after` (new jobs have growing ids).
pub fn pending_since(store: &Store, after: u64) -> Result<Vec<(u64, u64)>, StoreError> {
    let Some(table) = open_read(&store.read()?, JOBS)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in table
        .range(after.saturating_add(1)..)
        .map_err(StoreError::from)?
    {
        let (id, bytes) = entry.map_err(StoreError::from)?;
        let due = decode(bytes.value()).map_or(0, |j| j.next_attempt_ms);
        out.push((id.value(), due));
    }
    Ok(out)
}

/// One pending job.
pub fn pending_job(store: &Store, id: u64) -> Result<Option<OutboxJob>, StoreError> {
    let read = store.read()?;
    let Some(table) = open_read(&read, JOBS)? else {
        return Ok(None);
    };
    let value = table.get(id).map_err(StoreError::from)?;
    let Some(mut job) = value.and_then(|v| decode(v.value())) else {
        return Ok(None);
    };
    job.id = id;
    resolve_text(&read, &mut job)?;
    Ok(Some(job))
}

/// Every job of `state`, in id order (pending: the jobs, then the rows with targets not
/// split yet, each one job with its [`OutboxJob::fan_out`]).
pub fn list(store: &Store, state: JobState) -> Result<Vec<OutboxJob>, StoreError> {
    let read = store.read()?;
    let tables: &[_] = match state {
        JobState::Pending => &[JOBS, FAN_OUT],
        JobState::Dead => &[DEAD],
    };
    let mut out = Vec::new();
    for &definition in tables {
        let Some(table) = open_read(&read, definition)? else {
            continue;
        };
        for entry in table.iter().map_err(StoreError::from)? {
            let (id, bytes) = entry.map_err(StoreError::from)?;
            if let Some(mut job) = decode(bytes.value()) {
                // not the shared text: a listing shows jobs, and a thousand may share it
                job.id = id.value();
                out.push(job);
            }
        }
    }
    Ok(out)
}

/// How many targets wait in pending jobs and in rows not split yet.
pub fn pending_targets(store: &Store) -> Result<u64, StoreError> {
    let read = store.read()?;
    let mut count = match open_read(&read, JOBS)? {
        Some(t) => t.len().map_err(StoreError::from)?,
        None => 0,
    };
    if let Some(table) = open_read(&read, FAN_OUT)? {
        for entry in table.iter().map_err(StoreError::from)? {
            let (_, bytes) = entry.map_err(StoreError::from)?;
            count += decode(bytes.value()).map_or(0, |j| j.target_count() as u64);
        }
    }
    Ok(count)
}

/// The job was delivered: forget it.
pub async fn done(store: &Store, id: u64) -> Result<(), StoreError> {
    store
        .write(move |txn| {
            let removed = txn
                .open_table(JOBS)?
                .remove(id)?
                .map(|v| v.value().to_vec());
            if let Some(removed) = removed {
                release_text(txn, &removed)?;
            }
            Ok(())
        })
        .await
}

/// Records a failed attempt and when to try again.
pub async fn reschedule(
    store: &Store,
    mut job: OutboxJob,
    next_attempt_ms: u64,
    error: String,
) -> Result<(), StoreError> {
    job.next_attempt_ms = next_attempt_ms;
    job.last_error = Some(error);
    store
        .write(move |txn| {
            let mut table = txn.open_table(JOBS)?;
            // a purge may have removed it meanwhile: do not bring it back
            if table.get(job.id)?.is_some() {
                table.insert(job.id, encode(&job).as_slice())?;
            }
            Ok(())
        })
        .await
}

/// Moves a job to the dead letters with `reason`.
pub async fn dead_letter(
    store: &Store,
    mut job: OutboxJob,
    reason: String,
) -> Result<(), StoreError> {
    job.last_error = Some(reason);
    store
        .write(move |txn| {
            txn.open_table(JOBS)?.remove(job.id)?;
            txn.open_table(DEAD)?
                .insert(job.id, encode(&job).as_slice())?;
            Ok(())
        })
        .await
}

/// Puts dead letters back in the queue, due now with a fresh age and attempt count
/// (all of them when `ids` is empty). Returns how many were requeued.
pub async fn retry(store: &Store, ids: Vec<u64>) -> Result<usize, StoreError> {
    let count = store
        .write(move |txn| {
            let mut dead = txn.open_table(DEAD)?;
            let mut jobs = txn.open_table(JOBS)?;
            let selected: Vec<u64> = if ids.is_empty() {
                dead.iter()?
                    .filter_map(Result::ok)
                    .map(|(k, _)| k.value())
                    .collect()
            } else {
                ids
            };
            let now = now_ms();
            let mut count = 0;
            for id in selected {
                let Some(bytes) = dead.remove(id)?.map(|v| v.value().to_vec()) else {
                    continue;
                };
                let Some(mut job) = decode(&bytes) else {
                    dead.insert(id, bytes.as_slice())?;
                    continue;
                };
                job.id = id;
                job.attempts = 0;
                job.first_seen_ms = now;
                job.next_attempt_ms = now;
                jobs.insert(id, encode(&job).as_slice())?;
                count += 1;
            }
            Ok(count)
        })
        .await?;
    jobs_added();
    Ok(count)
}

/// Deletes jobs of `state` (all of them when `ids` is empty). Returns how many.
pub async fn purge(store: &Store, state: JobState, ids: Vec<u64>) -> Result<usize, StoreError> {
    store
        .write(move |txn| {
            // pending: the jobs and the rows of many targets not split yet
            let tables: &[_] = match state {
                JobState::Pending => &[JOBS, FAN_OUT],
                JobState::Dead => &[DEAD],
            };
            let mut count = 0;
            for &definition in tables {
                let mut table = txn.open_table(definition)?;
                let selected: Vec<u64> = if ids.is_empty() {
                    table
                        .iter()?
                        .filter_map(Result::ok)
                        .map(|(k, _)| k.value())
                        .collect()
                } else {
                    ids.clone()
                };
                for id in selected {
                    let removed = table.remove(id)?.map(|v| v.value().to_vec());
                    if let Some(removed) = removed {
                        release_text(txn, &removed)?;
                        count += decode(&removed).map_or(1, |j| j.target_count());
                    }
                }
            }
            Ok(count)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_count(store: &Store) -> usize {
        let read = store.read().unwrap();
        match read.open_table(SHARED) {
            Ok(t) => t.iter().unwrap().count(),
            Err(_) => 0,
        }
    }

    #[tokio::test]
    async fn a_text_shared_by_jobs_is_stored_once_and_deleted_with_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let ics: Arc<str> = Arc::from("BEGIN:VCALENDAR\r\n".repeat(1000));
        let jobs: Vec<OutboxJob> = (0..3)
            .map(|i| {
                let mut job = OutboxJob::new("k", format!("r{i}"), serde_json::json!({}));
                job.shared = Some(ics.clone());
                job
            })
            .collect();
        store.write(move |t| insert_jobs(t, jobs)).await.unwrap();
        assert_eq!(shared_count(&store), 1);
        let listed = list(&store, JobState::Pending).unwrap();
        assert_eq!(listed.len(), 3);
        let job = pending_job(&store, listed[0].id).unwrap().unwrap();
        assert_eq!(job.shared.as_deref(), Some(&*ics));
        // a rescheduled job keeps its reference, not a copy of the text
        reschedule(&store, job, 0, "later".into()).await.unwrap();
        dead_letter(&store, listed[1].clone(), "no".into())
            .await
            .unwrap();
        done(&store, listed[0].id).await.unwrap();
        done(&store, listed[2].id).await.unwrap();
        assert_eq!(shared_count(&store), 1, "the dead letter still holds it");
        let job = &list(&store, JobState::Dead).unwrap()[0];
        assert!(job.shared.is_none() && job.shared_ref.is_some());
        purge(&store, JobState::Dead, vec![]).await.unwrap();
        assert_eq!(shared_count(&store), 0);
    }

    /// One invitation's job for `n` recipients, as CalDavCollect makes it.
    fn invitation(n: usize, ics: &Arc<str>) -> OutboxJob {
        let one = |i: usize| {
            let mut job = OutboxJob::new("esn-itip", format!("r{i}@x"), serde_json::json!({}));
            job.shared = Some(ics.clone());
            job
        };
        let mut fan = one(0);
        for i in 1..n {
            assert!(fan.absorb(&one(i)));
        }
        fan
    }

    #[tokio::test]
    async fn a_job_for_many_targets_is_one_row_until_split_a_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let ics: Arc<str> = Arc::from("BEGIN:VCALENDAR\r\n".repeat(1000));
        {
            let store = Store::open(&path).unwrap();
            let fan = invitation(150, &ics);
            store
                .write(move |t| insert_jobs(t, vec![fan]))
                .await
                .unwrap();
            // what the transaction that releases the mail wrote
            assert_eq!(rows(&store, FAN_OUT).unwrap(), 1);
            assert_eq!(rows(&store, JOBS).unwrap(), 0);
            assert_eq!(pending_targets(&store).unwrap(), 150);
            assert!(split_fan_out(&store).await.unwrap(), "more to split");
            assert_eq!(rows(&store, JOBS).unwrap(), SPLIT_BATCH as u64);
            assert_eq!(pending_targets(&store).unwrap(), 150);
        } // killed between two batches
        let store = Store::open(&path).unwrap();
        while split_fan_out(&store).await.unwrap() {}
        assert_eq!(rows(&store, FAN_OUT).unwrap(), 0);
        let mut targets: Vec<String> = list(&store, JobState::Pending)
            .unwrap()
            .into_iter()
            .map(|j| j.target)
            .collect();
        targets.sort();
        let mut want: Vec<String> = (0..150).map(|i| format!("r{i}@x")).collect();
        want.sort();
        assert_eq!(targets, want, "each target once, none lost at the restart");
        let job = pending_job(&store, 2).unwrap().unwrap();
        assert_eq!(job.shared.as_deref(), Some(&*ics));
        assert_eq!(shared_count(&store), 1);
        for job in list(&store, JobState::Pending).unwrap() {
            done(&store, job.id).await.unwrap();
        }
        assert_eq!(
            shared_count(&store),
            0,
            "the last job took the text with it"
        );
    }

    #[tokio::test]
    async fn a_job_for_a_few_targets_is_stored_as_their_jobs_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let fan = invitation(SPLIT_BATCH, &Arc::from("BEGIN:VCALENDAR"));
        store
            .write(move |t| insert_jobs(t, vec![fan]))
            .await
            .unwrap();
        assert_eq!(rows(&store, FAN_OUT).unwrap(), 0);
        assert_eq!(rows(&store, JOBS).unwrap(), SPLIT_BATCH as u64);
        assert_eq!(shared_count(&store), 1);
    }

    #[tokio::test]
    async fn purging_pending_jobs_takes_the_rows_not_split_yet_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let fan = invitation(100, &Arc::from("BEGIN:VCALENDAR"));
        store
            .write(move |t| insert_jobs(t, vec![fan]))
            .await
            .unwrap();
        assert!(split_fan_out(&store).await.unwrap());
        assert_eq!(purge(&store, JobState::Pending, vec![]).await.unwrap(), 100);
        assert_eq!(pending_targets(&store).unwrap(), 0);
        assert_eq!(shared_count(&store), 0);
    }

    #[tokio::test]
    async fn the_targets_of_a_mail_mirrored_twice_get_one_job_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let ics: Arc<str> = Arc::from("BEGIN:VCALENDAR");
        // the outgoing copy to 100 recipients, and the incoming copy to the first 70
        let mut outgoing = vec![invitation(100, &ics)];
        let mut incoming = vec![invitation(70, &ics)];
        crate::mail::job::stamp(Some([1; 32]), &mut outgoing, 60_000);
        crate::mail::job::stamp(Some([1; 32]), &mut incoming, 60_000);
        store
            .write(move |t| insert_jobs(t, outgoing))
            .await
            .unwrap();
        store
            .write(move |t| insert_jobs(t, incoming))
            .await
            .unwrap();
        while split_fan_out(&store).await.unwrap() {}
        assert_eq!(list(&store, JobState::Pending).unwrap().len(), 100);
    }
}
