//! Scale-out on RabbitMQ (issue 10) with a real broker: ingest, process and deliver nodes
//! as separate `mailetd serve --role …` processes sharing the queues, SMTP from Python's
//! smtplib, and the esn-sabre/OpenPaaS contract double as the DAV side.
//!
//! One broker is shared by the tests of this file (distinct queue names per test); the test
//! that stops the broker starts its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::esn_double::EsnDouble;
use crate::support::mailetd::spawn_logged;
use crate::support::rabbitmq::{self, RabbitMq};
use crate::support::{eventually, free_port, python, smtp, wait_for_port, write_files};

pub(crate) const WAIT: Duration = Duration::from_secs(120);
/// Deadline of the load tests' waits: generous, since they share two cores with the suite.
pub(crate) const LOAD_WAIT: Duration = Duration::from_secs(600);
pub(crate) const USERS: usize = 5;

pub(crate) fn shared_broker() -> &'static RabbitMq {
    static BROKER: OnceLock<RabbitMq> = OnceLock::new();
    BROKER.get_or_init(RabbitMq::start)
}

pub(crate) fn unique_prefix(test: &str) -> String {
    format!("mailetd.{test}.{}", free_port())
}

/// One `mailetd serve --role ROLE` node with its own conf (Twake standalone example) and
/// data directory.
pub(crate) struct Node {
    dir: tempfile::TempDir,
    role: &'static str,
    pub(crate) smtp_port: u16,
    http_port: u16,
    env: Vec<(&'static str, String)>,
    child: Option<Child>,
}

impl Node {
    pub(crate) fn start(
        role: &'static str,
        uri: &str,
        prefix: &str,
        double: &EsnDouble,
        extra: &str,
    ) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let smtp_port = free_port();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/standalone-email/conf");
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        for entry in std::fs::read_dir(&example).unwrap().flatten() {
            std::fs::copy(entry.path(), conf.join(entry.file_name())).unwrap();
        }
        let smtp = std::fs::read_to_string(conf.join("smtpserver.xml"))
            .unwrap()
            .replace(
                "<bind>0.0.0.0:25</bind>",
                &format!("<bind>127.0.0.1:{smtp_port}</bind>"),
            );
        write_files(
            &conf,
            &[
                ("smtpserver.xml", smtp),
                (
                    "mailetd.toml",
                    format!(
                        "data_dir = {:?}\nworkers = 4\n[outbox]\nworkers = 4\nretry_base_secs = 1\nretry_max_secs = 4\n[spool]\nbackend = \"rabbitmq\"\nuri = {uri:?}\nqueue = \"{prefix}.spool\"\noutbox_queue = \"{prefix}.outbox\"\n{extra}\n",
                        dir.path().join("var").display().to_string()
                    ),
                ),
            ],
        );
        let http_port = free_port();
        let mut env = double.env();
        env.push(("MAILETD_HTTP__BIND", format!("127.0.0.1:{http_port}")));
        let mut node = Node {
            dir,
            role,
            smtp_port,
            http_port,
            env,
            child: None,
        };
        node.spawn();
        node
    }

    /// `(status, body)` of this node's `GET /health/ready`.
    pub(crate) fn readiness(&self) -> (u16, String) {
        let out = python(READY, &[&self.http_port.to_string()]);
        let (status, body) = out.split_once(' ').unwrap();
        (status.parse().unwrap(), body.to_string())
    }

    pub(crate) fn conf(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mailetd.log")).unwrap_or_default()
    }

    pub(crate) fn spawn(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mailetd"));
        command
            .arg("--conf")
            .arg(self.conf())
            .args(["serve", "--role", self.role])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("MAILETD_LOG", "info,mailetd=debug");
        let child = spawn_logged(command, &self.dir.path().join("mailetd.log"));
        self.child = Some(child);
        if self.role == "ingest" {
            wait_for_port(self.smtp_port, WAIT);
        } else {
            eventually("the node consumes", WAIT, || {
                self.log().contains("broker: consuming").then_some(())
            });
        }
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `mailetd --conf … ARGS` (the CLI, not the server).
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_mailetd"))
            .arg("--conf")
            .arg(self.conf())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mailetd {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Invitation `i` (UID `inv-{i}@broker.test`) to one of the USERS.
const INVITATION: &str = "From: alice@partner.example\r\nTo: {rcpt}\r\nSubject: Meeting {i}\r\n\
Message-ID: <inv-{i}@broker.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nYou are invited.\r\n\
--b\r\nContent-Type: text/calendar; charset=UTF-8; method=REQUEST\r\n\r\n\
BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailetd tests//EN\r\nMETHOD:REQUEST\r\n\
BEGIN:VEVENT\r\nUID:inv-{i}@broker.test\r\nDTSTAMP:20261120T101500Z\r\nDTSTART:20261201T090000Z\r\n\
DTEND:20261201T100000Z\r\nSUMMARY:Meeting {i}\r\nORGANIZER:mailto:alice@partner.example\r\n\
ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{rcpt}\r\nSEQUENCE:0\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n\
--b--\r\n";

/// Concurrent SMTP sessions of the load tests: enough to keep both ingest nodes busy.
pub(crate) const SESSIONS: usize = 8;

/// Invitations `inv-START..` (one per mail, to `u{i % USERS}@linagora.local`) sent in the
/// background by SESSIONS concurrent sessions spread over the ports (`support::smtp::load`),
/// PAUSE seconds between a session's mails, a refused mail noted and the next one sent 0.2 s
/// later; results `(uid, code)` (0: connection lost) accumulate as they come.
pub(crate) struct Sender(smtp::RunningLoad);

impl Sender {
    /// Sends `count` invitations from `start`, or with `count` 0 until [`Sender::finish`].
    pub(crate) fn start(ports: &[u16], start: usize, count: usize, pause: f64) -> Sender {
        let sessions = if count == 0 {
            SESSIONS
        } else {
            SESSIONS.min(count)
        };
        let users: Vec<String> = (0..USERS).map(|u| format!("u{u}@linagora.local")).collect();
        Sender(
            smtp::load(ports)
                .sessions(sessions)
                .mails(start, count)
                .pause(pause)
                .timeout(60)
                .mail("alice@partner.example", &users, INVITATION)
                .start(),
        )
    }

    fn by_uid(results: Vec<smtp::LoadResult>) -> Vec<(String, u16)> {
        results
            .into_iter()
            .map(|r| (format!("inv-{}@broker.test", r.mail), r.code))
            .collect()
    }

    pub(crate) fn results(&self) -> Vec<(String, u16)> {
        Self::by_uid(self.0.results())
    }

    pub(crate) fn count(&self, code: u16) -> usize {
        self.0.count(code)
    }

    /// Mails answered so far.
    pub(crate) fn answered(&self) -> usize {
        self.0.results().len()
    }

    /// Asks an open-ended sender to stop, and waits for it.
    pub(crate) fn finish(self) -> Vec<(String, u16)> {
        Self::by_uid(self.0.stop())
    }

    /// Waits for a sender of COUNT mails to be done.
    pub(crate) fn wait(self) -> Vec<(String, u16)> {
        Self::by_uid(self.0.wait())
    }
}

pub(crate) fn double_with_users() -> EsnDouble {
    let double = EsnDouble::start();
    for i in 0..USERS {
        double.add_user(&format!("u{i}@linagora.local"));
    }
    double
}

/// Delivered ITIPs per uid.
pub(crate) fn delivered(double: &EsnDouble) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in double.delivered_itips() {
        *out.entry(r.json()["uid"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

pub(crate) fn uids(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("inv-{i}@broker.test")).collect()
}

pub(crate) fn logs(nodes: &[&Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {} node:\n{}", n.role, n.log()))
        .collect()
}

/// Invitations of the exactly-once and kill -9 tests.
pub(crate) const LOAD: usize = 2000;

/// Like `eventually`, with the longer deadline and pause of the load tests: their checks
/// read thousands of recorded requests or a node's whole log.
pub(crate) fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LOAD_WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {LOAD_WAIT:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// How many mails got each SMTP answer (0: connection lost).
pub(crate) fn codes(results: &[(String, u16)]) -> BTreeMap<u16, usize> {
    let mut out = BTreeMap::new();
    for (_, c) in results {
        *out.entry(*c).or_default() += 1;
    }
    out
}

/// `mail processed` lines in a node's log: the mails it completed.
pub(crate) fn processed(node: &Node) -> usize {
    node.log().matches("mail processed").count()
}

#[test]
fn two_ingest_two_process_nodes_deliver_every_invitation_exactly_once() {
    if !rabbitmq::available() {
        return;
    }
    let t0 = Instant::now();
    let broker = shared_broker();
    let prefix = unique_prefix("once");
    let double = double_with_users();
    let uri = broker.uri();
    let ingest: Vec<Node> = (0..2)
        .map(|_| Node::start("ingest", &uri, &prefix, &double, ""))
        .collect();
    let process: Vec<Node> = (0..2)
        .map(|_| Node::start("process", &uri, &prefix, &double, ""))
        .collect();
    let deliver = Node::start("deliver", &uri, &prefix, &double, "");
    let t_sent = Instant::now();
    let sent = Sender::start(&[ingest[0].smtp_port, ingest[1].smtp_port], 0, LOAD, 0.0).wait();
    let send_secs = t_sent.elapsed().as_secs_f64();
    assert_eq!(sent.len(), LOAD);
    assert_eq!(codes(&sent), BTreeMap::from([(250, LOAD)]));
    let all: Vec<&Node> = ingest.iter().chain(&process).chain([&deliver]).collect();
    poll("every invitation delivered", || {
        (delivered(&double).len() == LOAD).then_some(())
    });
    let done_secs = t_sent.elapsed().as_secs_f64();
    // both ingest and both processing nodes took part
    for node in ingest.iter().chain(&process) {
        assert!(
            node.log().contains("SMTP: mail spooled") || processed(node) > 0,
            "{} node idle\n{}",
            node.role,
            logs(&all)
        );
    }
    // late repeats would show up after the last first delivery
    std::thread::sleep(Duration::from_secs(2));
    let got = delivered(&double);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), uids(0..LOAD));
    let twice: Vec<_> = got.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "applied more than once: {twice:?}");
    // nothing left behind on the broker
    let left: u64 = broker.queue_depths(&prefix).iter().map(|(_, c)| c).sum();
    assert_eq!(left, 0, "{:?}", broker.queue_depths(&prefix));
    eprintln!(
        "{LOAD} invitations: sent over SMTP in {send_secs:.1} s, all delivered after {done_secs:.1} s \
         (processing nodes: {} + {} mails); test {:.1} s",
        processed(&process[0]),
        processed(&process[1]),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn a_processing_node_killed_mid_load_loses_nothing() {
    if !rabbitmq::available() {
        return;
    }
    let t0 = Instant::now();
    let broker = shared_broker();
    let prefix = unique_prefix("kill");
    let double = double_with_users();
    let uri = broker.uri();
    let ingest: Vec<Node> = (0..2)
        .map(|_| Node::start("ingest", &uri, &prefix, &double, ""))
        .collect();
    let mut victim = Node::start("process", &uri, &prefix, &double, "");
    let survivor = Node::start("process", &uri, &prefix, &double, "");
    let deliver = Node::start("deliver", &uri, &prefix, &double, "");
    let sender = Sender::start(&[ingest[0].smtp_port, ingest[1].smtp_port], 0, LOAD, 0.0);
    poll("the victim is busy", || {
        (processed(&victim) >= LOAD / 10).then_some(())
    });
    victim.kill9();
    let victim_done = processed(&victim);
    let at_kill = (sender.answered(), delivered(&double).len());
    // mid-load: the kill came with invitations still to process (usually still arriving)
    assert!(at_kill.1 < LOAD, "{at_kill:?}");
    let sent = sender.wait();
    assert_eq!(codes(&sent), BTreeMap::from([(250, LOAD)]));
    poll("every invitation delivered", || {
        (delivered(&double).len() == LOAD).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let got = delivered(&double);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), uids(0..LOAD));
    // Only the mails the victim held unacked when it died (prefetch = 4 workers) can be
    // processed again by the survivor; those whose ITIP job was already confirmed give a
    // second ITIP REQUEST for the same uid and sequence, which esn-sabre applies as a no-op.
    let repeated: Vec<_> = got.iter().filter(|(_, c)| **c > 1).collect();
    let repeats: usize = got.values().map(|c| c - 1).sum();
    eprintln!(
        "{LOAD} invitations: kill -9 after the victim processed {victim_done} mails \
         ({} answered by SMTP, {} delivered at that point); {repeats} repeated ITIPs {repeated:?}; \
         survivor processed {}; test {:.1} s",
        at_kill.0,
        at_kill.1,
        processed(&survivor),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        repeats <= 4 && repeated.iter().all(|(_, c)| **c == 2),
        "{repeats} repeats: {repeated:?}\n{}",
        logs(&[&ingest[0], &ingest[1], &survivor, &deliver])
    );
    let left: u64 = broker.queue_depths(&prefix).iter().map(|(_, c)| c).sum();
    assert_eq!(left, 0, "{:?}", broker.queue_depths(&prefix));
}

/// Mails the broker-stopped test wants acknowledged with 250, before and after the outage.
pub(crate) const ACKED_BEFORE_STOP: usize = 400;
pub(crate) const ACKED_AFTER_RESTART: usize = 600;

#[test]
fn broker_stopped_mid_load_gets_451_then_250_and_every_acked_mail_is_applied() {
    if !rabbitmq::available() {
        return;
    }
    let t0 = Instant::now();
    let mut broker = RabbitMq::start();
    let prefix = unique_prefix("stop");
    let double = double_with_users();
    let uri = broker.uri();
    let ingest: Vec<Node> = (0..2)
        .map(|_| Node::start("ingest", &uri, &prefix, &double, ""))
        .collect();
    let process: Vec<Node> = (0..2)
        .map(|_| Node::start("process", &uri, &prefix, &double, ""))
        .collect();
    let deliver = Node::start("deliver", &uri, &prefix, &double, "");
    let sender = Sender::start(&[ingest[0].smtp_port, ingest[1].smtp_port], 0, 0, 0.0);
    poll("mails accepted", || {
        (sender.count(250) >= ACKED_BEFORE_STOP).then_some(())
    });
    let t_stop = Instant::now();
    broker.stop();
    let stop_secs = t_stop.elapsed().as_secs_f64();
    // sessions waiting for a confirm when the broker went away may still report their 250
    let before = sender.count(250);
    poll("451 while the broker is down", || {
        (sender.count(451) >= 10).then_some(())
    });
    assert!(
        sender.count(250) <= before + SESSIONS,
        "250 with the broker down: {:?}",
        codes(&sender.results())
    );
    for node in &ingest {
        let (status, body) = node.readiness();
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("RabbitMQ is unreachable"), "{body}");
    }
    let t_down = Instant::now();
    broker.spawn();
    let restart_secs = t_down.elapsed().as_secs_f64();
    let down = sender.count(451);
    poll("250 again after the broker is back", || {
        (sender.count(250) >= before + ACKED_AFTER_RESTART).then_some(())
    });
    let results = sender.finish();
    for node in &ingest {
        poll("ready again once the broker is back", || {
            (node.readiness().0 == 200).then_some(())
        });
    }
    assert!(down >= 10);
    assert!(results.len() >= ACKED_BEFORE_STOP + ACKED_AFTER_RESTART);
    let acked: BTreeSet<String> = results
        .iter()
        .filter(|(_, c)| *c == 250)
        .map(|(u, _)| u.clone())
        .collect();
    let all: Vec<&Node> = ingest.iter().chain(&process).chain([&deliver]).collect();
    poll("every 250-acknowledged mail applied", || {
        let got = delivered(&double);
        acked.iter().all(|u| got.contains_key(u)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let got = delivered(&double);
    let missing: Vec<_> = acked.iter().filter(|u| !got.contains_key(*u)).collect();
    assert!(missing.is_empty(), "{missing:?}");
    // At-least-once across a broker restart: a mail or job whose ack the dead broker never
    // got is redelivered; at most prefetch (4) mails per processing node and 4 jobs on the
    // deliver node. A 451 mail whose publish reached the broker before the confirm was
    // lost is applied too (the sending MTA retries it: ITIP REQUEST is idempotent).
    let repeats: usize = got.values().map(|c| c - 1).sum();
    let refused_applied = results
        .iter()
        .filter(|(u, c)| *c != 250 && got.contains_key(u))
        .count();
    eprintln!(
        "sent {}: answers {:?}; {} acknowledged and applied; {repeats} repeated ITIPs; \
         {refused_applied} refused mails applied anyway; {before} acknowledged when `rabbitmqctl stop` returned \
         after {stop_secs:.1} s, restart took {restart_secs:.1} s; \
         test {:.1} s",
        results.len(),
        codes(&results),
        acked.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(repeats <= 2 * 4 + 4, "{repeats} repeats\n{}", logs(&all));
    for node in &ingest {
        assert!(node.log().contains("answered 451"), "{}", logs(&all));
    }
    // the broker URI carries a password: never in the logs
    assert!(!logs(&all).contains("guest:guest"));
}

/// Prints `STATUS BODY` of `GET /health/ready` on `127.0.0.1:argv[1]`.
pub(crate) const READY: &str = r#"
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % sys.argv[1], timeout=10)
    print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"#;
