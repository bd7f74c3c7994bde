//! Configuration: what a user writes (James XML, `.properties`, `mailetd.toml`), parsed with
//! positions so that every error names the file, line and column.

pub mod component;
pub mod consolidate;
pub mod error;
pub mod interpolate;
pub mod networks;
pub mod properties;
pub mod secret;
pub mod settings;
pub mod smtpserver;
pub mod xml;

pub use error::{ConfigError, ConfigErrors, Position};
pub use networks::Networks;
pub use properties::Properties;
pub use secret::Secret;
pub use settings::Settings;
pub use xml::{Element, XmlDocument};

pub mod domainlist;
pub mod mailetcontainer;

pub use domainlist::DomainList;
pub use mailetcontainer::MailetContainerConfig;

mod conf_dir;
pub use conf_dir::{ConfDir, EMBEDDED_MAILETCONTAINER};
