//! `CalDavCollect`: decisions per document, construction checks and the outbox jobs queued.

use super::*;
use crate::dav::caldav::handler::ItipJob;
use serde_json::json;

fn ics(method: &str, organizer: &str, attendees: &[&str]) -> String {
    let mut s = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nMETHOD:{method}\r\nBEGIN:VEVENT\r\nUID:u1\r\nDTSTAMP:20260101T100000Z\r\nDTSTART:20260102T100000Z\r\nORGANIZER;CN=Org:mailto:{organizer}\r\n"
    );
    for a in attendees {
        s.push_str(&format!("ATTENDEE;PARTSTAT=NEEDS-ACTION:MAILTO:{a}\r\n"));
    }
    s.push_str("END:VEVENT\r\nEND:VCALENDAR\r\n");
    s
}

fn policy(alignment: AlignmentMode) -> Policy {
    Policy {
        alignment,
        allow_public: false,
        allow_tasks: false,
    }
}

fn doc(ical: &str, sender: &str, recipient: &str) -> serde_json::Value {
    json!({"ical": ical, "sender": sender, "recipient": recipient, "replyTo": sender,
           "uid": "u1", "sequence": "0", "dtstamp": "20260101T100000Z", "method": "REQUEST", "recurrence-id": null})
}

#[test]
fn alignment_matrix() {
    use AlignmentMode::*;
    let request = ics(
        "REQUEST",
        "Alice@Org.example",
        &["bob@corp.example", "carol@corp.example"],
    );
    let reply = ics("REPLY", "alice@org.example", &["bob@corp.example"]);
    let cases = [
        // (mode, ics, sender, expected ok)
        (Strict, &request, "alice@org.example", true),
        (Strict, &request, "ALICE@org.example", true),
        (Strict, &request, "mallory@org.example", false),
        (SameDomain, &request, "mallory@org.example", true),
        (SameDomain, &request, "alice@evil.example", false),
        (None, &request, "alice@evil.example", true),
        (Strict, &reply, "bob@corp.example", true),
        (Strict, &reply, "alice@org.example", false),
        (SameDomain, &reply, "dave@corp.example", true),
        (None, &reply, "nobody@nowhere.example", true),
    ];
    for (mode, ical, sender, ok) in cases {
        let got = decide(policy(mode), &doc(ical, sender, "zoe@org.example"));
        assert_eq!(got.is_ok(), ok, "{mode:?} {sender}: {got:?}");
        if !ok {
            assert_eq!(got, Err(Skip::NotAligned));
        }
    }
}

#[test]
fn reply_to_an_attendee_is_their_own_copy() {
    let reply = ics("REPLY", "alice@org.example", &["bob@corp.example"]);
    assert_eq!(
        decide(
            policy(AlignmentMode::Strict),
            &doc(&reply, "bob@corp.example", "Bob@corp.example")
        ),
        Err(Skip::OwnReply)
    );
    // the organizer receives the reply
    assert_eq!(
        decide(
            policy(AlignmentMode::Strict),
            &doc(&reply, "bob@corp.example", "alice@org.example")
        )
        .unwrap()
        .recipient
        .to_string(),
        "alice@org.example"
    );
    // a REQUEST to an attendee goes through
    let request = ics("REQUEST", "alice@org.example", &["bob@corp.example"]);
    assert!(
        decide(
            policy(AlignmentMode::Strict),
            &doc(&request, "alice@org.example", "bob@corp.example")
        )
        .is_ok()
    );
}

#[test]
fn attendee_messages_announcements_and_tasks() {
    let strict = policy(AlignmentMode::Strict);
    for method in ["COUNTER", "REFRESH", "Reply"] {
        let message = ics(method, "alice@org.example", &["bob@corp.example"]);
        // from the attendee to the organizer; the attendee's own copy is not theirs
        assert!(
            decide(
                strict,
                &doc(&message, "bob@corp.example", "alice@org.example")
            )
            .is_ok()
        );
        assert_eq!(
            decide(
                strict,
                &doc(&message, "alice@org.example", "zoe@org.example")
            ),
            Err(Skip::NotAligned)
        );
        assert_eq!(
            decide(
                strict,
                &doc(&message, "bob@corp.example", "bob@corp.example")
            ),
            Err(Skip::OwnReply)
        );
    }
    let publish = ics("PUBLISH", "alice@org.example", &[]);
    let no_method = publish.replace("METHOD:PUBLISH\r\n", "");
    let public = Policy {
        allow_public: true,
        ..strict
    };
    for announcement in [&publish, &no_method] {
        let json = doc(announcement, "alice@org.example", "zoe@org.example");
        assert_eq!(decide(strict, &json), Err(Skip::NotItip));
        assert!(decide(public, &json).is_ok());
    }
    let task = ics("REQUEST", "alice@org.example", &["zoe@org.example"]).replace("VEVENT", "VTODO");
    let json = doc(&task, "alice@org.example", "zoe@org.example");
    assert_eq!(decide(strict, &json), Err(Skip::NoEvent));
    let tasks = Policy {
        allow_tasks: true,
        ..strict
    };
    assert!(decide(tasks, &json).is_ok());
}

#[test]
fn incomplete_or_broken_documents_are_skipped() {
    let request = ics("REQUEST", "alice@org.example", &[]);
    assert_eq!(
        decide(policy(AlignmentMode::Strict), &json!({"ical": request})),
        Err(Skip::Incomplete)
    );
    assert_eq!(
        decide(
            policy(AlignmentMode::Strict),
            &json!({"ical": "", "recipient": "a@b.c"})
        ),
        Err(Skip::Incomplete)
    );
    assert_eq!(
        decide(
            policy(AlignmentMode::Strict),
            &doc("this is not a calendar", "alice@org.example", "b@c.d")
        ),
        Err(Skip::BadIcs)
    );
    let mut no_sender = doc(&request, "x", "b@c.d");
    no_sender["sender"] = serde_json::Value::Null;
    assert_eq!(
        decide(policy(AlignmentMode::Strict), &no_sender),
        Err(Skip::NoSender)
    );
    assert!(decide(policy(AlignmentMode::None), &no_sender).is_ok());
}

#[test]
fn recipient_is_lowercased_like_a_james_username() {
    let request = ics("REQUEST", "alice@org.example", &[]);
    let a = decide(
        policy(AlignmentMode::Strict),
        &doc(&request, "alice@org.example", "Bob.Smith@Corp.Example"),
    )
    .unwrap();
    assert_eq!(a.recipient.to_string(), "bob.smith@corp.example");
}

#[test]
fn alignment_mode_is_case_insensitive_and_validated() {
    assert_eq!(
        AlignmentMode::parse("SAMEDOMAIN"),
        Some(AlignmentMode::SameDomain)
    );
    assert_eq!(AlignmentMode::parse("Strict"), Some(AlignmentMode::Strict));
    assert_eq!(AlignmentMode::parse("loose"), None);
    let mut ctx = MailetContext::for_tests(std::env::temp_dir());
    ctx.dry_run = true;
    let err = CalDavCollect::build(
        &MailetConfig::inline("CalDavCollect", &[("alignmentMode", "loose")]),
        &ctx,
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("alignmentMode is \"loose\""),
        "{err}"
    );
    ctx.dry_run = false;
    let err = CalDavCollect::build(&MailetConfig::inline("CalDavCollect", &[]), &ctx)
        .err()
        .unwrap();
    assert!(err.to_string().contains("openpaas.properties"), "{err}");
}

#[tokio::test]
async fn accepted_documents_become_outbox_jobs_with_the_json_unchanged() {
    let mut ctx = MailetContext::for_tests(std::env::temp_dir());
    ctx.properties = crate::config::Properties::parse(
        "openpaas.api.uri=http://127.0.0.1:1/api\nopenpaas.admin.user=a\nopenpaas.admin.password=b\ndav.api.uri=http://127.0.0.1:1\ndav.admin.user=admin\ndav.admin.password=p\n",
        std::path::Path::new("openpaas.properties"),
    )
    .unwrap();
    let mailet = CalDavCollect::build(
        &MailetConfig::inline(
            "CalDavCollect",
            &[
                ("source", "icalendarAsJson2"),
                ("skipNonLocalRecipients", "true"),
            ],
        ),
        &ctx,
    )
    .unwrap();
    let request = ics("REQUEST", "alice@org.example", &["bob@example.org"]);
    let local =
        serde_json::to_string(&doc(&request, "alice@org.example", "Bob@example.org")).unwrap();
    let external =
        serde_json::to_string(&doc(&request, "alice@org.example", "x@elsewhere.example")).unwrap();
    let mut map = std::collections::BTreeMap::new();
    map.insert(
        "k1".to_string(),
        AttributeValue::Bytes(local.clone().into_bytes()),
    );
    map.insert(
        "k2".to_string(),
        AttributeValue::Bytes(external.into_bytes()),
    );
    let mut mail = Mail::new(None, vec![], b"\r\n".to_vec());
    mail.name = "m1".into();
    mail.set_attribute("icalendarAsJson2", AttributeValue::Map(map));
    mailet.service(&mut mail, &ctx).await.unwrap();
    assert_eq!(mail.jobs.len(), 1);
    let job = &mail.jobs[0];
    assert_eq!(job.kind, "esn-itip");
    assert_eq!(job.target, "bob@example.org");
    assert_eq!(job.mail_name, "m1");
    assert_eq!(job.payload["body"].as_str().unwrap(), local);
    assert_eq!(job.payload["recipient"], "bob@example.org");

    // a recipient the API said it does not know gets no job while that is cached
    DavServices::shared(&ctx.properties, &ctx.dav)
        .unwrap()
        .unwrap()
        .users
        .remember("bob@example.org", &None, None);
    let mut again = Mail::new(None, vec![], b"\r\n".to_vec());
    again.set_attribute(
        "icalendarAsJson2",
        mail.attribute("icalendarAsJson2").unwrap().clone(),
    );
    mailet.service(&mut again, &ctx).await.unwrap();
    assert!(again.jobs.is_empty());
}

fn caldav_ctx() -> MailetContext {
    let mut ctx = MailetContext::for_tests(std::env::temp_dir());
    ctx.settings.dav.dialect = DavDialect::Caldav;
    ctx.settings.dav.base_url = "http://127.0.0.1:1".into();
    ctx
}

#[tokio::test]
async fn caldav_dialect_queues_one_caldav_itip_job_per_local_recipient() {
    let ctx = caldav_ctx();
    let mailet = CalDavCollect::build(
        &MailetConfig::inline(
            "CalDavCollect",
            &[
                ("source", "json"),
                ("updatesOnly", "true"),
                ("deleteCanceled", "true"),
                ("organizers", "Org.example, boss@corp.example"),
                ("calendarId", "work"),
                ("allowPublic", "true"),
            ],
        ),
        &ctx,
    )
    .expect("no openpaas.properties needed for caldav");
    let request = ics("REQUEST", "alice@org.example", &["bob@example.org"]);
    let mut map = std::collections::BTreeMap::new();
    for (k, rcpt) in [("k1", "Bob@example.org"), ("k2", "x@elsewhere.example")] {
        let text = serde_json::to_string(&doc(&request, "alice@org.example", rcpt)).unwrap();
        map.insert(k.to_string(), AttributeValue::Bytes(text.into_bytes()));
    }
    let mut mail = Mail::new(None, vec![], b"\r\n".to_vec());
    mail.name = "m2".into();
    mail.set_attribute("json", AttributeValue::Map(map));
    mailet.service(&mut mail, &ctx).await.unwrap();
    assert_eq!(
        mail.jobs.len(),
        1,
        "the external recipient has no calendar here"
    );
    let job = &mail.jobs[0];
    assert_eq!(job.kind, "caldav-itip");
    assert_eq!(job.target, "bob@example.org");
    assert_eq!(job.mail_name, "m2");
    let itip: ItipJob = serde_json::from_value(job.payload.clone()).unwrap();
    assert_eq!(itip.ical, request);
    assert_eq!(itip.calendar_id.as_deref(), Some("work"));
    assert_eq!(
        itip.options,
        Options {
            updates_only: true,
            delete_canceled: true,
            organizers: vec!["org.example".into(), "boss@corp.example".into()],
            allow_public: true,
        }
    );
}

#[tokio::test]
async fn restrictive_collect_is_collect_with_updates_only_on_both_dialects() {
    let request = ics("REQUEST", "alice@org.example", &["bob@example.org"]);
    let text =
        serde_json::to_string(&doc(&request, "alice@org.example", "bob@example.org")).unwrap();
    let mut esn = MailetContext::for_tests(std::env::temp_dir());
    esn.properties = crate::config::Properties::parse(
        "openpaas.api.uri=http://127.0.0.1:1/api\nopenpaas.admin.user=a\nopenpaas.admin.password=b\ndav.api.uri=http://127.0.0.1:1\ndav.admin.user=admin\ndav.admin.password=p\n",
        std::path::Path::new("openpaas.properties"),
    )
    .unwrap();
    for ctx in [caldav_ctx(), esn] {
        let mailet = crate::mailets::build(
            &MailetConfig::inline("RestrictiveCalDavCollect", &[("source", "json")]),
            &ctx,
        )
        .unwrap();
        let mut map = std::collections::BTreeMap::new();
        map.insert("k".into(), AttributeValue::Bytes(text.clone().into_bytes()));
        let mut mail = Mail::new(None, vec![], b"\r\n".to_vec());
        mail.set_attribute("json", AttributeValue::Map(map));
        mailet.service(&mut mail, &ctx).await.unwrap();
        let job = &mail.jobs[0];
        let updates_only = match job.kind.as_str() {
            "caldav-itip" => job.payload["options"]["updates_only"].clone(),
            _ => job.payload["updatesOnly"].clone(),
        };
        assert_eq!(updates_only, serde_json::Value::Bool(true), "{job:?}");
    }
}

#[test]
fn caldav_parameters_are_validated_at_construction() {
    let ctx = caldav_ctx();
    let err = |params: &[(&str, &str)]| {
        CalDavCollect::build(&MailetConfig::inline("CalDavCollect", params), &ctx)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(err(&[("updatesOnly", "maybe")]).contains("updatesOnly"));
    assert!(err(&[("organizers", "not an address@")]).contains("neither an address nor a domain"));
    assert!(err(&[("organizers", " , ")]).contains("organizers is empty"));
    assert!(err(&[("calendarId", "a/b")]).contains("calendarId"));
    assert!(err(&[("allowPublic", "yes please")]).contains("allowPublic"));
    let mut no_base = caldav_ctx();
    no_base.settings.dav.base_url.clear();
    let e = CalDavCollect::build(&MailetConfig::inline("CalDavCollect", &[]), &no_base)
        .err()
        .unwrap();
    assert!(e.to_string().contains("base_url"), "{e}");
    // the esn dialect refuses them rather than ignoring them
    let mut esn = MailetContext::for_tests(std::env::temp_dir());
    esn.dry_run = true;
    let e = CalDavCollect::build(
        &MailetConfig::inline("CalDavCollect", &[("deleteCanceled", "true")]),
        &esn,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("caldav"), "{e}");
}
