//! VRFY: a collector cannot tell who exists; 252 as RFC 5321 §3.5.3 suggests.

use super::session::Session;

impl Session {
    pub(super) fn handle_vrfy(&mut self, _value: &str) {
        self.reply(
            252,
            [2, 5, 2],
            "Cannot VRFY user, but will accept message and attempt delivery",
        );
    }
}
