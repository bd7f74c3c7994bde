//! The HTTP admin endpoint (`[http]` of mailetd.toml): `GET /health`, `GET /health/ready`,
//! `GET /metrics`, `GET /api/status`, optionally behind Basic auth. Bound to loopback by
//! default; a non-loopback address without credentials is refused at startup.

mod auth;
mod health;
mod serve;
mod status;
mod summary;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::config::settings::HttpSettings;
use crate::spool::Spool;
use crate::store::Store;

pub use health::Probe;
pub use summary::{config_summary, probes};

/// The address used when `[http] bind` is absent.
pub const DEFAULT_BIND: &str = "127.0.0.1:8025";

/// Where the endpoint listens, decided from `[http]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// The address.
    pub addr: SocketAddr,
    /// Whether the address came from the configuration (a bind failure is then fatal).
    pub explicit: bool,
}

/// Validates `[http]`: `None` when the endpoint is disabled (`bind = ""`). Errors name the
/// setting: an unparsable address, half of the credentials, or a non-loopback address
/// without Basic auth (anyone on the network could read the status page).
pub fn listen_address(settings: &HttpSettings) -> Result<Option<Listen>, String> {
    let (text, explicit) = match settings.bind.as_deref() {
        None => (DEFAULT_BIND, false),
        Some(b) if b.trim().is_empty() => return Ok(None),
        Some(b) => (b.trim(), true),
    };
    let addr: SocketAddr = text.parse().map_err(|e| {
        format!(
            "mailetd.toml: [http] bind = {text:?} is not an address such as 127.0.0.1:8025: {e}"
        )
    })?;
    let has_user = settings.username.as_deref().is_some_and(|u| !u.is_empty());
    let has_password = settings
        .password
        .as_ref()
        .is_some_and(|p| !p.expose().is_empty());
    if has_user != has_password {
        return Err(
            "mailetd.toml: [http] needs both username and password for Basic auth, or neither"
                .into(),
        );
    }
    if !addr.ip().is_loopback() && !has_user {
        return Err(format!(
            "mailetd.toml: [http] bind = \"{addr}\" is not a loopback address: set [http] username and password (Basic auth) to expose the admin endpoint, or bind it to 127.0.0.1"
        ));
    }
    Ok(Some(Listen { addr, explicit }))
}

/// What the handlers read.
pub struct Admin {
    /// When the process started.
    pub started: Instant,
    /// The spool (depth, oldest mail).
    pub spool: Arc<dyn Spool>,
    /// The store holding the outbox.
    pub store: Arc<Store>,
    /// The data directory (readiness writes a probe file there).
    pub data_dir: PathBuf,
    /// The configuration summary shown by `/api/status` (no secrets in it).
    pub config_summary: serde_json::Value,
    /// DAV / OpenPaaS endpoints probed by `/health/ready`.
    pub probes: Vec<Probe>,
    /// Age past which the oldest due outbox job means "stuck".
    pub stuck_after: Duration,
    /// How long a probe answer is reused.
    pub probe_ttl: Duration,
    /// The RabbitMQ link, when the spool is on the broker (readiness follows its connection).
    pub broker: Option<Arc<crate::broker::Broker>>,
    /// The outbox queue on the broker (`[spool] outbox_queue`), whose depths `/metrics` shows.
    pub outbox_queue: String,
    /// The metrics `/metrics` exposes and `/api/status` sums up.
    pub metrics: Arc<crate::observe::Metrics>,
    /// The recent errors `/api/status` lists.
    pub errors: Arc<crate::logging::ErrorRing>,
}

/// Binds the endpoint and serves it until `shutdown`. Returns `None` when disabled, or when
/// the default address is busy (a warning: the admin endpoint is not worth stopping the mail
/// flow for, unless the operator asked for that address).
pub async fn start(
    settings: &HttpSettings,
    admin: Admin,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(listen) = listen_address(settings).map_err(anyhow::Error::msg)? else {
        tracing::info!("HTTP admin endpoint disabled ([http] bind = \"\")");
        return Ok(None);
    };
    let listener = match tokio::net::TcpListener::bind(listen.addr).await {
        Ok(l) => l,
        Err(e) if !listen.explicit => {
            tracing::warn!(
                "HTTP admin endpoint disabled: cannot listen on {} ({e}); set [http] bind in mailetd.toml",
                listen.addr
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(anyhow::anyhow!(
                "mailetd.toml: [http] bind: cannot listen on {}: {e}",
                listen.addr
            ));
        }
    };
    let app = router(Arc::new(admin), auth::Credentials::from_settings(settings));
    let limits = serve::ConnectionLimits {
        header_timeout: Duration::from_secs(settings.header_timeout_secs.max(1)),
        max_connections: settings.max_connections.max(1),
    };
    tracing::info!(
        "HTTP admin endpoint listening on {}",
        listener.local_addr().unwrap_or(listen.addr)
    );
    Ok(Some(tokio::spawn(serve::serve(
        listener, app, limits, shutdown,
    ))))
}

fn router(admin: Arc<Admin>, credentials: Option<auth::Credentials>) -> Router {
    Router::new()
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(status::prometheus))
        .route("/api/status", get(status::status))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(credentials),
            auth::require,
        ))
        .with_state(admin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::Secret;

    fn settings(bind: Option<&str>, user: Option<&str>, password: Option<&str>) -> HttpSettings {
        HttpSettings {
            bind: bind.map(str::to_string),
            username: user.map(str::to_string),
            password: password.map(Secret::new),
            ..HttpSettings::default()
        }
    }

    #[test]
    fn bind_rules() {
        let default = listen_address(&settings(None, None, None))
            .unwrap()
            .unwrap();
        assert_eq!(default.addr.to_string(), DEFAULT_BIND);
        assert!(!default.explicit);
        assert_eq!(listen_address(&settings(Some(""), None, None)), Ok(None));
        let err = listen_address(&settings(Some("0.0.0.0:8025"), None, None)).unwrap_err();
        assert!(
            err.contains("[http] bind = \"0.0.0.0:8025\" is not a loopback"),
            "{err}"
        );
        assert!(
            listen_address(&settings(Some("0.0.0.0:8025"), Some("ops"), Some("pw")))
                .unwrap()
                .unwrap()
                .explicit
        );
        assert!(listen_address(&settings(Some("[::1]:9"), None, None)).is_ok());
        let err = listen_address(&settings(Some("localhost"), None, None)).unwrap_err();
        assert!(err.contains("[http] bind = \"localhost\""), "{err}");
        let err = listen_address(&settings(None, Some("ops"), None)).unwrap_err();
        assert!(err.contains("both username and password"), "{err}");
    }
}
