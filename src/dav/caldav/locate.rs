//! Where a user's calendar is: a URL template per user (`{base}/{user}/calendar/`,
//! `{base}/calendars/{local}/default/`, `{base}/remote.php/dav/calendars/{user}/personal/`)
//! or, with `calendar_url = "discover"` and per-user credentials, RFC 4791/5397 discovery
//! (`current-user-principal` → `calendar-home-set` → the first calendar holding VEVENTs,
//! remembered per user); and a cache of users whose calendar collection answered 404 ("not a user here"), so an
//! external correspondent costs one REPORT per TTL and a debug line, never a dead letter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Url;

use super::client::{CalDavClient, DavError, event_calendars, href_within};
use crate::config::ConfigError;
use crate::config::settings::DavSettings;
use crate::dav::carddav::segment;

/// The `calendar_url` value that asks for discovery.
pub const DISCOVER: &str = "discover";

/// How long a 404 on a user's calendar is believed.
pub const ABSENT_TTL: Duration = Duration::from_secs(600);
/// Entries kept before expired ones are pruned.
const ABSENT_MAX: usize = 10_000;

/// Calendar URLs per user, and the users without one.
pub struct Locator {
    base: String,
    /// `None`: discovery.
    template: Option<String>,
    absent: Mutex<HashMap<String, Instant>>,
    discovered: Mutex<HashMap<String, String>>,
}

impl Locator {
    /// Validates `[dav] base_url` and `calendar_url` once.
    pub fn new(settings: &DavSettings) -> Result<Self, ConfigError> {
        let base = settings.base_url.trim().trim_end_matches('/').to_string();
        if Url::parse(&base).is_err() {
            return Err(ConfigError::new(format!(
                "[dav] base_url {:?} is not a URL: the caldav dialect needs one (e.g. http://127.0.0.1:5232)",
                crate::config::secret::redact_url_value(&settings.base_url)
            )));
        }
        let template = settings.calendar_url.trim().to_string();
        let template = if template.eq_ignore_ascii_case(DISCOVER) {
            if settings.credentials_file.is_none() {
                return Err(ConfigError::new(
                    "[dav] calendar_url = \"discover\" needs per-user credentials (credentials_file): with a service account, current-user-principal is the service account's own",
                ));
            }
            None
        } else if !template.contains("{user}") && !template.contains("{local}") {
            return Err(ConfigError::new(format!(
                "[dav] calendar_url {template:?} names no user: use {{user}} or {{local}}, or \"discover\""
            )));
        } else {
            Some(template)
        };
        Ok(Locator {
            base,
            template,
            absent: Mutex::new(HashMap::new()),
            discovered: Mutex::new(HashMap::new()),
        })
    }

    /// The user's calendar collection from the template, ending in `/`; with
    /// `calendar_id`, the sibling collection of that name (RFC 9671 `:calendarid`). `None`
    /// under discovery.
    pub fn calendar_url(&self, owner: &str, calendar_id: Option<&str>) -> Option<String> {
        let local = owner.rsplit_once('@').map_or(owner, |(l, _)| l);
        let url = self
            .template
            .as_ref()?
            .replace("{base}", &self.base)
            .replace("{user}", &segment(owner))
            .replace("{local}", &segment(local));
        Some(sibling(url, calendar_id))
    }

    /// The user's calendar (template or discovery) and the one new events go to; `None`
    /// when the user has none on this server.
    pub async fn resolve(
        &self,
        client: &CalDavClient,
        owner: &str,
        calendar_id: Option<&str>,
    ) -> Result<Option<(String, String)>, DavError> {
        if let Some(url) = self.calendar_url(owner, None) {
            let target = self.calendar_url(owner, calendar_id).unwrap_or(url.clone());
            return Ok(Some((url, target)));
        }
        let key = owner.to_lowercase();
        let cached = self
            .discovered
            .lock()
            .expect("not poisoned")
            .get(&key)
            .cloned();
        let url = match cached {
            Some(url) => url,
            None => match self.discover(client, owner).await? {
                Some(url) => {
                    tracing::debug!(owner, calendar = url, "calendar discovered");
                    let mut discovered = self.discovered.lock().expect("not poisoned");
                    if discovered.len() >= ABSENT_MAX {
                        discovered.clear();
                    }
                    discovered.insert(key, url.clone());
                    url
                }
                None => return Ok(None),
            },
        };
        let target = sibling(url.clone(), calendar_id);
        Ok(Some((url, target)))
    }

    /// `current-user-principal` → `calendar-home-set` → first VEVENT calendar, as `owner`.
    async fn discover(
        &self,
        client: &CalDavClient,
        owner: &str,
    ) -> Result<Option<String>, DavError> {
        let root = format!("{}/", self.base);
        let join = |base: &str, href: &str| -> Result<String, DavError> {
            Url::parse(base)
                .and_then(|b| b.join(href))
                .map(|u| u.to_string())
                .map_err(|e| DavError::bad_url(format!("discovery: href {href:?}"), e))
        };
        let Some(xml) = client
            .propfind(owner, &root, 0, "<D:current-user-principal/>")
            .await?
        else {
            return Ok(None);
        };
        let Some(principal) = href_within(&xml, "current-user-principal") else {
            return Ok(None);
        };
        let principal = join(&root, &principal)?;
        let Some(xml) = client
            .propfind(owner, &principal, 0, "<C:calendar-home-set/>")
            .await?
        else {
            return Ok(None);
        };
        let Some(home) = href_within(&xml, "calendar-home-set") else {
            return Ok(None);
        };
        let home = join(&principal, &home)?;
        let Some(xml) = client
            .propfind(
                owner,
                &home,
                1,
                "<D:resourcetype/><C:supported-calendar-component-set/>",
            )
            .await?
        else {
            return Ok(None);
        };
        match event_calendars(&xml).first() {
            Some(href) => Ok(Some(sibling(join(&home, href)?, None))),
            None => Ok(None),
        }
    }

    /// Whether the user's calendar answered 404 less than [`ABSENT_TTL`] ago.
    pub fn known_absent(&self, owner: &str) -> bool {
        let absent = self.absent.lock().expect("not poisoned");
        absent
            .get(&owner.to_lowercase())
            .is_some_and(|at| at.elapsed() < ABSENT_TTL)
    }

    /// Remembers that the user has no calendar here.
    pub fn mark_absent(&self, owner: &str) {
        let mut absent = self.absent.lock().expect("not poisoned");
        if absent.len() >= ABSENT_MAX {
            absent.retain(|_, at| at.elapsed() < ABSENT_TTL);
        }
        absent.insert(owner.to_lowercase(), Instant::now());
    }
}

/// `url` with a trailing `/`, or its sibling collection named `calendar_id`.
fn sibling(mut url: String, calendar_id: Option<&str>) -> String {
    if !url.ends_with('/') {
        url.push('/');
    }
    match calendar_id {
        Some(id) => {
            let parent = &url[..url[..url.len() - 1].rfind('/').map_or(0, |i| i + 1)];
            format!("{parent}{}/", segment(id))
        }
        None => url,
    }
}

/// The resource name mailetd gives an event it creates: the UID, percent-encoded.
pub fn resource_name(uid: &str) -> String {
    format!("{}.ics", segment(uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locator(template: &str) -> Locator {
        Locator::new(&DavSettings {
            base_url: "http://127.0.0.1:5232/".into(),
            calendar_url: template.into(),
            ..DavSettings::default()
        })
        .unwrap()
    }

    #[test]
    fn templates_expand_per_user() {
        let l = locator("{base}/{user}/calendar/");
        assert_eq!(
            l.calendar_url("bob@example.org", None).unwrap(),
            "http://127.0.0.1:5232/bob@example.org/calendar/"
        );
        let l = locator("{base}/calendars/{local}/default");
        assert_eq!(
            l.calendar_url("bob@example.org", None).unwrap(),
            "http://127.0.0.1:5232/calendars/bob/default/"
        );
        assert_eq!(
            l.calendar_url("bob@example.org", Some("work")).unwrap(),
            "http://127.0.0.1:5232/calendars/bob/work/"
        );
        assert_eq!(
            l.calendar_url("a/b?c@example.org", None).unwrap(),
            "http://127.0.0.1:5232/calendars/a%2Fb%3Fc/default/"
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = |base: &str, template: &str| {
            Locator::new(&DavSettings {
                base_url: base.into(),
                calendar_url: template.into(),
                ..DavSettings::default()
            })
            .err()
            .unwrap()
            .to_string()
        };
        assert!(bad("", "{base}/{user}/").contains("base_url"));
        assert!(bad("http://h", "{base}/calendar/").contains("names no user"));
        assert!(bad("http://h", "discover").contains("per-user credentials"));
    }

    #[test]
    fn absent_users_are_remembered_case_insensitively() {
        let l = locator("{base}/{user}/calendar/");
        assert!(!l.known_absent("ext@partner.example"));
        l.mark_absent("Ext@partner.example");
        assert!(l.known_absent("ext@partner.example"));
        assert_eq!(resource_name("a b@x"), "a%20b@x.ics");
    }
}
