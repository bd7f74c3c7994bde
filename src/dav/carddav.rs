//! Collected contacts on a standard CardDAV server (Radicale, SabreDAV, Nextcloud, Baikal):
//! one `PUT {book}{uid}.vcf` with `If-None-Match: *` (412 = already there), Basic auth with a
//! service account or the owner's own credentials, and, when `create_collections` allows it,
//! one extended MKCOL of a missing address book.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::{Method, StatusCode, Url};

use crate::config::ConfigError;
use crate::config::settings::DavSettings;
use crate::dav::contact::{CARDDAV_CONTACT, ContactJob};
use crate::dav::credentials::Credentials;
use crate::dav::known_contacts::KnownContacts;
use crate::dav::transport::{ClientSettings, DavError, client};
use crate::mail::job::{Delivery, JobHandler, OutboxJob};

/// Extended MKCOL (RFC 5689) body creating an address book.
const MKCOL_ADDRESSBOOK: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype><D:displayname>Collected contacts</D:displayname></D:prop></D:set></D:mkcol>"#;

/// Delivers `carddav-contact` jobs.
pub struct CardDavContactHandler {
    client: reqwest::Client,
    base: String,
    template: String,
    credentials: Credentials,
    create_collections: bool,
    /// Address books a MKCOL was already made for: "once" per book and process.
    created: tokio::sync::Mutex<HashSet<String>>,
    known: KnownContacts,
    /// HTTP requests sent so far (for metrics and the request-count replay).
    requests: AtomicU64,
}

impl CardDavContactHandler {
    /// Validates `[dav]` for the standard dialect (base URL, template, credentials) once.
    pub fn new(settings: &DavSettings, known: KnownContacts) -> Result<Self, ConfigError> {
        let base = settings.base_url.trim().trim_end_matches('/').to_string();
        if Url::parse(&base).is_err() {
            return Err(ConfigError::new(format!(
                "mailetd.toml: [dav] base_url {:?} is not a URL: the standard dialect needs one (e.g. http://127.0.0.1:5232)",
                crate::config::secret::redact_url_value(&settings.base_url)
            )));
        }
        if !settings.addressbook_url.contains("{user}")
            && !settings.addressbook_url.contains("{local}")
        {
            return Err(ConfigError::new(format!(
                "mailetd.toml: [dav] addressbook_url {:?} names no user: use {{user}} or {{local}}",
                settings.addressbook_url
            )));
        }
        let credentials = Credentials::from_settings(settings)?;
        Ok(CardDavContactHandler {
            client: client(ClientSettings::from(settings))?,
            base,
            template: settings.addressbook_url.clone(),
            credentials,
            create_collections: settings.create_collections,
            created: tokio::sync::Mutex::new(HashSet::new()),
            known,
            requests: AtomicU64::new(0),
        })
    }

    /// The owner's address book URL, with a trailing `/`.
    pub fn book_url(&self, owner: &str) -> String {
        let local = owner.rsplit_once('@').map_or(owner, |(l, _)| l);
        let mut url = self
            .template
            .replace("{base}", &self.base)
            .replace("{user}", &segment(owner))
            .replace("{local}", &segment(local));
        if !url.ends_with('/') {
            url.push('/');
        }
        url
    }

    fn has_credentials(&self, owner: &str) -> bool {
        self.credentials.covers(owner)
    }

    /// DAV requests sent so far.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn request(&self, method: Method, url: &str, owner: &str) -> Option<reqwest::RequestBuilder> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.credentials
            .authorize(self.client.request(method, url), owner)
    }

    async fn put(&self, url: &str, contact: &ContactJob) -> Result<StatusCode, DavError> {
        let request = self
            .request(Method::PUT, url, &contact.owner)
            .expect("credentials checked before")
            .header("If-None-Match", "*")
            .header("Content-Type", "text/vcard; charset=utf-8")
            .body(contact.vcard.clone());
        request
            .send()
            .await
            .map(|r| r.status())
            .map_err(|e| DavError::transport(format!("PUT {url}"), e))
    }

    async fn mkcol(&self, url: &str, owner: &str, extended: bool) -> Result<StatusCode, DavError> {
        let mut request = self
            .request(
                Method::from_bytes(b"MKCOL").expect("valid method"),
                url,
                owner,
            )
            .expect("credentials checked before");
        if extended {
            request = request
                .header("Content-Type", "application/xml; charset=utf-8")
                .body(MKCOL_ADDRESSBOOK);
        }
        request
            .send()
            .await
            .map(|r| r.status())
            .map_err(|e| DavError::transport(format!("MKCOL {url}"), e))
    }

    /// Creates the address book (and its parent, which Radicale does not create for a
    /// service account). 405 means it exists already.
    async fn create_book(&self, book: &str, owner: &str) -> Result<(), DavError> {
        let status = self.mkcol(book, owner, true).await?;
        if status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED {
            return Ok(());
        }
        if status == StatusCode::CONFLICT {
            let parent = parent_url(book);
            let status = self.mkcol(&parent, owner, false).await?;
            if !(status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED) {
                return Err(DavError::status(format!("MKCOL {parent}"), status, ""));
            }
            let status = self.mkcol(book, owner, true).await?;
            if status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED {
                return Ok(());
            }
            return Err(DavError::status(format!("MKCOL {book}"), status, ""));
        }
        Err(DavError::status(format!("MKCOL {book}"), status, ""))
    }

    async fn done(&self, contact: &ContactJob) -> Delivery {
        crate::observe::Metrics::process().contact_collected();
        if let Err(e) = self
            .known
            .remember(CARDDAV_CONTACT, &contact.owner, &contact.contact)
            .await
        {
            // The contact is stored; forgetting it only costs a 412 next time.
            tracing::warn!(error = %e, "cannot remember a collected contact");
        }
        Delivery::Done
    }
}

/// A path segment, percent-encoded (an address may hold `/`, `%`, `?`, `#`).
pub(crate) fn segment(text: &str) -> String {
    let mut url = Url::parse("http://x/").expect("valid URL");
    url.path_segments_mut().expect("base URL").push(text);
    url.path()[1..].to_string()
}

fn parent_url(book: &str) -> String {
    let trimmed = book.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(i) => trimmed[..=i].to_string(),
        None => book.to_string(),
    }
}

#[async_trait::async_trait]
impl JobHandler for CardDavContactHandler {
    fn kinds(&self) -> &[&'static str] {
        &[CARDDAV_CONTACT]
    }

    async fn deliver(&self, job: &OutboxJob) -> Delivery {
        let contact = match ContactJob::from_job(job) {
            Ok(c) => c,
            Err(e) => return Delivery::Permanent(e.to_string()),
        };
        if !self.has_credentials(&contact.owner) {
            tracing::debug!(owner = %contact.owner, "no DAV credentials for this owner: contact not collected");
            return Delivery::Done;
        }
        let book = self.book_url(&contact.owner);
        let url = format!("{book}{}.vcf", contact.uid);
        let mut status = match self.put(&url, &contact).await {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        if matches!(status, StatusCode::NOT_FOUND | StatusCode::CONFLICT) {
            if !self.create_collections {
                return Delivery::Permanent(format!(
                    "PUT {url}: {status}: the address book {book} does not exist \
                     (create_collections = true in [dav] creates it)"
                ));
            }
            {
                // Held across the MKCOL: concurrent jobs for the same new book wait for
                // it instead of failing or creating it twice.
                let mut created = self.created.lock().await;
                if !created.contains(&book) {
                    match self.create_book(&book, &contact.owner).await {
                        Ok(()) => tracing::info!(%book, "address book created"),
                        Err(e) if e.is_transient() => return e.into(),
                        Err(e) => {
                            created.insert(book.clone());
                            return e.into();
                        }
                    }
                    created.insert(book.clone());
                }
            }
            status = match self.put(&url, &contact).await {
                Ok(s) => s,
                Err(e) => return e.into(),
            };
            if matches!(status, StatusCode::NOT_FOUND | StatusCode::CONFLICT) {
                return Delivery::Permanent(format!(
                    "PUT {url}: {status} although the address book {book} was created (a conflicting card?)"
                ));
            }
        }
        match status {
            s if s.is_success() => self.done(&contact).await,
            StatusCode::PRECONDITION_FAILED => self.done(&contact).await,
            s => DavError::status(format!("PUT {url}"), s, "").into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn handler(template: &str) -> CardDavContactHandler {
        let settings = DavSettings {
            base_url: "http://127.0.0.1:1/dav/".into(),
            addressbook_url: template.into(),
            username: Some("svc".into()),
            password: Some(Secret::new("s3cret")),
            ..DavSettings::default()
        };
        CardDavContactHandler::new(&settings, KnownContacts::new(None, 10)).unwrap()
    }

    #[test]
    fn templates_expand_user_and_local_part() {
        assert_eq!(
            handler("{base}/{user}/collected").book_url("alice@example.org"),
            "http://127.0.0.1:1/dav/alice@example.org/collected/"
        );
        assert_eq!(
            handler("{base}/addressbooks/{local}/collected/").book_url("a/b#c@example.org"),
            "http://127.0.0.1:1/dav/addressbooks/a%2Fb%23c/collected/"
        );
        assert_eq!(parent_url("http://h/a/b/"), "http://h/a/");
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let settings = DavSettings {
            password: Some(Secret::new("s3cret")),
            ..DavSettings::default()
        };
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn unreachable_server_is_retried() {
        let job = ContactJob::new("alice@example.org", "bob@x.org", None).into_job(CARDDAV_CONTACT);
        assert!(matches!(
            handler("{base}/{user}/c/").deliver(&job).await,
            Delivery::Retry(_)
        ));
    }
}
