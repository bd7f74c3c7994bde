//! SMTP ingest: the listener, one file per protocol step (after Stalwart's `inbound/`).
//!
//! [`spawn`] binds and accepts (limits, `authorizedAddresses`), [`session`] reads lines and
//! dispatches each verb to its file ([`ehlo`], [`mail`], [`rcpt`], [`data`] for DATA and
//! BDAT, [`vrfy`], [`starttls`]); [`tls`] holds the rustls side. A mail is answered
//! `250 2.6.0 Message received` only once [`Spool::enqueue`] has made it durable. Every
//! recipient is accepted for collection and nothing is ever relayed.

mod data;
mod ehlo;
mod mail;
mod rcpt;
mod refusal_log;
mod session;
mod spawn;
mod starttls;
pub mod tls;
mod vrfy;

use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::smtpserver::SmtpServerConfig;
use crate::spool::Spool;

/// What the sessions of one `<smtpserver>` share.
pub(crate) struct Shared {
    pub config: SmtpServerConfig,
    pub spool: Arc<dyn Spool>,
    pub tls: Option<TlsAcceptor>,
    pub shutdown: CancellationToken,
    pub limits: spawn::Limits,
}

/// Runs one SMTP session of `config` over an in-memory pipe (no socket, no limits): the
/// client sends `input` then EOF; returns the server's replies. Used by the fuzz targets.
#[doc(hidden)]
pub async fn session_in_memory(
    config: SmtpServerConfig,
    spool: Arc<dyn Spool>,
    input: &[u8],
) -> Vec<u8> {
    let shared = Arc::new(Shared {
        limits: spawn::Limits::new(config.connection_limit, config.connection_limit_per_ip),
        config,
        spool,
        tls: None,
        shutdown: CancellationToken::new(),
    });
    session::run_in_memory(shared, input).await
}

/// Binds every `<bind>` address of every server, then serves until `shutdown` is cancelled.
/// Returns an error naming the address when a bind fails (nothing is served then). On
/// cancel: stops accepting, gives open sessions up to `shutdown_timeout` (when
/// `gracefulShutdown`), then returns.
///
/// Sessions run on `threads` threads of their own, each a single-threaded event loop that
/// accepts on every listener: a session's steps (read, spool, reply) then never hop between
/// threads. On a small machine shared with the pipeline, the work-stealing scheduler's
/// cross-thread wake-ups cost more than the SMTP work itself (measured in docs/ingest.md).
/// `threads == 0` serves on the caller's runtime instead (the broker spool, whose
/// connection lives there).
pub async fn run(
    servers: Vec<SmtpServerConfig>,
    spool: Arc<dyn Spool>,
    shutdown: CancellationToken,
    threads: usize,
) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    let mut grace = std::time::Duration::ZERO;
    for config in servers {
        let tls = match &config.tls {
            Some(t) => Some(tls::acceptor(t, &config.hello_name)?),
            None => None,
        };
        if config.graceful_shutdown {
            grace = grace.max(config.shutdown_timeout);
        }
        let shared = Arc::new(Shared {
            limits: spawn::Limits::new(config.connection_limit, config.connection_limit_per_ip),
            config,
            spool: spool.clone(),
            tls,
            shutdown: shutdown.clone(),
        });
        for addr in shared.config.bind.clone() {
            let listener = spawn::bind(addr, shared.config.backlog)
                .with_context(|| format!("{}: cannot listen on {addr}", shared.config.position))?;
            tracing::info!(
                server = %shared.config.name,
                "SMTP listening on {}",
                listener.local_addr().unwrap_or(addr)
            );
            listeners.push((listener.into_std()?, shared.clone()));
        }
    }
    let sessions = TaskTracker::new();
    // each loop reports how many sessions it left open when the grace ran out
    let mut stopped = Vec::new();
    if threads == 0 {
        let (done, stopped_rx) = tokio::sync::oneshot::channel();
        stopped.push(stopped_rx);
        let (sessions, shutdown) = (sessions.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _ = done.send(serve_thread(listeners, sessions, shutdown, grace).await);
        });
    } else {
        for n in 0..threads {
            let mine = listeners
                .iter()
                .map(|(l, shared)| Ok((l.try_clone()?, shared.clone())))
                .collect::<std::io::Result<Vec<_>>>()?;
            let (sessions, shutdown) = (sessions.clone(), shutdown.clone());
            let (done, stopped_rx) = tokio::sync::oneshot::channel();
            stopped.push(stopped_rx);
            std::thread::Builder::new()
                .name(format!("smtp-{n}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("SMTP event loop");
                    let _ =
                        done.send(runtime.block_on(serve_thread(mine, sessions, shutdown, grace)));
                })
                .context("cannot start an SMTP thread")?;
        }
        // only the threads' clones may keep the sockets open: once they stop accepting, new
        // connections must be refused by the kernel
        drop(listeners);
    }
    shutdown.cancelled().await;
    if !sessions.is_empty() {
        tracing::info!(
            sessions = sessions.len(),
            "SMTP: waiting up to {grace:?} for open sessions to finish"
        );
    }
    let (mut failed, mut left_open) = (0, 0);
    for thread in stopped {
        match thread.await {
            Ok(open) => left_open = left_open.max(open),
            Err(_) => failed += 1,
        }
    }
    if left_open > 0 {
        tracing::warn!(
            sessions = left_open,
            "SMTP: sessions still open after {grace:?}; closing them (their mails were not acknowledged)"
        );
    }
    if failed > 0 {
        anyhow::bail!("{failed} SMTP thread(s) stopped abnormally");
    }
    Ok(())
}

/// One SMTP event loop: accepts on its clones of the listeners until shutdown, then gives
/// the sessions up to `grace` to finish. `sessions` is shared by every loop, so each waits
/// until all are done (or the grace ends); returns how many were still open then.
async fn serve_thread(
    listeners: Vec<(std::net::TcpListener, Arc<Shared>)>,
    sessions: TaskTracker,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) -> usize {
    let mut accepters = Vec::new();
    for (listener, shared) in listeners {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => accepters.push(tokio::spawn(spawn::accept_loop(
                listener,
                shared,
                sessions.clone(),
            ))),
            Err(e) => tracing::error!(error = %e, "SMTP: cannot register a listener"),
        }
    }
    shutdown.cancelled().await;
    for a in accepters {
        let _ = a.await;
    }
    sessions.close();
    match tokio::time::timeout(grace, sessions.wait()).await {
        Ok(()) => 0,
        Err(_) => sessions.len(),
    }
}

#[cfg(test)]
mod in_memory_tests {
    use std::path::Path;

    use super::*;
    use crate::config::XmlDocument;
    use crate::spool::EmbeddedSpool;

    #[tokio::test]
    async fn an_in_memory_session_spools_a_pipelined_mail_and_answers_every_command() {
        let xml = "<smtpservers><smtpserver enabled=\"true\"><bind>127.0.0.1:2525</bind><helloName autodetect=\"false\">mx.test</helloName></smtpserver></smtpservers>";
        let doc = XmlDocument::parse(xml, Path::new("smtpserver.xml")).unwrap();
        let config = crate::config::smtpserver::parse(&doc, Path::new("."))
            .unwrap()
            .remove(0);
        let dir = tempfile::tempdir().unwrap();
        let (_store, spool) = EmbeddedSpool::open_path(
            &dir.path().join("s.redb"),
            crate::outbox::store::OutboxSink::shared(),
        )
        .unwrap();
        let replies = session_in_memory(
            config,
            spool.clone(),
            b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
        )
        .await;
        let replies = String::from_utf8(replies).unwrap();
        assert!(replies.starts_with("220 "), "{replies}");
        assert!(replies.contains("250 2.6.0 Message received"), "{replies}");
        assert!(
            replies.ends_with("Service closing transmission channel\r\n"),
            "{replies}"
        );
        assert_eq!(spool.depth(), 1);
    }
}
