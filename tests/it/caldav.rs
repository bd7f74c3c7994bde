//! The caldav dialect against a REAL Radicale and a REAL SabreDAV 1.8: iMIP mails sent over
//! SMTP (python smtplib) to a running mailetd whose chain ends in CalDavCollect, then the
//! users' calendars read back with REPORT (curl) and checked as a user would.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mailetd::config::settings::{DavDialect, DavSettings, Secret};
use mailetd::dav::caldav::apply::Options;
use mailetd::dav::caldav::handler::{CalDavItipHandler, ItipJob};
use mailetd::outbox::{Delivery, JobHandler};

use crate::support::davhttp::{self, CALENDAR_QUERY_ALL, DavServer};
use crate::support::eventually;
use crate::support::mailetd::Mailetd;
use crate::support::radicale::{self, Radicale};
use crate::support::sabredav::{self, SabreDav};
use crate::support::xandikos::Xandikos;

const WAIT: Duration = Duration::from_secs(60);

/// Which real server a scenario runs against.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Radicale,
    Sabre,
    Xandikos,
}

/// One of the real CalDAV servers, with users made by the service account.
pub(crate) enum Server {
    Radicale(Radicale),
    Sabre(SabreDav),
    Xandikos(Xandikos),
}

/// A calendar object as a client sees it.
#[derive(Debug, Clone)]
pub(crate) struct Object {
    pub(crate) href: String,
    etag: String,
    pub(crate) ics: String,
}

impl Object {
    /// Unfolded lines.
    fn lines(&self) -> Vec<String> {
        self.ics
            .replace("\r\n", "\n")
            .replace("\n ", "")
            .replace("\n\t", "")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Values of property `name` (any parameters), in order.
    pub(crate) fn values(&self, name: &str) -> Vec<String> {
        self.lines()
            .iter()
            .filter(|l| l.starts_with(&format!("{name}:")) || l.starts_with(&format!("{name};")))
            .map(|l| l.split_once(':').map(|x| x.1).unwrap_or("").to_string())
            .collect()
    }

    /// The whole line of property `name` whose text contains `needle`.
    pub(crate) fn line_with(&self, name: &str, needle: &str) -> Option<String> {
        self.lines()
            .into_iter()
            .find(|l| l.starts_with(name) && l.to_lowercase().contains(&needle.to_lowercase()))
    }

    fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }
}

impl Server {
    pub(crate) fn start(kind: Kind) -> Server {
        match kind {
            Kind::Radicale => Server::Radicale(Radicale::start()),
            Kind::Sabre => Server::Sabre(SabreDav::start()),
            Kind::Xandikos => Server::Xandikos(Xandikos::start()),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Server::Radicale(_) => "Radicale",
            Server::Sabre(_) => "SabreDAV",
            Server::Xandikos(_) => "Xandikos",
        }
    }

    pub(crate) fn dav_settings(&self) -> DavSettings {
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

    fn toml(&self) -> String {
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
    pub(crate) fn add_user(&self, address: &str) {
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

    fn calendar_path(&self, address: &str) -> String {
        match self {
            Server::Radicale(_) => format!("/{address}/calendar/"),
            Server::Sabre(_) => {
                format!("/calendars/{}/default/", address.split('@').next().unwrap())
            }
            Server::Xandikos(_) => format!("/{}/calendar/", address.split('@').next().unwrap()),
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> davhttp::Response {
        match self {
            Server::Radicale(r) => r.request(method, path, headers, body),
            Server::Sabre(s) => s.request(method, path, headers, body),
            Server::Xandikos(x) => x.request(method, path, headers, body),
        }
    }

    /// Every calendar object of the user's calendar.
    pub(crate) fn objects(&self, address: &str) -> Vec<Object> {
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
    pub(crate) fn only(&self, address: &str) -> Object {
        let mut objects = self.objects(address);
        assert_eq!(objects.len(), 1, "{}: {objects:#?}", self.name());
        objects.pop().unwrap()
    }

    /// Stores an object as the user's own client would, under `name`.
    pub(crate) fn put(&self, address: &str, name: &str, ics: &str) {
        let r = self.request(
            "PUT",
            &format!("{}{name}", self.calendar_path(address)),
            &[("Content-Type", "text/calendar; charset=utf-8")],
            Some(ics),
        );
        assert!(matches!(r.status, 201 | 204), "PUT: {r:?}");
    }
}

pub(crate) fn vevent(
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

pub(crate) fn ics(method: &str, events: &[String]) -> String {
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
fn imip(from: &str, to: &[&str], method: &str, ics: &str) -> String {
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
fn uuid_like(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static SENT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:x}.{}", h.finish(), SENT.fetch_add(1, Ordering::Relaxed))
}

const CONTAINER: &str = r#"<?xml version="1.0"?>
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

const DOMAINS: &str = r#"<?xml version="1.0"?>
<domainlist><autodetect>false</autodetect><autodetectIP>false</autodetectIP><defaultDomain>example.org</defaultDomain></domainlist>
"#;

/// A mailetd in front of `server`.
struct Collector {
    mailetd: Mailetd,
}

impl Collector {
    pub(crate) fn start(server: &Server) -> Collector {
        Collector::with_parameters(server, "")
    }

    /// A collector whose CalDavCollect also gets `parameters` (XML elements).
    fn with_parameters(server: &Server, parameters: &str) -> Collector {
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

    fn send_raw(&self, from: &str, rcpts: &[&str], message: &str) {
        crate::support::smtp::send(self.mailetd.smtp_port, from, rcpts, message);
    }

    fn send(&self, from: &str, rcpts: &[&str], method: &str, ics: &str) {
        self.send_raw(from, rcpts, &imip(from, rcpts, method, ics));
    }

    /// Waits until `n` caldav-itip jobs have been applied in total (any outcome).
    fn wait_applied(&self, n: usize) {
        eventually(&format!("{n} applied iTIP jobs"), WAIT, || {
            let log = self.mailetd.log();
            assert!(!log.contains("caldav-itip failed"), "{log}");
            (log.matches("caldav-itip applied").count() >= n).then_some(())
        });
    }

    fn log(&self) -> String {
        self.mailetd.log()
    }
}

pub(crate) const ALICE_EXT: &str = "alice@partner.example";
pub(crate) const BOB: &str = "bob@example.org";
const CAROL: &str = "carol@example.org";

fn request_update_older_cancel(kind: Kind) {
    let server = Server::start(kind);
    server.add_user(BOB);
    server.add_user(CAROL);
    let mailetd = Collector::start(&server);
    let attendees = [(BOB, "NEEDS-ACTION"), (CAROL, "NEEDS-ACTION")];
    let v0 = vevent(
        "evt-1",
        0,
        "20261101T090000Z",
        ALICE_EXT,
        &attendees,
        "LOCATION:Room A\r\n",
    );
    mailetd.send(
        ALICE_EXT,
        &[BOB, CAROL],
        "REQUEST",
        &ics("REQUEST", std::slice::from_ref(&v0)),
    );
    mailetd.wait_applied(2);
    for user in [BOB, CAROL] {
        let e = server.only(user);
        assert_eq!(e.values("UID"), ["evt-1"]);
        assert_eq!(e.values("LOCATION"), ["Room A"]);
        assert!(
            e.values("METHOD").is_empty(),
            "METHOD is not stored: {}",
            e.ics
        );
        assert_eq!(e.values("TZID"), ["Europe/Paris"], "VTIMEZONE kept");
    }

    // the organizer moves the meeting: SEQUENCE 1
    let v1 = vevent(
        "evt-1",
        1,
        "20261102T090000Z",
        ALICE_EXT,
        &attendees,
        "LOCATION:Room B\r\n",
    );
    mailetd.send(ALICE_EXT, &[BOB], "REQUEST", &ics("REQUEST", &[v1]));
    mailetd.wait_applied(3);
    let updated = server.only(BOB);
    assert_eq!(updated.values("LOCATION"), ["Room B"]);
    assert_eq!(updated.values("SEQUENCE"), ["1"]);

    // the first invitation arrives again, late: nothing changes
    mailetd.send(ALICE_EXT, &[BOB], "REQUEST", &ics("REQUEST", &[v0]));
    mailetd.wait_applied(4);
    let after = server.only(BOB);
    assert_eq!(after.values("LOCATION"), ["Room B"]);
    assert_eq!(after.etag, updated.etag, "an older REQUEST writes nothing");

    // cancelled
    let cancel = vevent("evt-1", 2, "20261103T090000Z", ALICE_EXT, &attendees, "");
    mailetd.send(ALICE_EXT, &[BOB], "CANCEL", &ics("CANCEL", &[cancel]));
    mailetd.wait_applied(5);
    let cancelled = server.only(BOB);
    assert_eq!(
        cancelled.values("STATUS"),
        ["CANCELLED"],
        "{}",
        cancelled.ics
    );
    assert_eq!(cancelled.values("LOCATION"), ["Room B"]);
    // carol's copy was not touched by bob's mails
    assert_eq!(server.only(CAROL).values("LOCATION"), ["Room A"]);
    assert!(!mailetd.log().contains("svc-secret") && !mailetd.log().contains("Basic "));
}

#[test]
fn radicale_request_update_older_cancel() {
    request_update_older_cancel(Kind::Radicale);
}

#[test]
fn sabredav_request_update_older_cancel() {
    request_update_older_cancel(Kind::Sabre);
}

#[test]
fn xandikos_request_update_older_cancel() {
    request_update_older_cancel(Kind::Xandikos);
}

fn instance_moved_then_cancelled(kind: Kind) {
    let server = Server::start(kind);
    server.add_user(BOB);
    let mailetd = Collector::start(&server);
    let attendees = [(BOB, "NEEDS-ACTION")];
    let series = vevent(
        "weekly-1",
        0,
        "20261101T090000Z",
        ALICE_EXT,
        &attendees,
        "RRULE:FREQ=WEEKLY;COUNT=6\r\n",
    );
    mailetd.send(ALICE_EXT, &[BOB], "REQUEST", &ics("REQUEST", &[series]));
    mailetd.wait_applied(1);
    // the third meeting moves to the afternoon
    let moved = vevent(
        "weekly-1",
        1,
        "20261102T090000Z",
        ALICE_EXT,
        &attendees,
        "RECURRENCE-ID;TZID=Europe/Paris:20261124T100000\r\nLOCATION:Afternoon room\r\n",
    )
    .replace(
        "DTSTART;TZID=Europe/Paris:20261110T100000",
        "DTSTART;TZID=Europe/Paris:20261124T150000",
    )
    .replace(
        "DTEND;TZID=Europe/Paris:20261110T110000",
        "DTEND;TZID=Europe/Paris:20261124T160000",
    );
    mailetd.send(ALICE_EXT, &[BOB], "REQUEST", &ics("REQUEST", &[moved]));
    mailetd.wait_applied(2);
    let e = server.only(BOB);
    assert_eq!(e.count("BEGIN:VEVENT"), 2, "{}", e.ics);
    assert_eq!(
        e.count("RRULE:FREQ=WEEKLY;COUNT=6"),
        1,
        "the master keeps its rule"
    );
    assert_eq!(e.values("LOCATION"), ["Afternoon room"]);
    // then that meeting is cancelled
    let cancel = vevent(
        "weekly-1",
        2,
        "20261103T090000Z",
        ALICE_EXT,
        &attendees,
        "RECURRENCE-ID;TZID=Europe/Paris:20261124T100000\r\n",
    );
    mailetd.send(ALICE_EXT, &[BOB], "CANCEL", &ics("CANCEL", &[cancel]));
    mailetd.wait_applied(3);
    let e = server.only(BOB);
    assert_eq!(
        e.count("BEGIN:VEVENT"),
        1,
        "the override is gone: {}",
        e.ics
    );
    assert!(
        e.line_with("EXDATE", "20261124T100000").is_some(),
        "EXDATE on the master: {}",
        e.ics
    );
    assert!(e.values("STATUS").is_empty(), "the series is not cancelled");
}

#[test]
fn radicale_instance_moved_then_cancelled() {
    instance_moved_then_cancelled(Kind::Radicale);
}

#[test]
fn sabredav_instance_moved_then_cancelled() {
    instance_moved_then_cancelled(Kind::Sabre);
}

#[test]
fn xandikos_instance_moved_then_cancelled() {
    instance_moved_then_cancelled(Kind::Xandikos);
}

/// The organizer is local; her client stored the event under its own name.
fn reply_and_client_named_event(kind: Kind) {
    let server = Server::start(kind);
    let alice = "alice@example.org";
    let dave = "dave@partner.example";
    server.add_user(alice);
    server.add_user(BOB);
    let mailetd = Collector::start(&server);
    let organized = vevent(
        "own-1",
        0,
        "20261101T090000Z",
        alice,
        &[(dave, "NEEDS-ACTION"), (BOB, "NEEDS-ACTION")],
        "",
    );
    server.put(
        alice,
        "B0A1F2C3-from-her-phone.ics",
        &ics("", std::slice::from_ref(&organized)),
    );
    // dave (external) accepts
    let reply = format!(
        "BEGIN:VEVENT\r\nUID:own-1\r\nSEQUENCE:0\r\nDTSTAMP:20261101T100000Z\r\n\
         ORGANIZER:mailto:{alice}\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:{dave}\r\nEND:VEVENT\r\n"
    );
    mailetd.send(dave, &[alice], "REPLY", &ics("REPLY", &[reply]));
    mailetd.wait_applied(1);
    let e = server.only(alice);
    assert!(
        e.href.ends_with("/B0A1F2C3-from-her-phone.ics"),
        "updated in place: {}",
        e.href
    );
    assert!(
        e.line_with("ATTENDEE", dave)
            .unwrap()
            .contains("PARTSTAT=ACCEPTED"),
        "{}",
        e.ics
    );
    assert!(
        e.line_with("ATTENDEE", BOB)
            .unwrap()
            .contains("PARTSTAT=NEEDS-ACTION")
    );

    // bob's own client stored his copy under another name; an update never duplicates it
    server.put(BOB, "bobs-client-77.ics", &ics("", &[organized]));
    let update = vevent(
        "own-1",
        1,
        "20261102T090000Z",
        alice,
        &[(dave, "ACCEPTED"), (BOB, "NEEDS-ACTION")],
        "LOCATION:Main hall\r\n",
    );
    mailetd.send(alice, &[BOB, dave], "REQUEST", &ics("REQUEST", &[update]));
    mailetd.wait_applied(2);
    let e = server.only(BOB);
    assert!(e.href.ends_with("/bobs-client-77.ics"), "{}", e.href);
    assert_eq!(e.values("LOCATION"), ["Main hall"]);
}

#[test]
fn radicale_reply_updates_organizer_copy_and_client_named_events_in_place() {
    reply_and_client_named_event(Kind::Radicale);
}

#[test]
fn sabredav_reply_updates_organizer_copy_and_client_named_events_in_place() {
    reply_and_client_named_event(Kind::Sabre);
}

#[test]
fn xandikos_reply_updates_organizer_copy_and_client_named_events_in_place() {
    reply_and_client_named_event(Kind::Xandikos);
}

/// An attendee's own REPLY (mirrored outgoing mail addressed back to them) writes nothing.
fn own_reply_is_not_applied(kind: Kind) {
    let server = Server::start(kind);
    server.add_user(BOB);
    let mailetd = Collector::start(&server);
    let invite = vevent(
        "evt-own",
        0,
        "20261101T090000Z",
        ALICE_EXT,
        &[(BOB, "NEEDS-ACTION")],
        "",
    );
    mailetd.send(ALICE_EXT, &[BOB], "REQUEST", &ics("REQUEST", &[invite]));
    mailetd.wait_applied(1);
    let before = server.only(BOB);
    let reply = format!(
        "BEGIN:VEVENT\r\nUID:evt-own\r\nSEQUENCE:0\r\nDTSTAMP:20261101T100000Z\r\n\
         ORGANIZER:mailto:{ALICE_EXT}\r\nATTENDEE;PARTSTAT=DECLINED:mailto:{BOB}\r\nEND:VEVENT\r\n"
    );
    mailetd.send(BOB, &[BOB, ALICE_EXT], "REPLY", &ics("REPLY", &[reply]));
    eventually("the REPLY is seen and skipped", WAIT, || {
        mailetd
            .log()
            .contains("invitation not for this recipient's calendar")
            .then_some(())
    });
    let after = server.only(BOB);
    assert_eq!(after.etag, before.etag, "no write");
    assert!(
        after
            .line_with("ATTENDEE", BOB)
            .unwrap()
            .contains("PARTSTAT=NEEDS-ACTION")
    );
    assert_eq!(
        mailetd.log().matches("caldav-itip applied").count(),
        1,
        "no job for it"
    );
}

#[test]
fn radicale_own_reply_is_not_applied() {
    own_reply_is_not_applied(Kind::Radicale);
}

#[test]
fn sabredav_own_reply_is_not_applied() {
    own_reply_is_not_applied(Kind::Sabre);
}

#[test]
fn xandikos_own_reply_is_not_applied() {
    own_reply_is_not_applied(Kind::Xandikos);
}

/// Google: the invitation inline and again as invite.ics; one event per recipient.
fn google_invitation_creates_one_event(kind: Kind) {
    let server = Server::start(kind);
    server.add_user(BOB);
    server.add_user(CAROL);
    let mailetd = Collector::start(&server);
    let eml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/google-request.eml"),
    )
    .unwrap();
    mailetd.send_raw("alice.martin@partner.example", &[BOB, CAROL], &eml);
    mailetd.wait_applied(2);
    std::thread::sleep(Duration::from_millis(300));
    for user in [BOB, CAROL] {
        let e = server.only(user);
        assert_eq!(e.values("UID"), ["4q1v0b6m2l8f5k3r9s7t0u2w4y@google.com"]);
        assert_eq!(e.count("BEGIN:VEVENT"), 1);
    }
    assert_eq!(
        mailetd.log().matches("caldav-itip applied").count(),
        2,
        "{}",
        mailetd.log()
    );
}

#[test]
fn radicale_google_invitation_creates_exactly_one_event() {
    google_invitation_creates_one_event(Kind::Radicale);
}

#[test]
fn sabredav_google_invitation_creates_exactly_one_event() {
    google_invitation_creates_one_event(Kind::Sabre);
}

#[test]
fn xandikos_google_invitation_creates_exactly_one_event() {
    google_invitation_creates_one_event(Kind::Xandikos);
}

/// A local recipient without a calendar costs no dead letter.
#[test]
fn radicale_recipient_without_calendar_is_not_an_error() {
    let server = Server::start(Kind::Radicale);
    server.add_user(BOB);
    let mailetd = Collector::start(&server);
    let invite = vevent(
        "evt-2",
        0,
        "20261101T090000Z",
        ALICE_EXT,
        &[(BOB, "NEEDS-ACTION")],
        "",
    );
    mailetd.send(
        ALICE_EXT,
        &[BOB, "nobody@example.org"],
        "REQUEST",
        &ics("REQUEST", &[invite]),
    );
    mailetd.wait_applied(1);
    eventually("the 404 is noted", WAIT, || {
        mailetd
            .log()
            .contains("not a user of this server")
            .then_some(())
    });
    assert_eq!(server.objects(BOB).len(), 1);
    let log = mailetd.log();
    assert!(
        !log.contains("caldav-itip failed") && !log.contains("dead"),
        "{log}"
    );
}

/// RFC 9671 parameters end to end: `calendarId` sends new events to another calendar
/// (and updates find them there), `deleteCanceled` deletes on CANCEL, `organizers` keeps
/// strangers from creating events.
fn calendar_id_delete_canceled_and_organizers(kind: Kind) {
    let server = Server::start(kind);
    server.add_user(BOB);
    // the "work" sibling of bob's default calendar
    let default = server.calendar_path(BOB);
    let work = format!(
        "{}work/",
        &default[..default[..default.len() - 1].rfind('/').unwrap() + 1]
    );
    let r = server.request(
        "MKCALENDAR",
        &work,
        &[("Content-Type", "application/xml")],
        Some(&davhttp::mkcalendar_body("work")),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let mailetd = Collector::with_parameters(
        &server,
        "\n                <calendarId>work</calendarId>\n                <deleteCanceled>true</deleteCanceled>\n                <organizers>partner.example</organizers>",
    );
    let attendees = [(BOB, "NEEDS-ACTION")];
    let v0 = vevent(
        "work-1",
        0,
        "20261101T090000Z",
        ALICE_EXT,
        &attendees,
        "LOCATION:A\r\n",
    );
    mailetd.send(ALICE_EXT, &[BOB], "REQUEST", &ics("REQUEST", &[v0]));
    // an organizer outside partner.example may not create
    let stranger = "eve@elsewhere.example";
    let spam = vevent("spam-1", 0, "20261101T090000Z", stranger, &attendees, "");
    mailetd.send(stranger, &[BOB], "REQUEST", &ics("REQUEST", &[spam]));
    mailetd.wait_applied(2);
    let objects_in = |path: &str| {
        let r = server.request(
            "REPORT",
            path,
            &[("Depth", "1"), ("Content-Type", "application/xml")],
            Some(CALENDAR_QUERY_ALL),
        );
        assert_eq!(r.status, 207, "{r:?}");
        davhttp::texts_of(&r.body, "calendar-data")
    };
    assert!(
        server.objects(BOB).is_empty(),
        "nothing in the default calendar"
    );
    let in_work = objects_in(&work);
    assert_eq!(in_work.len(), 1, "{in_work:?}");
    assert!(in_work[0].contains("UID:work-1") && in_work[0].contains("LOCATION:A"));
    let v1 = vevent(
        "work-1",
        1,
        "20261102T090000Z",
        ALICE_EXT,
        &attendees,
        "LOCATION:B\r\n",
    );
    mailetd.send(ALICE_EXT, &[BOB], "REQUEST", &ics("REQUEST", &[v1]));
    mailetd.wait_applied(3);
    let in_work = objects_in(&work);
    assert_eq!(in_work.len(), 1, "updated where it is: {in_work:?}");
    assert!(in_work[0].contains("LOCATION:B"));
    let cancel = vevent("work-1", 2, "20261103T090000Z", ALICE_EXT, &attendees, "");
    mailetd.send(ALICE_EXT, &[BOB], "CANCEL", &ics("CANCEL", &[cancel]));
    mailetd.wait_applied(4);
    assert!(objects_in(&work).is_empty(), "deleted");
    assert!(server.objects(BOB).is_empty());
}

#[test]
fn radicale_calendar_id_delete_canceled_and_organizers() {
    calendar_id_delete_canceled_and_organizers(Kind::Radicale);
}

#[test]
fn sabredav_calendar_id_delete_canceled_and_organizers() {
    calendar_id_delete_canceled_and_organizers(Kind::Sabre);
}

/// `calendar_url = "discover"` with per-user credentials: current-user-principal →
/// calendar-home-set → the first calendar that holds VEVENTs (a task list comes first).
#[test]
fn radicale_discovery_finds_the_first_event_calendar() {
    let radicale = Radicale::start();
    radicale.add_user(BOB, "bob-app-password");
    radicale.create_home(BOB);
    let tasks = r#"<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop><D:displayname>Tasks</D:displayname><C:supported-calendar-component-set><C:comp name="VTODO"/></C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"#;
    let r = radicale.request(
        "MKCALENDAR",
        &format!("/{BOB}/aaa-tasks/"),
        &[("Content-Type", "application/xml")],
        Some(tasks),
    );
    assert_eq!(r.status, 201, "{r:?}");
    radicale.create_calendar(BOB, "work");
    let server = Server::Radicale(radicale);
    let collector = {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("dav-users");
        std::fs::write(&credentials, format!("{BOB}:bob-app-password\n")).unwrap();
        let toml = format!(
            "data_dir = \"var\"\n[dav]\ndialect = \"caldav\"\nbase_url = {:?}\ncalendar_url = \"discover\"\ncredentials_file = {:?}\n",
            server.dav_settings().base_url,
            credentials.display().to_string()
        );
        let mailetd = Mailetd::start(&[
            ("mailetcontainer.xml", CONTAINER.to_string()),
            ("domainlist.xml", DOMAINS.to_string()),
            ("mailetd.toml", toml),
        ]);
        (Collector { mailetd }, dir)
    };
    let mailetd = &collector.0;
    let invite = vevent(
        "found-1",
        0,
        "20261101T090000Z",
        ALICE_EXT,
        &[(BOB, "NEEDS-ACTION")],
        "",
    );
    // carol has no credentials: skipped without a request
    mailetd.send(
        ALICE_EXT,
        &[BOB, CAROL],
        "REQUEST",
        &ics("REQUEST", &[invite]),
    );
    mailetd.wait_applied(1);
    let Server::Radicale(radicale) = &server else {
        unreachable!()
    };
    let work = radicale.events(&format!("/{BOB}/work/"));
    assert_eq!(work.len(), 1, "{}", mailetd.log());
    assert!(work[0].contains("UID:found-1"));
    assert!(radicale.events(&format!("/{BOB}/aaa-tasks/")).is_empty());
    assert!(!mailetd.log().contains("bob-app-password"));
}

/// The user's client stores the invitation under its own name between mailetd's read and
/// its creation: the server refuses the second UID (Radicale 409, Xandikos 412), mailetd
/// re-reads and updates the client's copy. (SabreDAV 1.8 has no UID check: not run there.)
fn creation_race_with_the_users_client_never_duplicates(kind: Kind) {
    let server = Arc::new(Server::start(kind));
    server.add_user(BOB);
    let invite = vevent(
        "race-2",
        1,
        "20261102T090000Z",
        ALICE_EXT,
        &[(BOB, "NEEDS-ACTION")],
        "LOCATION:New\r\n",
    );
    let client_copy = ics(
        "",
        &[vevent(
            "race-2",
            0,
            "20261101T090000Z",
            ALICE_EXT,
            &[(BOB, "ACCEPTED")],
            "LOCATION:Old\r\n",
        )],
    );
    let raced = Arc::new(AtomicBool::new(false));
    let hook = {
        let (server, raced) = (server.clone(), raced.clone());
        Arc::new(move || {
            if !raced.swap(true, Ordering::SeqCst) {
                server.put(BOB, "phone-made.ics", &client_copy);
            }
        })
    };
    let handler = CalDavItipHandler::new(&server.dav_settings())
        .unwrap()
        .with_before_write(hook);
    let job = ItipJob {
        recipient: BOB.into(),
        ical: ics("REQUEST", &[invite]),
        options: Options::default(),
        calendar_id: None,
    }
    .into_job();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(handler.deliver(&job)), Delivery::Done);
    assert!(raced.load(Ordering::SeqCst));
    let e = server.only(BOB);
    assert!(e.href.ends_with("/phone-made.ics"), "{}", e.href);
    assert_eq!(e.values("LOCATION"), ["New"]);
    assert!(
        handler.counts().contains(&("conflicts", 1)),
        "{:?}",
        handler.counts()
    );
}

#[test]
fn radicale_creation_race_with_the_users_client_never_duplicates() {
    creation_race_with_the_users_client_never_duplicates(Kind::Radicale);
}

#[test]
fn xandikos_creation_race_with_the_users_client_never_duplicates() {
    creation_race_with_the_users_client_never_duplicates(Kind::Xandikos);
}

/// A concurrent edit between read and write: the 412 is retried and both changes survive.
fn concurrent_edit_is_reapplied(kind: Kind) {
    let server = Arc::new(Server::start(kind));
    let alice = "alice@example.org";
    let (carol, dave) = ("carol@partner.example", "dave@partner.example");
    server.add_user(alice);
    let event = vevent(
        "race-1",
        0,
        "20261101T090000Z",
        alice,
        &[(carol, "NEEDS-ACTION"), (dave, "NEEDS-ACTION")],
        "",
    );
    server.put(alice, "race.ics", &ics("", std::slice::from_ref(&event)));
    // carol's answer lands (through another path) right after the handler has read
    let raced = Arc::new(AtomicBool::new(false));
    let hook = {
        let (server, raced) = (server.clone(), raced.clone());
        let concurrent = ics(
            "",
            &[event.replace(
                &format!("PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{carol}"),
                &format!("PARTSTAT=TENTATIVE;RSVP=TRUE:mailto:{carol}"),
            )],
        );
        Arc::new(move || {
            if !raced.swap(true, Ordering::SeqCst) {
                server.put(alice, "race.ics", &concurrent);
            }
        })
    };
    let handler = CalDavItipHandler::new(&server.dav_settings())
        .unwrap()
        .with_before_write(hook);
    let reply = format!(
        "BEGIN:VEVENT\r\nUID:race-1\r\nSEQUENCE:0\r\nDTSTAMP:20261101T100000Z\r\n\
         ORGANIZER:mailto:{alice}\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:{dave}\r\nEND:VEVENT\r\n"
    );
    let job = ItipJob {
        recipient: alice.into(),
        ical: ics("REPLY", &[reply]),
        options: Options::default(),
        calendar_id: None,
    }
    .into_job();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(handler.deliver(&job)), Delivery::Done);
    assert!(raced.load(Ordering::SeqCst));
    let counts = handler.counts();
    assert!(counts.contains(&("conflicts", 1)), "{counts:?}");
    assert!(counts.contains(&("updated", 1)), "{counts:?}");
    let e = server.only(alice);
    assert!(
        e.line_with("ATTENDEE", carol)
            .unwrap()
            .contains("PARTSTAT=TENTATIVE"),
        "{}",
        e.ics
    );
    assert!(
        e.line_with("ATTENDEE", dave)
            .unwrap()
            .contains("PARTSTAT=ACCEPTED"),
        "{}",
        e.ics
    );
}

#[test]
fn radicale_concurrent_edit_412_is_retried_and_both_changes_survive() {
    concurrent_edit_is_reapplied(Kind::Radicale);
}

#[test]
fn sabredav_concurrent_edit_412_is_retried_and_both_changes_survive() {
    concurrent_edit_is_reapplied(Kind::Sabre);
}

#[test]
fn xandikos_concurrent_edit_412_is_retried_and_both_changes_survive() {
    concurrent_edit_is_reapplied(Kind::Xandikos);
}

/// Sequential iTIP application rate and HTTP requests per job, per server.
fn measure(kind: Kind) {
    let server = Server::start(kind);
    server.add_user(BOB);
    let handler = CalDavItipHandler::new(&server.dav_settings()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = 100;
    let job = |i: usize, seq: u32, method: &str| {
        let e = vevent(
            &format!("bench-{i}"),
            seq,
            &format!("2026110{}T090000Z", seq + 1),
            ALICE_EXT,
            &[(BOB, "NEEDS-ACTION")],
            &format!("LOCATION:Room {seq}\r\n"),
        );
        ItipJob {
            recipient: BOB.into(),
            ical: ics(method, &[e]),
            options: Options::default(),
            calendar_id: None,
        }
        .into_job()
    };
    for (phase, seq, method) in [
        ("create", 0, "REQUEST"),
        ("update", 1, "REQUEST"),
        ("cancel", 2, "CANCEL"),
    ] {
        let before = handler.requests_sent();
        let start = std::time::Instant::now();
        for i in 0..n {
            assert_eq!(
                rt.block_on(handler.deliver(&job(i, seq, method))),
                Delivery::Done
            );
        }
        let elapsed = start.elapsed();
        println!(
            "{}: {phase}: {n} jobs in {elapsed:?} = {:.0} jobs/s, {:.1} HTTP requests/job",
            server.name(),
            n as f64 / elapsed.as_secs_f64(),
            (handler.requests_sent() - before) as f64 / n as f64
        );
    }
    assert_eq!(server.objects(BOB).len(), n);
}

#[test]
#[ignore = "a measurement, not a test: cargo test --test it caldav::measure -- --ignored --nocapture"]
fn measure_radicale_apply_rate() {
    measure(Kind::Radicale);
}

#[test]
#[ignore = "a measurement, not a test: cargo test --test it caldav::measure -- --ignored --nocapture"]
fn measure_sabredav_apply_rate() {
    measure(Kind::Sabre);
}

#[test]
#[ignore = "a measurement, not a test: cargo test --test it caldav::measure -- --ignored --nocapture"]
fn measure_xandikos_apply_rate() {
    measure(Kind::Xandikos);
}

/// A VTODO as a tasks client (Thunderbird, Tine 2.0) assigns it.
fn vtodo(uid: &str, seq: u32, stamp: &str, organizer: &str, attendees: &[(&str, &str)]) -> String {
    let mut s = format!(
        "BEGIN:VTODO\r\nUID:{uid}\r\nSEQUENCE:{seq}\r\nDTSTAMP:{stamp}\r\n\
         DUE:20261204T170000Z\r\nSUMMARY:Relire le contrat\r\nSTATUS:NEEDS-ACTION\r\n\
         ORGANIZER:mailto:{organizer}\r\n"
    );
    for (who, partstat) in attendees {
        s.push_str(&format!(
            "ATTENDEE;PARTSTAT={partstat};RSVP=TRUE:mailto:{who}\r\n"
        ));
    }
    s.push_str("END:VTODO\r\n");
    s
}

/// Tasks (issue 19 item 7): a VTODO REQUEST creates the task in the tasks calendar named
/// by `tasksCalendarId` (a collection that takes VTODO only, as Nextcloud and Radicale
/// clients create them), CANCEL marks it cancelled there, and an assignee's REPLY updates
/// the organizer's own task, found by UID wherever their client stored it.
fn tasks_request_reply_cancel(kind: Kind) {
    let server = Server::start(kind);
    server.add_user(BOB);
    let default = server.calendar_path(BOB);
    let tasks = format!(
        "{}tasks/",
        &default[..default[..default.len() - 1].rfind('/').unwrap() + 1]
    );
    let body = r#"<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop><D:displayname>Tasks</D:displayname><C:supported-calendar-component-set><C:comp name="VTODO"/></C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"#;
    let r = server.request(
        "MKCALENDAR",
        &tasks,
        &[("Content-Type", "application/xml")],
        Some(body),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let mailetd = Collector::with_parameters(
        &server,
        "\n                <tasksCalendarId>tasks</tasksCalendarId>",
    );
    let todos_in = |path: &str| {
        let query = CALENDAR_QUERY_ALL.replace("\"VEVENT\"", "\"VTODO\"");
        let r = server.request(
            "REPORT",
            path,
            &[("Depth", "1"), ("Content-Type", "application/xml")],
            Some(&query),
        );
        assert_eq!(r.status, 207, "{r:?}");
        davhttp::texts_of(&r.body, "calendar-data")
            .into_iter()
            .map(|ics| Object {
                href: String::new(),
                etag: String::new(),
                ics,
            })
            .collect::<Vec<_>>()
    };
    // REQUEST: the assignee gets the task
    let assigned = [(BOB, "NEEDS-ACTION")];
    let t0 = vtodo("task-1", 0, "20261128T080000Z", ALICE_EXT, &assigned);
    mailetd.send(ALICE_EXT, &[BOB], "REQUEST", &ics("REQUEST", &[t0]));
    mailetd.wait_applied(1);
    let log = mailetd.log();
    assert!(log.contains("outcome=\"added\""), "{log}");
    let got = todos_in(&tasks);
    assert_eq!(got.len(), 1, "{}: {got:?}", server.name());
    assert_eq!(got[0].values("UID"), ["task-1"]);
    assert_eq!(got[0].values("SUMMARY"), ["Relire le contrat"]);
    assert!(got[0].values("METHOD").is_empty());
    assert!(server.objects(BOB).is_empty(), "no event in the calendar");
    // CANCEL: cancelled where it is
    let cancel = vtodo("task-1", 1, "20261129T080000Z", ALICE_EXT, &assigned);
    mailetd.send(ALICE_EXT, &[BOB], "CANCEL", &ics("CANCEL", &[cancel]));
    mailetd.wait_applied(2);
    let got = todos_in(&tasks);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].values("STATUS"), ["CANCELLED"], "{}", got[0].ics);

    // REPLY: bob assigned a task to an external partner with his own client
    let mine = vtodo(
        "task-2",
        0,
        "20261128T090000Z",
        BOB,
        &[(ALICE_EXT, "NEEDS-ACTION")],
    );
    let r = server.request(
        "PUT",
        &format!("{tasks}client-named-task.ics"),
        &[("Content-Type", "text/calendar; charset=utf-8")],
        Some(&ics("", &[mine])),
    );
    assert!(matches!(r.status, 201 | 204), "{r:?}");
    let answer = vtodo(
        "task-2",
        0,
        "20261128T100000Z",
        BOB,
        &[(ALICE_EXT, "COMPLETED")],
    );
    mailetd.send(ALICE_EXT, &[BOB], "REPLY", &ics("REPLY", &[answer]));
    mailetd.wait_applied(3);
    let got = todos_in(&tasks);
    let task = got
        .iter()
        .find(|o| o.values("UID") == ["task-2"])
        .unwrap_or_else(|| panic!("{got:?}"));
    assert!(
        task.line_with("ATTENDEE", ALICE_EXT)
            .is_some_and(|l| l.contains("PARTSTAT=COMPLETED")),
        "{}",
        task.ics
    );
    assert_eq!(got.len(), 2, "updated in place, not copied: {got:?}");
}

#[test]
fn radicale_tasks_request_reply_cancel() {
    tasks_request_reply_cancel(Kind::Radicale);
}

#[test]
fn sabredav_tasks_request_reply_cancel() {
    tasks_request_reply_cancel(Kind::Sabre);
}
