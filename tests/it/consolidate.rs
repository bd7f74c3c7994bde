//! Consolidating calendars (issue 23) against a REAL Radicale: mails sent over SMTP by real
//! clients (python smtplib, swaks) with the HELO names and headers of several "sites", a
//! running mailetd whose chain ends in `ConsolidatedCalendar`, then `/api/status` and the
//! consolidated calendar read back as a user would.

use std::process::Command;
use std::time::Duration;

use crate::support::davhttp::{self, DavServer};
use crate::support::mailetd::Mailetd;
use crate::support::radicale::{self, Radicale};

mod graph_recurrence;

const WAIT: Duration = Duration::from_secs(60);

/// An iTIP message with one VEVENT.
pub fn itip(method: &str, uid: &str, sequence: u32, organizer: &str, attendees: &[&str]) -> String {
    let mut s = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailetd tests//EN\r\nMETHOD:{method}\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nSEQUENCE:{sequence}\r\nDTSTAMP:202611{:02}T090000Z\r\n\
         DTSTART:20261110T100000Z\r\nDTEND:20261110T110000Z\r\nSUMMARY:Site sync {uid}\r\n\
         ORGANIZER;CN=Organizer:mailto:{organizer}\r\n",
        sequence + 1
    );
    for a in attendees {
        s.push_str(&format!(
            "ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{a}\r\n"
        ));
    }
    if method == "CANCEL" {
        s.push_str("STATUS:CANCELLED\r\n");
    }
    s.push_str("END:VEVENT\r\nEND:VCALENDAR\r\n");
    s
}

/// An iMIP mail (text/plain + text/calendar) with extra header lines and a unique
/// Message-ID (`id`).
pub fn imip(from: &str, to: &[&str], headers: &str, id: &str, ics: &str) -> String {
    let method = ics
        .lines()
        .find_map(|l| l.strip_prefix("METHOD:"))
        .unwrap_or("REQUEST")
        .trim();
    format!(
        "From: <{from}>\r\nTo: {}\r\nSubject: Invitation\r\nMessage-ID: <{id}@sites.test>\r\n{headers}MIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Type: text/plain; charset=UTF-8\r\n\r\nYou are invited.\r\n--b1\r\n\
         Content-Type: text/calendar; charset=UTF-8; method={method}\r\n\r\n{ics}--b1--\r\n",
        to.iter()
            .map(|t| format!("<{t}>"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Sends `mail` with python smtplib, saying `helo`.
pub fn send(m: &Mailetd, helo: &str, from: &str, to: &[&str], mail: &str) {
    crate::support::smtp::session(m.smtp_port)
        .helo(helo)
        .mail(from, to, mail)
        .run()
        .assert_accepted();
}

/// The organizer of the internal meeting the tests mirror, and its invitees, one per site.
pub const ORGANIZER: &str = "ceo@corp.example";
/// See [`ORGANIZER`].
pub const INVITEES: [&str; 2] = ["ann@paris.example", "luc@lyon.example"];

/// Mails `ics` as the site `site` (`paris` or `lyon`) mirrors it: from that site's relay, to
/// that site's invitee, with Message-ID `id`.
pub fn mirror(m: &Mailetd, site: &str, id: &str, ics: &str) {
    let (helo, rcpts) = match site {
        "paris" => ("mx.paris.example", &INVITEES[..1]),
        "lyon" => ("smtp.lyon.example", &INVITEES[1..]),
        other => panic!("no site {other}"),
    };
    send(
        m,
        helo,
        ORGANIZER,
        rcpts,
        &imip(ORGANIZER, &INVITEES, "", id, ics),
    );
}

/// A mailetd whose ConsolidatedCalendar writes everything to `graph`'s mailbox.
pub fn start_with_graph(graph: &crate::support::graph_double::GraphDouble) -> Mailetd {
    let toml = format!("{SOURCES}{}", graph.destination_toml("m365"));
    let mailets = r#"
            <mailet match="All" class="ConsolidatedCalendar">
                <destination>m365</destination>
                <attribute>icalendarAsJson2</attribute>
            </mailet>"#;
    Mailetd::start(&[
        ("mailetd.toml", toml),
        ("mailetcontainer.xml", container(mailets)),
    ])
}

/// Sends `mail` with swaks, saying `helo`.
pub fn send_swaks(m: &Mailetd, helo: &str, from: &str, to: &str, mail: &str) {
    let path = m.dir.path().join(format!("mail-{}.eml", rand_suffix()));
    std::fs::write(&path, mail).unwrap();
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", m.smtp_port)])
        .args(["--helo", helo, "--from", from, "--to", to])
        .arg("--data")
        .arg(format!("@{}", path.display()))
        .output()
        .expect("swaks runs");
    assert!(
        out.status.success(),
        "swaks: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The mailet chain: the Twake ICS steps, then `mailets` (the consolidation).
pub fn container(mailets: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
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
            <mailet match="All" class="MimeDecodingMailet"><attribute>rawIcalendar2</attribute></mailet>
            <mailet match="All" class="ICalendarParser">
                <sourceAttribute>rawIcalendar2</sourceAttribute>
                <destinationAttribute>icalendar2</destinationAttribute>
            </mailet>
            <mailet match="All" class="ICALToJsonAttribute">
                <source>icalendar2</source>
                <destination>icalendarAsJson2</destination>
                <rawSource>rawIcalendar2</rawSource>
            </mailet>
            {mailets}
            <mailet match="All" class="Null"/>
        </processor>
    </processors>
</mailetcontainer>
"#
    )
}

/// `[[sources]]` of the "sites" the tests mirror from.
pub const SOURCES: &str = r#"
[outbox]
retry_base_secs = 1
retry_max_secs = 1

[[sources]]
name = "never"
networks = ["192.0.2.0/24"]

[[sources]]
name = "paris"
helo = ["mx.paris.example"]

[[sources]]
name = "lyon"
helo = ["*.lyon.example"]

[[sources]]
name = "madrid"
header = "X-Mirror-Source: Madrid"

[[sources]]
name = "berlin"
recipient_domains = ["berlin.example"]

# last: what no site above claims, by client network (the tests' clients are on loopback)
[[sources]]
name = "loopback"
networks = ["127.0.0.0/8", "::1"]
"#;

/// A `[destinations.<name>]` table for a Radicale calendar.
fn radicale_destination(name: &str, r: &Radicale, path: &str) -> String {
    format!(
        "\n[destinations.{name}]\ncalendar_url = \"{}{path}\"\nusername = \"{}\"\npassword = \"{}\"\n",
        r.url(),
        radicale::SERVICE_USER,
        radicale::SERVICE_PASSWORD
    )
}

/// `/api/status`.
pub fn status(m: &Mailetd) -> serde_json::Value {
    let r = davhttp::request(
        "GET",
        &format!("http://127.0.0.1:{}/api/status", m.http_port),
        None,
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_str(&r.body).unwrap()
}

/// The `sources` entry named `name` of `/api/status`.
pub fn source_status(m: &Mailetd, name: &str) -> serde_json::Value {
    status(m)["sources"]
        .as_array()
        .expect("sources in /api/status")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in /api/status"))
        .clone()
}

/// Waits until `name`'s invitations are `(seen, applied, failed)`.
pub fn wait_invitations(m: &Mailetd, name: &str, want: (u64, u64, u64)) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = source_status(m, name);
        let i = &s["invitations"];
        let got = (
            i["seen"].as_u64().unwrap(),
            i["applied"].as_u64().unwrap(),
            i["failed"].as_u64().unwrap(),
        );
        if got == want {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: invitations {got:?}, waited for {want:?}: {s}\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Unfolded property lines `NAME:value` / `NAME;…` of an iCalendar text.
pub fn values(ics: &str, name: &str) -> Vec<String> {
    ics.replace("\r\n ", "")
        .replace("\n ", "")
        .lines()
        .filter(|l| l.starts_with(&format!("{name}:")) || l.starts_with(&format!("{name};")))
        .map(|l| l.split_once(':').map_or("", |x| x.1).trim().to_string())
        .collect()
}

#[test]
fn each_mail_is_attributed_to_its_source_and_status_reports_per_source() {
    let r = Radicale::start();
    r.create_calendar("team", "calendar");
    let toml = format!(
        "{SOURCES}{}{}",
        radicale_destination("all", &r, "/team/calendar/"),
        radicale_destination("missing", &r, "/team/nothere/")
    );
    let mailets = r#"
            <mailet match="All" class="ConsolidatedCalendar">
                <destination>all</destination>
                <attribute>icalendarAsJson2</attribute>
                <sources>paris, lyon, berlin</sources>
            </mailet>
            <mailet match="All" class="ConsolidatedCalendar">
                <destination>missing</destination>
                <attribute>icalendarAsJson2</attribute>
                <sources>madrid</sources>
            </mailet>"#;
    let mut m = Mailetd::start(&[
        ("mailetd.toml", toml),
        ("mailetcontainer.xml", container(mailets)),
    ]);
    let fresh = source_status(&m, "never");
    assert_eq!(fresh["mails"], 0, "{fresh}");
    assert!(fresh["last_mail"].is_null(), "{fresh}");

    let alice = "alice@paris.example";
    let paris = itip("REQUEST", "paris-1", 0, alice, &["bob@corp.example"]);
    send(
        &m,
        "mx.paris.example",
        alice,
        &["bob@corp.example"],
        &imip(alice, &["bob@corp.example"], "", "p1", &paris),
    );
    let lena = "lena@lyon.example";
    let lyon = itip("REQUEST", "lyon-1", 0, lena, &["bob@corp.example"]);
    send_swaks(
        &m,
        "out2.lyon.example",
        lena,
        "bob@corp.example",
        &imip(lena, &["bob@corp.example"], "", "l1", &lyon),
    );
    // Madrid's header, a calendar the "missing" destination cannot take
    let mario = "mario@madrid.example";
    let madrid = itip("REQUEST", "madrid-1", 0, mario, &["bob@corp.example"]);
    send(
        &m,
        "relay.example",
        mario,
        &["bob@corp.example"],
        &imip(
            mario,
            &["bob@corp.example"],
            "X-Mirror-Source: madrid\r\n",
            "m1",
            &madrid,
        ),
    );
    // Berlin by recipient domain; a plain mail, no invitation
    send(
        &m,
        "relay.example",
        "x@corp.example",
        &["hans@berlin.example"],
        "From: <x@corp.example>\r\nSubject: hi\r\nMessage-ID: <b1@x>\r\n\r\nhello\r\n",
    );
    // no site claims it: the catch-all network source does
    let other = itip(
        "REQUEST",
        "other-1",
        0,
        "o@else.example",
        &["bob@corp.example"],
    );
    send(
        &m,
        "mx.else.example",
        "o@else.example",
        &["bob@corp.example"],
        &imip("o@else.example", &["bob@corp.example"], "", "o1", &other),
    );

    let paris_status = wait_invitations(&m, "paris", (1, 1, 0));
    assert_eq!(paris_status["mails"], 1);
    assert!(paris_status["last_mail"].as_str().unwrap().ends_with('Z'));
    wait_invitations(&m, "lyon", (1, 1, 0));
    let madrid_status = wait_invitations(&m, "madrid", (1, 0, 1));
    assert_eq!(madrid_status["mails"], 1);
    let berlin = wait_invitations(&m, "berlin", (0, 0, 0));
    assert_eq!(berlin["mails"], 1, "{berlin}");
    assert!(berlin["last_mail_ms"].as_u64().unwrap() > 0);
    assert_eq!(source_status(&m, "never")["mails"], 0);
    let loopback = wait_invitations(&m, "loopback", (0, 0, 0));
    assert_eq!(loopback["mails"], 1, "{loopback}");

    // what the consolidated calendar holds: Paris's and Lyon's invitations, marked
    let events = r.events("/team/calendar/");
    assert_eq!(events.len(), 2, "{events:#?}\n{}", m.log());
    let mut marked: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                values(e, "UID")[0].clone(),
                values(e, "X-MAILETD-SOURCE").join(","),
            )
        })
        .collect();
    marked.sort();
    assert_eq!(
        marked,
        vec![
            ("lyon-1".into(), "lyon".into()),
            ("paris-1".into(), "paris".into())
        ]
    );
    assert!(m.log().contains("does not exist (404)"), "{}", m.log());
    m.terminate();
}

#[test]
fn the_same_meeting_from_two_sites_is_one_event_and_a_cancel_cancels_it() {
    let r = Radicale::start();
    r.create_calendar("team", "calendar");
    r.create_calendar("team", "clean");
    let toml = format!(
        "{SOURCES}{}{}",
        radicale_destination("all", &r, "/team/calendar/"),
        radicale_destination("clean", &r, "/team/clean")
    );
    let mailets = r#"
            <mailet match="All" class="ConsolidatedCalendar">
                <destination>all</destination>
                <attribute>icalendarAsJson2</attribute>
                <categories>true</categories>
            </mailet>
            <mailet match="All" class="ConsolidatedCalendar">
                <destination>clean</destination>
                <attribute>icalendarAsJson2</attribute>
                <sources>paris, lyon</sources>
                <methods>REQUEST, CANCEL</methods>
                <deleteCanceled>true</deleteCanceled>
            </mailet>"#;
    let mut m = Mailetd::start(&[
        ("mailetd.toml", toml),
        ("mailetcontainer.xml", container(mailets)),
    ]);
    // An internal meeting of corp.example, invitees at both sites: both sites' servers
    // mirror their copy (other Message-IDs, other relays).
    let (org, to) = (ORGANIZER, INVITEES);
    let v0 = itip("REQUEST", "board-1", 0, org, &to);
    mirror(&m, "paris", "paris-copy", &v0);
    wait_invitations(&m, "paris", (2, 2, 0));
    mirror(&m, "lyon", "lyon-copy", &v0);
    wait_invitations(&m, "lyon", (2, 2, 0));
    let events = r.events("/team/calendar/");
    assert_eq!(events.len(), 1, "one event for two copies: {events:#?}");
    assert_eq!(
        values(&events[0], "X-MAILETD-SOURCE"),
        vec!["paris"],
        "the copy applied first"
    );
    assert_eq!(values(&events[0], "CATEGORIES"), vec!["paris"]);
    assert_eq!(r.events("/team/clean/").len(), 1);

    // a REPLY is not taken by "clean" (methods), a CANCEL from Lyon cancels in both
    let reply = itip("REPLY", "board-1", 0, org, &["luc@lyon.example"])
        .replace("PARTSTAT=NEEDS-ACTION", "PARTSTAT=ACCEPTED");
    send(
        &m,
        "smtp.lyon.example",
        "luc@lyon.example",
        &[org],
        &imip("luc@lyon.example", &[org], "", "reply", &reply),
    );
    wait_invitations(&m, "lyon", (3, 3, 0));
    let after_reply = &r.events("/team/calendar/")[0];
    assert!(
        values(after_reply, "ATTENDEE").len() == 2
            && after_reply
                .replace("\r\n ", "")
                .contains("PARTSTAT=ACCEPTED"),
        "{after_reply}"
    );
    let cancel = itip("CANCEL", "board-1", 1, org, &to);
    mirror(&m, "lyon", "cancel", &cancel);
    wait_invitations(&m, "lyon", (5, 5, 0));
    let events = r.events("/team/calendar/");
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        values(&events[0], "STATUS"),
        vec!["CANCELLED"],
        "{}",
        events[0]
    );
    assert!(
        r.events("/team/clean/").is_empty(),
        "deleteCanceled deletes it"
    );
    m.terminate();
}

/// The Mailcow case: SOGo (with PostgreSQL and a SQL user source) as the destination.
#[test]
fn sogo_is_a_consolidated_destination() {
    use crate::support::sogo::{self, Sogo, SogoUser};
    if !sogo::available() {
        return;
    }
    let s = Sogo::start(&[("team", "team-secret")]);
    let toml = format!(
        "{SOURCES}\n[destinations.mailcow]\ncalendar_url = \"{}{}\"\nusername = \"team\"\npassword = \"team-secret\"\n",
        s.url(),
        Sogo::calendar_path("team")
    );
    let mailets = r#"
            <mailet match="All" class="ConsolidatedCalendar">
                <destination>mailcow</destination>
                <attribute>icalendarAsJson2</attribute>
                <categories>true</categories>
            </mailet>"#;
    let mut m = Mailetd::start(&[
        ("mailetd.toml", toml),
        ("mailetcontainer.xml", container(mailets)),
    ]);
    let team = SogoUser {
        sogo: &s,
        login: "team",
        password: "team-secret",
    };
    let (org, to) = (ORGANIZER, INVITEES);
    let v0 = itip("REQUEST", "sogo-board-1", 0, org, &to);
    mirror(&m, "paris", "sogo-paris", &v0);
    wait_invitations(&m, "paris", (1, 1, 0));
    mirror(&m, "lyon", "sogo-lyon", &v0);
    wait_invitations(&m, "lyon", (1, 1, 0));
    let events = team.events(&Sogo::calendar_path("team"));
    assert_eq!(events.len(), 1, "{events:#?}\n{}", m.log());
    assert_eq!(values(&events[0], "UID"), vec!["sogo-board-1"]);
    assert_eq!(
        values(&events[0], "X-MAILETD-SOURCE"),
        vec!["paris"],
        "{}",
        events[0]
    );
    assert_eq!(
        values(&events[0], "SUMMARY"),
        vec!["Site sync sogo-board-1"]
    );

    let v1 = itip("REQUEST", "sogo-board-1", 1, org, &to)
        .replace("SUMMARY:Site sync", "SUMMARY:Moved: Site sync");
    mirror(&m, "lyon", "sogo-v1", &v1);
    wait_invitations(&m, "lyon", (2, 2, 0));
    let events = team.events(&Sogo::calendar_path("team"));
    assert_eq!(
        values(&events[0], "SUMMARY"),
        vec!["Moved: Site sync sogo-board-1"]
    );
    assert_eq!(values(&events[0], "X-MAILETD-SOURCE"), vec!["lyon"]);

    let cancel = itip("CANCEL", "sogo-board-1", 2, org, &to);
    mirror(&m, "paris", "sogo-cancel", &cancel);
    wait_invitations(&m, "paris", (2, 2, 0));
    let events = team.events(&Sogo::calendar_path("team"));
    assert_eq!(events.len(), 1);
    assert_eq!(
        values(&events[0], "STATUS"),
        vec!["CANCELLED"],
        "{}",
        events[0]
    );
    m.terminate();
}

/// Microsoft 365 through Graph, against the double of `support::graph_double`.
#[test]
fn microsoft_365_is_a_consolidated_destination_through_graph() {
    use crate::support::graph_double::{self as g, GraphDouble};
    let graph = GraphDouble::start();
    let mut m = start_with_graph(&graph);
    let (org, to) = (ORGANIZER, INVITEES);
    let v0 = itip("REQUEST", "m365-board-1", 0, org, &to);
    mirror(&m, "paris", "m365-paris", &v0);
    wait_invitations(&m, "paris", (1, 1, 0));
    mirror(&m, "lyon", "m365-lyon", &v0);
    wait_invitations(&m, "lyon", (1, 1, 0));
    let events = graph.events();
    assert_eq!(events.len(), 1, "one event for two copies: {events:#?}");
    assert_eq!(events[0]["subject"], "Site sync m365-board-1");
    assert_eq!(events[0]["categories"], serde_json::json!(["paris"]));
    assert_eq!(
        events[0]["start"],
        serde_json::json!({"dateTime": "2026-11-10T10:00:00", "timeZone": "UTC"})
    );
    assert_eq!(events[0]["attendees"].as_array().unwrap().len(), 2);

    // an update, then a CANCEL met by throttling: nothing is sent before Retry-After
    let v1 = itip("REQUEST", "m365-board-1", 1, org, &to)
        .replace("SUMMARY:Site sync", "SUMMARY:Moved: Site sync");
    mirror(&m, "lyon", "m365-v1", &v1);
    wait_invitations(&m, "lyon", (2, 2, 0));
    assert_eq!(
        graph.events()[0]["subject"],
        "Moved: Site sync m365-board-1"
    );
    graph.throttle_next(1, 3);
    let cancel = itip("CANCEL", "m365-board-1", 2, org, &to);
    mirror(&m, "paris", "m365-cancel", &cancel);
    wait_invitations(&m, "paris", (2, 2, 0));
    assert!(graph.events().is_empty(), "{:#?}", graph.events());
    let seen = graph.seen();
    let throttled = seen
        .iter()
        .position(|s| s.status == 429)
        .expect("a 429 was answered");
    let next = &seen[throttled + 1];
    let waited = next.at - seen[throttled].at;
    assert!(
        waited >= Duration::from_secs(3),
        "next Graph request {waited:?} after the 429: {seen:#?}"
    );
    let tokens = seen.iter().filter(|s| s.uri.contains("oauth2")).count();
    assert_eq!(tokens, 1, "the token is reused: {seen:#?}");
    assert!(
        !m.log().contains(g::CLIENT_SECRET),
        "the secret is never logged"
    );
    m.terminate();
}
