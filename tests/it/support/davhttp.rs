//! Plain HTTP/WebDAV requests for the DAV harnesses (curl, so that the client under test is
//! not also the client that checks its work), and extraction of REPORT results.

use std::process::Command;

/// A DAV response: status (0 when nothing answered) and body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

/// Sends `method url` with Basic `auth`, extra `headers` and an optional `body`.
pub fn request(
    method: &str,
    url: &str,
    auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-g", "-X", method, "-w", "\n%{http_code}"]);
    if let Some((user, password)) = auth {
        cmd.arg("-u").arg(format!("{user}:{password}"));
    }
    for (name, value) in headers {
        cmd.arg("-H").arg(format!("{name}: {value}"));
    }
    if let Some(body) = body {
        cmd.arg("--data-binary").arg(body);
    }
    let out = cmd.arg(url).output().expect("curl runs");
    if !out.status.success() {
        // not connected (yet): status 0, curl's message as the body
        return Response {
            status: 0,
            body: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    Response {
        status: status.trim().parse().expect("numeric status"),
        body: body.to_string(),
    }
}

/// The `REPORT addressbook-query` body returning every card of a book.
pub const ADDRESSBOOK_QUERY_ALL: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<CR:addressbook-query xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:prop><D:getetag/><CR:address-data/></D:prop></CR:addressbook-query>"#;

/// The `REPORT calendar-query` body returning every VEVENT of a calendar.
pub const CALENDAR_QUERY_ALL: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter></C:filter></C:calendar-query>"#;

/// Extended MKCOL body of an address book.
pub fn mkcol_addressbook_body(name: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype><D:displayname>{name}</D:displayname></D:prop></D:set></D:mkcol>"#
    )
}

/// MKCALENDAR body of a VEVENT calendar.
pub fn mkcalendar_body(name: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop><D:displayname>{name}</D:displayname><C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"#
    )
}

/// The text of every element named `local` (any namespace) in a multistatus body:
/// `address-data` or `calendar-data` of a REPORT.
pub fn texts_of(xml: &str, local: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    loop {
        match reader.read_event().expect("well-formed multistatus") {
            Event::Start(e) if e.local_name().as_ref() == local => current = Some(String::new()),
            Event::Text(t) => {
                if let Some(c) = current.as_mut() {
                    c.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(c) = current.as_mut() {
                    let name: &str = &r;
                    let resolved = match name {
                        "lt" => "<".to_string(),
                        "gt" => ">".to_string(),
                        "amp" => "&".to_string(),
                        "quot" => "\"".to_string(),
                        "apos" => "'".to_string(),
                        n if n.starts_with("#x") => u32::from_str_radix(&n[2..], 16)
                            .ok()
                            .and_then(char::from_u32)
                            .map(String::from)
                            .unwrap_or_default(),
                        n if n.starts_with('#') => n[1..]
                            .parse()
                            .ok()
                            .and_then(char::from_u32)
                            .map(String::from)
                            .unwrap_or_default(),
                        _ => String::new(),
                    };
                    c.push_str(&resolved);
                }
            }
            Event::CData(t) => {
                if let Some(c) = current.as_mut() {
                    c.push_str(&t.xml10_content());
                }
            }
            Event::End(e) if e.local_name().as_ref() == local => {
                if let Some(c) = current.take() {
                    out.push(c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

/// A vCard read back from a server, unfolded, with a lookup by property name.
#[derive(Debug, Clone)]
pub struct Card {
    /// The unfolded content lines.
    pub lines: Vec<String>,
}

impl Card {
    /// Parses (unfolds) a vCard text.
    pub fn parse(text: &str) -> Card {
        let mut lines: Vec<String> = Vec::new();
        for raw in text.split('\n') {
            let raw = raw.trim_end_matches('\r');
            if let Some(rest) = raw.strip_prefix([' ', '\t']) {
                if let Some(last) = lines.last_mut() {
                    last.push_str(rest);
                }
            } else if !raw.is_empty() {
                lines.push(raw.to_string());
            }
        }
        Card { lines }
    }

    /// The value of the first property `name` (case-insensitive), parameters ignored.
    pub fn value(&self, name: &str) -> Option<String> {
        self.lines.iter().find_map(|line| {
            let (head, value) = line.split_once(':')?;
            let prop = head.split(';').next()?;
            prop.eq_ignore_ascii_case(name).then(|| value.to_string())
        })
    }

    /// The whole first line of property `name`, parameters included.
    pub fn line(&self, name: &str) -> Option<&str> {
        self.lines.iter().map(String::as_str).find(|line| {
            line.split([':', ';'])
                .next()
                .is_some_and(|p| p.eq_ignore_ascii_case(name))
        })
    }
}

/// A DAV server started by a test harness (Radicale, SabreDAV, Xandikos, a SOGo user): the
/// requests and queries every harness shares, on top of its address and credentials.
pub trait DavServer {
    /// Its HTTP port on 127.0.0.1.
    fn port(&self) -> u16;

    /// `http://127.0.0.1:port`, without a trailing `/`.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The Basic credentials the harness's requests carry, if any.
    fn credentials(&self) -> Option<(&str, &str)>;

    /// The server's own log, for assertion messages.
    fn log(&self) -> String;

    /// A request to `path` (starting with `/`) with the harness's credentials.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        request(
            method,
            &format!("{}{path}", self.url()),
            self.credentials(),
            headers,
            body,
        )
    }

    /// Waits until `PROPFIND /` answers 207 (`what` names the server in the timeout panic).
    fn wait_until_answering(&self, what: &str) {
        super::eventually(what, std::time::Duration::from_secs(30), || {
            let r = self.request("PROPFIND", "/", &[("Depth", "0")], None);
            (r.status == 207).then_some(())
        });
    }

    /// `MKCOL` of a plain collection (a user's home) at `path`; one already there is fine.
    fn create_collection(&self, path: &str) {
        let r = self.request("MKCOL", path, &[], None);
        assert!(matches!(r.status, 201 | 405), "MKCOL home: {r:?}");
    }

    /// Extended `MKCOL` of the address book `name` at `path`.
    fn create_addressbook_at(&self, path: &str, name: &str) {
        self.create_typed_collection("MKCOL", path, &mkcol_addressbook_body(name));
    }

    /// `MKCALENDAR` of the VEVENT calendar `name` at `path`.
    fn create_calendar_at(&self, path: &str, name: &str) {
        self.create_typed_collection("MKCALENDAR", path, &mkcalendar_body(name));
    }

    /// `method` (MKCOL, MKCALENDAR) with its XML `body` at `path`; 201 expected.
    fn create_typed_collection(&self, method: &str, path: &str, body: &str) {
        let r = self.request(
            method,
            path,
            &[("Content-Type", "application/xml")],
            Some(body),
        );
        assert_eq!(r.status, 201, "{method} {path}: {r:?}\n{}", self.log());
    }

    /// `REPORT` on a collection path with `Depth: 1`.
    fn report(&self, path: &str, body: &str) -> Response {
        self.request(
            "REPORT",
            path,
            &[("Depth", "1"), ("Content-Type", "application/xml")],
            Some(body),
        )
    }

    /// Every vCard of the book at `path` (addressbook-query); empty when the book is missing.
    fn cards(&self, path: &str) -> Vec<Card> {
        let r = self.report(path, ADDRESSBOOK_QUERY_ALL);
        if r.status == 404 {
            return Vec::new();
        }
        assert_eq!(r.status, 207, "REPORT {path}: {r:?}\n{}", self.log());
        texts_of(&r.body, "address-data")
            .iter()
            .map(|t| Card::parse(t))
            .collect()
    }

    /// Every calendar object of the calendar at `path` (calendar-query).
    fn events(&self, path: &str) -> Vec<String> {
        let r = self.report(path, CALENDAR_QUERY_ALL);
        assert_eq!(r.status, 207, "REPORT {path}: {r:?}\n{}", self.log());
        texts_of(&r.body, "calendar-data")
    }
}
