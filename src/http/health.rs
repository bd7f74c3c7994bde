//! `GET /health` (liveness) and `GET /health/ready` (readiness, one named check each).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::Admin;
use super::status::outbox_counts;
use crate::mail::now_ms;
use crate::sync::Locked;

/// Time allowed to each readiness step (store commit, probe request).
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A DAV or OpenPaaS endpoint whose reachability `/health/ready` reports. Any HTTP answer
/// counts as reachable (the probe sends no credentials, so 401/404 are expected); a
/// connection, TLS or timeout error does not. Answers are cached for `probe_ttl_secs`.
pub struct Probe {
    /// The check's name (`openpaas`, `dav`).
    pub name: &'static str,
    /// The URL requested (`GET`).
    pub url: String,
    /// The client with the endpoint's TLS policy and timeouts.
    pub client: reqwest::Client,
    last: Mutex<Option<(Instant, Check)>>,
}

impl Probe {
    /// A probe of `url` with `client`.
    pub fn new(name: &'static str, url: String, client: reqwest::Client) -> Probe {
        Probe {
            name,
            url,
            client,
            last: Mutex::new(None),
        }
    }

    async fn check(&self, ttl: Duration) -> Check {
        if let Some((at, check)) = self.last.locked().as_ref()
            && at.elapsed() < ttl
        {
            return check.clone();
        }
        let shown = crate::config::secret::redact_url_value(&self.url);
        let answer = tokio::time::timeout(CHECK_TIMEOUT, self.client.get(&self.url).send()).await;
        let check = match answer {
            Ok(Ok(response)) => Check::ok(
                self.name,
                format!("{shown} answered HTTP {}", response.status().as_u16()),
            ),
            Ok(Err(e)) => Check::failed(
                self.name,
                format!("{shown} unreachable: {}", error_chain(&e)),
            ),
            Err(_) => Check::failed(
                self.name,
                format!("{shown} did not answer within {CHECK_TIMEOUT:?}"),
            ),
        };
        // An error's causes may quote the URL again.
        let check = Check {
            detail: crate::config::secret::redact_urls(&check.detail).into_owned(),
            ..check
        };
        *self.last.locked() = Some((Instant::now(), check.clone()));
        check
    }
}

/// The causes of a reqwest error without the URL (which `Display` repeats).
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&s.to_string());
        source = s.source();
    }
    if text.is_empty() {
        text = if e.is_timeout() {
            "timed out"
        } else {
            "request failed"
        }
        .to_string();
    }
    text
}

/// One readiness check.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

impl Check {
    fn ok(name: &'static str, detail: String) -> Check {
        Check {
            name,
            ok: true,
            detail,
        }
    }
    fn failed(name: &'static str, detail: String) -> Check {
        Check {
            name,
            ok: false,
            detail,
        }
    }
}

#[derive(Serialize)]
pub(super) struct Readiness {
    ready: bool,
    checks: Vec<Check>,
}

/// 200 while the process serves.
pub(super) async fn live() -> &'static str {
    "ok\n"
}

/// 200 when every check passes, 503 otherwise; the body names each check either way.
pub(super) async fn ready(State(admin): State<Arc<Admin>>) -> (StatusCode, Json<Readiness>) {
    let mut checks = vec![spool_writable(&admin).await, outbox_moving(&admin)];
    for probe in &admin.probes {
        checks.push(probe.check(admin.probe_ttl).await);
    }
    if let Some(broker) = &admin.broker {
        // an ingest node with no mail coming in would not try again on its own: the
        // probe does (within the reconnection backoff)
        let connected = broker.is_connected() || broker.connect().await.is_ok();
        checks.push(if connected {
            Check::ok("broker", "connected to RabbitMQ".to_string())
        } else {
            Check::failed(
                "broker",
                "RabbitMQ is unreachable: SMTP answers 451 until it is back".to_string(),
            )
        });
    }
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { ready, checks }))
}

/// A commit through the store (the spool's fsync path) and a file in the data directory.
async fn spool_writable(admin: &Admin) -> Check {
    let probe = admin.data_dir.join(".ready-probe");
    if let Err(e) = std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe)) {
        return Check::failed(
            "spool",
            format!("cannot write in {}: {e}", admin.data_dir.display()),
        );
    }
    match tokio::time::timeout(CHECK_TIMEOUT, admin.store.write(|_| Ok(()))).await {
        Ok(Ok(())) => Check::ok(
            "spool",
            format!("writable; {} mail(s) waiting", admin.spool.depth()),
        ),
        Ok(Err(e)) => Check::failed("spool", format!("cannot commit: {e}")),
        Err(_) => Check::failed(
            "spool",
            format!("a commit took longer than {CHECK_TIMEOUT:?}"),
        ),
    }
}

/// The oldest due job must not have waited longer than `stuck_after`.
fn outbox_moving(admin: &Admin) -> Check {
    match outbox_counts(&admin.store) {
        Err(e) => Check::failed("outbox", format!("cannot read the outbox: {e}")),
        Ok(counts) => {
            let now = now_ms();
            let overdue_ms = counts
                .oldest_due_ms
                .map_or(0, |due| now.saturating_sub(due));
            let limit = admin.stuck_after.as_millis() as u64;
            let detail = format!(
                "{} pending, {} dead; oldest due job overdue by {} s",
                counts.pending,
                counts.dead,
                overdue_ms / 1000
            );
            if overdue_ms > limit {
                Check::failed(
                    "outbox",
                    format!("stuck (limit {} s): {detail}", limit / 1000),
                )
            } else {
                Check::ok("outbox", detail)
            }
        }
    }
}
