//! Collected contacts on esn-sabre (Twake), exactly as tmail sends them
//! (spec/twake-collector.md §4): the owner's OpenPaaS id from the user API, then
//! `GET /addressbooks/{ownerId}/collected/{uid}.vcf` and, on 404, a `PUT` of the vCard, with
//! `Accept: application/vcard+json` and the owner impersonated (`admin&owner:password`).
//! Unlike tmail, a failure is retried (5xx, 429, timeouts) or dead-lettered, not dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;

use crate::config::settings::Secret;
use crate::dav::carddav::classify;
use crate::dav::contact::{ContactJob, ESN_CONTACT};
use crate::dav::known_contacts::KnownContacts;
use crate::outbox::{Delivery, JobHandler, OutboxJob};

/// Resolves an owner's address to the OpenPaaS user id esn-sabre names its books by.
///
/// STAND-IN: the `esn` branch provides `crate::dav::users::UserLookup` (cached); at merge,
/// implement this trait for it (or call it directly) and drop [`OpenPaasUsers`].
#[async_trait::async_trait]
pub trait OwnerIds: Send + Sync {
    /// `Ok(None)` for an unknown user; `Err` for a failure worth retrying.
    async fn user_id(&self, email: &str) -> Result<Option<String>, String>;
}

/// esn-sabre's base URL and the admin account used to impersonate owners.
#[derive(Clone, Debug)]
pub struct EsnDav {
    /// `dav.url` of openpaas.properties, without the trailing `/`.
    pub url: String,
    /// `dav.admin.user`.
    pub admin_user: String,
    /// `dav.admin.password`.
    pub admin_password: Secret,
}

/// `Authorization` value impersonating `owner` (esn-sabre's `admin&user` Basic scheme).
///
/// STAND-IN for the impersonation function of the `esn` branch.
fn impersonation(dav: &EsnDav, owner: &str) -> String {
    let token = STANDARD.encode(format!(
        "{}&{}:{}",
        dav.admin_user,
        owner,
        dav.admin_password.expose()
    ));
    format!("Basic {token}")
}

/// Delivers `esn-contact` jobs.
pub struct EsnContactHandler {
    client: reqwest::Client,
    dav: EsnDav,
    users: Arc<dyn OwnerIds>,
    known: KnownContacts,
    /// HTTP requests sent so far (for metrics and the request-count replay).
    requests: AtomicU64,
}

impl EsnContactHandler {
    /// A handler talking to `dav` with `client`, resolving owners with `users`.
    pub fn new(
        client: reqwest::Client,
        dav: EsnDav,
        users: Arc<dyn OwnerIds>,
        known: KnownContacts,
    ) -> Self {
        let url = dav.url.trim_end_matches('/').to_string();
        EsnContactHandler {
            client,
            dav: EsnDav { url, ..dav },
            users,
            known,
            requests: AtomicU64::new(0),
        }
    }

    /// DAV requests sent so far (user lookups not included: they are cached elsewhere).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    async fn done(&self, contact: &ContactJob) -> Delivery {
        crate::observe::metrics().contacts_collected.inc();
        if let Err(e) = self
            .known
            .remember(ESN_CONTACT, &contact.owner, &contact.contact)
            .await
        {
            tracing::warn!(error = %e, "cannot remember a collected contact");
        }
        Delivery::Done
    }
}

fn transport(method: &str, url: &str, e: &reqwest::Error) -> Delivery {
    let what = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    Delivery::Retry(format!("{method} {url}: {what}"))
}

#[async_trait::async_trait]
impl JobHandler for EsnContactHandler {
    fn kinds(&self) -> &[&'static str] {
        &[ESN_CONTACT]
    }

    async fn deliver(&self, job: &OutboxJob) -> Delivery {
        let contact = match ContactJob::from_job(job) {
            Ok(c) => c,
            Err(e) => return Delivery::Permanent(e),
        };
        let owner_id = match self.users.user_id(&contact.owner).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                // tmail's behaviour: an unknown owner (an external sender) collects nothing.
                tracing::debug!(owner = %contact.owner, "owner unknown to OpenPaaS: contact not collected");
                return Delivery::Done;
            }
            Err(e) => return Delivery::Retry(format!("user lookup of {}: {e}", contact.owner)),
        };
        let url = format!(
            "{}/addressbooks/{owner_id}/collected/{}.vcf",
            self.dav.url, contact.uid
        );
        let auth = impersonation(&self.dav, &contact.owner);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let got = self
            .client
            .get(&url)
            .header("Accept", "application/vcard+json")
            .header("Authorization", &auth)
            .send()
            .await;
        match got.map(|r| r.status()) {
            Err(e) => return transport("GET", &url, &e),
            Ok(s) if s.is_success() => return self.done(&contact).await,
            Ok(StatusCode::NOT_FOUND) => {}
            Ok(s) => return classify("GET", &url, s),
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let put = self
            .client
            .put(&url)
            .header("Accept", "application/vcard+json")
            .header("Content-Type", "application/vcard")
            .header("Authorization", &auth)
            .body(contact.vcard.clone())
            .send()
            .await;
        match put.map(|r| r.status()) {
            Err(e) => transport("PUT", &url, &e),
            Ok(s) if s.is_success() || s == StatusCode::PRECONDITION_FAILED => {
                self.done(&contact).await
            }
            Ok(s) => classify("PUT", &url, s),
        }
    }
}

/// STAND-IN for `crate::dav::users::UserLookup` (esn branch), uncached:
/// `GET {api}/users?email=` with the admin's Basic auth; `[]` = unknown, else `[0]._id`.
pub struct OpenPaasUsers {
    client: reqwest::Client,
    api_url: String,
    user: String,
    password: Secret,
}

impl OpenPaasUsers {
    /// A lookup against `api_url` (`openpaas.api.uri`) as `user`.
    pub fn new(client: reqwest::Client, api_url: &str, user: &str, password: Secret) -> Self {
        OpenPaasUsers {
            client,
            api_url: api_url.trim_end_matches('/').to_string(),
            user: user.to_string(),
            password,
        }
    }
}

#[async_trait::async_trait]
impl OwnerIds for OpenPaasUsers {
    async fn user_id(&self, email: &str) -> Result<Option<String>, String> {
        let response = self
            .client
            .get(format!("{}/users", self.api_url))
            .query(&[("email", email)])
            .basic_auth(&self.user, Some(self.password.expose()))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("user API answered {}", response.status()));
        }
        let users: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
        Ok(users
            .get(0)
            .and_then(|u| u.get("_id"))
            .and_then(|id| id.as_str())
            .map(String::from))
    }
}
