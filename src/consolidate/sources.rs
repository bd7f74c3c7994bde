//! Which mail system a mirrored mail comes from: the first `[[sources]]` entry whose client
//! network, HELO name, recipient domain or header matches. The name is set as the mail
//! attribute [`SOURCE_ATTRIBUTE`] before the root processor runs, so matchers
//! (`HasMailAttributeWithValue=mailetd.source, paris`) and the `ConsolidatedCalendar`
//! mailet can use it.

use std::net::IpAddr;

use ipnet::IpNet;

use super::stats;
use crate::config::ConfigError;
use crate::config::consolidate::SourceSettings;
use crate::mail::{AttributeValue, Mail};

/// The attribute holding the source's name.
pub const SOURCE_ATTRIBUTE: &str = "mailetd.source";

/// One source, validated.
#[derive(Clone, Debug)]
struct Source {
    name: String,
    networks: Vec<IpNet>,
    /// Lowercased; a leading `*.` kept as `.suffix`.
    helo: Vec<String>,
    recipient_domains: Vec<String>,
    /// (name, value) with the value lowercased; `None`: present is enough.
    header: Option<(String, Option<String>)>,
}

/// The configured sources, in file order.
#[derive(Clone, Debug, Default)]
pub struct Sources(Vec<Source>);

/// Whether `name` is a valid source name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Sources {
    /// Validates `[[sources]]` and registers the names for `/api/status`.
    pub fn new(settings: &[SourceSettings]) -> Result<Sources, ConfigError> {
        let mut sources: Vec<Source> = Vec::new();
        for (i, s) in settings.iter().enumerate() {
            let what = format!("mailetd.toml [[sources]] #{} ({:?})", i + 1, s.name);
            if !valid_name(&s.name) {
                return Err(ConfigError::new(format!(
                    "{what}: name must be letters, digits, '.', '_' or '-'"
                )));
            }
            if sources.iter().any(|o| o.name == s.name) {
                return Err(ConfigError::new(format!("{what}: the name is used twice")));
            }
            let mut networks = Vec::new();
            for n in &s.networks {
                let net = n
                    .parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        ConfigError::new(format!(
                            "{what}: networks item {n:?} is not an address or a prefix (10.1.0.0/16)"
                        ))
                    })?;
                networks.push(net.trunc());
            }
            let helo = s
                .helo
                .iter()
                .map(|h| {
                    let h = h.trim().to_ascii_lowercase();
                    h.strip_prefix('*').map(str::to_string).unwrap_or(h)
                })
                .collect::<Vec<_>>();
            if helo.iter().any(|h| h.is_empty() || h == ".") {
                return Err(ConfigError::new(format!("{what}: an empty helo name")));
            }
            let recipient_domains = s
                .recipient_domains
                .iter()
                .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
                .collect::<Vec<_>>();
            if recipient_domains.iter().any(String::is_empty) {
                return Err(ConfigError::new(format!(
                    "{what}: an empty recipient domain"
                )));
            }
            let header = match s.header.as_deref().map(str::trim) {
                None => None,
                Some(h) => {
                    let (name, value) = match h.split_once(':') {
                        Some((n, v)) => (n.trim(), Some(v.trim().to_lowercase())),
                        None => (h, None),
                    };
                    if name.is_empty() || name.contains(char::is_whitespace) {
                        return Err(ConfigError::new(format!(
                            "{what}: header {h:?} is not \"Name: value\" or \"Name\""
                        )));
                    }
                    Some((name.to_string(), value.filter(|v| !v.is_empty())))
                }
            };
            if networks.is_empty()
                && helo.is_empty()
                && recipient_domains.is_empty()
                && header.is_none()
            {
                return Err(ConfigError::new(format!(
                    "{what}: no criterion: give networks, helo, recipient_domains or header"
                )));
            }
            sources.push(Source {
                name: s.name.clone(),
                networks,
                helo,
                recipient_domains,
                header,
            });
        }
        stats::register(sources.iter().map(|s| s.name.as_str()));
        Ok(Sources(sources))
    }

    /// Whether a source of this name is configured.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.name == name)
    }

    /// The name of the source `mail` comes from, if any.
    pub fn source_of(&self, mail: &Mail) -> Option<&str> {
        let ip = match mail.remote_addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(mail.remote_addr, IpAddr::V4),
            v4 => v4,
        };
        let helo = mail.helo.trim().to_ascii_lowercase();
        let header_block = mail.header_block();
        self.0
            .iter()
            .find(|s| {
                s.networks.iter().any(|n| n.contains(&ip))
                    || s.helo.iter().any(|h| match h.strip_prefix('.') {
                        Some(suffix) => helo
                            .strip_suffix(suffix)
                            .is_some_and(|rest| rest.ends_with('.')),
                        None => *h == helo,
                    })
                    || mail
                        .recipients
                        .iter()
                        .any(|r| s.recipient_domains.contains(&r.domain))
                    || s.header.as_ref().is_some_and(|(name, value)| {
                        crate::mail::headers::raw_value(header_block, name).is_some_and(|v| {
                            value
                                .as_ref()
                                .is_none_or(|want| v.trim().to_lowercase() == *want)
                        })
                    })
            })
            .map(|s| s.name.as_str())
    }

    /// Sets [`SOURCE_ATTRIBUTE`] on `mail` and counts the mail for its source.
    pub fn attribute(&self, mail: &mut Mail) {
        if self.0.is_empty() || mail.attribute(SOURCE_ATTRIBUTE).is_some() {
            return;
        }
        if let Some(name) = self.source_of(mail).map(str::to_string) {
            stats::record_mail(&name);
            mail.set_attribute(SOURCE_ATTRIBUTE, AttributeValue::String(name));
        }
    }
}

/// The source `mail` was attributed to.
pub fn source_of(mail: &Mail) -> Option<String> {
    match mail.attribute(SOURCE_ATTRIBUTE)? {
        AttributeValue::String(s) => Some(s.clone()),
        other => Some(other.to_text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::MailAddress;

    fn source(name: &str) -> SourceSettings {
        SourceSettings {
            name: name.into(),
            ..SourceSettings::default()
        }
    }

    fn mail(ip: &str, helo: &str, rcpt: &str, headers: &str) -> Mail {
        let mut m = Mail::new(
            None,
            vec![MailAddress::parse(rcpt).unwrap()],
            format!("{headers}Subject: x\r\n\r\nbody\r\n").into_bytes(),
        );
        m.remote_addr = ip.parse().unwrap();
        m.helo = helo.into();
        m
    }

    #[test]
    fn the_first_matching_source_wins_by_each_criterion() {
        let sources = Sources::new(&[
            SourceSettings {
                networks: vec!["10.1.0.0/16".into(), "192.0.2.7".into()],
                ..source("net")
            },
            SourceSettings {
                helo: vec!["MX1.paris.example".into(), "*.lyon.example".into()],
                ..source("helo")
            },
            SourceSettings {
                recipient_domains: vec!["@Berlin.example".into()],
                ..source("domain")
            },
            SourceSettings {
                header: Some("X-Mirror-Source: Madrid".into()),
                ..source("header")
            },
        ])
        .unwrap();
        let of = |m: &Mail| sources.source_of(m).map(str::to_string);
        let plain = |ip, helo, rcpt| mail(ip, helo, rcpt, "");
        assert_eq!(
            of(&plain("10.1.2.3", "x", "a@x.example")).as_deref(),
            Some("net")
        );
        assert_eq!(
            of(&plain("::ffff:192.0.2.7", "x", "a@x.example")).as_deref(),
            Some("net")
        );
        assert_eq!(
            of(&plain("127.0.0.1", "mx1.Paris.example", "a@x.example")).as_deref(),
            Some("helo")
        );
        assert_eq!(
            of(&plain("127.0.0.1", "smtp.out.lyon.example", "a@x.example")).as_deref(),
            Some("helo")
        );
        assert_eq!(
            of(&plain("127.0.0.1", "notlyon.example", "a@x.example")),
            None
        );
        assert_eq!(
            of(&plain("127.0.0.1", "x", "a@berlin.example")).as_deref(),
            Some("domain")
        );
        assert_eq!(
            of(&mail(
                "127.0.0.1",
                "x",
                "a@x.example",
                "X-Mirror-Source: madrid\r\n"
            ))
            .as_deref(),
            Some("header")
        );
        assert_eq!(
            of(&mail(
                "127.0.0.1",
                "x",
                "a@x.example",
                "X-Mirror-Source: rome\r\n"
            )),
            None
        );
        // file order decides between two matching sources
        assert_eq!(
            of(&plain("10.1.0.1", "mx1.paris.example", "a@x.example")).as_deref(),
            Some("net")
        );
    }

    #[test]
    fn bad_sources_are_refused_with_their_name() {
        let err = |s: SourceSettings| Sources::new(&[s]).unwrap_err().to_string();
        assert!(err(source("paris")).contains("no criterion"));
        assert!(
            err(SourceSettings {
                networks: vec!["10.1.0.0/99".into()],
                ..source("paris")
            })
            .contains("networks item \"10.1.0.0/99\"")
        );
        assert!(
            err(SourceSettings {
                helo: vec!["a".into()],
                ..source("a b")
            })
            .contains("name must be")
        );
        assert!(
            err(SourceSettings {
                header: Some("X Bad: 1".into()),
                ..source("p")
            })
            .contains("header")
        );
        let twice = SourceSettings {
            helo: vec!["a".into()],
            ..source("p")
        };
        assert!(
            Sources::new(&[twice.clone(), twice])
                .unwrap_err()
                .to_string()
                .contains("used twice")
        );
    }
}
