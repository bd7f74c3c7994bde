//! Operating mailetd: the HTTP admin endpoint (`/health`, `/health/ready`, `/metrics`,
//! `/api/status`, Basic auth) against the real `mailetd serve` fed by real SMTP clients;
//! the helpers the other operations tests share. The security checks of issue 8 are in
//! ops_security.rs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;

use crate::support::esn_double::EsnDouble;
use crate::support::mailetd::{Mailetd, smtpserver_xml};
pub(crate) use crate::support::smtp::send_file;
use crate::support::{eventually, free_port, smtp, wait_for_port, write_files};

pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// One `GET` over a fresh connection: (status, body).
pub(crate) fn http_get(port: u16, path: &str, auth: Option<(&str, &str)>) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("admin endpoint reachable");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some((user, password)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub(crate) fn json_of(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = http_get(port, path, None);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The value of the series `series` (name with its labels, as rendered) in `/metrics`.
pub(crate) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub(crate) fn metrics(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics", None);
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until `series` has `value` in `/metrics`.
pub(crate) fn metric_reaches(port: u16, series: &str, value: f64) {
    eventually(&format!("{series} = {value}"), WAIT, || {
        (metric(&metrics(port), series) == Some(value)).then_some(())
    });
}

/// Sends `n` mails of `size` body bytes in one session, without SIZE on MAIL (so a mail
/// too big is refused after its DATA); the DATA reply codes.
pub(crate) fn send_n(port: u16, n: usize, size: usize, rcpt: &str) -> String {
    let mut session = smtp::session(port).helo("feeder.ops.test");
    for i in 0..n {
        let body = format!(
            "Subject: ops {i}\r\nMessage-ID: <ops-{i}@partner.example>\r\n\r\n{}\r\n",
            "x".repeat(size)
        );
        session = session.transaction("alice@partner.example", &[rcpt], body);
    }
    // each transaction is MAIL, RCPT, DATA
    let codes: Vec<String> = session
        .run()
        .codes()
        .iter()
        .skip(2)
        .step_by(3)
        .map(u16::to_string)
        .collect();
    codes.join(" ")
}

pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

pub(crate) fn example_file(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/standalone-email/conf")
            .join(name),
    )
    .unwrap()
}

/// mailetd with the Twake example (`mailetcontainer.xml`, `openpaas.properties`) against
/// `double`, plus `files` (e.g. a `mailetd.toml`).
pub(crate) fn twake_against(double: &EsnDouble, files: &[(&str, String)]) -> Mailetd {
    let env = double.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut all = vec![
        ("mailetcontainer.xml", example_file("mailetcontainer.xml")),
        ("openpaas.properties", example_file("openpaas.properties")),
    ];
    all.extend(files.iter().cloned());
    Mailetd::start_with(free_port(), &all, &env)
}

#[test]
fn health_ready_metrics_and_status_follow_smtp_traffic() {
    let port = free_port();
    let m = Mailetd::start_with(
        port,
        &[(
            "smtpserver.xml",
            smtpserver_xml(port, "<maxmessagesize>2K</maxmessagesize>"),
        )],
        &[],
    );
    wait_for_port(m.http_port, WAIT);
    let (status, body) = http_get(m.http_port, "/health", None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    let ready = json_of(m.http_port, "/health/ready");
    assert_eq!(ready["ready"], true, "{ready}");
    let names: Vec<_> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["ok"].clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("spool".to_string(), serde_json::json!(true)),
            ("outbox".to_string(), serde_json::json!(true))
        ],
        "no DAV configured: no DAV check; {ready}"
    );

    let before = metrics(m.http_port);
    let connections_before = metric(&before, "mailetd_smtp_connections_total").unwrap();
    assert_eq!(
        metric(&before, "mailetd_smtp_mails_accepted_total"),
        Some(0.0)
    );

    assert_eq!(send_n(port, 3, 100, "bob@example.org"), "250 250 250");
    assert_eq!(send_n(port, 1, 5000, "bob@example.org"), "552");

    metric_reaches(
        m.http_port,
        "mailetd_mails_processed_total{outcome=\"done\"}",
        3.0,
    );
    let after = metrics(m.http_port);
    assert_eq!(
        metric(&after, "mailetd_smtp_mails_accepted_total"),
        Some(3.0)
    );
    assert_eq!(
        metric(&after, "mailetd_smtp_rejections_total{code=\"552\"}"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        metric(&after, "mailetd_smtp_connections_total").unwrap() - connections_before,
        2.0
    );
    assert_eq!(
        metric(
            &after,
            "mailetd_mailet_runs_total{processor=\"root\",mailet=\"PostmasterAlias\"}"
        ),
        Some(3.0),
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "mailetd_mailet_duration_seconds_count{processor=\"root\",mailet=\"PostmasterAlias\"}"
        ),
        Some(3.0)
    );
    assert_eq!(metric(&after, "mailetd_spool_depth"), Some(0.0));
    assert_eq!(metric(&after, "mailetd_outbox_pending"), Some(0.0));
    assert!(after.contains("# TYPE mailetd_mailet_duration_seconds histogram"));

    let status = json_of(m.http_port, "/api/status");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime_secs"].as_u64().is_some());
    assert_eq!(status["queues"]["spool"], 0);
    assert_eq!(status["queues"]["outbox_pending"], 0);
    assert_eq!(
        status["config"]["smtp"][0]["bind"][0],
        format!("127.0.0.1:{port}")
    );
    assert_eq!(status["config"]["smtp"][0]["max_message_size"], 2048);
    assert_eq!(status["counters"]["mails_accepted"], 3);
    let clients = status["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{status}");
    assert_eq!(clients[0]["ip"], "127.0.0.1");
    assert_eq!(clients[0]["mails"], 3);
    assert!(clients[0]["last_seen"].as_str().unwrap().starts_with("20"));
    assert_eq!(status["errors"].as_array().unwrap().len(), 0, "{status}");
}

#[test]
fn status_lists_the_error_of_a_mail_routed_to_the_error_processor() {
    let container = r#"<?xml version="1.0"?>
<mailetcontainer enableJmx="false">
  <context><postmaster>postmaster</postmaster></context>
  <spooler><threads>2</threads><errorRepository>file://mail/error/</errorRepository></spooler>
  <processors>
    <processor state="root" enableJmx="false">
      <mailet match="HasHeader=X-Break" class="ToRepository">
        <repositoryPath>file:///dev/null/broken/</repositoryPath>
      </mailet>
      <mailet match="All" class="Null"/>
    </processor>
    <processor state="error" enableJmx="false">
      <mailet match="All" class="MetricsMailet"><metricName>opsTestErrors</metricName></mailet>
      <mailet match="All" class="ToRepository"><repositoryPath>file://mail/error/</repositoryPath></mailet>
    </processor>
  </processors>
</mailetcontainer>
"#;
    let m = Mailetd::start(&[("mailetcontainer.xml", container.to_string())]);
    wait_for_port(m.http_port, WAIT);
    let broken = m.dir.path().join("broken.eml");
    std::fs::write(
        &broken,
        "X-Break: yes\r\nSubject: broken\r\nMessage-ID: <broken@partner.example>\r\n\r\nbody\r\n",
    )
    .unwrap();
    send_n(m.smtp_port, 2, 10, "bob@example.org");
    send_file(
        m.smtp_port,
        "alice@partner.example",
        &["bob@example.org"],
        &broken,
    );
    metric_reaches(
        m.http_port,
        "mailetd_metrics_mailet_total{metric=\"opsTestErrors\"}",
        1.0,
    );
    let text = metrics(m.http_port);
    assert_eq!(
        metric(
            &text,
            "mailetd_mailet_errors_total{processor=\"root\",mailet=\"ToRepository\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "mailetd_mailet_runs_total{processor=\"root\",mailet=\"Null\"}"
        ),
        Some(2.0),
        "{text}"
    );
    let status = json_of(m.http_port, "/api/status");
    let errors = status["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{status}");
    assert_eq!(errors[0]["source"], "pipeline");
    let mail = errors[0]["mail"].as_str().unwrap();
    assert!(mail.starts_with("mail-"), "{status}");
    let reason = errors[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("ToRepository") && reason.contains("/dev/null/broken"),
        "{reason}"
    );
    // and the error processor kept it
    assert!(!walk(&m.data_dir().join("mail/error")).is_empty());
}

#[test]
fn basic_auth_guards_every_admin_route() {
    let m = Mailetd::start(&[(
        "mailetd.toml",
        "data_dir = \"var\"\n[http]\nusername = \"ops\"\npassword = \"adm1n-Pa55\"\n".into(),
    )]);
    wait_for_port(m.http_port, WAIT);
    for path in ["/health", "/health/ready", "/metrics", "/api/status"] {
        let (status, _) = http_get(m.http_port, path, None);
        assert_eq!(status, 401, "{path} without credentials");
        let (status, _) = http_get(m.http_port, path, Some(("ops", "wrong")));
        assert_eq!(status, 401, "{path} with a wrong password");
        let (status, body) = http_get(m.http_port, path, Some(("ops", "adm1n-Pa55")));
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.contains("adm1n-Pa55"), "{path} shows the password");
    }
    let mut stream = TcpStream::connect(("127.0.0.1", m.http_port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut head = String::new();
    stream.read_to_string(&mut head).unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"mailetd\""),
        "{head}"
    );
    assert!(!m.log().contains("adm1n-Pa55"));
}

pub(crate) fn default_conf_in(dir: &Path, smtp_port: u16) -> PathBuf {
    let conf = dir.join("conf");
    for name in ["mailetcontainer.xml", "domainlist.xml"] {
        write_files(
            &conf,
            &[(
                name,
                std::fs::read_to_string(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("conf")
                        .join(name),
                )
                .unwrap(),
            )],
        );
    }
    write_files(
        &conf,
        &[
            ("smtpserver.xml", smtpserver_xml(smtp_port, "")),
            ("mailetd.toml", "data_dir = \"var\"\n".into()),
        ],
    );
    conf
}

#[test]
fn itip_outbox_and_lookup_metrics_follow_esn_traffic() {
    let double = EsnDouble::start();
    double.add_user("bob@linagora.local");
    double.add_user("carol@linagora.local");
    let m = twake_against(
        &double,
        &[(
            "mailetd.toml",
            "data_dir = \"var\"\n[outbox]\nretry_base_secs = 1\nretry_max_secs = 1\n".into(),
        )],
    );
    wait_for_port(m.http_port, WAIT);
    let ready = json_of(m.http_port, "/health/ready");
    let checks: Vec<_> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["ok"] == true))
        .collect();
    assert_eq!(
        checks,
        [
            ("spool".to_string(), true),
            ("outbox".to_string(), true),
            ("openpaas".to_string(), true),
            ("dav".to_string(), true)
        ],
        "{ready}"
    );
    send_file(
        m.smtp_port,
        "alice@partner.example",
        &["bob@linagora.local"],
        fixture("esn/request.eml"),
    );
    eventually("the REQUEST delivered", WAIT, || {
        double.delivered_itips().pop()
    });
    // esn down: the REPLY is retried, then delivered
    double.set_down(true);
    send_file(
        m.smtp_port,
        "dan@partner.example",
        &["carol@linagora.local"],
        fixture("esn/reply.eml"),
    );
    metric_reaches(
        m.http_port,
        "mailetd_outbox_attempts_total{kind=\"esn-itip\",method=\"REPLY\",outcome=\"retry\"}",
        1.0,
    );
    let pending = metric(&metrics(m.http_port), "mailetd_outbox_pending").unwrap();
    assert!(pending >= 1.0);
    double.set_down(false);
    metric_reaches(
        m.http_port,
        "mailetd_outbox_attempts_total{kind=\"esn-itip\",method=\"REPLY\",outcome=\"done\"}",
        1.0,
    );
    metric_reaches(m.http_port, "mailetd_outbox_pending", 0.0);
    let text = metrics(m.http_port);
    assert_eq!(
        metric(
            &text,
            "mailetd_outbox_attempts_total{kind=\"esn-itip\",method=\"REQUEST\",outcome=\"done\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let hits = metric(&text, "mailetd_user_lookup_cache_hits_total").unwrap();
    let misses = metric(&text, "mailetd_user_lookup_cache_misses_total").unwrap();
    assert!(misses >= 2.0, "bob and carol were looked up: {text}");
    assert_eq!(
        metric(&text, "mailetd_user_lookup_duration_seconds_count"),
        Some(misses)
    );
    let ratio = metric(&text, "mailetd_user_lookup_cache_hit_ratio").unwrap();
    assert!((ratio - hits / (hits + misses)).abs() < 1e-9);
    assert_eq!(metric(&text, "mailetd_outbox_dead_letters"), Some(0.0));

    // bob writes to a new correspondent: one contact collected; the second mail to the
    // same correspondent is answered by the known-contacts cache
    let note = m.dir.path().join("note.eml");
    std::fs::write(
        &note,
        "From: bob@linagora.local\r\nTo: Zoe <zoe@partner.example>\r\nSubject: hi\r\n\r\nhello\r\n",
    )
    .unwrap();
    send_file(
        m.smtp_port,
        "bob@linagora.local",
        &["zoe@partner.example"],
        &note,
    );
    metric_reaches(m.http_port, "mailetd_contacts_collected_total", 1.0);
    let misses = metric(&metrics(m.http_port), "mailetd_contact_cache_misses_total").unwrap();
    assert!(misses >= 1.0);
    send_file(
        m.smtp_port,
        "bob@linagora.local",
        &["zoe@partner.example"],
        &note,
    );
    metric_reaches(m.http_port, "mailetd_contact_cache_hits_total", 1.0);
    metric_reaches(
        m.http_port,
        "mailetd_mails_processed_total{outcome=\"done\"}",
        4.0,
    );
    let text = metrics(m.http_port);
    assert_eq!(
        metric(&text, "mailetd_contacts_collected_total"),
        Some(1.0),
        "{text}"
    );
    // two contact jobs finished: bob's, and dan's (an owner unknown to OpenPaaS: done
    // without writing, so not counted as collected)
    assert_eq!(
        metric(
            &text,
            "mailetd_outbox_attempts_total{kind=\"esn-contact\",method=\"-\",outcome=\"done\"}"
        ),
        Some(2.0),
        "{text}"
    );
}

#[test]
fn readiness_reports_a_stuck_outbox_and_an_unresponsive_dav() {
    // esn-sabre takes requests and never answers: the single outbox worker hangs on the
    // first job, and the second one waits past stuck_after_secs
    let double = EsnDouble::start();
    double.set_dav_unresponsive(true);
    double.add_user("bob@linagora.local");
    double.add_user("carol@linagora.local");
    let mut env = double.env();
    env.retain(|(k, _)| *k != "DAV_RESPONSE_TIMEOUT");
    env.push(("DAV_RESPONSE_TIMEOUT", "60s".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let m = Mailetd::start_with(
        free_port(),
        &[
            ("mailetcontainer.xml", example_file("mailetcontainer.xml")),
            ("openpaas.properties", example_file("openpaas.properties")),
            (
                "mailetd.toml",
                "data_dir = \"var\"\n[outbox]\nworkers = 1\n[http]\nstuck_after_secs = 1\n".into(),
            ),
        ],
        &env,
    );
    wait_for_port(m.http_port, WAIT);
    send_file(
        m.smtp_port,
        "alice@partner.example",
        &["bob@linagora.local", "carol@linagora.local"],
        fixture("esn/request.eml"),
    );
    let ready = eventually("the outbox reported stuck", WAIT, || {
        let (status, body) = http_get(m.http_port, "/health/ready", None);
        let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
        let outbox = ready["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "outbox")
            .unwrap()
            .clone();
        (outbox["ok"] == false).then_some((status, ready))
    });
    assert_eq!(ready.0, 503);
    let checks = ready.1["checks"].as_array().unwrap();
    let by_name = |name: &str| checks.iter().find(|c| c["name"] == name).unwrap().clone();
    assert!(
        by_name("outbox")["detail"]
            .as_str()
            .unwrap()
            .contains("stuck (limit 1 s): 2 pending"),
        "{}",
        ready.1
    );
    assert_eq!(by_name("spool")["ok"], true);
    assert_eq!(by_name("openpaas")["ok"], true, "{}", ready.1);
    assert_eq!(by_name("dav")["ok"], false, "{}", ready.1);
    assert!(
        by_name("dav")["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{}",
        ready.1
    );
    let text = metrics(m.http_port);
    assert_eq!(metric(&text, "mailetd_outbox_pending"), Some(2.0), "{text}");
}

pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}
