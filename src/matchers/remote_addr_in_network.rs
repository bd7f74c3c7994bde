//! `RemoteAddrInNetwork`: every recipient when the client address is in one of the listed
//! networks: `127.0.0.1`, `127.0.0.*`, `10.0.0.0/8`, `10.0.0.0/255.0.0.0`, IPv6, `localhost`.
//! With no condition it never matches, as in James.
//!
//! ```xml
//! <mailet match="RemoteAddrInNetwork=127.0.0.0/8, 10.0.0.*" class="ToProcessor"><processor>relay</processor></mailet>
//! ```

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::config::ConfigError;
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

/// A list of networks (James `NetMatcher`).
#[derive(Clone, Debug, Default)]
pub struct Networks(Vec<IpNet>);

impl Networks {
    /// Parses the condition; an empty or absent one is an empty list.
    pub fn parse(config: &MatcherConfig) -> Result<Networks, ConfigError> {
        let mut nets = Vec::new();
        for item in config
            .condition
            .as_deref()
            .unwrap_or("")
            .split([',', ' ', '\t'])
            .filter(|s| !s.is_empty())
        {
            nets.push(parse_network(item).ok_or_else(|| {
                config.error(format!(
                    "{} condition item {item:?} is not a network: expected 127.0.0.1, 127.0.0.*, 10.0.0.0/8, 10.0.0.0/255.0.0.0 or an IPv6 address or prefix",
                    config.class
                ))
            })?);
        }
        Ok(Networks(nets))
    }

    /// Whether `ip` is in one of the networks.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*ip),
            v4 => *v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }
}

fn parse_network(item: &str) -> Option<IpNet> {
    if item.eq_ignore_ascii_case("localhost") {
        return Some(IpNet::from(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
    if item.contains('*') {
        let parts: Vec<&str> = item.split('.').collect();
        let fixed: Vec<u8> = parts
            .iter()
            .take_while(|p| **p != "*")
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        if parts.len() > 4 || parts[fixed.len()..].iter().any(|p| *p != "*") {
            return None;
        }
        let mut octets = [0u8; 4];
        octets[..fixed.len()].copy_from_slice(&fixed);
        return Ipv4Net::new(Ipv4Addr::from(octets), (fixed.len() * 8) as u8)
            .ok()
            .map(IpNet::V4);
    }
    if let Some((addr, mask)) = item.split_once('/') {
        let addr: IpAddr = addr.parse().ok()?;
        let prefix = match mask.parse::<u8>() {
            Ok(p) => p,
            Err(_) => {
                let mask: Ipv4Addr = mask.parse().ok()?;
                let bits = u32::from(mask);
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    return None;
                }
                bits.leading_ones() as u8
            }
        };
        return IpNet::new(addr, prefix).ok().map(|n| n.trunc());
    }
    item.parse::<IpAddr>().ok().map(IpNet::from)
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
            networks: Networks::parse(config)?,
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
}
