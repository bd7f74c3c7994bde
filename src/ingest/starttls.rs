//! STARTTLS, and the TLS handshake of a `socketTLS` port. Commands pipelined after
//! STARTTLS in clear text are refused (CVE-2011-0411-style injection) and the connection
//! is closed: they would otherwise be read as if they came over TLS.

use std::io;

use super::session::{Flow, Session};
use super::tls::SessionStream;

impl Session {
    pub(super) async fn handle_starttls(&mut self) -> io::Result<Flow> {
        if !self.shared.config.tls.as_ref().is_some_and(|t| t.start_tls) {
            self.reply(502, [5, 5, 1], "STARTTLS not supported");
            return Ok(self.count_error());
        }
        if self.stream.is_tls() {
            self.reply(503, [5, 5, 1], "TLS already active");
            return Ok(self.count_error());
        }
        if self.has_pending_input() {
            tracing::info!(session = %self.id, client = %self.peer, "SMTP: commands pipelined after STARTTLS refused");
            self.discard_input();
            self.reply(
                451,
                [4, 7, 0],
                "Commands pipelined after STARTTLS are refused; closing",
            );
            return Ok(Flow::Close);
        }
        self.reply(220, [2, 0, 0], "Ready to start TLS");
        self.flush().await?;
        if !self.start_tls().await? {
            return Ok(Flow::Close);
        }
        // RFC 3207 §4.2: forget everything learnt in clear text.
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        Ok(Flow::Continue)
    }

    /// Runs the server side of the handshake; false if it failed (the session ends).
    pub(super) async fn start_tls(&mut self) -> io::Result<bool> {
        let Some(acceptor) = self.shared.tls.clone() else {
            return Ok(false);
        };
        let SessionStream::Plain(tcp) = std::mem::replace(&mut self.stream, SessionStream::Closed)
        else {
            return Ok(false);
        };
        match tokio::time::timeout(Session::io_timeout(), acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                self.stream = SessionStream::Tls(Box::new(tls));
                Ok(true)
            }
            Ok(Err(e)) => {
                tracing::debug!(session = %self.id, error = %e, "TLS handshake failed");
                Ok(false)
            }
            Err(_) => {
                tracing::debug!(session = %self.id, "TLS handshake timed out");
                Ok(false)
            }
        }
    }
}
