//! The mailets, one file each, named after the James mailet they mirror, and the registry
//! that builds them from `<mailet class="…">`. Adding a mailet: one file, one line below.

mod add_header;
mod address_list;
mod amqp_forward_attribute;
pub mod cal_dav_collect;
mod card_dav_collected_contact;
mod consolidated_calendar;
mod contact_extractor;
mod i_calendar_parser;
mod ical_to_header;
mod ical_to_json_attribute;
mod log_message;
mod metrics_mailet;
mod mime_decoding_mailet;
mod not_a_collector;
mod null;
mod postmaster_alias;
mod recipient_to_lower_case;
mod remove_mail_attribute;
mod remove_mime_header;
mod set_mail_attribute;
mod set_mime_header;
mod strip_attachment;
mod to_processor;
mod to_repository;

use crate::config::ConfigError;
use crate::pipeline::registry::{Builder, Registry};
use crate::pipeline::{Mailet, MailetConfig, MailetContext};

/// Every known mailet (the container's mailet loader).
pub static REGISTRY: Registry<dyn Mailet, MailetConfig> =
    Registry::new("mailet class", CLASS_PREFIXES, ENTRIES).explaining(explain_unknown);

/// Short name → builder.
const ENTRIES: &[(&str, Builder<dyn Mailet, MailetConfig>)] = &[
    ("Null", null::Null::build),
    ("AddHeader", add_header::AddHeader::build),
    ("LogMessage", log_message::LogMessage::build),
    ("MetricsMailet", metrics_mailet::MetricsMailet::build),
    ("PostmasterAlias", postmaster_alias::PostmasterAlias::build),
    (
        "RemoveMailAttribute",
        remove_mail_attribute::RemoveMailAttribute::build,
    ),
    (
        "RemoveMimeHeader",
        remove_mime_header::RemoveMimeHeader::build,
    ),
    (
        "SetMailAttribute",
        set_mail_attribute::SetMailAttribute::build,
    ),
    ("SetMimeHeader", set_mime_header::SetMimeHeader::build),
    (
        "AmqpForwardAttribute",
        amqp_forward_attribute::AmqpForwardAttribute::build,
    ),
    (
        "RecipientToLowerCase",
        recipient_to_lower_case::RecipientToLowerCase::build,
    ),
    (
        "ContactExtractor",
        contact_extractor::ContactExtractor::build,
    ),
    ("ToProcessor", to_processor::ToProcessor::build),
    ("ToRepository", to_repository::ToRepository::build),
    (
        "ConsolidatedCalendar",
        consolidated_calendar::ConsolidatedCalendar::build,
    ),
    ("ICalendarParser", i_calendar_parser::ICalendarParser::build),
    ("ICALToHeader", ical_to_header::ICALToHeader::build),
    (
        "ICALToJsonAttribute",
        ical_to_json_attribute::ICALToJsonAttribute::build,
    ),
    (
        "MimeDecodingMailet",
        mime_decoding_mailet::MimeDecodingMailet::build,
    ),
    ("StripAttachment", strip_attachment::StripAttachment::build),
    ("CalDavCollect", cal_dav_collect::CalDavCollect::build),
    (
        "RestrictiveCalDavCollect",
        cal_dav_collect::CalDavCollect::build_restrictive,
    ),
    (
        "CardDavCollectedContact",
        card_dav_collected_contact::CardDavCollectedContact::build,
    ),
];

/// Package prefixes that resolve to the same implementation as the short name.
pub const CLASS_PREFIXES: &[&str] = &[
    "org.apache.james.transport.mailets.",
    "com.linagora.tmail.mailet.",
    "org.apache.james.mailetcontainer.impl.",
];

/// A delivery, bounce or mailbox mailet of any package (`org.apache.james.jmap.mailet.VacationMailet`
/// too) is not part of a collector: say so instead of "unknown".
fn explain_unknown(config: &MailetConfig) -> Option<String> {
    let simple = config.class.rsplit('.').next().unwrap_or(&config.name);
    not_a_collector::explain(simple, &config.class)
}

/// Builds the mailet `config.class` names (see [`REGISTRY`]).
pub fn build(config: &MailetConfig, ctx: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
    REGISTRY.build(config, ctx)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the mailet unit tests.

    use crate::mail::{Mail, MailAddress};
    use crate::pipeline::{MailetConfig, MailetContext, MailetError};

    /// A mail from a@remote.test to bob@example.org with `message` as raw text.
    pub fn mail(message: &str) -> Mail {
        let mut m = Mail::new(
            Some(MailAddress::parse("a@remote.test").unwrap()),
            vec![MailAddress::parse("bob@example.org").unwrap()],
            message.as_bytes().to_vec(),
        );
        m.name = "mail-1".into();
        m
    }

    /// Builds `name` with `params` and services `mail` once.
    pub async fn service(
        name: &str,
        params: &[(&str, &str)],
        mail: &mut Mail,
    ) -> Result<(), MailetError> {
        let ctx = MailetContext::for_tests(std::env::temp_dir());
        let mailet = super::build(&MailetConfig::inline(name, params), &ctx).unwrap();
        mailet.service(mail, &ctx).await
    }

    /// Like [`service`] with a fresh data directory, returned.
    pub async fn service_in_data_dir(
        name: &str,
        params: &[(&str, &str)],
        mail: &mut Mail,
    ) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ctx = MailetContext::for_tests(dir.path().to_path_buf());
        let mailet = super::build(&MailetConfig::inline(name, params), &ctx).unwrap();
        mailet.service(mail, &ctx).await.unwrap();
        dir
    }

    /// The build error of `name` with `params`.
    pub fn build_err(name: &str, params: &[(&str, &str)]) -> String {
        let ctx = MailetContext::for_tests(std::env::temp_dir());
        match super::build(&MailetConfig::inline(name, params), &ctx) {
            Ok(_) => panic!("{name} built"),
            Err(e) => e.to_string(),
        }
    }
}
