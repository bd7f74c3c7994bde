//! Where a user's calendar is: a URL template per user (`{base}/{user}/calendar/`,
//! `{base}/calendars/{local}/default/`, `{base}/remote.php/dav/calendars/{user}/personal/`),
//! and a cache of users whose calendar collection answered 404 ("not a user here"), so an
//! external correspondent costs one REPORT per TTL and a debug line, never a dead letter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Url;

use crate::config::ConfigError;
use crate::config::settings::DavSettings;
use crate::dav::carddav::segment;

/// How long a 404 on a user's calendar is believed.
pub const ABSENT_TTL: Duration = Duration::from_secs(600);
/// Entries kept before expired ones are pruned.
const ABSENT_MAX: usize = 10_000;

/// Calendar URLs per user, and the users without one.
pub struct Locator {
    base: String,
    template: String,
    absent: Mutex<HashMap<String, Instant>>,
}

impl Locator {
    /// Validates `[dav] base_url` and `calendar_url` once.
    pub fn new(settings: &DavSettings) -> Result<Self, ConfigError> {
        let base = settings.base_url.trim().trim_end_matches('/').to_string();
        if Url::parse(&base).is_err() {
            return Err(ConfigError::new(format!(
                "[dav] base_url {:?} is not a URL: the caldav dialect needs one (e.g. http://127.0.0.1:5232)",
                settings.base_url
            )));
        }
        let template = settings.calendar_url.trim().to_string();
        if !template.contains("{user}") && !template.contains("{local}") {
            return Err(ConfigError::new(format!(
                "[dav] calendar_url {template:?} names no user: use {{user}} or {{local}}"
            )));
        }
        Ok(Locator {
            base,
            template,
            absent: Mutex::new(HashMap::new()),
        })
    }

    /// The user's calendar collection, ending in `/`; with `calendar_id`, the sibling
    /// collection of that name (RFC 9671 `:calendarid`).
    pub fn calendar_url(&self, owner: &str, calendar_id: Option<&str>) -> String {
        let local = owner.rsplit_once('@').map_or(owner, |(l, _)| l);
        let mut url = self
            .template
            .replace("{base}", &self.base)
            .replace("{user}", &segment(owner))
            .replace("{local}", &segment(local));
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
            l.calendar_url("bob@example.org", None),
            "http://127.0.0.1:5232/bob@example.org/calendar/"
        );
        let l = locator("{base}/calendars/{local}/default");
        assert_eq!(
            l.calendar_url("bob@example.org", None),
            "http://127.0.0.1:5232/calendars/bob/default/"
        );
        assert_eq!(
            l.calendar_url("bob@example.org", Some("work")),
            "http://127.0.0.1:5232/calendars/bob/work/"
        );
        assert_eq!(
            l.calendar_url("a/b?c@example.org", None),
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
