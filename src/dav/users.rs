//! OpenPaaS user resolution: email → OpenPaaS user id (`_id`), as tmail's
//! `OpenPaasDavUserProvider`, with a cache tmail does not have, and esn-sabre's
//! auto-provisioning probe.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, HeaderValue};
use reqwest::{Client, Method, StatusCode};
use serde::Deserialize;

use super::openpaas::{DavConfig, OpenPaasConfig};
use super::transport::body_excerpt;

/// Largest number of cached answers before expired ones are swept.
const CACHE_SWEEP_AT: usize = 50_000;

/// A lookup that could not be answered; always transient (retry later).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The API answered with an unexpected status.
    #[error("HTTP {status} from {what}: {body}")]
    Status {
        /// Which request (`GET …/users`, `PROPFIND /`).
        what: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// Connection error, timeout, unreadable body.
    #[error("{what}: {}", super::transport::transport_reason(.source))]
    Transport {
        /// Which request.
        what: String,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// A 200 whose body is not the expected JSON array.
    #[error("unexpected users response: HTTP 200 from {what}: {source}: {body}")]
    BadResponse {
        /// Which request.
        what: String,
        /// The start of the response body.
        body: String,
        /// Why it is not the expected JSON.
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct UserEntry {
    #[serde(rename = "_id")]
    id: String,
    #[serde(rename = "preferredEmail", default)]
    preferred_email: Option<String>,
}

/// Resolves recipients to OpenPaaS user ids, caching hits for the response's
/// `Cache-Control: max-age` and unknown users for a configured TTL.
pub struct UserLookup {
    client: Client,
    users_url: String,
    authorization: HeaderValue,
    unknown_ttl: Duration,
    cache: Mutex<HashMap<String, (Option<String>, Instant)>>,
    /// Striped locks so that concurrent jobs for one user make one lookup, not one each.
    in_flight: Vec<tokio::sync::Mutex<()>>,
}

/// Number of lookup lock stripes.
const STRIPES: usize = 64;

impl std::fmt::Debug for UserLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserLookup")
            .field("users_url", &self.users_url)
            .finish_non_exhaustive()
    }
}

impl UserLookup {
    /// A lookup on `config.api_uri` with `client` (which carries the timeout and TLS policy).
    pub fn new(client: Client, config: &OpenPaasConfig) -> Self {
        UserLookup {
            client,
            users_url: format!("{}/users", config.api_uri.as_str().trim_end_matches('/')),
            authorization: basic_auth(&config.admin_user, config.admin_password.expose()),
            unknown_ttl: config.unknown_user_ttl,
            cache: Mutex::new(HashMap::new()),
            in_flight: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// The user id of `email`, `None` for an unknown user (cached answers first).
    pub async fn find(&self, email: &str) -> Result<Option<String>, LookupError> {
        self.resolve(email, None).await
    }

    /// Like [`find`](Self::find), but when the API does not know the user, asks esn-sabre
    /// to provision it (`PROPFIND /` as the user) and looks it up once more.
    pub async fn resolve(
        &self,
        email: &str,
        provision: Option<(&Client, &DavConfig)>,
    ) -> Result<Option<String>, LookupError> {
        let metrics = crate::observe::Metrics::process();
        if let Some(answer) = self.cached(email) {
            metrics.user_cache_hit();
            return Ok(answer);
        }
        let _turn = self.in_flight[stripe(email)].lock().await;
        if let Some(answer) = self.cached(email) {
            metrics.user_cache_hit();
            return Ok(answer);
        }
        let started = std::time::Instant::now();
        let fetched = self.fetch(email).await;
        metrics.user_cache_miss(started.elapsed());
        let (mut found, mut ttl) = fetched?;
        if found.is_none()
            && let Some((client, dav)) = provision
        {
            let status = provisioning_probe(client, dav, email).await?;
            tracing::debug!(user = email, status, "provisioning probe answered");
            (found, ttl) = self.fetch(email).await?;
        }
        if found.is_none() {
            tracing::debug!(
                user = email,
                "not an OpenPaaS user (external recipient?): nothing to send"
            );
        }
        self.remember(email, &found, ttl);
        Ok(found)
    }

    /// Whether `email` is known, from the cache only: `Some(None)` for a user the API
    /// recently said it does not know, `None` when nothing fresh is cached.
    pub fn cached(&self, email: &str) -> Option<Option<String>> {
        let cache = self.cache.lock().unwrap();
        match cache.get(email) {
            Some((answer, until)) if *until > Instant::now() => Some(answer.clone()),
            _ => None,
        }
    }

    /// Caches an answer (`None` = unknown user, for the unknown-user TTL).
    pub fn remember(&self, email: &str, answer: &Option<String>, ttl: Option<Duration>) {
        let ttl = match (answer, ttl) {
            (Some(_), Some(ttl)) => ttl,
            (Some(_), None) => return,
            (None, _) => self.unknown_ttl,
        };
        if ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= CACHE_SWEEP_AT {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
        }
        cache.insert(email.to_string(), (answer.clone(), Instant::now() + ttl));
    }

    /// One `GET {api}/users?email={email}`: the id if exactly one user has this preferred
    /// email, and how long the answer may be cached.
    async fn fetch(&self, email: &str) -> Result<(Option<String>, Option<Duration>), LookupError> {
        // Not URL-encoded, as tmail (String.format); reqwest still escapes what a URL cannot hold.
        let url = format!("{}?email={email}", self.users_url);
        let response = self
            .client
            .get(&url)
            .header(AUTHORIZATION, self.authorization.clone())
            .send()
            .await
            .map_err(|source| LookupError::Transport {
                what: format!("GET {}", self.users_url),
                source,
            })?;
        let status = response.status();
        let max_age = response
            .headers()
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = response
            .bytes()
            .await
            .map_err(|source| LookupError::Transport {
                what: format!("GET {}", self.users_url),
                source,
            })?;
        if status != StatusCode::OK {
            return Err(LookupError::Status {
                what: format!("GET {}", self.users_url),
                status: status.as_u16(),
                body: body_excerpt(&body),
            });
        }
        let users: Vec<UserEntry> =
            serde_json::from_slice(&body).map_err(|source| LookupError::BadResponse {
                what: format!("GET {}", self.users_url),
                body: body_excerpt(&body),
                source,
            })?;
        Ok((pick_user(email, users), max_age))
    }
}

/// tmail's rule: exactly one user, whose `preferredEmail` is the query string.
fn pick_user(email: &str, users: Vec<UserEntry>) -> Option<String> {
    match users.as_slice() {
        [one] if one.preferred_email.as_deref() == Some(email) => Some(one.id.clone()),
        [_] => None,
        [] => None,
        many => {
            tracing::warn!(
                user = email,
                matches = many.len(),
                "several OpenPaaS users match this email; none is used"
            );
            None
        }
    }
}

/// esn-sabre provisions a user on its first authenticated request: `PROPFIND /` as the user
/// (tmail `DavClient`). Returns the status (207 expected); a status is not an error.
pub async fn provisioning_probe(
    client: &Client,
    dav: &DavConfig,
    email: &str,
) -> Result<u16, LookupError> {
    let url = format!("{}/", dav.api_uri.as_str().trim_end_matches('/'));
    let response = client
        .request(Method::from_bytes(b"PROPFIND").expect("valid method"), &url)
        .header(ACCEPT, "application/xml")
        .header("Depth", "0")
        .header(AUTHORIZATION, impersonation(dav, email))
        .body(r#"<d:propfind xmlns:d="DAV:"><d:prop><d:current-user-principal/></d:prop></d:propfind>"#)
        .send()
        .await
        .map_err(|source| LookupError::Transport {
            what: format!("PROPFIND {url}"),
            source,
        })?;
    Ok(response.status().as_u16())
}

/// esn-sabre impersonation: `Basic base64("{dav.admin.user}&{email}:{dav.admin.password}")`.
pub fn impersonation(dav: &DavConfig, email: &str) -> HeaderValue {
    basic_auth(
        &format!("{}&{email}", dav.admin_user),
        dav.admin_password.expose(),
    )
}

/// `Basic base64(user:password)`, marked sensitive so that it is never printed.
pub fn basic_auth(user: &str, password: &str) -> HeaderValue {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value =
        HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a valid header");
    value.set_sensitive(true);
    value
}

fn stripe(email: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(email) as usize % STRIPES
}

fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|v| v.trim().parse().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(json: &str) -> Vec<UserEntry> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn exactly_one_user_with_the_same_preferred_email() {
        let one = r#"[{"_id":"u1","preferredEmail":"bob@x.org","emails":["bob@x.org"],"extra":1}]"#;
        assert_eq!(pick_user("bob@x.org", users(one)), Some("u1".into()));
        assert_eq!(pick_user("Bob@x.org", users(one)), None);
        assert_eq!(pick_user("bob@x.org", users("[]")), None);
        let two = r#"[{"_id":"u1","preferredEmail":"bob@x.org"},{"_id":"u2","preferredEmail":"bob@x.org"}]"#;
        assert_eq!(pick_user("bob@x.org", users(two)), None);
        let other = r#"[{"_id":"u1","preferredEmail":"alice@x.org"}]"#;
        assert_eq!(pick_user("bob@x.org", users(other)), None);
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("max-age=60, public"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("public,max-age=5"), Some(Duration::from_secs(5)));
        assert_eq!(max_age("no-cache"), None);
    }

    #[test]
    fn impersonation_header_is_admin_ampersand_user() {
        let dav = DavConfig {
            api_uri: "http://sabre".parse().unwrap(),
            admin_user: "admin".into(),
            admin_password: super::super::openpaas::Secret::new("secret123"),
            trust_all_certs: false,
            response_timeout: Duration::from_secs(1),
        };
        let value = impersonation(&dav, "bob@x.org");
        // base64("admin&bob@x.org:secret123")
        assert_eq!(
            value.to_str().unwrap(),
            "Basic YWRtaW4mYm9iQHgub3JnOnNlY3JldDEyMw=="
        );
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("YWRt"));
    }
}
