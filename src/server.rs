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

/// Runs the server with the configuration in `conf_dir`.
pub async fn serve(conf_dir: &Path) -> anyhow::Result<()> {
    // the whole configuration is checked before anything listens or touches the spool
    let conf = ConfDir::load(conf_dir)?;
    let settings = conf.context.settings.clone();
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let (store, spool) = EmbeddedSpool::open_path(&data_dir.join("spool.redb"))?;
    let spool: Arc<dyn Spool> = spool;
    let mut context = conf.context.clone();
    context.store = Some(store.clone());
    let container = Arc::new(Container::build(&conf.container, &context)?);
    let error_repository =
        Repository::open(&conf.container.error_repository, &data_dir).map_err(|e| {
            conf.container
                .error_repository_position
                .error(format!("<errorRepository>: {e}"))
        })?;
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        signals.cancel();
    });
    let spooler = tokio::spawn(spooler::run(
        container,
        spool.clone(),
        SpoolerSettings {
            threads: settings.workers.unwrap_or(conf.container.threads),
            retry_base: Duration::from_secs(settings.retry_base_secs),
            error_repository,
            shutdown_timeout: Duration::from_secs(settings.shutdown_timeout_secs),
        },
        shutdown.clone(),
    ));
    shutdown.cancelled().await;
    spool.close();
    let _ = spooler.await;
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
