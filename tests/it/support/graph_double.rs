//! A TEST DOUBLE of Microsoft 365 (Entra ID's token endpoint and Microsoft Graph's calendar
//! events): Exchange Online cannot run here. It follows Microsoft's documented contract
//! (learn.microsoft.com: "Microsoft identity platform and the OAuth 2.0 client credentials
//! flow", the Graph `event` resource, "Create event", "Update event", "Delete event",
//! "Get singleValueLegacyExtendedProperty", "Microsoft Graph throttling guidance") and
//! nothing more:
//! - `POST /{tenant}/oauth2/v2.0/token`, form-encoded: `grant_type=client_credentials`,
//!   `scope=https://graph.microsoft.com/.default`, `client_id`, `client_secret`; 200
//!   `{token_type: Bearer, expires_in, access_token}`; 400 `invalid_request` /
//!   `invalid_scope` / `unsupported_grant_type`, 401 `invalid_client` on a bad secret.
//! - Every Graph request needs `Authorization: Bearer <issued token>` (401
//!   `InvalidAuthenticationToken`); an unknown mailbox is 404 `ErrorItemNotFound`.
//! - `GET /v1.0/users/{user}/calendar/events?$filter=…`: `iCalUId eq '…'` or
//!   `singleValueExtendedProperties/Any(ep: ep/id eq '…' and ep/value eq '…')` (value
//!   compared case-insensitively, as documented); extended properties are returned only when
//!   `$expand=singleValueExtendedProperties($filter=id eq '…')` asks for them.
//! - `POST /v1.0/users/{user}/calendar/events` (201): `start` and `end` are required
//!   (`dateTime` + `timeZone`); `id` and `iCalUId` are minted by the server (read-only).
//! - `recurrence` ("patternedRecurrence", "recurrencePattern", "recurrenceRange"): `null`
//!   or `{pattern, range}` with only the documented properties; `pattern.type` one of
//!   `daily`, `weekly`, `absoluteMonthly`, `relativeMonthly`, `absoluteYearly`,
//!   `relativeYearly`, `interval` (required, positive) and each type's required properties
//!   (`daysOfWeek` + `firstDayOfWeek` for weekly, `dayOfMonth` for absoluteMonthly,
//!   `daysOfWeek` for relativeMonthly, `dayOfMonth` + `month` for absoluteYearly,
//!   `daysOfWeek` + `month` for relativeYearly), every value a supported one;
//!   `range.type` `endDate` (needs `endDate`), `noEnd` or `numbered` (needs a positive
//!   `numberOfOccurrences`), `startDate` required and "the same value as the start property"
//!   (checked when `recurrenceTimeZone` is absent or the start's). Anything else is a 400,
//!   and the recurrence is stored as given.
//! - `PATCH /v1.0/users/{user}/events/{id}` (200, only the given properties change),
//!   `DELETE …/events/{id}` (204); 404 for an unknown id.
//! - Throttling on demand: the next N Graph requests get 429 `TooManyRequests` with
//!   `Retry-After: <s>`. Every request is recorded with its time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The app registration the double knows.
pub const TENANT: &str = "contoso.onmicrosoft.com";
/// Its client id.
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
/// Its client secret.
pub const CLIENT_SECRET: &str = "graph-s3cret~value";
/// The mailbox whose calendar receives the events.
pub const MAILBOX: &str = "allsites@contoso.com";

/// One request as the double saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When.
    pub at: Instant,
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Status answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    tokens: Vec<String>,
    events: Vec<Value>,
    next_id: u64,
    throttle: (usize, u64),
    seen: Vec<Seen>,
}

/// The running double.
#[derive(Clone)]
pub struct GraphDouble {
    /// Its loopback port.
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl GraphDouble {
    /// Starts the double on a free loopback port, in a thread of its own.
    pub fn start() -> GraphDouble {
        let state = Arc::new(Mutex::new(State::default()));
        let port = super::serve_double(state.clone(), handle);
        GraphDouble { port, state }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A `[destinations.<name>]` table of `mailetd.toml` writing to this double's mailbox.
    pub fn destination_toml(&self, name: &str) -> String {
        format!(
            "\n[destinations.{name}]\nkind = \"graph\"\ntenant = \"{TENANT}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\nuser = \"{MAILBOX}\"\nlogin_url = \"{0}\"\ngraph_url = \"{0}/v1.0\"\n",
            self.url()
        )
    }

    /// The events of the mailbox's calendar.
    pub fn events(&self) -> Vec<Value> {
        self.state.lock().unwrap().events.clone()
    }

    /// Answers 429 with `Retry-After: secs` to the next `n` Graph requests.
    pub fn throttle_next(&self, n: usize, secs: u64) {
        self.state.lock().unwrap().throttle = (n, secs);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": code}})),
    )
        .into_response()
}

fn oauth_error(status: StatusCode, code: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "error_description": code})),
    )
        .into_response()
}

/// 400 `ErrorInvalidRequest` saying why.
fn invalid(why: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": {"code": "ErrorInvalidRequest", "message": why}})),
    )
        .into_response()
}

const DAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// Checks a `recurrence` (patternedRecurrence) against the documented contract.
fn check_recurrence(recurrence: &Value, start: &Value) -> Result<(), String> {
    if recurrence.is_null() {
        return Ok(());
    }
    let only = |object: &Value, what: &str, keys: &[&str]| -> Result<(), String> {
        let map = object
            .as_object()
            .ok_or_else(|| format!("{what} is not an object"))?;
        match map
            .keys()
            .find(|k| !k.starts_with("@odata.") && !keys.contains(&k.as_str()))
        {
            Some(k) => Err(format!("{what} has no property {k}")),
            None => Ok(()),
        }
    };
    only(recurrence, "recurrence", &["pattern", "range"])?;
    let (pattern, range) = (&recurrence["pattern"], &recurrence["range"]);
    only(
        pattern,
        "pattern",
        &[
            "type",
            "interval",
            "daysOfWeek",
            "dayOfMonth",
            "month",
            "firstDayOfWeek",
            "index",
        ],
    )?;
    only(
        range,
        "range",
        &[
            "type",
            "startDate",
            "endDate",
            "numberOfOccurrences",
            "recurrenceTimeZone",
        ],
    )?;
    let number = |v: &Value, what: &str, range: std::ops::RangeInclusive<i64>| match v.as_i64() {
        Some(n) if range.contains(&n) => Ok(()),
        _ => Err(format!("{what} {v} is not in {range:?}")),
    };
    let day = |v: &Value, what: &str| match v.as_str() {
        Some(d) if DAYS.contains(&d) => Ok(()),
        _ => Err(format!("{what} {v} is not a dayOfWeek")),
    };
    let required: &[&str] = match pattern["type"].as_str().unwrap_or_default() {
        "daily" => &[],
        "weekly" => &["daysOfWeek", "firstDayOfWeek"],
        "absoluteMonthly" => &["dayOfMonth"],
        "relativeMonthly" => &["daysOfWeek"],
        "absoluteYearly" => &["dayOfMonth", "month"],
        "relativeYearly" => &["daysOfWeek", "month"],
        other => {
            return Err(format!(
                "pattern.type {other:?} is not a recurrencePatternType"
            ));
        }
    };
    if let Some(missing) = required.iter().find(|k| pattern[**k].is_null()) {
        return Err(format!(
            "pattern.{missing} is required for {}",
            pattern["type"]
        ));
    }
    number(
        &pattern["interval"],
        "pattern.interval",
        1..=i64::from(i32::MAX),
    )?;
    if let Some(days) = pattern.get("daysOfWeek") {
        let days = days
            .as_array()
            .filter(|d| !d.is_empty())
            .ok_or("pattern.daysOfWeek is not a list of days")?;
        days.iter().try_for_each(|d| day(d, "pattern.daysOfWeek"))?;
    }
    if let Some(d) = pattern.get("firstDayOfWeek") {
        day(d, "pattern.firstDayOfWeek")?;
    }
    if let Some(n) = pattern.get("dayOfMonth") {
        number(n, "pattern.dayOfMonth", 1..=31)?;
    }
    if let Some(n) = pattern.get("month") {
        number(n, "pattern.month", 1..=12)?;
    }
    if let Some(index) = pattern.get("index")
        && !["first", "second", "third", "fourth", "last"].contains(&index.as_str().unwrap_or(""))
    {
        return Err(format!("pattern.index {index} is not a weekIndex"));
    }
    let date = |v: &Value, what: &str| match v.as_str() {
        Some(d) if is_date(d) => Ok(d.to_string()),
        _ => Err(format!("{what} {v} is not a Date")),
    };
    let start_date = date(&range["startDate"], "range.startDate")?;
    match range["type"].as_str().unwrap_or_default() {
        "endDate" => {
            date(&range["endDate"], "range.endDate")?;
        }
        "numbered" => number(
            &range["numberOfOccurrences"],
            "range.numberOfOccurrences",
            1..=i64::from(i32::MAX),
        )?,
        "noEnd" => {}
        other => return Err(format!("range.type {other:?} is not a recurrenceRangeType")),
    }
    if let Some(zone) = range.get("recurrenceTimeZone")
        && !zone.is_string()
    {
        return Err("range.recurrenceTimeZone is not a string".into());
    }
    let same_zone = range
        .get("recurrenceTimeZone")
        .is_none_or(|z| *z == start["timeZone"]);
    let start_day = start["dateTime"].as_str().and_then(|d| d.get(..10));
    if same_zone && start_day != Some(start_date.as_str()) {
        return Err(format!(
            "range.startDate {start_date} is not the date of start {}",
            start["dateTime"]
        ));
    }
    Ok(())
}

/// `YYYY-MM-DD`.
fn is_date(d: &str) -> bool {
    let b = d.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && d[..4].parse::<u16>().is_ok()
        && d[5..7].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m))
        && d[8..].parse::<u8>().is_ok_and(|m| (1..=31).contains(&m))
}

/// The text between the first pair of single quotes after `after`.
fn quoted_after(text: &str, after: &str) -> Option<String> {
    let start = text.find(after)? + after.len();
    let rest = text[start..].trim_start().strip_prefix('\'')?;
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                chars.next();
                out.push('\'');
                continue;
            }
            return Some(out);
        }
        out.push(c);
    }
    None
}

fn query_param(query: &str, name: &str) -> Option<String> {
    url_pairs(query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// A percent-encoded path segment, decoded.
fn decode(segment: &str) -> String {
    url_pairs(&format!("v={}", segment.replace('+', "%2B")))
        .pop()
        .map(|(_, v)| v)
        .unwrap_or_default()
}

fn url_pairs(text: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{text}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn with_properties(event: &Value, expand: Option<&str>) -> Value {
    let mut e = event.clone();
    let props = e
        .as_object_mut()
        .unwrap()
        .remove("singleValueExtendedProperties");
    if let (Some(expand), Some(Value::Array(props))) = (expand, props) {
        let wanted = quoted_after(expand, "id eq").unwrap_or_default();
        let chosen: Vec<Value> = props
            .into_iter()
            .filter(|p| p["id"] == wanted.as_str())
            .collect();
        if !chosen.is_empty() {
            e["singleValueExtendedProperties"] = Value::Array(chosen);
        }
    }
    e
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Body>) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let response = answer(&state, &method, &path, &query, &auth, &body);
    state.lock().unwrap().seen.push(Seen {
        at: Instant::now(),
        method: method.to_string(),
        uri: format!("{path}?{query}"),
        status: response.status().as_u16(),
    });
    response
}

fn answer(
    state: &Mutex<State>,
    method: &Method,
    path: &str,
    query: &str,
    auth: &str,
    body: &[u8],
) -> Response {
    let mut s = state.lock().unwrap();
    if path == format!("/{TENANT}/oauth2/v2.0/token") && method == Method::POST {
        let form: HashMap<String, String> = url_pairs(&String::from_utf8_lossy(body))
            .into_iter()
            .collect();
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
        }
        if form.get("scope").map(String::as_str) != Some("https://graph.microsoft.com/.default") {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope");
        }
        if form.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
            return oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client");
        }
        if form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET) {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        let token = format!("eyJ0eXAi.token{}", s.tokens.len() + 1);
        s.tokens.push(token.clone());
        return axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token})).into_response();
    }
    let Some(rest) = path.strip_prefix("/v1.0/users/") else {
        return error(StatusCode::NOT_FOUND, "BadRequest");
    };
    let token = auth.strip_prefix("Bearer ").unwrap_or("");
    if !s.tokens.iter().any(|t| t == token) {
        return error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken");
    }
    if s.throttle.0 > 0 {
        s.throttle.0 -= 1;
        let secs = s.throttle.1;
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
        r.headers_mut()
            .insert("Retry-After", secs.to_string().parse().unwrap());
        return r;
    }
    let (user, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let user = decode(user);
    if !user.eq_ignore_ascii_case(MAILBOX) {
        return error(StatusCode::NOT_FOUND, "ErrorItemNotFound");
    }
    match (method.clone(), tail) {
        (Method::GET, "calendar/events") => {
            let filter = query_param(query, "$filter").unwrap_or_default();
            let expand = query_param(query, "$expand");
            let matches: Vec<Value> = s
                .events
                .iter()
                .filter(|e| {
                    if filter.starts_with("iCalUId eq") {
                        quoted_after(&filter, "iCalUId eq")
                            .is_some_and(|v| e["iCalUId"] == v.as_str())
                    } else if filter.starts_with("singleValueExtendedProperties/Any(") {
                        let id = quoted_after(&filter, "ep/id eq").unwrap_or_default();
                        let value = quoted_after(&filter, "ep/value eq").unwrap_or_default();
                        e["singleValueExtendedProperties"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|p| {
                                p["id"] == id.as_str()
                                    && p["value"]
                                        .as_str()
                                        .is_some_and(|v| v.eq_ignore_ascii_case(&value))
                            })
                    } else {
                        filter.is_empty()
                    }
                })
                .map(|e| with_properties(e, expand.as_deref()))
                .collect();
            axum::Json(json!({"value": matches})).into_response()
        }
        (Method::POST, "calendar/events") => {
            let Ok(mut event) = serde_json::from_slice::<Value>(body) else {
                return error(StatusCode::BAD_REQUEST, "ErrorInvalidRequest");
            };
            for key in ["start", "end"] {
                if event[key]["dateTime"].as_str().is_none()
                    || event[key]["timeZone"].as_str().is_none()
                {
                    return error(StatusCode::BAD_REQUEST, "ErrorInvalidRequest");
                }
            }
            if let Err(why) = check_recurrence(&event["recurrence"], &event["start"]) {
                return invalid(&why);
            }
            s.next_id += 1;
            event["id"] = json!(format!("AAMkAD{:06}=", s.next_id));
            event["iCalUId"] = json!(format!(
                "040000008200E00074C5B7101A82E008{:016X}",
                s.next_id
            ));
            s.events.push(event.clone());
            (
                StatusCode::CREATED,
                axum::Json(with_properties(&event, None)),
            )
                .into_response()
        }
        (m, t) if t.starts_with("events/") => {
            let id = decode(&t["events/".len()..]);
            let Some(i) = s.events.iter().position(|e| e["id"] == id.as_str()) else {
                return error(StatusCode::NOT_FOUND, "ErrorItemNotFound");
            };
            match m {
                Method::PATCH => {
                    let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(body) else {
                        return error(StatusCode::BAD_REQUEST, "ErrorInvalidRequest");
                    };
                    if let Some(recurrence) = patch.get("recurrence") {
                        let start = patch.get("start").unwrap_or(&s.events[i]["start"]);
                        if let Err(why) = check_recurrence(recurrence, start) {
                            return invalid(&why);
                        }
                    }
                    for (k, v) in patch {
                        if k == "id" || k == "iCalUId" {
                            continue;
                        }
                        if k == "singleValueExtendedProperties" {
                            let mut props = s.events[i][&k].as_array().cloned().unwrap_or_default();
                            for p in v.as_array().into_iter().flatten() {
                                props.retain(|o| o["id"] != p["id"]);
                                props.push(p.clone());
                            }
                            s.events[i][&k] = Value::Array(props);
                        } else {
                            s.events[i][&k] = v;
                        }
                    }
                    axum::Json(with_properties(&s.events[i], None)).into_response()
                }
                Method::DELETE => {
                    s.events.remove(i);
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "ErrorInvalidRequest"),
            }
        }
        _ => error(StatusCode::BAD_REQUEST, "BadRequest"),
    }
}
