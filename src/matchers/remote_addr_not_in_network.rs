//! `RemoteAddrNotInNetwork`: every recipient when the client address is in none of the listed
//! networks (same syntax as `RemoteAddrInNetwork`; no condition → always matches).
//!
//! ```xml
//! <mailet match="RemoteAddrNotInNetwork=127.0.0.0/8" class="ToProcessor"><processor>relay-denied</processor></mailet>
//! ```

use crate::config::{ConfigError, Networks};
use crate::mail::{Mail, MailAddress};
use crate::pipeline::{MailetContext, Matcher, MatcherConfig, MatcherError};

use super::remote_addr_in_network::condition_networks;

/// Matches all recipients when the client is outside the networks.
pub struct RemoteAddrNotInNetwork {
    networks: Networks,
}

impl RemoteAddrNotInNetwork {
    /// Reads the network list.
    pub fn build(
        config: &MatcherConfig,
        _: &MailetContext,
    ) -> Result<Box<dyn Matcher>, ConfigError> {
        Ok(Box::new(RemoteAddrNotInNetwork {
            networks: condition_networks(config)?,
        }))
    }
}

impl Matcher for RemoteAddrNotInNetwork {
    fn match_mail(&self, mail: &Mail, _: &MailetContext) -> Result<Vec<MailAddress>, MatcherError> {
        Ok(if self.networks.contains(&mail.remote_addr) {
            Vec::new()
        } else {
            mail.recipients.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::matchers::testing::*;

    #[test]
    fn outside_networks() {
        let mut m = mail(None, &["r@y.test"], "");
        m.remote_addr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            run("RemoteAddrNotInNetwork", Some("127.0.0.0/8"), &m),
            ["r@y.test"]
        );
        assert!(run("RemoteAddrNotInNetwork", Some("10.0.0.0/8"), &m).is_empty());
    }
}
