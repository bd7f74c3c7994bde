//! SMTP ingest with real clients: Python smtplib, swaks, Postfix's smtp-source, and raw TCP
//! for what no client library does on purpose (pipelined batches, garbage, injection).
//!
//! Most tests run the real listener (`mailetd::ingest::run`, configured from XML by the real
//! parser) in-process on a real redb spool, so they can read back exactly what was spooled;
//! the `serve_*` tests run the `mailetd` binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mailetd::config::XmlDocument;
use mailetd::config::smtpserver;
use mailetd::mail::{AttributeValue, Mail, MailId, attributes};
use mailetd::outbox::OutboxJob;
use mailetd::spool::{EmbeddedSpool, Spool, SpoolError, Store};
use tokio_util::sync::CancellationToken;

use crate::support::mailetd::Mailetd;
use crate::support::{eventually, free_port, smtp, wait_for_port};

/// `<smtpservers>` with one server on `port`; `inner` adds or overrides settings
/// (authorizedAddresses defaults to loopback unless `inner` sets it).
fn server_xml(port: u16, inner: &str) -> String {
    let authorized = if inner.contains("<authorizedAddresses>") {
        ""
    } else {
        "<authorizedAddresses>127.0.0.0/8</authorizedAddresses>"
    };
    format!(
        "<smtpservers>\n<smtpserver enabled=\"true\">\n<bind>127.0.0.1:{port}</bind>\n\
         <helloName autodetect=\"false\">mx.mailetd.test</helloName>\n{authorized}\n{inner}\n\
         </smtpserver>\n</smtpservers>\n"
    )
}

/// The real listener and a real spool, in-process.
struct Listener {
    rt: tokio::runtime::Runtime,
    port: u16,
    spool: Arc<EmbeddedSpool>,
    _store: Arc<Store>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    dir: tempfile::TempDir,
}

impl Listener {
    fn start(inner: &str) -> Listener {
        Self::start_with(inner, |_| {}, None)
    }

    fn start_with(
        inner: &str,
        tweak: impl FnOnce(&mut Vec<smtpserver::SmtpServerConfig>),
        spool_override: Option<Arc<dyn Spool>>,
    ) -> Listener {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let doc =
            XmlDocument::parse(&server_xml(port, inner), Path::new("conf/smtpserver.xml")).unwrap();
        let mut servers = smtpserver::parse(&doc, dir.path()).unwrap();
        tweak(&mut servers);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (store, spool) = EmbeddedSpool::open_path(
            &dir.path().join("spool.redb"),
            std::sync::Arc::new(mailetd::outbox::store::OutboxSink),
        )
        .unwrap();
        let shutdown = CancellationToken::new();
        let used: Arc<dyn Spool> = spool_override.unwrap_or_else(|| spool.clone());
        // two SMTP threads: sessions are spread over both event loops
        let task = rt.spawn(mailetd::ingest::run(servers, used, shutdown.clone(), 2));
        wait_for_port(port, Duration::from_secs(10));
        Listener {
            rt,
            port,
            spool,
            _store: store,
            shutdown,
            task: Some(task),
            dir,
        }
    }

    /// The next `n` spooled mails, in arrival order.
    fn mails(&self, n: usize) -> Vec<Mail> {
        (0..n)
            .map(|_| {
                self.rt
                    .block_on(async {
                        tokio::time::timeout(Duration::from_secs(20), self.spool.dequeue()).await
                    })
                    .expect("a spooled mail")
                    .unwrap()
            })
            .collect()
    }

    fn depth(&self) -> usize {
        self.spool.depth()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), t).await });
        }
    }
}

/// A raw SMTP client over TCP.
struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Raw {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Connects and reads the greeting.
    fn open(port: u16) -> Raw {
        let mut r = Raw::connect(port);
        let greeting = r.reply();
        assert!(greeting.starts_with("220 "), "{greeting}");
        r
    }

    /// A client that has sent EHLO, MAIL, RCPT and DATA and got 354.
    fn inside_data(port: u16) -> Raw {
        let mut c = Raw::open(port);
        c.send("EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
        assert_eq!(c.codes(4), [250, 250, 250, 354]);
        c
    }

    fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.writer.write_all(bytes.as_ref()).unwrap();
    }

    /// One full (possibly multi-line) reply; "" at end of stream.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    /// The codes of the next `n` replies.
    fn codes(&mut self, n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| {
                let r = self.reply();
                r.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
            })
            .collect()
    }

    /// Sends a command and returns the reply.
    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n"));
        self.reply()
    }

    /// Whether the server closed the connection (end of stream, or a reset).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn text(mail: &Mail) -> String {
    String::from_utf8_lossy(&mail.message).into_owned()
}

#[test]
fn smtplib_null_sender_many_recipients_and_extensions() {
    let l = Listener::start("<maxmessagesize>10M</maxmessagesize>");
    let session = smtp::session(l.port)
        .helo("client.example.net")
        .mail(
            "",
            &[
                "alice@example.org",
                "bob@other.example",
                "carol@external.example.com",
            ],
            "Subject: bounce\r\nMessage-ID: <b1@x>\r\n\r\nDelivery failed\r\n",
        )
        .run();
    let out = &session.ehlo.text;
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "SMTPUTF8",
        "SIZE 10485760",
    ] {
        assert!(out.contains(ext), "EHLO lacks {ext}: {out}");
    }
    assert!(
        out.contains("mx.mailetd.test Hello client.example.net [127.0.0.1]"),
        "{out}"
    );
    assert!(!out.contains("STARTTLS"), "{out}");
    session.assert_accepted();
    let mail = &l.mails(1)[0];
    assert_eq!(mail.sender, None);
    let rcpts: Vec<String> = mail.recipients.iter().map(ToString::to_string).collect();
    assert_eq!(
        rcpts,
        [
            "alice@example.org",
            "bob@other.example",
            "carol@external.example.com"
        ]
    );
    assert_eq!(mail.helo, "client.example.net");
    assert_eq!(mail.remote_addr.to_string(), "127.0.0.1");
    assert!(!mail.tls);
    assert_eq!(
        mail.attribute(attributes::SMTP_IS_AUTH_NETWORK),
        Some(&AttributeValue::Bool(true))
    );
    let t = text(mail);
    assert!(
        t.starts_with("Received: from client.example.net ([127.0.0.1])\r\n          by mx.mailetd.test (mailetd) with ESMTP ID "),
        "{t}"
    );
    assert!(
        t.ends_with("\r\nSubject: bounce\r\nMessage-ID: <b1@x>\r\n\r\nDelivery failed\r\n"),
        "{t}"
    );
}

#[test]
fn smtputf8_8bitmime_and_size_parameters_are_accepted() {
    let l = Listener::start("<maxmessagesize>1M</maxmessagesize>");
    smtp::session(l.port)
        .helo("client.test")
        .mail_with(
            "josé@exemple.fr",
            &["désirée@exemple.fr"],
            "Subject: café\r\n\r\nRéunion à midi\r\n",
            &["SMTPUTF8", "BODY=8BITMIME"],
        )
        .run()
        .assert_accepted();
    let mail = &l.mails(1)[0];
    assert_eq!(mail.sender.as_ref().unwrap().to_string(), "josé@exemple.fr");
    assert_eq!(mail.recipients[0].to_string(), "désirée@exemple.fr");
    let t = text(mail);
    assert!(t.contains("with UTF8ESMTP ID"), "{t}");
    assert!(t.contains("for <désirée@exemple.fr>;"), "{t}");
    assert!(t.ends_with("Réunion à midi\r\n"), "{t}");
}

#[test]
fn data_is_dot_unstuffed() {
    let l = Listener::start("");
    smtp::send(
        l.port,
        "a@x.test",
        &["b@y.test"],
        "Subject: dots\r\n\r\n.one dot\r\n..two dots\r\n.\r\nend\r\n",
    );
    let t = text(&l.mails(1)[0]);
    assert!(
        t.ends_with("\r\nSubject: dots\r\n\r\n.one dot\r\n..two dots\r\n.\r\nend\r\n"),
        "{t}"
    );
}

#[test]
fn several_mails_rset_noop_vrfy_in_one_connection() {
    let l = Listener::start("");
    let session = smtp::session(l.port)
        .helo("c.test")
        .mail("a@x.test", &["b@y.test"], "Subject: 1\r\n\r\none\r\n")
        .command("RSET")
        .command("NOOP")
        .command("VRFY bob@y.test")
        .command("MAIL FROM:<dropped@x.test>")
        .command("RCPT TO:<b@y.test>")
        .command("RSET")
        .mail("a@x.test", &["c@y.test"], "Subject: 2\r\n\r\ntwo\r\n")
        .mail("a@x.test", &["d@y.test"], "Subject: 3\r\n\r\nthree\r\n")
        .run();
    let codes = session.codes();
    // the mails, then RSET, NOOP and VRFY (252: cannot verify, will accept)
    assert_eq!(
        [codes[0], codes[7], codes[8]],
        [250, 250, 250],
        "{session:?}"
    );
    assert_eq!(codes[1..4], [250, 250, 252], "{session:?}");
    assert!(session.replies[3].text.starts_with("2.5.2 "), "{session:?}");
    assert_eq!(session.quit, Some(221), "{session:?}");
    let mails = l.mails(3);
    let subjects: Vec<bool> = mails
        .iter()
        .zip(["Subject: 1", "Subject: 2", "Subject: 3"])
        .map(|(m, s)| text(m).contains(s))
        .collect();
    assert_eq!(subjects, [true, true, true]);
    assert_eq!(l.depth(), 3, "the RSET transaction left nothing");
}

#[test]
fn bdat_chunks_make_one_mail() {
    let l = Listener::start("");
    let mut c = Raw::open(l.port);
    assert!(c.cmd("EHLO c.test").contains("CHUNKING"));
    // BDAT without a transaction: the chunk is consumed, not read as commands.
    c.send("BDAT 6\r\nNOOP\r\n");
    assert!(c.reply().starts_with("503 5.5.1"));
    assert!(c.cmd("MAIL FROM:<a@x.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@y.test>").starts_with("250"));
    let part1 = "Subject: chunks\r\n\r\n";
    let part2 = ".not stuffed\r\nbody\r\n";
    c.send(format!("BDAT {}\r\n{part1}", part1.len()));
    assert_eq!(
        c.reply(),
        format!("250 2.0.0 {} octets received\r\n", part1.len())
    );
    c.send(format!("BDAT {} LAST\r\n{part2}", part2.len()));
    assert_eq!(c.reply(), "250 2.6.0 Message received\r\n");
    // DATA still works afterwards in the same session.
    c.send("MAIL FROM:<a@x.test>\r\nRCPT TO:<c@y.test>\r\nBDAT 0 LAST\r\n");
    assert_eq!(c.codes(3), [250, 250, 250]);
    let mails = l.mails(2);
    assert!(text(&mails[0]).ends_with("\r\nSubject: chunks\r\n\r\n.not stuffed\r\nbody\r\n"));
    assert_eq!(mails[1].recipients[0].to_string(), "c@y.test");
}

#[test]
fn pipelined_sequences_get_replies_in_order() {
    let l = Listener::start("");
    // RFC 2920 / James's pipelining tests: everything in one write.
    let mut c = Raw::connect(l.port);
    c.send(
        "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nSubject: p\r\n\r\npipelined\r\n.\r\n",
    );
    assert_eq!(c.codes(6), [220, 250, 250, 250, 354, 250]);
    // Every RCPT refused: DATA gets 503.
    c.send("MAIL FROM:<a@x.test>\r\nRCPT TO:<>\r\nRCPT TO:<not an address>\r\nDATA\r\nRSET\r\n");
    assert_eq!(c.codes(5), [250, 501, 501, 503, 250]);
    // One refused, one accepted: the mail goes through.
    c.send(
        "MAIL FROM:<a@x.test>\r\nRCPT TO:<>\r\nRCPT TO:<c@y.test>\r\nDATA\r\nSubject: q\r\n\r\nx\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(c.codes(6), [250, 501, 250, 354, 250, 221]);
    let mails = l.mails(2);
    assert!(text(&mails[0]).ends_with("Subject: p\r\n\r\npipelined\r\n"));
    assert_eq!(mails[1].recipients.len(), 1);
    assert_eq!(l.depth(), 2);
}

#[test]
fn size_limit_answers_552_and_keeps_nothing() {
    let l = Listener::start("<maxmessagesize>1</maxmessagesize>");
    let mut c = Raw::open(l.port);
    assert!(c.cmd("EHLO c.test").contains("SIZE 1024"));
    // Declared too big: 552 at MAIL, then RCPT has no transaction.
    assert!(
        c.cmd("MAIL FROM:<a@x.test> SIZE=5000")
            .starts_with("552 5.3.4")
    );
    assert!(c.cmd("RCPT TO:<b@y.test>").starts_with("503"));
    // Undeclared and too big: read to the end, 552, nothing spooled.
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(3000));
    c.send(format!(
        "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n{big}.\r\n"
    ));
    let codes = c.codes(4);
    assert_eq!(codes, [250, 250, 354, 552]);
    assert_eq!(l.depth(), 0);
    // Same with BDAT.
    c.send(format!(
        "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT {} LAST\r\n{big}",
        big.len()
    ));
    assert_eq!(c.codes(3), [250, 250, 552]);
    assert_eq!(l.depth(), 0);
    // Exactly at the limit: accepted, and the session was usable all along.
    let exact = format!("Subject: e\r\n\r\n{}\r\n", "y".repeat(1024 - 16));
    assert_eq!(exact.len(), 1024);
    c.send(format!(
        "MAIL FROM:<a@x.test> SIZE=1024\r\nRCPT TO:<b@y.test>\r\nDATA\r\n{exact}.\r\n"
    ));
    assert_eq!(c.codes(4), [250, 250, 354, 250]);
    assert!(text(&l.mails(1)[0]).ends_with(&exact));
}

#[test]
fn over_long_lines_get_500_and_the_session_stays_usable() {
    let l = Listener::start("<maxLineLength>1000</maxLineLength>");
    let mut c = Raw::open(l.port);
    c.send(format!("EHLO {}\r\n", "a".repeat(8192)));
    assert!(c.reply().starts_with("500 5.5.2 Line too long"));
    // A 1 MB line: same answer, nothing buffered beyond the limit.
    c.send(format!("NOOP {}\r\n", "b".repeat(1 << 20)));
    assert!(c.reply().starts_with("500 5.5.2"));
    assert!(c.cmd("EHLO c.test").starts_with("250-mx.mailetd.test"));
    assert!(c.cmd("NOOP").starts_with("250 2.0.0"));
    // Lines inside DATA are not commands: a long body line is fine.
    c.send(format!(
        "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n{}\r\n.\r\n",
        "z".repeat(5000)
    ));
    assert_eq!(c.codes(4), [250, 250, 354, 250]);
    assert_eq!(l.depth(), 1);
}

/// Opens a session once the listener's readiness probe has been let go.
fn open_when_free(port: u16) -> Raw {
    eventually("a free connection slot", Duration::from_secs(10), || {
        let mut c = Raw::connect(port);
        c.reply().starts_with("220").then_some(c)
    })
}

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
fn helo_and_bracket_enforcement() {
    let l = Listener::start("");
    let mut c = Raw::open(l.port);
    assert!(c.cmd("MAIL FROM:<a@x.test>").starts_with("503 5.5.1"));
    assert!(
        c.cmd("HELO c.test")
            .starts_with("250 mx.mailetd.test Hello c.test")
    );
    assert!(c.cmd("MAIL FROM:a@x.test").starts_with("501"));
    assert!(c.cmd("MAIL FROM:<a@x.test>").starts_with("250"));

    let l = Listener::start(
        "<heloEhloEnforcement>false</heloEhloEnforcement><addressBracketsEnforcement>false</addressBracketsEnforcement>",
    );
    let mut c = Raw::open(l.port);
    assert!(c.cmd("MAIL FROM:a@x.test").starts_with("250"));
    assert!(c.cmd("RCPT TO:b@y.test").starts_with("250"));
    c.send("DATA\r\nSubject: s\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.codes(2), [354, 250]);
    let mail = &l.mails(1)[0];
    assert_eq!(mail.sender.as_ref().unwrap().to_string(), "a@x.test");
    assert!(text(mail).starts_with("Received: from unknown ([127.0.0.1])"));
}

#[test]
fn greeting_disabled_features_and_several_servers() {
    let second = free_port();
    let l = Listener::start_with(
        "<smtpGreeting>collector ready</smtpGreeting><disabledFeatures>CHUNKING</disabledFeatures>",
        |servers| {
            let mut other = servers[0].clone();
            other.bind = vec![format!("127.0.0.1:{second}").parse().unwrap()];
            other.greeting = "second ready".into();
            other.disabled_features.clear();
            servers.push(other);
        },
        None,
    );
    let mut c = Raw::connect(l.port);
    assert_eq!(c.reply(), "220 collector ready\r\n");
    let ehlo = c.cmd("EHLO c.test");
    assert!(
        !ehlo.contains("CHUNKING") && ehlo.contains("PIPELINING"),
        "{ehlo}"
    );
    let mut d = Raw::connect(second);
    assert_eq!(d.reply(), "220 second ready\r\n");
    assert!(d.cmd("EHLO c.test").contains("CHUNKING"));
}

#[test]
fn a_bind_failure_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let doc = XmlDocument::parse(&server_xml(port, ""), Path::new("conf/smtpserver.xml")).unwrap();
    let servers = smtpserver::parse(&doc, Path::new(".")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_store, spool) = EmbeddedSpool::open_path(
        &dir.path().join("s.redb"),
        std::sync::Arc::new(mailetd::outbox::store::OutboxSink),
    )
    .unwrap();
    let err = rt
        .block_on(mailetd::ingest::run(
            servers,
            spool,
            CancellationToken::new(),
            1,
        ))
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{msg}"
    );
    assert!(msg.starts_with("conf/smtpserver.xml:2:1"), "{msg}");
}

/// Generation on, into the configured pair's own directory (serve uses `data_dir/tls`).
fn generate_beside_the_configured_pair(servers: &mut [smtpserver::SmtpServerConfig]) {
    let tls = servers[0].tls.as_mut().unwrap();
    tls.generate_into = tls.private_key.parent().map(Path::to_path_buf);
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
        std::sync::Arc::new(mailetd::outbox::store::OutboxSink),
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
    let acks = m.dir.path().join("acks.txt");
    // 8 client threads, each sender unique; a sender is written down only after its 250. A
    // load generator killed with the server, not a one-off send: so not `support::smtp`.
    let script = r#"
import smtplib, sys, threading
port, path = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
out = open(path, "a", buffering=1)
def worker(w):
    n = 0
    while True:
        try:
            s = smtplib.SMTP("127.0.0.1", port, timeout=10)
            while True:
                sender = f"k{w}x{n}@load.test"
                s.sendmail(sender, ["r@collector.test"], b"Subject: load\r\n\r\n" + b"x" * 2000 + b"\r\n")
                with lock:
                    out.write(sender + "\n")
                n += 1
        except Exception:
            return
threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
for t in threads: t.start()
for t in threads: t.join()
"#;
    let mut client = Command::new("python3")
        .args(["-c", script, &m.smtp_port.to_string()])
        .arg(&acks)
        .spawn()
        .unwrap();
    eventually("300 acknowledged mails", Duration::from_secs(60), || {
        let n = std::fs::read_to_string(&acks)
            .unwrap_or_default()
            .lines()
            .count();
        (n >= 300).then_some(())
    });
    m.kill9();
    client.wait().unwrap();
    let acked: Vec<String> = std::fs::read_to_string(&acks)
        .unwrap()
        .lines()
        .map(str::to_string)
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
fn socket_tls_with_smtplib_smtp_ssl() {
    let l = Listener::start_with(
        "<tls socketTLS=\"true\"><privateKey>k.pem</privateKey><certificates>c.pem</certificates></tls>",
        |servers| generate_beside_the_configured_pair(servers),
        None,
    );
    let session = smtp::session(l.port)
        .tls()
        .helo("tls.client")
        .mail("a@x.test", &["b@y.test"], "Subject: tls\r\n\r\nx\r\n")
        .run();
    assert!(!session.ehlo.text.contains("STARTTLS"), "{session:?}");
    session.assert_accepted();
    let mail = &l.mails(1)[0];
    assert!(mail.tls);
    assert!(text(mail).contains("with ESMTPS ID"));
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
