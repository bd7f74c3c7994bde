//! The Twake calendar chain (james-config §3.7) over the client-shaped fixtures in
//! `fixtures/`: StripAttachment → MimeDecodingMailet → ICalendarParser → ICALToHeader →
//! ICALToJsonAttribute, with the attribute names of the production samples, asserting the
//! JSON documents CalDavCollect would send.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use mailetd::config::component::MailetConfig;
use mailetd::mail::{AttributeValue, Mail, MailAddress};
use mailetd::mailets;
use mailetd::pipeline::{Mailet, MailetContext};
use serde_json::Value;

/// The five mailets as `examples/standalone-email/conf/mailetcontainer.xml` configures them.
fn chain(ctx: &MailetContext) -> Vec<(&'static str, Box<dyn Mailet>)> {
    let spec: [(&str, &[(&str, &str)]); 5] = [
        (
            "StripAttachment",
            &[
                ("mimeType", "text/calendar"),
                ("attribute", "rawIcalendar2"),
            ],
        ),
        ("MimeDecodingMailet", &[("attribute", "rawIcalendar2")]),
        (
            "ICalendarParser",
            &[
                ("sourceAttribute", "rawIcalendar2"),
                ("destinationAttribute", "icalendar2"),
            ],
        ),
        ("ICALToHeader", &[("attribute", "icalendar2")]),
        (
            "ICALToJsonAttribute",
            &[
                ("source", "icalendar2"),
                ("destination", "icalendarAsJson2"),
                ("rawSource", "rawIcalendar2"),
            ],
        ),
    ];
    spec.iter()
        .map(|(name, params)| {
            let mailet = mailets::build(&MailetConfig::inline(name, params), ctx)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (*name, mailet)
        })
        .collect()
}

/// Runs the chain over a fixture; returns the JSONs (sorted by recipient) and the mail.
pub(crate) async fn collect(
    fixture: &str,
    sender: &str,
    recipients: &[&str],
) -> (Vec<Value>, Mail) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(fixture);
    let message = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        !message.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "{fixture} must use CRLF line endings"
    );
    let mut mail = Mail::new(
        Some(MailAddress::parse(sender).unwrap()),
        recipients
            .iter()
            .map(|r| MailAddress::parse(r).unwrap())
            .collect(),
        message,
    );
    mail.name = fixture.to_string();
    let dir = tempfile::tempdir().unwrap();
    let ctx = MailetContext::for_tests(dir.path().to_path_buf());
    for (name, mailet) in chain(&ctx) {
        // the production config says onMailetException=ignore; none of these mails should
        // make a mailet fail, so a failure is a bug here
        if let Err(e) = mailet.service(&mut mail, &ctx).await {
            panic!("{name} failed on {fixture}: {e:#}");
        }
    }
    let mut jsons: Vec<Value> = match mail.attribute("icalendarAsJson2") {
        None => Vec::new(),
        Some(AttributeValue::CalendarJson(jsons)) => jsons
            .documents()
            .map(|d| serde_json::from_slice(&d.render()).unwrap())
            .collect(),
        Some(other) => panic!("icalendarAsJson2 should be calendar JSON, got {other:?}"),
    };
    jsons.sort_by_key(|j| j["recipient"].as_str().unwrap().to_string());
    (jsons, mail)
}

/// What a user checks in one JSON; `summary` must appear (unfolded) in `ical`.
struct Expected<'a> {
    uid: &'a str,
    method: &'a str,
    sequence: &'a str,
    dtstamp: &'a str,
    recurrence_id: Option<&'a str>,
    sender: &'a str,
    reply_to: &'a str,
    summary: &'a str,
}

fn assert_jsons(fixture: &str, jsons: &[Value], recipients: &[&str], want: &Expected<'_>) {
    let got: Vec<&str> = jsons
        .iter()
        .map(|j| j["recipient"].as_str().unwrap())
        .collect();
    assert_eq!(
        got, recipients,
        "{fixture}: one JSON per envelope recipient"
    );
    for json in jsons {
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(
            keys.len(),
            9,
            "{fixture}: exactly James's nine fields: {keys:?}"
        );
        assert_eq!(json["uid"], want.uid, "{fixture}");
        assert_eq!(json["method"], want.method, "{fixture}");
        assert_eq!(json["sequence"], want.sequence, "{fixture}");
        assert_eq!(json["dtstamp"], want.dtstamp, "{fixture}");
        match want.recurrence_id {
            Some(rid) => assert_eq!(json["recurrence-id"], rid, "{fixture}"),
            None => assert_eq!(json["recurrence-id"], Value::Null, "{fixture}"),
        }
        assert_eq!(json["sender"], want.sender, "{fixture}");
        assert_eq!(json["replyTo"], want.reply_to, "{fixture}");
        let ical = json["ical"].as_str().unwrap();
        assert!(
            ical.starts_with("BEGIN:VCALENDAR\r\n"),
            "{fixture}: ical is the raw text: {ical:.80}"
        );
        let unfolded = ical.replace("\r\n ", "");
        assert!(
            unfolded.contains(want.summary),
            "{fixture}: {:?} not in ical:\n{unfolded}",
            want.summary
        );
        assert!(!ical.contains('\u{fffd}'), "{fixture}: mangled characters");
    }
}

#[tokio::test]
async fn google_invitation_inline_and_invite_ics_yields_one_json_per_recipient() {
    let recipients = ["bob@example.org", "carol@example.org"];
    let (jsons, mail) = collect(
        "google-request.eml",
        "alice.martin@partner.example",
        &recipients,
    )
    .await;
    let raw = mail.attribute("rawIcalendar2").unwrap().as_map().unwrap();
    assert_eq!(
        raw.keys().collect::<Vec<_>>(),
        ["Content-Type", "invite.ics"],
        "both copies were collected"
    );
    assert_jsons(
        "google",
        &jsons,
        &recipients,
        &Expected {
            uid: "4q1v0b6m2l8f5k3r9s7t0u2w4y@google.com",
            method: "REQUEST",
            sequence: "0",
            dtstamp: "20261120T093012Z",
            recurrence_id: None,
            sender: "alice.martin@partner.example",
            reply_to: "alice.martin@partner.example",
            summary: "SUMMARY:Revue trimestrielle – partenariat\r\n",
        },
    );
    let headers = String::from_utf8_lossy(mail.header_block()).into_owned();
    assert!(
        headers.contains("X-MEETING-UID: 4q1v0b6m2l8f5k3r9s7t0u2w4y@google.com\r\n")
            && headers.contains("X-MEETING-METHOD: REQUEST\r\n")
            && headers.contains("X-MEETING-SEQUENCE: 0\r\n")
            && headers.contains("X-MEETING-DTSTAMP: 20261120T093012Z\r\n"),
        "{headers}"
    );
}

#[tokio::test]
async fn outlook_quoted_printable_with_windows_timezone() {
    let recipients = ["marc.petit@client.example", "zoe.lefevre@example.org"];
    let (jsons, _) = collect(
        "outlook-request.eml",
        "jean.dupont@example.org",
        &recipients,
    )
    .await;
    assert_jsons(
        "outlook",
        &jsons,
        &recipients,
        &Expected {
            uid: "040000008200E00074C5B7101A82E00800000000B0C2A7D96B5DDB01000000000000000010000000E3C61E1C8F0B2E4A8E3AF0F6C5D4B3A2",
            method: "REQUEST",
            sequence: "0",
            dtstamp: "20261119T161544Z",
            recurrence_id: None,
            sender: "jean.dupont@example.org",
            reply_to: "jean.dupont@example.org",
            summary: "SUMMARY;LANGUAGE=fr-FR:Comité de pilotage – décembre\r\n",
        },
    );
    let ical = jsons[0]["ical"].as_str().unwrap().replace("\r\n ", "");
    assert!(ical.contains("TZID:Romance Standard Time\r\n"));
    assert!(ical.contains("X-MS-OLK-CONFTYPE:0\r\n"));
    assert!(ical.contains("CN=Zoé Lefèvre:mailto:zoe.lefevre@example.org"));
}

#[tokio::test]
async fn apple_update_with_reply_to() {
    let (jsons, _) = collect(
        "apple-request.eml",
        "helene.roux@icloud.example",
        &["bob@example.org"],
    )
    .await;
    assert_jsons(
        "apple",
        &jsons,
        &["bob@example.org"],
        &Expected {
            uid: "5E1B6F2C-8A3D-4C7E-9F10-2B3C4D5E6F70",
            method: "REQUEST",
            sequence: "1",
            dtstamp: "20261121T081502Z",
            recurrence_id: None,
            sender: "helene.roux@icloud.example",
            reply_to: "helene.perso@mail.example",
            summary: "SUMMARY:Apéro de fin d’année\r\n",
        },
    );
}

#[tokio::test]
async fn thunderbird_8bit_inline_and_base64_attachment_count_once() {
    let recipients = ["amelie.chevalier@example.org", "bob@example.org"];
    let (jsons, _) = collect(
        "thunderbird-request.eml",
        "lucas.bernard@example.org",
        &recipients,
    )
    .await;
    assert_jsons(
        "thunderbird",
        &jsons,
        &recipients,
        &Expected {
            uid: "b7e2c8d1-5f4a-4e3b-9c2d-1a0f9e8d7c6b",
            method: "REQUEST",
            sequence: "0",
            dtstamp: "20261121T101122Z",
            recurrence_id: None,
            sender: "lucas.bernard@example.org",
            reply_to: "lucas.bernard@example.org",
            summary: "SUMMARY:Déjeuner d’équipe\r\n",
        },
    );
}

#[tokio::test]
async fn recurring_series_keeps_its_rrule() {
    let (jsons, _) = collect(
        "rrule-request.eml",
        "nadia.benali@example.org",
        &["bob@example.org"],
    )
    .await;
    assert_jsons(
        "rrule",
        &jsons,
        &["bob@example.org"],
        &Expected {
            uid: "1A2B-6741F3C0-3-5E8D9A00",
            method: "REQUEST",
            sequence: "0",
            dtstamp: "20261120T140110Z",
            recurrence_id: None,
            sender: "nadia.benali@example.org",
            reply_to: "nadia.benali@example.org",
            summary: "RRULE:FREQ=WEEKLY;UNTIL=20270329T090000Z;BYDAY=MO\r\n",
        },
    );
}

#[tokio::test]
async fn instance_override_carries_its_recurrence_id() {
    let (jsons, mail) = collect(
        "recurrence-id-request.eml",
        "nadia.benali@example.org",
        &["bob@example.org"],
    )
    .await;
    assert_jsons(
        "recurrence-id",
        &jsons,
        &["bob@example.org"],
        &Expected {
            uid: "1A2B-6741F3C0-3-5E8D9A00",
            method: "REQUEST",
            sequence: "2",
            dtstamp: "20261123T080000Z",
            recurrence_id: Some("20261207T100000"),
            sender: "nadia.benali@example.org",
            reply_to: "nadia.benali@example.org",
            summary: "SUMMARY:Point hebdo équipe plateforme (décalé)\r\n",
        },
    );
    let headers = String::from_utf8_lossy(mail.header_block()).into_owned();
    assert!(
        headers.contains("X-MEETING-RECURRENCE-ID: 20261207T100000\r\n"),
        "{headers}"
    );
}

#[tokio::test]
async fn attendee_reply_reaches_the_organizer() {
    let (jsons, _) = collect(
        "reply.eml",
        "zoe.lefevre@example.org",
        &["jean.dupont@example.org"],
    )
    .await;
    assert_jsons(
        "reply",
        &jsons,
        &["jean.dupont@example.org"],
        &Expected {
            uid: "040000008200E00074C5B7101A82E00800000000B0C2A7D96B5DDB01000000000000000010000000E3C61E1C8F0B2E4A8E3AF0F6C5D4B3A2",
            method: "REPLY",
            sequence: "0",
            dtstamp: "20261120T082233Z",
            recurrence_id: None,
            sender: "zoe.lefevre@example.org",
            reply_to: "zoe.lefevre@example.org",
            summary: "ATTENDEE;PARTSTAT=ACCEPTED;CN=Zoé Lefèvre:mailto:zoe.lefevre@example.org\r\n",
        },
    );
}

#[tokio::test]
async fn cancellation_counts_once() {
    let (jsons, _) = collect(
        "cancel.eml",
        "alice.martin@partner.example",
        &["bob@example.org"],
    )
    .await;
    assert_jsons(
        "cancel",
        &jsons,
        &["bob@example.org"],
        &Expected {
            uid: "4q1v0b6m2l8f5k3r9s7t0u2w4y@google.com",
            method: "CANCEL",
            sequence: "1",
            dtstamp: "20261125T171500Z",
            recurrence_id: None,
            sender: "alice.martin@partner.example",
            reply_to: "alice.martin@partner.example",
            summary: "STATUS:CANCELLED\r\n",
        },
    );
}

#[tokio::test]
async fn iso_8859_1_calendar_keeps_its_accents() {
    let (jsons, _) = collect(
        "latin1-request.eml",
        "gerard.muller@legacy.example",
        &["bob@example.org"],
    )
    .await;
    assert_jsons(
        "latin1",
        &jsons,
        &["bob@example.org"],
        &Expected {
            uid: "C1257F2A004B6E31-Replication-ABCDEF0123456789",
            method: "REQUEST",
            sequence: "0",
            dtstamp: "20261118T140233Z",
            recurrence_id: None,
            sender: "gerard.muller@legacy.example",
            reply_to: "gerard.muller@legacy.example",
            summary: "SUMMARY:Réunion budgétaire à Orléans\r\n",
        },
    );
    let ical = jsons[0]["ical"].as_str().unwrap().replace("\r\n ", "");
    assert!(ical.contains("LOCATION:Bâtiment Sévigné\r\n"), "{ical}");
}

/// ISO-8859-15 differs from the Windows-1252 guess used for undeclared bytes (€, œ), so
/// this passes only if the declared charset is honoured.
#[tokio::test]
async fn iso_8859_15_calendar_gets_its_euro_sign() {
    let (jsons, _) = collect(
        "iso-8859-15-request.eml",
        "sebastien.oehler@webmail.legacy.example",
        &["bob@example.org"],
    )
    .await;
    assert_jsons(
        "iso-8859-15",
        &jsons,
        &["bob@example.org"],
        &Expected {
            uid: "20261121151515.Ab3dE5fG7hJ9kL1m@webmail.legacy.example",
            method: "REQUEST",
            sequence: "0",
            dtstamp: "20261121T151515Z",
            recurrence_id: None,
            sender: "sebastien.oehler@webmail.legacy.example",
            reply_to: "sebastien.oehler@webmail.legacy.example",
            summary: "SUMMARY:Bilan annuel : cœur de métier et budget 45 000 €\r\n",
        },
    );
}

#[tokio::test]
async fn single_part_text_calendar_mail_is_collected() {
    let (jsons, _) = collect(
        "single-part-request.eml",
        "noreply@booking.example",
        &["bob@example.org"],
    )
    .await;
    assert_jsons(
        "single-part",
        &jsons,
        &["bob@example.org"],
        &Expected {
            uid: "resa-2026-11-8841@booking.example",
            method: "REQUEST",
            sequence: "0",
            dtstamp: "20261121T120000Z",
            recurrence_id: None,
            sender: "noreply@booking.example",
            reply_to: "noreply@booking.example",
            summary: "SUMMARY:Réservation salle Curie\r\n",
        },
    );
}

/// Collects what the mailets log, for the tests that assert a log line.
#[derive(Clone, Default)]
pub(crate) struct LogBuffer(pub(crate) Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn broken_ics_yields_no_json_and_one_log_line() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let (jsons, mail) = collect(
        "broken-ics.eml",
        "robot@broken.example",
        &["bob@example.org"],
    )
    .await;
    drop(guard);
    assert!(jsons.is_empty(), "{jsons:?}");
    assert!(mail.attribute("icalendarAsJson2").is_none());
    assert!(
        !String::from_utf8_lossy(mail.header_block()).contains("X-MEETING"),
        "no calendar, no headers"
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one log line: {text}");
    assert!(
        lines[0].contains("broken-ics.eml")
            && lines[0].contains("meeting.ics")
            && lines[0].contains("BEGIN:VCALENDAR"),
        "the line names the mail, the part and the reason: {}",
        lines[0]
    );
}
