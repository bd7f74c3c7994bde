//! The CalDAV test bench: a REAL Radicale, SabreDAV 1.8 or Xandikos behind one [`Server`]
//! (users, calendars, objects read back with REPORT as a client would), a mailetd in front of
//! it whose chain ends in CalDavCollect ([`Collector`], fed over SMTP by `support::smtp`), the
//! iCalendar builders the scenarios share, and [`per_server!`], which runs one scenario on
//! each server as tests of their own.

use std::time::Duration;

use mailetd::config::settings::{DavDialect, DavSettings, Secret};
use mailetd::dav::caldav::apply::Options;
use mailetd::dav::caldav::handler::ItipJob;
use mailetd::mail::job::OutboxJob;

use super::davhttp::{self, CALENDAR_QUERY_ALL, DavServer};
use super::eventually;
use super::mailetd::Mailetd;
use super::radicale::{self, Radicale};
use super::sabredav::{self, SabreDav};
use super::xandikos::Xandikos;

pub const WAIT: Duration = Duration::from_secs(60);

/// Which real server a scenario runs against.
#[derive(Clone, Copy)]
pub enum Kind {
    Radicale,
    Sabre,
    Xandikos,
}

/// One of the real CalDAV servers, with users made by the service account.
pub enum Server {
    Radicale(Radicale),
    Sabre(SabreDav),
    Xandikos(Xandikos),
}

/// A calendar object as a client sees it.
#[derive(Debug, Clone)]
pub struct Object {
    pub href: String,
    pub etag: String,
    pub ics: String,
}

impl Object {
    /// Unfolded lines.
    pub fn lines(&self) -> Vec<String> {
        self.ics
            .replace("\r\n", "\n")
            .replace("\n ", "")
            .replace("\n\t", "")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Values of property `name` (any parameters), in order.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.lines()
            .iter()
            .filter(|l| l.starts_with(&format!("{name}:")) || l.starts_with(&format!("{name};")))
            .map(|l| l.split_once(':').map(|x| x.1).unwrap_or("").to_string())
            .collect()
    }

    /// The whole line of property `name` whose text contains `needle`.
    pub fn line_with(&self, name: &str, needle: &str) -> Option<String> {
        self.lines()
            .into_iter()
            .find(|l| l.starts_with(name) && l.to_lowercase().contains(&needle.to_lowercase()))
    }

    /// The PARTSTAT of `who`'s ATTENDEE line; panics, showing the object, when there is none.
    pub fn partstat(&self, who: &str) -> String {
        let line = self
            .line_with("ATTENDEE", who)
            .unwrap_or_else(|| panic!("no ATTENDEE {who} in\n{}", self.ics));
        line.split([';', ':'])
            .find_map(|part| part.strip_prefix("PARTSTAT="))
            .unwrap_or_else(|| panic!("no PARTSTAT in {line}"))
            .to_string()
    }

    pub fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }
}

impl Server {
    pub fn start(kind: Kind) -> Server {
        match kind {
            Kind::Radicale => Server::Radicale(Radicale::start()),
            Kind::Sabre => Server::Sabre(SabreDav::start()),
            Kind::Xandikos => Server::Xandikos(Xandikos::start()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Server::Radicale(_) => "Radicale",
            Server::Sabre(_) => "SabreDAV",
            Server::Xandikos(_) => "Xandikos",
        }
    }

    pub fn dav_settings(&self) -> DavSettings {
        let (base, template, account) = match self {
            Server::Radicale(r) => (
                r.url(),
                "{base}/{user}/calendar/",
                Some((radicale::SERVICE_USER, radicale::SERVICE_PASSWORD)),
            ),
            Server::Sabre(s) => (
                s.url(),
                "{base}/calendars/{local}/default/",
                Some((sabredav::SERVICE_USER, sabredav::SERVICE_PASSWORD)),
            ),
            // single-user, no authentication
            Server::Xandikos(x) => (x.url(), "{base}/{local}/calendar/", None),
        };
        DavSettings {
            dialect: DavDialect::Caldav,
            base_url: base,
            calendar_url: template.into(),
            username: account.map(|(u, _)| u.to_string()),
            password: account.map(|(_, p)| Secret::new(p)),
            ..DavSettings::default()
        }
    }

    pub fn toml(&self) -> String {
        let s = self.dav_settings();
        let mut toml = format!(
            "data_dir = \"var\"\n[outbox]\nretry_base_secs = 1\nretry_max_secs = 1\n\n[dav]\ndialect = \"caldav\"\nbase_url = {:?}\ncalendar_url = {:?}\n",
            s.base_url, s.calendar_url,
        );
        if let (Some(u), Some(p)) = (s.username, s.password) {
            toml.push_str(&format!("username = {u:?}\npassword = {:?}\n", p.expose()));
        }
        toml
    }

    /// Gives `address` an (empty) calendar.
    pub fn add_user(&self, address: &str) {
        let local = address.split('@').next().unwrap();
        match self {
            Server::Radicale(r) => r.create_calendar(address, "calendar"),
            Server::Xandikos(x) => x.create_calendar(local, "calendar"),
            Server::Sabre(s) => {
                s.add_user(local, "user-secret");
                s.create_calendar(local, "default");
            }
        }
    }

    pub fn calendar_path(&self, address: &str) -> String {
        match self {
            Server::Radicale(_) => format!("/{address}/calendar/"),
            Server::Sabre(_) => {
                format!("/calendars/{}/default/", address.split('@').next().unwrap())
            }
            Server::Xandikos(_) => format!("/{}/calendar/", address.split('@').next().unwrap()),
        }
    }

    /// The server behind its [`DavServer`] requests and queries.
    pub fn dav(&self) -> &dyn DavServer {
        match self {
            Server::Radicale(r) => r,
            Server::Sabre(s) => s,
            Server::Xandikos(x) => x,
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> davhttp::Response {
        self.dav().request(method, path, headers, body)
    }

    /// Every calendar object of the user's calendar.
    pub fn objects(&self, address: &str) -> Vec<Object> {
        let r = self.request(
            "REPORT",
            &self.calendar_path(address),
            &[("Depth", "1"), ("Content-Type", "application/xml")],
            Some(CALENDAR_QUERY_ALL),
        );
        assert_eq!(r.status, 207, "REPORT: {r:?}");
        let hrefs = davhttp::texts_of(&r.body, "href");
        let etags = davhttp::texts_of(&r.body, "getetag");
        let data = davhttp::texts_of(&r.body, "calendar-data");
        assert_eq!(hrefs.len(), data.len(), "{}", r.body);
        hrefs
            .into_iter()
            .zip(etags)
            .zip(data)
            .map(|((href, etag), ics)| Object { href, etag, ics })
            .collect()
    }

    /// The only object of the user's calendar.
    pub fn only(&self, address: &str) -> Object {
        let mut objects = self.objects(address);
        assert_eq!(objects.len(), 1, "{}: {objects:#?}", self.name());
        objects.pop().unwrap()
    }

    /// Stores an object as the user's own client would, under `name`.
    pub fn put(&self, address: &str, name: &str, ics: &str) {
        let r = self.request(
            "PUT",
            &format!("{}{name}", self.calendar_path(address)),
            &[("Content-Type", "text/calendar; charset=utf-8")],
            Some(ics),
        );
        assert!(matches!(r.status, 201 | 204), "PUT: {r:?}");
    }
}

pub fn vevent(
    uid: &str,
    seq: u32,
    stamp: &str,
    organizer: &str,
    attendees: &[(&str, &str)],
    extra: &str,
) -> String {
    let mut s = format!(
        "BEGIN:VEVENT\r\nUID:{uid}\r\nSEQUENCE:{seq}\r\nDTSTAMP:{stamp}\r\n\
         DTSTART;TZID=Europe/Paris:20261110T100000\r\nDTEND;TZID=Europe/Paris:20261110T110000\r\n\
         SUMMARY:Design review\r\nORGANIZER;CN=Organizer:mailto:{organizer}\r\n"
    );
    for (who, partstat) in attendees {
        s.push_str(&format!(
            "ATTENDEE;PARTSTAT={partstat};RSVP=TRUE:mailto:{who}\r\n"
        ));
    }
    s.push_str(extra);
    s.push_str("END:VEVENT\r\n");
    s
}

pub fn ics(method: &str, events: &[String]) -> String {
    let mut s = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailetd tests//EN\r\n");
    if !method.is_empty() {
        s.push_str(&format!("METHOD:{method}\r\n"));
    }
    s.push_str(
        "BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n\
         RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\n\
         TZNAME:CET\r\nEND:STANDARD\r\nBEGIN:DAYLIGHT\r\nDTSTART:19700329T020000\r\n\
         RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\n\
         TZNAME:CEST\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n",
    );
    for e in events {
        s.push_str(e);
    }
    s.push_str("END:VCALENDAR\r\n");
    s
}

/// An iMIP mail as a mail client sends it: text/plain + text/calendar in alternative.
pub fn imip(from: &str, to: &[&str], method: &str, ics: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: {}\r\nSubject: Invitation\r\nMessage-ID: <{}@test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Type: text/plain; charset=UTF-8\r\n\r\nYou are invited.\r\n--b1\r\n\
         Content-Type: text/calendar; charset=UTF-8; method={method}\r\n\r\n{ics}--b1--\r\n",
        to.iter()
            .map(|t| format!("<{t}>"))
            .collect::<Vec<_>>()
            .join(", "),
        uuid_like(ics)
    )
}

/// A Message-ID part unique to each mail sent: the same calendar sent again is another
/// mail (mailetd deduplicates a mail mirrored twice by Message-ID + sender + body).
pub fn uuid_like(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static SENT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:x}.{}", h.finish(), SENT.fetch_add(1, Ordering::Relaxed))
}

pub const CONTAINER: &str = r#"<?xml version="1.0"?>
<mailetcontainer enableJmx="false">
    <context><postmaster>postmaster</postmaster></context>
    <spooler><threads>4</threads><errorRepository>file://var/mail/error/</errorRepository></spooler>
    <processors>
        <processor state="root">
            <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
        </processor>
        <processor state="error">
            <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
        </processor>
        <processor state="transport">
            <mailet match="All" class="StripAttachment">
                <mimeType>text/calendar</mimeType>
                <attribute>rawIcalendar2</attribute>
                <onMailetException>ignore</onMailetException>
            </mailet>
            <mailet match="All" class="MimeDecodingMailet">
                <attribute>rawIcalendar2</attribute>
                <onMailetException>ignore</onMailetException>
            </mailet>
            <mailet match="All" class="ICalendarParser">
                <sourceAttribute>rawIcalendar2</sourceAttribute>
                <destinationAttribute>icalendar2</destinationAttribute>
                <onMailetException>ignore</onMailetException>
            </mailet>
            <mailet match="All" class="ICALToJsonAttribute">
                <source>icalendar2</source>
                <destination>icalendarAsJson2</destination>
                <rawSource>rawIcalendar2</rawSource>
                <onMailetException>ignore</onMailetException>
            </mailet>
            <mailet match="All" class="CalDavCollect">
                <source>icalendarAsJson2</source>
            </mailet>
            <mailet match="All" class="Null"/>
        </processor>
    </processors>
</mailetcontainer>
"#;

pub const DOMAINS: &str = r#"<?xml version="1.0"?>
<domainlist><autodetect>false</autodetect><autodetectIP>false</autodetectIP><defaultDomain>example.org</defaultDomain></domainlist>
"#;

/// A mailetd in front of `server`.
pub struct Collector {
    pub mailetd: Mailetd,
}

impl Collector {
    pub fn start(server: &Server) -> Collector {
        Collector::with_parameters(server, "")
    }

    /// A collector whose CalDavCollect also gets `parameters` (XML elements).
    pub fn with_parameters(server: &Server, parameters: &str) -> Collector {
        let container = CONTAINER.replace(
            "<source>icalendarAsJson2</source>\n            </mailet>",
            &format!("<source>icalendarAsJson2</source>{parameters}\n            </mailet>"),
        );
        assert!(parameters.is_empty() || container != CONTAINER);
        let mailetd = Mailetd::start(&[
            ("mailetcontainer.xml", container),
            ("domainlist.xml", DOMAINS.to_string()),
            ("mailetd.toml", server.toml()),
        ]);
        Collector { mailetd }
    }

    pub fn send_raw(&self, from: &str, rcpts: &[&str], message: &str) {
        crate::support::smtp::send(self.mailetd.smtp_port, from, rcpts, message);
    }

    pub fn send(&self, from: &str, rcpts: &[&str], method: &str, ics: &str) {
        self.send_raw(from, rcpts, &imip(from, rcpts, method, ics));
    }

    /// Waits until `n` caldav-itip jobs have been applied in total (any outcome).
    pub fn wait_applied(&self, n: usize) {
        eventually(&format!("{n} applied iTIP jobs"), WAIT, || {
            let log = self.mailetd.log();
            assert!(!log.contains("caldav-itip failed"), "{log}");
            (log.matches("caldav-itip applied").count() >= n).then_some(())
        });
    }

    pub fn log(&self) -> String {
        self.mailetd.log()
    }
}

pub const ALICE_EXT: &str = "alice@partner.example";
pub const BOB: &str = "bob@example.org";
pub const CAROL: &str = "carol@example.org";

/// The [`Kind`] a lowercase server name in [`per_server!`] stands for.
macro_rules! kind {
    (radicale) => {
        $crate::support::caldav::Kind::Radicale
    };
    (sabredav) => {
        $crate::support::caldav::Kind::Sabre
    };
    (xandikos) => {
        $crate::support::caldav::Kind::Xandikos
    };
}
pub(crate) use kind;

/// Runs the scenario `fn(Kind[, arg])` on each server listed: a module named after the
/// scenario with one `#[test]` per server (`<scenario>::radicale`, `::sabredav`,
/// `::xandikos`), so a failure names its server and the servers run in parallel. Attributes
/// before the scenario's name (`#[ignore = "…"]`) go on every test.
macro_rules! per_server {
    (@each [$($attrs:tt)*] $scenario:ident ($($args:tt)*);) => {};
    (@each [$($attrs:tt)*] $scenario:ident ($($args:tt)*); $server:ident $(, $rest:ident)*) => {
        #[test]
        $($attrs)*
        fn $server() {
            super::$scenario($crate::support::caldav::kind!($server) $($args)*);
        }
        $crate::support::caldav::per_server!(@each [$($attrs)*] $scenario ($($args)*); $($rest),*);
    };
    ($(#[$attr:meta])* $scenario:ident $(($arg:expr))?: $($server:ident),+ $(,)?) => {
        mod $scenario {
            $crate::support::caldav::per_server!(
                @each [$(#[$attr])*] $scenario ($(, $arg)?); $($server),+
            );
        }
    };
}
pub(crate) use per_server;

/// A `caldav-itip` job of `ical` for `recipient`, with the default options and calendar.
pub fn itip_job(recipient: &str, ical: String) -> OutboxJob {
    ItipJob {
        recipient: recipient.into(),
        ical,
        options: Options::default(),
        calendar_id: None,
    }
    .into_job()
}
