//! MAIL FROM: opens a transaction. The null reverse-path `<>` (bounces, DSNs) is accepted;
//! a declared `SIZE=` over `maxmessagesize` gets 552 at once.

use std::borrow::Cow;

use smtp_proto::{MAIL_SMTPUTF8, MailFrom};

use super::session::{Flow, Session, Transaction};
use crate::mail::MailAddress;

impl Session {
    /// Bad sequences (503) and addresses (501) count toward the error disconnect.
    pub(super) fn handle_mail(&mut self, from: MailFrom<Cow<'_, str>>) -> Flow {
        if self.helo.is_none() && self.shared.config.helo_ehlo_enforcement {
            self.reply(503, [5, 5, 1], "Need HELO or EHLO before MAIL");
            return self.count_error();
        }
        if self.tx.is_some() {
            self.reply(503, [5, 5, 1], "Sender already specified");
            return self.count_error();
        }
        let max = self.shared.config.max_message_size;
        if max > 0 && from.size > max {
            self.reply(
                552,
                [5, 3, 4],
                format!("Message size exceeds fixed maximum message size of {max} bytes"),
            );
            return Flow::Continue;
        }
        let sender = if from.address.is_empty() {
            None
        } else {
            match MailAddress::parse(&from.address) {
                Ok(a) => Some(a),
                Err(e) => {
                    self.reply(
                        501,
                        [5, 1, 7],
                        format!("Syntax error in sender address: {e}"),
                    );
                    return self.count_error();
                }
            }
        };
        let shown = sender.as_ref().map(ToString::to_string).unwrap_or_default();
        self.tx = Some(Transaction {
            sender,
            recipients: Vec::new(),
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
            bdat: None,
            _incoming: self.shared.spool.incoming(),
        });
        self.reply(250, [2, 1, 0], format!("Sender <{shown}> OK"));
        Flow::Continue
    }
}
