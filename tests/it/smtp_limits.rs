//! SMTP ingest under abuse and limits, against the in-process listener: connection limits
//! and authorized addresses, garbage, stalls and slowloris, huge recipient lists, a failing
//! spool, STARTTLS injection; raw TCP where a client library would not misbehave.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mailetd::mail::job::OutboxJob;
use mailetd::mail::{Mail, MailId};
use mailetd::spool::{EmbeddedSpool, Spool, SpoolError};

use crate::support::smtp_listener::*;

#[test]
fn connection_limits_refuse_with_421() {
    let l = Listener::start("<connectionLimit>2</connectionLimit>");
    let mut a = open_when_free(l.port);
    let _b = open_when_free(l.port);
    let mut third = Raw::connect(l.port);
    assert!(
        third.reply().starts_with("421 4.7.0"),
        "third connection refused"
    );
    assert!(third.closed());
    assert!(a.cmd("QUIT").starts_with("221"));
    drop(a);
    let mut again = open_when_free(l.port);
    assert!(again.cmd("NOOP").starts_with("250"));

    let l = Listener::start("<connectionLimitPerIP>1</connectionLimitPerIP>");
    let _one = open_when_free(l.port);
    let mut two = Raw::connect(l.port);
    let r = two.reply();
    assert!(
        r.starts_with("421 4.7.0") && r.contains("connectionLimitPerIP"),
        "{r}"
    );
}

#[test]
fn clients_outside_authorized_addresses_get_554_at_connect() {
    let l = Listener::start("<authorizedAddresses>10.0.0.0/8, 192.168.1.*</authorizedAddresses>");
    let mut c = Raw::connect(l.port);
    let r = c.reply();
    assert!(r.starts_with("554 5.7.1"), "{r}");
    assert!(r.contains("127.0.0.1"), "{r}");
    assert!(c.closed());
    assert_eq!(l.depth(), 0);
}

#[test]
fn garbage_and_nul_bytes_get_500_then_a_clean_close() {
    let l = Listener::start("");
    let mut c = Raw::open(l.port);
    assert!(c.cmd("NO\0OP").starts_with("500 5.5.1"));
    assert!(
        c.cmd("EHLO bad\u{1}name").starts_with("501"),
        "no control characters in HELO"
    );
    assert!(c.cmd("\u{1}\u{2}\u{3}garbage").starts_with("500"));
    assert!(c.cmd("NOOP").starts_with("250"), "usable after garbage");
    // A burst of binary junk lines: 500s, then 421 and a close; the server stays up.
    let mut junk = Vec::new();
    for i in 0..60u32 {
        junk.extend(
            (0..100u32).map(|j| ((i * 100 + j).wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80),
        );
        junk.extend_from_slice(b"\r\n");
    }
    let _ = c.writer.write_all(&junk);
    let mut last = String::new();
    loop {
        let r = c.reply();
        if r.is_empty() {
            break;
        }
        last = r;
    }
    assert!(last.starts_with("421 4.7.0"), "{last}");
    let mut d = Raw::open(l.port);
    assert!(d.cmd("EHLO c.test").starts_with("250"));
}

#[test]
fn a_client_stalled_inside_a_mail_does_not_hold_back_another_clients_250() {
    let l = Listener::start("");
    let mut stalled = Raw::inside_data(l.port);
    // the spool counts the stalled mail as on its way, and a sync may wait for it: briefly
    let mut other = Raw::open(l.port);
    assert!(other.cmd("EHLO o.test").starts_with("250"));
    other.send("MAIL FROM:<c@x.test>\r\nRCPT TO:<d@y.test>\r\nDATA\r\nSubject: first\r\n\r\n.\r\n");
    assert_eq!(other.codes(4), [250, 250, 354, 250]);
    stalled.send("Subject: second\r\n\r\n.\r\n");
    assert_eq!(stalled.codes(1), [250]);
    let subjects: Vec<String> = l.mails(2).iter().map(text).collect();
    assert!(subjects[0].contains("Subject: first"), "{subjects:?}");
    assert!(subjects[1].contains("Subject: second"), "{subjects:?}");
}

#[test]
fn unterminated_data_keeps_nothing() {
    let l = Listener::start("");
    let mut c = Raw::inside_data(l.port);
    c.send("Subject: cut\r\n\r\nhalf a mess");
    drop(c);
    let mut d = Raw::open(l.port);
    assert!(d.cmd("EHLO c.test").starts_with("250"));
    d.send("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nSubject: ok\r\n\r\n.\r\n");
    assert_eq!(d.codes(4), [250, 250, 354, 250]);
    let mail = &l.mails(1)[0];
    assert!(text(mail).contains("Subject: ok"));
    assert_eq!(l.depth(), 1, "the cut mail was never spooled");
}

#[test]
fn slowloris_is_closed_with_421() {
    let l = Listener::start("<connectiontimeout>2</connectiontimeout>");
    let mut c = Raw::open(l.port);
    // One byte every 300 ms never completes a line within the 2 s allowed.
    let mut writer = c.writer.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for b in b"EHLO slow.client.example".iter().cycle().take(40) {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let r = c.reply();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(c.closed());
    trickle.join().unwrap();
}

#[test]
fn a_client_still_sending_after_421_reads_the_421_then_an_orderly_close() {
    let l = Listener::start("");
    let mut c = Raw::open(l.port);
    // 60 bad commands close the session at the 50th; 256 KB more sit unread in the
    // server's socket when it closes. A bare close would answer them with a reset,
    // which drops the 421 from this client's receive buffer before it reads it.
    let mut burst = "BAD\r\n".repeat(60).into_bytes();
    burst.extend(std::iter::repeat_n(b'x', 256 * 1024));
    let writer = c.writer.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut w = writer;
        let _ = w.write_all(&burst);
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut received = Vec::new();
    let end = c.reader.read_to_end(&mut received);
    let received = String::from_utf8_lossy(&received);
    assert!(
        received.contains("421 4.7.0"),
        "the 421 was lost: {received:?}"
    );
    assert!(end.is_ok(), "closed by a reset, not a FIN: {end:?}");
    sender.join().unwrap();
}

#[test]
fn ten_thousand_recipients_are_capped_cleanly() {
    let l = Listener::start("");
    let mut c = Raw::open(l.port);
    assert!(c.cmd("EHLO c.test").starts_with("250"));
    let mut batch = String::from("MAIL FROM:<a@x.test>\r\n");
    for i in 0..10_000 {
        batch.push_str(&format!("RCPT TO:<user{i}@y.test>\r\n"));
    }
    batch.push_str("DATA\r\nSubject: many\r\n\r\nx\r\n.\r\n");
    let writer = c.writer.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut w = writer;
        w.write_all(batch.as_bytes()).unwrap();
    });
    let codes = c.codes(10_003);
    sender.join().unwrap();
    assert_eq!(codes[0], 250);
    assert!(codes[1..1001].iter().all(|&c| c == 250));
    assert!(
        codes[1001..10_001].iter().all(|&c| c == 452),
        "over the cap: 452"
    );
    assert_eq!(&codes[10_001..], [354, 250]);
    assert_eq!(l.mails(1)[0].recipients.len(), 1000);
}

/// A spool whose disk "fails" on demand: the real redb spool, with an injected error for
/// the next enqueue (a full disk cannot be produced portably in a test).
struct FailingSpool {
    inner: Arc<EmbeddedSpool>,
    fail_next: AtomicBool,
}

#[async_trait]
impl Spool for FailingSpool {
    async fn enqueue(&self, mail: Mail) -> Result<MailId, SpoolError> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(SpoolError::Journal(
                mailetd::spool::journal::JournalError::io(
                    "writing the spool journal",
                    std::io::Error::from_raw_os_error(28),
                ),
            ));
        }
        self.inner.enqueue(mail).await
    }
    async fn dequeue(&self) -> Option<Mail> {
        self.inner.dequeue().await
    }
    async fn complete(&self, id: MailId, jobs: Vec<OutboxJob>) -> Result<(), SpoolError> {
        self.inner.complete(id, jobs).await
    }
    async fn retry_at(&self, mail: &Mail, at_ms: u64) -> Result<(), SpoolError> {
        self.inner.retry_at(mail, at_ms).await
    }
    fn depth(&self) -> usize {
        self.inner.depth()
    }
    fn close(&self) {
        self.inner.close()
    }
}

#[test]
fn a_spool_failure_answers_451_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, real) = EmbeddedSpool::open_path(
        &dir.path().join("f.redb"),
        mailetd::outbox::store::OutboxSink::shared(),
    )
    .unwrap();
    let failing = Arc::new(FailingSpool {
        inner: real.clone(),
        fail_next: AtomicBool::new(true),
    });
    let l = Listener::start_with("", |_| {}, Some(failing as Arc<dyn Spool>));
    let mut c = Raw::open(l.port);
    c.send("EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nSubject: 1\r\n\r\n.\r\n");
    let codes = c.codes(5);
    assert_eq!(codes, [250, 250, 250, 354, 451]);
    c.send("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nSubject: 2\r\n\r\n.\r\n");
    assert_eq!(c.codes(4), [250, 250, 354, 250]);
    assert_eq!(real.depth(), 1);
    let mail = l
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), real.dequeue()).await })
        .unwrap()
        .unwrap();
    assert!(text(&mail).contains("Subject: 2"));
}

#[test]
fn a_connection_flood_over_the_limits_is_refused_and_the_server_stays_up() {
    let l = Listener::start(
        "<connectionLimit>10</connectionLimit><connectiontimeout>30</connectiontimeout>",
    );
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..300 {
        let mut c = Raw::connect(l.port);
        let r = c.reply();
        if r.starts_with("220") {
            held.push(c);
        } else {
            assert!(r.starts_with("421 4.7.0"), "{r}");
            refused += 1;
        }
    }
    assert!(held.len() <= 10, "{} sessions admitted", held.len());
    assert!(refused >= 290);
    drop(held);
    let mut c = open_when_free(l.port);
    assert!(c.cmd("EHLO c.test").starts_with("250"));
    c.send("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nSubject: after\r\n\r\n.\r\n");
    assert_eq!(c.codes(4), [250, 250, 354, 250]);
}

#[test]
fn starttls_injection_is_refused() {
    let l = Listener::start_with(
        "<tls startTLS=\"true\"><privateKey>conf/key.pem</privateKey><certificates>conf/cert.pem</certificates></tls>",
        |servers| generate_beside_the_configured_pair(servers),
        None,
    );
    assert!(l.dir.path().join("conf/cert.pem").exists());
    let mut c = Raw::open(l.port);
    assert!(c.cmd("EHLO c.test").contains("STARTTLS"));
    c.send("STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<b@y.test>\r\n");
    let r = c.reply();
    assert!(r.starts_with("451 4.7.0"), "{r}");
    assert!(c.closed());
    assert_eq!(l.depth(), 0);
}
