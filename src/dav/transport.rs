//! What every HTTP dialect of mailetd shares (esn-sabre, the OpenPaaS user API, standard
//! CalDAV/CardDAV, Microsoft Graph): one client builder (User-Agent `mailetd/<version>`,
//! TLS verified unless the settings say trust-all, the same timeouts and pool), one rule for
//! which failures are worth retrying, and one error type that keeps its cause.

use std::time::Duration;

use reqwest::StatusCode;

use crate::config::ConfigError;
use crate::config::settings::DavSettings;
use crate::mail::job::Delivery;

/// The User-Agent of every request mailetd sends.
pub const USER_AGENT: &str = concat!("mailetd/", env!("CARGO_PKG_VERSION"));

/// How long an idle keep-alive connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The longest wait for a TCP/TLS connection, whatever the response timeout: a server that
/// does not accept within it is down, and the job is retried later.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings of one HTTP client, as each dialect's configuration gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// The whole request's timeout (at least one second is used).
    pub timeout: Duration,
    /// Accept any certificate (`trust_all_certs`, `*.trust.all.ssl.certs`).
    pub trust_all_certs: bool,
}

impl ClientSettings {
    /// Settings with a timeout in seconds, as mailetd.toml gives it.
    pub fn from_secs(timeout_secs: u64, trust_all_certs: bool) -> Self {
        ClientSettings {
            timeout: Duration::from_secs(timeout_secs),
            trust_all_certs,
        }
    }
}

impl From<&DavSettings> for ClientSettings {
    /// `[dav] timeout_secs` and `trust_all_certs`.
    fn from(settings: &DavSettings) -> Self {
        ClientSettings::from_secs(settings.timeout_secs, settings.trust_all_certs)
    }
}

/// The HTTP client of one dialect.
pub fn client(settings: ClientSettings) -> Result<reqwest::Client, ConfigError> {
    let timeout = settings.timeout.max(Duration::from_secs(1));
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        .pool_idle_timeout(POOL_IDLE)
        .tls_danger_accept_invalid_certs(settings.trust_all_certs)
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| ConfigError::new(format!("cannot build the HTTP client: {e}")))
}

/// Whether an answer with this status may succeed later: server errors (5xx), 408 and 429.
/// Any other failure status (400, 401, 403, 404, 415…) will not change by itself.
pub fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// Whether a request that got no answer may succeed later: every transport failure
/// (connect error, timeout, reset, unreadable body) but a request that could not even be
/// built (an invalid URL), which no retry mends.
pub fn is_transient_error(error: &reqwest::Error) -> bool {
    !error.is_builder()
}

/// A transport failure said briefly (reqwest's own text of a timeout names no cause).
pub fn transport_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        format!("cannot connect: {error}")
    } else {
        error.to_string()
    }
}

/// The start of a response body (500 characters at most), for an error message.
pub fn body_excerpt(body: &[u8]) -> String {
    const MAX: usize = 500;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut out: String = text.chars().take(MAX).collect();
    if text.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// A failed DAV (or Graph) exchange: the request, and why it failed.
#[derive(Debug, thiserror::Error)]
pub enum DavError {
    /// No answer: connect error, timeout, reset, unreadable body.
    #[error("{what}: {}", transport_reason(.source))]
    Transport {
        /// The request (`PUT http://…`).
        what: String,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// An answer with a status the caller does not accept.
    #[error("{what}: HTTP {}: {body}", .status.as_u16())]
    Status {
        /// The request (`PUT http://…`).
        what: String,
        /// The status.
        status: StatusCode,
        /// The start of the response body (see [`body_excerpt`]), maybe empty.
        body: String,
    },
    /// An answer that is not what the protocol says (a multistatus that is not XML).
    #[error("{what}: malformed XML: {source}")]
    Malformed {
        /// The request.
        what: String,
        /// Why it could not be read.
        #[source]
        source: quick_xml::Error,
    },
    /// A URL made from the server's answer or the settings that does not parse.
    #[error("{what}: {source}")]
    BadUrl {
        /// What the URL was for, and the URL.
        what: String,
        /// The parser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Any other failure worth retrying (a copy that kept changing, throttling).
    #[error("{0}")]
    Transient(String),
    /// Any other failure not worth retrying (a missing collection, a bad href).
    #[error("{0}")]
    Permanent(String),
}

impl DavError {
    /// A request that got no answer.
    pub fn transport(what: impl Into<String>, source: reqwest::Error) -> Self {
        DavError::Transport {
            what: what.into(),
            source,
        }
    }

    /// An unexpected status, with the start of the body.
    pub fn status(what: impl Into<String>, status: StatusCode, body: impl AsRef<[u8]>) -> Self {
        DavError::Status {
            what: what.into(),
            status,
            body: body_excerpt(body.as_ref()),
        }
    }

    /// A URL that does not parse.
    pub fn bad_url(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        DavError::BadUrl {
            what: what.into(),
            source: Box::new(source),
        }
    }

    /// Whether a retry may succeed ([`is_transient_status`], [`is_transient_error`]).
    pub fn is_transient(&self) -> bool {
        match self {
            DavError::Transport { source, .. } => is_transient_error(source),
            DavError::Status { status, .. } => is_transient_status(*status),
            DavError::Malformed { .. } | DavError::Transient(_) => true,
            DavError::BadUrl { .. } | DavError::Permanent(_) => false,
        }
    }
}

impl From<DavError> for Delivery {
    /// Retry what is transient, dead-letter the rest.
    fn from(error: DavError) -> Delivery {
        if error.is_transient() {
            Delivery::Retry(error.to_string())
        } else {
            Delivery::Permanent(error.to_string())
        }
    }
}

#[cfg(test)]
pub(crate) mod recorder;

#[cfg(test)]
mod user_agent_tests;

#[cfg(test)]
mod tls_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        for s in [500u16, 502, 503, 504, 429, 408] {
            assert!(is_transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
            let d = Delivery::from(DavError::status(
                "PUT u",
                StatusCode::from_u16(s).unwrap(),
                "",
            ));
            assert!(matches!(d, Delivery::Retry(_)), "{s}");
        }
        for s in [400u16, 401, 403, 404, 409, 415] {
            assert!(
                !is_transient_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
            let d = Delivery::from(DavError::status(
                "PUT u",
                StatusCode::from_u16(s).unwrap(),
                "no",
            ));
            assert_eq!(d, Delivery::Permanent(format!("PUT u: HTTP {s}: no")));
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_transient_and_an_unbuildable_request_is_not() {
        let http = client(ClientSettings::from_secs(2, false)).unwrap();
        let refused = http.get("http://127.0.0.1:1/").send().await.unwrap_err();
        let error = DavError::transport("GET http://127.0.0.1:1/", refused);
        assert!(error.is_transient());
        assert!(
            error
                .to_string()
                .starts_with("GET http://127.0.0.1:1/: cannot connect"),
            "{error}"
        );
        assert!(
            std::error::Error::source(&error).is_some(),
            "the cause is kept"
        );
        let unbuildable = http.get("not a url").send().await.unwrap_err();
        assert!(!DavError::transport("GET", unbuildable).is_transient());
    }
}
