//! The configuration summary of `/api/status` and the readiness probes, built once at start
//! from the loaded configuration. Nothing secret goes in: no password, no credentials file
//! content, URLs with their userinfo password hidden.

use std::sync::{Arc, OnceLock};

use serde_json::json;

use super::Probe;
use crate::config::secret::redact_url_value;
use crate::config::settings::DavDialect;
use crate::config::smtpserver::SmtpServerConfig;
use crate::config::{ConfDir, Settings};
use crate::dav::DavServices;

/// What `/api/status` shows of the configuration.
pub fn config_summary(conf: &ConfDir, smtp: &[SmtpServerConfig]) -> serde_json::Value {
    let settings = &conf.settings;
    let servers: Vec<_> = smtp
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "bind": s.bind.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "authorized_addresses": s.authorized.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "max_message_size": s.max_message_size,
                "connection_limit": s.connection_limit,
                "connection_limit_per_ip": s.connection_limit_per_ip,
                "timeout_secs": s.timeout.as_secs(),
                "tls": s.tls.is_some(),
            })
        })
        .collect();
    let openpaas = crate::dav::OpenPaasConfig::from_properties(&conf.properties)
        .ok()
        .flatten();
    json!({
        "conf_dir": conf.dir.display().to_string(),
        "data_dir": conf.data_dir().display().to_string(),
        "smtp": servers,
        "processors": conf.container.processors.iter().map(|p| p.state.clone()).collect::<Vec<_>>(),
        "spooler_threads": settings.workers.unwrap_or(conf.container.threads),
        "outbox": {
            "workers": settings.outbox.workers,
            "retry_base_secs": settings.outbox.retry_base_secs,
            "retry_max_secs": settings.outbox.retry_max_secs,
            "max_age_secs": settings.outbox.max_age_secs,
        },
        "dav": {
            "dialect": match settings.dav.dialect { DavDialect::Esn => "esn", DavDialect::Caldav => "caldav" },
            "base_url": redact_url_value(&settings.dav.base_url),
            "username": settings.dav.username,
            "trust_all_certs": settings.dav.trust_all_certs,
        },
        "openpaas": openpaas.as_ref().map(|o| json!({
            "api_uri": redact_url_value(o.api_uri.as_str()),
            "admin_user": o.admin_user,
            "trust_all_certs": o.trust_all_certs,
            "dav_api_uri": o.dav.as_ref().map(|d| redact_url_value(d.api_uri.as_str())),
            "dav_trust_all_certs": o.dav.as_ref().map(|d| d.trust_all_certs),
        })),
        "http": {
            "bind": settings.http.bind.clone().unwrap_or_else(|| super::DEFAULT_BIND.to_string()),
            "basic_auth": settings.http.username.is_some(),
        },
    })
}

/// The endpoints `/health/ready` probes: the OpenPaaS API and esn-sabre when configured, or
/// the standard DAV server of `[dav]`, each with its own TLS policy.
pub fn probes(settings: &Settings, dav: &OnceLock<Arc<DavServices>>) -> Vec<Probe> {
    let mut probes = Vec::new();
    if let Some(services) = dav.get() {
        probes.push(Probe::new(
            "openpaas",
            services.openpaas.api_uri.to_string(),
            services.openpaas_client.clone(),
        ));
        if let Some((client, dav)) = services.dav() {
            probes.push(Probe::new("dav", dav.api_uri.to_string(), client.clone()));
        }
    }
    if settings.dav.dialect == DavDialect::Caldav && !settings.dav.base_url.is_empty() {
        match crate::dav::transport::client((&settings.dav).into()) {
            Ok(client) => probes.push(Probe::new("dav", settings.dav.base_url.clone(), client)),
            Err(e) => tracing::warn!("no readiness probe for [dav] base_url: {e}"),
        }
    }
    probes
}
