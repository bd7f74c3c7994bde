//! The mailets, one file each, named after the James mailet they mirror, and the registry
//! that builds them from `<mailet class="…">`. Adding a mailet: one file, one line below.

mod card_dav_collected_contact;
mod null;

use crate::config::ConfigError;
use crate::config::error::closest_names;
use crate::pipeline::{Mailet, MailetConfig, MailetContext};

/// Builds a mailet from its configuration.
pub type MailetBuilder = fn(&MailetConfig, &MailetContext) -> Result<Box<dyn Mailet>, ConfigError>;

/// Every known mailet: short name → builder.
pub const REGISTRY: &[(&str, MailetBuilder)] = &[
    ("Null", null::Null::build),
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

/// The short name of a mailet class (`org.apache.james.transport.mailets.Null` → `Null`).
pub fn short_name(class: &str) -> &str {
    CLASS_PREFIXES
        .iter()
        .find_map(|p| class.strip_prefix(p))
        .unwrap_or(class)
}

/// Builds the mailet named by `config.name`, or explains which names are known.
pub fn build(config: &MailetConfig, ctx: &MailetContext) -> Result<Box<dyn Mailet>, ConfigError> {
    match REGISTRY.iter().find(|(name, _)| *name == config.name) {
        Some((_, builder)) => builder(config, ctx),
        None => {
            let suggestions = closest_names(&config.name, REGISTRY.iter().map(|(n, _)| *n));
            let hint = if suggestions.is_empty() {
                String::new()
            } else {
                format!("; did you mean {}?", suggestions.join(", "))
            };
            Err(config.error(format!("unknown mailet class {:?}{hint}", config.class)))
        }
    }
}
