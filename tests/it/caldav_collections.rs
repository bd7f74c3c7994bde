//! Which collection and which object the caldav dialect writes, on REAL servers: a recipient
//! without a calendar, `calendarId`, deleting cancelled events, organizers' copies,
//! `calendar_url = "discover"`, and races with the user's own client (creation, a concurrent
//! edit answered 412).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mailetd::dav::caldav::handler::CalDavItipHandler;
use mailetd::mail::job::{Delivery, JobHandler};

use crate::support::davhttp::{self, CALENDAR_QUERY_ALL, DavServer};
use crate::support::eventually;
use crate::support::mailetd::Mailetd;
use crate::support::radicale::Radicale;

use crate::support::caldav::*;

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

per_server!(calendar_id_delete_canceled_and_organizers: radicale, sabredav);

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
    let job = itip_job(BOB, ics("REQUEST", &[invite]));
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

per_server!(creation_race_with_the_users_client_never_duplicates: radicale, xandikos);

/// A concurrent edit between read and write: the 412 is retried and both changes survive.
fn concurrent_edit_412_is_retried_and_both_changes_survive(kind: Kind) {
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
    let job = itip_job(alice, ics("REPLY", &[reply]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(handler.deliver(&job)), Delivery::Done);
    assert!(raced.load(Ordering::SeqCst));
    let counts = handler.counts();
    assert!(counts.contains(&("conflicts", 1)), "{counts:?}");
    assert!(counts.contains(&("updated", 1)), "{counts:?}");
    let e = server.only(alice);
    assert_eq!(e.partstat(carol), "TENTATIVE", "{}", e.ics);
    assert_eq!(e.partstat(dave), "ACCEPTED", "{}", e.ics);
}

per_server!(concurrent_edit_412_is_retried_and_both_changes_survive: radicale, sabredav, xandikos);
