//! Outbox handler for `esn-itip` jobs: sends one iTIP JSON to esn-sabre as tmail's
//! `CalDavCollect` does (`ITIP {dav.api.uri}/calendars/{userId}`, impersonating the
//! recipient), but with retries instead of a log line when something is down.

use serde::Deserialize;
use std::sync::Arc;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use super::DavServices;
use super::itip_body::ItipBody;
use super::itip_target::{ItipMessage, ItipTarget, ItipText};
use super::transport::DavError;
use super::users::impersonation;
use crate::ical_json::ItipDocument;
use crate::mail::job::{Delivery, JobHandler, OutboxJob};

/// The job kind.
pub const KIND: &str = "esn-itip";

/// Delivers `esn-itip` jobs. Payload: `{"recipient": "<email>", "body": "<JSON text>"}`, or
/// `{"recipient": …, "document": {…}}` with the `ical` in the job's shared text.
pub struct EsnItipHandler {
    services: Arc<DavServices>,
}

impl EsnItipHandler {
    /// A handler using the shared clients and user cache.
    pub fn new(services: Arc<DavServices>) -> Self {
        EsnItipHandler { services }
    }
}

/// The esn dialect as an [`ItipTarget`]: one `esn-itip` job per recipient, sent by
/// [`EsnItipHandler`] to esn-sabre's `ITIP` endpoint.
pub struct EsnItipTarget {
    /// For the user cache: a recipient the OpenPaaS API just said it does not know gets
    /// no job (one lookup per unknown partner per TTL, not one dead letter per mail).
    services: Option<Arc<DavServices>>,
    /// `updatesOnly` (tmail's RestrictiveCalDavCollect): the handler looks the event up first.
    updates_only: bool,
}

impl EsnItipTarget {
    /// A target using the process's DAV services (none when running dry without them).
    pub fn new(services: Option<Arc<DavServices>>, updates_only: bool) -> Self {
        EsnItipTarget {
            services,
            updates_only,
        }
    }

    /// `dav.api.uri` without its trailing `/`, when configured.
    pub fn dav_uri(&self) -> Option<&str> {
        let dav = self.services.as_ref()?.openpaas.dav.as_ref()?;
        Some(dav.api_uri.as_str().trim_end_matches('/'))
    }
}

impl ItipTarget for EsnItipTarget {
    fn takes_tasks(&self) -> bool {
        false
    }

    fn local_recipients_only(&self) -> bool {
        false
    }

    fn known_absent(&self, recipient: &str) -> bool {
        self.services
            .as_ref()
            .is_some_and(|s| s.users.cached(recipient) == Some(None))
    }

    fn describe(&self, message: &ItipMessage<'_>) -> String {
        format!(
            "ITIP {}/calendars/{{OpenPaaS _id of {}}}\nContent-Type: application/json\nAuthorization: Basic base64(<dav.admin.user>&{}:***)\n\n{}\n",
            self.dav_uri().unwrap_or("{dav.api.uri}"),
            message.recipient,
            message.recipient,
            message.text.json()
        )
    }

    fn job(&self, message: &ItipMessage<'_>) -> OutboxJob {
        let recipient = message.recipient;
        let mut job = match &message.text {
            ItipText::Shared(d) => {
                let mut job =
                    OutboxJob::new(KIND, recipient.to_string(), shared_payload(&d.document));
                job.shared = Some(d.ical.clone());
                job
            }
            ItipText::Json(text) => {
                OutboxJob::new(KIND, recipient.to_string(), payload(recipient, text))
            }
        };
        if self.updates_only {
            job.payload["updatesOnly"] = true.into();
        }
        job
    }
}

/// The `ITIP` method (esn-sabre's own verb).
pub fn itip_method() -> Method {
    Method::from_bytes(b"ITIP").expect("valid method")
}

/// The payload of an `esn-itip` job for `recipient` (already lowercased) and the JSON text.
pub fn payload(recipient: &str, body: &str) -> serde_json::Value {
    serde_json::json!({ "recipient": recipient, "body": body })
}

/// The payload of an `esn-itip` job whose `ical` is the job's shared text
/// ([`OutboxJob::shared`]): every other field of the JSON but the recipient, which is the
/// job's target, rendered at delivery. The document is kept as its JSON text: a JSON object
/// in memory is a tree of a dozen allocations (about 1 KiB). Without the recipient, the
/// jobs of an invitation's recipients are the same job with several targets
/// ([`OutboxJob::absorb`]).
pub fn shared_payload(document: &ItipDocument) -> serde_json::Value {
    let document = ItipDocument {
        recipient: String::new(),
        ..document.clone()
    };
    let text = serde_json::to_string(&document).expect("strings serialise");
    serde_json::json!({ "document": text })
}

/// The recipient of an `esn-itip` job: the payload's (jobs with a `body`, and jobs stored
/// by earlier versions), else the job's target.
fn recipient(job: &OutboxJob) -> &str {
    job.payload
        .get("recipient")
        .and_then(|v| v.as_str())
        .unwrap_or(&job.target)
}

/// The document of a [`shared_payload`] for `recipient`: its JSON text, or (jobs stored by
/// earlier versions) the object itself.
fn shared_document(payload: &serde_json::Value, recipient: &str) -> Option<ItipDocument> {
    let mut document: ItipDocument = match payload.get("document")? {
        serde_json::Value::String(text) => serde_json::from_str(text).ok()?,
        object => ItipDocument::deserialize(object).ok()?,
    };
    if document.recipient.is_empty() {
        document.recipient = recipient.to_string();
    }
    Some(document)
}

/// The JSON body of an `esn-itip` job: `body` as given, or `document` with the shared
/// `ical`, streamed (see [`ItipBody`]); with the document's `method` and `uid`.
fn body(job: &OutboxJob) -> Option<(reqwest::Body, Option<String>)> {
    if let Some(body) = job.payload.get("body").and_then(|v| v.as_str()) {
        return Some((reqwest::Body::from(body.to_string()), only_if_present(body)));
    }
    let document = shared_document(&job.payload, recipient(job))?;
    let ical = job.shared.clone()?;
    let uid = document_uid(&document);
    Some((reqwest::Body::wrap(ItipBody::new(&document, ical)), uid))
}

/// How esn-sabre's answer to `what` (an `ITIP` request) is handled: 204 is done; any other
/// status is retried or dead-lettered by the shared rule ([`super::transport::is_transient_status`]).
pub fn classify(what: &str, status: StatusCode, body: &[u8]) -> Delivery {
    if status == StatusCode::NO_CONTENT {
        return Delivery::Done;
    }
    DavError::status(what, status, body).into()
}

/// With `updatesOnly`, the UID to look up first; `None` for a REPLY, which goes through
/// (tmail's `RestrictiveCalDavCollect`: the organizer receives the attendee's answer).
fn only_if_present(body: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let method = json.get("method").and_then(|m| m.as_str()).unwrap_or("");
    if method.eq_ignore_ascii_case("REPLY") {
        return None;
    }
    json.get("uid").and_then(|u| u.as_str()).map(String::from)
}

/// [`only_if_present`] for a document whose `ical` is shared.
fn document_uid(document: &ItipDocument) -> Option<String> {
    let method = document.method.as_deref().unwrap_or("");
    if method.eq_ignore_ascii_case("REPLY") {
        return None;
    }
    document.uid.clone()
}

#[async_trait::async_trait]
impl JobHandler for EsnItipHandler {
    fn kinds(&self) -> &[&'static str] {
        &[KIND]
    }

    async fn deliver(&self, job: &OutboxJob) -> Delivery {
        let recipient = recipient(job);
        let (false, Some((body, uid))) = (recipient.is_empty(), body(job)) else {
            return Delivery::Permanent("malformed esn-itip job: no recipient or body".into());
        };
        let Some((client, dav)) = self.services.dav() else {
            return Delivery::Retry("dav.api.uri is not configured".into());
        };
        let user_id = match self
            .services
            .users
            .resolve(recipient, Some((client, dav)))
            .await
        {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Delivery::Permanent(format!(
                    "unknown user {recipient}: the OpenPaaS API has no user with this email, even after the provisioning probe"
                ));
            }
            Err(e) => return Delivery::Retry(format!("user lookup: {e}")),
        };
        if job.payload.get("updatesOnly") == Some(&serde_json::Value::Bool(true))
            && let Some(uid) = uid
        {
            match super::esn_event_lookup::event_exists(client, dav, &user_id, recipient, &uid)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(
                        recipient,
                        uid,
                        job = job.id,
                        "updatesOnly: the event is not in the recipient's calendars; not imported"
                    );
                    return Delivery::Done;
                }
                Err(e) => return Delivery::Retry(format!("event lookup: {e}")),
            }
        }
        let url = format!(
            "{}/calendars/{}",
            dav.api_uri.as_str().trim_end_matches('/'),
            user_id
        );
        let response = client
            .request(itip_method(), &url)
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, impersonation(dav, recipient))
            .body(body)
            .send()
            .await;
        let response = match response {
            Err(e) => return DavError::transport(format!("ITIP {url}"), e).into(),
            Ok(response) => response,
        };
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        let delivery = classify(&format!("ITIP /calendars/{user_id}"), status, &body);
        if delivery == Delivery::Done {
            tracing::info!(recipient, job = job.id, "iTIP delivered to esn-sabre");
        }
        delivery
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_the_issue_says() {
        let classify =
            |s: u16, body: &[u8]| classify("ITIP /x", StatusCode::from_u16(s).unwrap(), body);
        assert_eq!(classify(204, b""), Delivery::Done);
        for s in [500u16, 502, 503, 504, 429] {
            assert!(matches!(classify(s, b""), Delivery::Retry(_)), "{s}");
        }
        for s in [400u16, 401, 403, 404] {
            assert_eq!(
                classify(s, b"no"),
                Delivery::Permanent(format!("ITIP /x: HTTP {s}: no"))
            );
        }
    }
}
