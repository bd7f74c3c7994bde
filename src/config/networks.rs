//! Network lists as James writes them (its `NetMatcher`), read the same way for
//! smtpserver.xml `authorizedAddresses` and the `RemoteAddr[Not]InNetwork` matchers, so one
//! list gives one answer for one client wherever it is written.
//!
//! Items are separated by commas or white space. Forms (AJ:`InetNetworkBuilder.java`):
//! `127.0.0.1`, `127.0.0.*` (and `127.*`, `*`), `127.0.0.0/8`, `127.0.0.0/255.0.0.0`,
//! `::1`, `2001:db8::/32` (also James's `2001:db8::%32`), and host names: `localhost`,
//! `mx.example.org`, `mx.example.org/24`, `mx.example.org/255.255.255.0`. A host name is
//! resolved once, when the configuration is read, as James does; it stands for each of its
//! addresses (James keeps only the first one). A name that does not resolve is an error
//! (James drops the item silently, which turns a typo into a refused client).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};

use ipnet::{IpNet, Ipv4Net};

/// A list of networks; a client is in it when one of them contains its address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Networks(Vec<IpNet>);

/// Why one item of a network list was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkError {
    /// The item as written.
    pub item: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a network: {}", self.item, self.reason)
    }
}

impl std::error::Error for NetworkError {}

impl Networks {
    /// Reads a comma or space separated list; an empty text is an empty list.
    pub fn parse(list: &str) -> Result<Networks, NetworkError> {
        let mut nets = Vec::new();
        for item in list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            nets.extend(parse_item(item).map_err(|reason| NetworkError {
                item: item.to_string(),
                reason,
            })?);
        }
        Ok(Networks(nets))
    }

    /// Whether `ip` is in one of the networks. An IPv4-mapped IPv6 address (a v4 client on
    /// a dual-stack socket) counts as its IPv4 address.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*ip),
            v4 => *v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The networks, host names already resolved.
    pub fn iter(&self) -> impl Iterator<Item = &IpNet> {
        self.0.iter()
    }

    /// Whether the list has no network (it then contains no address).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<IpNet>> for Networks {
    fn from(nets: Vec<IpNet>) -> Networks {
        Networks(nets)
    }
}

/// One item: usually one network, several for a host name with several addresses.
fn parse_item(item: &str) -> Result<Vec<IpNet>, String> {
    if item.contains(':') {
        return parse_v6(item).map(|n| vec![n]);
    }
    if item.ends_with('*') {
        return parse_wildcard(item).map(|n| vec![n]);
    }
    let (host, mask) = match item.split_once('/') {
        Some((host, mask)) => (host, Some(mask)),
        None => (item, None),
    };
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(vec![with_mask(ip, mask)?]);
    }
    let addrs = resolve(host)?;
    match mask {
        None => Ok(addrs.into_iter().map(IpNet::from).collect()),
        // As in James, a name with a mask is an IPv4 network.
        Some(_) => {
            let v4: Vec<Ipv4Addr> = addrs
                .into_iter()
                .filter_map(|a| match a {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .collect();
            if v4.is_empty() {
                return Err(format!("{host:?} has no IPv4 address for an IPv4 mask"));
            }
            v4.into_iter().map(|ip| with_mask(ip, mask)).collect()
        }
    }
}

/// `a.b.c.*`, `a.b.*`, `a.*`, `*`: the fixed leading octets, the rest any.
fn parse_wildcard(item: &str) -> Result<IpNet, String> {
    let parts: Vec<&str> = item.split('.').collect();
    let fixed = parts.iter().take_while(|p| **p != "*").count();
    let octets: Vec<u8> = parts[..fixed]
        .iter()
        .map(|p| p.parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| "expected a pattern like 127.0.0.*".to_string())?;
    if parts.len() > 4 || parts[fixed..].iter().any(|p| *p != "*") {
        return Err("expected a pattern like 127.0.0.* (wildcards only at the end)".into());
    }
    let mut address = [0u8; 4];
    address[..fixed].copy_from_slice(&octets);
    let net = Ipv4Net::new(Ipv4Addr::from(address), 8 * fixed as u8)
        .expect("at most 4 octets, so a prefix of at most 32");
    Ok(IpNet::V4(net))
}

/// `addr`, `addr/len` or James's `addr%len`.
fn parse_v6(item: &str) -> Result<IpNet, String> {
    if item.ends_with('*') {
        return Err("wildcards are for IPv4 only; write a prefix like 2001:db8::/32".into());
    }
    let (addr, prefix) = match item.split_once(['/', '%']) {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (item, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
    let prefix = match prefix {
        None => return Ok(IpNet::from(ip)),
        Some(p) => p
            .parse::<u8>()
            .map_err(|_| format!("{p:?} is not a prefix length"))?,
    };
    IpNet::new(ip, prefix)
        .map(|n| n.trunc())
        .map_err(|_| format!("prefix /{prefix} is too long"))
}

/// `ip` alone, `ip/len` or `ip/255.255.0.0`.
fn with_mask(ip: Ipv4Addr, mask: Option<&str>) -> Result<IpNet, String> {
    let prefix = match mask {
        None => 32,
        Some(m) => match m.parse::<u8>() {
            Ok(p) => p,
            Err(_) => {
                let netmask: Ipv4Addr = m
                    .parse()
                    .map_err(|_| format!("{m:?} is neither a prefix length nor a netmask"))?;
                ipnet::ipv4_mask_to_prefix(netmask)
                    .map_err(|_| format!("{m:?} is not a contiguous netmask"))?
            }
        },
    };
    Ipv4Net::new(ip, prefix)
        .map(|n| IpNet::V4(n.trunc()))
        .map_err(|_| format!("prefix /{prefix} is too long"))
}

/// Every address of `host` from the system resolver (/etc/hosts, then DNS).
fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    let valid_name = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !valid_name {
        return Err("expected an address, a network like 10.0.0.0/8 or a host name".into());
    }
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("{host:?} is not an IPv4 address"));
    }
    let mut addrs: Vec<IpAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("host name {host:?} does not resolve ({e})"))?
        .map(|a| a.ip())
        .collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(format!("host name {host:?} has no address"));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &str) -> Vec<String> {
        Networks::parse(list)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn err(list: &str) -> String {
        Networks::parse(list).unwrap_err().to_string()
    }

    #[test]
    fn every_james_form() {
        assert_eq!(nets("127.0.0.*"), ["127.0.0.0/24"]);
        assert_eq!(nets("10.*"), ["10.0.0.0/8"]);
        assert_eq!(nets("*"), ["0.0.0.0/0"]);
        assert_eq!(nets("10.1.2.3/255.255.0.0"), ["10.1.0.0/16"]);
        assert_eq!(nets("127.0.0.0/8"), ["127.0.0.0/8"]);
        assert_eq!(nets("192.168.1.0/24"), ["192.168.1.0/24"]);
        assert_eq!(nets("0.0.0.0/0"), ["0.0.0.0/0"]);
        assert_eq!(nets("1.2.3.4"), ["1.2.3.4/32"]);
        assert_eq!(nets("::1"), ["::1/128"]);
        assert_eq!(nets("fd00::/8"), ["fd00::/8"]);
        assert_eq!(nets("2001:db8::1%32"), ["2001:db8::/32"]);
        assert_eq!(
            nets("10.0.0.0/8,\n\t192.168.1.*  ::1"),
            ["10.0.0.0/8", "192.168.1.0/24", "::1/128"]
        );
        assert!(Networks::parse(" , ").unwrap().is_empty());
    }

    #[test]
    fn host_names_resolve_to_their_addresses() {
        let local = Networks::parse("localhost").unwrap();
        assert!(local.contains(&"127.0.0.1".parse().unwrap()));
        assert!(!local.contains(&"127.0.0.2".parse().unwrap()));
        assert!(!local.contains(&"10.0.0.1".parse().unwrap()));
        let local_net = Networks::parse("localhost/8").unwrap();
        assert!(local_net.contains(&"127.200.0.1".parse().unwrap()));
        assert!(
            err("mx.mailetd.invalid").contains("\"mx.mailetd.invalid\" does not resolve"),
            "{}",
            err("mx.mailetd.invalid")
        );
    }

    #[test]
    fn ipv4_mapped_clients_count_as_ipv4() {
        let n = Networks::parse("127.0.0.0/8").unwrap();
        assert!(n.contains(&"::ffff:127.0.0.1".parse().unwrap()));
        assert!(!n.contains(&"::1".parse().unwrap()));
    }

    #[test]
    fn bad_items_say_what_is_expected() {
        assert!(err("10.0.0.0/255.0.255.0").contains("not a contiguous netmask"));
        assert!(err("10.*.1.*").contains("wildcards only at the end"));
        assert!(err("10.0.0.0/33").contains("too long"));
        assert!(err("2001:db8::*").contains("IPv4 only"));
        assert!(err("fd00::/129").contains("too long"));
        assert!(err("10.0.0.0/8, 300.1.2.3").starts_with("\"300.1.2.3\" is not a network"));
    }
}
