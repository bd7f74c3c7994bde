//! The RabbitMQ backend's queues (issue 10) on a real broker: retry queues filling during a
//! DAV outage and draining after, dead letters with their reason and the CLI that requeues or
//! purges them, the broker's message size limit advertised and enforced over SMTP, roles that
//! need the broker backend, quorum queues. Multi-node load scenarios are in broker.rs.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::support::esn_double::EsnDouble;
use crate::support::eventually;
use crate::support::rabbitmq::{self, RabbitMq};

use crate::broker::{
    Node, Sender, WAIT, delivered, double_with_users, logs, shared_broker, uids, unique_prefix,
};

#[test]
fn a_dav_outage_fills_the_retry_queues_which_drain_after_recovery() {
    if !rabbitmq::available() {
        return;
    }
    let broker = shared_broker();
    let prefix = unique_prefix("outage");
    let double = double_with_users();
    let uri = broker.uri();
    let ingest = Node::start("ingest", &uri, &prefix, &double, "");
    let process = Node::start("process", &uri, &prefix, &double, "");
    double.set_down(true);
    let deliver = Node::start("deliver", &uri, &prefix, &double, "");
    let n = 20;
    let sent = Sender::start(&[ingest.smtp_port], 0, n, 0.0).wait();
    assert_eq!(sent.iter().filter(|(_, c)| *c == 250).count(), n);
    let retrying = |broker: &RabbitMq| -> u64 {
        broker
            .queue_depths(&format!("{prefix}.outbox.retry."))
            .iter()
            .map(|(_, c)| c)
            .sum()
    };
    eventually("jobs waiting in the retry queues", WAIT, || {
        (retrying(broker) >= n as u64 / 2).then_some(())
    });
    // the operator's view, on the broker backend
    let listing = deliver.cli(&["outbox", "list"]);
    assert!(listing.contains("HTTP 503"), "{listing}");
    assert!(listing.contains("dead: 0\n"), "{listing}");
    double.set_down(false);
    eventually("every invitation delivered after recovery", WAIT, || {
        (delivered(&double).len() == n).then_some(())
    });
    eventually("the retry queues drained", WAIT, || {
        (retrying(broker) == 0).then_some(())
    });
    assert_eq!(
        delivered(&double).keys().cloned().collect::<BTreeSet<_>>(),
        uids(0..n),
        "{}",
        logs(&[&ingest, &process, &deliver])
    );
    assert!(deliver.cli(&["outbox", "list"]).contains("pending: 0\n"));
}

#[test]
fn dead_letters_carry_their_reason_and_the_cli_requeues_or_purges_them() {
    if !rabbitmq::available() {
        return;
    }
    let broker = shared_broker();
    let prefix = unique_prefix("dead");
    let double = EsnDouble::start();
    let uri = broker.uri();
    let ingest = Node::start("ingest", &uri, &prefix, &double, "");
    let process = Node::start("process", &uri, &prefix, &double, "");
    let deliver = Node::start("deliver", &uri, &prefix, &double, "");
    double.add_user("u0@linagora.local");
    let sent = Sender::start(&[ingest.smtp_port], 0, 1, 0.0).wait();
    assert_eq!(sent[0].1, 250);
    eventually("the ITIP delivered", WAIT, || {
        (delivered(&double).len() == 1).then_some(())
    });
    // A job esn-sabre refuses for good (400: no uid), published as a processing node would.
    let outbox_queue = format!("{prefix}.outbox");
    let job = serde_json::json!({
        "id": 77, "kind": "esn-itip", "target": "u0@linagora.local",
        "payload": {"recipient": "u0@linagora.local", "body": "{\"uid\":null}"},
        "first_seen_ms": 1
    });
    broker.publish(&outbox_queue, &job.to_string());
    eventually("the job dead-lettered", WAIT, || {
        broker
            .queue_depths(&format!("{prefix}.outbox.dead"))
            .first()
            .is_some_and(|(_, c)| *c == 1)
            .then_some(())
    });
    let listing = deliver.cli(&["outbox", "list"]);
    assert!(listing.contains("dead: 1\n"), "{listing}");
    assert!(
        listing.contains("77\tesn-itip\tu0@linagora.local\t1\t-\t"),
        "{listing}"
    );
    assert!(listing.contains("400"), "{listing}");
    assert_eq!(
        deliver.cli(&["outbox", "purge", "78"]),
        "0 dead letter(s) deleted\n"
    );
    assert_eq!(
        deliver.cli(&["outbox", "retry", "77"]),
        "1 dead letter(s) requeued\n"
    );
    eventually("dead again after the retry", WAIT, || {
        deliver
            .cli(&["outbox", "list"])
            .contains("dead: 1\n")
            .then_some(())
    });
    assert_eq!(
        deliver.cli(&["outbox", "purge"]),
        "1 dead letter(s) deleted\n"
    );
    assert!(deliver.cli(&["outbox", "list"]).contains("dead: 0\n"));
    drop((ingest, process));
}

#[test]
fn mails_over_the_broker_limit_get_552_and_the_limit_is_advertised() {
    if !rabbitmq::available() {
        return;
    }
    let broker = shared_broker();
    let prefix = unique_prefix("size");
    let double = double_with_users();
    let ingest = Node::start(
        "ingest",
        &broker.uri(),
        &prefix,
        &double,
        "max_message_bytes = 20000",
    );
    let big = format!(
        "Subject: big\r\n\r\n{}",
        format!("{}\r\n", "x".repeat(70)).repeat(400)
    );
    let session = crate::support::smtp::session(ingest.smtp_port)
        .mail("a@partner.example", &["u0@linagora.local"], big)
        .mail(
            "a@partner.example",
            &["u0@linagora.local"],
            "Subject: small\r\n\r\nhi\r\n",
        )
        .run();
    assert_eq!(
        session.features.get("size").map(String::as_str),
        Some("20000"),
        "{session:?}"
    );
    // the big one refused (552), the small one after it in the same session accepted
    assert_eq!(session.codes(), [552, 250], "{session:?}");
    assert!(session.replies[1].refused.is_empty(), "{session:?}");
    // the small one is on the broker, the big one nowhere
    eventually("the small mail queued", WAIT, || {
        broker
            .queue_depths(&format!("{prefix}.spool"))
            .iter()
            .find(|(q, _)| q == &format!("{prefix}.spool"))
            .is_some_and(|(_, c)| *c == 1)
            .then_some(())
    });
}

#[test]
fn roles_other_than_all_need_the_broker_backend() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/standalone-email/conf");
    for entry in std::fs::read_dir(&example).unwrap().flatten() {
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mailetd"))
        .arg("--conf")
        .arg(dir.path())
        .args(["serve", "--role", "process"])
        .env("MAILETD_DATA_DIR", dir.path().join("var"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("backend = \"rabbitmq\""), "{err}");
}

#[test]
fn quorum_queues_carry_mails_and_retries_the_same_way() {
    if !rabbitmq::available() {
        return;
    }
    let broker = shared_broker();
    let prefix = unique_prefix("quorum");
    let double = double_with_users();
    let uri = broker.uri();
    let ingest = Node::start("ingest", &uri, &prefix, &double, "quorum = true");
    let process = Node::start("process", &uri, &prefix, &double, "quorum = true");
    // the first attempts fail: the jobs go through the (quorum) retry queues
    double.fail_next(8);
    let deliver = Node::start("deliver", &uri, &prefix, &double, "quorum = true");
    let n = 20;
    let sent = Sender::start(&[ingest.smtp_port], 0, n, 0.0).wait();
    assert_eq!(sent.iter().filter(|(_, c)| *c == 250).count(), n);
    eventually("every invitation delivered", WAIT, || {
        (delivered(&double).len() == n).then_some(())
    });
    assert!(
        double.requests().iter().any(|r| r.status == 503),
        "the outage did not happen"
    );
    let types = broker.ctl(&[
        "list_queues",
        "--quiet",
        "--no-table-headers",
        "name",
        "type",
    ]);
    let ours: Vec<&str> = types.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert!(!ours.is_empty());
    assert!(
        ours.iter().all(|l| l.ends_with("quorum")),
        "{ours:?}\n{}",
        logs(&[&ingest, &process, &deliver])
    );
}
