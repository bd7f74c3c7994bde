//! DAV clients: the esn (Twake) dialect and standard CalDAV/CardDAV.

pub mod caldav;
pub mod carddav;
pub mod contact;
pub mod credentials;
pub mod esn_contact;
pub mod esn_event_lookup;
pub mod esn_itip;
pub mod itip_body;
pub mod known_contacts;
pub mod openpaas;
pub mod users;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::HeaderValue;

use crate::config::{ConfigError, Properties};
use crate::outbox::JobHandler;
use crate::pipeline::MailetContext;

pub use openpaas::{DavConfig, OpenPaasConfig, Secret};
pub use users::{LookupError, UserLookup};

/// How long an idle keep-alive connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// HTTP clients, the user-lookup cache and DAV settings shared by the DAV mailets and the
/// outbox handlers of one process (built once, on first use, from the configuration).
#[derive(Debug)]
pub struct DavServices {
    /// `openpaas.properties`.
    pub openpaas: OpenPaasConfig,
    /// The OpenPaaS API client (admin Basic auth is added per request).
    pub openpaas_client: reqwest::Client,
    /// The esn-sabre client, when `dav.api.uri` is set.
    pub dav_client: Option<reqwest::Client>,
    /// Cached OpenPaaS user lookups.
    pub users: UserLookup,
}

impl DavServices {
    /// The process's DAV services, built on first use from `ctx.properties`; `None` when
    /// there is no OpenPaaS configuration.
    pub fn get(ctx: &MailetContext) -> Result<Option<Arc<DavServices>>, ConfigError> {
        Self::get_in(&ctx.properties, &ctx.dav)
    }

    /// [`get`](Self::get) with the properties and the shared cell given separately.
    pub fn get_in(
        properties: &Properties,
        cell: &OnceLock<Arc<DavServices>>,
    ) -> Result<Option<Arc<DavServices>>, ConfigError> {
        if let Some(services) = cell.get() {
            return Ok(Some(services.clone()));
        }
        let Some(openpaas) = OpenPaasConfig::from_properties(properties)? else {
            return Ok(None);
        };
        let services = Arc::new(Self::build(openpaas)?);
        Ok(Some(cell.get_or_init(|| services).clone()))
    }

    /// Builds the clients for `openpaas`.
    pub fn build(openpaas: OpenPaasConfig) -> Result<DavServices, ConfigError> {
        for warning in &openpaas.warnings {
            tracing::warn!("openpaas.properties: {warning}");
        }
        let openpaas_client = client(openpaas.trust_all_certs, openpaas.response_timeout)?;
        let dav_client = match &openpaas.dav {
            Some(dav) => Some(client(dav.trust_all_certs, dav.response_timeout)?),
            None => None,
        };
        let users = UserLookup::new(openpaas_client.clone(), &openpaas);
        Ok(DavServices {
            openpaas,
            openpaas_client,
            dav_client,
            users,
        })
    }

    /// The esn-sabre settings and client, when configured.
    pub fn dav(&self) -> Option<(&reqwest::Client, &DavConfig)> {
        Some((self.dav_client.as_ref()?, self.openpaas.dav.as_ref()?))
    }
}

/// The esn-sabre impersonation header for `email` (`admin&email:password`).
pub fn impersonation_header(dav: &DavConfig, email: &str) -> HeaderValue {
    users::impersonation(dav, email)
}

/// The outbox handlers for the DAV configuration found in `properties` (none without one).
/// `cell` is the shared [`MailetContext::dav`], so mailets and handlers share one cache.
pub fn outbox_handlers(
    properties: &Properties,
    cell: &OnceLock<Arc<DavServices>>,
) -> Result<Vec<Arc<dyn JobHandler>>, ConfigError> {
    let mut handlers: Vec<Arc<dyn JobHandler>> = Vec::new();
    if let Some(services) = DavServices::get_in(properties, cell)?
        && services.dav().is_some()
    {
        handlers.push(Arc::new(esn_itip::EsnItipHandler::new(services)));
    }
    Ok(handlers)
}

/// The outbox handlers of the standard dialect (`[dav] dialect = "caldav"`): none for esn.
pub fn standard_handlers(
    settings: &crate::config::settings::DavSettings,
) -> Result<Vec<Arc<dyn JobHandler>>, ConfigError> {
    let mut handlers: Vec<Arc<dyn JobHandler>> = Vec::new();
    if settings.dialect == crate::config::settings::DavDialect::Caldav {
        handlers.push(Arc::new(caldav::handler::CalDavItipHandler::new(settings)?));
    }
    Ok(handlers)
}

fn client(trust_all: bool, timeout: Duration) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(POOL_IDLE)
        .tls_danger_accept_invalid_certs(trust_all)
        .user_agent(concat!("mailetd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::new(format!("cannot build the HTTP client: {e}")))
}

/// The collected-contact handler for `[dav]` of mailetd.toml: CardDAV for the standard
/// dialect, esn-sabre (with the shared user lookup) for esn; none when esn has no DAV.
pub fn contact_handlers(ctx: &MailetContext) -> Result<Vec<Arc<dyn JobHandler>>, ConfigError> {
    use crate::config::settings::DavDialect;
    let settings = &ctx.settings.dav;
    let known = known_contacts::KnownContacts::new(ctx.store.clone(), settings.known_contacts_max);
    match settings.dialect {
        DavDialect::Caldav => Ok(vec![Arc::new(carddav::CardDavContactHandler::new(
            settings, known,
        )?)]),
        DavDialect::Esn => {
            let Some(services) = DavServices::get(ctx)? else {
                return Ok(Vec::new());
            };
            let Some((client, dav)) = services.dav() else {
                return Ok(Vec::new());
            };
            Ok(vec![Arc::new(esn_contact::EsnContactHandler::new(
                client.clone(),
                dav.clone(),
                services,
                known,
            ))])
        }
    }
}

#[async_trait::async_trait]
impl esn_contact::OwnerIds for DavServices {
    async fn user_id(&self, email: &str) -> Result<Option<String>, String> {
        self.users.find(email).await.map_err(|e| e.to_string())
    }
}
