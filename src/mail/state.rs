//! The processing states a mail moves through (James processor names).

/// The initial state of every mail.
pub const ROOT: &str = "root";
/// The state of a mail that is done (disposed of).
pub const GHOST: &str = "ghost";
/// The state failed mails are routed to.
pub const ERROR: &str = "error";
