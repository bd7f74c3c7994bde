//! Log setup: `RUST_LOG`-style filter in `MAILETD_LOG` (default `info`), to stderr.

/// Installs the global subscriber once.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILETD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Whatever a line quotes, a URL's user:password never reaches the log.
        .with_writer(|| crate::config::secret::RedactingWriter(std::io::stderr()))
        // Colour codes only on a terminal: log files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
