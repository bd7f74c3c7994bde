//! One log line per refused connection would let a flood of refused clients fill the disk
//! with logs: the first refusal of a burst is logged at once, the next ones are counted and
//! summed up in one line per [`EVERY`].

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line per this interval (after the first).
const EVERY: Duration = Duration::from_secs(10);

struct State {
    /// When the last line was written.
    last: Option<Instant>,
    /// Refusals since then, not logged yet.
    unlogged: u64,
}

/// A rate-limited "refused a client" log line.
pub(crate) struct RefusalLog(Mutex<State>);

impl RefusalLog {
    /// Nothing logged yet.
    pub(crate) const fn new() -> RefusalLog {
        RefusalLog(Mutex::new(State {
            last: None,
            unlogged: 0,
        }))
    }

    /// Counts a refusal of `client`, and logs it or the refusals summed up since the last
    /// line when [`EVERY`] has passed.
    pub(crate) fn refused(&self, client: IpAddr, why: &str) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let due = state.last.is_none_or(|at| now.duration_since(at) >= EVERY);
        if !due {
            state.unlogged += 1;
            return;
        }
        let earlier = std::mem::take(&mut state.unlogged);
        state.last = Some(now);
        drop(state);
        if earlier == 0 {
            tracing::info!(client = %client, "SMTP: refused a client {why}");
        } else {
            tracing::info!(client = %client, earlier, "SMTP: refused a client {why} (and {earlier} more refusals since the last such line)");
        }
    }
}
