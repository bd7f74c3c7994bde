//! iTIP application per method: versions, instances, user data kept, options.

use calcard::icalendar::{
    ICalendarComponent, ICalendarComponentType, ICalendarParameterName, ICalendarProperty,
};

use super::props::address_eq;
use super::*;
use crate::ical::date_time_text;

const BOB: &str = "bob@example.org";

/// A calendar with `method` (none when empty) around `events` (VEVENT bodies).
fn cal(method: &str, events: &[String]) -> ICalendar {
    let mut s = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n");
    if !method.is_empty() {
        s.push_str(&format!("METHOD:{method}\r\n"));
    }
    s.push_str(
        "BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n\
         TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n",
    );
    for e in events {
        s.push_str("BEGIN:VEVENT\r\n");
        s.push_str(e);
        s.push_str("END:VEVENT\r\n");
    }
    s.push_str("END:VCALENDAR\r\n");
    crate::ical::parse(&s).unwrap()
}

fn event(seq: i64, stamp: &str, extra: &str) -> String {
    format!(
        "UID:ev1\r\nSEQUENCE:{seq}\r\nDTSTAMP:{stamp}\r\n\
         DTSTART;TZID=Europe/Paris:20260310T100000\r\nDTEND;TZID=Europe/Paris:20260310T110000\r\n\
         SUMMARY:Planning\r\nORGANIZER:mailto:alice@partner.example\r\n\
         ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob@example.org\r\n\
         ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:carol@example.org\r\n{extra}"
    )
}

fn weekly(seq: i64, stamp: &str, extra: &str) -> String {
    event(seq, stamp, &format!("RRULE:FREQ=WEEKLY;COUNT=5\r\n{extra}"))
}

fn instance(seq: i64, stamp: &str, day: &str, extra: &str) -> String {
    format!(
        "UID:ev1\r\nSEQUENCE:{seq}\r\nDTSTAMP:{stamp}\r\n\
         RECURRENCE-ID;TZID=Europe/Paris:202603{day}T100000\r\n\
         DTSTART;TZID=Europe/Paris:202603{day}T140000\r\nDTEND;TZID=Europe/Paris:202603{day}T150000\r\n\
         SUMMARY:Planning\r\nORGANIZER:mailto:alice@partner.example\r\n\
         ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:bob@example.org\r\n{extra}"
    )
}

fn reply_from(who: &str, partstat: &str, seq: i64, extra: &str) -> ICalendar {
    cal(
        "REPLY",
        &[format!(
            "UID:ev1\r\nSEQUENCE:{seq}\r\nDTSTAMP:20260301T120000Z\r\n\
             ORGANIZER:mailto:alice@partner.example\r\n\
             ATTENDEE;PARTSTAT={partstat}:mailto:{who}\r\n{extra}"
        )],
    )
}

fn text(change: &Change) -> String {
    match change {
        Change::Create(c) | Change::Update(c) => c.to_string(),
        other => panic!("expected a calendar, got {other:?}"),
    }
}

fn updated(change: Change) -> ICalendar {
    match change {
        Change::Update(c) => c,
        other => panic!("expected an update, got {other:?}"),
    }
}

fn events(c: &ICalendar) -> Vec<&ICalendarComponent> {
    c.components
        .iter()
        .filter(|c| c.component_type == ICalendarComponentType::VEvent)
        .collect()
}

fn prop(c: &ICalendarComponent, p: ICalendarProperty) -> Option<String> {
    let v = c.property(&p)?.values.first()?;
    date_time_text(v)
        .or_else(|| v.as_text().map(str::to_string))
        .or_else(|| v.as_integer().map(|n| n.to_string()))
}

fn partstat(c: &ICalendarComponent, who: &str) -> Option<String> {
    c.properties(&ICalendarProperty::Attendee)
        .find(|e| address_eq(e, who))?
        .parameter(&ICalendarParameterName::Partstat)?
        .as_text()
        .map(str::to_string)
}

fn opts() -> Options {
    Options::default()
}

#[test]
fn request_without_copy_creates_it_without_method_keeping_timezones() {
    let msg = cal("REQUEST", &[event(0, "20260301T100000Z", "")]);
    let change = apply(None, &msg, BOB, &opts());
    let text = text(&change);
    assert!(matches!(change, Change::Create(_)));
    assert!(!text.contains("METHOD"), "{text}");
    assert!(text.contains("BEGIN:VTIMEZONE") && text.contains("TZID:Europe/Paris"));
    assert!(text.contains("SUMMARY:Planning"));
    // what we write parses back to the same event
    let back = crate::ical::parse(&text).unwrap();
    assert_eq!(events(&back).len(), 1);
}

#[test]
fn newer_sequence_replaces_and_resets_partstat() {
    let stored = cal(
        "",
        &[event(0, "20260301T100000Z", "LOCATION:Room 1\r\n").replace(
            "PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob",
            "PARTSTAT=ACCEPTED:mailto:bob",
        )],
    );
    let msg = cal(
        "REQUEST",
        &[event(1, "20260302T100000Z", "LOCATION:Room 2\r\n")],
    );
    let out = updated(apply(Some(&stored), &msg, BOB, &opts()));
    let e = events(&out)[0];
    assert_eq!(
        prop(e, ICalendarProperty::Location).as_deref(),
        Some("Room 2")
    );
    assert_eq!(partstat(e, BOB).as_deref(), Some("NEEDS-ACTION"));
    assert!(!out.to_string().contains("METHOD"));
}

#[test]
fn same_sequence_newer_dtstamp_updates_but_keeps_the_answer_and_alarms() {
    let stored = cal(
        "",
        &[event(
            1,
            "20260301T100000Z",
            "LOCATION:Room 1\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT15M\r\nDESCRIPTION:x\r\nEND:VALARM\r\n",
        )
        .replace("PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob", "PARTSTAT=ACCEPTED:mailto:bob")],
    );
    let msg = cal(
        "REQUEST",
        &[event(1, "20260302T100000Z", "LOCATION:Room 2\r\n")],
    );
    let out = updated(apply(Some(&stored), &msg, BOB, &opts()));
    let e = events(&out)[0];
    assert_eq!(
        prop(e, ICalendarProperty::Location).as_deref(),
        Some("Room 2")
    );
    assert_eq!(partstat(e, BOB).as_deref(), Some("ACCEPTED"));
    assert_eq!(
        partstat(e, "carol@example.org").as_deref(),
        Some("NEEDS-ACTION")
    );
    assert!(out.to_string().contains("TRIGGER:-PT15M"), "{out}");
}

#[test]
fn older_or_identical_request_changes_nothing() {
    let stored = cal("", &[event(2, "20260305T100000Z", "LOCATION:Room 3\r\n")]);
    for msg in [
        cal(
            "REQUEST",
            &[event(1, "20260309T100000Z", "LOCATION:Old\r\n")],
        ),
        cal(
            "REQUEST",
            &[event(2, "20260301T100000Z", "LOCATION:Old\r\n")],
        ),
        cal(
            "REQUEST",
            &[event(2, "20260305T100000Z", "LOCATION:Room 3\r\n")],
        ),
    ] {
        assert!(matches!(
            apply(Some(&stored), &msg, BOB, &opts()),
            Change::Nothing(_)
        ));
    }
}

#[test]
fn instance_request_adds_then_replaces_only_that_instance() {
    let stored = cal("", &[weekly(0, "20260301T100000Z", "")]);
    let moved = cal(
        "REQUEST",
        &[instance(0, "20260302T100000Z", "17", "LOCATION:Moved\r\n")],
    );
    let out = updated(apply(Some(&stored), &moved, BOB, &opts()));
    assert_eq!(events(&out).len(), 2);
    assert!(
        events(&out)[0]
            .property(&ICalendarProperty::Rrule)
            .is_some()
    );
    let again = cal(
        "REQUEST",
        &[instance(
            1,
            "20260303T100000Z",
            "17",
            "LOCATION:Moved again\r\n",
        )],
    );
    let out = updated(apply(Some(&out), &again, BOB, &opts()));
    let evs = events(&out);
    assert_eq!(evs.len(), 2);
    assert_eq!(
        prop(evs[1], ICalendarProperty::Location).as_deref(),
        Some("Moved again")
    );
    // the older version of that instance is ignored
    assert!(matches!(
        apply(Some(&out), &moved, BOB, &opts()),
        Change::Nothing(_)
    ));
}

#[test]
fn full_request_with_master_replaces_every_component() {
    let stored = cal(
        "",
        &[
            weekly(0, "20260301T100000Z", ""),
            instance(0, "20260302T100000Z", "17", ""),
        ],
    );
    let msg = cal(
        "REQUEST",
        &[weekly(1, "20260304T100000Z", "LOCATION:New\r\n")],
    );
    let out = updated(apply(Some(&stored), &msg, BOB, &opts()));
    assert_eq!(events(&out).len(), 1);
    assert_eq!(
        prop(events(&out)[0], ICalendarProperty::Location).as_deref(),
        Some("New")
    );
}

#[test]
fn cancel_whole_marks_cancelled_or_deletes() {
    let stored = cal("", &[event(0, "20260301T100000Z", "")]);
    let msg = cal("CANCEL", &[event(1, "20260302T100000Z", "")]);
    let out = updated(apply(Some(&stored), &msg, BOB, &opts()));
    let e = events(&out)[0];
    assert_eq!(
        prop(e, ICalendarProperty::Status).as_deref(),
        Some("CANCELLED")
    );
    assert_eq!(prop(e, ICalendarProperty::Sequence).as_deref(), Some("1"));
    // a second CANCEL changes nothing more
    assert!(matches!(
        apply(Some(&out), &msg, BOB, &opts()),
        Change::Nothing(_)
    ));
    let delete = Options {
        delete_canceled: true,
        ..opts()
    };
    assert_eq!(apply(Some(&stored), &msg, BOB, &delete), Change::Delete);
    assert!(matches!(
        apply(None, &msg, BOB, &opts()),
        Change::Nothing(_)
    ));
}

#[test]
fn older_cancel_is_ignored() {
    let stored = cal("", &[event(3, "20260301T100000Z", "")]);
    let msg = cal("CANCEL", &[event(2, "20260302T100000Z", "")]);
    assert!(matches!(
        apply(Some(&stored), &msg, BOB, &opts()),
        Change::Nothing(_)
    ));
}

#[test]
fn cancel_instance_adds_exdate_and_removes_the_override() {
    let stored = cal(
        "",
        &[
            weekly(0, "20260301T100000Z", ""),
            instance(1, "20260302T100000Z", "17", ""),
        ],
    );
    let msg = cal("CANCEL", &[instance(2, "20260303T100000Z", "17", "")]);
    let out = updated(apply(Some(&stored), &msg, BOB, &opts()));
    let evs = events(&out);
    assert_eq!(evs.len(), 1, "{out}");
    assert!(
        out.to_string()
            .contains("EXDATE;TZID=Europe/Paris:20260317T100000"),
        "{out}"
    );
    assert_eq!(prop(evs[0], ICalendarProperty::Status), None);
    assert!(matches!(
        apply(Some(&out), &msg, BOB, &opts()),
        Change::Nothing(_)
    ));
}

#[test]
fn reply_sets_partstat_on_the_master() {
    let stored = cal("", &[event(0, "20260301T100000Z", "")]);
    let msg = reply_from("carol@example.org", "ACCEPTED", 0, "");
    let out = updated(apply(Some(&stored), &msg, "alice@partner.example", &opts()));
    let e = events(&out)[0];
    assert_eq!(
        partstat(e, "carol@example.org").as_deref(),
        Some("ACCEPTED")
    );
    assert_eq!(partstat(e, BOB).as_deref(), Some("NEEDS-ACTION"));
    assert!(matches!(
        apply(Some(&out), &msg, "alice@partner.example", &opts()),
        Change::Nothing(_)
    ));
}

#[test]
fn reply_to_an_older_sequence_changes_nothing() {
    let stored = cal("", &[event(2, "20260301T100000Z", "")]);
    let msg = reply_from("carol@example.org", "DECLINED", 1, "");
    assert!(matches!(
        apply(Some(&stored), &msg, "alice@partner.example", &opts()),
        Change::Nothing(_)
    ));
}

#[test]
fn reply_for_an_instance_creates_the_override_from_the_master() {
    let stored = cal("", &[weekly(0, "20260301T100000Z", "")]);
    let msg = reply_from(
        "carol@example.org",
        "DECLINED",
        0,
        "RECURRENCE-ID;TZID=Europe/Paris:20260324T100000\r\n",
    );
    let out = updated(apply(Some(&stored), &msg, "alice@partner.example", &opts()));
    let evs = events(&out);
    assert_eq!(evs.len(), 2);
    assert_eq!(
        partstat(evs[0], "carol@example.org").as_deref(),
        Some("NEEDS-ACTION")
    );
    assert_eq!(
        partstat(evs[1], "carol@example.org").as_deref(),
        Some("DECLINED")
    );
    assert!(evs[1].property(&ICalendarProperty::Rrule).is_none());
    assert_eq!(
        prop(evs[1], ICalendarProperty::Dtstart).as_deref(),
        Some("20260324T100000")
    );
    assert_eq!(
        prop(evs[1], ICalendarProperty::Dtend).as_deref(),
        Some("20260324T110000")
    );
    assert_eq!(
        prop(evs[1], ICalendarProperty::Summary).as_deref(),
        Some("Planning")
    );
}

#[test]
fn reply_from_an_uninvited_attendee_adds_them() {
    let stored = cal("", &[event(0, "20260301T100000Z", "")]);
    let msg = reply_from("dave@elsewhere.example", "TENTATIVE", 0, "");
    let out = updated(apply(Some(&stored), &msg, "alice@partner.example", &opts()));
    assert_eq!(
        partstat(events(&out)[0], "dave@elsewhere.example").as_deref(),
        Some("TENTATIVE")
    );
    assert!(matches!(
        apply(None, &msg, "alice@partner.example", &opts()),
        Change::Nothing(_)
    ));
}

#[test]
fn principal_url_attendees_are_matched_by_their_email_parameter() {
    let stored = cal(
        "",
        &[event(0, "20260301T100000Z", "").replace(
            "ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:carol@example.org",
            "ATTENDEE;PARTSTAT=NEEDS-ACTION;EMAIL=\"carol@example.org\":/1288/principal/",
        )],
    );
    let msg = reply_from("Carol@example.org", "ACCEPTED", 0, "");
    let out = updated(apply(Some(&stored), &msg, "alice@partner.example", &opts()));
    let e = events(&out)[0];
    assert_eq!(
        e.properties(&ICalendarProperty::Attendee).count(),
        2,
        "{out}"
    );
    assert_eq!(
        partstat(e, "carol@example.org").as_deref(),
        Some("ACCEPTED")
    );
}

#[test]
fn a_calendar_without_method_is_published_only_with_allow_public() {
    let msg = cal("", &[event(0, "20260301T100000Z", "")]);
    let public = Options {
        allow_public: true,
        ..opts()
    };
    assert!(matches!(apply(None, &msg, BOB, &public), Change::Create(_)));
    assert!(matches!(
        apply(None, &msg, BOB, &opts()),
        Change::Nothing(_)
    ));
    // an unknown METHOD stays unknown
    let odd = cal("X-SOMETHING", &[event(0, "20260301T100000Z", "")]);
    assert!(matches!(
        apply(None, &odd, BOB, &public),
        Change::Nothing(_)
    ));
}

#[test]
fn tasks_are_scheduled_like_events() {
    let todo = |method: &str, seq: i64, extra: &str| {
        let text = format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:{method}\r\nBEGIN:VTODO\r\nUID:t1\r\n\
             SEQUENCE:{seq}\r\nDTSTAMP:2026030{seq}T100000Z\r\nSUMMARY:Relire\r\n\
             ORGANIZER:mailto:alice@partner.example\r\n{extra}END:VTODO\r\nEND:VCALENDAR\r\n"
        );
        crate::ical::parse(&text).unwrap()
    };
    let bob = "ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:bob@example.org\r\n";
    let Change::Create(created) = apply(None, &todo("REQUEST", 0, bob), BOB, &opts()) else {
        panic!("a task assignment creates the task");
    };
    let out = updated(apply(Some(&created), &todo("CANCEL", 1, bob), BOB, &opts()));
    assert!(out.to_string().contains("STATUS:CANCELLED"), "{out}");
    let done = "ATTENDEE;PARTSTAT=COMPLETED:mailto:bob@example.org\r\n";
    let out = updated(apply(
        Some(&created),
        &todo("REPLY", 0, done),
        "alice@partner.example",
        &opts(),
    ));
    assert!(out.to_string().contains("PARTSTAT=COMPLETED"), "{out}");
}

#[test]
fn add_puts_an_rdate_on_the_master() {
    let stored = cal("", &[weekly(0, "20260301T100000Z", "")]);
    let msg = cal(
        "ADD",
        &[event(1, "20260302T100000Z", "").replace("20260310T1", "20260420T1")],
    );
    let out = updated(apply(Some(&stored), &msg, BOB, &opts()));
    assert!(
        out.to_string()
            .contains("RDATE;TZID=Europe/Paris:20260420T100000"),
        "{out}"
    );
    assert!(matches!(
        apply(None, &msg, BOB, &opts()),
        Change::Nothing(_)
    ));
}

#[test]
fn publish_needs_allow_public_and_counter_family_is_not_applied() {
    let msg = cal("PUBLISH", &[event(0, "20260301T100000Z", "")]);
    assert!(matches!(
        apply(None, &msg, BOB, &opts()),
        Change::Nothing(_)
    ));
    let public = Options {
        allow_public: true,
        ..opts()
    };
    assert!(matches!(apply(None, &msg, BOB, &public), Change::Create(_)));
    let stored = cal("", &[event(0, "20260301T100000Z", "")]);
    for method in ["COUNTER", "DECLINECOUNTER", "REFRESH"] {
        let msg = cal(method, &[event(5, "20260309T100000Z", "LOCATION:x\r\n")]);
        assert!(
            matches!(apply(Some(&stored), &msg, BOB, &opts()), Change::Nothing(r) if r.contains(method))
        );
    }
    let none = cal("", &[event(0, "20260301T100000Z", "")]);
    assert!(matches!(
        apply(None, &none, BOB, &opts()),
        Change::Nothing(_)
    ));
}

#[test]
fn updates_only_and_organizers_restrict_creation_not_updates() {
    let msg = cal(
        "REQUEST",
        &[event(1, "20260302T100000Z", "LOCATION:Room 2\r\n")],
    );
    let stored = cal("", &[event(0, "20260301T100000Z", "")]);
    let updates_only = Options {
        updates_only: true,
        ..opts()
    };
    assert!(
        matches!(apply(None, &msg, BOB, &updates_only), Change::Nothing(r) if r.contains("updatesOnly"))
    );
    assert!(matches!(
        apply(Some(&stored), &msg, BOB, &updates_only),
        Change::Update(_)
    ));
    for (list, allowed) in [
        (vec!["partner.example".to_string()], true),
        (vec!["alice@partner.example".to_string()], true),
        (
            vec![
                "other.example".to_string(),
                "eve@partner.example".to_string(),
            ],
            false,
        ),
    ] {
        let o = Options {
            organizers: list,
            ..opts()
        };
        assert_eq!(
            matches!(apply(None, &msg, BOB, &o), Change::Create(_)),
            allowed
        );
        assert!(matches!(
            apply(Some(&stored), &msg, BOB, &o),
            Change::Update(_)
        ));
    }
}

#[test]
fn methods_parse_case_insensitively() {
    assert_eq!(Method::of(&cal("request", &[])), Some(Method::Request));
    assert_eq!(
        Method::of(&cal("DeclineCounter", &[])),
        Some(Method::DeclineCounter)
    );
    assert_eq!(Method::of(&cal("", &[])), None);
}
