//! Issue 18, tried as an attacker or a careless operator would, against the real
//! `mailetd` binary: passwords inside configured URLs and secret-looking keys never show
//! (logs, `/api/status`, `/health/ready`, `outbox list`, the outbox file, `check`, config
//! errors), a user:password in `dav.api.uri` does not replace the esn impersonation, iTIP
//! METHOD labels stay bounded, the admin endpoint takes the `basic` scheme in any case,
//! and `replay --dry-run` calls nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use base64::Engine;

use crate::ops::{
    WAIT, default_conf_in, example_file, fixture, http_get, json_of, metrics, send_file,
    twake_against,
};
use crate::support::esn_double::{DAV_ADMIN, EsnDouble, OPENPAAS_ADMIN};
use crate::support::mailetd::Mailetd;
use crate::support::{eventually, free_port, wait_for_port, write_files};

const API_PASSWORD: &str = "Api,Pw-7x";
const DAV_PASSWORD: &str = "Dav,Pw-9y";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `openpaas.properties` for `double`, with a user and password inside both URLs (commas in
/// the passwords) next to the admin keys, and extra keys that only look secret by name.
fn properties_with_url_passwords(double: &EsnDouble, url_user: &str) -> String {
    let with_userinfo = |url: String, password: &str| {
        url.replacen("http://", &format!("http://{url_user}:{password}@"), 1)
    };
    format!(
        "openpaas.api.uri={}\nopenpaas.admin.user={}\nopenpaas.admin.password={}\nopenpaas.rest.client.response.timeout=5s\n\
         dav.api.uri={}\ndav.admin.user={}\ndav.admin.password={}\ndav.rest.client.response.timeout=5s\n\
         jwt.privatekey=Jwt-Private-K3y\nsmtp.relay.pass=Smtp-Pa55\nwebhook.token=T0ken-v4lue\n",
        with_userinfo(double.api_uri(), API_PASSWORD),
        OPENPAAS_ADMIN.0,
        OPENPAAS_ADMIN.1,
        with_userinfo(double.dav_uri(), DAV_PASSWORD),
        DAV_ADMIN.0,
        DAV_ADMIN.1
    )
}

fn run_mailetd(conf: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mailetd"))
        .arg("--conf")
        .arg(conf)
        .args(args)
        .current_dir(conf.parent().unwrap())
        .env("MAILETD_HTTP__BIND", "")
        .output()
        .unwrap()
}

fn all_output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn url_passwords_and_secret_keys_never_show_in_logs_status_outbox_or_check() {
    let double = EsnDouble::start();
    double.add_user("bob@linagora.local");
    // esn down the whole time: the job is retried and keeps its last error
    double.set_down(true);
    let m = Mailetd::start_with(
        free_port(),
        &[
            ("mailetcontainer.xml", example_file("mailetcontainer.xml")),
            (
                "openpaas.properties",
                properties_with_url_passwords(&double, "leak-user"),
            ),
            (
                "mailetd.toml",
                "data_dir = \"var\"\n[outbox]\nretry_base_secs = 1\nretry_max_secs = 1\n".into(),
            ),
        ],
        &[("MAILETD_LOG", "debug")],
    );
    wait_for_port(m.http_port, WAIT);
    send_file(
        m.smtp_port,
        "alice@partner.example",
        &["bob@linagora.local"],
        fixture("esn/request.eml"),
    );
    eventually("two retries logged", WAIT, || {
        (m.log().matches("transient failure, will retry").count() >= 2).then_some(())
    });
    let mut captured = String::new();
    let status = json_of(m.http_port, "/api/status");
    assert!(
        status["config"]["openpaas"]["api_uri"].is_string(),
        "{status}"
    );
    captured.push_str(&status.to_string());
    for path in ["/health/ready", "/metrics"] {
        captured.push_str(&http_get(m.http_port, path, None).1);
    }
    let check = run_mailetd(&m.conf_dir(), &["check"]);
    assert!(check.status.success(), "{}", all_output(&check));
    let check = all_output(&check);
    captured.push_str(&check);

    let mut m = m;
    m.terminate();
    let listing = run_mailetd(&m.conf_dir(), &["outbox", "list"]);
    let listing = all_output(&listing);
    assert!(!listing.contains("pending: 0"), "{listing}");
    assert!(
        listing.contains("503"),
        "the last error is listed: {listing}"
    );
    captured.push_str(&listing);
    let store = std::fs::read(m.data_dir().join("spool.redb")).unwrap();
    captured.push_str(&String::from_utf8_lossy(&store));
    captured.push_str(&m.log());

    // configuration errors quote the URL, not its password
    let broken = tempfile::tempdir().unwrap();
    let conf = default_conf_in(broken.path(), free_port());
    for bad in [
        format!("ftp://leak-user:{DAV_PASSWORD}@127.0.0.1/"),
        format!("http://leak-user:{DAV_PASSWORD}@127.0.0.1:99999/"),
    ] {
        write_files(
            &conf,
            &[(
                "openpaas.properties",
                format!(
                    "openpaas.api.uri=http://127.0.0.1:1/api\nopenpaas.admin.user=a\nopenpaas.admin.password=b\ndav.api.uri={bad}\ndav.admin.user=a\ndav.admin.password=b\n"
                ),
            )],
        );
        let out = run_mailetd(&conf, &["check"]);
        assert!(!out.status.success(), "check accepted {bad}");
        let text = all_output(&out);
        assert!(text.contains("dav.api.uri"), "{text}");
        captured.push_str(&text);
    }

    for secret in [
        API_PASSWORD,
        DAV_PASSWORD,
        // what a split on the comma leaves
        "Pw-7x",
        "Pw-9y",
        "leak-user:Api",
        "leak-user:Dav",
        "Jwt-Private-K3y",
        "Smtp-Pa55",
        "T0ken-v4lue",
        &b64(&format!("leak-user:{API_PASSWORD}")),
        &b64(&format!("leak-user:{DAV_PASSWORD}")),
    ] {
        assert!(
            !captured.contains(secret),
            "{secret:?} leaked in:\n{captured}"
        );
    }
    for hidden in [
        "jwt.privatekey = (hidden)",
        "smtp.relay.pass = (hidden)",
        "webhook.token = (hidden)",
    ] {
        assert!(check.contains(hidden), "{hidden} in:\n{check}");
    }
}

#[test]
fn a_password_in_dav_api_uri_does_not_replace_the_esn_impersonation() {
    let double = EsnDouble::start();
    double.add_user("bob@linagora.local");
    let m = Mailetd::start_with(
        free_port(),
        &[
            ("mailetcontainer.xml", example_file("mailetcontainer.xml")),
            (
                "openpaas.properties",
                properties_with_url_passwords(&double, "intruder"),
            ),
        ],
        &[],
    );
    send_file(
        m.smtp_port,
        "alice@partner.example",
        &["bob@linagora.local"],
        fixture("esn/request.eml"),
    );
    let itip = eventually("the invitation delivered", WAIT, || {
        double.delivered_itips().pop()
    });
    let basic =
        |user: &str, password: &str| format!("Basic {}", b64(&format!("{user}:{password}")));
    let impersonation = basic(&format!("{}&bob@linagora.local", DAV_ADMIN.0), DAV_ADMIN.1);
    let authorizations = |r: &crate::support::esn_double::Recorded| -> Vec<String> {
        r.headers
            .iter()
            .filter(|(n, _)| n == "authorization")
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(authorizations(&itip), [impersonation]);
    let lookup = double
        .requests_with("GET")
        .into_iter()
        .find(|r| r.uri.starts_with("/api/users"))
        .expect("a user lookup");
    assert_eq!(
        authorizations(&lookup),
        [basic(OPENPAAS_ADMIN.0, OPENPAAS_ADMIN.1)]
    );
    assert!(
        m.log()
            .contains("dav.api.uri holds a user and password: ignored"),
        "{}",
        m.log()
    );
}

/// An invitation from alice to bob whose METHOD is `method`.
fn invitation(method: &str, n: usize) -> String {
    format!(
        "From: alice@partner.example\r\nTo: bob@linagora.local\r\nSubject: m{n}\r\nMessage-ID: <method-{n}@partner.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\ninvitation\r\n\
         --b\r\nContent-Type: text/calendar; charset=UTF-8; method={method}\r\n\r\n\
         BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hostile//EN\r\nMETHOD:{method}\r\nBEGIN:VEVENT\r\n\
         UID:method-{n}@partner.example\r\nDTSTAMP:20261120T101500Z\r\nDTSTART:20261201T090000Z\r\nDTEND:20261201T100000Z\r\n\
         ORGANIZER:mailto:alice@partner.example\r\nATTENDEE:mailto:bob@linagora.local\r\nSUMMARY:m{n}\r\n\
         END:VEVENT\r\nEND:VCALENDAR\r\n--b--\r\n"
    )
}

#[test]
fn itip_methods_from_mail_content_are_bounded_metric_labels() {
    let double = EsnDouble::start();
    double.add_user("bob@linagora.local");
    let m = twake_against(&double, &[]);
    wait_for_port(m.http_port, WAIT);
    let dir = tempfile::tempdir().unwrap();
    let methods: Vec<String> = (0..40).map(|i| format!("XRANDOM{i:04}Q")).collect();
    for (n, method) in methods.iter().chain([&"request".to_string()]).enumerate() {
        let path = dir.path().join(format!("{n}.eml"));
        std::fs::write(&path, invitation(method, n)).unwrap();
        send_file(
            m.smtp_port,
            "alice@partner.example",
            &["bob@linagora.local"],
            &path,
        );
    }
    let attempts = |text: &str, method: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("mailetd_outbox_attempts_total{")
                    && l.contains(&format!("method=\"{method}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let text = eventually("every job attempted", WAIT, || {
        let text = metrics(m.http_port);
        (attempts(&text, "other") >= 40.0 && attempts(&text, "REQUEST") >= 1.0).then_some(text)
    });
    assert!(!text.contains("XRANDOM"), "{text}");
}

#[test]
fn the_admin_endpoint_takes_the_basic_scheme_in_any_case() {
    let m = Mailetd::start(&[(
        "mailetd.toml",
        "data_dir = \"var\"\n[http]\nusername = \"ops\"\npassword = \"adm1n-Pa55\"\n".into(),
    )]);
    wait_for_port(m.http_port, WAIT);
    let token = b64("ops:adm1n-Pa55");
    for (scheme, expected) in [
        ("Basic", 200),
        ("basic", 200),
        ("BASIC", 200),
        ("Bearer", 401),
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", m.http_port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: {scheme} {token}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with(&format!("HTTP/1.1 {expected}")),
            "{scheme}: {response}"
        );
    }
}

#[test]
fn replay_dry_run_makes_no_network_call() {
    let double = EsnDouble::start();
    double.add_user("bob@linagora.local");
    double.add_user("alice@linagora.local");
    let dir = tempfile::tempdir().unwrap();
    let conf = default_conf_in(dir.path(), free_port());
    write_files(
        &conf,
        &[
            ("mailetcontainer.xml", example_file("mailetcontainer.xml")),
            ("openpaas.properties", double.properties()),
        ],
    );
    let mail = dir.path().join("invitation.eml");
    std::fs::write(&mail, invitation("REQUEST", 1)).unwrap();
    // alice is a user: CardDavCollectedContact would look her up to collect bob
    let out = run_mailetd(
        &conf,
        &[
            "replay",
            "--dry-run",
            "--from",
            "alice@linagora.local",
            "--to",
            "bob@linagora.local",
            &mail.display().to_string(),
        ],
    );
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("CardDavCollectedContact"), "{text}");
    assert!(text.contains("CalDavCollect"), "{text}");
    let seen: Vec<String> = double
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    assert!(seen.is_empty(), "a dry run called out: {seen:?}\n{text}");
}
