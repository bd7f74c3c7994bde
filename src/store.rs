//! The embedded durable store: one redb file, one writer thread that commits whatever
//! operations queued up while the previous fsync ran (group commit), so concurrent SMTP
//! sessions share fsyncs.
//!
//! After an I/O error (disk full, EIO) redb refuses every later operation with
//! `PreviousIo` until the database is reopened; the writer reopens it before the next batch,
//! so the service resumes by itself once space returns. A failed commit leaves the file as
//! of the previous commit, which is what reopening reads.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

use crate::mail::job::OutboxJob;
use crate::sync::LockedRw;

/// Failure of the store (I/O error, disk full, corrupt file). Cloneable because one commit's
/// outcome goes to every operation of its batch; the sources are shared, not flattened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// redb refused or failed an operation.
    #[error("{0}")]
    Database(#[source] Arc<redb::Error>),
    /// The file could not be opened or created.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The store file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<redb::DatabaseError>,
    },
    /// The directory of the file could not be created.
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The writer thread could not be started.
    #[error("cannot start the store writer: {0}")]
    StartWriter(#[source] Arc<std::io::Error>),
    /// The writer thread is gone (the store is closing).
    #[error("the store writer has stopped")]
    WriterStopped,
    /// The file is being reopened after an I/O error; the next attempt may succeed.
    #[error("{} is being reopened after an I/O error", .0.display())]
    Reopening(PathBuf),
}

/// Every redb error type becomes [`StoreError::Database`] with `?`.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(Arc::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What an operation hands back after running inside the transaction: called with the
/// commit's outcome, so nothing is reported durable before it is.
pub type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Operation = Box<dyn FnOnce(&WriteTransaction) -> Result<Completion, redb::Error> + Send>;

/// The database, `None` while it is being reopened after an I/O error.
type SharedDb = Arc<RwLock<Option<Database>>>;

/// The single-file store shared by the spool and the outbox.
pub struct Store {
    db: SharedDb,
    path: PathBuf,
    ops: Option<mpsc::Sender<Operation>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// redb's page cache. Its default (1 GiB) keeps every page the process wrote or read: an
/// invitation's calendar shared by its outbox jobs stayed in memory after its jobs were
/// done, and grew the peak by the store's size. The kernel's page cache still holds the
/// file; this only bounds the copy inside the process.
const CACHE_BYTES: usize = 4 << 20;

/// Largest number of operations committed in one transaction.
const MAX_BATCH: usize = 512;

impl Store {
    /// Opens (or creates) `path` and starts the writer thread.
    pub fn open(path: &Path) -> Result<Arc<Store>, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::CreateDir {
                path: parent.to_path_buf(),
                source: Arc::new(e),
            })?;
        }
        let db = Arc::new(RwLock::new(Some(create(path)?)));
        let (ops, rx) = mpsc::channel::<Operation>();
        let writer_db = db.clone();
        let writer_path = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&writer_db, &writer_path, rx))
            .map_err(|e| StoreError::StartWriter(Arc::new(e)))?;
        Ok(Arc::new(Store {
            db,
            path: path.to_path_buf(),
            ops: Some(ops),
            writer: Some(writer),
        }))
    }

    /// The file backing the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `op` in a write transaction shared with other concurrent operations, and
    /// returns its result once the transaction is durably committed.
    pub async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let operation: Operation = Box::new(move |txn| {
            let value = op(txn)?;
            Ok(Box::new(move |outcome: Result<(), StoreError>| {
                let _ = tx.send(outcome.map(|()| value));
            }) as Completion)
        });
        self.ops
            .as_ref()
            .expect("present until drop")
            .send(operation)
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// A consistent read snapshot.
    pub fn read(&self) -> Result<ReadTransaction, StoreError> {
        match self.db.read_locked().as_ref() {
            Some(db) => db.begin_read().map_err(StoreError::from),
            None => Err(StoreError::Reopening(self.path.clone())),
        }
    }
}

impl Drop for Store {
    /// Finishes queued operations and closes the file, so that it can be reopened at once.
    fn drop(&mut self) {
        drop(self.ops.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn create(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            source: Arc::new(e),
        })
}

/// Drops the latched database and opens the file again; `false` when that failed too (the
/// next batch tries again).
fn reopen(db: &RwLock<Option<Database>>, path: &Path) -> bool {
    let mut guard = db.write_locked();
    // the old handle must be closed first: redb locks the file
    drop(guard.take());
    match create(path) {
        Ok(fresh) => {
            *guard = Some(fresh);
            tracing::warn!(path = %path.display(), "store reopened after an I/O error");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "store: cannot reopen after an I/O error; retrying at the next write");
            false
        }
    }
}

fn writer_loop(db: &RwLock<Option<Database>>, path: &Path, rx: mpsc::Receiver<Operation>) {
    let mut broken = false;
    while let Ok(first) = rx.recv() {
        if broken || db.read_locked().is_none() {
            broken = !reopen(db, path);
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
        let guard = db.read_locked();
        let outcome = (|| -> Result<(), redb::Error> {
            let db = guard.as_ref().ok_or(redb::Error::PreviousIo)?;
            let txn = db.begin_write()?;
            for op in batch {
                completions.push(op(&txn)?);
            }
            txn.commit()?;
            Ok(())
        })();
        drop(guard);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, operations = completions.len(), "store commit failed; the operations are refused");
            broken = matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo);
        }
        let outcome = outcome.map_err(StoreError::from);
        for completion in completions {
            completion(outcome.clone());
        }
        // Operations consumed before the failure never produced a completion: their
        // senders were dropped with the closure, and their callers see "dropped".
    }
}

/// Where the embedded spool puts a finished mail's outbox jobs: inside the same store
/// transaction that releases the mail, so a job is never lost between the two. The outbox
/// provides it; the spool only knows this contract.
pub trait JobSink: Send + Sync {
    /// Stores `jobs` in the caller's transaction (duplicates may be dropped).
    fn insert(&self, txn: &WriteTransaction, jobs: Vec<OutboxJob>) -> Result<(), redb::Error>;
    /// Called once the transaction that stored jobs has committed.
    fn added(&self);
}
