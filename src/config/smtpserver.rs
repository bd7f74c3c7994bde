//! `conf/smtpserver.xml`: every `<smtpserver>` block read into a validated
//! [`SmtpServerConfig`], with James's defaults and quirks (spec james-config §4). Errors name
//! the file, line and column of the offending element.
//!
//! Settings that make no sense for a collector that never relays nor authenticates
//! (`auth`, `verifyIdentity`, `handlerchain`, `jmxName`, Netty tuning…) are accepted and
//! ignored with a debug line, so a James file loads unchanged.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::error::{ConfigError, Position, closest_names};
use super::networks::Networks;
use super::xml::{Element, XmlDocument};

/// The embedded default, used when `conf/smtpserver.xml` does not exist.
pub const DEFAULT_SMTPSERVER_XML: &str = include_str!("../../conf/smtpserver.xml");

/// James's `maxLineLength` default (bytes, CRLF included).
pub const DEFAULT_MAX_LINE_LENGTH: usize = 8192;

/// One `<smtpserver>` block, validated.
#[derive(Clone, Debug)]
pub struct SmtpServerConfig {
    /// `jmxName` (used in logs only).
    pub name: String,
    /// Addresses to listen on (`bind`, comma list).
    pub bind: Vec<SocketAddr>,
    /// `connectionBacklog`.
    pub backlog: u32,
    /// `connectiontimeout`: idle time allowed while waiting for a command or data.
    pub timeout: Duration,
    /// `connectionLimit` (0 = unlimited).
    pub connection_limit: usize,
    /// `connectionLimitPerIP` (0 = unlimited).
    pub connection_limit_per_ip: usize,
    /// `maxmessagesize` in bytes (0 = unlimited).
    pub max_message_size: usize,
    /// `maxLineLength` in bytes.
    pub max_line_length: usize,
    /// The name in the greeting, the EHLO reply and `Received:` headers.
    pub hello_name: String,
    /// `smtpGreeting`: text after `220 ` (derived from the hello name when absent).
    pub greeting: String,
    /// `authorizedAddresses`; clients outside are refused at connect.
    pub authorized: Networks,
    /// False when `authorizedAddresses` was absent and the loopback default applies.
    pub authorized_explicit: bool,
    /// `<tls>` when socketTLS or startTLS is on.
    pub tls: Option<TlsSettings>,
    /// `gracefulShutdown`: let sessions finish at shutdown instead of closing them.
    pub graceful_shutdown: bool,
    /// Seconds sessions get to finish at shutdown (mailetd.toml `shutdown_timeout_secs`).
    pub shutdown_timeout: Duration,
    /// Longest time one DATA or BDAT chunk may take to arrive, however steadily its bytes
    /// trickle in (mailetd.toml `smtp_data_timeout_secs`).
    pub data_timeout: Duration,
    /// `heloEhloEnforcement`: MAIL needs a HELO/EHLO first.
    pub helo_ehlo_enforcement: bool,
    /// `addressBracketsEnforcement`: `MAIL FROM:a@b` without `<>` is refused.
    pub address_brackets_enforcement: bool,
    /// `disabledFeatures`, uppercased: hidden from the EHLO reply.
    pub disabled_features: Vec<String>,
    /// Where the `<smtpserver>` element is.
    pub position: Position,
}

/// `<tls>`: PEM key and certificate chain.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// `socketTLS`: TLS from the first byte.
    pub socket_tls: bool,
    /// `startTLS`: STARTTLS advertised and accepted.
    pub start_tls: bool,
    /// `privateKey` (PEM).
    pub private_key: PathBuf,
    /// `certificates` (PEM chain).
    pub certificates: PathBuf,
    /// When both files are missing, use (and first create) a self-signed pair of the same
    /// file names in this directory, under `data_dir` (`--generate-keystore`).
    pub generate_into: Option<PathBuf>,
    /// Where the `<tls>` element is.
    pub position: Position,
}

/// Elements James knows and mailetd ignores on purpose (a collector does not authenticate,
/// does not relay and has no JMX or Netty knobs).
pub const IGNORED: &[&str] = &[
    "jmxName",
    "handlerchain",
    "auth",
    "authRequired",
    "verifyIdentity",
    "ioWorkerCount",
    "maxExecutorCount",
    "bossWorkerCount",
    "useEpoll",
    "proxyRequired",
    "proxyFirst",
    "dnsService",
    "enableJmx",
    "smtpGreetingDelay",
];

/// Elements of `<smtpserver>` mailetd reads (docs/configuration.md is checked against it).
pub const KNOWN: &[&str] = &[
    "bind",
    "connectionBacklog",
    "connectiontimeout",
    "connectionLimit",
    "connectionLimitPerIP",
    "maxmessagesize",
    "maxLineLength",
    "helloName",
    "smtpGreeting",
    "authorizedAddresses",
    "tls",
    "gracefulShutdown",
    "heloEhloEnforcement",
    "addressBracketsEnforcement",
    "disabledFeatures",
];

/// Reads `conf_dir/smtpserver.xml` (or the embedded default when it does not exist) and
/// returns the enabled servers. Relative PEM paths resolve against the parent of `conf_dir`
/// (James's working directory, where `file://conf/…` points).
pub fn load(conf_dir: &Path) -> Result<Vec<SmtpServerConfig>, ConfigError> {
    let path = conf_dir.join("smtpserver.xml");
    let doc = if path.exists() {
        XmlDocument::load(&path)?
    } else {
        tracing::info!(
            "{} not found: using the embedded default (SMTP on 127.0.0.1:2525)",
            path.display()
        );
        XmlDocument::parse(DEFAULT_SMTPSERVER_XML, &path)?
    };
    let base = conf_dir.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&doc, &base)
}

/// Validates a parsed `smtpserver.xml`; only enabled servers are returned.
pub fn parse(doc: &XmlDocument, base: &Path) -> Result<Vec<SmtpServerConfig>, ConfigError> {
    let mut servers = Vec::new();
    for el in &doc.root.children {
        if el.name != "smtpserver" {
            return Err(el.error(format!(
                "unexpected <{}> in <{}>: expected <smtpserver> elements",
                el.name, doc.root.name
            )));
        }
        if let Some(server) = parse_server(el, base)? {
            servers.push(server);
        }
    }
    if servers.is_empty() {
        tracing::warn!("smtpserver.xml enables no <smtpserver>: mailetd receives no mail");
    }
    Ok(servers)
}

fn parse_server(el: &Element, base: &Path) -> Result<Option<SmtpServerConfig>, ConfigError> {
    if let Some(a) = el.attribute("enabled")
        && !parse_bool(&a.value, &a.position)?
    {
        return Ok(None);
    }
    for child in &el.children {
        if KNOWN.contains(&child.name.as_str()) {
            continue;
        }
        if IGNORED.contains(&child.name.as_str()) {
            tracing::debug!(
                "{}: <{}> is a James setting mailetd ignores",
                child.position,
                child.name
            );
            continue;
        }
        let hint = closest_names(&child.name, KNOWN.iter().copied());
        let hint = match hint.first() {
            Some(h) => format!(" (did you mean <{h}>?)"),
            None => String::new(),
        };
        tracing::warn!(
            "{}: unknown element <{}> in <smtpserver> ignored{hint}",
            child.position,
            child.name
        );
    }
    let name = el
        .child_text("jmxName")
        .filter(|s| !s.is_empty())
        .unwrap_or("smtpserver")
        .to_string();
    let bind = match el.child("bind") {
        Some(b) => parse_bind(b)?,
        None => vec![SocketAddr::from(([0, 0, 0, 0], 25))],
    };
    let backlog = opt_number(el, "connectionBacklog", 200u32)?;
    let timeout_secs = opt_number(el, "connectiontimeout", 300u64)?;
    if timeout_secs == 0 {
        return Err(el
            .child("connectiontimeout")
            .unwrap()
            .error("connectiontimeout must be at least 1 second"));
    }
    let connection_limit = opt_limit(el, "connectionLimit")?;
    let connection_limit_per_ip = opt_limit(el, "connectionLimitPerIP")?;
    let max_message_size = match el.child("maxmessagesize") {
        Some(c) => parse_size(&c.text).map_err(|m| c.error(m))?,
        None => 0,
    };
    let max_line_length = opt_number(el, "maxLineLength", DEFAULT_MAX_LINE_LENGTH)?;
    if !(1000..=1_048_576).contains(&max_line_length) {
        return Err(el.child("maxLineLength").unwrap().error(format!(
            "maxLineLength {max_line_length} is out of range: allowed 1000..1048576"
        )));
    }
    let hello_name = hello_name(el.child("helloName"))?;
    let greeting = match el.child_text("smtpGreeting").filter(|s| !s.is_empty()) {
        Some(g) => g.to_string(),
        None => format!("{hello_name} ESMTP mailetd ready"),
    };
    let (authorized, authorized_explicit) = match el.child("authorizedAddresses") {
        Some(a) => (parse_networks(a)?, true),
        None => {
            tracing::info!(
                "{}: no <authorizedAddresses>: only loopback clients are served",
                el.position
            );
            (
                Networks::from(vec![
                    IpNet::V4(Ipv4Net::new(Ipv4Addr::LOCALHOST, 8).unwrap()),
                    IpNet::V6(Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).unwrap()),
                ]),
                false,
            )
        }
    };
    let tls = match el.child("tls") {
        Some(t) => parse_tls(t, base)?,
        None => None,
    };
    let disabled_features = el
        .children_named("disabledFeatures")
        .flat_map(|d| {
            d.text
                .split([',', ' ', '\t', '\n'])
                .filter(|s| !s.is_empty())
                .map(|s| s.to_ascii_uppercase())
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Some(SmtpServerConfig {
        name,
        bind,
        backlog,
        timeout: Duration::from_secs(timeout_secs),
        connection_limit,
        connection_limit_per_ip,
        max_message_size,
        max_line_length,
        hello_name,
        greeting,
        authorized,
        authorized_explicit,
        tls,
        graceful_shutdown: opt_bool(el, "gracefulShutdown", true)?,
        shutdown_timeout: Duration::from_secs(30),
        data_timeout: Duration::from_secs(crate::config::settings::DEFAULT_SMTP_DATA_TIMEOUT_SECS),
        helo_ehlo_enforcement: opt_bool(el, "heloEhloEnforcement", true)?,
        address_brackets_enforcement: opt_bool(el, "addressBracketsEnforcement", true)?,
        disabled_features,
        position: el.position.clone(),
    }))
}

fn parse_bool(text: &str, at: &Position) -> Result<bool, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        other => Err(at.error(format!("expected true or false, found {other:?}"))),
    }
}

fn opt_bool(el: &Element, name: &str, default: bool) -> Result<bool, ConfigError> {
    match el.child(name) {
        Some(c) => parse_bool(&c.text, &c.position)
            .map_err(|e| c.error(format!("<{name}>: {}", e.message))),
        None => Ok(default),
    }
}

fn opt_number<T: std::str::FromStr>(
    el: &Element,
    name: &str,
    default: T,
) -> Result<T, ConfigError> {
    match el.child(name) {
        Some(c) => c.text.trim().parse().map_err(|_| {
            c.error(format!(
                "<{name}> must be a non-negative integer, found {:?}",
                c.text
            ))
        }),
        None => Ok(default),
    }
}

/// `connectionLimit`-style value: unset or 0 = unlimited, negative = error (as in James).
fn opt_limit(el: &Element, name: &str) -> Result<usize, ConfigError> {
    let Some(c) = el.child(name) else {
        return Ok(0);
    };
    let n: i64 = c
        .text
        .trim()
        .parse()
        .map_err(|_| c.error(format!("<{name}> must be an integer, found {:?}", c.text)))?;
    if n < 0 {
        return Err(c.error(format!("<{name}> must not be negative (0 means unlimited)")));
    }
    Ok(n as usize)
}

fn parse_bind(el: &Element) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut out = Vec::new();
    for item in el.text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        // James writes `0.0.0.0:25` but also accepts `localhost:25`.
        let addr = match item.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => item
                .strip_prefix("localhost:")
                .and_then(|p| p.parse::<u16>().ok())
                .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p))),
        }
        .ok_or_else(|| el.error(format!("<bind>: {item:?} is not an ip:port address")))?;
        out.push(addr);
    }
    if out.is_empty() {
        return Err(el.error("<bind> is empty: expected ip:port[,ip:port…]"));
    }
    Ok(out)
}

/// `maxmessagesize`: a bare number is KiB (James's quirk); suffixes B, K, M, G.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], t[i..].trim()),
        None => (t, "K"),
    };
    let n: usize = digits.parse().map_err(|_| {
        format!("maxmessagesize {t:?}: expected a number with an optional B, K, M or G suffix")
    })?;
    let factor = match unit.to_ascii_uppercase().as_str() {
        "B" => 1,
        "K" | "KB" | "KIB" => 1024,
        "M" | "MB" | "MIB" => 1024 * 1024,
        "G" | "GB" | "GIB" => 1024 * 1024 * 1024,
        _ => {
            return Err(format!(
                "maxmessagesize {t:?}: unknown unit {unit:?} (use B, K, M or G; no unit = K)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("maxmessagesize {t:?} is too large"))
}

/// James's quirk: `autodetect` defaults to true, so a bare `<helloName>x</helloName>` is
/// ignored in favour of the host name.
fn hello_name(el: Option<&Element>) -> Result<String, ConfigError> {
    let Some(el) = el else {
        return Ok(host_name());
    };
    let autodetect = match el.attribute("autodetect") {
        Some(a) => parse_bool(&a.value, &a.position)?,
        None => true,
    };
    if autodetect {
        if !el.text.is_empty() {
            tracing::warn!(
                "{}: <helloName>{}</helloName> is ignored because autodetect defaults to true (as in James); \
                 write <helloName autodetect=\"false\">{}</helloName> to use it",
                el.position,
                el.text,
                el.text
            );
        }
        return Ok(host_name());
    }
    if el.text.is_empty() || el.text.contains(char::is_whitespace) {
        return Err(el.error(format!(
            "<helloName autodetect=\"false\"> needs a host name, found {:?}",
            el.text
        )));
    }
    Ok(el.text.clone())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn parse_networks(el: &Element) -> Result<Networks, ConfigError> {
    let networks =
        Networks::parse(&el.text).map_err(|e| el.error(format!("<authorizedAddresses>: {e}")))?;
    if networks.is_empty() {
        return Err(el.error(
            "<authorizedAddresses> is empty: list the networks allowed to send (e.g. 127.0.0.0/8)",
        ));
    }
    Ok(networks)
}

fn parse_tls(el: &Element, base: &Path) -> Result<Option<TlsSettings>, ConfigError> {
    let flag = |name: &str| -> Result<bool, ConfigError> {
        match el.attribute(name) {
            Some(a) => parse_bool(&a.value, &a.position),
            None => Ok(false),
        }
    };
    let socket_tls = flag("socketTLS")?;
    let start_tls = flag("startTLS")?;
    if !socket_tls && !start_tls {
        return Ok(None);
    }
    if socket_tls && start_tls {
        return Err(el.error("<tls>: socketTLS and startTLS are exclusive; enable one"));
    }
    if el.child("keystore").is_some() && el.child("privateKey").is_none() {
        return Err(el.error(
            "<tls>: Java keystores are not supported; convert it to PEM and use <privateKey> and <certificates>",
        ));
    }
    let path = |name: &str| -> Result<PathBuf, ConfigError> {
        let c = el
            .child(name)
            .filter(|c| !c.text.is_empty())
            .ok_or_else(|| el.error(format!("<tls> needs <{name}> (a PEM file)")))?;
        let text = c.text.strip_prefix("file://").unwrap_or(&c.text);
        if text.starts_with("classpath:") {
            return Err(c.error("classpath: resources do not exist here; give a file path"));
        }
        let p = PathBuf::from(text);
        Ok(if p.is_absolute() { p } else { base.join(p) })
    };
    Ok(Some(TlsSettings {
        socket_tls,
        start_tls,
        private_key: path("privateKey")?,
        certificates: path("certificates")?,
        generate_into: None,
        position: el.position.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(xml: &str) -> Result<Vec<SmtpServerConfig>, ConfigError> {
        let doc = XmlDocument::parse(xml, Path::new("conf/smtpserver.xml"))?;
        parse(&doc, Path::new("/srv"))
    }

    #[test]
    fn defaults_follow_james() {
        let s = parse_text("<smtpservers><smtpserver/></smtpservers>").unwrap();
        let s = &s[0];
        assert_eq!(s.bind, vec!["0.0.0.0:25".parse().unwrap()]);
        assert_eq!(s.backlog, 200);
        assert_eq!(s.timeout, Duration::from_secs(300));
        assert_eq!(s.max_line_length, 8192);
        assert_eq!(s.max_message_size, 0);
        assert!(s.helo_ehlo_enforcement && s.address_brackets_enforcement && s.graceful_shutdown);
        assert!(!s.authorized_explicit);
    }

    #[test]
    fn the_embedded_default_loads() {
        let doc =
            XmlDocument::parse(DEFAULT_SMTPSERVER_XML, Path::new("conf/smtpserver.xml")).unwrap();
        let s = parse(&doc, Path::new(".")).unwrap();
        assert_eq!(s[0].bind, vec!["127.0.0.1:2525".parse().unwrap()]);
    }

    #[test]
    fn sizes_default_to_kib() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("10").unwrap(), 10 * 1024);
        assert_eq!(parse_size("100B").unwrap(), 100);
        assert_eq!(parse_size("2k").unwrap(), 2048);
        assert_eq!(parse_size("30M").unwrap(), 30 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert!(parse_size("5X").is_err());
        assert!(parse_size("-5").is_err());
    }

    #[test]
    fn authorized_addresses_take_every_james_form() {
        let s = parse_text(
            "<s><smtpserver><authorizedAddresses>127.0.0.*, 10.1.2.3/255.255.0.0\n fd00::/8 localhost</authorizedAddresses></smtpserver></s>",
        )
        .unwrap();
        let allows = |ip: &str| s[0].authorized.contains(&ip.parse().unwrap());
        assert!(s[0].authorized_explicit);
        assert!(allows("127.0.0.9") && allows("10.1.200.1") && allows("fd00::1"));
        assert!(!allows("10.2.0.1") && !allows("fe80::1"));
        let err = parse_text(
            "<s><smtpserver><authorizedAddresses> , </authorizedAddresses></smtpserver></s>",
        )
        .unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[test]
    fn bare_hello_name_is_ignored_unless_autodetect_is_false() {
        let s = parse_text("<s><smtpserver><helloName>mx.example.org</helloName></smtpserver></s>")
            .unwrap();
        assert_ne!(s[0].hello_name, "mx.example.org");
        assert_eq!(s[0].hello_name, host_name());
        let s = parse_text(
            "<s><smtpserver><helloName autodetect=\"false\">mx.example.org</helloName></smtpserver></s>",
        )
        .unwrap();
        assert_eq!(s[0].hello_name, "mx.example.org");
        assert_eq!(s[0].greeting, "mx.example.org ESMTP mailetd ready");
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let err = parse_text(
            "<s>\n  <smtpserver>\n    <maxLineLength>10</maxLineLength>\n  </smtpserver>\n</s>",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("conf/smtpserver.xml:3:5: maxLineLength 10 is out of range"),
            "{err}"
        );
        let err =
            parse_text("<s>\n<smtpserver>\n<connectionLimit>-1</connectionLimit></smtpserver></s>")
                .unwrap_err();
        assert!(
            err.to_string().starts_with("conf/smtpserver.xml:3:1:"),
            "{err}"
        );
        let err =
            parse_text("<s><smtpserver>\n <bind>127.0.0.1</bind></smtpserver></s>").unwrap_err();
        assert!(err.to_string().contains(":2:2: <bind>"), "{err}");
        let err = parse_text("<s><smtpserver>\n <authorizedAddresses>10.0.0.0/8, mx.mailetd.invalid</authorizedAddresses></smtpserver></s>")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("\"mx.mailetd.invalid\" does not resolve"),
            "{err}"
        );
        let err = parse_text("<s><smtpserver><maxmessagesize>5T</maxmessagesize></smtpserver></s>")
            .unwrap_err();
        assert!(err.to_string().contains("unknown unit"), "{err}");
    }

    #[test]
    fn disabled_servers_and_james_extras() {
        let s = parse_text(
            "<s><smtpserver enabled=\"false\"/><smtpserver><jmxName>b</jmxName><handlerchain><handler class=\"x\"/></handlerchain>\
             <auth><announce>never</announce></auth><bind>127.0.0.1:2525, [::1]:2526</bind>\
             <disabledFeatures>PIPELINING</disabledFeatures><disabledFeatures>chunking</disabledFeatures>\
             <tls startTLS=\"true\"><privateKey>file://conf/key.pem</privateKey><certificates>/etc/c.pem</certificates></tls>\
             </smtpserver></s>",
        )
        .unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "b");
        assert_eq!(s[0].bind.len(), 2);
        assert_eq!(s[0].disabled_features, vec!["PIPELINING", "CHUNKING"]);
        let tls = s[0].tls.as_ref().unwrap();
        assert!(tls.start_tls && !tls.socket_tls);
        assert_eq!(tls.private_key, PathBuf::from("/srv/conf/key.pem"));
        assert_eq!(tls.certificates, PathBuf::from("/etc/c.pem"));
    }
}
