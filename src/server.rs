//! `mailetd serve`: wires ingest → spool → pipeline → outbox and runs until SIGTERM/SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::ConfDir;
use crate::pipeline::Container;
use crate::pipeline::spooler::{self, SpoolerSettings};
use crate::repository::Repository;
use crate::spool::{EmbeddedSpool, Spool};

/// Runs the server with the configuration in `conf_dir`. Every configuration error is
/// reported before anything binds or opens the spool.
pub async fn serve(conf_dir: &Path) -> anyhow::Result<()> {
    let conf = ConfDir::load(conf_dir)?;
    let settings = conf.context.settings.clone();
    let mut smtp_servers = crate::config::smtpserver::load(conf_dir)?;
    let data_dir = conf.context.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let error_repository = Repository::open(&conf.container.error_repository, &data_dir)
        .map_err(|e| anyhow::anyhow!("errorRepository: {e}"))?;
    let (store, spool) = EmbeddedSpool::open_path(&data_dir.join("spool.redb"))?;
    let spool: Arc<dyn Spool> = spool;
    let mut context = conf.context.clone();
    context.store = Some(store.clone());
    let container = Arc::new(Container::build(&conf.container, &context)?);
    // The handlers share the context's DavServices with the mailets: one HTTP client pool,
    // one user-lookup cache.
    let mut handlers = crate::dav::outbox_handlers(&context.properties, &context.dav)?;
    handlers.extend(crate::dav::contact_handlers(&context)?);

    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        signals.cancel();
    });
    let grace = Duration::from_secs(settings.shutdown_timeout_secs);
    for server in &mut smtp_servers {
        server.shutdown_timeout = grace;
        if let Some(tls) = &mut server.tls {
            tls.generate_if_missing |= settings.generate_certificate;
        }
    }

    // Processing stops only after ingest has drained its sessions, so that every mail
    // accepted during the grace period is at least spooled.
    let processing = CancellationToken::new();
    let spooler = tokio::spawn(spooler::run(
        container,
        spool.clone(),
        SpoolerSettings {
            threads: settings.workers.unwrap_or(conf.container.threads),
            retry_base: Duration::from_secs(settings.retry_base_secs),
            error_repository,
            shutdown_timeout: grace,
            dedup_window: Duration::from_secs(settings.dedup.window_secs),
        },
        processing.clone(),
    ));
    let outbox = tokio::spawn(crate::outbox::worker::run(
        store.clone(),
        handlers,
        settings.outbox.clone(),
        processing.clone(),
    ));
    let ingest = crate::ingest::run(smtp_servers, spool.clone(), shutdown.clone()).await;
    processing.cancel();
    spool.close();
    let _ = spooler.await;
    let _ = outbox.await;
    ingest?;
    tracing::info!("stopped");
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
