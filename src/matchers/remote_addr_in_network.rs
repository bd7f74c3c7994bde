//! `RemoteAddrInNetwork`: every recipient when the client address is in one of the listed
//! networks, read as smtpserver.xml `authorizedAddresses` is ([`crate::config::networks`]):
//! `127.0.0.1`, `127.0.0.*`, `10.0.0.0/8`, `10.0.0.0/255.0.0.0`, IPv6, host names such as
//! `localhost`. With no condition it never matches, as in James.
//!
//! ```xml
//! <mailet match="RemoteAddrInNetwork=127.0.0.0/8, 10.0.0.*" class="ToProcessor"><processor>relay</processor></mailet>
//! ```

use crate::config::{ConfigError, Networks};
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// The condition's network list (the same reading as smtpserver.xml `authorizedAddresses`);
/// an empty or absent condition is an empty list.
pub(super) fn condition_networks(config: &MatcherConfig) -> Result<Networks, ConfigError> {
    Networks::parse(config.condition.as_deref().unwrap_or(""))
        .map_err(|e| config.error(format!("{} condition item {e}", config.class)))
}

/// Matches all recipients when the client is in the networks.
pub struct RemoteAddrInNetwork {
    networks: Networks,
}

impl RemoteAddrInNetwork {
    /// Reads the network list.
    pub fn build(
        config: &MatcherConfig,
        _: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        Ok(Box::new(RemoteAddrInNetwork {
            networks: condition_networks(config)?,
        }))
    }
}

impl Matcher for RemoteAddrInNetwork {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        Ok(if self.networks.contains(&mail.remote_addr) {
            mail.recipients.clone()
        } else {
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::matchers::testing::*;

    fn from(ip: &str) -> crate::mail::Mail {
        let mut m = mail(None, &["r@y.test"], "");
        m.remote_addr = ip.parse().unwrap();
        m
    }

    #[test]
    fn network_forms() {
        let cond = Some("192.168.1.*, 10.0.0.0/255.0.0.0 172.16.0.0/12,2001:db8::/32, 127.0.0.1");
        for ip in [
            "192.168.1.7",
            "10.9.8.7",
            "172.20.0.1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(
                run("RemoteAddrInNetwork", cond, &from(ip)),
                ["r@y.test"],
                "{ip}"
            );
        }
        for ip in ["192.168.2.7", "11.0.0.1", "2001:db9::1"] {
            assert!(
                run("RemoteAddrInNetwork", cond, &from(ip)).is_empty(),
                "{ip}"
            );
        }
        assert!(run("RemoteAddrInNetwork", None, &from("127.0.0.1")).is_empty());
        assert!(
            build_err("RemoteAddrInNetwork", Some("10.0.0.0/255.0.255.0"))
                .contains("is not a network")
        );
    }

    /// Whether `<authorizedAddresses>list</authorizedAddresses>` lets `ip` connect.
    fn smtp_server_authorizes(list: &str, ip: &str) -> bool {
        let xml = format!(
            "<s><smtpserver><authorizedAddresses>{list}</authorizedAddresses></smtpserver></s>"
        );
        let doc = crate::config::XmlDocument::parse(&xml, std::path::Path::new("smtpserver.xml"))
            .unwrap();
        let servers = crate::config::smtpserver::parse(&doc, std::path::Path::new(".")).unwrap();
        let ip: std::net::IpAddr = ip.parse().unwrap();
        servers[0].authorized.contains(&ip)
    }

    /// James reads `authorizedAddresses` and `RemoteAddrInNetwork` with the same NetMatcher,
    /// so one list gives one answer for one client, whichever of the two reads it.
    #[test]
    fn smtp_server_and_matcher_agree_on_every_james_form() {
        let lists = [
            "localhost",
            "127.0.0.0/8",
            "127.0.0.0/255.0.0.0",
            "127.*",
            "192.168.1.0/24",
            "192.168.1.*",
            "::1",
            "2001:db8::/32",
        ];
        let clients = [
            "127.0.0.1",
            "127.0.0.2",
            "127.1.2.3",
            "192.168.1.7",
            "192.168.2.7",
            "::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
        ];
        let mut disagreements = Vec::new();
        for list in lists {
            for ip in clients {
                let smtp = smtp_server_authorizes(list, ip);
                let matcher = !run("RemoteAddrInNetwork", Some(list), &from(ip)).is_empty();
                if smtp != matcher {
                    disagreements.push(format!(
                        "{list:?} vs {ip}: authorizedAddresses says {smtp}, RemoteAddrInNetwork says {matcher}"
                    ));
                }
            }
        }
        assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    }
}
