//! The caldav dialect against a REAL Radicale, SabreDAV 1.8 and Xandikos: iMIP mails sent
//! over SMTP to a running mailetd whose chain ends in CalDavCollect, then the users'
//! calendars read back with REPORT and checked as a user would. Each scenario runs on each
//! server that supports it (`per_server!`: `<scenario>::radicale`, `::sabredav`,
//! `::xandikos`). The bench is `support::caldav`; which collection and which object an
//! invitation lands in, and races with the user's client, are in caldav_collections.rs.

use std::path::Path;
use std::time::Duration;

use mailetd::dav::caldav::handler::CalDavItipHandler;
use mailetd::mail::job::{Delivery, JobHandler};

use crate::support::davhttp::{self, CALENDAR_QUERY_ALL};
use crate::support::eventually;

use crate::support::caldav::*;

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

per_server!(request_update_older_cancel: radicale, sabredav, xandikos);

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

per_server!(instance_moved_then_cancelled: radicale, sabredav, xandikos);

/// The organizer is local; her client stored the event under its own name.
fn reply_updates_organizer_copy_and_client_named_events_in_place(kind: Kind) {
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
    assert_eq!(e.partstat(dave), "ACCEPTED", "{}", e.ics);
    assert_eq!(e.partstat(BOB), "NEEDS-ACTION");

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

per_server!(reply_updates_organizer_copy_and_client_named_events_in_place: radicale, sabredav, xandikos);

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
    assert_eq!(after.partstat(BOB), "NEEDS-ACTION");
    assert_eq!(
        mailetd.log().matches("caldav-itip applied").count(),
        1,
        "no job for it"
    );
}

per_server!(own_reply_is_not_applied: radicale, sabredav, xandikos);

/// Google: the invitation inline and again as invite.ics; one event per recipient.
fn google_invitation_creates_exactly_one_event(kind: Kind) {
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

per_server!(google_invitation_creates_exactly_one_event: radicale, sabredav, xandikos);

/// Sequential iTIP application rate and HTTP requests per job, per server.
fn measure_apply_rate(kind: Kind) {
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
        itip_job(BOB, ics(method, &[e]))
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

per_server!(
    #[ignore = "a measurement, not a test: cargo test --test it caldav::measure -- --ignored --nocapture"]
    measure_apply_rate: radicale, sabredav, xandikos
);

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

per_server!(tasks_request_reply_cancel: radicale, sabredav);
