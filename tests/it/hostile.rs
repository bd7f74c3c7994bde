//! Hostile clients (issue 18, items 3, 5 and the ingest parts of 7), against the real
//! binary with real SMTP clients (Python smtplib, raw sockets): an oversized DATA under
//! `maxmessagesize 0`, a trickled DATA, error floods, `RCPT TO:<postmaster>`, a flood of
//! refused clients, and a flood of unfinished requests on the admin port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::mailetd::{Mailetd, smtpserver_xml};
use crate::support::{eventually, free_port, smtp, wait_for_port};

const WAIT: Duration = Duration::from_secs(60);

fn processed(m: &Mailetd) -> usize {
    m.log().matches("mail processed").count()
}

/// The status code of `GET path` over a fresh connection, `None` when no answer comes.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

#[test]
fn maxmessagesize_0_is_capped_and_a_streamed_data_above_the_cap_gets_552_and_the_process_lives_on()
{
    // the harness's smtpserver.xml has no maxmessagesize: 0, unlimited for James
    let mut m = Mailetd::start(&[]);
    let log = m.log();
    assert!(
        log.contains("maxmessagesize 0 (unlimited) is above what the spool takes"),
        "{log}"
    );
    let ceiling = 64 << 20;
    // EHLO's SIZE, then a DATA above the cap streamed from a generator (nothing on disk),
    // then a small mail in the same session
    let session = smtp::session(m.smtp_port)
        .timeout(60)
        .command("MAIL FROM:<a@partner.example>")
        .command("RCPT TO:<bob@example.org>")
        .streamed_data(ceiling + (6 << 20))
        .mail(
            "a@partner.example",
            &["bob@example.org"],
            "Subject: small\r\n\r\nhi\r\n",
        )
        .run();
    let size = session.features.get("size").map_or("-", String::as_str);
    let (big, small) = (&session.replies[2], &session.replies[3]);
    assert_eq!(
        format!("SIZE {size} {} {}", big.code, small.code),
        format!("SIZE {ceiling} 552 250"),
        "{session:?}\n{}",
        m.log()
    );
    assert!(small.refused.is_empty(), "{session:?}");
    eventually("the small mail processed", WAIT, || {
        (processed(&m) == 1).then_some(())
    });
    assert!(m.child.as_mut().unwrap().try_wait().unwrap().is_none());
}

#[test]
fn a_trickled_data_is_cut_at_the_total_deadline() {
    let port = free_port();
    let m = Mailetd::start_with(
        port,
        &[(
            "smtpserver.xml",
            smtpserver_xml(port, "<connectiontimeout>5</connectiontimeout>"),
        )],
        &[("MAILETD_SMTP_DATA_TIMEOUT_SECS", "3")],
    );
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer
        .write_all(b"EHLO slow.example\r\nMAIL FROM:<a@partner.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        .unwrap();
    let started = Instant::now();
    // one byte every 500 ms: each read beats the 5 s connectiontimeout
    let trickle = std::thread::spawn(move || {
        let mut sent = 0usize;
        for byte in b"Subject: slow\r\n\r\n".iter().cycle().take(120) {
            if writer.write_all(&[*byte]).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
        sent
    });
    let mut all = String::new();
    let read = (&stream).read_to_string(&mut all);
    let elapsed = started.elapsed();
    assert!(read.is_ok(), "{read:?} {all}");
    assert!(all.contains("354 "), "{all}");
    assert!(all.contains("421 4.4.2"), "{all}");
    assert!(all.contains("took too long"), "{all}");
    assert!(
        elapsed < Duration::from_secs(20),
        "closed after {elapsed:?}, not at the 3 s deadline"
    );
    let sent = trickle.join().unwrap();
    assert!(sent < 120, "the whole trickle was read");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(processed(&m), 0);
}

/// Pipelines `commands` after EHLO and returns everything the server answered until it
/// closed the connection (or until `WAIT`).
fn converse(port: u16, commands: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    (&stream)
        .write_all(format!("EHLO flood.example\r\n{commands}").as_bytes())
        .unwrap();
    let mut all = Vec::new();
    let _ = (&stream).read_to_end(&mut all);
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn bad_sequence_errors_count_toward_the_error_disconnect() {
    let m = Mailetd::start(&[]);
    // RCPT without MAIL: 503 each time; the 50th error closes the session
    let out = converse(m.smtp_port, &"RCPT TO:<bob@example.org>\r\n".repeat(80));
    assert!(out.contains("503 5.5.1"), "{out}");
    assert!(out.contains("421 4.7.0"), "{out}");
    assert!(out.contains("Too many errors"), "{out}");
    assert_eq!(out.matches("503 5.5.1").count(), 50, "{out}");
    // a second MAIL in a transaction is a bad sequence too
    let mails = "MAIL FROM:<a@partner.example>\r\n".repeat(80);
    let out = converse(m.smtp_port, &mails);
    assert!(out.contains("Too many errors"), "{out}");
}

#[test]
fn rcpt_to_bare_postmaster_is_accepted() {
    let m = Mailetd::start(&[]);
    let session = smtp::session(m.smtp_port)
        .command("MAIL FROM:<a@partner.example>")
        .command("RCPT TO:<postmaster>")
        .command("RCPT TO:<PostMaster>")
        .command("RCPT TO:<>")
        .data("Subject: to the postmaster\r\n\r\nhi\r\n")
        .run();
    assert_eq!(session.codes()[1..], [250, 250, 501, 250], "{}", m.log());
    eventually("the mail processed", WAIT, || {
        (processed(&m) == 1).then_some(())
    });
}

#[test]
fn a_flood_of_refused_clients_is_counted_but_logged_at_a_bounded_rate() {
    let port = free_port();
    let xml = smtpserver_xml(port, "").replace("127.0.0.0/8", "192.0.2.0/24");
    let m = Mailetd::start_with(port, &[("smtpserver.xml", xml)], &[]);
    for _ in 0..200 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut greeting = String::new();
        let _ = stream.read_to_string(&mut greeting);
        assert!(greeting.starts_with("554 5.7.1"), "{greeting}");
    }
    wait_for_port(m.http_port, WAIT);
    let series = "mailetd_smtp_connections_refused_total{reason=\"unauthorized\"} ";
    let refused: f64 = eventually("the refusals counted", WAIT, || {
        let mut stream = TcpStream::connect(("127.0.0.1", m.http_port)).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let n: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(series))?
            .parse()
            .ok()?;
        (n >= 201.0).then_some(n)
    });
    // 200 and the harness's wait for the port
    assert_eq!(refused, 201.0);
    let lines = m
        .log()
        .matches("refused a client outside authorizedAddresses")
        .count();
    assert!(lines <= 3, "{lines} log lines for 201 refusals");
    assert!(lines >= 1);
}

#[test]
fn unfinished_admin_requests_do_not_starve_smtp_and_the_admin_port_recovers() {
    let mut m = Mailetd::start_with(
        free_port(),
        &[],
        &[("MAILETD_HTTP__HEADER_TIMEOUT_SECS", "3")],
    );
    // a small descriptor table, soft = hard, so raising it gives nothing
    m.restart_with_open_files(256, 256);
    wait_for_port(m.http_port, WAIT);
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(("127.0.0.1", m.http_port)).unwrap();
        // headers never finished
        let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n");
        held.push(stream);
    }
    let session = smtp::session(m.smtp_port)
        .timeout(15)
        .mail(
            "a@partner.example",
            &["bob@example.org"],
            "Subject: during\r\n\r\nhi\r\n",
        )
        .run();
    assert_eq!(session.codes(), [250], "{session:?}\n{}", m.log());
    assert!(session.replies[0].refused.is_empty(), "{session:?}");
    eventually("the mail processed", WAIT, || {
        (processed(&m) == 1).then_some(())
    });
    drop(held);
    let status = eventually("the admin port answers again", WAIT, || {
        http_status(m.http_port, "/health")
    });
    assert_eq!(status, 200);
    assert!(!m.log().contains("Too many open files"), "{}", m.log());
}

#[test]
fn serve_raises_the_open_files_limit_to_the_hard_limit() {
    let mut m = Mailetd::start(&[]);
    m.restart_with_open_files(256, 4096);
    let pid = m.child.as_ref().unwrap().id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{line}");
    assert!(m.log().contains("open files limit raised"), "{}", m.log());
}
