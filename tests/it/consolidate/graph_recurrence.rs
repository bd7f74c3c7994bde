//! Recurring meetings reaching Microsoft 365: the RRULE becomes Graph's `recurrence`, checked
//! on the Graph double (which validates its shape as documented); a rule Graph cannot
//! express leaves the first occurrence and a warning naming the UID.

use serde_json::json;

use super::wait_invitations;
use crate::support::graph_double::GraphDouble;

/// A REQUEST for a meeting in Paris time starting Monday 2026-11-09 09:30, repeating by `rrule`.
fn recurring(uid: &str, rrule: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailetd tests//EN\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nSEQUENCE:0\r\nDTSTAMP:20261101T090000Z\r\n\
         DTSTART;TZID=Europe/Paris:20261109T093000\r\nDTEND;TZID=Europe/Paris:20261109T100000\r\n\
         RRULE:{rrule}\r\nSUMMARY:Stand-up {uid}\r\nORGANIZER:mailto:ceo@corp.example\r\n\
         ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:ann@paris.example\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

#[test]
fn a_weekly_meeting_reaches_microsoft_365_as_a_series() {
    let graph = GraphDouble::start();
    let mut m = super::start_with_graph(&graph);
    let weekly = recurring(
        "weekly-standup",
        "FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20261216T083000Z;WKST=MO",
    );
    super::mirror(&m, "paris", "rr-1", &weekly);
    wait_invitations(&m, "paris", (1, 1, 0));
    let events = graph.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let recurrence = &events[0]["recurrence"];
    assert_eq!(recurrence["pattern"]["type"], "weekly", "{recurrence:#}");
    assert_eq!(recurrence["pattern"]["interval"], 1);
    assert_eq!(
        recurrence["pattern"]["daysOfWeek"],
        json!(["monday", "wednesday"])
    );
    assert_eq!(recurrence["pattern"]["firstDayOfWeek"], "monday");
    assert_eq!(
        recurrence["range"],
        json!({"type": "endDate", "startDate": "2026-11-09", "endDate": "2026-12-16",
               "recurrenceTimeZone": "Europe/Paris"})
    );

    // every hour: Graph has no such pattern; the first occurrence, and a warning
    let hourly = recurring("hourly-ping", "FREQ=HOURLY;COUNT=3");
    super::mirror(&m, "paris", "rr-2", &hourly);
    wait_invitations(&m, "paris", (2, 2, 0));
    let events = graph.events();
    let ping = events
        .iter()
        .find(|e| e["subject"] == "Stand-up hourly-ping")
        .expect("the first occurrence is there");
    assert!(ping["recurrence"].is_null(), "{ping:#}");
    let log = m.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("hourly-ping") && l.contains("HOURLY")),
        "{log}"
    );
    m.terminate();
}

/// The double answers 400 to a recurrence Graph documents as invalid (so the test above
/// would catch a malformed one), 201 to a valid one.
#[test]
fn the_graph_double_refuses_a_malformed_recurrence() {
    use crate::support::davhttp::request;
    use crate::support::graph_double as g;
    let graph = GraphDouble::start();
    let mut form = reqwest::Url::parse("http://form/").unwrap();
    form.query_pairs_mut()
        .append_pair("grant_type", "client_credentials")
        .append_pair("scope", "https://graph.microsoft.com/.default")
        .append_pair("client_id", g::CLIENT_ID)
        .append_pair("client_secret", g::CLIENT_SECRET);
    let form = form.query().unwrap().to_string();
    let token = request(
        "POST",
        &format!("{}/{}/oauth2/v2.0/token", graph.url(), g::TENANT),
        None,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(&form),
    );
    let token: serde_json::Value = serde_json::from_str(&token.body).unwrap();
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let post = |recurrence: serde_json::Value| {
        let event = json!({"subject": "s",
            "start": {"dateTime": "2026-11-09T09:30:00", "timeZone": "Europe/Paris"},
            "end": {"dateTime": "2026-11-09T10:00:00", "timeZone": "Europe/Paris"},
            "recurrence": recurrence});
        request(
            "POST",
            &format!("{}/v1.0/users/{}/calendar/events", graph.url(), g::MAILBOX),
            None,
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            Some(&event.to_string()),
        )
        .status
    };
    let range = json!({"type": "noEnd", "startDate": "2026-11-09"});
    let weekly = json!({"type": "weekly", "interval": 1, "daysOfWeek": ["monday"],
                        "firstDayOfWeek": "monday"});
    assert_eq!(post(json!({"pattern": weekly, "range": range})), 201);
    for (pattern, range) in [
        // weekly needs firstDayOfWeek
        (
            json!({"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]}),
            range.clone(),
        ),
        (
            json!({"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["friday"], "index": "fifth"}),
            range.clone(),
        ),
        (
            json!({"type": "absoluteYearly", "interval": 1, "dayOfMonth": 1}),
            range.clone(),
        ),
        (json!({"type": "hourly", "interval": 1}), range.clone()),
        (json!({"type": "daily", "interval": 0}), range.clone()),
        (
            weekly.clone(),
            json!({"type": "numbered", "startDate": "2026-11-09"}),
        ),
        (
            weekly.clone(),
            json!({"type": "endDate", "startDate": "2026-11-09"}),
        ),
        // not the start's date
        (
            weekly.clone(),
            json!({"type": "noEnd", "startDate": "2026-11-10"}),
        ),
    ] {
        assert_eq!(
            post(json!({"pattern": pattern, "range": range})),
            400,
            "{pattern} {range}"
        );
    }
    assert_eq!(graph.events().len(), 1);
}
