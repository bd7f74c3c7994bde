//! `mailetd serve`: wires ingest → spool → pipeline → outbox and runs until SIGTERM/SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::config::ConfDir;
use crate::config::settings::{Role, SpoolBackend};
use crate::pipeline::spooler::{self, SpoolerSettings};
use crate::pipeline::{Container, Loaders, MailetContext};
use crate::repository::Repository;
use crate::spool::rabbitmq::RabbitSpool;
use crate::spool::{EmbeddedSpool, Spool};
use crate::store::Store;

/// Runs the server with the configuration in `conf_dir`. Every configuration error is
/// reported before anything binds or opens the spool.
pub async fn serve(conf_dir: &Path) -> anyhow::Result<()> {
    serve_as(conf_dir, None).await
}

/// The mailets and matchers this binary is built with: the loaders every container of the
/// process (server, `check`, `replay`) is built from.
pub fn loaders() -> Loaders {
    Loaders {
        mailets: &crate::mailets::REGISTRY,
        matchers: &crate::matchers::REGISTRY,
    }
}

/// [`serve`] in `role` (default: `role` of mailetd.toml).
pub async fn serve_as(conf_dir: &Path, role: Option<Role>) -> anyhow::Result<()> {
    let conf = ConfDir::load(conf_dir)?;
    let settings = conf.settings.clone();
    let role = role.unwrap_or(settings.role);
    let on_broker = settings.spool.backend == SpoolBackend::Rabbitmq;
    if !on_broker && role != Role::All {
        anyhow::bail!(
            "role {role:?} needs [spool] backend = \"rabbitmq\" in mailetd.toml: the embedded spool belongs to one node"
        );
    }
    let mut smtp_servers = crate::config::smtpserver::load(conf_dir)?;
    cap_message_size(&mut smtp_servers, settings.spool.max_message_bytes)?;
    crate::http::listen_address(&settings.http).map_err(anyhow::Error::msg)?;
    let started = std::time::Instant::now();
    let data_dir = conf.data_dir().to_path_buf();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let error_repository = Repository::open(&conf.container.error_repository, &data_dir)
        .map_err(|e| anyhow::anyhow!("errorRepository: {e}"))?;
    let threads = settings.workers.unwrap_or(conf.container.threads);
    let (store, spool, broker): (_, Arc<dyn Spool>, _) = if on_broker {
        let spool_settings = &settings.spool;
        let broker = Broker::new(spool_settings);
        if let Err(e) = broker.connect().await {
            tracing::warn!(error = %e, "broker not reachable yet; SMTP answers 451 until it is");
        }
        let spool = RabbitSpool::new(
            broker.clone(),
            &spool_settings.queue,
            &spool_settings.outbox_queue,
            threads,
        );
        // This node's caches (collected contacts); the queues are on the broker.
        let store = Store::open(&data_dir.join("cache.redb"))?;
        tracing::info!(?role, queue = spool_settings.queue, "spool on RabbitMQ");
        (store, spool, Some(broker))
    } else {
        let (store, spool) = EmbeddedSpool::open_path(
            &data_dir.join("spool.redb"),
            crate::outbox::store::OutboxSink::shared(),
        )?;
        (store, spool, None)
    };
    let mut context = MailetContext::new(&conf);
    context.store = Some(store.clone());
    let container = Arc::new(Container::build(&conf.container, &context, loaders())?);
    // The handlers share the context's DavServices with the mailets: one HTTP client pool,
    // one user-lookup cache.
    let mut handlers = crate::dav::outbox_handlers(&context.properties, &context.dav)?;
    handlers.extend(crate::dav::contact_handlers(
        &settings.dav,
        &context.properties,
        &context.dav,
        context.store.clone(),
    )?);
    handlers.extend(crate::dav::standard_handlers(&settings.dav)?);
    if let Some(amqp) = crate::outbox::amqp_forward::handler(&conf.container) {
        handlers.push(Arc::new(amqp));
    }
    handlers.extend(crate::consolidate::handler::handlers(&settings)?);

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
        server.data_timeout = Duration::from_secs(settings.smtp_data_timeout_secs.max(1));
        if let Some(tls) = &mut server.tls
            && settings.generate_certificate
        {
            // conf/ may be read-only: generated keys live with the other data.
            tls.generate_into = Some(data_dir.join("tls"));
        }
    }

    // Processing stops only after ingest has drained its sessions, so that every mail
    // accepted during the grace period is at least spooled.
    let processing = CancellationToken::new();
    let spooler = role.processes().then(|| {
        tokio::spawn(spooler::run(
            container,
            spool.clone(),
            SpoolerSettings {
                threads,
                retry_base: Duration::from_secs(settings.retry_base_secs),
                error_repository,
                max_attempts: settings.spool.max_attempts.max(1),
                shutdown_timeout: grace,
                dedup_window: Duration::from_secs(settings.dedup.window_secs),
            },
            processing.clone(),
        ))
    });
    let outbox = role.delivers().then(|| match &broker {
        Some(broker) => tokio::spawn(crate::outbox::rabbitmq::run(
            broker.clone(),
            settings.spool.outbox_queue.clone(),
            handlers,
            settings.outbox.clone(),
            processing.clone(),
        )),
        None => tokio::spawn(crate::outbox::worker::run(
            store.clone(),
            handlers,
            settings.outbox.clone(),
            processing.clone(),
        )),
    });
    // The admin endpoint answers until processing stops, so the drain can be watched.
    let admin = crate::http::Admin {
        started,
        spool: spool.clone(),
        store: store.clone(),
        data_dir: data_dir.clone(),
        config_summary: crate::http::config_summary(&conf, &smtp_servers),
        probes: crate::http::probes(&conf.settings, &context.dav),
        stuck_after: Duration::from_secs(settings.http.stuck_after_secs),
        probe_ttl: Duration::from_secs(settings.http.probe_ttl_secs),
        broker: broker.clone(),
        outbox_queue: settings.spool.outbox_queue.clone(),
        metrics: context.metrics.clone(),
        errors: crate::logging::ErrorRing::process(),
    };
    let http = crate::http::start(&settings.http, admin, processing.clone()).await?;
    let ingest = if role.ingests() {
        crate::ingest::run(
            smtp_servers,
            spool.clone(),
            shutdown.clone(),
            settings.smtp_threads(),
        )
        .await
    } else {
        shutdown.cancelled().await;
        Ok(())
    };
    processing.cancel();
    spool.close();
    if let Some(spooler) = spooler {
        let _ = spooler.await;
    }
    if let Some(outbox) = outbox {
        let _ = outbox.await;
    }
    if let Some(http) = http {
        let _ = http.await;
    }
    spool.finish();
    ingest?;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit of open files to the hard limit: every SMTP session, admin
/// connection, spool segment and DAV connection is a descriptor, and the usual soft limit
/// (1024) is far below what the hard limit allows a service.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct they are given
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur >= limit.rlim_max {
            tracing::debug!(
                limit = limit.rlim_cur,
                "open files limit already at its hard limit"
            );
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::info!(
                from = soft,
                to = limit.rlim_max,
                "open files limit raised to the hard limit"
            );
        } else {
            tracing::warn!(limit = soft, error = %std::io::Error::last_os_error(), "cannot raise the open files limit");
        }
    }
}

/// Largest `[spool] max_message_bytes`: a mail is held whole in memory while it is received
/// and processed (several copies), and a journal record holds at most 4 GiB.
pub const MAX_MESSAGE_CEILING: usize = 1 << 30;

/// Lowers every listener's `maxmessagesize` to `[spool] max_message_bytes`, the largest mail
/// the spool takes. James reads `maxmessagesize` 0 as unlimited, but a mail is kept whole in
/// memory: an unlimited DATA would let one client exhaust it, so 0 means this ceiling (a
/// warning says so); SMTP advertises it with SIZE and answers 552 above it.
fn cap_message_size(
    servers: &mut [crate::config::smtpserver::SmtpServerConfig],
    limit: usize,
) -> anyhow::Result<()> {
    if limit == 0 || limit > MAX_MESSAGE_CEILING {
        anyhow::bail!(
            "mailetd.toml: [spool] max_message_bytes = {limit}: allowed 1..={MAX_MESSAGE_CEILING} (a mail is held whole in memory)"
        );
    }
    for server in servers {
        if server.max_message_size == 0 || server.max_message_size > limit {
            tracing::warn!(
                listener = server.name,
                "{}: maxmessagesize {} is above what the spool takes; mails over {limit} bytes ([spool] max_message_bytes) get 552",
                server.position,
                match server.max_message_size {
                    0 => "0 (unlimited)".to_string(),
                    n => n.to_string(),
                }
            );
            server.max_message_size = limit;
        }
    }
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
