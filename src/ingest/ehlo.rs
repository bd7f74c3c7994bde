//! HELO and EHLO: a new greeting resets the transaction; EHLO lists the extensions.

use smtp_proto::{
    EXT_8BIT_MIME, EXT_CHUNKING, EXT_ENHANCED_STATUS_CODES, EXT_PIPELINING, EXT_SIZE,
    EXT_SMTP_UTF8, EXT_START_TLS, EhloResponse,
};

use super::session::Session;

/// EHLO keywords and their `disabledFeatures` names.
const FEATURES: &[(&str, u32)] = &[
    ("PIPELINING", EXT_PIPELINING),
    ("8BITMIME", EXT_8BIT_MIME),
    ("ENHANCEDSTATUSCODES", EXT_ENHANCED_STATUS_CODES),
    ("CHUNKING", EXT_CHUNKING),
    ("SMTPUTF8", EXT_SMTP_UTF8),
    ("SIZE", EXT_SIZE),
    ("STARTTLS", EXT_START_TLS),
];

impl Session {
    pub(super) fn handle_ehlo(&mut self, host: &str, extended: bool) {
        // The name goes into replies and the Received: header: no control characters.
        if host.chars().any(char::is_control) {
            self.reply(501, [5, 5, 4], "Invalid domain name");
            return;
        }
        self.tx = None;
        self.helo = Some(host.to_string());
        self.esmtp = extended;
        let config = &self.shared.config;
        let first = format!("{} Hello {host} [{}]", config.hello_name, self.client_ip());
        if !extended {
            self.reply_raw(&format!("250 {first}"));
            return;
        }
        let mut capabilities = EXT_PIPELINING
            | EXT_8BIT_MIME
            | EXT_ENHANCED_STATUS_CODES
            | EXT_CHUNKING
            | EXT_SMTP_UTF8;
        if config.max_message_size > 0 {
            capabilities |= EXT_SIZE;
        }
        if config.tls.as_ref().is_some_and(|t| t.start_tls) && !self.stream.is_tls() {
            capabilities |= EXT_START_TLS;
        }
        for (name, bit) in FEATURES {
            if config.disabled_features.iter().any(|d| d == name) {
                capabilities &= !bit;
            }
        }
        let mut response = EhloResponse::new(config.hello_name.as_str());
        response.capabilities = capabilities;
        response.size = config.max_message_size;
        let mut lines = Vec::new();
        let _ = response.write(&mut lines);
        // smtp-proto's first line is its own banner; James's is "<name> Hello <helo> [<ip>]".
        let rest = match lines.iter().position(|&b| b == b'\n') {
            Some(i) => lines.split_off(i + 1),
            None => Vec::new(),
        };
        if rest.is_empty() {
            self.reply_raw(&format!("250 {first}"));
        } else {
            self.reply_raw(&format!("250-{first}"));
            self.reply_raw(String::from_utf8_lossy(&rest).trim_end());
        }
    }
}
