//! How many HTTP requests the caldav dialect spends per invitation, on a REAL Radicale,
//! SabreDAV 1.8 and Xandikos: a first invitation is one `PUT` with `If-None-Match: *`, and
//! what the servers answer when the event exists already (412 under mailetd's name; 409 or
//! 412 under the user's client's name) leads to the lookup, so updates stay right.

use mailetd::config::settings::DavSettings;
use mailetd::dav::caldav::handler::CalDavItipHandler;
use mailetd::mail::job::{Delivery, JobHandler};

use crate::support::caldav::{ALICE_EXT, BOB, Kind, Server, ics, itip_job, per_server, vevent};

/// Delivers one REQUEST for `uid` to BOB; returns the HTTP requests it cost.
fn deliver(
    handler: &CalDavItipHandler,
    rt: &tokio::runtime::Runtime,
    uid: &str,
    seq: u32,
    stamp: &str,
    location: &str,
) -> u64 {
    let event = vevent(
        uid,
        seq,
        stamp,
        ALICE_EXT,
        &[(BOB, "NEEDS-ACTION")],
        &format!("LOCATION:{location}\r\n"),
    );
    let job = itip_job(BOB, ics("REQUEST", &[event]));
    let before = handler.requests_sent();
    assert_eq!(rt.block_on(handler.deliver(&job)), Delivery::Done);
    handler.requests_sent() - before
}

fn locations(server: &Server) -> Vec<String> {
    let mut all: Vec<String> = server
        .objects(BOB)
        .iter()
        .flat_map(|o| o.values("LOCATION"))
        .collect();
    all.sort();
    all
}

/// N first invitations cost N requests (one `PUT` each, every one created); N later
/// versions (SEQUENCE 1) cost a GET and a PUT each and replace them; a first version sent
/// again with a newer DTSTAMP is refused as a creation (the event exists) and updates it.
fn new_events_cost_one_request_each(kind: Kind) {
    let server = Server::start(kind);
    server.add_user(BOB);
    let handler = CalDavItipHandler::new(&server.dav_settings()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = 20;
    let created: u64 = (0..n)
        .map(|i| {
            deliver(
                &handler,
                &rt,
                &format!("new-{i}"),
                0,
                "20261101T090000Z",
                "A",
            )
        })
        .sum();
    assert_eq!(created, n, "{}: requests for {n} new events", server.name());
    assert!(
        handler.counts().contains(&("added", n)),
        "{:?}",
        handler.counts()
    );
    let objects = server.objects(BOB);
    assert_eq!(objects.len(), n as usize, "{}", server.name());
    for i in 0..n {
        let name = format!("/new-{i}.ics");
        assert!(objects.iter().any(|o| o.href.ends_with(&name)), "{name}");
    }

    let updated: u64 = (0..n)
        .map(|i| {
            deliver(
                &handler,
                &rt,
                &format!("new-{i}"),
                1,
                "20261102T090000Z",
                "B",
            )
        })
        .sum();
    assert_eq!(
        updated,
        2 * n,
        "{}: a GET and a PUT per update",
        server.name()
    );
    assert_eq!(locations(&server), vec!["B".to_string(); n as usize]);

    // The organizer adds someone without bumping SEQUENCE: same version number, newer
    // DTSTAMP. The creation is refused (412), the copy read and replaced.
    assert_eq!(
        deliver(&handler, &rt, "again", 0, "20261101T090000Z", "C"),
        1
    );
    assert_eq!(
        deliver(&handler, &rt, "again", 0, "20261103T090000Z", "D"),
        3,
        "{}: refused PUT, GET, PUT",
        server.name()
    );
    // ... and the same invitation once more (a job run twice) changes nothing.
    deliver(&handler, &rt, "again", 0, "20261103T090000Z", "D");
    let again: Vec<_> = server
        .objects(BOB)
        .into_iter()
        .filter(|o| o.href.ends_with("/again.ics"))
        .collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].values("LOCATION"), ["D"]);
    assert_eq!(server.objects(BOB).len(), n as usize + 1);
}

per_server!(new_events_cost_one_request_each: radicale, sabredav, xandikos);

/// The user's client stored the first version under its own name, and the user accepted:
/// the same version arrives with a newer DTSTAMP. The server refuses mailetd's creation
/// (Radicale 409, Xandikos 412: RFC 4791 `no-uid-conflict`), and the client's copy is
/// updated in place, keeping the answer. SabreDAV 1.8 does not check UIDs: there
/// `lookup_before_create` finds the copy first.
fn client_named_first_version_is_updated_in_place(kind: Kind, lookup_before_create: bool) {
    let server = Server::start(kind);
    server.add_user(BOB);
    let stored = vevent(
        "phone-1",
        0,
        "20261101T090000Z",
        ALICE_EXT,
        &[(BOB, "ACCEPTED")],
        "LOCATION:Old\r\n",
    );
    server.put(BOB, "phone-made.ics", &ics("", &[stored]));
    let settings = DavSettings {
        lookup_before_create,
        ..server.dav_settings()
    };
    let handler = CalDavItipHandler::new(&settings).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    deliver(&handler, &rt, "phone-1", 0, "20261102T090000Z", "New");
    let e = server.only(BOB);
    assert!(e.href.ends_with("/phone-made.ics"), "{}", e.href);
    assert_eq!(e.values("LOCATION"), ["New"]);
    assert_eq!(e.partstat(BOB), "ACCEPTED", "{}", e.ics);
}

per_server!(client_named_first_version_is_updated_in_place(false): radicale, xandikos);

#[test]
fn sabredav_lookup_before_create_updates_client_named_copy_in_place() {
    client_named_first_version_is_updated_in_place(Kind::Sabre, true);
}
