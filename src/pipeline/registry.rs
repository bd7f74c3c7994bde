//! The loaders the container builds its mailets and matchers with (James `MailetLoader` and
//! `MatcherLoader`): a registry of short names to builders, handed to the container by whoever
//! assembles the process, so that the engine does not know the implementations.

use crate::config::ConfigError;
use crate::config::component::{ComponentConfig, MailetConfig, MatcherConfig};
use crate::config::error::{did_you_mean, strip_class_prefix};

use super::{Mailet, MailetContext, Matcher};

/// Builds one component from its configuration, checking every parameter once.
pub type Builder<T, C> = fn(&C, &MailetContext) -> Result<Box<T>, ConfigError>;

/// Short names → builders, with the package prefixes that resolve to the same names.
pub struct Registry<T: ?Sized + 'static, C: 'static> {
    /// What an unknown name is called in errors (`mailet class`, `matcher`).
    kind: &'static str,
    /// Package prefixes stripped from a class before the lookup.
    prefixes: &'static [&'static str],
    /// Every known short name and its builder.
    entries: &'static [(&'static str, Builder<T, C>)],
    /// A better explanation than "unknown" for some classes (a delivery mailet, ...).
    explain: fn(&C) -> Option<String>,
}

impl<T: ?Sized + 'static, C: ComponentConfig + 'static> Registry<T, C> {
    /// A registry of `entries`; unknown names get a did-you-mean.
    pub const fn new(
        kind: &'static str,
        prefixes: &'static [&'static str],
        entries: &'static [(&'static str, Builder<T, C>)],
    ) -> Self {
        Registry {
            kind,
            prefixes,
            entries,
            explain: |_| None,
        }
    }

    /// The same registry, asking `explain` about an unknown class before the did-you-mean.
    pub const fn explaining(self, explain: fn(&C) -> Option<String>) -> Self {
        Registry { explain, ..self }
    }

    /// The short name of `class` (`org.apache.james.transport.mailets.Null` → `Null`).
    pub fn short_name<'a>(&self, class: &'a str) -> &'a str {
        strip_class_prefix(class, self.prefixes)
    }

    /// Every known short name.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|(name, _)| *name)
    }

    /// Builds the component `config.class` names, or explains which names are known.
    pub fn build(&self, config: &C, ctx: &MailetContext) -> Result<Box<T>, ConfigError> {
        let name = self.short_name(config.class());
        match self.entries.iter().find(|(known, _)| *known == name) {
            Some((_, builder)) => builder(&config.named(name), ctx),
            None => {
                if let Some(text) = (self.explain)(config) {
                    return Err(config.error(text));
                }
                let hint = did_you_mean(name, self.names());
                Err(config.error(format!("unknown {} {:?}{hint}", self.kind, config.class())))
            }
        }
    }
}

/// The two registries a container is built with.
#[derive(Clone, Copy)]
pub struct Loaders {
    /// Mailets by class.
    pub mailets: &'static Registry<dyn Mailet, MailetConfig>,
    /// Matchers by class.
    pub matchers: &'static Registry<dyn Matcher, MatcherConfig>,
}
