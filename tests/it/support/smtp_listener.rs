//! An in-process SMTP listener for the ingest tests: the real `mailetd::ingest::run`,
//! configured from XML by the real parser, on a real redb spool that tests read back; and a
//! raw TCP client for what no client library does on purpose (pipelined batches, garbage,
//! injection, a connection held open mid-command).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mailetd::config::XmlDocument;
use mailetd::config::smtpserver;
use mailetd::mail::Mail;
use mailetd::spool::{EmbeddedSpool, Spool};
use mailetd::store::Store;
use tokio_util::sync::CancellationToken;

use crate::support::{eventually, free_port, wait_for_port};

/// `<smtpservers>` with one server on `port`; `inner` adds or overrides settings
/// (authorizedAddresses defaults to loopback unless `inner` sets it).
pub fn server_xml(port: u16, inner: &str) -> String {
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
pub struct Listener {
    pub rt: tokio::runtime::Runtime,
    pub port: u16,
    spool: Arc<EmbeddedSpool>,
    _store: Arc<Store>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub dir: tempfile::TempDir,
}

impl Listener {
    pub fn start(inner: &str) -> Listener {
        Self::start_with(inner, |_| {}, None)
    }

    pub fn start_with(
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
            mailetd::outbox::store::OutboxSink::shared(),
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
    pub fn mails(&self, n: usize) -> Vec<Mail> {
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

    pub fn depth(&self) -> usize {
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
pub struct Raw {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Raw {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Connects and reads the greeting.
    pub fn open(port: u16) -> Raw {
        let mut r = Raw::connect(port);
        let greeting = r.reply();
        assert!(greeting.starts_with("220 "), "{greeting}");
        r
    }

    /// A client that has sent EHLO, MAIL, RCPT and DATA and got 354.
    pub fn inside_data(port: u16) -> Raw {
        let mut c = Raw::open(port);
        c.send("EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
        assert_eq!(c.codes(4), [250, 250, 250, 354]);
        c
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.writer.write_all(bytes.as_ref()).unwrap();
    }

    /// One full (possibly multi-line) reply; "" at end of stream.
    pub fn reply(&mut self) -> String {
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
    pub fn codes(&mut self, n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| {
                let r = self.reply();
                r.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
            })
            .collect()
    }

    /// Sends a command and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n"));
        self.reply()
    }

    /// Whether the server closed the connection (end of stream, or a reset).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

pub fn text(mail: &Mail) -> String {
    String::from_utf8_lossy(&mail.message).into_owned()
}

/// Opens a session once the listener's readiness probe has been let go.
pub fn open_when_free(port: u16) -> Raw {
    eventually("a free connection slot", Duration::from_secs(10), || {
        let mut c = Raw::connect(port);
        c.reply().starts_with("220").then_some(c)
    })
}

/// Generation on, into the configured pair's own directory (serve uses `data_dir/tls`).
pub fn generate_beside_the_configured_pair(servers: &mut [smtpserver::SmtpServerConfig]) {
    let tls = servers[0].tls.as_mut().unwrap();
    tls.generate_into = tls.private_key.parent().map(Path::to_path_buf);
}
