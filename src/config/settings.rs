//! mailetd's own settings (`conf/mailetd.toml`, overridable by `MAILETD_*` variables), read
//! with the `config` crate. James has no equivalent: these are the things James takes from
//! JVM flags and its own directory layout.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{ConfigError, Position};

/// Settings from `mailetd.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where the spool, outbox and repositories live (relative paths: to the working directory).
    pub data_dir: PathBuf,
    /// Overrides `spooler/threads` of `mailetcontainer.xml` when set.
    pub workers: Option<usize>,
    /// Seconds given to open SMTP sessions and running mails at shutdown.
    pub shutdown_timeout_secs: u64,
    /// Generate a self-signed certificate when the configured PEM files are missing
    /// (James's `--generate-keystore`).
    pub generate_certificate: bool,
    /// Seconds of the first retry delay of a mail whose processing failed (doubled each time).
    pub retry_base_secs: u64,
    /// Outbox (DAV delivery) settings.
    pub outbox: OutboxSettings,
    /// DAV dialect and standard CalDAV/CardDAV endpoints (`[dav]`).
    pub dav: DavSettings,
    /// Mirrored-twice deduplication (`[dedup]`).
    pub dedup: DedupSettings,
}

/// `[dedup]`: the same mail mirrored twice (incoming and outgoing copy of an internal mail)
/// within the window yields its DAV jobs once; see `outbox::dedup`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct DedupSettings {
    /// Seconds during which a second copy is recognised; 0 disables deduplication.
    pub window_secs: u64,
}

impl Default for DedupSettings {
    fn default() -> Self {
        DedupSettings { window_secs: 600 }
    }
}

/// Outbox settings (`[outbox]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct OutboxSettings {
    /// Concurrent delivery workers.
    pub workers: usize,
    /// First retry delay in seconds (doubled each time, with jitter).
    pub retry_base_secs: u64,
    /// Largest retry delay in seconds.
    pub retry_max_secs: u64,
    /// A job older than this (seconds) goes to the dead letters.
    pub max_age_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("var"),
            workers: None,
            shutdown_timeout_secs: 30,
            generate_certificate: false,
            retry_base_secs: 5,
            outbox: OutboxSettings::default(),
            dav: DavSettings::default(),
            dedup: DedupSettings::default(),
        }
    }
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            workers: 8,
            retry_base_secs: 5,
            retry_max_secs: 3600,
            max_age_secs: 3 * 24 * 3600,
        }
    }
}

/// Which DAV server family mailetd talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DavDialect {
    /// Twake/OpenPaaS: esn-sabre with impersonation and the OpenPaaS user API.
    #[default]
    Esn,
    /// Any standard CalDAV/CardDAV server (Radicale, SabreDAV, Nextcloud, Baikal).
    #[serde(alias = "carddav", alias = "standard")]
    Caldav,
}

/// A secret read from the configuration: never shown by `Debug` or `Display`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for building an Authorization header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// `[dav]` of `mailetd.toml`: the dialect, and for the standard dialect where the books are
/// and how to authenticate.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct DavSettings {
    /// `esn` (default) or `caldav` (alias `carddav`).
    pub dialect: DavDialect,
    /// Base URL of the standard server (`http://127.0.0.1:5232`); `{base}` in the templates.
    pub base_url: String,
    /// Address book of collected contacts; `{base}`, `{user}` (owner address), `{local}`
    /// (its local part). A trailing `/` is added when missing.
    pub addressbook_url: String,
    /// Service account used for every user (Basic auth).
    pub username: Option<String>,
    /// Password of the service account.
    pub password: Option<Secret>,
    /// Per-user credentials instead of a service account: `user:password` per line, where
    /// `user` is the owner's address; owners absent from it are not collected for.
    pub credentials_file: Option<PathBuf>,
    /// Create a missing address book once (extended MKCOL) instead of failing.
    pub create_collections: bool,
    /// Accept any TLS certificate (self-signed test servers only).
    pub trust_all_certs: bool,
    /// Seconds before a DAV request is abandoned (and retried later).
    pub timeout_secs: u64,
    /// Largest number of (owner, contact) pairs remembered as already collected.
    pub known_contacts_max: usize,
}

impl Default for DavSettings {
    fn default() -> Self {
        DavSettings {
            dialect: DavDialect::Esn,
            base_url: String::new(),
            addressbook_url: "{base}/{user}/collected/".into(),
            username: None,
            password: None,
            credentials_file: None,
            create_collections: false,
            trust_all_certs: false,
            timeout_secs: 10,
            known_contacts_max: 200_000,
        }
    }
}

impl Settings {
    /// Reads `dir/mailetd.toml` (optional) then `MAILETD_*` variables (`MAILETD_DATA_DIR`,
    /// `MAILETD_OUTBOX__WORKERS`, …).
    pub fn load(conf_dir: &Path) -> Result<Settings, ConfigError> {
        let path = conf_dir.join("mailetd.toml");
        let built = config::Config::builder()
            .add_source(
                config::File::from(path.clone())
                    .format(config::FileFormat::Toml)
                    .required(false),
            )
            .add_source(
                config::Environment::with_prefix("MAILETD")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| Position::file_start(&path).error(e.to_string()))?;
        built
            .try_deserialize()
            .map_err(|e| Position::file_start(&path).error(e.to_string()))
    }

    /// `data_dir` resolved against `base` when relative.
    pub fn data_dir_in(&self, base: &Path) -> PathBuf {
        if self.data_dir.is_absolute() {
            self.data_dir.clone()
        } else {
            base.join(&self.data_dir)
        }
    }
}

#[cfg(test)]
mod dav_tests {
    use super::*;

    #[test]
    fn dav_section_reads_and_hides_the_password() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mailetd.toml"),
            "[dav]\ndialect = \"carddav\"\nbase_url = \"http://127.0.0.1:5232\"\nusername = \"svc\"\npassword = \"s3cret-pw\"\ncreate_collections = true\n",
        )
        .unwrap();
        let settings = Settings::load(dir.path()).unwrap();
        assert_eq!(settings.dav.dialect, DavDialect::Caldav);
        assert_eq!(
            settings.dav.password.as_ref().unwrap().expose(),
            "s3cret-pw"
        );
        assert!(settings.dav.create_collections);
        assert_eq!(settings.dav.addressbook_url, "{base}/{user}/collected/");
        assert!(!format!("{settings:?}").contains("s3cret-pw"));
        let err = {
            std::fs::write(
                dir.path().join("mailetd.toml"),
                "[dav]\ndialect = \"webdav\"\n",
            )
            .unwrap();
            Settings::load(dir.path()).unwrap_err().to_string()
        };
        assert!(err.contains("mailetd.toml"), "{err}");
    }
}
