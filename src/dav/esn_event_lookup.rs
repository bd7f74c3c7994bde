//! Whether an event is already in one of a user's esn-sabre calendars, as tmail's
//! `RestrictiveCalDavCollect` asks before sending an iTIP REQUEST or CANCEL: `PROPFIND
//! {dav}/calendars/{userId}` lists the calendars, then a CalDAV `calendar-query` `REPORT`
//! on each looks the UID up (RFC 4791 7.8.6). Requests impersonate the user.

use quick_xml::Reader;
use quick_xml::events::Event;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

use super::openpaas::DavConfig;
use super::transport::DavError;
use super::users::impersonation;

/// Whether `uid` is an event of one of the calendars of `user_id` (`email`).
pub async fn event_exists(
    client: &reqwest::Client,
    dav: &DavConfig,
    user_id: &str,
    email: &str,
    uid: &str,
) -> Result<bool, DavError> {
    let base = dav.api_uri.as_str().trim_end_matches('/');
    let home = format!("/calendars/{user_id}");
    let listing = dav_request(
        client,
        dav,
        email,
        "PROPFIND",
        &format!("{base}{home}"),
        "<d:propfind xmlns:d=\"DAV:\"><d:prop><d:resourcetype/></d:prop></d:propfind>".into(),
    )
    .await?;
    for href in calendar_hrefs(&listing) {
        let href = href.trim_end_matches('/');
        if href == home || href.is_empty() {
            continue;
        }
        let path = if href.starts_with("http") {
            href.to_string()
        } else {
            format!("{base}{href}/")
        };
        let found = dav_request(client, dav, email, "REPORT", &path, query_by_uid(uid)).await?;
        if !responses(&found).is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn dav_request(
    client: &reqwest::Client,
    dav: &DavConfig,
    email: &str,
    method: &str,
    url: &str,
    body: String,
) -> Result<String, DavError> {
    let response = client
        .request(Method::from_bytes(method.as_bytes()).expect("valid"), url)
        .header(CONTENT_TYPE, "application/xml; charset=utf-8")
        .header("Depth", "1")
        .header(AUTHORIZATION, impersonation(dav, email))
        .body(body)
        .send()
        .await
        .map_err(|e| DavError::transport(format!("{method} {url}"), e))?;
    let status = response.status();
    let text = response.bytes().await.unwrap_or_default();
    if status != reqwest::StatusCode::MULTI_STATUS {
        return Err(DavError::status(format!("{method} {url}"), status, &text));
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

fn query_by_uid(uid: &str) -> String {
    let uid = quick_xml::escape::escape(uid);
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><C:calendar-query xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\"><D:prop><D:getetag/></D:prop><C:filter><C:comp-filter name=\"VCALENDAR\"><C:comp-filter name=\"VEVENT\"><C:prop-filter name=\"UID\"><C:text-match collation=\"i;octet\">{uid}</C:text-match></C:prop-filter></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"
    )
}

/// (href, whether its resourcetype holds a `calendar`) of each `response` of a multistatus.
fn responses(xml: &str) -> Vec<(String, bool)> {
    let mut reader = Reader::from_str(xml);
    let mut out = Vec::new();
    let (mut in_href, mut href, mut calendar) = (false, String::new(), false);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => match e.local_name().as_ref() {
                "response" => (href, calendar) = (String::new(), false),
                "href" if href.is_empty() => in_href = true,
                "calendar" => calendar = true,
                _ => {}
            },
            Ok(Event::Empty(e)) if e.local_name().as_ref() == "calendar" => calendar = true,
            Ok(Event::Text(t)) if in_href => {
                href.push_str(t.as_ref());
            }
            Ok(Event::End(e)) => match e.local_name().as_ref() {
                "href" => in_href = false,
                "response" => out.push((href.trim().to_string(), calendar)),
                _ => {}
            },
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

fn calendar_hrefs(xml: &str) -> Vec<String> {
    responses(xml)
        .into_iter()
        .filter(|(_, calendar)| *calendar)
        .map(|(href, _)| href)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendars_of_a_multistatus() {
        let xml = "<d:multistatus xmlns:d=\"DAV:\" xmlns:cal=\"urn:ietf:params:xml:ns:caldav\"><d:response><d:href>/calendars/u1/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop></d:propstat></d:response><d:response><d:href>/calendars/u1/u1/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/><cal:calendar/></d:resourcetype></d:prop></d:propstat></d:response></d:multistatus>";
        assert_eq!(calendar_hrefs(xml), ["/calendars/u1/u1/"]);
        assert!(query_by_uid("a<b").contains(">a&lt;b</C:text-match>"));
    }
}
