//! The configuration of one `<mailet>` or matcher reference, as read from
//! `mailetcontainer.xml`: what the pipeline's loaders build mailets and matchers from.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use super::{ConfigError, Position};
use crate::sync::Locked;

/// One `<mailet>` parameter (a child element).
#[derive(Clone, Debug)]
pub struct Parameter {
    /// Element name, with `..` turned into `.` as James does.
    pub name: String,
    /// Text content; repeats of the same element are joined with `,`.
    pub value: String,
    /// Where the element is.
    pub position: Position,
}

/// The configuration of one `<mailet>` element.
#[derive(Clone, Debug)]
pub struct MailetConfig {
    /// The `class` attribute as written.
    pub class: String,
    /// The resolved short name (`org.apache.james.transport.mailets.Null` → `Null`).
    pub name: String,
    /// The processor it belongs to.
    pub processor: String,
    /// Parameters in document order.
    pub parameters: Vec<Parameter>,
    /// Where the `<mailet>` element is.
    pub position: Position,
    /// The parameter names the mailet's constructor asked for (present or not): the ones it
    /// knows, for the warning about the others.
    pub asked: Arc<Mutex<BTreeSet<String>>>,
}

impl MailetConfig {
    /// A config built in code (tests, replay), positioned nowhere in particular.
    pub fn inline(name: &str, parameters: &[(&str, &str)]) -> Self {
        let position = Position::file_start(std::path::Path::new("<inline>"));
        MailetConfig {
            class: name.to_string(),
            name: name.to_string(),
            processor: "root".to_string(),
            parameters: parameters
                .iter()
                .map(|(n, v)| Parameter {
                    name: n.to_string(),
                    value: v.to_string(),
                    position: position.clone(),
                })
                .collect(),
            position,
            asked: Arc::default(),
        }
    }

    /// The parameter names the constructor asked for.
    pub fn asked_parameters(&self) -> BTreeSet<String> {
        self.asked.locked().clone()
    }

    /// Every parameter, for mailets whose parameter names are free (`SetMailAttribute`).
    pub fn all_parameters(&self) -> &[Parameter] {
        self.asked
            .locked()
            .extend(self.parameters.iter().map(|p| p.name.clone()));
        &self.parameters
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.parameter(name).map(|p| p.value.as_str())
    }

    /// A parameter with its position.
    pub fn parameter(&self, name: &str) -> Option<&Parameter> {
        self.asked.locked().insert(name.to_string());
        self.parameters.iter().find(|p| p.name == name)
    }

    /// A parameter's value, or `default` when absent.
    pub fn get_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    /// A required, non-blank parameter.
    pub fn require(&self, name: &str) -> Result<&str, ConfigError> {
        match self.get(name) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            Some(_) => Err(self.error(format!(
                "parameter <{name}> of mailet {} is empty: a value is required",
                self.class
            ))),
            None => Err(self.error(format!(
                "mailet {} requires the parameter <{name}>",
                self.class
            ))),
        }
    }

    /// A boolean parameter (`true`/`false`/`yes`/`no`, case-insensitive).
    pub fn get_bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.parameter(name) {
            None => Ok(default),
            Some(p) => match p.value.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => Ok(true),
                "false" | "no" | "off" => Ok(false),
                other => Err(p.position.error(format!(
                    "parameter <{name}> is {other:?}: expected true or false"
                ))),
            },
        }
    }

    /// A non-negative integer parameter.
    pub fn get_u64(&self, name: &str, default: u64) -> Result<u64, ConfigError> {
        match self.parameter(name) {
            None => Ok(default),
            Some(p) => p.value.trim().parse().map_err(|_| {
                p.position.error(format!(
                    "parameter <{name}> is {:?}: expected a non-negative integer",
                    p.value
                ))
            }),
        }
    }

    /// An error at the `<mailet>` element.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        self.position.error(message)
    }
}

/// The configuration of one matcher: `match="Name=condition"`.
#[derive(Clone, Debug)]
pub struct MatcherConfig {
    /// The matcher name as written (before the first `=`).
    pub class: String,
    /// The resolved short name.
    pub name: String,
    /// Everything after the first `=`, if there was one.
    pub condition: Option<String>,
    /// Where the `match` attribute is.
    pub position: Position,
}

impl MatcherConfig {
    /// A config built in code (tests).
    pub fn inline(name: &str, condition: Option<&str>) -> Self {
        MatcherConfig {
            class: name.to_string(),
            name: name.to_string(),
            condition: condition.map(String::from),
            position: Position::file_start(std::path::Path::new("<inline>")),
        }
    }

    /// The condition, which must be present and non-blank.
    pub fn require_condition(&self) -> Result<&str, ConfigError> {
        match self.condition.as_deref() {
            Some(c) if !c.trim().is_empty() => Ok(c.trim()),
            _ => Err(self.error(format!(
                "matcher {} needs a condition: write match=\"{}=…\"",
                self.class, self.class
            ))),
        }
    }

    /// An error at the matcher.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        self.position.error(message)
    }
}

/// What a loader needs of a component's configuration, mailet or matcher alike.
pub trait ComponentConfig: Clone {
    /// The `class` (or `match`) as written.
    fn class(&self) -> &str;
    /// The same configuration under the short name the loader resolved.
    fn named(&self, name: &str) -> Self;
    /// An error positioned at the element.
    fn error(&self, message: impl Into<String>) -> ConfigError;
}

/// The same accessors for both configurations.
macro_rules! component_config {
    ($($config:ident),*) => {$(
        impl ComponentConfig for $config {
            fn class(&self) -> &str {
                &self.class
            }
            fn named(&self, name: &str) -> Self {
                $config {
                    name: name.to_string(),
                    ..self.clone()
                }
            }
            fn error(&self, message: impl Into<String>) -> ConfigError {
                $config::error(self, message)
            }
        }
    )*};
}
component_config!(MailetConfig, MatcherConfig);

/// The last dot-separated segment of a class name: the name a component is shown under until
/// a loader resolves it (`org.apache.james.transport.mailets.Null` → `Null`).
pub fn simple_name(class: &str) -> &str {
    class.rsplit('.').next().unwrap_or(class)
}
