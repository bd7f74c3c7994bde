//! The outbox metrics on the RabbitMQ backend (issue 21): one `mailetd serve` with
//! `[spool] backend = "rabbitmq"` against a real broker and the esn-sabre/OpenPaaS contract
//! double; `/metrics` and `/api/status` must show its deliveries, retries and dead letters
//! as they do on the embedded backend.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use crate::support::esn_double::EsnDouble;
use crate::support::mailetd::spawn_logged;
use crate::support::rabbitmq::{self, RabbitMq};
use crate::support::{eventually, free_port, smtp, wait_for_port, write_files};

const WAIT: Duration = Duration::from_secs(120);

/// mailetd with the Twake standalone example configuration, spool and outbox on `broker`.
struct Node {
    dir: tempfile::TempDir,
    smtp_port: u16,
    http_port: u16,
    child: Child,
}

impl Node {
    fn start(broker: &RabbitMq, double: &EsnDouble) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/standalone-email/conf");
        for entry in std::fs::read_dir(&example).unwrap().flatten() {
            std::fs::copy(entry.path(), conf.join(entry.file_name())).unwrap();
        }
        let (smtp_port, http_port) = (free_port(), free_port());
        let smtp = std::fs::read_to_string(conf.join("smtpserver.xml"))
            .unwrap()
            .replace(
                "<bind>0.0.0.0:25</bind>",
                &format!("<bind>127.0.0.1:{smtp_port}</bind>"),
            );
        let prefix = format!("mailetd.metrics.{smtp_port}");
        let toml = format!(
            "data_dir = {:?}\n[outbox]\nretry_base_secs = 1\nretry_max_secs = 1\n[spool]\nbackend = \"rabbitmq\"\nuri = {:?}\nqueue = \"{prefix}.spool\"\noutbox_queue = \"{prefix}.outbox\"\n",
            dir.path().join("var").display().to_string(),
            broker.uri()
        );
        write_files(&conf, &[("smtpserver.xml", smtp), ("mailetd.toml", toml)]);
        let mut command = Command::new(env!("CARGO_BIN_EXE_mailetd"));
        command
            .arg("--conf")
            .arg(&conf)
            .arg("serve")
            .envs(double.env())
            .env("MAILETD_HTTP__BIND", format!("127.0.0.1:{http_port}"))
            .env("MAILETD_LOG", "info,mailetd=debug");
        let child = spawn_logged(command, &dir.path().join("mailetd.log"));
        let node = Node {
            dir,
            smtp_port,
            http_port,
            child,
        };
        wait_for_port(node.smtp_port, WAIT);
        wait_for_port(node.http_port, WAIT);
        node
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mailetd.log")).unwrap_or_default()
    }

    /// The body of `GET path` on the admin endpoint.
    fn get(&self, path: &str) -> String {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_string()
    }

    /// The value of `series` (name and labels, exactly as exposed) in `/metrics`.
    fn metric(&self, series: &str) -> Option<f64> {
        self.get("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits until `series` is `value`.
    fn metric_reaches(&self, series: &str, value: f64) {
        eventually(&format!("{series} = {value}"), WAIT, || {
            (self.metric(series) == Some(value)).then_some(())
        });
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one invitation (METHOD:REQUEST) with `uid` to `rcpt`.
fn invite(node: &Node, uid: &str, rcpt: &str) {
    let ics = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailetd tests//EN\r\nMETHOD:REQUEST\r\n\
         BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261120T101500Z\r\nDTSTART:20261201T090000Z\r\n\
         DTEND:20261201T100000Z\r\nSUMMARY:Metrics\r\nORGANIZER:mailto:alice@partner.example\r\n\
         ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{rcpt}\r\nSEQUENCE:0\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    );
    let message = format!(
        "From: alice@partner.example\r\nTo: {rcpt}\r\nSubject: Metrics\r\nMessage-ID: <{uid}>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nYou are invited.\r\n\
         --b\r\nContent-Type: text/calendar; charset=UTF-8; method=REQUEST\r\n\r\n{ics}--b--\r\n"
    );
    smtp::send(node.smtp_port, "alice@partner.example", &[rcpt], message);
}

#[test]
fn outbox_attempts_pending_jobs_and_dead_letters_show_on_the_broker_backend() {
    if !rabbitmq::available() {
        return;
    }
    let broker = RabbitMq::start();
    let double = EsnDouble::start();
    double.add_user("u0@linagora.local");
    let node = Node::start(&broker, &double);
    eventually("the node consumes", WAIT, || {
        node.log().contains("broker: consuming").then_some(())
    });

    // delivered: counted by kind, method and outcome, with its time
    invite(&node, "metrics-1@broker.test", "u0@linagora.local");
    eventually("the ITIP delivered", WAIT, || {
        (!double.delivered_itips().is_empty()).then_some(())
    });
    node.metric_reaches(
        "mailetd_outbox_attempts_total{kind=\"esn-itip\",method=\"REQUEST\",outcome=\"done\"}",
        1.0,
    );
    assert_eq!(
        node.metric("mailetd_outbox_attempt_duration_seconds_count{kind=\"esn-itip\"}"),
        Some(1.0)
    );

    // esn-sabre down: retried, and waiting in the retry queues meanwhile
    double.add_user("u1@linagora.local");
    double.set_down(true);
    invite(&node, "metrics-2@broker.test", "u1@linagora.local");
    eventually("the job retried", WAIT, || {
        node.metric(
            "mailetd_outbox_attempts_total{kind=\"esn-itip\",method=\"REQUEST\",outcome=\"retry\"}",
        )
        .filter(|n| *n >= 1.0)
    });
    eventually("the retried job counted as pending", WAIT, || {
        node.metric("mailetd_outbox_pending").filter(|n| *n >= 1.0)
    });
    double.set_down(false);
    node.metric_reaches("mailetd_outbox_pending", 0.0);

    // refused for good: a dead letter in the gauge, /api/status and its error list
    let job = serde_json::json!({
        "id": 77, "kind": "esn-itip", "target": "u0@linagora.local", "mail_name": "mail-dead-77",
        "payload": {"recipient": "u0@linagora.local", "body": "{\"uid\":null,\"method\":\"CANCEL\"}"},
        "first_seen_ms": 1
    });
    let outbox_queue = format!("mailetd.metrics.{}.outbox", node.smtp_port);
    broker.publish(&outbox_queue, &job.to_string());
    node.metric_reaches("mailetd_outbox_dead_letters", 1.0);
    assert_eq!(
        node.metric(
            "mailetd_outbox_attempts_total{kind=\"esn-itip\",method=\"CANCEL\",outcome=\"dead\"}"
        ),
        Some(1.0)
    );
    let status: serde_json::Value = serde_json::from_str(&node.get("/api/status")).unwrap();
    assert_eq!(status["queues"]["outbox_dead"], 1, "{status}");
    let errors = status["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["source"] == "outbox" && e["mail"] == "mail-dead-77"),
        "{status}"
    );
}
