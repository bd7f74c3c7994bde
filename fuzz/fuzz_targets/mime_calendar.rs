//! MIME → calendar extraction: any message through StripAttachment (text/calendar),
//! MimeDecodingMailet and ICalendarParser, as in the Twake chain. No panic, no hang.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mailetd::config::MailetContainerConfig;
use mailetd::mail::{Mail, MailAddress};
use mailetd::pipeline::{Container, MailetContext, Run};

const XML: &str = r#"<mailetcontainer><processors>
<processor state="root">
  <mailet match="All" class="StripAttachment"><mimeType>text/calendar</mimeType><attribute>rawIcalendar</attribute></mailet>
  <mailet match="All" class="StripAttachment"><pattern>.*\.ics</pattern><attribute>rawIcalendar</attribute></mailet>
  <mailet match="All" class="MimeDecodingMailet"><attribute>rawIcalendar</attribute></mailet>
  <mailet match="All" class="ICalendarParser"><sourceAttribute>rawIcalendar</sourceAttribute><destinationAttribute>icalendar</destinationAttribute></mailet>
  <mailet match="All" class="Null"/>
</processor>
<processor state="error"><mailet match="All" class="Null"/></processor>
</processors></mailetcontainer>"#;

fn setup() -> &'static (tokio::runtime::Runtime, Container) {
    static SETUP: OnceLock<(tokio::runtime::Runtime, Container)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let config = MailetContainerConfig::parse(XML, Path::new("mailetcontainer.xml")).unwrap();
        let context = MailetContext::for_tests(std::env::temp_dir().join("mailetd-fuzz"));
        let container = Container::build(&config, &context, mailetd::server::loaders()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (rt, container)
    })
}

fuzz_target!(|data: &[u8]| {
    let (rt, container) = setup();
    let mail = Mail::new(
        Some(MailAddress::parse("alice@example.org").unwrap()),
        vec![MailAddress::parse("bob@example.org").unwrap()],
        data.to_vec(),
    );
    let mut run = Run::default();
    let _ = rt.block_on(container.process(mail, &mut run));
});
