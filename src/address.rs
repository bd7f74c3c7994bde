//! Envelope addresses: the one type every layer names people with (the bottom of the
//! foundation: iCalendar, JSON and the mail itself build on it).

use std::fmt;

use serde::{Deserialize, Serialize};

/// An envelope address (`local@domain`). The domain is kept lowercased, the local part as given.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MailAddress {
    /// Local part, case preserved (RFC 5321 says it may be case-sensitive).
    pub local: String,
    /// Domain, lowercased; empty for a bare `postmaster`.
    pub domain: String,
}

impl MailAddress {
    /// Parses `local@domain` (angle brackets tolerated). The split is at the last `@`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_start_matches('<').trim_end_matches('>');
        if text.is_empty() {
            return Err("empty address".into());
        }
        if text.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!("invalid address {text:?}"));
        }
        match text.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(MailAddress {
                local: local.to_string(),
                domain: domain.to_ascii_lowercase(),
            }),
            Some(_) => Err(format!("invalid address {text:?}")),
            None => Ok(MailAddress {
                local: text.to_string(),
                domain: String::new(),
            }),
        }
    }

    /// James `MailAddress.equals`: local part compared case-insensitively, domain lowercased.
    pub fn same_as(&self, other: &MailAddress) -> bool {
        self.domain == other.domain && self.local.eq_ignore_ascii_case(&other.local)
    }

    /// The address with its local part lowercased (James `Username` normalisation).
    pub fn lowercased(&self) -> MailAddress {
        MailAddress {
            local: self.local.to_lowercase(),
            domain: self.domain.clone(),
        }
    }
}

impl fmt::Display for MailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.domain.is_empty() {
            f.write_str(&self.local)
        } else {
            write!(f, "{}@{}", self.local, self.domain)
        }
    }
}

/// Whether `address` is in a list of lowercase addresses and domains (a mailet's
/// `organizers`, `recipients`…): listed itself, or by its domain.
pub fn in_address_list(list: &[String], address: &str) -> bool {
    let address = address.to_ascii_lowercase();
    let domain = address.rsplit_once('@').map(|(_, d)| d);
    list.iter()
        .any(|item| *item == address || Some(item.as_str()) == domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_parsing_lowercases_domain_only() {
        let a = MailAddress::parse("<Bob.Smith@Example.ORG>").unwrap();
        assert_eq!(a.to_string(), "Bob.Smith@example.org");
        assert!(a.same_as(&MailAddress::parse("bob.smith@example.org").unwrap()));
        assert!(MailAddress::parse("a b@c").is_err());
        assert_eq!(MailAddress::parse("postmaster").unwrap().domain, "");
    }
}
