//! The SMTP session over an in-memory pipe: whatever bytes a client sends (commands, DATA,
//! BDAT chunks, garbage), the session must answer and end without panicking, hanging or
//! growing without bound. Accepted mails go to a spool that only counts them.

#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use mailetd::config::smtpserver::{self, SmtpServerConfig};
use mailetd::config::XmlDocument;
use mailetd::mail::{Mail, MailId};
use mailetd::outbox::OutboxJob;
use mailetd::spool::{Spool, SpoolError};

struct CountingSpool;

#[async_trait::async_trait]
impl Spool for CountingSpool {
    async fn enqueue(&self, mail: Mail) -> Result<MailId, SpoolError> {
        // a mail that got this far is whole: envelope set, message not empty
        assert!(!mail.recipients.is_empty());
        Ok(1)
    }
    async fn dequeue(&self) -> Option<Mail> {
        None
    }
    async fn complete(&self, _: MailId, _: Vec<OutboxJob>) -> Result<(), SpoolError> {
        Ok(())
    }
    async fn retry_at(&self, _: &Mail, _: u64) -> Result<(), SpoolError> {
        Ok(())
    }
    fn depth(&self) -> usize {
        0
    }
    fn close(&self) {}
}

/// Small limits so that the fuzzer reaches them: 1 kB lines, 64 kB messages.
const XML: &str = "<smtpservers><smtpserver enabled=\"true\"><bind>127.0.0.1:2525</bind>\
<helloName autodetect=\"false\">fuzz.test</helloName><authorizedAddresses>127.0.0.0/8</authorizedAddresses>\
<maxmessagesize>64k</maxmessagesize><addressBracketsEnforcement>false</addressBracketsEnforcement>\
</smtpserver></smtpservers>";

fn setup() -> &'static (tokio::runtime::Runtime, SmtpServerConfig, Arc<dyn Spool>) {
    static SETUP: OnceLock<(tokio::runtime::Runtime, SmtpServerConfig, Arc<dyn Spool>)> =
        OnceLock::new();
    SETUP.get_or_init(|| {
        let doc = XmlDocument::parse(XML, Path::new("smtpserver.xml")).unwrap();
        let mut config = smtpserver::parse(&doc, Path::new(".")).unwrap().remove(0);
        config.max_line_length = 1024;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (rt, config, Arc::new(CountingSpool))
    })
}

fuzz_target!(|data: &[u8]| {
    let (rt, config, spool) = setup();
    let replies = rt.block_on(mailetd::ingest::session_in_memory(
        config.clone(),
        spool.clone(),
        data,
    ));
    assert!(replies.starts_with(b"220 "), "no greeting");
    // every reply line is a 3-digit code, and the server answers with bounded output
    for line in replies.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(
            line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit),
            "malformed reply line {:?}",
            String::from_utf8_lossy(line)
        );
    }
});
