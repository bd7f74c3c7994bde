//! What mailets and matchers can see of the server (James `MailetContext`).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::config::{ConfDir, Properties, Settings};
use crate::dav::DavServices;
use crate::mail::MailAddress;
use crate::store::Store;

/// Shared, read-only server context given to every mailet and matcher, at build and run time.
#[derive(Clone)]
pub struct MailetContext {
    /// Local domains (`domainlist.xml` domains plus `defaultDomain`), lowercased.
    pub local_domains: Vec<String>,
    /// The default domain (`domainlist.xml` `defaultDomain`).
    pub default_domain: String,
    /// The postmaster address (`<context><postmaster>`).
    pub postmaster: MailAddress,
    /// Where repositories and other state live.
    pub data_dir: PathBuf,
    /// The configuration directory.
    pub conf_dir: PathBuf,
    /// Every `*.properties` file of the configuration directory, merged.
    pub properties: Properties,
    /// mailetd's own settings.
    pub settings: Settings,
    /// When true, mailets that call out (DAV) only describe what they would send.
    pub dry_run: bool,
    /// The durable store (spool + outbox + caches), when the process has one (not in `check`).
    pub store: Option<Arc<Store>>,
    /// DAV services, created on first use and shared by every mailet and outbox handler.
    pub dav: Arc<OnceLock<Arc<DavServices>>>,
    /// Where the pipeline and the mailets count (the server's; a fresh one in tests).
    pub metrics: Arc<crate::observe::Metrics>,
}

impl MailetContext {
    /// The context of a loaded configuration directory, without a store or DAV services yet.
    pub fn new(conf: &ConfDir) -> Self {
        MailetContext {
            local_domains: conf.domains.domains.clone(),
            default_domain: conf.domains.default_domain.clone(),
            postmaster: conf.postmaster.clone(),
            data_dir: conf.settings.data_dir.clone(),
            conf_dir: conf.dir.clone(),
            properties: conf.properties.clone(),
            settings: conf.settings.clone(),
            dry_run: false,
            store: None,
            dav: Arc::default(),
            metrics: crate::observe::Metrics::process(),
        }
    }

    /// A context for tests and tools: domain `example.org`, data under `data_dir`.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        MailetContext {
            local_domains: vec!["example.org".into()],
            default_domain: "example.org".into(),
            postmaster: MailAddress::parse("postmaster@example.org").unwrap(),
            data_dir,
            conf_dir: PathBuf::from("conf"),
            properties: Properties::default(),
            settings: Settings::default(),
            dry_run: false,
            store: None,
            dav: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// Whether `domain` is one of the local domains.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let domain = domain.to_ascii_lowercase();
        self.local_domains.contains(&domain)
    }
}
