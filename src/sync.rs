//! The lock policy, in one place.
//!
//! - State shared between threads or tasks and touched without awaiting is behind a
//!   `std::sync::Mutex` (or `RwLock`), held for one short step and never across an `.await`
//!   (clippy's `await_holding_lock` is denied in Cargo.toml). A `tokio::sync::Mutex` is only
//!   for a resource that is used across an `.await` (one AMQP channel, one token refresh).
//! - A poisoned lock means a thread panicked halfway through changing that state. mailetd is
//!   crash-only: everything that matters is durable (journal, store) and recovered at start,
//!   so the process logs the fact and aborts for its supervisor to restart it, rather than
//!   go on with state that may be half-changed or fail every later caller one by one.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Taking a lock under the policy above.
pub trait Locked<T: ?Sized> {
    /// The guard; aborts the process when the lock is poisoned.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|_| poisoned())
    }
}

/// Reading and writing an `RwLock` under the policy above.
pub trait LockedRw<T: ?Sized> {
    /// A read guard; aborts the process when the lock is poisoned.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// A write guard; aborts the process when the lock is poisoned.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> LockedRw<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|_| poisoned())
    }
    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|_| poisoned())
    }
}

#[cold]
fn poisoned() -> ! {
    tracing::error!(
        "a thread panicked while holding a lock: aborting (durable state is recovered at restart)"
    );
    eprintln!("mailetd: a lock was poisoned by a panic; aborting");
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unpoisoned_lock_is_taken_and_released() {
        let m = Mutex::new(1);
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);
        let rw = RwLock::new(vec![1]);
        rw.write_locked().push(2);
        assert_eq!(rw.read_locked().len(), 2);
    }
}
