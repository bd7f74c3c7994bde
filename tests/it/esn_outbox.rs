//! CalDavCollect for Twake, the esn-itip outbox: jobs delivered to the esn-sabre / OpenPaaS
//! double (`support::esn_double`; neither can run here) as tmail sends them, user lookups
//! and their cache, provisioning, outages and dead letters; and the double's own contract.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use mailetd::config::Properties;
use mailetd::config::settings::OutboxSettings;
use mailetd::mail::job::OutboxJob;
use mailetd::outbox::store::{JobState, insert_jobs, list};
use mailetd::store::Store;
use tokio_util::sync::CancellationToken;

use crate::support::esn_double::{DAV_ADMIN, EsnDouble, OPENPAAS_ADMIN, user_id};
use crate::support::{eventually, write_files};

const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn ics(uid: &str, method: &str, organizer: &str, attendees: &[&str]) -> String {
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
pub(crate) fn itip_json(uid: &str, sender: &str, recipient: &str) -> String {
    serde_json::json!({
        "ical": ics(uid, "REQUEST", sender, &[recipient]),
        "sender": sender, "recipient": recipient, "replyTo": sender,
        "uid": uid, "sequence": "0", "dtstamp": "20261120T101500Z",
        "method": "REQUEST", "recurrence-id": null
    })
    .to_string()
}

pub(crate) fn job(recipient: &str, body: &str) -> OutboxJob {
    OutboxJob::new(
        "esn-itip",
        recipient,
        serde_json::json!({"recipient": recipient, "body": body}),
    )
}

pub(crate) fn basic(user: &str, password: &str) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: cargo test --test it esn_outbox::outbox_throughput -- --ignored --nocapture"]
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
