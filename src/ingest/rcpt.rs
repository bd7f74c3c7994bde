//! RCPT TO: every recipient is accepted for collection (mailetd never relays: nothing is
//! ever sent out), up to [`MAX_RECIPIENTS`] per mail. `<postmaster>` without a domain is
//! accepted, as RFC 5321 §4.5.1 requires of every SMTP server.

use std::borrow::Cow;

use smtp_proto::RcptTo;

use super::session::{Flow, Session};
use crate::mail::MailAddress;

/// Recipients per mail; RFC 5321 §4.5.3.1.8 asks for at least 100. Beyond, 452 tells the
/// client to send the rest in another transaction.
pub const MAX_RECIPIENTS: usize = 1000;

impl Session {
    /// Bad sequences (503) and addresses (501) count toward the error disconnect.
    pub(super) fn handle_rcpt(&mut self, to: RcptTo<Cow<'_, str>>, line: &[u8]) -> Flow {
        let Some(tx) = self.tx.as_mut() else {
            self.reply(503, [5, 5, 1], "Need MAIL before RCPT");
            return self.count_error();
        };
        if tx.bdat.is_some() {
            self.reply(503, [5, 5, 1], "RCPT not allowed during BDAT transfer");
            return self.count_error();
        }
        if tx.recipients.len() >= MAX_RECIPIENTS {
            self.reply(452, [4, 5, 3], "Too many recipients");
            return Flow::Continue;
        }
        // the parser reads `<postmaster>` as the empty path `<>`: tell them apart
        let parsed = if to.address.is_empty() && names_postmaster(line) {
            MailAddress::parse("postmaster")
        } else {
            MailAddress::parse(&to.address)
        };
        match parsed {
            Ok(address) => {
                let text = format!("Recipient <{address}> OK");
                tx.recipients.push(address);
                self.reply(250, [2, 1, 5], text);
                Flow::Continue
            }
            Err(e) => {
                self.reply(
                    501,
                    [5, 1, 3],
                    format!("Syntax error in recipient address: {e}"),
                );
                self.count_error()
            }
        }
    }
}

/// Whether the RCPT line's forward-path is the bare `<postmaster>` (any case).
fn names_postmaster(line: &[u8]) -> bool {
    let upper = line.to_ascii_uppercase();
    memchr::memmem::find(&upper, b"<POSTMASTER>").is_some()
}
