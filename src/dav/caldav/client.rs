//! Plain CalDAV over HTTP: `REPORT calendar-query` by UID, `GET`, `PUT` and `DELETE` with
//! ETags, Basic auth with a service account or per-user credentials. TLS is verified unless
//! `[dav] trust_all_certs` is set (the client comes from [`crate::dav::transport::client`]).

use std::sync::atomic::{AtomicU64, Ordering};

use quick_xml::Reader;
use quick_xml::events::Event;
use reqwest::{Method, StatusCode, Url};

use crate::config::ConfigError;
use crate::config::settings::DavSettings;
use crate::dav::credentials::Credentials;
pub use crate::dav::transport::DavError;
use crate::dav::transport::{ClientSettings, client};

/// A calendar object read from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// Absolute URL of the resource.
    pub url: String,
    /// Its ETag, quotes included, as the server sent it.
    pub etag: Option<String>,
    /// The iCalendar text.
    pub data: String,
}

/// The result of a calendar-query.
#[derive(Debug, PartialEq, Eq)]
pub enum Query {
    /// The calendar collection does not exist (404): not a user of this server.
    NoCalendar,
    /// The objects matching the query.
    Objects(Vec<Fetched>),
}

/// The precondition of a write.
#[derive(Clone, Copy, Debug)]
pub enum Condition<'a> {
    /// `If-None-Match: *`: create only.
    Absent,
    /// `If-Match: <etag>`: replace only what was read.
    Matches(&'a str),
    /// No precondition (the server gave no ETag).
    Any,
}

/// A CalDAV client for one server.
pub struct CalDavClient {
    http: reqwest::Client,
    credentials: Credentials,
    requests: AtomicU64,
}

impl CalDavClient {
    /// Builds the client and reads the credentials of `[dav]` once.
    pub fn new(settings: &DavSettings) -> Result<Self, ConfigError> {
        let credentials = Credentials::from_settings(settings)?;
        Ok(CalDavClient {
            http: client(ClientSettings::from(settings))?,
            credentials,
            requests: AtomicU64::new(0),
        })
    }

    /// Whether there are credentials to act for `owner`.
    pub fn has_credentials(&self, owner: &str) -> bool {
        self.credentials.covers(owner)
    }

    /// HTTP requests sent so far.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn request(&self, method: Method, url: &str, owner: &str) -> reqwest::RequestBuilder {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let builder = self.http.request(method, url);
        if !self.credentials.covers(owner) {
            // Unauthenticated: the server's 401 then says why, and the caller reports it.
            return builder;
        }
        self.credentials
            .authorize(builder, owner)
            .expect("covers() said there are credentials")
    }

    async fn send(
        &self,
        what: &str,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Option<String>, String), DavError> {
        let response = request
            .send()
            .await
            .map_err(|e| DavError::transport(format!("{what} {url}"), e))?;
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .text()
            .await
            .map_err(|e| DavError::transport(format!("{what} {url}"), e))?;
        Ok((status, etag, body))
    }

    /// The calendar objects of `calendar` (a collection URL ending in `/`) whose
    /// `component` (`VEVENT`, `VTODO`) has this UID, whatever their resource names.
    pub async fn query_uid(
        &self,
        owner: &str,
        calendar: &str,
        component: &str,
        uid: &str,
    ) -> Result<Query, DavError> {
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="{component}"><C:prop-filter name="UID"><C:text-match collation="i;octet">{}</C:text-match></C:prop-filter></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#,
            quick_xml::escape::escape(uid)
        );
        let request = self
            .request(
                Method::from_bytes(b"REPORT").expect("valid"),
                calendar,
                owner,
            )
            .header("Depth", "1")
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(body);
        let (status, _, text) = self.send("REPORT", calendar, request).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(Query::NoCalendar);
        }
        if status != StatusCode::MULTI_STATUS {
            return Err(DavError::status(
                format!("REPORT {calendar}"),
                status,
                &text,
            ));
        }
        let base = Url::parse(calendar)
            .map_err(|e| DavError::bad_url(format!("calendar URL {calendar}"), e))?;
        let objects = parse_multistatus(&text)
            .map_err(|source| DavError::Malformed {
                what: format!("REPORT {calendar}"),
                source,
            })?
            .into_iter()
            .filter_map(|(href, etag, data)| {
                Some(Fetched {
                    url: base.join(&href).ok()?.to_string(),
                    etag,
                    data: data?,
                })
            })
            .collect();
        Ok(Query::Objects(objects))
    }

    /// `PROPFIND url` with `Depth` and a `prop` body; the multistatus text, or `None` on 404.
    pub async fn propfind(
        &self,
        owner: &str,
        url: &str,
        depth: u8,
        props: &str,
    ) -> Result<Option<String>, DavError> {
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop>{props}</D:prop></D:propfind>"#
        );
        let request = self
            .request(Method::from_bytes(b"PROPFIND").expect("valid"), url, owner)
            .header("Depth", depth.to_string())
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(body);
        let (status, _, text) = self.send("PROPFIND", url, request).await?;
        match status {
            StatusCode::MULTI_STATUS => Ok(Some(text)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(DavError::status(format!("PROPFIND {url}"), s, &text)),
        }
    }

    /// `GET url`; `None` on 404.
    pub async fn get(&self, owner: &str, url: &str) -> Result<Option<Fetched>, DavError> {
        let request = self.request(Method::GET, url, owner);
        let (status, etag, data) = self.send("GET", url, request).await?;
        match status {
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(None),
            s if s.is_success() => Ok(Some(Fetched {
                url: url.to_string(),
                etag,
                data,
            })),
            s => Err(DavError::status(format!("GET {url}"), s, &data)),
        }
    }

    /// `PUT url` under `condition`. Returns the status when it is a success or 412 (the
    /// resource changed or appeared since it was read; also a creation's 409, see below);
    /// an error otherwise.
    pub async fn put(
        &self,
        owner: &str,
        url: &str,
        body: String,
        condition: Condition<'_>,
    ) -> Result<StatusCode, DavError> {
        let request = with_condition(self.request(Method::PUT, url, owner), condition)
            .header("Content-Type", "text/calendar; charset=utf-8")
            .body(body);
        let (status, _, text) = self.send("PUT", url, request).await?;
        if status.is_success() || status == StatusCode::PRECONDITION_FAILED {
            return Ok(status);
        }
        // Radicale answers a creation whose UID appeared meanwhile under another name with
        // 409 (no-uid-conflict): the same race as a 412, so the caller re-reads.
        if status == StatusCode::CONFLICT && matches!(condition, Condition::Absent) {
            return Ok(StatusCode::PRECONDITION_FAILED);
        }
        Err(DavError::status(format!("PUT {url}"), status, &text))
    }

    /// `DELETE url` under `condition`; 404 counts as done (someone deleted it first).
    pub async fn delete(
        &self,
        owner: &str,
        url: &str,
        condition: Condition<'_>,
    ) -> Result<StatusCode, DavError> {
        let request = with_condition(self.request(Method::DELETE, url, owner), condition);
        let (status, _, text) = self.send("DELETE", url, request).await?;
        if status.is_success()
            || status == StatusCode::PRECONDITION_FAILED
            || status == StatusCode::NOT_FOUND
        {
            return Ok(status);
        }
        Err(DavError::status(format!("DELETE {url}"), status, &text))
    }
}

fn with_condition(
    request: reqwest::RequestBuilder,
    condition: Condition<'_>,
) -> reqwest::RequestBuilder {
    match condition {
        Condition::Absent => request.header("If-None-Match", "*"),
        Condition::Matches(etag) => request.header("If-Match", etag),
        Condition::Any => request,
    }
}

/// `(href, getetag, calendar-data)` of one `DAV:response`.
pub type ResponseProps = (String, Option<String>, Option<String>);

/// The [`ResponseProps`] of each `DAV:response` of a multistatus body.
pub fn parse_multistatus(xml: &str) -> Result<Vec<ResponseProps>, quick_xml::Error> {
    let mut reader = Reader::from_str(xml);
    let mut out = Vec::new();
    let mut current: Option<ResponseProps> = None;
    let mut field: Option<&'static str> = None;
    let mut text = String::new();
    loop {
        match reader.read_event()? {
            Event::Start(e) => match e.local_name().as_ref() {
                "response" => current = Some((String::new(), None, None)),
                "href" => (field, text) = (Some("href"), String::new()),
                "getetag" => (field, text) = (Some("etag"), String::new()),
                "calendar-data" => (field, text) = (Some("data"), String::new()),
                _ => {}
            },
            Event::Text(t) if field.is_some() => text.push_str(&t.xml10_content()),
            Event::CData(t) if field.is_some() => text.push_str(&t.into_inner()),
            Event::GeneralRef(r) if field.is_some() => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                } else {
                    text.push_str(match r.xml10_content().as_ref() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "apos" => "'",
                        "quot" => "\"",
                        _ => "",
                    });
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                "response" => out.extend(current.take()),
                name @ ("href" | "getetag" | "calendar-data") => {
                    if let Some(cur) = current.as_mut() {
                        let value = std::mem::take(&mut text);
                        match name {
                            "href" if cur.0.is_empty() => cur.0 = value.trim().to_string(),
                            "getetag" => cur.1 = Some(value.trim().to_string()),
                            "calendar-data" => cur.2 = Some(value),
                            _ => {}
                        }
                    }
                    field = None;
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// The first `href` inside an element named `within` (`current-user-principal`,
/// `calendar-home-set`) of a multistatus body.
pub fn href_within(xml: &str, within: &str) -> Option<String> {
    let mut reader = Reader::from_str(xml);
    let mut inside = false;
    let mut in_href = false;
    let mut text = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == within => inside = true,
            Event::Start(e) if inside && e.local_name().as_ref() == "href" => in_href = true,
            Event::Text(t) if in_href => text.push_str(&t.xml10_content()),
            Event::End(e) if in_href && e.local_name().as_ref() == "href" => {
                return Some(text.trim().to_string()).filter(|t| !t.is_empty());
            }
            Event::End(e) if e.local_name().as_ref() == within => inside = false,
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// The hrefs of the calendars that hold VEVENTs in a `Depth: 1` PROPFIND of a calendar
/// home (`resourcetype` and `supported-calendar-component-set`), in document order. A
/// calendar that does not say which components it supports supports them all (RFC 4791).
pub fn event_calendars(xml: &str) -> Vec<String> {
    let mut reader = Reader::from_str(xml);
    let mut out = Vec::new();
    let (mut href, mut is_calendar, mut comps, mut has_set) =
        (String::new(), false, Vec::<String>::new(), false);
    let mut in_href = false;
    loop {
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(_) => return out,
        };
        match event {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                "response" => {
                    (href, is_calendar, has_set) = (String::new(), false, false);
                    comps.clear();
                }
                "href" if href.is_empty() => in_href = true,
                "calendar" => is_calendar = true,
                "supported-calendar-component-set" => has_set = true,
                "comp" => {
                    if let Some(name) = e
                        .attributes()
                        .flatten()
                        .find(|a| a.key.local_name().as_ref() == "name")
                        .map(|a| a.value.to_string())
                    {
                        comps.push(name.to_ascii_uppercase());
                    }
                }
                _ => {}
            },
            Event::Text(t) if in_href => href.push_str(t.xml10_content().trim()),
            Event::End(e) => match e.local_name().as_ref() {
                "href" => in_href = false,
                "response" if is_calendar && (!has_set || comps.iter().any(|c| c == "VEVENT")) => {
                    out.push(std::mem::take(&mut href));
                }
                _ => {}
            },
            Event::Eof => return out,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_answers_are_read() {
        let principal = r#"<multistatus xmlns="DAV:"><response><href>/</href><propstat><prop>
            <current-user-principal><href>/bob%40example.org/</href></current-user-principal>
            </prop></propstat></response></multistatus>"#;
        assert_eq!(
            href_within(principal, "current-user-principal").as_deref(),
            Some("/bob%40example.org/")
        );
        assert_eq!(href_within(principal, "calendar-home-set"), None);
        let home = r#"<d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
          <d:response><d:href>/home/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop></d:propstat></d:response>
          <d:response><d:href>/home/book/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/><card:addressbook xmlns:card="urn:ietf:params:xml:ns:carddav"/></d:resourcetype></d:prop></d:propstat></d:response>
          <d:response><d:href>/home/tasks/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/><c:calendar/></d:resourcetype>
            <c:supported-calendar-component-set><c:comp name="VTODO"/></c:supported-calendar-component-set></d:prop></d:propstat></d:response>
          <d:response><d:href>/home/work/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/><c:calendar/></d:resourcetype>
            <c:supported-calendar-component-set><c:comp name="VEVENT"/><c:comp name="VTODO"/></c:supported-calendar-component-set></d:prop></d:propstat></d:response>
          <d:response><d:href>/home/any/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/><c:calendar/></d:resourcetype></d:prop></d:propstat></d:response>
        </d:multistatus>"#;
        assert_eq!(event_calendars(home), ["/home/work/", "/home/any/"]);
    }

    #[test]
    fn multistatus_with_entities_and_cdata() {
        let xml = r#"<?xml version="1.0"?>
<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
 <response><href>/bob/calendar/a%40b.ics</href><propstat><prop>
  <getetag>"e1"</getetag><C:calendar-data>BEGIN:VCALENDAR&#13;
SUMMARY:R&amp;D &lt;x&gt;&#13;
END:VCALENDAR&#13;
</C:calendar-data></prop><status>HTTP/1.1 200 OK</status></propstat></response>
 <d:response xmlns:d="DAV:"><d:href>/bob/calendar/2.ics</d:href><d:propstat><d:prop><d:getetag>&quot;e2&quot;</d:getetag>
  <C:calendar-data><![CDATA[BEGIN:VCALENDAR
END:VCALENDAR
]]></C:calendar-data></d:prop></d:propstat></d:response>
</multistatus>"#;
        let r = parse_multistatus(xml).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, "/bob/calendar/a%40b.ics");
        assert_eq!(r[0].1.as_deref(), Some("\"e1\""));
        assert!(r[0].2.as_deref().unwrap().contains("SUMMARY:R&D <x>\r\n"));
        assert_eq!(r[1].1.as_deref(), Some("\"e2\""));
        assert!(
            r[1].2
                .as_deref()
                .unwrap()
                .starts_with("BEGIN:VCALENDAR\nEND")
        );
    }
}
