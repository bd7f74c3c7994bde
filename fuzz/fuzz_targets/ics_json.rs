//! ICS → JSON: any bytes as the raw calendar of a mail, through ICalendarParser,
//! ICALToHeader and ICALToJsonAttribute (the iTIP documents sent to esn-sabre). No panic,
//! no hang; every JSON document produced parses back.

#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mailetd::config::MailetContainerConfig;
use mailetd::mail::{AttributeValue, Mail, MailAddress};
use mailetd::pipeline::{Container, MailetContext, Run};

const XML: &str = r#"<mailetcontainer><processors>
<processor state="root">
  <mailet match="All" class="ICalendarParser"><sourceAttribute>rawIcalendar</sourceAttribute><destinationAttribute>icalendar</destinationAttribute></mailet>
  <mailet match="All" class="ICALToHeader"><attribute>icalendar</attribute></mailet>
  <mailet match="All" class="ICALToJsonAttribute"><source>icalendar</source><destination>icalendarAsJson</destination><rawSource>rawIcalendar</rawSource></mailet>
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
    let mut mail = Mail::new(
        Some(MailAddress::parse("alice@example.org").unwrap()),
        vec![
            MailAddress::parse("bob@example.org").unwrap(),
            MailAddress::parse("carol@example.org").unwrap(),
        ],
        b"Subject: invitation\r\n\r\n".to_vec(),
    );
    let mut raw = BTreeMap::new();
    raw.insert("invite.ics".to_string(), AttributeValue::Bytes(data.to_vec()));
    mail.set_attribute("rawIcalendar", AttributeValue::Map(raw));
    let mut run = Run::default();
    let _ = rt.block_on(container.process(mail, &mut run));
});
