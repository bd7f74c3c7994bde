//! Invitation shapes seen in real mail that the first chain lost (issue 19, items 1–7), each
//! in a fixture written for the purpose: the Twake chain of `calendar_chain` runs over it,
//! then `CalDavCollect` (caldav dialect, so its decision shows as outbox jobs) where the
//! shape concerns who gets the invitation.

use mailetd::config::component::MailetConfig;
use mailetd::config::settings::DavDialect;
use mailetd::mail::Mail;
use mailetd::mailets;
use mailetd::pipeline::MailetContext;
use serde_json::Value;

use crate::calendar_chain::{LogBuffer, collect};

/// Runs `CalDavCollect` (caldav dialect, `params`) over the chain's JSONs: the recipients
/// it queues a job for, in order.
async fn collected(mail: &mut Mail, params: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = MailetContext::for_tests(dir.path().to_path_buf());
    ctx.settings.dav.dialect = DavDialect::Caldav;
    ctx.settings.dav.base_url = "http://127.0.0.1:1".into();
    let mut all = vec![("source", "icalendarAsJson2")];
    all.extend_from_slice(params);
    let mailet = mailets::build(&MailetConfig::inline("CalDavCollect", &all), &ctx).unwrap();
    mail.jobs.clear();
    mailet.service(mail, &ctx).await.unwrap();
    mail.jobs.iter().map(|j| j.target.clone()).collect()
}

fn ical(json: &Value) -> String {
    json["ical"].as_str().unwrap().replace("\r\n ", "")
}

/// Runs `f` with the mailets' log lines (INFO and up) captured; returns them.
async fn logged<F: std::future::Future<Output = T>, T>(f: F) -> (T, String) {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let out = f.await;
    drop(guard);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

// 1. quoted-printable with bare '=' (RFC 2045 6.7 (1) and note (4))

#[tokio::test]
async fn quoted_printable_with_bare_equals_signs_is_decoded_leniently() {
    for (fixture, method, seq) in [
        ("qp-bare-equals-request.eml", "REQUEST", "0"),
        ("qp-bare-equals-cancel.eml", "CANCEL", "1"),
    ] {
        let ((jsons, mut mail), log) = logged(collect(
            fixture,
            "bob.durand@partner.example",
            &["zoe.lefevre@example.org"],
        ))
        .await;
        assert_eq!(jsons.len(), 1, "{fixture}: the invitation is kept\n{log}");
        let json = &jsons[0];
        assert_eq!(json["method"], method, "{fixture}");
        assert_eq!(json["sequence"], seq, "{fixture}");
        assert_eq!(json["uid"], "qp-bare-equals-0001@partner.example");
        let text = ical(json);
        for line in [
            "ORGANIZER;CN=Bob Durand:mailto:bob.durand@partner.example",
            "ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;CN=Zoe Lefevre:mailto:zoe.lefevre@example.org",
            "SUMMARY;LANGUAGE=fr-FR:Point d'étape",
            "DESCRIPTION;LANGUAGE=fr-FR:Ordre du jour : budget 2026 et planning (très important)",
            "LOCATION;LANGUAGE=fr-FR:Salle B=2",
        ] {
            assert!(text.contains(line), "{fixture}: {line:?} not in\n{text}");
        }
        assert!(!log.contains("WARN"), "{fixture}: {log}");
        // and the organizer's message reaches the attendee's calendar
        assert_eq!(
            collected(&mut mail, &[]).await,
            ["zoe.lefevre@example.org"],
            "{fixture}"
        );
    }
}

#[tokio::test]
async fn a_part_that_cannot_be_decoded_is_a_warning_naming_the_mail_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = MailetContext::for_tests(dir.path().to_path_buf());
    let mailet = mailets::build(
        &MailetConfig::inline("MimeDecodingMailet", &[("attribute", "raw")]),
        &ctx,
    )
    .unwrap();
    let mut mail = Mail::new(None, vec![], b"Subject: x\r\n\r\n".to_vec());
    mail.name = "mail-undecodable-7".into();
    let mut parts = std::collections::BTreeMap::new();
    parts.insert(
        "invite.ics".to_string(),
        mailetd::mail::AttributeValue::Bytes(
            b"Content-Type: text/calendar\r\nContent-Transfer-Encoding: base64\r\n\r\n!!not base64!!\r\n"
                .to_vec(),
        ),
    );
    mail.set_attribute("raw", mailetd::mail::AttributeValue::Map(parts));
    let (result, log) = logged(mailet.service(&mut mail, &ctx)).await;
    result.unwrap();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("mail-undecodable-7") && warnings[0].contains("invite.ics"),
        "{}",
        warnings[0]
    );
    assert_eq!(ctx.metrics.mime_parts_undecodable(), 1);
    let rendered = ctx.metrics.render(&Default::default());
    assert!(
        rendered.contains("mailetd_mime_parts_undecodable_total 1\n"),
        "{rendered}"
    );
}

// 2. COUNTER and REFRESH come from an attendee, like REPLY

#[tokio::test]
async fn counter_and_refresh_from_an_attendee_reach_the_organizer() {
    for (fixture, method) in [("counter.eml", "COUNTER"), ("refresh.eml", "REFRESH")] {
        let (jsons, mut mail) = collect(
            fixture,
            "zoe.lefevre@partner.example",
            &["jean.dupont@example.org"],
        )
        .await;
        assert_eq!(jsons.len(), 1, "{fixture}");
        assert_eq!(jsons[0]["method"], method);
        assert_eq!(
            collected(&mut mail, &[]).await,
            ["jean.dupont@example.org"],
            "{fixture}: the attendee's message is aligned (strict)"
        );
    }
}

// 3. ORGANIZER / ATTENDEE as principal URLs with EMAIL= (RFC 7986 6.2)

#[tokio::test]
async fn principal_urls_with_an_email_parameter_are_aligned_on_that_address() {
    let (jsons, mut mail) = collect(
        "apple-principal-request.eml",
        "helene.roux@icloud.example",
        &["bob@example.org"],
    )
    .await;
    assert_eq!(jsons.len(), 1);
    assert_eq!(jsons[0]["uid"], "7F1C2D3E-4B5A-4C6D-8E9F-A0B1C2D3E4F5");
    assert_eq!(collected(&mut mail, &[]).await, ["bob@example.org"]);
}

// 4. METHOD only in the Content-Type parameter (RFC 6047 2.4)

#[tokio::test]
async fn method_only_in_the_content_type_is_the_method() {
    let (jsons, mut mail) = collect(
        "method-in-content-type.eml",
        "planning@rooms.example",
        &["bob@example.org"],
    )
    .await;
    assert_eq!(jsons.len(), 1);
    assert_eq!(jsons[0]["method"], "REQUEST");
    assert_eq!(jsons[0]["uid"], "booking-7781@rooms.example");
    let text = ical(&jsons[0]);
    assert!(
        text.contains("\r\nMETHOD:REQUEST\r\n"),
        "the iTIP text carries its method for whoever reads it next:\n{text}"
    );
    let headers = String::from_utf8_lossy(mail.header_block()).into_owned();
    assert!(
        headers.contains("X-MEETING-METHOD: REQUEST\r\n"),
        "{headers}"
    );
    assert_eq!(collected(&mut mail, &[]).await, ["bob@example.org"]);
}

// 5. Two VCALENDAR objects in one body

#[tokio::test]
async fn two_calendars_in_one_body_are_two_invitations() {
    let (jsons, mut mail) = collect(
        "two-calendars.eml",
        "training@training.example",
        &["bob@example.org"],
    )
    .await;
    let mut uids: Vec<&str> = jsons.iter().map(|j| j["uid"].as_str().unwrap()).collect();
    uids.sort();
    assert_eq!(
        uids,
        ["session-1@training.example", "session-2@training.example"]
    );
    for json in &jsons {
        let text = ical(json);
        let uid = json["uid"].as_str().unwrap();
        assert_eq!(text.matches("BEGIN:VCALENDAR").count(), 1, "{text}");
        assert!(text.contains(&format!("UID:{uid}\r\n")), "{text}");
        assert!(text.starts_with("BEGIN:VCALENDAR\r\n"), "{text}");
        assert!(text.ends_with("END:VCALENDAR\r\n"), "{text:?}");
    }
    assert_eq!(
        collected(&mut mail, &[]).await,
        ["bob@example.org", "bob@example.org"]
    );
}

// 7. Tasks and free/busy

#[tokio::test]
async fn a_task_assignment_is_collected_and_free_busy_is_quietly_left_alone() {
    let ((jsons, mut mail), log) = logged(collect(
        "todo-request.eml",
        "lucas.bernard@example.org",
        &["bob@example.org"],
    ))
    .await;
    assert!(!log.contains("WARN"), "{log}");
    assert_eq!(jsons.len(), 1);
    assert_eq!(jsons[0]["uid"], "todo-relire-0007@example.org");
    assert_eq!(jsons[0]["method"], "REQUEST");
    assert!(ical(&jsons[0]).contains("BEGIN:VTODO"));
    assert_eq!(collected(&mut mail, &[]).await, ["bob@example.org"]);

    let ((jsons, mut mail), log) = logged(collect(
        "freebusy-request.eml",
        "scheduler@partner.example",
        &["bob@example.org"],
    ))
    .await;
    assert!(!log.contains("WARN"), "{log}");
    assert!(jsons.is_empty(), "{jsons:?}");
    assert!(collected(&mut mail, &[]).await.is_empty());
}
