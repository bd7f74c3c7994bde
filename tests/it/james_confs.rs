//! Real James and tmail configuration shapes (issue 19, "Configurations"): the sample
//! directories `tests/conf/james-server` (a mail server's container copied into a collector)
//! and `tests/conf/tmail-collector` (the classes found in real collector configurations) with
//! `mailetd check`, and the new matchers and mailets under `mailetd serve` with real SMTP
//! (Python smtplib) and a real RabbitMQ.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};

use crate::support::esn_double::EsnDouble;
use crate::support::mailetd::Mailetd;
use crate::support::rabbitmq::{self, RabbitMq};
use crate::support::{eventually, free_port};

fn check(conf: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailetd"))
        .args(["--conf", conf, "check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MAILETD_LOG", "error")
        .env_remove("MAILETD_DATA_DIR")
        .output()
        .expect("mailetd runs")
}

#[test]
fn check_reports_every_error_of_a_james_server_directory_at_once() {
    let out = check("tests/conf/james-server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let at =
        |line_col: &str| format!("\n  tests/conf/james-server/mailetcontainer.xml:{line_col}: ");
    let expected = [
        "mailetd: 8 errors in the configuration:\n  tests/conf/james-server/openpaas.properties:2:18: environment variable MAILETD_IT_UNSET_OPENPAAS_URI is not set".to_string(),
        format!("{}mailet \"Bounce\" writes mail back to senders and is not part of a collector: remove it, or map it with <mailet match=\"All\" class=\"LogMessage\"/>", at("15:7")),
        format!("{}mailet \"RecipientRewriteTable\" rewrites recipients from the user and alias tables and is not part of a collector: remove it, or map it with PostmasterAlias", at("20:7")),
        format!("{}mailet \"org.apache.james.jmap.mailet.VacationMailet\" writes mail back to senders and is not part of a collector", at("21:7")),
        format!("{}mailet \"Sieve\" stores mail in mailboxes and is not part of a collector: remove it, or map it with <mailet match=\"All\" class=\"Null\"/>", at("22:7")),
        format!("{}mailet \"LocalDelivery\" stores mail in mailboxes and is not part of a collector", at("23:7")),
        format!("{}unknown mailet class \"ToProccessor\"; did you mean ToProcessor?", at("24:7")),
        format!("{}mailet \"RemoteDelivery\" sends mail on to other servers and is not part of a collector: remove it, or map it with <mailet match=\"All\" class=\"Null\"/> (done): mailetd never relays", at("25:7")),
    ];
    for e in &expected {
        assert!(err.contains(e.as_str()), "missing {e:?} in:\n{err}");
    }
    // files mailetd does not read (postgres.properties, blob.properties) stop nothing
    for quiet in ["postgres", "S3_ENDPOINT", "did you mean MimeDecodingMailet"] {
        assert!(!err.contains(quiet), "{quiet} in:\n{err}");
    }
}

#[test]
fn check_loads_a_tmail_collector_with_entities_restrictive_collect_and_amqp_forward() {
    let out = check("tests/conf/tmail-collector");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        // ${sys:…} from jvm.properties and ${key} of the same file, as Commons Configuration
        "  collector.name = collector-1@example.org\n",
        // a file mailetd does not read keeps its unset variables literally, as James
        "  database.url = jdbc:postgresql://${env:MAILETD_IT_UNSET_POSTGRES_HOST}/james\n",
        // the DTD entity &stripBcc; is a mailet, &calendarSource; a parameter
        "processor transport:\n  1. match=\"All\" RemoveMimeHeader\n  2. match=\"All\" RecipientToLowerCase\n  3. match=\"All\" SetMimeHeader\n",
        "  8. notmatch=\"IsMarkedAsSpam=org.apache.james.rspamd.status\" com.linagora.tmail.mailet.RestrictiveCalDavCollect\n  9. match=\"All\" ContactExtractor\n  10. match=\"All\" AmqpForwardAttribute\n",
        "warning: tests/conf/tmail-collector/mailetcontainer.xml:42:9: parameter <sourceAttribute> of mailet RestrictiveCalDavCollect is not one mailetd knows: ignored; did you mean source?\n",
        "warning: tests/conf/tmail-collector/smtpserver.xml:3:3: smtp smtpserver-global listens on 0.0.0.0:2525 but only loopback clients may connect",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains("rabbit-s3cret"), "{text}");
    assert!(
        !text.contains("processor transport:\n  1. match=\"All\" RemoveMimeHeader\n     "),
        "{text}"
    );
}

/// An invitation mail: `method` from `organizer` to `attendee`, event `uid`.
fn invitation(method: &str, uid: &str, organizer: &str, attendee: &str, from: &str) -> String {
    format!(
        "From: {from}\r\nTo: someone@example.org\r\nSubject: {method} {uid}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee invite\r\n--b\r\nContent-Type: text/calendar; charset=utf-8; method={method}\r\n\r\nBEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailetd test//EN\r\nMETHOD:{method}\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nSEQUENCE:1\r\nDTSTAMP:20260101T100000Z\r\nDTSTART:20260110T100000Z\r\nDTEND:20260110T110000Z\r\nSUMMARY:{uid}\r\nORGANIZER:mailto:{organizer}\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:{attendee}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n--b--\r\n"
    )
}

/// tmail's RestrictiveCalDavCollect on esn-sabre: a REQUEST for an event the recipient
/// already has is sent, one for a new event is not, a REPLY goes through. esn-sabre cannot
/// run here: the contract double answers the calendar lookups (see its doc comment).
#[test]
fn restrictive_collect_on_esn_sends_only_updates_of_known_events_and_replies() {
    let double = EsnDouble::start();
    let bob = double.add_user("bob@linagora.local");
    double.add_event("bob@linagora.local", "known-event");
    let xml = r#"<mailetcontainer>
  <processors>
    <processor state="root">
      <mailet match="All" class="StripAttachment"><mimeType>text/calendar</mimeType><attribute>rawIcalendar</attribute></mailet>
      <mailet match="All" class="MimeDecodingMailet"><attribute>rawIcalendar</attribute></mailet>
      <mailet match="All" class="ICalendarParser"><sourceAttribute>rawIcalendar</sourceAttribute><destinationAttribute>icalendar</destinationAttribute></mailet>
      <mailet match="All" class="ICALToJsonAttribute"><source>icalendar</source><destination>icalendarJson</destination><rawSource>rawIcalendar</rawSource></mailet>
      <mailet match="All" class="com.linagora.tmail.mailet.RestrictiveCalDavCollect"/>
      <mailet match="All" class="Null"/>
    </processor>
    <processor state="error"><mailet class="Null"/></processor>
  </processors>
</mailetcontainer>
"#;
    let env = double.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Mailetd::start_with(
        free_port(),
        &[
            ("mailetcontainer.xml", xml.to_string()),
            ("openpaas.properties", double.properties()),
        ],
        &env,
    );
    let (alice, carol) = ("alice@partner.example", "carol@partner.example");
    let bob_mail = "bob@linagora.local";
    for (method, uid, organizer, attendee, from) in [
        ("REQUEST", "new-event", alice, bob_mail, alice),
        ("REQUEST", "known-event", alice, bob_mail, alice),
        ("REPLY", "bobs-event", bob_mail, carol, carol),
    ] {
        send(
            server.smtp_port,
            from,
            bob_mail,
            &invitation(method, uid, organizer, attendee, from),
        );
    }
    let delivered = eventually(
        "the update and the reply are delivered, the new event is not",
        Duration::from_secs(60),
        || {
            let itips = double.delivered_itips();
            (itips.len() == 2 && server.log().contains("not imported")).then_some(itips)
        },
    );
    let uids: Vec<String> = delivered
        .iter()
        .map(|r| r.json()["uid"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(uids.contains(&"known-event".to_string()), "{uids:?}");
    assert!(uids.contains(&"bobs-event".to_string()), "{uids:?}");
    let reports = double.requests_with("REPORT");
    assert!(
        reports
            .iter()
            .all(|r| r.uri == format!("/calendars/{bob}/{bob}/")),
        "{reports:#?}"
    );
    assert_eq!(
        reports.len(),
        2,
        "one lookup per REQUEST, none for the REPLY"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(double.delivered_itips().len(), 2);
}

fn send(port: u16, from: &str, to: &str, message: &str) {
    let to: Vec<&str> = to.split(',').collect();
    crate::support::smtp::send(port, from, &to, message);
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn stored_json(dir: &Path) -> Vec<serde_json::Value> {
    files(dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn spam_lowercase_header_and_contacts_mailets_work_on_mail_over_smtp() {
    let xml = r#"<mailetcontainer>
  <processors>
    <processor state="root">
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor state="transport">
      <mailet match="All" class="RemoveMimeHeader"><name>bcc</name></mailet>
      <mailet match="IsMarkedAsSpam" class="ToRepository"><repositoryPath>file://mail/spam/</repositoryPath></mailet>
      <mailet match="All" class="RecipientToLowerCase"/>
      <mailet match="All" class="SetMimeHeader"><name>X-Collected-By</name><value>mailetd</value></mailet>
      <mailet match="All" class="ContactExtractor"><attribute>extractedContacts</attribute></mailet>
      <mailet match="All" class="ToRepository"><repositoryPath>file://mail/collected/</repositoryPath></mailet>
    </processor>
    <processor state="error"><mailet class="Null"/></processor>
  </processors>
</mailetcontainer>
"#;
    let server = Mailetd::start(&[("mailetcontainer.xml", xml.to_string())]);
    send(
        server.smtp_port,
        "alice@remote.test",
        "Bob.Smith@LOCALHOST",
        "From: alice@remote.test\r\nTo: Bob Smith <Bob.Smith@localhost>\r\nCc: \"Doe, Jane\" <jane@remote.test>\r\nX-Collected-By: upstream\r\nSubject: lunch\r\n\r\nnoon?\r\n",
    );
    send(
        server.smtp_port,
        "spammer@remote.test",
        "bob@localhost",
        "From: spammer@remote.test\r\nTo: bob@localhost\r\norg.apache.james.spamassassin.status: Yes, hits=9.3 required=5.0\r\nSubject: win\r\n\r\nmoney\r\n",
    );
    let collected = server.data_dir().join("mail/collected");
    let spam = server.data_dir().join("mail/spam");
    // a mail is stored once its JSON is there (written last, renamed from .json.part)
    let stored = |dir: &Path| {
        files(dir)
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .count()
    };
    eventually("both mails are stored", Duration::from_secs(30), || {
        (stored(&collected) == 1 && stored(&spam) == 1).then_some(())
    });
    let json = &stored_json(&collected)[0];
    assert_eq!(json["recipients"][0]["local"], "bob.smith");
    assert_eq!(json["recipients"][0]["domain"], "localhost");
    let contacts: serde_json::Value = serde_json::from_str(
        json["attributes"]["extractedContacts"]["value"]
            .as_str()
            .expect("a string attribute"),
    )
    .unwrap();
    assert_eq!(
        contacts,
        serde_json::json!({"userEmail": "alice@remote.test", "emails": ["Bob Smith <Bob.Smith@localhost>", "\"Doe, Jane\" <jane@remote.test>"]})
    );
    let eml = files(&collected)
        .into_iter()
        .find(|p| p.extension().is_some_and(|x| x == "eml"))
        .unwrap();
    let message = String::from_utf8(std::fs::read(eml).unwrap()).unwrap();
    assert!(message.contains("X-Collected-By: mailetd\r\n"), "{message}");
    assert!(!message.contains("upstream"), "{message}");
    assert_eq!(stored_json(&spam)[0]["sender"]["local"], "spammer");
}

/// A test-side AMQP client (lapin) on the real broker.
fn amqp<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// What OpenPaaS does before it consumes: a durable topic exchange and a bound queue.
fn declare_consumer_queue(uri: &str, exchange: &str, queue: &str, key: &str) {
    amqp(async {
        let conn = Connection::connect(uri, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "done".into()).await;
    })
}

fn get_message(uri: &str, queue: &str) -> Option<Vec<u8>> {
    amqp(async {
        let conn = Connection::connect(uri, ConnectionProperties::default())
            .await
            .ok()?;
        let ch = conn.create_channel().await.ok()?;
        let got = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .ok()?;
        let _ = conn.close(200, "done".into()).await;
        got.map(|m| m.delivery.data.clone())
    })
}

#[test]
fn amqp_forward_attribute_publishes_with_confirms_and_loses_nothing_in_a_broker_outage() {
    if !rabbitmq::available() {
        return;
    }
    let mut broker = RabbitMq::start();
    let uri = broker.uri();
    declare_consumer_queue(&uri, "collector:contacts", "openpaas.contacts", "contacts");
    let xml = format!(
        r#"<mailetcontainer>
  <processors>
    <processor state="root">
      <mailet match="All" class="ContactExtractor"><attribute>extractedContacts</attribute></mailet>
      <mailet match="All" class="AmqpForwardAttribute">
        <uri>{uri}</uri>
        <exchange>collector:contacts</exchange>
        <routing_key>contacts</routing_key>
        <attribute>extractedContacts</attribute>
      </mailet>
      <mailet match="All" class="Null"/>
    </processor>
    <processor state="error"><mailet class="Null"/></processor>
  </processors>
</mailetcontainer>
"#
    );
    let server = Mailetd::start_with(
        free_port(),
        &[("mailetcontainer.xml", xml)],
        &[
            ("MAILETD_OUTBOX__RETRY_BASE_SECS", "1"),
            ("MAILETD_OUTBOX__RETRY_MAX_SECS", "2"),
        ],
    );
    let mail = |n: u32| {
        format!("From: alice@remote.test\r\nTo: bob{n}@localhost\r\nSubject: {n}\r\n\r\nhi\r\n")
    };
    send(
        server.smtp_port,
        "alice@remote.test",
        "bob1@localhost",
        &mail(1),
    );
    let first = eventually(
        "the first message is on the queue",
        Duration::from_secs(60),
        || get_message(&uri, "openpaas.contacts"),
    );
    let first: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"userEmail": "alice@remote.test", "emails": ["bob1@localhost"]})
    );

    // the broker goes away: the mail is still accepted, its message waits in the outbox
    broker.stop();
    send(
        server.smtp_port,
        "alice@remote.test",
        "bob2@localhost",
        &mail(2),
    );
    eventually(
        "a failed attempt is logged",
        Duration::from_secs(60),
        || server.log().contains("amqp-forward").then_some(()),
    );
    broker.spawn();
    let second = eventually(
        "the second message arrives after the outage",
        Duration::from_secs(120),
        || get_message(&uri, "openpaas.contacts"),
    );
    let second: serde_json::Value = serde_json::from_slice(&second).unwrap();
    assert_eq!(second["emails"][0], "bob2@localhost");
    assert!(
        !server.log().contains("guest:guest"),
        "the password never reaches the log"
    );
}
