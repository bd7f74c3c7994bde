//! `openpaas.properties`: the OpenPaaS user API and esn-sabre settings, with the keys,
//! defaults and rules of tmail's `OpenPaasConfiguration` and `DavConfiguration`.

use std::time::Duration;

use reqwest::Url;

use crate::config::secret::{redact_url_value, take_userinfo};
use crate::config::{ConfigError, Properties};

/// Default response timeout of both clients (tmail: 30s).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time an unknown user stays cached (a mailetd extension).
pub const DEFAULT_UNKNOWN_USER_TTL: Duration = Duration::from_secs(600);
/// Property holding the unknown-user cache TTL (a mailetd extension; James syntax).
pub const UNKNOWN_USER_TTL_KEY: &str = "openpaas.users.cache.unknown.ttl";

pub use crate::config::Secret;

/// The OpenPaaS (Twake Calendar side service) API client settings.
#[derive(Clone, Debug)]
pub struct OpenPaasConfig {
    /// `openpaas.api.uri`, e.g. `http://side/api` (requests go to `{uri}/users?email=`).
    pub api_uri: Url,
    /// `openpaas.admin.user`.
    pub admin_user: String,
    /// `openpaas.admin.password`.
    pub admin_password: Secret,
    /// `openpaas.rest.client.trust.all.ssl.certs` (default false).
    pub trust_all_certs: bool,
    /// `openpaas.rest.client.response.timeout` (default 30s).
    pub response_timeout: Duration,
    /// How long an unknown user stays cached ([`UNKNOWN_USER_TTL_KEY`], default 10 minutes).
    pub unknown_user_ttl: Duration,
    /// The esn-sabre part, present when `dav.api.uri` is non-empty.
    pub dav: Option<DavConfig>,
    /// What the operator should know about the settings (logged once, when the clients are
    /// built): a user and password in a URL that the admin keys override.
    pub warnings: Vec<String>,
}

/// The esn-sabre (DAV) client settings.
#[derive(Clone, Debug)]
pub struct DavConfig {
    /// `dav.api.uri`, e.g. `http://sabre` (iTIP goes to `{uri}/calendars/{userId}`).
    pub api_uri: Url,
    /// `dav.admin.user` (impersonation: `{admin}&{user}`).
    pub admin_user: String,
    /// `dav.admin.password`.
    pub admin_password: Secret,
    /// `dav.rest.client.trust.all.ssl.certs` (default false).
    pub trust_all_certs: bool,
    /// `dav.rest.client.response.timeout` (default 30s).
    pub response_timeout: Duration,
}

impl OpenPaasConfig {
    /// Reads the OpenPaaS settings; `None` when `openpaas.api.uri` is absent.
    pub fn from_properties(props: &Properties) -> Result<Option<OpenPaasConfig>, ConfigError> {
        if props.get("openpaas.api.uri").is_none() {
            return Ok(None);
        }
        let mut warnings = Vec::new();
        let (api_uri, userinfo) = url(props, "openpaas.api.uri")?;
        let (admin_user, admin_password) = admin(
            props,
            [
                "openpaas.api.uri",
                "openpaas.admin.user",
                "openpaas.admin.password",
            ],
            userinfo,
            &mut warnings,
        )?;
        let trust_all_certs = boolean(props, "openpaas.rest.client.trust.all.ssl.certs")?;
        let response_timeout = duration(
            props,
            "openpaas.rest.client.response.timeout",
            DEFAULT_RESPONSE_TIMEOUT,
        )?;
        let unknown_user_ttl = duration(props, UNKNOWN_USER_TTL_KEY, DEFAULT_UNKNOWN_USER_TTL)?;
        let dav = match props.get("dav.api.uri") {
            Some(v) if !v.trim().is_empty() => {
                let (api_uri, userinfo) = url(props, "dav.api.uri")?;
                let (admin_user, admin_password) = admin(
                    props,
                    ["dav.api.uri", "dav.admin.user", "dav.admin.password"],
                    userinfo,
                    &mut warnings,
                )?;
                Some(DavConfig {
                    api_uri,
                    admin_user,
                    admin_password,
                    trust_all_certs: boolean(props, "dav.rest.client.trust.all.ssl.certs")?,
                    response_timeout: duration(
                        props,
                        "dav.rest.client.response.timeout",
                        DEFAULT_RESPONSE_TIMEOUT,
                    )?,
                })
            }
            _ => None,
        };
        Ok(Some(OpenPaasConfig {
            api_uri,
            admin_user,
            admin_password,
            trust_all_certs,
            response_timeout,
            unknown_user_ttl,
            dav,
            warnings,
        }))
    }
}

fn missing(props: &Properties, key: &str) -> ConfigError {
    let message = format!("{key} is required when openpaas.api.uri is set");
    match props.entry("openpaas.api.uri") {
        Some(anchor) => anchor.position.error(message),
        None => ConfigError::new(message),
    }
}

fn required<'a>(props: &'a Properties, key: &str) -> Result<&'a str, ConfigError> {
    match props.entry(key) {
        None => Err(missing(props, key)),
        Some(e) if e.value.trim().is_empty() => Err(e
            .position
            .error(format!("{key} is empty: a value is required"))),
        Some(e) => Ok(e.value.trim()),
    }
}

/// The URL of `key` without its userinfo, which is returned apart: it never reaches a log
/// line, `/api/status` or an outbox job, and the HTTP client never sends it on its own.
fn url(props: &Properties, key: &str) -> Result<(Url, Option<(String, Secret)>), ConfigError> {
    let text = required(props, key)?;
    let position = &props.entry(key).expect("present").position;
    let shown = redact_url_value(text);
    let mut parsed = Url::parse(text)
        .map_err(|e| position.error(format!("{key} is {shown:?}, not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(position.error(format!(
            "{key} is {shown:?}: expected an http:// or https:// URL"
        )));
    }
    let userinfo = take_userinfo(&mut parsed);
    Ok((parsed, userinfo))
}

/// The admin user and password keys (`[uri, user, password]`), which tmail requires. A user and
/// password in the URL stand in for them only when both keys are absent; next to them, the
/// URL's are ignored (with a warning), so esn-sabre always sees the configured
/// `admin&user:password` impersonation.
fn admin(
    props: &Properties,
    [uri_key, user_key, password_key]: [&str; 3],
    userinfo: Option<(String, Secret)>,
    warnings: &mut Vec<String>,
) -> Result<(String, Secret), ConfigError> {
    let configured = props.entry(user_key).is_some() || props.entry(password_key).is_some();
    if let Some((user, password)) = userinfo {
        if !configured && !user.is_empty() {
            return Ok((user, password));
        }
        warnings.push(format!(
            "{uri_key} holds a user and password: ignored, {user_key} and {password_key} authenticate"
        ));
    }
    Ok((
        required(props, user_key)?.to_string(),
        Secret::new(required(props, password_key)?),
    ))
}

fn boolean(props: &Properties, key: &str) -> Result<bool, ConfigError> {
    match props.entry(key) {
        None => Ok(false),
        Some(e) => match e.value.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" | "" => Ok(false),
            other => Err(e
                .position
                .error(format!("{key} is {other:?}: expected true or false"))),
        },
    }
}

fn duration(props: &Properties, key: &str, default: Duration) -> Result<Duration, ConfigError> {
    match props.entry(key) {
        None => Ok(default),
        Some(e) => {
            parse_duration(&e.value).map_err(|reason| e.position.error(format!("{key}: {reason}")))
        }
    }
}

/// A duration setting that James's `DurationParser` would refuse.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    /// No number first.
    #[error("{text:?} is not a duration (expected e.g. 30s, 500ms, 2m)")]
    NotANumber {
        /// The setting.
        text: String,
        /// Why the number does not parse.
        #[source]
        source: std::num::ParseIntError,
    },
    /// A negative amount.
    #[error("{0:?}: a duration must not be negative")]
    Negative(String),
    /// A unit James does not know.
    #[error("{text:?}: unknown unit {unit:?} (expected ms, s, m, h, d, w, month or y)")]
    UnknownUnit {
        /// The setting.
        text: String,
        /// The unit as written (lowercased).
        unit: String,
    },
}

/// Parses a duration in James `DurationParser` syntax: `<n> [unit]`, bare numbers in
/// milliseconds, units ms/msec(s), s/sec(s)/second(s), m/min(s)/minute(s), h/hour(s),
/// d/day(s), w/week(s), month(s), y/year(s), case-insensitive.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let digits = text
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '-')
        .map_or(text.len(), |(i, _)| i);
    let (number, unit) = text.split_at(digits);
    let amount: i64 = number.parse().map_err(|source| DurationError::NotANumber {
        text: text.to_string(),
        source,
    })?;
    if amount < 0 {
        return Err(DurationError::Negative(text.to_string()));
    }
    let amount = amount as u64;
    let seconds = |factor: u64| Duration::from_secs(amount.saturating_mul(factor));
    match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "msec" | "msecs" => Ok(Duration::from_millis(amount)),
        "s" | "sec" | "secs" | "second" | "seconds" => Ok(seconds(1)),
        "m" | "min" | "mins" | "minute" | "minutes" => Ok(seconds(60)),
        "h" | "hour" | "hours" => Ok(seconds(3600)),
        "d" | "day" | "days" => Ok(seconds(86_400)),
        "w" | "week" | "weeks" => Ok(seconds(7 * 86_400)),
        // java.time's estimated month and year
        "month" | "months" => Ok(seconds(2_629_746)),
        "y" | "year" | "years" => Ok(seconds(31_556_952)),
        other => Err(DurationError::UnknownUnit {
            text: text.to_string(),
            unit: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn props(text: &str) -> Properties {
        Properties::parse(text, Path::new("conf/openpaas.properties")).unwrap()
    }

    #[test]
    fn duration_syntax_is_james() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1500").unwrap(), Duration::from_millis(1500));
        assert_eq!(
            parse_duration("  2 minutes ").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1H").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_duration("3d").unwrap(),
            Duration::from_secs(3 * 86400)
        );
        assert!(matches!(
            parse_duration("-5s"),
            Err(e @ DurationError::Negative(_)) if e.to_string().contains("negative")
        ));
        assert!(matches!(
            parse_duration("5 fortnights"),
            Err(e @ DurationError::UnknownUnit { .. }) if e.to_string().contains("unknown unit")
        ));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn absent_api_uri_means_no_openpaas() {
        assert!(
            OpenPaasConfig::from_properties(&props("dav.api.uri=http://x\n"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn full_configuration_with_defaults() {
        let c = OpenPaasConfig::from_properties(&props(
            "openpaas.api.uri=http://side/api\nopenpaas.admin.user=admin@x\nopenpaas.admin.password=s3cr3t\ndav.api.uri=http://sabre\ndav.admin.user=admin\ndav.admin.password=pw\ndav.rest.client.response.timeout=5s\n",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(c.api_uri.as_str(), "http://side/api");
        assert!(!c.trust_all_certs);
        assert_eq!(c.response_timeout, Duration::from_secs(30));
        assert_eq!(c.unknown_user_ttl, Duration::from_secs(600));
        let dav = c.dav.as_ref().unwrap();
        assert_eq!(dav.response_timeout, Duration::from_secs(5));
        assert_eq!(dav.admin_password.expose(), "pw");
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("s3cr3t") && !printed.contains("\"pw\""),
            "{printed}"
        );
        assert!(printed.contains("***"));
    }

    #[test]
    fn userinfo_leaves_the_urls_and_never_replaces_the_admin_keys() {
        let c = OpenPaasConfig::from_properties(&props(
            "openpaas.api.uri=http://u:p,w@side/api\nopenpaas.admin.user=admin@x\nopenpaas.admin.password=s3cr3t\ndav.api.uri=http://intruder:pw@sabre\ndav.admin.user=admin\ndav.admin.password=pw2\n",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(c.api_uri.as_str(), "http://side/api");
        assert_eq!(c.admin_user, "admin@x");
        let dav = c.dav.as_ref().unwrap();
        assert_eq!(dav.api_uri.as_str(), "http://sabre/");
        assert_eq!(
            (dav.admin_user.as_str(), dav.admin_password.expose()),
            ("admin", "pw2")
        );
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(!format!("{c:?}").contains("p,w"));
        // without the admin keys, the URL's user and password stand in for them
        let c = OpenPaasConfig::from_properties(&props(
            "openpaas.api.uri=http://side/api\nopenpaas.admin.user=a\nopenpaas.admin.password=b\ndav.api.uri=http://admin:secret%40123@sabre\n",
        ))
        .unwrap()
        .unwrap();
        let dav = c.dav.unwrap();
        assert_eq!(
            (dav.admin_user.as_str(), dav.admin_password.expose()),
            ("admin", "secret@123")
        );
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn empty_dav_uri_means_no_dav_client() {
        let c = OpenPaasConfig::from_properties(&props(
            "openpaas.api.uri=http://side/api\nopenpaas.admin.user=a\nopenpaas.admin.password=b\ndav.api.uri=\n",
        ))
        .unwrap()
        .unwrap();
        assert!(c.dav.is_none());
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = OpenPaasConfig::from_properties(&props(
            "openpaas.api.uri=http://side/api\nopenpaas.admin.user=a\nopenpaas.admin.password=b\nopenpaas.rest.client.trust.all.ssl.certs=maybe\n",
        ))
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "conf/openpaas.properties:4:1: openpaas.rest.client.trust.all.ssl.certs"
            ),
            "{err}"
        );
        let err = OpenPaasConfig::from_properties(&props(
            "\nopenpaas.api.uri=not a url\nopenpaas.admin.user=a\nopenpaas.admin.password=b\n",
        ))
        .unwrap_err();
        assert!(
            err.to_string().starts_with("conf/openpaas.properties:2:1:"),
            "{err}"
        );
        let err = OpenPaasConfig::from_properties(&props(
            "openpaas.api.uri=http://side/api\nopenpaas.admin.user=a\nopenpaas.admin.password=b\ndav.api.uri=http://sabre\ndav.admin.user=admin\n",
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("dav.admin.password is required"),
            "{err}"
        );
        let err = OpenPaasConfig::from_properties(&props(
            "openpaas.api.uri=http://side/api\nopenpaas.admin.user=a\nopenpaas.admin.password=b\nopenpaas.rest.client.response.timeout=10 parsecs\n",
        ))
        .unwrap_err();
        assert!(
            err.to_string().starts_with("conf/openpaas.properties:4:"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_twake_example_loads_with_its_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/standalone-email/conf/openpaas.properties");
        let props = Properties::load(&path).unwrap();
        let c = OpenPaasConfig::from_properties(&props).unwrap().unwrap();
        // unless the environment of the test run overrides them
        if std::env::var_os("OPENPAAS_API_URI").is_none() {
            assert_eq!(
                c.api_uri.as_str(),
                "http://tcalendar-side-service.linagora.local/api"
            );
            assert_eq!(c.admin_user, "admin@linagora.local");
            assert!(c.trust_all_certs);
            assert_eq!(c.response_timeout, Duration::from_secs(30));
            let dav = c.dav.unwrap();
            assert_eq!(dav.api_uri.as_str(), "http://sabre-dav.linagora.local/");
            assert_eq!(dav.admin_user, "admin");
            assert_eq!(dav.admin_password.expose(), "secret123");
        }
    }
}
