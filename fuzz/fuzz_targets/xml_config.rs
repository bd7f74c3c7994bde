//! The XML config loader: any text as mailetcontainer.xml and as smtpserver.xml. Errors are
//! fine (they name file:line:col); panics, hangs and unbounded allocations are not.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mailetd::config::{MailetContainerConfig, XmlDocument, smtpserver};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("conf/mailetcontainer.xml");
    if let Err(e) = MailetContainerConfig::parse(text, path) {
        assert!(e.to_string().contains("mailetcontainer.xml"), "{e}");
    }
    let path = Path::new("conf/smtpserver.xml");
    if let Ok(doc) = XmlDocument::parse(text, path) {
        let _ = smtpserver::parse(&doc, Path::new("."));
    }
});
