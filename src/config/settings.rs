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
