//! RCPT TO: every recipient is accepted for collection (mailetd never relays: nothing is
//! ever sent out), up to [`MAX_RECIPIENTS`] per mail.

use std::borrow::Cow;

use smtp_proto::RcptTo;

use super::session::Session;
use crate::mail::MailAddress;

/// Recipients per mail; RFC 5321 §4.5.3.1.8 asks for at least 100. Beyond, 452 tells the
/// client to send the rest in another transaction.
pub const MAX_RECIPIENTS: usize = 1000;

impl Session {
    pub(super) fn handle_rcpt(&mut self, to: RcptTo<Cow<'_, str>>) {
        let Some(tx) = self.tx.as_mut() else {
            self.reply(503, [5, 5, 1], "Need MAIL before RCPT");
            return;
        };
        if tx.bdat.is_some() {
            self.reply(503, [5, 5, 1], "RCPT not allowed during BDAT transfer");
            return;
        }
        if tx.recipients.len() >= MAX_RECIPIENTS {
            self.reply(452, [4, 5, 3], "Too many recipients");
            return;
        }
        match MailAddress::parse(&to.address) {
            Ok(address) => {
                let text = format!("Recipient <{address}> OK");
                tx.recipients.push(address);
                self.reply(250, [2, 1, 5], text);
            }
            Err(e) => {
                self.reply(
                    501,
                    [5, 1, 3],
                    format!("Syntax error in recipient address: {e}"),
                );
            }
        }
    }
}
