//! The security checks of issue 8 against the real `mailetd serve`: the admin endpoint's
//! exposure, authorized addresses, connection floods and slowloris (raw TCP), never relaying
//! (Postfix's smtp-sink as the would-be relay target), secrets kept out of every output,
//! TLS verification towards OpenPaaS/esn-sabre, running unprivileged.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;

use crate::support::esn_double::{DAV_ADMIN, EsnDouble, OPENPAAS_ADMIN};
use crate::support::mailetd::{Mailetd, smtpserver_xml, spawn_logged};
use crate::support::smtp::send_file;
use crate::support::{eventually, free_port, wait_for_port, write_files};

use crate::ops::{
    WAIT, default_conf_in, example_file, fixture, http_get, json_of, metric, metric_reaches,
    metrics, send_n, twake_against, walk,
};

/// Runs `mailetd serve` on `conf` expecting it to refuse to start; returns its stderr.
fn serve_refused(conf: &Path, env: &[(&str, &str)], smtp_port: u16) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailetd"))
        .arg("--conf")
        .arg(conf)
        .arg("serve")
        .current_dir(conf.parent().unwrap())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = eventually("mailetd exits", WAIT, || child.try_wait().unwrap());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "mailetd started: {stderr}");
    assert!(
        TcpStream::connect(("127.0.0.1", smtp_port)).is_err(),
        "SMTP was served"
    );
    stderr
}

#[test]
fn admin_endpoint_on_a_non_loopback_address_without_auth_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let conf = default_conf_in(dir.path(), smtp_port);
    // refused before anything binds: nothing listens on a non-loopback address
    let bind = format!("0.0.0.0:{}", free_port());
    let stderr = serve_refused(&conf, &[("MAILETD_HTTP__BIND", &bind)], smtp_port);
    assert!(
        stderr.contains(&format!(
            "[http] bind = \"{bind}\" is not a loopback address"
        )) && stderr.contains("username and password"),
        "{stderr}"
    );
    // half the credentials is refused too, naming the settings
    let stderr = serve_refused(
        &conf,
        &[
            ("MAILETD_HTTP__USERNAME", "ops"),
            ("MAILETD_HTTP__BIND", &bind),
        ],
        smtp_port,
    );
    assert!(stderr.contains("both username and password"), "{stderr}");
}

#[test]
fn clients_outside_authorized_addresses_get_554_and_nothing_is_spooled() {
    let port = free_port();
    let xml = smtpserver_xml(port, "").replace("127.0.0.0/8", "192.0.2.0/24, 10.0.0.0/8");
    let m = Mailetd::start_with(port, &[("smtpserver.xml", xml)], &[]);
    wait_for_port(m.http_port, WAIT);
    let refused = "mailetd_smtp_connections_refused_total{reason=\"unauthorized\"}";
    // the harness's own wait for the SMTP port was one refused connection
    metric_reaches(m.http_port, refused, 1.0);
    let before = 1.0;
    for _ in 0..3 {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut greeting = String::new();
        BufReader::new(&stream).read_line(&mut greeting).unwrap();
        assert!(
            greeting.starts_with("554 5.7.1") && greeting.contains("127.0.0.1"),
            "{greeting}"
        );
        // and the connection is closed: no command gets through
        let mut rest = Vec::new();
        let _ = (&stream).write_all(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\n");
        let _ = (&stream).read_to_end(&mut rest);
        assert!(!String::from_utf8_lossy(&rest).contains("250"), "{rest:?}");
    }
    let text = metrics(m.http_port);
    assert_eq!(metric(&text, refused), Some(before + 3.0), "{text}");
    assert_eq!(
        metric(&text, "mailetd_smtp_mails_accepted_total"),
        Some(0.0)
    );
    assert_eq!(metric(&text, "mailetd_smtp_connections_current"), Some(0.0));
}

/// Opens 200 connections from 127.0.0.1 and holds them; `limits` allow `allowed` sessions,
/// the others must be turned away with 421 naming `reason`.
fn flood(limits: &str, reason: &str, allowed: usize) {
    let port = free_port();
    let m = Mailetd::start_with(
        port,
        &[("smtpserver.xml", smtpserver_xml(port, limits))],
        &[],
    );
    wait_for_port(m.http_port, WAIT);
    // the harness's wait for the SMTP port is over before the flood starts
    metric_reaches(m.http_port, "mailetd_smtp_connections_current", 0.0);
    let refused = format!("mailetd_smtp_connections_refused_total{{reason=\"{reason}\"}}");
    let before = metric(&metrics(m.http_port), &refused).unwrap_or(0.0);
    // all 200 opened before any is read, and held open
    let streams: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut served = Vec::new();
    let mut turned_away = 0;
    for stream in streams {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut greeting = String::new();
        BufReader::new(&stream).read_line(&mut greeting).unwrap();
        if greeting.starts_with("220 ") {
            served.push(stream);
        } else {
            assert!(
                greeting.starts_with("421 4.7.0") && greeting.contains(reason),
                "{greeting}"
            );
            turned_away += 1;
        }
    }
    assert_eq!((served.len(), turned_away), (allowed, 200 - allowed));
    let text = metrics(m.http_port);
    assert_eq!(
        metric(&text, &refused),
        Some(before + (200 - allowed) as f64),
        "{text}"
    );
    assert_eq!(
        metric(&text, "mailetd_smtp_connections_current"),
        Some(allowed as f64)
    );
    // the served sessions work, and once they are gone a new client is served again
    let mut first = BufReader::new(served[0].try_clone().unwrap());
    served[0].write_all(b"NOOP\r\n").unwrap();
    let mut line = String::new();
    first.read_line(&mut line).unwrap();
    assert!(line.starts_with("250"), "{line}");
    drop(first);
    drop(served);
    metric_reaches(m.http_port, "mailetd_smtp_connections_current", 0.0);
    assert_eq!(send_n(port, 1, 10, "bob@example.org"), "250");
}

#[test]
fn per_ip_connection_limit_holds_under_a_flood_of_200() {
    flood(
        "<connectionLimit>100</connectionLimit><connectionLimitPerIP>10</connectionLimitPerIP>",
        "connectionLimitPerIP",
        10,
    );
}

#[test]
fn connection_limit_holds_under_a_flood_of_200() {
    flood("<connectionLimit>7</connectionLimit>", "connectionLimit", 7);
}

#[test]
fn slowloris_client_is_dropped_at_the_timeout() {
    let port = free_port();
    let m = Mailetd::start_with(
        port,
        &[(
            "smtpserver.xml",
            smtpserver_xml(port, "<connectiontimeout>2</connectiontimeout>"),
        )],
        &[],
    );
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    // one byte every 200 ms, never a full line: each read is quick, the line never ends
    let trickle = std::thread::spawn(move || {
        let mut sent = 0usize;
        for byte in b"EHLO slow.example".iter().cycle() {
            if writer.write_all(&[*byte]).is_err() {
                break;
            }
            sent += 1;
            if sent > 600 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        sent
    });
    let mut all = String::new();
    let read = (&stream).read_to_string(&mut all);
    assert!(read.is_ok(), "the session was not closed: {read:?} {all}");
    assert!(all.starts_with("220 "), "{all}");
    assert!(all.contains("421 4.4.2"), "{all}");
    let sent = trickle.join().unwrap();
    assert!(sent < 600, "the server kept reading a line that never ends");
    drop(m);
}

/// Postfix's smtp-sink on a free port, dumping every message it receives into `dir`.
struct SmtpSink {
    port: u16,
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // smtp-sink drops privileges to -u: that user must be able to write the dumps
        let _ = Command::new("chmod").arg("777").arg(dir.path()).status();
        let child = Command::new("smtp-sink")
            .args(["-u", "nobody", "-d"])
            .arg(format!("{}/%M.", dir.path().display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("10")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink (postfix) runs");
        wait_for_port(port, WAIT);
        SmtpSink { port, dir, child }
    }

    fn received(&self) -> usize {
        walk(self.dir.path()).len()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn mailetd_never_relays_nor_sends_mail() {
    let sink = SmtpSink::start();
    // the sink does record what it receives (this test can fail)
    let probe = SmtpSink::start();
    assert_eq!(send_n(probe.port, 1, 10, "x@remote.example"), "250");
    eventually("the probe sink keeps the mail", WAIT, || {
        (probe.received() == 1).then_some(())
    });
    drop(probe);

    // a James transport that would deliver remotely through the sink is not loadable
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let conf = default_conf_in(dir.path(), smtp_port);
    let relay = format!(
        r#"<mailetcontainer><context><postmaster>postmaster</postmaster></context>
<spooler><threads>1</threads><errorRepository>file://mail/error/</errorRepository></spooler>
<processors><processor state="root"><mailet match="All" class="RemoteDelivery">
<gateway>127.0.0.1</gateway><gatewayPort>{}</gatewayPort></mailet></processor>
<processor state="error"><mailet match="All" class="Null"/></processor></processors></mailetcontainer>"#,
        sink.port
    );
    write_files(&conf, &[("mailetcontainer.xml", relay)]);
    let stderr = serve_refused(&conf, &[("MAILETD_HTTP__BIND", "")], smtp_port);
    assert!(stderr.contains("RemoteDelivery"), "{stderr}");
    // nor any other James mailet that sends mail
    for sender in [
        "RemoteDelivery",
        "org.apache.james.transport.mailets.RemoteDelivery",
        "Bounce",
        "DSNBounce",
        "Forward",
        "Redirect",
        "Resend",
        "NotifySender",
        "NotifyPostmaster",
        "ToSenderDomainRepository",
        "LocalDelivery",
    ] {
        let xml = format!(
            r#"<mailetcontainer><processors><processor state="root"><mailet match="All" class="{sender}"><forwardto>x@remote.example</forwardto></mailet></processor>
<processor state="error"><mailet match="All" class="Null"/></processor></processors></mailetcontainer>"#
        );
        write_files(&conf, &[("mailetcontainer.xml", xml)]);
        let out = Command::new(env!("CARGO_BIN_EXE_mailetd"))
            .arg("--conf")
            .arg(&conf)
            .arg("check")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && (stderr.contains("is not part of a collector")
                    || stderr.contains("unknown mailet class")),
            "{sender}: {stderr}"
        );
    }

    // the default conf and the Twake example take mail to remote recipients and send none
    let m = Mailetd::start(&[]);
    let rcpts = ["someone@remote.example", "bob@example.org", "x@gmail.com"];
    send_file(
        m.smtp_port,
        "organizer@remote.example",
        &rcpts,
        fixture("google-request.eml"),
    );
    send_n(m.smtp_port, 5, 100, "far@remote.example");
    metric_reaches(
        m.http_port,
        "mailetd_mails_processed_total{outcome=\"done\"}",
        6.0,
    );
    let double = EsnDouble::start();
    double.add_user("bob@linagora.local");
    let twake = twake_against(&double, &[]);
    send_file(
        twake.smtp_port,
        "alice@remote.example",
        &["bob@linagora.local", "carol@remote.example"],
        fixture("esn/request.eml"),
    );
    eventually("the invitation reaches esn", WAIT, || {
        double.delivered_itips().pop()
    });
    assert_eq!(sink.received(), 0, "mailetd sent mail");
    // nothing but DAV traffic left the process: every request the double saw is DAV/API
    assert!(
        double
            .requests()
            .iter()
            .all(|r| ["GET", "ITIP", "PROPFIND", "PUT"].contains(&r.method.as_str())),
        "{:?}",
        double
            .requests()
            .iter()
            .map(|r| &r.method)
            .collect::<Vec<_>>()
    );
}

#[test]
fn secrets_never_show_in_logs_check_output_status_or_errors() {
    let double = EsnDouble::start();
    double.add_user("bob@linagora.local");
    double.add_user("carol@linagora.local");
    let env = double.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // everything at debug, dependencies included
    env.push(("MAILETD_LOG", "debug"));
    let http_password = "Adm1n-http-S3cret";
    let dav_password = "CardDav-S3cret-pw";
    let toml = format!(
        "data_dir = \"var\"\n[outbox]\nretry_base_secs = 1\nretry_max_secs = 1\n[http]\nusername = \"ops\"\npassword = \"{http_password}\"\n[dav]\npassword = \"{dav_password}\"\nusername = \"svc\"\n"
    );
    let m = Mailetd::start_with(
        free_port(),
        &[
            ("mailetcontainer.xml", example_file("mailetcontainer.xml")),
            ("openpaas.properties", example_file("openpaas.properties")),
            ("mailetd.toml", toml),
        ],
        &env,
    );
    wait_for_port(m.http_port, WAIT);
    // a failure first (503, retried), then successes, an unknown user and a broken ICS
    double.fail_next(2);
    send_file(
        m.smtp_port,
        "alice@partner.example",
        &[
            "bob@linagora.local",
            "carol@linagora.local",
            "nobody@linagora.local",
        ],
        fixture("esn/request.eml"),
    );
    send_file(
        m.smtp_port,
        "alice@partner.example",
        &["bob@linagora.local"],
        fixture("esn/broken.eml"),
    );
    eventually("both invitations delivered", WAIT, || {
        (double.delivered_itips().len() == 2).then_some(())
    });
    let auth = Some(("ops", http_password));
    let mut captured = String::new();
    for path in ["/api/status", "/metrics", "/health/ready"] {
        let (_, body) = http_get(m.http_port, path, auth);
        captured.push_str(&body);
    }
    let (_, unauthorized) = http_get(m.http_port, "/api/status", Some(("ops", "nope")));
    captured.push_str(&unauthorized);
    let check = Command::new(env!("CARGO_BIN_EXE_mailetd"))
        .arg("--conf")
        .arg(m.conf_dir())
        .arg("check")
        .current_dir(m.dir.path())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(check.status.success());
    captured.push_str(&String::from_utf8_lossy(&check.stdout));
    captured.push_str(&String::from_utf8_lossy(&check.stderr));
    // a configuration error next to the secrets names the key, not the values
    let broken = tempfile::tempdir().unwrap();
    let conf = default_conf_in(broken.path(), free_port());
    write_files(
        &conf,
        &[(
            "openpaas.properties",
            format!(
                "openpaas.api.uri={}\nopenpaas.admin.user=admin\nopenpaas.admin.password={}\ndav.api.uri={}\ndav.admin.user=admin\ndav.admin.password={}\ndav.rest.client.response.timeout=soon\n",
                double.api_uri(),
                OPENPAAS_ADMIN.1,
                double.dav_uri(),
                DAV_ADMIN.1
            ),
        )],
    );
    for command in ["check", "serve"] {
        let out = Command::new(env!("CARGO_BIN_EXE_mailetd"))
            .arg("--conf")
            .arg(&conf)
            .arg(command)
            .env("MAILETD_HTTP__BIND", "")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{command} accepted a bad timeout");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("dav.rest.client.response.timeout"),
            "{stderr}"
        );
        captured.push_str(&stderr);
    }
    let log = m.log();
    assert!(
        log.contains("transient failure"),
        "the 503s were logged: {log}"
    );
    captured.push_str(&log);

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut secrets = vec![
        OPENPAAS_ADMIN.1.to_string(),
        DAV_ADMIN.1.to_string(),
        http_password.to_string(),
        dav_password.to_string(),
        b64(&format!("{}:{}", OPENPAAS_ADMIN.0, OPENPAAS_ADMIN.1)),
        b64(&format!("ops:{http_password}")),
    ];
    for user in ["bob@linagora.local", "carol@linagora.local"] {
        // the impersonation credentials and their Authorization header
        let impersonation = format!("{}&{user}:{}", DAV_ADMIN.0, DAV_ADMIN.1);
        secrets.push(b64(&impersonation));
        secrets.push(impersonation);
        secrets.push(format!("{}&{user}", DAV_ADMIN.0));
    }
    for secret in &secrets {
        assert!(
            !captured.contains(secret.as_str()),
            "{secret:?} leaked in:\n{captured}"
        );
    }
    assert!(
        !captured
            .to_ascii_lowercase()
            .contains("authorization: basic")
    );
}

/// A mailetd whose OpenPaaS and esn-sabre are the esn double over HTTPS, with
/// `*_TRUST_ALL_SSL_CERTS` set to `trust_all`.
fn twake_over_https(double: &EsnDouble, trust_all: &str) -> Mailetd {
    let mut env = double.env();
    env.retain(|(k, _)| !k.ends_with("_TRUST_ALL_SSL_CERTS"));
    env.push(("OPENPAAS_TRUST_ALL_SSL_CERTS", trust_all.into()));
    env.push(("DAV_TRUST_ALL_SSL_CERTS", trust_all.into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Mailetd::start_with(
        free_port(),
        &[
            ("mailetcontainer.xml", example_file("mailetcontainer.xml")),
            ("openpaas.properties", example_file("openpaas.properties")),
        ],
        &env,
    )
}

#[test]
fn self_signed_dav_is_refused_unless_trust_all() {
    // bob is unknown to OpenPaaS: its lookup answers `[]`
    let server = EsnDouble::start_tls();
    let m = twake_over_https(&server, "false");
    wait_for_port(m.http_port, WAIT);
    send_file(
        m.smtp_port,
        "alice@partner.example",
        &["bob@linagora.local"],
        fixture("esn/request.eml"),
    );
    eventually("mailetd tried the HTTPS endpoint", WAIT, || {
        (server.handshakes_failed() > 0).then_some(())
    });
    let (status, body) = http_get(m.http_port, "/health/ready", None);
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    let openpaas = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "openpaas")
        .expect("an openpaas check")
        .clone();
    assert_eq!(openpaas["ok"], false);
    assert!(
        openpaas["detail"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("certificate"),
        "{openpaas}"
    );
    let through: Vec<String> = server.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(through, Vec::<String>::new(), "a request got through");
    drop(m);

    let m = twake_over_https(&server, "true");
    wait_for_port(m.http_port, WAIT);
    send_file(
        m.smtp_port,
        "alice@partner.example",
        &["bob@linagora.local"],
        fixture("esn/request.eml"),
    );
    eventually("bob's lookup over HTTPS", WAIT, || {
        server.requests().into_iter().find(|r| {
            r.method == "GET"
                && r.uri.starts_with("/api/users?")
                && (r.uri.contains("bob%40linagora.local") || r.uri.contains("bob@linagora.local"))
        })
    });
    let ready = json_of(m.http_port, "/health/ready");
    assert_eq!(ready["ready"], true, "{ready}");
}

#[test]
fn runs_as_nobody_writing_only_in_its_data_dir() {
    if !nix_is_root() {
        eprintln!(
            "SKIPPED runs_as_nobody_writing_only_in_its_data_dir: needs root to switch to uid 65534"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let http_port = free_port();
    let conf = default_conf_in(dir.path(), smtp_port);
    // the temp dir and the conf stay root's (readable, not writable); only var/ is nobody's
    let data = dir.path().join("var");
    std::fs::create_dir_all(&data).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(chown.success());
    let chmod = Command::new("chmod")
        .args(["-R", "go+rX"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(chmod.success());
    let before_conf = snapshot(&conf);
    let log_path = dir.path().join("mailetd.log");
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_mailetd"))
        .arg("--conf")
        .arg(&conf)
        .arg("serve")
        .current_dir(dir.path())
        .env("MAILETD_HTTP__BIND", format!("127.0.0.1:{http_port}"))
        .env("MAILETD_LOG", "info,mailetd=debug");
    let child = spawn_logged(command, &log_path);
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let guard = Kill(child);
    wait_for_port(smtp_port, WAIT);
    wait_for_port(http_port, WAIT);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
    send_file(
        smtp_port,
        "organizer@remote.example",
        &["bob@example.org"],
        fixture("google-request.eml"),
    );
    send_n(smtp_port, 3, 100, "bob@example.org");
    metric_reaches(
        http_port,
        "mailetd_mails_processed_total{outcome=\"done\"}",
        4.0,
    );
    // the invitation was kept (default conf without DAV) by the unprivileged process
    let collected = walk(&data.join("mail/collected"));
    assert!(
        !collected.is_empty(),
        "{}",
        std::fs::read_to_string(&log_path).unwrap()
    );
    let ready = json_of(http_port, "/health/ready");
    assert_eq!(ready["ready"], true, "{ready}");
    drop(guard);
    // every file it made is under var/ and belongs to nobody; the conf is untouched
    for file in walk(&data) {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&file).unwrap().uid(), 65534, "{file:?}");
    }
    assert_eq!(snapshot(&conf), before_conf);
    let top: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut top = top;
    top.sort();
    assert_eq!(top, ["conf", "mailetd.log", "var"]);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("Permission denied"), "{log}");
}

fn nix_is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// (path, size, modified) of every file under `dir`.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut files: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).unwrap();
            (p, meta.len(), meta.modified().unwrap())
        })
        .collect();
    files.sort();
    files
}
