//! A configuration directory loaded as a whole: `mailetcontainer.xml`, `domainlist.xml`, every
//! `*.properties` file and `mailetd.toml` (the pipeline turns it into the context mailets see).

use std::path::{Path, PathBuf};

use super::domainlist::DomainList;
use super::error::ConfigError;
use super::mailetcontainer::MailetContainerConfig;
use super::properties::Properties;
use super::settings::Settings;
use crate::mail::MailAddress;

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
    /// `mailetd.toml`.
    pub settings: Settings,
    /// Every `*.properties` file of the directory, merged (later files win).
    pub properties: Properties,
    /// The postmaster address (`<context><postmaster>`, completed with a local domain).
    pub postmaster: MailAddress,
}

impl ConfDir {
    /// Where repositories and other state live (`data_dir` of mailetd.toml).
    pub fn data_dir(&self) -> &Path {
        &self.settings.data_dir
    }
}

impl ConfDir {
    /// Loads `dir`. Every error names the file, line and column.
    pub fn load(dir: &Path) -> Result<ConfDir, ConfigError> {
        match Self::load_all(dir) {
            (Some(conf), errors) if errors.is_empty() => Ok(conf),
            (_, mut errors) => Err(errors.remove(0)),
        }
    }

    /// Loads `dir`, going on after an error so that every file's errors are reported: the
    /// errors, and the configuration when what the container needs loaded (a `.properties`
    /// file in error is left out of it).
    pub fn load_all(dir: &Path) -> (Option<ConfDir>, Vec<ConfigError>) {
        if !dir.is_dir() {
            return (
                None,
                vec![ConfigError::new(format!(
                    "configuration directory {} does not exist",
                    dir.display()
                ))],
            );
        }
        let mut errors = Vec::new();
        let mut keep = |e: ConfigError| errors.push(e);
        let settings = Settings::load(dir).map_err(&mut keep).ok();
        let container_path = dir.join("mailetcontainer.xml");
        let container = if container_path.exists() {
            MailetContainerConfig::load(&container_path)
        } else {
            tracing::info!(
                "{} not found: using the embedded default mailetcontainer.xml",
                container_path.display()
            );
            MailetContainerConfig::parse(
                EMBEDDED_MAILETCONTAINER,
                Path::new(super::mailetcontainer::EMBEDDED_PATH),
            )
        }
        .map_err(&mut keep)
        .ok();
        let domains = DomainList::load(&dir.join("domainlist.xml"))
            .map_err(&mut keep)
            .ok();
        let (properties, property_errors) = Properties::load_dir_all(dir);
        property_errors.into_iter().for_each(&mut keep);
        let postmaster = match (&container, &domains) {
            (Some(c), Some(d)) => postmaster_address(c, d).map_err(&mut keep).ok(),
            _ => None,
        };
        let (Some(settings), Some(container), Some(domains), Some(postmaster)) =
            (settings, container, domains, postmaster)
        else {
            return (None, errors);
        };
        let conf = ConfDir {
            dir: dir.to_path_buf(),
            container,
            domains,
            settings,
            properties,
            postmaster,
        };
        (Some(conf), errors)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn loads_everything_into_the_context() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "mailetcontainer.xml",
            "<mailetcontainer><context><postmaster>Admin</postmaster></context></mailetcontainer>",
        );
        write(
            d,
            "domainlist.xml",
            "<domainlist><domainnames><domainname>localhost</domainname><domainname>Example.org</domainname></domainnames><defaultDomain>example.org</defaultDomain></domainlist>",
        );
        write(d, "a.properties", "k=1\nshared=a\n");
        write(d, "b.properties", "shared=b\n");
        write(
            d,
            "mailetd.toml",
            "data_dir = \"/srv/mailetd\"\nretry_base_secs = 7\n",
        );
        let conf = ConfDir::load(d).unwrap();
        assert_eq!(conf.domains.domains, ["localhost", "example.org"]);
        assert_eq!(conf.domains.default_domain, "example.org");
        assert_eq!(conf.postmaster.to_string(), "admin@example.org");
        assert_eq!(conf.properties.get("k"), Some("1"));
        assert_eq!(conf.properties.get("shared"), Some("b"), "later files win");
        assert_eq!(conf.data_dir(), Path::new("/srv/mailetd"));
        assert_eq!(conf.settings.retry_base_secs, 7);
    }

    #[test]
    fn missing_files_fall_back_to_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let conf = ConfDir::load(dir.path()).unwrap();
        let states: Vec<&str> = conf
            .container
            .processors
            .iter()
            .map(|p| p.state.as_str())
            .collect();
        assert_eq!(states, ["root", "error", "transport"]);
        assert_eq!(conf.domains.domains, ["localhost"]);
        assert_eq!(conf.postmaster.to_string(), "postmaster@localhost");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // a file mailetd does not read stops nothing; openpaas.properties does
        write(
            dir.path(),
            "postgres.properties",
            "url=${env:MAILETD_TEST_UNSET_CONF_DIR}\n",
        );
        ConfDir::load(dir.path()).expect("postgres.properties is not mailetd's");
        write(
            dir.path(),
            "openpaas.properties",
            "a=${env:MAILETD_TEST_UNSET_CONF_DIR}\n",
        );
        let err = ConfDir::load(dir.path()).err().unwrap().to_string();
        assert!(
            err.starts_with(&format!(
                "{}:1:3: environment variable MAILETD_TEST_UNSET_CONF_DIR is not set",
                dir.path().join("openpaas.properties").display()
            )),
            "{err}"
        );
        let err = ConfDir::load(&dir.path().join("nope"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.ends_with("nope does not exist"), "{err}");
    }
}
