//! The matchers, one file each, and the registry that builds them from `match="Name=cond"`.

mod all;

use crate::config::ConfigError;
use crate::config::error::closest_names;
use crate::pipeline::{MailetContext, Matcher, MatcherConfig};

/// Builds a matcher from its configuration.
pub type MatcherBuilder =
    fn(&MatcherConfig, &MailetContext) -> Result<Box<dyn Matcher>, ConfigError>;

/// Every known matcher: short name → builder.
pub const REGISTRY: &[(&str, MatcherBuilder)] = &[("All", all::All::build)];

/// Package prefixes that resolve to the same implementation as the short name.
pub const CLASS_PREFIXES: &[&str] = &[
    "org.apache.james.transport.matchers.",
    "com.linagora.tmail.mailet.",
];

/// The short name of a matcher class.
pub fn short_name(class: &str) -> &str {
    CLASS_PREFIXES
        .iter()
        .find_map(|p| class.strip_prefix(p))
        .unwrap_or(class)
}

/// Builds the matcher named by `config.name`, or explains which names are known.
pub fn build(config: &MatcherConfig, ctx: &MailetContext) -> Result<Box<dyn Matcher>, ConfigError> {
    match REGISTRY.iter().find(|(name, _)| *name == config.name) {
        Some((_, builder)) => builder(config, ctx),
        None => {
            let suggestions = closest_names(&config.name, REGISTRY.iter().map(|(n, _)| *n));
            let hint = if suggestions.is_empty() {
                String::new()
            } else {
                format!("; did you mean {}?", suggestions.join(", "))
            };
            Err(config.error(format!("unknown matcher {:?}{hint}", config.class)))
        }
    }
}
