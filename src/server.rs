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
    let (_store, spool) = EmbeddedSpool::open_path(&data_dir.join("spool.redb"))?;
    let spool: Arc<dyn Spool> = spool;
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        signals.cancel();
    });
    let mut smtp_servers = crate::config::smtpserver::load(conf_dir)?;
    for server in &mut smtp_servers {
        server.shutdown_timeout = std::time::Duration::from_secs(settings.shutdown_timeout_secs);
        if let Some(tls) = &mut server.tls {
            tls.generate_if_missing = settings.generate_certificate;
        }
    }
    let consumer = tokio::spawn(drain_spool(spool.clone()));
    crate::ingest::run(smtp_servers, spool.clone(), shutdown).await?;
    spool.close();
    let _ = consumer.await;
    tracing::info!("stopped");
    Ok(())
}

/// Stand-in for the mailet container: logs one line per mail and completes it. Completions
/// run concurrently (bounded), as the container's workers will, so they share group commits.
async fn drain_spool(spool: Arc<dyn Spool>) {
    const IN_FLIGHT: usize = 32;
    let mut completing = tokio::task::JoinSet::new();
    while let Some(mail) = spool.dequeue().await {
        let from = mail
            .sender
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "<>".to_string());
        tracing::info!(
            mail = mail.id,
            from = %from,
            rcpts = mail.recipients.len(),
            size = mail.size(),
            "mail consumed"
        );
        while completing.len() >= IN_FLIGHT {
            completing.join_next().await;
        }
        let spool = spool.clone();
        completing.spawn(async move {
            if let Err(e) = spool.complete(mail.id, vec![]).await {
                tracing::error!(mail = mail.id, error = %e, "cannot complete a spooled mail");
            }
        });
    }
    while completing.join_next().await.is_some() {}
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
