//! SMTP ingest with real clients (Python smtplib through `support::smtp`, raw TCP for
//! pipelined batches): extensions, SMTPUTF8, dot-stuffing, several mails per connection,
//! BDAT, size and line limits, HELO rules, TLS. The tests run the real listener in-process
//! (`support::smtp_listener`) so they can read back exactly what was spooled; abuse and
//! limits are in smtp_limits.rs, the `mailetd serve` binary in smtp_serve.rs.

use std::path::Path;

use mailetd::config::XmlDocument;
use mailetd::config::smtpserver;
use mailetd::mail::{AttributeValue, attributes};
use mailetd::spool::EmbeddedSpool;
use tokio_util::sync::CancellationToken;

use crate::support::smtp_listener::*;
use crate::support::{free_port, smtp};

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
        mailetd::outbox::store::OutboxSink::shared(),
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
