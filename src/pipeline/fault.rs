//! Fault injection for tests of crash handling, in debug builds only (release builds compile
//! it to nothing and ignore the variable).
//!
//! `MAILETD_FAULT_ABORT_ON=<text>`: the process aborts (SIGABRT, as on a failed allocation
//! under a memory cap) when processing starts for a mail whose header block contains
//! `<text>`. The spool has recorded the attempt by then, exactly as for a mail that crashes
//! the process for real; tests/it/poison.rs uses it to check that such a mail is set aside
//! after `[spool] max_attempts` restarts while its neighbours are processed.

use crate::mail::Mail;

/// The variable naming the header text that makes processing abort.
pub const ABORT_ON: &str = "MAILETD_FAULT_ABORT_ON";

/// Aborts the process if `mail` is the one [`ABORT_ON`] names (debug builds only).
pub fn abort_if_named(mail: &Mail) {
    if cfg!(debug_assertions)
        && let Ok(text) = std::env::var(ABORT_ON)
        && !text.is_empty()
        && memchr::memmem::find(mail.header_block(), text.as_bytes()).is_some()
    {
        tracing::error!(
            mail = mail.id,
            "{ABORT_ON}: aborting while processing this mail (fault injection)"
        );
        std::process::abort();
    }
}
