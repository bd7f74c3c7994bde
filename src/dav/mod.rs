//! DAV clients: the esn (Twake) dialect and standard CalDAV/CardDAV. A client library:
//! everything here is built from settings (`openpaas.properties`, `[dav]` of mailetd.toml)
//! and delivers outbox jobs; the mailets that decide what to queue live above it.

pub mod caldav;
pub mod carddav;
pub mod contact;
pub mod credentials;
pub mod esn_contact;
pub mod esn_event_lookup;
pub mod esn_itip;
pub mod itip_body;
pub mod itip_target;
pub mod known_contacts;
pub mod openpaas;
pub mod transport;
pub mod users;

use std::sync::{Arc, OnceLock};

use crate::config::settings::{DavDialect, DavSettings};
use crate::config::{ConfigError, Properties};
use crate::mail::job::JobHandler;
use crate::store::Store;
use transport::ClientSettings;

pub use openpaas::{DavConfig, OpenPaasConfig, Secret};
pub use users::{LookupError, UserLookup};

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
    /// The process's DAV services: the ones in `cell`, else built from the OpenPaaS
    /// settings of `properties` and kept in `cell`, so that every mailet and handler shares
    /// one client pool and one user cache; `None` without `openpaas.api.uri`.
    pub fn shared(
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
        let openpaas_client = transport::client(ClientSettings {
            timeout: openpaas.response_timeout,
            trust_all_certs: openpaas.trust_all_certs,
        })?;
        let dav_client = match &openpaas.dav {
            Some(dav) => Some(transport::client(ClientSettings {
                timeout: dav.response_timeout,
                trust_all_certs: dav.trust_all_certs,
            })?),
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

/// The outbox handlers for the DAV configuration found in `properties` (none without one).
/// `cell` is the process's shared one (see [`DavServices::shared`]).
pub fn outbox_handlers(
    properties: &Properties,
    cell: &OnceLock<Arc<DavServices>>,
) -> Result<Vec<Arc<dyn JobHandler>>, ConfigError> {
    let mut handlers: Vec<Arc<dyn JobHandler>> = Vec::new();
    if let Some(services) = DavServices::shared(properties, cell)?
        && services.dav().is_some()
    {
        handlers.push(Arc::new(esn_itip::EsnItipHandler::new(services)));
    }
    Ok(handlers)
}

/// The outbox handlers of the standard dialect (`[dav] dialect = "caldav"`): none for esn.
pub fn standard_handlers(settings: &DavSettings) -> Result<Vec<Arc<dyn JobHandler>>, ConfigError> {
    let mut handlers: Vec<Arc<dyn JobHandler>> = Vec::new();
    if settings.dialect == DavDialect::Caldav {
        handlers.push(Arc::new(caldav::handler::CalDavItipHandler::new(settings)?));
    }
    Ok(handlers)
}

/// The collected-contact handler for `[dav]` of mailetd.toml: CardDAV for the standard
/// dialect, esn-sabre (with the shared user lookup of `properties` and `cell`, see
/// [`DavServices::shared`]) for esn; none when esn has no DAV. `store` keeps the contacts
/// known to exist (none: every contact is sent).
pub fn contact_handlers(
    settings: &DavSettings,
    properties: &Properties,
    cell: &OnceLock<Arc<DavServices>>,
    store: Option<Arc<Store>>,
) -> Result<Vec<Arc<dyn JobHandler>>, ConfigError> {
    let known = known_contacts::KnownContacts::new(store, settings.known_contacts_max);
    match settings.dialect {
        DavDialect::Caldav => Ok(vec![Arc::new(carddav::CardDavContactHandler::new(
            settings, known,
        )?)]),
        DavDialect::Esn => {
            let Some(services) = DavServices::shared(properties, cell)? else {
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
    async fn user_id(&self, email: &str) -> Result<Option<String>, LookupError> {
        self.users.find(email).await
    }
}
