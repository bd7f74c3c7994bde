//! The accept loop: binds with the configured backlog, refuses clients outside
//! `authorizedAddresses` (554) and connections over `connectionLimit` /
//! `connectionLimitPerIP` (421), and starts a session for the others.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::task::TaskTracker;

use super::Shared;
use super::session;
use crate::observe::Metrics;
use crate::sync::Locked;

/// Refusals of clients outside `authorizedAddresses`, logged at a bounded rate.
static REFUSALS: super::refusal_log::RefusalLog = super::refusal_log::RefusalLog::new();

/// Binds `addr` with `SO_REUSEADDR` (quick restarts) and the configured backlog.
pub(super) fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accepts until shutdown; each session runs in its own task, tracked for the graceful stop.
pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, sessions: TaskTracker) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "SMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let ip = canonical(peer.ip());
        if !shared.config.authorized.contains(&ip) {
            REFUSALS.refused(ip, "outside authorizedAddresses");
            Metrics::process().connection_refused("unauthorized");
            let line = format!(
                "554 5.7.1 {} Client {ip} is not allowed to connect\r\n",
                shared.config.hello_name
            );
            sessions.spawn(refuse(stream, line));
            continue;
        }
        match shared.limits.acquire(ip, shared.clone()) {
            Ok(guard) => {
                sessions.spawn(session::run(stream, peer, shared.clone(), guard));
            }
            Err(which) => {
                tracing::debug!(client = %ip, "SMTP: {which} reached; connection refused");
                Metrics::process().connection_refused(which);
                let line = format!(
                    "421 4.7.0 {} Too many connections ({which}), try again later\r\n",
                    shared.config.hello_name
                );
                sessions.spawn(refuse(stream, line));
            }
        }
    }
}

/// IPv4 clients of a dual-stack socket arrive as `::ffff:a.b.c.d`; match them as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

async fn refuse(mut stream: TcpStream, line: String) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(line.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Open connection counts, total and per client address.
pub(crate) struct Limits {
    total_max: usize,
    per_ip_max: usize,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One counted connection; released on drop.
pub(crate) struct ConnectionGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Limits {
    pub(super) fn new(total_max: usize, per_ip_max: usize) -> Self {
        Limits {
            total_max,
            per_ip_max,
            counts: Mutex::new((0, HashMap::new())),
        }
    }

    fn acquire(&self, ip: IpAddr, shared: Arc<Shared>) -> Result<ConnectionGuard, &'static str> {
        let mut counts = self.counts.locked();
        if self.total_max > 0 && counts.0 >= self.total_max {
            return Err("connectionLimit");
        }
        let per_ip = counts.1.get(&ip).copied().unwrap_or(0);
        if self.per_ip_max > 0 && per_ip >= self.per_ip_max {
            return Err("connectionLimitPerIP");
        }
        counts.0 += 1;
        *counts.1.entry(ip).or_insert(0) += 1;
        Metrics::process().connection_opened();
        Ok(ConnectionGuard { shared, ip })
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut counts = self.shared.limits.counts.locked();
        counts.0 -= 1;
        Metrics::process().connection_closed();
        if let Some(n) = counts.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.1.remove(&self.ip);
            }
        }
    }
}
