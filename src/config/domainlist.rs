//! `domainlist.xml`: the local domains (`domainnames/domainname`) and `defaultDomain`.
//! `autodetect` and `autodetectIP` are accepted and ignored: mailetd never guesses domains
//! from the host name.

use std::path::Path;

use super::error::ConfigError;
use super::xml::XmlDocument;

/// The local domains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainList {
    /// Every `domainname`, lowercased, plus `defaultDomain`, without duplicates.
    pub domains: Vec<String>,
    /// `defaultDomain` (James default: `localhost`).
    pub default_domain: String,
}

impl Default for DomainList {
    fn default() -> Self {
        DomainList {
            domains: vec!["localhost".into()],
            default_domain: "localhost".into(),
        }
    }
}

impl DomainList {
    /// Reads `path`; a missing file gives the James default (`localhost` only).
    pub fn load(path: &Path) -> Result<DomainList, ConfigError> {
        if !path.exists() {
            return Ok(DomainList::default());
        }
        Self::from_document(&XmlDocument::load(path)?)
    }

    /// Parses XML text.
    pub fn parse(text: &str, path: &Path) -> Result<DomainList, ConfigError> {
        Self::from_document(&XmlDocument::parse(text, path)?)
    }

    fn from_document(doc: &XmlDocument) -> Result<DomainList, ConfigError> {
        let root = &doc.root;
        let mut domains: Vec<String> = Vec::new();
        let names = root
            .child("domainnames")
            .into_iter()
            .flat_map(|d| d.children_named("domainname"));
        for el in names {
            let domain = el.text.trim().to_ascii_lowercase();
            if domain.is_empty() || domain.contains(['@', ' ', '/']) {
                return Err(el.error(format!(
                    "<domainname> is {:?}: expected a domain name such as example.org",
                    el.text
                )));
            }
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        let default_domain = root
            .child_text("defaultDomain")
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        if !domains.contains(&default_domain) {
            domains.push(default_domain.clone());
        }
        Ok(DomainList {
            domains,
            default_domain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_default() {
        let d = DomainList::parse(
            "<domainlist class=\"org.apache.james.domainlist.jpa.JPADomainList\">\n<autodetect>false</autodetect>\n<domainnames><domainname>Example.ORG</domainname><domainname>other.test</domainname></domainnames>\n<defaultDomain>example.org</defaultDomain></domainlist>",
            Path::new("d.xml"),
        )
        .unwrap();
        assert_eq!(d.domains, vec!["example.org", "other.test"]);
        assert_eq!(d.default_domain, "example.org");
        let d = DomainList::parse("<domainlist/>", Path::new("d.xml")).unwrap();
        assert_eq!(d, DomainList::default());
    }
}
