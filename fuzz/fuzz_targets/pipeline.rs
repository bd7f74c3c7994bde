//! The whole pipeline on one mail: the Twake example's `mailetcontainer.xml` unchanged
//! (RemoveMimeHeader, StripAttachment, MimeDecodingMailet, ICalendarParser, ICALToHeader,
//! ICALToJsonAttribute, CalDavCollect, CardDavCollectedContact, Null) on any message and a
//! fuzzed recipient count, with `[dav] dialect = "caldav"` so that the DAV jobs are decided
//! and built but nothing goes to the network; then every job through the outbox's JSON
//! form and back. No panic, no hang, and, run with `-rss_limit_mb`, memory bounded: the
//! first input byte times 8 is the number of envelope recipients (up to 2,040), the shape
//! that used to copy the calendar once per recipient (issue 18).

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mailetd::config::MailetContainerConfig;
use mailetd::config::settings::DavDialect;
use mailetd::mail::{Mail, MailAddress};
use mailetd::outbox::OutboxJob;
use mailetd::pipeline::{Container, MailetContext, Run};

const XML: &str = include_str!("../../examples/standalone-email/conf/mailetcontainer.xml");

fn setup() -> &'static (tokio::runtime::Runtime, Container) {
    static SETUP: OnceLock<(tokio::runtime::Runtime, Container)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let config = MailetContainerConfig::parse(XML, Path::new("mailetcontainer.xml")).unwrap();
        let mut context = MailetContext::for_tests(std::env::temp_dir().join("mailetd-fuzz"));
        context.settings.dav.dialect = DavDialect::Caldav;
        context.settings.dav.base_url = "http://127.0.0.1:9".into();
        let container = Container::build(&config, &context, mailetd::server::loaders()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (rt, container)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, message)) = data.split_first() else {
        return;
    };
    let (rt, container) = setup();
    let recipients = (0..usize::from(count) * 8)
        .map(|i| MailAddress::parse(&format!("r{i}@example.org")).unwrap())
        .collect();
    let mail = Mail::new(
        Some(MailAddress::parse("alice.martin@partner.example").unwrap()),
        recipients,
        message.to_vec(),
    );
    let mut run = Run::default();
    let _ = rt.block_on(container.process(mail, &mut run));
    for job in run.jobs {
        let bytes = serde_json::to_vec(&job).expect("a job serialises");
        let back: OutboxJob = serde_json::from_slice(&bytes).expect("a job reads back");
        assert_eq!(back, job);
    }
});
