//! A configuration directory loaded as a whole: `mailetcontainer.xml`, `domainlist.xml`, every
//! `*.properties` file and `mailetd.toml`, turned into the [`MailetContext`] mailets see.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::domainlist::DomainList;
use super::error::ConfigError;
use super::mailetcontainer::MailetContainerConfig;
use super::properties::Properties;
use super::settings::Settings;
use crate::mail::MailAddress;
use crate::pipeline::MailetContext;

/// The `mailetcontainer.xml` used when the conf directory has none (James falls back to a
/// built-in default set of processors too).
pub const EMBEDDED_MAILETCONTAINER: &str = include_str!("../../conf/mailetcontainer.xml");

/// Everything read from a conf directory.
#[derive(Clone)]
pub struct ConfDir {
    /// The directory.
    pub dir: PathBuf,
    /// `mailetcontainer.xml` (or the embedded default).
    pub container: MailetContainerConfig,
    /// `domainlist.xml`.
    pub domains: DomainList,
    /// The context built from all of it.
    pub context: MailetContext,
}

impl ConfDir {
    /// Loads `dir`. Every error names the file, line and column.
    pub fn load(dir: &Path) -> Result<ConfDir, ConfigError> {
        if !dir.is_dir() {
            return Err(ConfigError::new(format!(
                "configuration directory {} does not exist",
                dir.display()
            )));
        }
        let settings = Settings::load(dir)?;
        let container_path = dir.join("mailetcontainer.xml");
        let container = if container_path.exists() {
            MailetContainerConfig::load(&container_path)?
        } else {
            tracing::info!(
                "{} not found: using the embedded default mailetcontainer.xml",
                container_path.display()
            );
            MailetContainerConfig::parse(
                EMBEDDED_MAILETCONTAINER,
                Path::new("<embedded>/mailetcontainer.xml"),
            )?
        };
        let domains = DomainList::load(&dir.join("domainlist.xml"))?;
        let properties = Properties::load_dir(dir)?;
        let postmaster = postmaster_address(&container, &domains)?;
        let context = MailetContext {
            local_domains: domains.domains.clone(),
            default_domain: domains.default_domain.clone(),
            postmaster,
            data_dir: settings.data_dir.clone(),
            conf_dir: dir.to_path_buf(),
            properties,
            settings,
            dry_run: false,
            store: None,
            dav: Arc::default(),
        };
        Ok(ConfDir {
            dir: dir.to_path_buf(),
            container,
            domains,
            context,
        })
    }
}

/// James `JamesMailetContext`: lowercased; without `@`, the first non-localhost domain is
/// appended.
fn postmaster_address(
    container: &MailetContainerConfig,
    domains: &DomainList,
) -> Result<MailAddress, ConfigError> {
    let mut text = container.postmaster.trim().to_lowercase();
    if !text.contains('@') {
        let domain = domains
            .domains
            .iter()
            .find(|d| d.as_str() != "localhost")
            .map(String::as_str)
            .unwrap_or("localhost");
        text = format!("{text}@{domain}");
    }
    MailAddress::parse(&text).map_err(|e| {
        container
            .position
            .error(format!("<context><postmaster> is not an address: {e}"))
    })
}
