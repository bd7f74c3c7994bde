//! CalDavCollect for Twake: the esn-itip outbox against the esn-sabre / OpenPaaS double,
//! and end to end over SMTP with `examples/standalone-email/conf`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use mailetd::config::Properties;
use mailetd::config::settings::OutboxSettings;
use mailetd::outbox::OutboxJob;
use mailetd::outbox::store::{JobState, insert_jobs, list};
use mailetd::spool::Store;
use tokio_util::sync::CancellationToken;

use crate::support::esn_double::{DAV_ADMIN, EsnDouble, OPENPAAS_ADMIN, user_id};
use crate::support::{eventually, free_port, write_files};

const WAIT: Duration = Duration::from_secs(30);

fn ics(uid: &str, method: &str, organizer: &str, attendees: &[&str]) -> String {
    let mut s = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailetd tests//EN\r\nMETHOD:{method}\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261120T101500Z\r\nDTSTART:20261201T090000Z\r\nORGANIZER:mailto:{organizer}\r\n"
    );
    for a in attendees {
        s.push_str(&format!("ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:{a}\r\n"));
    }
    s + "END:VEVENT\r\nEND:VCALENDAR\r\n"
}

/// A JSON document as ICALToJsonAttribute writes it, serialised once (the bytes must
/// reach esn-sabre unchanged).
fn itip_json(uid: &str, sender: &str, recipient: &str) -> String {
    serde_json::json!({
        "ical": ics(uid, "REQUEST", sender, &[recipient]),
        "sender": sender, "recipient": recipient, "replyTo": sender,
        "uid": uid, "sequence": "0", "dtstamp": "20261120T101500Z",
        "method": "REQUEST", "recurrence-id": null
    })
    .to_string()
}

fn job(recipient: &str, body: &str) -> OutboxJob {
    OutboxJob::new(
        "esn-itip",
        recipient,
        serde_json::json!({"recipient": recipient, "body": body}),
    )
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn fast_settings() -> OutboxSettings {
    OutboxSettings {
        workers: 4,
        retry_base_secs: 0,
        retry_max_secs: 1,
        max_age_secs: 3600,
    }
}

/// An outbox (store + workers + esn handler) running in this test's runtime.
struct Outbox {
    store: Arc<Store>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Outbox {
    async fn start(dir: &Path, double: &EsnDouble, jobs: Vec<OutboxJob>) -> Outbox {
        let store = Store::open(&dir.join("spool.redb")).unwrap();
        store
            .write(move |txn| insert_jobs(txn, jobs))
            .await
            .unwrap();
        let properties =
            Properties::parse(&double.properties(), Path::new("openpaas.properties")).unwrap();
        let handlers = mailetd::dav::outbox_handlers(&properties, &OnceLock::new()).unwrap();
        assert_eq!(handlers.len(), 1);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(mailetd::outbox::worker::run(
            store.clone(),
            handlers,
            fast_settings(),
            shutdown.clone(),
        ));
        Outbox {
            store,
            shutdown,
            task,
        }
    }

    async fn wait_until_empty(&self) {
        for _ in 0..600 {
            if list(&self.store, JobState::Pending).unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "outbox still has pending jobs: {:?}",
            list(&self.store, JobState::Pending).unwrap()
        );
    }

    async fn stop(self) -> Arc<Store> {
        self.shutdown.cancel();
        self.task.await.unwrap();
        self.store
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn itip_job_reaches_esn_sabre_exactly_as_tmail_sends_it() {
    let double = EsnDouble::start();
    let bob = double.add_user("bob@linagora.local");
    let body = itip_json("uid-1", "alice@partner.example", "bob@linagora.local");
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::start(dir.path(), &double, vec![job("bob@linagora.local", &body)]).await;
    outbox.wait_until_empty().await;
    let store = outbox.stop().await;
    assert!(list(&store, JobState::Dead).unwrap().is_empty());

    let requests = double.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let lookup = &requests[0];
    assert_eq!(lookup.method, "GET");
    assert_eq!(lookup.uri, "/api/users?email=bob@linagora.local");
    assert_eq!(
        lookup.header("authorization"),
        Some(basic(OPENPAAS_ADMIN.0, OPENPAAS_ADMIN.1).as_str())
    );
    let itip = &requests[1];
    assert_eq!(itip.method, "ITIP");
    assert_eq!(itip.uri, format!("/calendars/{bob}"));
    assert_eq!(itip.header("content-type"), Some("application/json"));
    assert_eq!(
        itip.header("authorization"),
        Some(basic(&format!("{}&bob@linagora.local", DAV_ADMIN.0), DAV_ADMIN.1).as_str())
    );
    assert_eq!(itip.body, body.as_bytes(), "the JSON goes unchanged");
    assert_eq!(itip.status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_cached_and_unknown_users_cost_one_probe_then_a_dead_letter() {
    let double = EsnDouble::start();
    double.add_user("bob@linagora.local");
    let jobs = vec![
        job(
            "bob@linagora.local",
            &itip_json("u1", "alice@partner.example", "bob@linagora.local"),
        ),
        job(
            "bob@linagora.local",
            &itip_json("u2", "alice@partner.example", "bob@linagora.local"),
        ),
        job(
            "x@partner.example",
            &itip_json("u3", "alice@partner.example", "x@partner.example"),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::start(dir.path(), &double, jobs).await;
    outbox.wait_until_empty().await;
    // one more job for the unknown user: answered from the cache, no call at all
    let before = double.requests().len();
    let more = job(
        "x@partner.example",
        &itip_json("u4", "alice@partner.example", "x@partner.example"),
    );
    outbox
        .store
        .write(move |txn| insert_jobs(txn, vec![more]))
        .await
        .unwrap();
    mailetd::outbox::store::jobs_added();
    eventually("the fourth job is dead-lettered", WAIT, || {
        (list(&outbox.store, JobState::Dead).unwrap().len() == 2).then_some(())
    });
    let store = outbox.stop().await;
    assert_eq!(
        double.requests().len(),
        before,
        "cached unknown user: no request"
    );

    let bob_lookups = double
        .requests_with("GET")
        .into_iter()
        .filter(|r| r.uri == "/api/users?email=bob@linagora.local")
        .count();
    assert_eq!(bob_lookups, 1, "a hit is cached for max-age");
    assert_eq!(double.delivered_itips().len(), 2);
    let external: Vec<_> = double
        .requests()
        .into_iter()
        .filter(|r| r.uri.contains("x@partner.example") || r.method == "PROPFIND")
        .map(|r| (r.method, r.uri, r.status))
        .collect();
    assert_eq!(
        external,
        vec![
            (
                "GET".into(),
                "/api/users?email=x@partner.example".into(),
                200
            ),
            ("PROPFIND".into(), "/".into(), 401),
            (
                "GET".into(),
                "/api/users?email=x@partner.example".into(),
                200
            ),
        ]
    );
    let dead = list(&store, JobState::Dead).unwrap();
    assert!(dead.iter().all(|j| {
        j.target == "x@partner.example"
            && j.last_error
                .as_deref()
                .unwrap()
                .starts_with("unknown user x@partner.example")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_probe_makes_a_new_user_resolvable() {
    let double = EsnDouble::start();
    let id = double.provisionable("new@linagora.local");
    let body = itip_json("u1", "alice@partner.example", "new@linagora.local");
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::start(dir.path(), &double, vec![job("new@linagora.local", &body)]).await;
    outbox.wait_until_empty().await;
    outbox.stop().await;
    let seen: Vec<_> = double
        .requests()
        .into_iter()
        .map(|r| (r.method, r.uri, r.status))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "GET".into(),
                "/api/users?email=new@linagora.local".into(),
                200
            ),
            ("PROPFIND".into(), "/".into(), 207),
            (
                "GET".into(),
                "/api/users?email=new@linagora.local".into(),
                200
            ),
            ("ITIP".into(), format!("/calendars/{id}"), 204),
        ]
    );
    let probe = &double.requests_with("PROPFIND")[0];
    assert_eq!(probe.header("depth"), Some("0"));
    assert_eq!(probe.header("accept"), Some("application/xml"));
    assert_eq!(
        String::from_utf8_lossy(&probe.body),
        r#"<d:propfind xmlns:d="DAV:"><d:prop><d:current-user-principal/></d:prop></d:propfind>"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esn_sabre_down_for_a_while_then_every_invitation_arrives_once() {
    let double = EsnDouble::start();
    let users: Vec<String> = (0..5).map(|i| format!("user{i}@linagora.local")).collect();
    let mut jobs = Vec::new();
    for (i, u) in users.iter().enumerate() {
        double.add_user(u);
        jobs.push(job(
            u,
            &itip_json(&format!("uid-{i}"), "alice@partner.example", u),
        ));
    }
    double.fail_next(12);
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::start(dir.path(), &double, jobs).await;
    outbox.wait_until_empty().await;
    let store = outbox.stop().await;
    assert!(list(&store, JobState::Dead).unwrap().is_empty());
    assert!(double.requests().iter().filter(|r| r.status == 503).count() == 12);
    let mut delivered: Vec<String> = double
        .delivered_itips()
        .iter()
        .map(|r| r.json()["uid"].as_str().unwrap().to_string())
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        (0..5).map(|i| format!("uid-{i}")).collect::<Vec<_>>()
    );
}

fn mailetd(conf: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mailetd"))
        .arg("--conf")
        .arg(conf)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_lands_in_the_dead_letters_with_its_reason() {
    let double = EsnDouble::start();
    double.add_user("bob@linagora.local");
    let mut no_uid: serde_json::Value = serde_json::from_str(&itip_json(
        "u1",
        "alice@partner.example",
        "bob@linagora.local",
    ))
    .unwrap();
    no_uid["uid"] = serde_json::Value::Null;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("var");
    let outbox = Outbox::start(
        &data,
        &double,
        vec![job("bob@linagora.local", &no_uid.to_string())],
    )
    .await;
    outbox.wait_until_empty().await;
    drop(outbox.stop().await);

    let conf = dir.path().join("conf");
    write_files(
        &conf,
        &[(
            "mailetd.toml",
            format!("data_dir = {:?}\n", data.display().to_string()),
        )],
    );
    let listing = mailetd(&conf, &["outbox", "list"]);
    let id = user_id("bob@linagora.local");
    assert!(listing.contains("pending: 0\n"), "{listing}");
    assert!(listing.contains("dead: 1\n"), "{listing}");
    assert!(
        listing.contains(&format!(
            "\tesn-itip\tbob@linagora.local\t1\t-\tITIP /calendars/{id}: HTTP 400: \n"
        )),
        "{listing}"
    );
    assert!(!listing.contains(DAV_ADMIN.1) && !listing.contains(OPENPAAS_ADMIN.1));
    assert_eq!(
        mailetd(&conf, &["outbox", "retry"]),
        "1 dead letter(s) requeued\n"
    );
    let listing = mailetd(&conf, &["outbox", "list"]);
    assert!(
        listing.contains("pending: 1\n") && listing.contains("dead: 0\n"),
        "{listing}"
    );
    assert_eq!(
        mailetd(&conf, &["outbox", "purge", "--pending"]),
        "1 pending job(s) deleted\n"
    );
    assert!(mailetd(&conf, &["outbox", "list"]).contains("pending: 0\n"));
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: cargo test --test it esn::outbox_throughput -- --ignored --nocapture"]
async fn outbox_throughput() {
    let double = EsnDouble::start();
    let users: Vec<String> = (0..50).map(|i| format!("t{i}@linagora.local")).collect();
    for u in &users {
        double.add_user(u);
    }
    let n = 2000;
    let jobs: Vec<OutboxJob> = (0..n)
        .map(|i| {
            let u = &users[i % users.len()];
            job(
                u,
                &itip_json(&format!("tp-{i}"), "alice@partner.example", u),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let outbox = Outbox::start(dir.path(), &double, jobs).await;
    outbox.wait_until_empty().await;
    let elapsed = started.elapsed();
    outbox.stop().await;
    assert_eq!(double.delivered_itips().len(), n);
    let lookups = double.requests_with("GET").len();
    println!(
        "outbox: {n} ITIP jobs delivered in {elapsed:?} ({:.0}/s), {lookups} user lookups for {} users",
        n as f64 / elapsed.as_secs_f64(),
        users.len()
    );
}

/// The double must refuse what esn-sabre and the side service refuse, or the tests above
/// would prove nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_double_enforces_the_esn_contract() {
    let double = EsnDouble::start();
    let bob = double.add_user("bob@linagora.local");
    let http = reqwest::Client::new();
    let admin = basic(OPENPAAS_ADMIN.0, OPENPAAS_ADMIN.1);
    let get = |q: &str, auth: &str| {
        http.get(format!("{}/users?email={q}", double.api_uri()))
            .header("Authorization", auth.to_string())
            .send()
    };
    assert_eq!(
        get(
            "bob@linagora.local",
            &basic("admin@linagora.local", "wrong")
        )
        .await
        .unwrap()
        .status(),
        401
    );
    assert_eq!(get("bob", &admin).await.unwrap().status(), 400);
    let unknown = get("nobody@linagora.local", &admin).await.unwrap();
    assert_eq!(unknown.status(), 200);
    assert_eq!(unknown.text().await.unwrap(), "[]");
    let found = get("bob@linagora.local", &admin).await.unwrap();
    assert_eq!(found.headers()["cache-control"], "max-age=60, public");
    let users: serde_json::Value = found.json().await.unwrap();
    assert_eq!(users[0]["_id"], bob.as_str());

    let itip = |path: String, as_user: &str, body: String| {
        http.request(
            reqwest::Method::from_bytes(b"ITIP").unwrap(),
            format!("{}{path}", double.dav_uri()),
        )
        .header("Content-Type", "application/json")
        .header(
            "Authorization",
            basic(&format!("admin&{as_user}"), DAV_ADMIN.1),
        )
        .body(body)
        .send()
    };
    let good = itip_json("u1", "alice@partner.example", "bob@linagora.local");
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            itip(
                format!("/calendars/{bob}"),
                "bob@linagora.local",
                good.clone()
            )
            .await
            .unwrap()
        ),
        204
    );
    let mut no_uid: serde_json::Value = serde_json::from_str(&good).unwrap();
    no_uid["uid"] = serde_json::Value::Null;
    assert_eq!(
        status(
            itip(
                format!("/calendars/{bob}"),
                "bob@linagora.local",
                no_uid.to_string()
            )
            .await
            .unwrap()
        ),
        400
    );
    double.add_user("eve@linagora.local");
    assert_eq!(
        status(
            itip(
                format!("/calendars/{bob}"),
                "eve@linagora.local",
                good.clone()
            )
            .await
            .unwrap()
        ),
        403
    );
    assert_eq!(
        status(
            itip(
                "/calendars/000000000000000000000000".into(),
                "bob@linagora.local",
                good.clone()
            )
            .await
            .unwrap()
        ),
        404
    );
    assert_eq!(
        status(
            itip(format!("/calendars/{bob}"), "ghost@linagora.local", good)
                .await
                .unwrap()
        ),
        401
    );
}
