//! DATA (dot-unstuffed by `smtp-proto`'s receiver) and BDAT/CHUNKING. A message over
//! `maxmessagesize` is read to its end without being kept and answered 552; an accepted
//! one gets a James-like `Received:` header and is answered `250 2.6.0` only once the spool
//! has it on disk, or `451 4.3.0` when the spool fails (the session stays usable).

use std::io;

use smtp_proto::request::receiver::{BdatReceiver, DataReceiver};

use super::session::{Flow, Session, Transaction};
use crate::mail::{AttributeValue, Mail, attributes, now_ms};

/// Bytes reserved for a DATA body before it arrives.
const INITIAL_BODY_CAPACITY: usize = 16 * 1024;
/// Up to this size a received body is copied into an exact buffer (see `accept_mail`).
const EXACT_COPY_MAX: usize = 64 * 1024;

impl Session {
    pub(super) async fn handle_data(&mut self) -> io::Result<Flow> {
        match &self.tx {
            None => {
                self.reply(503, [5, 5, 1], "Need MAIL before DATA");
                return Ok(self.count_error());
            }
            Some(tx) if tx.recipients.is_empty() => {
                self.reply(503, [5, 5, 1], "No recipients specified");
                return Ok(self.count_error());
            }
            Some(tx) if tx.bdat.is_some() => {
                self.reply(503, [5, 5, 1], "DATA not allowed after BDAT");
                return Ok(self.count_error());
            }
            Some(_) => {}
        }
        self.reply_raw("354 Start mail input; end with <CRLF>.<CRLF>");
        self.flush().await?;
        let deadline = self.data_deadline();
        let max = self.shared.config.max_message_size;
        let mut receiver = DataReceiver::new();
        // most mails fit: no reallocation while the body arrives
        let mut body = Vec::with_capacity(INITIAL_BODY_CAPACITY);
        // The receiver spots a terminating or stuffed "." only after a CRLF it has seen;
        // the first line follows the 354, so give it that CRLF.
        receiver.ingest(&mut b"\r\n".iter(), &mut body);
        body.clear();
        let mut too_big = false;
        loop {
            let avail = &self.inbuf[self.pos..];
            let mut bytes = avail.iter();
            let done = receiver.ingest(&mut bytes, &mut body);
            self.pos += avail.len() - bytes.as_slice().len();
            if max > 0 && body.len() > max {
                // Keep reading to the end of DATA so the session stays in step, but keep nothing.
                too_big = true;
                body.clear();
                body.shrink_to(0);
            }
            if done {
                break;
            }
            if !self.read_data_bytes(deadline).await? {
                return Ok(Flow::Close);
            }
        }
        let tx = self.tx.take().expect("checked above");
        if too_big {
            self.reply_too_big();
            return Ok(Flow::Continue);
        }
        self.accept_mail(tx, body).await;
        Ok(Flow::Continue)
    }

    pub(super) async fn handle_bdat(
        &mut self,
        chunk_size: usize,
        is_last: bool,
    ) -> io::Result<Flow> {
        let max = self.shared.config.max_message_size;
        // The chunk is read whatever the answer will be: its bytes are not commands.
        let mut kept = match self.tx.as_mut() {
            Some(tx) if !tx.recipients.is_empty() => Some(tx.bdat.take().unwrap_or_default()),
            _ => None,
        };
        let over = max > 0 && kept.as_ref().map_or(0, Vec::len).saturating_add(chunk_size) > max;
        let mut scratch = Vec::new();
        let mut receiver = BdatReceiver::new(chunk_size, is_last);
        let deadline = self.data_deadline();
        loop {
            let target = match kept.as_mut() {
                Some(buf) if !over => buf,
                _ => {
                    scratch.clear();
                    &mut scratch
                }
            };
            let avail = &self.inbuf[self.pos..];
            let mut bytes = avail.iter();
            let done = receiver.ingest(&mut bytes, target);
            self.pos += avail.len() - bytes.as_slice().len();
            if done {
                break;
            }
            if !self.read_data_bytes(deadline).await? {
                return Ok(Flow::Close);
            }
        }
        let Some(buf) = kept else {
            if self.tx.is_none() {
                self.reply(503, [5, 5, 1], "Need MAIL before BDAT");
            } else {
                self.reply(503, [5, 5, 1], "No recipients specified");
            }
            return Ok(self.count_error());
        };
        if over {
            self.tx = None;
            self.reply_too_big();
            return Ok(Flow::Continue);
        }
        if !is_last {
            if let Some(tx) = self.tx.as_mut() {
                tx.bdat = Some(buf);
            }
            self.reply(250, [2, 0, 0], format!("{chunk_size} octets received"));
            return Ok(Flow::Continue);
        }
        let tx = self.tx.take().expect("kept implies a transaction");
        self.accept_mail(tx, buf).await;
        Ok(Flow::Continue)
    }

    fn reply_too_big(&mut self) {
        let max = self.shared.config.max_message_size;
        self.reply(
            552,
            [5, 3, 4],
            format!("Message size exceeds fixed maximum message size of {max} bytes"),
        );
    }

    /// Spools the mail and answers for it.
    async fn accept_mail(&mut self, tx: Transaction, body: Vec<u8>) {
        let received_at_ms = now_ms();
        let header = self.received_header(&tx, received_at_ms);
        let message = if body.len() <= EXACT_COPY_MAX {
            // Small: header and body copied once into a buffer of exactly their size (the
            // splice below moves the body as well), so that the receive buffer goes back to
            // the allocator whole for the next DATA instead of staying with a queued mail,
            // mostly empty, or leaving a hole no next buffer fits in.
            let mut exact = Vec::with_capacity(header.len() + body.len());
            exact.extend_from_slice(header.as_bytes());
            exact.extend_from_slice(&body);
            exact
        } else {
            // the header goes in front of the body where it is: a copy of a large mail, even
            // for a moment, is as much memory again
            let mut message = body;
            message.splice(0..0, header.bytes());
            message
        };
        let mut mail = Mail::new(tx.sender, tx.recipients, message);
        mail.received_at_ms = received_at_ms;
        mail.remote_addr = self.client_ip();
        mail.helo = self.helo.clone().unwrap_or_default();
        mail.tls = self.stream.is_tls();
        let config = &self.shared.config;
        if config.authorized_explicit && config.authorized.contains(&mail.remote_addr) {
            mail.set_attribute(attributes::SMTP_IS_AUTH_NETWORK, AttributeValue::Bool(true));
        }
        let (size, rcpts, remote_addr) = (mail.size(), mail.recipients.len(), mail.remote_addr);
        match self.shared.spool.enqueue(mail).await {
            Ok(id) => {
                tracing::debug!(
                    session = %self.id,
                    mail = id,
                    size,
                    rcpts,
                    "SMTP: mail spooled"
                );
                self.reply(250, [2, 6, 0], "Message received");
                let metrics = crate::observe::Metrics::process();
                metrics.mail_accepted();
                metrics.clients.record_mail(remote_addr);
            }
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "SMTP: cannot spool a mail; answered 451");
                self.reply(451, [4, 3, 0], "Error processing message, try again later");
            }
        }
    }

    /// `Received:` as James writes it (RFC 5321 §4.4 trace field).
    fn received_header(&self, tx: &Transaction, at_ms: u64) -> String {
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let mut with = String::new();
        if tx.smtputf8 {
            with.push_str("UTF8");
        }
        with.push_str(if self.esmtp { "ESMTP" } else { "SMTP" });
        if self.stream.is_tls() {
            with.push('S');
        }
        let date = mail_parser::DateTime::from_timestamp((at_ms / 1000) as i64).to_rfc822();
        let hello = &self.shared.config.hello_name;
        let ip = self.client_ip();
        let mut h = format!(
            "Received: from {helo} ([{ip}])\r\n          by {hello} (mailetd) with {with} ID {}",
            self.id
        );
        match tx.recipients.as_slice() {
            [only] => h.push_str(&format!("\r\n          for <{only}>;\r\n")),
            _ => h.push_str(";\r\n"),
        }
        h.push_str(&format!("          {date}\r\n"));
        h
    }
}
