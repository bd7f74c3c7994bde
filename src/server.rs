//! `mailetd serve`: wires ingest → spool → pipeline → outbox and runs until SIGTERM/SIGINT.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::spool::{EmbeddedSpool, Spool};

/// Runs the server with the configuration in `conf_dir`.
pub async fn serve(conf_dir: &Path) -> anyhow::Result<()> {
    let settings = Settings::load(conf_dir)?;
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let (store, spool) = EmbeddedSpool::open_path(&data_dir.join("spool.redb"))?;
    let spool: Arc<dyn Spool> = spool;
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        signals.cancel();
    });
    // Outbox delivery. When the container builds its MailetContext, pass ctx.properties
    // and ctx.dav here so that mailets and handlers share one DavServices (clients, cache).
    let properties = crate::config::Properties::load_dir(conf_dir)?;
    let dav = Arc::new(std::sync::OnceLock::new());
    let handlers = crate::dav::outbox_handlers(&properties, &dav)?;
    let outbox = tokio::spawn(crate::outbox::worker::run(
        store.clone(),
        handlers,
        settings.outbox.clone(),
        shutdown.clone(),
    ));
    let _ = (spool, settings);
    shutdown.cancelled().await;
    let _ = outbox.await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
