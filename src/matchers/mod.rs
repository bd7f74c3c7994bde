//! The matchers, one file each, and the registry that builds them from `match="Name=cond"`.

mod all;
mod has_header;
mod has_mail_attribute;
mod has_mail_attribute_with_value;
mod has_mail_attribute_with_value_regex;
mod has_mime_type;
mod has_mime_type_parameter;
mod host_is_local;
mod is_marked_as_spam;
mod is_single_recipient;
mod recipient_is;
mod relay_limit;
mod remote_addr_in_network;
mod remote_addr_not_in_network;
mod sender_is;
mod sender_is_local;
mod sender_is_null;
mod sent_by_mailet;
mod size_greater_than;
mod smtp_auth_successful;
mod smtp_is_auth_network;

use crate::config::ConfigError;
use crate::pipeline::registry::{Builder, Registry};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig};

/// Every known matcher (the container's matcher loader).
pub static REGISTRY: Registry<dyn Matcher, MatcherConfig> =
    Registry::new("matcher", CLASS_PREFIXES, ENTRIES);

/// Short name → builder.
const ENTRIES: &[(&str, Builder<dyn Matcher, MatcherConfig>)] = &[
    ("All", all::All::build),
    ("HasHeader", has_header::HasHeader::build),
    (
        "HasMailAttribute",
        has_mail_attribute::HasMailAttribute::build,
    ),
    (
        "HasMailAttributeWithValue",
        has_mail_attribute_with_value::HasMailAttributeWithValue::build,
    ),
    (
        "HasMailAttributeWithValueRegex",
        has_mail_attribute_with_value_regex::HasMailAttributeWithValueRegex::build,
    ),
    ("HasMimeType", has_mime_type::HasMimeType::build),
    (
        "HasMimeTypeParameter",
        has_mime_type_parameter::HasMimeTypeParameter::build,
    ),
    ("HostIsLocal", host_is_local::HostIsLocal::build),
    ("IsMarkedAsSpam", is_marked_as_spam::IsMarkedAsSpam::build),
    (
        "IsSingleRecipient",
        is_single_recipient::IsSingleRecipient::build,
    ),
    ("RecipientIs", recipient_is::RecipientIs::build),
    ("RecipientIsLocal", host_is_local::HostIsLocal::build),
    ("RelayLimit", relay_limit::RelayLimit::build),
    (
        "RemoteAddrInNetwork",
        remote_addr_in_network::RemoteAddrInNetwork::build,
    ),
    (
        "RemoteAddrNotInNetwork",
        remote_addr_not_in_network::RemoteAddrNotInNetwork::build,
    ),
    ("SenderIs", sender_is::SenderIs::build),
    ("SenderIsLocal", sender_is_local::SenderIsLocal::build),
    ("SenderIsNull", sender_is_null::SenderIsNull::build),
    ("SentByMailet", sent_by_mailet::SentByMailet::build),
    ("SizeGreaterThan", size_greater_than::SizeGreaterThan::build),
    (
        "SMTPAuthSuccessful",
        smtp_auth_successful::SMTPAuthSuccessful::build,
    ),
    (
        "SMTPIsAuthNetwork",
        smtp_is_auth_network::SMTPIsAuthNetwork::build,
    ),
];

/// Package prefixes that resolve to the same implementation as the short name.
pub const CLASS_PREFIXES: &[&str] = &[
    "org.apache.james.transport.matchers.",
    "com.linagora.tmail.mailet.",
];

/// Builds the matcher `config.class` names (see [`REGISTRY`]).
pub fn build(config: &MatcherConfig, ctx: &MailetContext) -> Result<Box<dyn Matcher>, ConfigError> {
    REGISTRY.build(config, ctx)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the matcher unit tests: a mail, a context (local domain `example.org`),
    //! and running a matcher by name as the container would build it.

    use crate::mail::{Mail, MailAddress};
    use crate::pipeline::{MailetContext, MatcherConfig};

    /// A mail from `sender` to `recipients` with `message` as raw text.
    pub fn mail(sender: Option<&str>, recipients: &[&str], message: &str) -> Mail {
        Mail::new(
            sender.map(|s| MailAddress::parse(s).unwrap()),
            recipients
                .iter()
                .map(|r| MailAddress::parse(r).unwrap())
                .collect(),
            message.as_bytes().to_vec(),
        )
    }

    /// The test context.
    pub fn ctx() -> MailetContext {
        MailetContext::for_tests(std::env::temp_dir())
    }

    /// The recipients `name=condition` matches.
    pub fn run(name: &str, condition: Option<&str>, mail: &Mail) -> Vec<String> {
        let matcher = super::build(&MatcherConfig::inline(name, condition), &ctx()).unwrap();
        matcher
            .match_mail(mail, &ctx())
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    /// The build error of `name=condition`.
    pub fn build_err(name: &str, condition: Option<&str>) -> String {
        match super::build(&MatcherConfig::inline(name, condition), &ctx()) {
            Ok(_) => panic!("{name} built"),
            Err(e) => e.to_string(),
        }
    }
}
