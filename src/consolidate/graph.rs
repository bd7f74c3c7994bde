//! A Microsoft 365 (Exchange Online) calendar as a consolidated destination, through
//! Microsoft Graph (EWS is off in Exchange Online from 2026-10-01).
//!
//! - Token: OAuth2 client credentials, `POST {login_url}/{tenant}/oauth2/v2.0/token` with
//!   `grant_type=client_credentials`, `client_id`, `client_secret` and
//!   `scope=https://graph.microsoft.com/.default`; the `access_token` is reused until a
//!   minute before `expires_in` runs out. The app needs the `Calendars.ReadWrite`
//!   application permission (restrict it to the mailbox with an application access policy).
//! - Finding the event: `GET /users/{user}/calendar/events?$filter=iCalUId eq '{uid}'`
//!   finds a copy Exchange made itself (the mailbox received the invitation); Graph mints
//!   its own `iCalUId` for an event created with `POST` (the property is read-only), so
//!   mailetd also stores the UID, and the iTIP text it last applied, in two single-value
//!   extended properties of its own and finds its events by the first
//!   (`singleValueExtendedProperties/Any(ep: ep/id eq '…' and ep/value eq '{uid}')`).
//! - Applying: the caldav dialect's RFC 5546 rules ([`apply`]) on the text last applied;
//!   `Create` is `POST /users/{user}/calendar/events`, `Update` is
//!   `PATCH /users/{user}/events/{id}`. Graph has no writable "cancelled" state (only an
//!   organizer's `cancel` action), so a CANCEL of the whole event deletes it
//!   (`DELETE /users/{user}/events/{id}`).
//! - Throttling: a 429 (or 503) is a transient failure; its `Retry-After` seconds are
//!   honoured by sending nothing to this destination before they pass: the job stays in the
//!   durable outbox and is retried with its backoff.
//!
//! Mapped: SUMMARY, DESCRIPTION, LOCATION, DTSTART/DTEND (TZID, UTC or all-day), ATTENDEE
//! (with PARTSTAT as the response), the source as a category, RRULE as `recurrence`
//! ([`recurrence`]; a rule Graph cannot express leaves the first occurrence and a warning).
//! Not mapped: EXDATE/RDATE (Graph takes no exceptions when an event is created),
//! instance-level (RECURRENCE-ID) changes.

use std::time::{Duration, Instant};

use calcard::icalendar::ICalendar;
use reqwest::{Method as HttpMethod, StatusCode, Url};
use serde_json::{Value, json};
use tokio::sync::Mutex;

pub mod recurrence;

use super::handler::{Applied, Destination};
use crate::config::ConfigError;
use crate::config::consolidate::DestinationSettings;
use crate::config::settings::Secret;
use crate::dav::caldav::apply::{Change, Options, apply};
use crate::dav::transport::{self, ClientSettings, DavError};

/// The property set of mailetd's extended properties (a GUID of its own).
const PROPERTY_SET: &str = "{5b1c6b0e-7c1a-4c39-9d5e-6d0c5e4b1a23}";
/// Extended property id holding the iCalendar UID.
pub fn uid_property() -> String {
    format!("String {PROPERTY_SET} Name X-MAILETD-UID")
}
/// Extended property id holding the iTIP text last applied.
pub fn ics_property() -> String {
    format!("String {PROPERTY_SET} Name X-MAILETD-ICS")
}

/// A Microsoft 365 mailbox calendar.
pub struct GraphDestination {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: Secret,
    /// `{graph_url}/users/{user}`.
    user_url: String,
    token: Mutex<Option<(String, Instant)>>,
    /// No request before this (a 429's Retry-After).
    not_before: std::sync::Mutex<Option<Instant>>,
}

/// An event found in the mailbox.
struct Found {
    id: String,
    /// The iTIP text mailetd last applied, if it made the event.
    ics: Option<String>,
}

impl GraphDestination {
    /// Validates a `kind = "graph"` destination.
    pub fn new(name: &str, s: &DestinationSettings) -> Result<Self, ConfigError> {
        let missing = |key: &str| {
            ConfigError::new(format!(
                "mailetd.toml [destinations.{name}] kind = \"graph\" needs {key}"
            ))
        };
        for (key, value) in [
            ("tenant", &s.tenant),
            ("client_id", &s.client_id),
            ("user", &s.user),
        ] {
            if value.trim().is_empty() {
                return Err(missing(key));
            }
        }
        let client_secret = s
            .client_secret
            .clone()
            .filter(|c| !c.expose().is_empty())
            .ok_or_else(|| missing("client_secret"))?;
        for (key, url) in [("login_url", &s.login_url), ("graph_url", &s.graph_url)] {
            if Url::parse(url.trim()).is_err() {
                return Err(ConfigError::new(format!(
                    "mailetd.toml [destinations.{name}] {key} {url:?} is not a URL"
                )));
            }
        }
        let http = transport::client(ClientSettings::from_secs(s.timeout_secs, s.trust_all_certs))?;
        let segment = crate::dav::carddav::segment;
        Ok(GraphDestination {
            http,
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                s.login_url.trim().trim_end_matches('/'),
                segment(s.tenant.trim())
            ),
            client_id: s.client_id.trim().to_string(),
            client_secret,
            user_url: format!(
                "{}/users/{}",
                s.graph_url.trim().trim_end_matches('/'),
                segment(s.user.trim())
            ),
            token: Mutex::new(None),
            not_before: std::sync::Mutex::new(None),
        })
    }

    async fn token(&self) -> Result<String, DavError> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let mut form = Url::parse("http://form/").expect("valid");
        form.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("scope", "https://graph.microsoft.com/.default")
            .append_pair("client_secret", self.client_secret.expose())
            .append_pair("grant_type", "client_credentials");
        let response = self
            .http
            .post(&self.token_url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form.query().unwrap_or_default().to_string())
            .send()
            .await
            .map_err(|e| DavError::transport("token endpoint", e))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            // error and error_description name the problem; they carry no secret
            let reason = format!(
                "{} {}",
                body["error"].as_str().unwrap_or(""),
                body["error_description"].as_str().unwrap_or("")
            );
            return Err(DavError::status("token endpoint", status, reason));
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| DavError::Permanent("token endpoint: no access_token".into()))?
            .to_string();
        let lifetime = body["expires_in"]
            .as_u64()
            .unwrap_or(300)
            .saturating_sub(60);
        *cached = Some((
            token.clone(),
            Instant::now() + Duration::from_secs(lifetime),
        ));
        Ok(token)
    }

    /// One Graph request; a 401 drops the cached token (the next attempt gets another).
    async fn call(
        &self,
        method: HttpMethod,
        url: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), DavError> {
        if let Some(at) = *self.not_before.lock().expect("not poisoned")
            && Instant::now() < at
        {
            return Err(DavError::Transient(format!(
                "throttled by Graph for {} s more (Retry-After)",
                (at - Instant::now()).as_secs() + 1
            )));
        }
        let token = self.token().await?;
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(token)
            .query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let what = format!("{method} {url}");
        let response = request
            .send()
            .await
            .map_err(|e| DavError::transport(what.as_str(), e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            let wait = retry_after.unwrap_or(5);
            *self.not_before.lock().expect("not poisoned") =
                Some(Instant::now() + Duration::from_secs(wait));
            return Err(DavError::Transient(format!(
                "{what}: {status}, Retry-After {wait} s"
            )));
        }
        if status == StatusCode::UNAUTHORIZED {
            *self.token.lock().await = None;
            return Err(DavError::Transient(format!("{what}: 401 (token refused)")));
        }
        if !status.is_success() && status != StatusCode::NOT_FOUND {
            let message = body["error"]["message"].as_str().unwrap_or("");
            return Err(DavError::status(what, status, message));
        }
        Ok((status, body))
    }

    async fn find(&self, uid: &str) -> Result<Option<Found>, DavError> {
        let quoted = uid.replace('\'', "''");
        let expand = format!(
            "singleValueExtendedProperties($filter=id eq '{}')",
            ics_property()
        );
        let url = format!("{}/calendar/events", self.user_url);
        for filter in [
            format!(
                "singleValueExtendedProperties/Any(ep: ep/id eq '{}' and ep/value eq '{quoted}')",
                uid_property()
            ),
            format!("iCalUId eq '{quoted}'"),
        ] {
            let (status, body) = self
                .call(
                    HttpMethod::GET,
                    &url,
                    &[("$filter", &filter), ("$expand", &expand)],
                    None,
                )
                .await?;
            if status == StatusCode::NOT_FOUND {
                return Err(DavError::Permanent(format!(
                    "{url}: 404: no such mailbox or calendar"
                )));
            }
            if let Some(event) = body["value"].as_array().and_then(|v| v.first()) {
                let id = event["id"].as_str().unwrap_or_default().to_string();
                let ics = event["singleValueExtendedProperties"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["id"].as_str() == Some(ics_property().as_str()))
                    .and_then(|p| p["value"].as_str())
                    .map(str::to_string);
                return Ok(Some(Found { id, ics }));
            }
        }
        Ok(None)
    }
}

/// The unfolded property lines of the first VEVENT without RECURRENCE-ID.
fn master_lines(ics: &str) -> Vec<String> {
    let unfolded = ics
        .replace("\r\n ", "")
        .replace("\r\n\t", "")
        .replace("\n ", "");
    let mut out = Vec::new();
    let mut inside = false;
    for line in unfolded.lines() {
        let line = line.trim_end_matches('\r');
        match line.to_ascii_uppercase().as_str() {
            "BEGIN:VEVENT" => {
                inside = true;
                out.clear();
            }
            "END:VEVENT" => {
                if !out
                    .iter()
                    .any(|l: &String| l.to_ascii_uppercase().starts_with("RECURRENCE-ID"))
                {
                    return out;
                }
                inside = false;
            }
            _ if inside => out.push(line.to_string()),
            _ => {}
        }
    }
    out
}

/// (name, params, value) of a content line.
fn split(line: &str) -> (String, String, String) {
    let (head, value) = line.split_once(':').unwrap_or((line, ""));
    let (name, params) = head.split_once(';').unwrap_or((head, ""));
    (
        name.to_ascii_uppercase(),
        params.to_string(),
        value.to_string(),
    )
}

fn unescape(text: &str) -> String {
    text.replace("\\n", "\n")
        .replace("\\N", "\n")
        .replace("\\,", ",")
        .replace("\\;", ";")
        .replace("\\\\", "\\")
}

/// A Graph `dateTimeTimeZone` and whether it is a date (all day).
fn date_time(params: &str, value: &str) -> (Value, bool) {
    let tz = params
        .split(';')
        .find_map(|p| p.strip_prefix("TZID="))
        .map(|t| t.trim_matches('"').to_string());
    let v = value.trim();
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let d = digits(v);
    let date = format!(
        "{}-{}-{}",
        &d.get(0..4).unwrap_or("1970"),
        &d.get(4..6).unwrap_or("01"),
        &d.get(6..8).unwrap_or("01")
    );
    if v.len() == 8 || params.to_ascii_uppercase().contains("VALUE=DATE") && !v.contains('T') {
        return (
            json!({"dateTime": format!("{date}T00:00:00"), "timeZone": "UTC"}),
            true,
        );
    }
    let time = format!(
        "{}:{}:{}",
        &d.get(8..10).unwrap_or("00"),
        &d.get(10..12).unwrap_or("00"),
        &d.get(12..14).unwrap_or("00")
    );
    let zone = if v.ends_with('Z') {
        "UTC".to_string()
    } else {
        tz.unwrap_or_else(|| "UTC".into())
    };
    (
        json!({"dateTime": format!("{date}T{time}"), "timeZone": zone}),
        false,
    )
}

/// The Graph event for the calendar `ics` (the result of applying), with mailetd's
/// extended properties.
pub fn event_json(ics: &str, uid: &str) -> Value {
    let mut event = serde_json::Map::new();
    let mut attendees = Vec::new();
    let mut categories = Vec::new();
    let mut all_day = false;
    let (mut rrules, mut exceptions, mut dtstart) = (Vec::new(), Vec::new(), None);
    for line in master_lines(ics) {
        let (name, params, value) = split(&line);
        match name.as_str() {
            "SUMMARY" => {
                event.insert("subject".into(), json!(unescape(&value)));
            }
            "DESCRIPTION" => {
                event.insert(
                    "body".into(),
                    json!({"contentType": "text", "content": unescape(&value)}),
                );
            }
            "LOCATION" => {
                event.insert("location".into(), json!({"displayName": unescape(&value)}));
            }
            "RRULE" => rrules.push(value),
            "EXDATE" | "RDATE" => exceptions.push(name),
            "DTSTART" | "DTEND" => {
                if name == "DTSTART" {
                    dtstart = Some((params.clone(), value.clone()));
                }
                let (dt, date) = date_time(&params, &value);
                all_day |= date;
                event.insert(if name == "DTSTART" { "start" } else { "end" }.into(), dt);
            }
            "ATTENDEE" => {
                let address = value
                    .trim()
                    .trim_start_matches("mailto:")
                    .trim_start_matches("MAILTO:");
                let partstat = params
                    .split(';')
                    .find_map(|p| {
                        p.to_ascii_uppercase()
                            .strip_prefix("PARTSTAT=")
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                let response = match partstat.as_str() {
                    "ACCEPTED" => "accepted",
                    "DECLINED" => "declined",
                    "TENTATIVE" => "tentativelyAccepted",
                    _ => "none",
                };
                attendees.push(json!({
                    "emailAddress": {"address": address},
                    "type": "required",
                    "status": {"response": response},
                }));
            }
            "X-MAILETD-SOURCE" => categories.push(json!(value.trim())),
            _ => {}
        }
    }
    if all_day {
        event.insert("isAllDay".into(), json!(true));
    }
    // null when there is none: a PATCH then turns a former series into one event
    let series = match (rrules.as_slice(), &dtstart) {
        ([], _) => Value::Null,
        ([rrule], Some((params, value))) => recurrence::recurrence(rrule, params, value)
            .inspect(|_| {
                if !exceptions.is_empty() {
                    tracing::warn!(uid, "Graph destination: {} of the series not mapped (Graph takes no exceptions on create): those occurrences show", exceptions.join("/"));
                }
            })
            .unwrap_or_else(|why| {
                tracing::warn!(uid, "Graph destination: RRULE {rrule:?} not mapped, only the first occurrence shows: {why}");
                Value::Null
            }),
        _ => {
            tracing::warn!(uid, "Graph destination: several RRULEs (or none with DTSTART) not mapped, only the first occurrence shows");
            Value::Null
        }
    };
    event.insert("recurrence".into(), series);
    event.insert("attendees".into(), Value::Array(attendees));
    event.insert("categories".into(), Value::Array(categories));
    event.insert(
        "singleValueExtendedProperties".into(),
        json!([
            {"id": uid_property(), "value": uid},
            {"id": ics_property(), "value": ics},
        ]),
    );
    Value::Object(event)
}

#[async_trait::async_trait]
impl Destination for GraphDestination {
    async fn apply(
        &self,
        message: &ICalendar,
        _ical: &str,
        uid: &str,
        options: &Options,
    ) -> Result<Applied, DavError> {
        let found = self.find(uid).await?;
        let stored = found
            .as_ref()
            .and_then(|f| f.ics.as_deref())
            .and_then(|ics| crate::ical::parse(ics).ok());
        if found.is_some() && stored.is_none() {
            return Ok(Applied::Unchanged(
                "the mailbox has its own copy (Exchange received the invitation)".into(),
            ));
        }
        let options = Options {
            // no writable cancelled state in Graph
            delete_canceled: true,
            ..options.clone()
        };
        match apply(stored.as_ref(), message, "", &options) {
            Change::Nothing(reason) => Ok(Applied::Unchanged(reason)),
            Change::Create(cal) | Change::Update(cal) if found.is_none() => {
                let url = format!("{}/calendar/events", self.user_url);
                self.call(
                    HttpMethod::POST,
                    &url,
                    &[],
                    Some(event_json(&cal.to_string(), uid)),
                )
                .await?;
                Ok(Applied::Added)
            }
            Change::Create(cal) | Change::Update(cal) => {
                let id = found.map(|f| f.id).unwrap_or_default();
                let url = format!(
                    "{}/events/{}",
                    self.user_url,
                    crate::dav::carddav::segment(&id)
                );
                let (status, _) = self
                    .call(
                        HttpMethod::PATCH,
                        &url,
                        &[],
                        Some(event_json(&cal.to_string(), uid)),
                    )
                    .await?;
                if status == StatusCode::NOT_FOUND {
                    return Err(DavError::Transient(format!(
                        "{url}: 404 (deleted meanwhile)"
                    )));
                }
                Ok(Applied::Updated)
            }
            Change::Delete => {
                let Some(found) = found else {
                    return Ok(Applied::Unchanged("nothing to delete".into()));
                };
                let url = format!(
                    "{}/events/{}",
                    self.user_url,
                    crate::dav::carddav::segment(&found.id)
                );
                self.call(HttpMethod::DELETE, &url, &[], None).await?;
                Ok(Applied::Updated)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_graph_json() {
        let ics = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:u1\r\nSUMMARY:Board\\, Q4\r\nDTSTART;TZID=Europe/Paris:20261110T100000\r\nDTEND:20261110T110000Z\r\nLOCATION:Room 1\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:a@x.example\r\nX-MAILETD-SOURCE:paris\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let e = event_json(ics, "u1");
        assert_eq!(e["subject"], "Board, Q4");
        assert_eq!(
            e["start"],
            json!({"dateTime": "2026-11-10T10:00:00", "timeZone": "Europe/Paris"})
        );
        assert_eq!(
            e["end"],
            json!({"dateTime": "2026-11-10T11:00:00", "timeZone": "UTC"})
        );
        assert_eq!(e["location"]["displayName"], "Room 1");
        assert_eq!(e["attendees"][0]["status"]["response"], "accepted");
        assert_eq!(e["categories"], json!(["paris"]));
        assert_eq!(e["singleValueExtendedProperties"][0]["value"], "u1");
        assert!(e["recurrence"].is_null(), "no RRULE: no series");
        let weekly = event_json(
            &ics.replace("LOCATION", "RRULE:FREQ=WEEKLY;COUNT=4\r\nLOCATION"),
            "u1",
        );
        assert_eq!(
            weekly["recurrence"],
            json!({"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"],
                               "firstDayOfWeek": "monday"},
                   "range": {"type": "numbered", "numberOfOccurrences": 4,
                             "startDate": "2026-11-10", "recurrenceTimeZone": "Europe/Paris"}})
        );
        let hourly = event_json(
            &ics.replace("LOCATION", "RRULE:FREQ=HOURLY\r\nLOCATION"),
            "u1",
        );
        assert!(hourly["recurrence"].is_null(), "first occurrence only");
        let day = event_json(
            "BEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20261224\r\nEND:VEVENT\r\n",
            "u2",
        );
        assert_eq!(day["isAllDay"], true);
        assert_eq!(day["start"]["dateTime"], "2026-12-24T00:00:00");
    }

    #[test]
    fn graph_settings_are_validated() {
        let err =
            |s: DestinationSettings| GraphDestination::new("m365", &s).err().unwrap().to_string();
        let base = DestinationSettings {
            kind: crate::config::consolidate::DestinationKind::Graph,
            tenant: "contoso.onmicrosoft.com".into(),
            client_id: "app".into(),
            client_secret: Some(Secret::new("s")),
            user: "team@contoso.com".into(),
            ..DestinationSettings::default()
        };
        assert!(GraphDestination::new("m365", &base).is_ok());
        assert!(
            err(DestinationSettings {
                tenant: "".into(),
                ..base.clone()
            })
            .contains("needs tenant")
        );
        assert!(
            err(DestinationSettings {
                client_secret: None,
                ..base.clone()
            })
            .contains("client_secret")
        );
        assert!(
            err(DestinationSettings {
                graph_url: "nope".into(),
                ..base
            })
            .contains("graph_url")
        );
    }
}
