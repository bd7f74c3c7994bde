//! Log setup: `RUST_LOG`-style filter in `MAILETD_LOG` (default `info`), to stderr; marked
//! WARN and ERROR events also feed the recent errors of `/api/status`
//! ([`crate::observe::status`]), whatever the filter.

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber once.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILETD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer()
        // Whatever a line quotes, a URL's user:password never reaches the log.
        .with_writer(|| crate::config::secret::RedactingWriter(std::io::stderr()))
        // Colour codes only on a terminal: log files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(log)
        // a filter of its own, so that DEBUG lines stay disabled at their call sites
        .with(
            crate::observe::ErrorLayer(crate::observe::ErrorRing::process())
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
        )
        .try_init();
}
