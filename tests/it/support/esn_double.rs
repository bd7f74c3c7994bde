//! A TEST DOUBLE of esn-sabre's ITIP endpoint and of the OpenPaaS user API (Twake Calendar
//! side service): neither can run here (they need MongoDB, RabbitMQ, LDAP…). It follows
//! `spec/twake-collector.md` §5–§6 and nothing more:
//! - `GET {base}/api/users?email=`: admin Basic auth checked (401 otherwise); 400 when the
//!   email has no domain; `200 []` for an unknown user; `200 [user]` with
//!   `Cache-Control: max-age=60, public` for a known one.
//! - `ITIP /calendars/{id}`: Basic `admin&email:password` impersonation (401 on a bad admin
//!   password or an unknown user); 400 (empty body) unless `uid` is set and `sender`,
//!   `recipient`, `ical` are non-empty; 500 when `ical` is not a calendar; 403 unless the
//!   impersonated user is the recipient; 404 for an unknown id; 204 otherwise.
//! - `PROPFIND /` as a user: provisions users registered with [`EsnDouble::provisionable`]
//!   (esn-sabre's auto-provisioning), 207; 401 for unknown users.
//! - `PROPFIND /calendars/{id}` and `REPORT /calendars/{id}/{id}/` (impersonating the owner,
//!   403 otherwise): the calendar home lists one calendar (`<cal:calendar/>` resourcetype),
//!   and a CalDAV `calendar-query` on a UID (RFC 4791 7.8.6) answers 207 with one response
//!   when the event is there, none otherwise. Events are those of accepted iTIP REQUESTs and
//!   those seeded with [`EsnDouble::add_event`] (what tmail's RestrictiveCalDavCollect asks).
//! - `GET|PUT /addressbooks/{id}/collected/{uid}.vcf` (impersonating the owner): 404/200,
//!   201 (204 when replacing; 412 without writing when `If-None-Match: *` meets an existing
//!   card, as sabre/dav's precondition checks answer).
//! - A switchable failure mode answers 503 to the next N requests, or to all until switched
//!   back. Fault modes of the user API alone: a delay before each answer
//!   ([`EsnDouble::set_users_delay`]) and a `200` with a body that is not JSON
//!   ([`EsnDouble::set_users_garbage`]). Every request is recorded (method, path with query, headers, body, status).
//! - [`EsnDouble::set_dav_unresponsive`]: esn-sabre accepts requests and never answers
//!   (every path outside the user API), a hung server.
//! - [`EsnDouble::start_tls`] serves the same over HTTPS with a self-signed certificate, for
//!   the TLS verification checks (`*_TRUST_ALL_SSL_CERTS`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, Uri};
use axum::response::Response;
use base64::Engine;

/// OpenPaaS admin credentials the double expects.
pub const OPENPAAS_ADMIN: (&str, &str) = ("admin@linagora.local", "secret");
/// esn-sabre admin credentials the double expects.
pub const DAV_ADMIN: (&str, &str) = ("admin", "secret123");

/// One request as the double saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method (`GET`, `ITIP`, `PROPFIND`, `PUT`).
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    /// Headers (lowercase names).
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
    /// The status the double answered.
    pub status: u16,
}

impl Recorded {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

#[derive(Default)]
struct State {
    users: HashMap<String, String>,
    provisionable: HashMap<String, String>,
    fail_next: usize,
    fail_always: bool,
    requests: Vec<Recorded>,
    cards: HashMap<String, Vec<u8>>,
    /// (user id, event UID) of the events in the user's calendar.
    events: std::collections::HashSet<(String, String)>,
    users_delay: std::time::Duration,
    users_garbage: bool,
    dav_unresponsive: bool,
}

/// The running double; stops with the test process.
#[derive(Clone)]
pub struct EsnDouble {
    /// Its loopback port.
    pub port: u16,
    state: Arc<Mutex<State>>,
    scheme: &'static str,
    handshakes_failed: Arc<std::sync::atomic::AtomicUsize>,
}

impl EsnDouble {
    /// Starts the double on a free loopback port, in a thread of its own.
    pub fn start() -> EsnDouble {
        let state = Arc::new(Mutex::new(State::default()));
        let port = super::serve_double(state.clone(), handle);
        EsnDouble {
            port,
            state,
            scheme: "http",
            handshakes_failed: Arc::default(),
        }
    }

    /// Starts the double over HTTPS with a fresh self-signed certificate.
    pub fn start_tls() -> EsnDouble {
        let state = Arc::new(Mutex::new(State::default()));
        let handshakes_failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let port = super::serve_double_tls(state.clone(), handle, handshakes_failed.clone());
        EsnDouble {
            port,
            state,
            scheme: "https",
            handshakes_failed,
        }
    }

    /// TLS handshakes that failed (a client refusing the self-signed certificate).
    pub fn handshakes_failed(&self) -> usize {
        self.handshakes_failed
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `openpaas.api.uri` for this double.
    pub fn api_uri(&self) -> String {
        format!("{}://127.0.0.1:{}/api", self.scheme, self.port)
    }

    /// `dav.api.uri` for this double.
    pub fn dav_uri(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// The environment variables of the Twake `openpaas.properties`, pointed at the double.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OPENPAAS_API_URI", self.api_uri()),
            ("OPENPAAS_ADMIN_USER", OPENPAAS_ADMIN.0.into()),
            ("OPENPAAS_ADMIN_PASSWORD", OPENPAAS_ADMIN.1.into()),
            ("OPENPAAS_TRUST_ALL_SSL_CERTS", "false".into()),
            ("OPENPAAS_RESPONSE_TIMEOUT", "5s".into()),
            ("DAV_API_URI", self.dav_uri()),
            ("DAV_ADMIN_USER", DAV_ADMIN.0.into()),
            ("DAV_ADMIN_PASSWORD", DAV_ADMIN.1.into()),
            ("DAV_TRUST_ALL_SSL_CERTS", "false".into()),
            ("DAV_RESPONSE_TIMEOUT", "5s".into()),
        ]
    }

    /// An `openpaas.properties` text pointing at the double.
    pub fn properties(&self) -> String {
        format!(
            "openpaas.api.uri={}\nopenpaas.admin.user={}\nopenpaas.admin.password={}\nopenpaas.rest.client.response.timeout=5s\ndav.api.uri={}\ndav.admin.user={}\ndav.admin.password={}\ndav.rest.client.response.timeout=5s\n",
            self.api_uri(),
            OPENPAAS_ADMIN.0,
            OPENPAAS_ADMIN.1,
            self.dav_uri(),
            DAV_ADMIN.0,
            DAV_ADMIN.1
        )
    }

    /// Registers a user; returns its 24-hex id.
    pub fn add_user(&self, email: &str) -> String {
        let id = user_id(email);
        self.state
            .lock()
            .unwrap()
            .users
            .insert(email.to_lowercase(), id.clone());
        id
    }

    /// A user esn-sabre provisions on its first authenticated request (PROPFIND).
    pub fn provisionable(&self, email: &str) -> String {
        let id = user_id(email);
        self.state
            .lock()
            .unwrap()
            .provisionable
            .insert(email.to_lowercase(), id.clone());
        id
    }

    /// Puts an event with `uid` in the calendar of `email` (a registered user).
    pub fn add_event(&self, email: &str, uid: &str) {
        self.state
            .lock()
            .unwrap()
            .events
            .insert((user_id(email), uid.to_string()));
    }

    /// Answers 503 to the next `n` requests.
    pub fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().fail_next = n;
    }

    /// Answers 503 to every request until switched back.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().fail_always = down;
    }

    /// The user API waits this long before each answer (a slow OpenPaaS).
    pub fn set_users_delay(&self, delay: std::time::Duration) {
        self.state.lock().unwrap().users_delay = delay;
    }

    /// The user API answers `200` with a body that is not JSON, until switched back.
    pub fn set_users_garbage(&self, garbage: bool) {
        self.state.lock().unwrap().users_garbage = garbage;
    }

    /// esn-sabre (every path outside `/api`) never answers, until switched back; the user
    /// API still does.
    pub fn set_dav_unresponsive(&self, unresponsive: bool) {
        self.state.lock().unwrap().dav_unresponsive = unresponsive;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests with this method.
    pub fn requests_with(&self, method: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method)
            .collect()
    }

    /// The collected-contact cards stored so far, by `{book owner id}/{card file name}`.
    pub fn cards(&self) -> HashMap<String, Vec<u8>> {
        self.state.lock().unwrap().cards.clone()
    }

    /// The ITIP requests that got 204.
    pub fn delivered_itips(&self) -> Vec<Recorded> {
        self.requests_with("ITIP")
            .into_iter()
            .filter(|r| r.status == 204)
            .collect()
    }
}

/// A stable fake Mongo id for `email`.
pub fn user_id(email: &str) -> String {
    use sha1::Digest;
    let digest = sha1::Sha1::digest(email.to_lowercase().as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let token = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Body>) -> Response {
    let mut builder = Response::builder().status(status);
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    builder.body(body.into()).unwrap()
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    // 64 MiB: the 25 MB calendar of issue 18's memory tests is one ITIP body
    let body: Bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let dav = !parts.uri.path().starts_with("/api");
    if dav && state.lock().unwrap().dav_unresponsive {
        std::future::pending::<()>().await;
    }
    if parts.uri.path() == "/api/users" {
        let delay = state.lock().unwrap().users_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    let response = {
        let mut s = state.lock().unwrap();
        let failing = if s.fail_always {
            true
        } else if s.fail_next > 0 {
            s.fail_next -= 1;
            true
        } else {
            false
        };
        if failing {
            reply(503, &[], "Service Unavailable")
        } else if s.users_garbage && parts.uri.path() == "/api/users" {
            reply(
                200,
                &[("Content-Type", "application/json;charset=utf-8")],
                "<html><body>Gateway says hello</body></html>",
            )
        } else {
            route(&mut s, &parts.method, &parts.uri, &parts.headers, &body)
        }
    };
    let recorded = Recorded {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
        status: response.status().as_u16(),
    };
    state.lock().unwrap().requests.push(recorded);
    response
}

/// The impersonated user (`admin&email:password`), or the status esn-sabre would answer.
fn impersonated(s: &mut State, headers: &HeaderMap) -> Result<(String, String), u16> {
    let (user, password) = basic(headers).ok_or(401u16)?;
    let email = user
        .strip_prefix(&format!("{}&", DAV_ADMIN.0))
        .ok_or(401u16)?
        .to_lowercase();
    if password != DAV_ADMIN.1 {
        return Err(401);
    }
    match s.users.get(&email) {
        Some(id) => Ok((email, id.clone())),
        None => Err(401),
    }
}

fn route(s: &mut State, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    let path = uri.path();
    match (method.as_str(), path) {
        ("GET", "/api/users") => users(s, uri, headers),
        ("PROPFIND", "/") => {
            if let Some((user, _)) = basic(headers)
                && let Some(email) = user.strip_prefix(&format!("{}&", DAV_ADMIN.0))
            {
                let email = email.to_lowercase();
                if let Some(id) = s.provisionable.remove(&email) {
                    s.users.insert(email, id);
                }
            }
            match impersonated(s, headers) {
                Ok((_, id)) => reply(
                    207,
                    &[("Content-Type", "application/xml; charset=utf-8")],
                    format!(
                        "<?xml version=\"1.0\"?><d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>/</d:href><d:propstat><d:prop><d:current-user-principal><d:href>/principals/users/{id}/</d:href></d:current-user-principal></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"
                    ),
                ),
                Err(status) => reply(status, &[], ""),
            }
        }
        ("PROPFIND" | "REPORT", p) if p.starts_with("/calendars/") => {
            let id = match impersonated(s, headers) {
                Ok((_, id)) => id,
                Err(status) => return reply(status, &[], ""),
            };
            let rest: Vec<&str> = p["/calendars/".len()..]
                .split('/')
                .filter(|x| !x.is_empty())
                .collect();
            if rest.first() != Some(&id.as_str()) {
                return reply(403, &[], "");
            }
            let multistatus = |responses: String| {
                reply(
                    207,
                    &[("Content-Type", "application/xml; charset=utf-8")],
                    format!(
                        "<?xml version=\"1.0\"?><d:multistatus xmlns:d=\"DAV:\" xmlns:cal=\"urn:ietf:params:xml:ns:caldav\">{responses}</d:multistatus>"
                    ),
                )
            };
            if method.as_str() == "PROPFIND" {
                return multistatus(format!(
                    "<d:response><d:href>/calendars/{id}/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response><d:response><d:href>/calendars/{id}/{id}/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/><cal:calendar/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
                ));
            }
            let text = String::from_utf8_lossy(body);
            let uid = text
                .split_once("text-match")
                .and_then(|(_, after)| after.split_once('>'))
                .and_then(|(_, after)| after.split_once('<'))
                .map(|(uid, _)| uid.to_string())
                .unwrap_or_default();
            if rest.len() == 2 && s.events.contains(&(id.clone(), uid.clone())) {
                multistatus(format!(
                    "<d:response><d:href>/calendars/{id}/{id}/{uid}.ics</d:href><d:propstat><d:prop><d:getetag>\"1\"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
                ))
            } else {
                multistatus(String::new())
            }
        }
        ("ITIP", p) if p.starts_with("/calendars/") => {
            itip(s, &p["/calendars/".len()..], headers, body)
        }
        ("GET" | "PUT", p) if p.starts_with("/addressbooks/") => {
            let (email, id) = match impersonated(s, headers) {
                Ok(v) => v,
                Err(status) => return reply(status, &[], ""),
            };
            let _ = email;
            let rest = &p["/addressbooks/".len()..];
            let Some((book_owner, card)) = rest.split_once("/collected/") else {
                return reply(404, &[], "");
            };
            if book_owner != id {
                return reply(403, &[], "");
            }
            let key = format!("{book_owner}/{card}");
            if method == Method::GET {
                match s.cards.get(&key) {
                    Some(v) => reply(
                        200,
                        &[("Content-Type", "text/vcard; charset=utf-8")],
                        v.clone(),
                    ),
                    None => reply(404, &[], ""),
                }
            } else {
                let create_only = headers
                    .get("if-none-match")
                    .is_some_and(|v| v.as_bytes().trim_ascii() == b"*");
                if create_only && s.cards.contains_key(&key) {
                    return reply(412, &[], "");
                }
                let existed = s.cards.insert(key, body.to_vec()).is_some();
                reply(if existed { 204 } else { 201 }, &[], "")
            }
        }
        _ => reply(404, &[], ""),
    }
}

fn users(s: &mut State, uri: &Uri, headers: &HeaderMap) -> Response {
    match basic(headers) {
        Some((u, p)) if u == OPENPAAS_ADMIN.0 && p == OPENPAAS_ADMIN.1 => {}
        _ => return reply(401, &[], ""),
    }
    let Some(email) = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("email="))
        .map(percent_decode)
    else {
        return reply(
            400,
            &[("Content-Type", "application/json")],
            r#"{"error":{"code":400,"message":"Bad Request","details":"Missing 'email' query parameter"}}"#,
        );
    };
    if !email.contains('@') || email.ends_with('@') {
        return reply(
            400,
            &[("Content-Type", "application/json")],
            r#"{"error":{"code":400,"message":"Bad Request","details":"'email' query parameter must contain a domain part"}}"#,
        );
    }
    match s.users.get(&email.to_lowercase()) {
        Some(id) => reply(
            200,
            &[
                ("Content-Type", "application/json;charset=utf-8"),
                ("Cache-Control", "max-age=60, public"),
            ],
            serde_json::json!([{
                "preferredEmail": email.to_lowercase(), "_id": id, "state": [],
                "domains": [{"domain_id": "5a0f0a0a0a0a0a0a0a0a0a0a", "joined_at": "1970-01-01T00:00:00.000Z"}],
                "main_phone": "", "followings": 0, "following": false, "followers": 0,
                "emails": [email.to_lowercase()], "firstname": "", "lastname": "",
                "objectType": "user", "timezone": "Europe/Paris"
            }])
            .to_string(),
        ),
        None => reply(200, &[("Content-Type", "application/json;charset=utf-8")], "[]"),
    }
}

fn itip(s: &mut State, id: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let (email, _) = match impersonated(s, headers) {
        Ok(v) => v,
        Err(status) => return reply(status, &[], ""),
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return reply(400, &[], "");
    };
    let truthy = |k: &str| {
        json.get(k)
            .and_then(|v| v.as_str())
            .is_some_and(|v| !v.is_empty() && v != "0")
    };
    let uid_set = json.get("uid").is_some_and(|v| !v.is_null());
    if !uid_set || !truthy("sender") || !truthy("recipient") || !truthy("ical") {
        return reply(400, &[], "");
    }
    let ical = json["ical"].as_str().unwrap();
    if !ical
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("BEGIN:VCALENDAR")
    {
        return reply(
            500,
            &[("Content-Type", "application/xml; charset=utf-8")],
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><d:error xmlns:d=\"DAV:\" xmlns:s=\"http://sabredav.org/ns\"><s:exception>Sabre\\VObject\\ParseException</s:exception></d:error>",
        );
    }
    let method = json
        .get("method")
        .and_then(|v| v.as_str())
        .unwrap_or("REQUEST");
    let recipient = json["recipient"].as_str().unwrap().to_lowercase();
    let sender = json["sender"].as_str().unwrap().to_lowercase();
    let allowed = if method.eq_ignore_ascii_case("COUNTER") {
        sender == email
    } else {
        recipient == email
    };
    if !allowed {
        return reply(403, &[], "");
    }
    if !s.users.values().any(|v| v == id) {
        return reply(404, &[], "");
    }
    if method.eq_ignore_ascii_case("REQUEST")
        && let Some(uid) = json.get("uid").and_then(|u| u.as_str())
    {
        s.events.insert((id.to_string(), uid.to_string()));
    }
    reply(204, &[], "")
}
