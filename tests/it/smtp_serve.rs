//! SMTP ingest through the `mailetd serve` binary: STARTTLS with swaks, SIGTERM and
//! kill -9 under load (smtp-source, a Python load generator), restarts.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::support::mailetd::Mailetd;
use crate::support::{eventually, free_port, smtp};

use crate::support::smtp_listener::*;

fn consumed(m: &Mailetd) -> usize {
    m.log().matches("mail processed").count()
}

#[test]
fn serve_starttls_with_swaks_and_a_generated_certificate() {
    let port = free_port();
    let tls = "<tls startTLS=\"true\"><privateKey>file://conf/private.key</privateKey><certificates>file://conf/cert.pem</certificates></tls>";
    let m = Mailetd::start_with(
        port,
        &[("smtpserver.xml", server_xml(port, tls))],
        &[("MAILETD_GENERATE_CERTIFICATE", "true")],
    );
    // generated in data_dir (conf/ may be read-only), as docs/operations.md says
    let generated = m.data_dir().join("tls/cert.pem");
    assert!(generated.exists() && m.data_dir().join("tls/private.key").exists());
    assert!(!m.conf_dir().join("cert.pem").exists() && !m.conf_dir().join("private.key").exists());
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--tls"])
        .args(["--from", "alice@example.org", "--to", "bob@example.org"])
        .args(["--helo", "swaks.test", "--header", "Subject: over tls"])
        .output()
        .expect("swaks runs");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(
        transcript.contains("<~  250 2.6.0 Message received"),
        "{transcript}"
    );
    eventually("the mail is consumed", Duration::from_secs(20), || {
        (consumed(&m) == 1).then_some(())
    });
    assert!(
        m.log().contains("from=alice@example.org rcpts=1"),
        "{}",
        m.log()
    );
    // a restart reuses the generated pair
    let certificate = std::fs::read(&generated).unwrap();
    let mut m = m;
    m.terminate();
    m.spawn();
    assert_eq!(std::fs::read(&generated).unwrap(), certificate);
}

/// Sends one small mail with smtplib and checks every recipient was accepted.
fn send_subject(port: u16, subject: &str) {
    smtp::send(
        port,
        "a@x.test",
        &["b@y.test"],
        format!("Subject: {subject}\r\n\r\nx\r\n"),
    );
}

#[test]
fn serve_on_sigterm_exits_zero_and_a_restart_runs_nothing_twice() {
    let mut m = Mailetd::start(&[]);
    send_subject(m.smtp_port, "t");
    eventually("consumed", Duration::from_secs(20), || {
        (consumed(&m) == 1).then_some(())
    });
    let status = m.terminate();
    assert!(status.success(), "{status:?}\n{}", m.log());
    assert!(m.log().contains("stopped"));
    // the processed mail's release was made durable on the way out: a restart finds an
    // empty spool and does not run it again
    m.spawn();
    send_subject(m.smtp_port, "second");
    eventually("the second mail consumed", Duration::from_secs(20), || {
        (consumed(&m) >= 2).then_some(())
    });
    assert_eq!(consumed(&m), 2, "{}", m.log());
    assert!(!m.log().contains("recovered mails"), "{}", m.log());
}

#[test]
fn serve_smtp_source_20_sessions_2000_mails_all_spooled() {
    let m = Mailetd::start(&[]);
    let out = Command::new("/usr/sbin/smtp-source")
        .args(["-s", "20", "-m", "2000", "-l", "4096"])
        .args(["-f", "load@source.test", "-t", "sink@collector.test"])
        .arg(format!("127.0.0.1:{}", m.smtp_port))
        .output()
        .expect("smtp-source runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = eventually("2000 mails consumed", Duration::from_secs(120), || {
        let n = consumed(&m);
        (n >= 2000).then_some(n)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(consumed(&m), 2000, "exactly what was sent (got {n} first)");
}

#[test]
fn serve_kill_9_during_load_loses_no_acknowledged_mail() {
    let mut m = Mailetd::start(&[]);
    // 8 sessions, each sender unique; a session ends at its first failure (the kill)
    let load = smtp::load(&[m.smtp_port])
        .sessions(8)
        .timeout(10)
        .mail(
            "k{i}@load.test",
            &["r@collector.test".to_string()],
            &format!("Subject: load\r\n\r\n{}\r\n", "x".repeat(2000)),
        )
        .on_failure(smtp::OnFailure::EndSession)
        .start();
    eventually("300 acknowledged mails", Duration::from_secs(60), || {
        (load.count(250) >= 300).then_some(())
    });
    m.kill9();
    let acked: Vec<String> = load
        .wait()
        .into_iter()
        .filter(|r| r.code == 250)
        .map(|r| format!("k{}@load.test", r.mail))
        .collect();
    m.spawn();
    let missing = eventually(
        "every acked mail processed",
        Duration::from_secs(60),
        || {
            let log = m.log();
            let missing: Vec<&String> = acked
                .iter()
                .filter(|s| !log.contains(&format!("from={s} ")))
                .collect();
            missing.is_empty().then_some(missing.len())
        },
    );
    assert_eq!(missing, 0);
    assert!(acked.len() >= 300);
}

#[test]
fn serve_sigterm_lets_a_mail_in_progress_finish_and_closes_idle_sessions() {
    // three event loops: the shutdown is still announced once
    let mut m = Mailetd::start_with(free_port(), &[], &[("MAILETD_SMTP_THREADS", "3")]);
    let port = m.smtp_port;
    let mut idle = open_when_free(port);
    assert!(idle.cmd("EHLO idle.test").starts_with("250"));
    let mut busy = Raw::open(port);
    busy.send("EHLO busy.test\r\nMAIL FROM:<late@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nSubject: late\r\n\r\n");
    assert_eq!(busy.codes(4), [250, 250, 250, 354]);
    let pid = m.child.as_ref().unwrap().id();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    eventually("shutdown requested", Duration::from_secs(10), || {
        m.log().contains("shutdown requested").then_some(())
    });
    let r = idle.reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    eventually("no longer accepting", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    // the main loop announces the grace after it sees the cancel, maybe after the SMTP
    // loops have already closed their listeners
    eventually("the grace is announced", Duration::from_secs(10), || {
        m.log().contains("waiting up to").then_some(())
    });
    busy.send("the end of a mail begun before SIGTERM\r\n.\r\nQUIT\r\n");
    assert_eq!(busy.codes(2), [250, 221]);
    let status = m.child.take().unwrap().wait().unwrap();
    let log = m.log();
    assert!(status.success(), "{status:?}\n{log}");
    assert_eq!(log.matches("waiting up to").count(), 1, "{log}");
    // It got its 250 before the exit, so it comes out: consumed before the exit or after a restart.
    m.spawn();
    eventually("the late mail comes out", Duration::from_secs(20), || {
        m.log().contains("from=late@x.test ").then_some(())
    });
}
