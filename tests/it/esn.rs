//! CalDavCollect for Twake end to end: `mailetd serve` with `examples/standalone-email/conf`
//! fed over SMTP, against the esn-sabre / OpenPaaS double; a kill -9 with jobs pending. The
//! outbox alone is tested in esn_outbox.rs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mailetd::mail::job::OutboxJob;
use mailetd::outbox::store::insert_jobs;
use mailetd::store::Store;

use crate::support::esn_double::{DAV_ADMIN, EsnDouble};
use crate::support::{eventually, free_port, write_files};

use crate::esn_outbox::{basic, itip_json, job};

const WAIT: Duration = Duration::from_secs(30);

/// `examples/standalone-email/conf` with the SMTP listener on `port` (loopback) and the data
/// under `dir/var`: the only changes a test needs.
pub(crate) fn example_conf(dir: &Path, port: u16) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/standalone-email/conf");
    let conf = dir.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    for entry in std::fs::read_dir(&example).unwrap().flatten() {
        std::fs::copy(entry.path(), conf.join(entry.file_name())).unwrap();
    }
    let smtp = std::fs::read_to_string(conf.join("smtpserver.xml"))
        .unwrap()
        .replace(
            "<bind>0.0.0.0:25</bind>",
            &format!("<bind>127.0.0.1:{port}</bind>"),
        );
    write_files(
        &conf,
        &[
            ("smtpserver.xml", smtp),
            (
                "mailetd.toml",
                format!(
                    // no admin endpoint: the default 127.0.0.1:8025 may be anyone's
                    "data_dir = {:?}\n[outbox]\nretry_base_secs = 1\nretry_max_secs = 1\n[http]\nbind = \"\"\n",
                    dir.join("var").display().to_string()
                ),
            ),
        ],
    );
    conf
}

fn serve(conf: &Path, double: &EsnDouble, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_mailetd"))
        .arg("--conf")
        .arg(conf)
        .arg("serve")
        .envs(double.env())
        .env("MAILETD_LOG", "info,mailetd=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[test]
fn kill_9_with_pending_jobs_loses_none_after_restart() {
    let double = EsnDouble::start();
    let users: Vec<String> = (0..3).map(|i| format!("k{i}@linagora.local")).collect();
    let jobs: Vec<OutboxJob> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            double.add_user(u);
            job(
                u,
                &itip_json(&format!("kill-{i}"), "alice@partner.example", u),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let conf = example_conf(dir.path(), free_port());
    {
        // jobs as a completed mail leaves them (durable, not yet delivered)
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Store::open(&dir.path().join("var/spool.redb")).unwrap();
        rt.block_on(store.write(move |txn| insert_jobs(txn, jobs)))
            .unwrap();
    }
    double.set_down(true);
    let log = dir.path().join("mailetd.log");
    let mut child = serve(&conf, &double, &log);
    eventually("mailetd tries to deliver", WAIT, || {
        (double.requests().iter().filter(|r| r.status == 503).count() >= 3).then_some(())
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    double.set_down(false);
    let mut child = serve(&conf, &double, &log);
    eventually(
        "every invitation is delivered after the restart",
        WAIT,
        || (double.delivered_itips().len() >= 3).then_some(()),
    );
    // let a duplicate show up if there were one
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let mut uids: Vec<String> = double
        .delivered_itips()
        .iter()
        .map(|r| r.json()["uid"].as_str().unwrap().to_string())
        .collect();
    uids.sort();
    assert_eq!(
        uids,
        vec!["kill-0", "kill-1", "kill-2"],
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}

// ---------------------------------------------------------------------------------------
// End to end over SMTP: needs the SMTP listener, the container and the calendar mailets.

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/esn")
        .join(name)
        .display()
        .to_string()
}

struct Running {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Running {
    fn start(double: &EsnDouble) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = example_conf(dir.path(), port);
        let child = serve(&conf, double, &dir.path().join("mailetd.log"));
        crate::support::wait_for_port(port, WAIT);
        Running { dir, port, child }
    }

    fn send(&self, from: &str, rcpts: &[&str], fixture_name: &str) {
        crate::support::smtp::send_file(self.port, from, rcpts, fixture(fixture_name));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mailetd.log")).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn invitation_over_smtp_yields_exactly_the_expected_itip() {
    let double = EsnDouble::start();
    let bob = double.add_user("bob@linagora.local");
    let mailetd = Running::start(&double);
    mailetd.send(
        "alice@partner.example",
        &["bob@linagora.local"],
        "request.eml",
    );
    let itip = eventually("the ITIP request", WAIT, || double.delivered_itips().pop());
    assert_eq!(itip.uri, format!("/calendars/{bob}"));
    assert_eq!(itip.header("content-type"), Some("application/json"));
    assert_eq!(
        itip.header("authorization"),
        Some(basic("admin&bob@linagora.local", DAV_ADMIN.1).as_str())
    );
    let json = itip.json();
    assert_eq!(json["uid"], "esn-request-0001@google.com");
    assert_eq!(json["method"], "REQUEST");
    assert_eq!(json["sender"], "alice@partner.example");
    assert_eq!(json["recipient"], "bob@linagora.local");
    assert_eq!(json["replyTo"], "alice@partner.example");
    assert_eq!(json["sequence"], "0");
    assert_eq!(json["dtstamp"], "20261120T101500Z");
    assert_eq!(json["recurrence-id"], serde_json::Value::Null);
    assert!(
        json["ical"]
            .as_str()
            .unwrap()
            .contains("UID:esn-request-0001@google.com")
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(double.requests_with("ITIP").len(), 1, "{}", mailetd.log());
}

#[test]
fn reply_over_smtp_goes_to_the_organizer_only() {
    let double = EsnDouble::start();
    let carol = double.add_user("carol@linagora.local");
    let mailetd = Running::start(&double);
    mailetd.send(
        "dan@partner.example",
        &["carol@linagora.local"],
        "reply.eml",
    );
    let itip = eventually("the ITIP request", WAIT, || double.delivered_itips().pop());
    assert_eq!(itip.uri, format!("/calendars/{carol}"));
    assert_eq!(itip.json()["method"], "REPLY");
    assert_eq!(itip.json()["uid"], "esn-reply-0002@linagora.local");
}

/// Issue 19 item 6: an event announcement (METHOD:PUBLISH, Meetup) and a `.ics` without
/// METHOD (Zoom) are not iTIP: esn-sabre gets no ITIP for them unless `allowPublic`.
#[test]
fn publish_and_no_method_are_not_posted_as_itip_unless_allow_public() {
    let double = EsnDouble::start();
    double.add_user("bob@linagora.local");
    let mailetd = Running::start(&double);
    for fixture_name in ["publish.eml", "no-method.eml", "request.eml"] {
        mailetd.send(
            "alice@partner.example",
            &["bob@linagora.local"],
            fixture_name,
        );
    }
    // the invitation sent last arrives, so the two before it have been processed
    let itip = eventually("the invitation", WAIT, || double.delivered_itips().pop());
    assert_eq!(itip.json()["uid"], "esn-request-0001@google.com");
    std::thread::sleep(Duration::from_millis(300));
    let log = mailetd.log();
    assert_eq!(double.requests_with("ITIP").len(), 1, "{log}");
    assert_eq!(log.matches("reason=\"not_itip\"").count(), 2, "{log}");
    drop(mailetd);

    // with allowPublic, both are passed on as they are
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = example_conf(dir.path(), port);
    let container = std::fs::read_to_string(conf.join("mailetcontainer.xml")).unwrap();
    let allowing = container.replace(
        "<source>icalendarAsJson2</source>\n            </mailet>",
        "<source>icalendarAsJson2</source>\n                <allowPublic>true</allowPublic>\n            </mailet>",
    );
    assert_ne!(allowing, container);
    std::fs::write(conf.join("mailetcontainer.xml"), allowing).unwrap();
    let child = serve(&conf, &double, &dir.path().join("mailetd.log"));
    crate::support::wait_for_port(port, WAIT);
    let mailetd = Running { dir, port, child };
    for fixture_name in ["publish.eml", "no-method.eml"] {
        mailetd.send(
            "alice@partner.example",
            &["bob@linagora.local"],
            fixture_name,
        );
    }
    eventually("both announcements", WAIT, || {
        (double.delivered_itips().len() >= 3).then_some(())
    });
    let mut uids: Vec<String> = double
        .delivered_itips()
        .iter()
        .map(|r| r.json()["uid"].as_str().unwrap_or_default().to_string())
        .collect();
    uids.sort();
    assert_eq!(
        uids,
        [
            "esn-request-0001@google.com",
            "event_304512345@meetup.example",
            "webinar-88123@zoom.example"
        ]
    );
}

#[test]
fn broken_ics_over_smtp_yields_no_request_and_one_log_line() {
    let double = EsnDouble::start();
    double.add_user("bob@linagora.local");
    let mailetd = Running::start(&double);
    mailetd.send(
        "alice@partner.example",
        &["bob@linagora.local"],
        "broken.eml",
    );
    mailetd.send(
        "alice@partner.example",
        &["bob@linagora.local"],
        "request.eml",
    );
    // the valid mail sent after it arrives, so the broken one has been processed
    eventually("the valid invitation", WAIT, || {
        double.delivered_itips().pop()
    });
    assert_eq!(double.requests_with("ITIP").len(), 1);
    // ICalendarParser drops the entry with one line naming the mail and the reason; the
    // valid mail logs no warning at all
    let log = mailetd.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    assert_eq!(lines, 1, "{log}");
}

#[test]
fn over_smtp_esn_down_then_back_every_invitation_arrives_once() {
    let double = EsnDouble::start();
    double.add_user("bob@linagora.local");
    double.add_user("carol@linagora.local");
    double.set_down(true);
    let mailetd = Running::start(&double);
    mailetd.send(
        "alice@partner.example",
        &["bob@linagora.local"],
        "request.eml",
    );
    mailetd.send(
        "dan@partner.example",
        &["carol@linagora.local"],
        "reply.eml",
    );
    eventually("attempts while down", WAIT, || {
        (double.requests().iter().filter(|r| r.status == 503).count() >= 4).then_some(())
    });
    double.set_down(false);
    eventually("both invitations", WAIT, || {
        (double.delivered_itips().len() >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(double.delivered_itips().len(), 2, "{}", mailetd.log());
}
