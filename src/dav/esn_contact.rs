//! Collected contacts on esn-sabre (Twake), at the URL and with the headers tmail uses
//! (spec/twake-collector.md §4): the owner's OpenPaaS id from the user API, then
//! `PUT /addressbooks/{ownerId}/collected/{uid}.vcf` with `Accept: application/vcard+json`
//! and the owner impersonated (`admin&owner:password`). Where tmail first GETs the card and
//! PUTs it on 404 (two requests per new contact, and a card created in between would be
//! overwritten), the PUT carries `If-None-Match: *`, which sabre/dav (esn-sabre's base)
//! answers with 412 when the card exists: one request per new contact, and an existing card
//! (perhaps edited by its owner) is never replaced. Unlike tmail, a failure is retried
//! (5xx, 429, timeouts) or dead-lettered, not dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::StatusCode;

use crate::dav::contact::{ContactJob, ESN_CONTACT};
use crate::dav::known_contacts::KnownContacts;
use crate::dav::openpaas::DavConfig;
use crate::dav::transport::DavError;
use crate::dav::users::{LookupError, impersonation};
use crate::mail::job::{Delivery, JobHandler, OutboxJob};

/// Resolves an owner's address to the OpenPaaS user id esn-sabre names its books by
/// (implemented by [`DavServices`](crate::dav::DavServices) with its cached user lookup).
#[async_trait::async_trait]
pub trait OwnerIds: Send + Sync {
    /// `Ok(None)` for an unknown user; `Err` for a failure worth retrying.
    async fn user_id(&self, email: &str) -> Result<Option<String>, LookupError>;
}

/// Delivers `esn-contact` jobs.
pub struct EsnContactHandler {
    client: reqwest::Client,
    dav: DavConfig,
    /// `dav.api.uri` without its trailing `/`.
    base: String,
    users: Arc<dyn OwnerIds>,
    known: KnownContacts,
    /// HTTP requests sent so far (for metrics and the request-count replay).
    requests: AtomicU64,
}

impl EsnContactHandler {
    /// A handler talking to esn-sabre (`dav`) with `client`, resolving owners with `users`.
    pub fn new(
        client: reqwest::Client,
        dav: DavConfig,
        users: Arc<dyn OwnerIds>,
        known: KnownContacts,
    ) -> Self {
        EsnContactHandler {
            client,
            base: dav.api_uri.as_str().trim_end_matches('/').to_string(),
            dav,
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
        crate::observe::Metrics::process().contact_collected();
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

#[async_trait::async_trait]
impl JobHandler for EsnContactHandler {
    fn kinds(&self) -> &[&'static str] {
        &[ESN_CONTACT]
    }

    async fn deliver(&self, job: &OutboxJob) -> Delivery {
        let contact = match ContactJob::from_job(job) {
            Ok(c) => c,
            Err(e) => return Delivery::Permanent(e.to_string()),
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
            self.base, contact.uid
        );
        let auth = impersonation(&self.dav, &contact.owner);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let put = self
            .client
            .put(&url)
            .header("Accept", "application/vcard+json")
            .header("Content-Type", "application/vcard")
            .header("If-None-Match", "*")
            .header("Authorization", &auth)
            .body(contact.vcard.clone())
            .send()
            .await;
        match put.map(|r| r.status()) {
            Err(e) => DavError::transport(format!("PUT {url}"), e).into(),
            // 412: the card exists already (the user may have edited it: left alone).
            Ok(s) if s.is_success() || s == StatusCode::PRECONDITION_FAILED => {
                self.done(&contact).await
            }
            Ok(s) => DavError::status(format!("PUT {url}"), s, "").into(),
        }
    }
}
