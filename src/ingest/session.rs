//! One SMTP session: reads command lines (at most `maxLineLength`, each within
//! `connectiontimeout`), parses them with `smtp-proto` and dispatches each verb to its file.
//! Replies are buffered and flushed only before the next read, so a pipelined batch of
//! commands gets one batch of replies (RFC 2920).

use std::borrow::Cow;
use std::fmt::Display;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::{Error as ParseError, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Shared;
use super::spawn::ConnectionGuard;
use super::tls::SessionStream;
use crate::mail::MailAddress;
use crate::spool::Incoming;

/// Bytes asked from the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// Bad commands tolerated before the session is closed (garbage floods).
const MAX_ERRORS: u32 = 50;
/// Time allowed for a TLS handshake and for writing a reply.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// After a 421, how long unread client bytes are drained before the socket closes.
const LINGER: Duration = Duration::from_secs(1);
/// How many unread client bytes a lingering close drains at most.
const LINGER_BYTES: usize = 1024 * 1024;

/// Whether the session goes on after a command.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Close,
}

/// The mail transaction between MAIL and the end of DATA / BDAT LAST.
pub(super) struct Transaction {
    pub sender: Option<MailAddress>,
    pub recipients: Vec<MailAddress>,
    pub smtputf8: bool,
    /// Chunks received so far when the client uses BDAT.
    pub bdat: Option<Vec<u8>>,
    /// Tells the spool a mail is on its way until the transaction ends.
    pub _incoming: Incoming,
}

enum Next {
    Line(Vec<u8>),
    TooLong,
    More,
}

pub(super) struct Session {
    pub shared: Arc<Shared>,
    pub stream: SessionStream,
    pub peer: SocketAddr,
    /// Unread input is `inbuf[pos..]`.
    pub inbuf: Vec<u8>,
    pub pos: usize,
    out: Vec<u8>,
    pub helo: Option<String>,
    pub esmtp: bool,
    pub tx: Option<Transaction>,
    /// Short id for logs and the `Received:` header.
    pub id: String,
    errors: u32,
    discarding: bool,
    line_deadline: Option<Instant>,
    /// The server is closing (it sent 421) and the client may still be writing.
    closing: bool,
}

/// Runs a session to its end; I/O errors just end it.
pub(super) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _guard: ConnectionGuard,
) {
    let mut session = Session {
        shared,
        stream: SessionStream::Plain(stream),
        peer,
        inbuf: Vec::new(),
        pos: 0,
        out: Vec::new(),
        helo: None,
        esmtp: false,
        tx: None,
        id: format!("{:08x}", rand::random::<u32>()),
        errors: 0,
        discarding: false,
        line_deadline: None,
        closing: false,
    };
    tracing::debug!(session = %session.id, client = %peer, "SMTP session opened");
    let result = session.serve().await;
    if let Err(e) = &result {
        tracing::debug!(session = %session.id, error = %e, "SMTP session ended by an I/O error");
    }
    // TLS needs its close_notify; a plain socket's FIN comes with the close, and a
    // shutdown() first would be one more system call per connection, failing with ENOTCONN
    // when the client closed after 221, as most do
    if matches!(session.stream, SessionStream::Tls(_)) {
        let _ = tokio::time::timeout(Duration::from_secs(5), session.stream.shutdown()).await;
    }
    if session.closing {
        session.linger().await;
    }
    tracing::debug!(session = %session.id, "SMTP session closed");
}

/// Runs a session over an in-memory pipe: `input` is everything the client sends, then
/// EOF. Returns every byte the server answered. For fuzzing and protocol tests.
pub(super) async fn run_in_memory(shared: Arc<Shared>, input: &[u8]) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        let _ = client_write.write_all(&input).await;
        let _ = client_write.shutdown().await;
    });
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = client_read.read_to_end(&mut out).await;
        out
    });
    let mut session = Session {
        shared,
        stream: SessionStream::Memory(server),
        peer: SocketAddr::from(([127, 0, 0, 1], 25)),
        inbuf: Vec::new(),
        pos: 0,
        out: Vec::new(),
        helo: None,
        esmtp: false,
        tx: None,
        id: "inmemory".into(),
        errors: 0,
        discarding: false,
        line_deadline: None,
        closing: false,
    };
    let _ = session.serve().await;
    let _ = session.stream.shutdown().await;
    drop(session);
    let _ = writer.await;
    reader.await.unwrap_or_default()
}

impl Session {
    async fn serve(&mut self) -> io::Result<()> {
        let implicit_tls = self
            .shared
            .config
            .tls
            .as_ref()
            .is_some_and(|t| t.socket_tls);
        if implicit_tls && !self.start_tls().await? {
            return Ok(());
        }
        let greeting = format!("220 {}\r\n", self.shared.config.greeting);
        self.out.extend_from_slice(greeting.as_bytes());
        loop {
            match self.next_line() {
                Next::Line(line) => {
                    if self.handle_line(&line).await? == Flow::Close {
                        return self.flush().await;
                    }
                }
                Next::TooLong => {
                    let max = self.shared.config.max_line_length;
                    self.reply(500, [5, 5, 2], format!("Line too long (limit {max} bytes)"));
                    if self.count_error() == Flow::Close {
                        return self.flush().await;
                    }
                }
                Next::More => {
                    self.flush().await?;
                    if !self.read_command_bytes().await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The next complete line, bounded by `maxLineLength`; an over-long line is dropped
    /// while it streams in (memory stays bounded) and reported once its end arrives.
    fn next_line(&mut self) -> Next {
        let max = self.shared.config.max_line_length;
        let avail = &self.inbuf[self.pos..];
        let newline = avail.iter().position(|&b| b == b'\n');
        if self.discarding {
            return match newline {
                Some(i) => {
                    self.pos += i + 1;
                    self.discarding = false;
                    self.line_deadline = None;
                    Next::TooLong
                }
                None => {
                    self.pos = self.inbuf.len();
                    Next::More
                }
            };
        }
        match newline {
            Some(i) if i < max => {
                let line = avail[..=i].to_vec();
                self.pos += i + 1;
                self.line_deadline = None;
                Next::Line(line)
            }
            Some(i) => {
                self.pos += i + 1;
                self.line_deadline = None;
                Next::TooLong
            }
            None if avail.len() >= max => {
                self.discarding = true;
                self.pos = self.inbuf.len();
                Next::More
            }
            None => Next::More,
        }
    }

    async fn handle_line(&mut self, line: &[u8]) -> io::Result<Flow> {
        let bracketed;
        let line = if self.shared.config.address_brackets_enforcement {
            line
        } else {
            bracketed = add_brackets(line);
            &bracketed
        };
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r,
            Err(e) => {
                let (code, esc, text): (u16, [u8; 3], Cow<str>) = match e {
                    ParseError::UnknownCommand | ParseError::NeedsMoreData { .. } => {
                        (500, [5, 5, 1], "Command unrecognized".into())
                    }
                    ParseError::InvalidSenderAddress => {
                        (501, [5, 1, 7], "Syntax error in sender address".into())
                    }
                    ParseError::InvalidRecipientAddress => {
                        (501, [5, 1, 3], "Syntax error in recipient address".into())
                    }
                    ParseError::SyntaxError { syntax } => (
                        501,
                        [5, 5, 4],
                        format!("Syntax error, expected: {syntax}").into(),
                    ),
                    ParseError::InvalidParameter { param } => (
                        501,
                        [5, 5, 4],
                        format!("Invalid value for parameter {param}").into(),
                    ),
                    ParseError::UnsupportedParameter { param } => (
                        555,
                        [5, 5, 4],
                        format!("Unsupported parameter {param}").into(),
                    ),
                    ParseError::ResponseTooLong | ParseError::InvalidResponse { .. } => {
                        (500, [5, 5, 2], "Syntax error".into())
                    }
                };
                self.reply(code, esc, text);
                return Ok(self.count_error());
            }
        };
        match request {
            Request::Ehlo { host } => self.handle_ehlo(&host, true),
            Request::Helo { host } => self.handle_ehlo(&host, false),
            Request::Mail { from } => return Ok(self.handle_mail(from)),
            Request::Rcpt { to } => return Ok(self.handle_rcpt(to, line)),
            Request::Data => return self.handle_data().await,
            Request::Bdat {
                chunk_size,
                is_last,
            } => return self.handle_bdat(chunk_size, is_last).await,
            Request::Rset => {
                self.tx = None;
                self.reply(250, [2, 0, 0], "OK");
            }
            Request::Noop { .. } => self.reply(250, [2, 0, 0], "OK"),
            Request::Vrfy { value } => self.handle_vrfy(&value),
            Request::StartTls => return self.handle_starttls().await,
            Request::Quit => {
                let text = format!(
                    "{} Service closing transmission channel",
                    self.shared.config.hello_name
                );
                self.reply(221, [2, 0, 0], text);
                return Ok(Flow::Close);
            }
            other => {
                let text = format!("{} not supported", other.name());
                self.reply(502, [5, 5, 1], text);
                return Ok(self.count_error());
            }
        }
        Ok(Flow::Continue)
    }

    /// Queues a reply; it is sent before the next read.
    pub fn reply(&mut self, code: u16, esc: [u8; 3], message: impl Display) {
        self.closing |= code == 421;
        if code >= 400 {
            crate::observe::Metrics::process().smtp_rejection(code);
        }
        let _ = Response { code, esc, message }.write(&mut self.out);
    }

    /// Queues a reply line written as is (`354`, HELO/EHLO lines: no enhanced code).
    pub fn reply_raw(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Counts a rejected command; too many and the session is closed with 421.
    pub fn count_error(&mut self) -> Flow {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            let text = format!(
                "{} Too many errors, closing connection",
                self.shared.config.hello_name
            );
            self.reply(421, [4, 7, 0], text);
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Sends the queued replies.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = tokio::time::timeout(IO_TIMEOUT, async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        })
        .await;
        self.out.clear();
        if self.out.capacity() > READ_CHUNK {
            self.out.shrink_to(1024);
        }
        match result {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client does not read",
            )),
        }
    }

    /// Closes a session the server ended while the client may still be sending:
    /// closing a socket with unread input sends a reset, which can destroy the 421 in
    /// the client's receive buffer before it reads it. So the write side is shut first
    /// (the client sees the 421, then EOF) and its input drained, bounded in time and
    /// bytes so a hostile client cannot hold the slot.
    async fn linger(&mut self) {
        let _ = tokio::time::timeout(LINGER, async {
            let _ = self.stream.shutdown().await;
            let mut drained = 0;
            let mut scratch = [0u8; 4096];
            while drained < LINGER_BYTES {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }

    fn compact(&mut self) {
        if self.pos >= self.inbuf.len() {
            self.inbuf.clear();
            self.pos = 0;
            // A big DATA leaves a big buffer; idle sessions should not keep it.
            if self.inbuf.capacity() > 4 * READ_CHUNK {
                self.inbuf = Vec::new();
            }
        } else if self.pos > 0 {
            self.inbuf.drain(..self.pos);
            self.pos = 0;
        }
        self.inbuf.reserve(READ_CHUNK);
    }

    /// Waits for more command bytes. The whole line must arrive within
    /// `connectiontimeout` (a client trickling bytes cannot hold the session). At
    /// shutdown, a session between mails is closed with 421. Returns false when the
    /// session is over.
    async fn read_command_bytes(&mut self) -> io::Result<bool> {
        self.compact();
        let timeout = self.shared.config.timeout;
        let deadline = *self
            .line_deadline
            .get_or_insert_with(|| Instant::now() + timeout);
        let interruptible = self.tx.is_none() || !self.shared.config.graceful_shutdown;
        let shutdown = self.shared.shutdown.clone();
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.inbuf)) => r,
            _ = shutdown.cancelled(), if interruptible => {
                let text = format!("{} Service shutting down, try again later", self.shared.config.hello_name);
                self.reply(421, [4, 3, 2], text);
                self.flush().await?;
                return Ok(false);
            }
        };
        self.after_read(read).await
    }

    /// When the DATA (or BDAT chunk) starting now must have arrived whole.
    pub fn data_deadline(&self) -> Instant {
        Instant::now() + self.shared.config.data_timeout
    }

    /// Waits for more DATA/BDAT bytes: each read within `connectiontimeout`, all of them
    /// before `deadline`. Returns false when the session is over.
    pub async fn read_data_bytes(&mut self, deadline: Instant) -> io::Result<bool> {
        self.compact();
        let timeout = self.shared.config.timeout;
        let shutdown = self.shared.shutdown.clone();
        let graceful = self.shared.config.graceful_shutdown;
        let read_by = deadline.min(Instant::now() + timeout);
        let read = tokio::select! {
            r = tokio::time::timeout_at(read_by, self.stream.read_buf(&mut self.inbuf)) => r,
            _ = shutdown.cancelled(), if !graceful => return Ok(false),
        };
        if read.is_err() && Instant::now() >= deadline {
            tracing::info!(session = %self.id, client = %self.peer, "SMTP: DATA took longer than smtp_data_timeout_secs; closing");
            let text = format!(
                "{} Message transfer took too long, closing connection",
                self.shared.config.hello_name
            );
            self.reply(421, [4, 4, 2], text);
            let _ = self.flush().await;
            return Ok(false);
        }
        self.after_read(read).await
    }

    async fn after_read(
        &mut self,
        read: Result<io::Result<usize>, tokio::time::error::Elapsed>,
    ) -> io::Result<bool> {
        match read {
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                tracing::debug!(session = %self.id, "SMTP client timed out");
                let text = format!(
                    "{} Timeout waiting for data from client, closing connection",
                    self.shared.config.hello_name
                );
                self.reply(421, [4, 4, 2], text);
                let _ = self.flush().await;
                Ok(false)
            }
        }
    }

    /// The client address as the spool records it (IPv4-mapped IPv6 unwrapped).
    pub fn client_ip(&self) -> std::net::IpAddr {
        match self.peer.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(std::net::IpAddr::V4)
                .unwrap_or(self.peer.ip()),
            ip => ip,
        }
    }

    /// Whether there is unread input (used against STARTTLS command injection).
    pub fn has_pending_input(&self) -> bool {
        self.pos < self.inbuf.len()
    }

    /// Drops unread input.
    pub fn discard_input(&mut self) {
        self.inbuf.clear();
        self.pos = 0;
    }

    /// Time allowed for a TLS handshake.
    pub fn io_timeout() -> Duration {
        IO_TIMEOUT
    }
}

/// `addressBracketsEnforcement=false`: `MAIL FROM:a@b` / `RCPT TO:a@b` get their brackets
/// back so the parser accepts them.
fn add_brackets(line: &[u8]) -> Vec<u8> {
    let upper: Vec<u8> = line.iter().take(10).map(u8::to_ascii_uppercase).collect();
    let prefix = if upper.starts_with(b"MAIL FROM:") {
        10
    } else if upper.starts_with(b"RCPT TO:") {
        8
    } else {
        return line.to_vec();
    };
    let rest = &line[prefix..];
    let start = rest.iter().take_while(|b| **b == b' ').count();
    let rest = &rest[start..];
    if rest.first() == Some(&b'<') {
        return line.to_vec();
    }
    let end = rest
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    let mut out = line[..prefix].to_vec();
    out.push(b'<');
    out.extend_from_slice(&rest[..end]);
    out.push(b'>');
    out.extend_from_slice(&rest[end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::add_brackets;

    #[test]
    fn brackets_are_added_when_missing() {
        assert_eq!(
            add_brackets(b"MAIL FROM:a@b.c SIZE=10\r\n"),
            b"MAIL FROM:<a@b.c> SIZE=10\r\n"
        );
        assert_eq!(add_brackets(b"rcpt to: x@y\r\n"), b"rcpt to:<x@y>\r\n");
        assert_eq!(add_brackets(b"RCPT TO:<x@y>\r\n"), b"RCPT TO:<x@y>\r\n");
        assert_eq!(add_brackets(b"NOOP\r\n"), b"NOOP\r\n");
    }
}
