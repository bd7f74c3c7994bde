//! mailetd's own settings (`conf/mailetd.toml`, overridable by `MAILETD_*` variables), read
//! with the `config` crate. James has no equivalent: these are the things James takes from
//! JVM flags and its own directory layout.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{ConfigError, Position};
pub use super::secret::Secret;
use super::secret::redact_urls;

/// Default of `smtp_data_timeout_secs`: 64 MiB (the default largest mail) at 128 KiB/s.
pub const DEFAULT_SMTP_DATA_TIMEOUT_SECS: u64 = 512;

/// Settings from `mailetd.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where the spool, outbox and repositories live (relative paths: to the working directory).
    pub data_dir: PathBuf,
    /// Overrides `spooler/threads` of `mailetcontainer.xml` when set.
    pub workers: Option<usize>,
    /// SMTP threads, each an event loop serving its own sessions (default: half the CPUs,
    /// at least one).
    pub smtp_threads: Option<usize>,
    /// Seconds given to open SMTP sessions and running mails at shutdown.
    pub shutdown_timeout_secs: u64,
    /// Seconds one DATA (or BDAT chunk) may take in all; a client trickling bytes just fast
    /// enough to beat `connectiontimeout` is cut off with 421 past it.
    pub smtp_data_timeout_secs: u64,
    /// Generate a self-signed certificate when the configured PEM files are missing
    /// (James's `--generate-keystore`).
    pub generate_certificate: bool,
    /// Seconds of the first retry delay of a mail whose processing failed (doubled each time).
    pub retry_base_secs: u64,
    /// Outbox (DAV delivery) settings.
    pub outbox: OutboxSettings,
    /// DAV dialect and standard CalDAV/CardDAV endpoints (`[dav]`).
    pub dav: DavSettings,
    /// The HTTP admin endpoint (`[http]`).
    pub http: HttpSettings,
    /// Where the spool and the outbox live (`[spool]`): embedded file or RabbitMQ.
    pub spool: SpoolSettings,
    /// What this node does (`ingest`, `process`, `deliver`, `all`); `--role` overrides it.
    pub role: Role,
    /// Mirrored-twice deduplication (`[dedup]`).
    pub dedup: DedupSettings,
    /// The mail systems that mirror here (`[[sources]]`, docs/consolidating.md).
    pub sources: Vec<super::consolidate::SourceSettings>,
    /// Consolidated calendars by name (`[destinations.<name>]`, docs/consolidating.md).
    pub destinations: std::collections::BTreeMap<String, super::consolidate::DestinationSettings>,
}

/// Which part of the work a node does. Nodes of each role share the work through the broker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// SMTP → spool.
    Ingest,
    /// Spool → processors → outbox.
    Process,
    /// Outbox → DAV.
    Deliver,
    /// All three (the only role of the embedded backend).
    #[default]
    All,
}

impl Role {
    /// Runs the SMTP listener.
    pub fn ingests(self) -> bool {
        matches!(self, Role::Ingest | Role::All)
    }
    /// Runs the spooler (the processors).
    pub fn processes(self) -> bool {
        matches!(self, Role::Process | Role::All)
    }
    /// Runs the outbox workers.
    pub fn delivers(self) -> bool {
        matches!(self, Role::Deliver | Role::All)
    }
}

/// Where the durable queues live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolBackend {
    /// One redb file under `data_dir` (default; one node).
    #[default]
    Embedded,
    /// RabbitMQ queues shared by any number of nodes.
    Rabbitmq,
}

/// `[spool]` of `mailetd.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct SpoolSettings {
    /// `embedded` (default) or `rabbitmq`.
    pub backend: SpoolBackend,
    /// AMQP URI (`amqp://user:password@host:5672/%2f`); holds a password, so never logged.
    pub uri: Secret,
    /// Queue of received mails.
    pub queue: String,
    /// Queue of outbox (DAV) jobs.
    pub outbox_queue: String,
    /// Declare the queues as quorum queues (replicated on a RabbitMQ cluster).
    pub quorum: bool,
    /// Largest mail (bytes) accepted on the broker path; SMTP refuses bigger ones with 552
    /// and advertises it with SIZE. RabbitMQ 3.x accepts messages up to 128 MiB by default
    /// (`max_message_size`; 16 MiB from RabbitMQ 4.0): keep this below it, with room for the
    /// envelope.
    pub max_message_bytes: usize,
    /// A mail whose processing was started this many times without finishing (the process
    /// died or was killed each time) is set aside in the error repository, unprocessed, at
    /// the next start. On RabbitMQ the count is the broker's, kept by quorum queues only.
    pub max_attempts: u32,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            backend: SpoolBackend::Embedded,
            uri: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            queue: "mailetd.spool".into(),
            outbox_queue: "mailetd.outbox".into(),
            quorum: false,
            max_message_bytes: 64 * 1024 * 1024,
            max_attempts: 3,
        }
    }
}

/// `[http]`: the admin endpoint (`/health`, `/metrics`, `/api/status`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// `host:port` to listen on; `""` disables the endpoint. Absent: `127.0.0.1:8025`, and a
    /// busy port then only disables the endpoint (with a warning) instead of stopping mailetd.
    pub bind: Option<String>,
    /// Basic auth user; required (with `password`) to bind a non-loopback address.
    pub username: Option<String>,
    /// Basic auth password.
    pub password: Option<Secret>,
    /// `/health/ready` reports the outbox stuck when its oldest due job waits longer than this.
    pub stuck_after_secs: u64,
    /// How long a DAV / OpenPaaS reachability probe answer is reused.
    pub probe_ttl_secs: u64,
    /// Seconds a client gets to send a request's headers; then the connection is closed.
    pub header_timeout_secs: u64,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            bind: None,
            username: None,
            password: None,
            stuck_after_secs: 300,
            probe_ttl_secs: 30,
            header_timeout_secs: 10,
            max_connections: 32,
        }
    }
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

impl Settings {
    /// The number of SMTP threads: `smtp_threads`, or half the CPUs (at least one), which
    /// leaves the other half to the pipeline and the DAV delivery. 0 with the RabbitMQ
    /// spool: sessions run on the main runtime, which drives the broker connection (handing
    /// each publish over cost the ingest node a third more CPU, docs/rabbitmq.md).
    pub fn smtp_threads(&self) -> usize {
        if self.spool.backend == SpoolBackend::Rabbitmq {
            return 0;
        }
        self.smtp_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() / 2))
            .max(1)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("var"),
            workers: None,
            smtp_threads: None,
            shutdown_timeout_secs: 30,
            smtp_data_timeout_secs: DEFAULT_SMTP_DATA_TIMEOUT_SECS,
            generate_certificate: false,
            retry_base_secs: 5,
            outbox: OutboxSettings::default(),
            dav: DavSettings::default(),
            http: HttpSettings::default(),
            spool: SpoolSettings::default(),
            role: Role::All,
            dedup: DedupSettings::default(),
            sources: Vec::new(),
            destinations: std::collections::BTreeMap::new(),
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
    /// Calendar collection of each user for the caldav dialect's iTIP application; same
    /// placeholders as `addressbook_url`.
    pub calendar_url: String,
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
    /// caldav dialect: look an invitation's UID up before creating its event, for servers
    /// that let two resources of a calendar carry one UID (RFC 4791 `no-uid-conflict` not
    /// enforced). Otherwise a new event is created at once and looked up only if refused.
    pub lookup_before_create: bool,
}

impl DavSettings {
    /// Moves a `user:password@` out of `base_url`, so the URL can be shown and stored: it
    /// becomes the service account when neither `username` nor `credentials_file` is set,
    /// and is ignored (with a warning) otherwise.
    fn take_base_url_userinfo(&mut self) {
        let Ok(mut url) = reqwest::Url::parse(self.base_url.trim()) else {
            return;
        };
        let Some((user, password)) = super::secret::take_userinfo(&mut url) else {
            return;
        };
        self.base_url = url.to_string();
        if self.username.is_none() && self.credentials_file.is_none() && !user.is_empty() {
            self.username = Some(user);
            self.password = Some(password);
        } else {
            tracing::warn!(
                "mailetd.toml: [dav] base_url holds a user and password: ignored, [dav] username/password or credentials_file authenticate"
            );
        }
    }
}

impl Default for DavSettings {
    fn default() -> Self {
        DavSettings {
            dialect: DavDialect::Esn,
            base_url: String::new(),
            addressbook_url: "{base}/{user}/collected/".into(),
            calendar_url: "{base}/{user}/calendar/".into(),
            username: None,
            password: None,
            credentials_file: None,
            create_collections: false,
            trust_all_certs: false,
            timeout_secs: 10,
            known_contacts_max: 200_000,
            lookup_before_create: false,
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
        let mut settings: Settings = built
            .try_deserialize()
            .map_err(|e| Position::file_start(&path).error(redact_urls(&e.to_string())))?;
        settings.dav.take_base_url_userinfo();
        Ok(settings)
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

    #[test]
    fn a_user_and_password_in_base_url_leave_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let load = |toml: &str| {
            std::fs::write(dir.path().join("mailetd.toml"), toml).unwrap();
            Settings::load(dir.path()).unwrap().dav
        };
        // alone, they are the service account
        let dav = load(
            "[dav]
base_url = \"http://svc:p%2Cw@127.0.0.1:5232/dav\"\n",
        );
        assert_eq!(dav.base_url, "http://127.0.0.1:5232/dav");
        assert_eq!(dav.username.as_deref(), Some("svc"));
        assert_eq!(dav.password.unwrap().expose(), "p,w");
        // next to a configured account, ignored
        let dav = load(
            "[dav]
base_url = \"http://x:y@127.0.0.1:5232\"\nusername = \"svc\"\npassword = \"pw\"\n",
        );
        assert_eq!(dav.base_url, "http://127.0.0.1:5232/");
        assert_eq!(dav.username.as_deref(), Some("svc"));
        assert_eq!(dav.password.unwrap().expose(), "pw");
    }
}

#[cfg(test)]
mod spool_tests {
    use super::*;

    #[test]
    fn spool_section_and_role_read_and_the_uri_stays_hidden() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mailetd.toml"),
            "role = \"process\"\n[spool]\nbackend = \"rabbitmq\"\nuri = \"amqp://u:pw-s3cret@127.0.0.1:5672/%2f\"\nquorum = true\n",
        )
        .unwrap();
        let settings = Settings::load(dir.path()).unwrap();
        assert_eq!(settings.role, Role::Process);
        assert_eq!(settings.spool.backend, SpoolBackend::Rabbitmq);
        assert!(settings.spool.quorum);
        assert_eq!(settings.spool.queue, "mailetd.spool");
        assert!(!format!("{settings:?}").contains("pw-s3cret"));
        assert!(Settings::default().spool.backend == SpoolBackend::Embedded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_threads_default_to_half_the_cpus_and_to_none_on_the_broker() {
        let mut settings = Settings::default();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(settings.smtp_threads(), (cpus / 2).max(1));
        settings.smtp_threads = Some(3);
        assert_eq!(settings.smtp_threads(), 3);
        settings.spool.backend = SpoolBackend::Rabbitmq;
        assert_eq!(settings.smtp_threads(), 0);
    }
}
