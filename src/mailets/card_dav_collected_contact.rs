//! `CardDavCollectedContact`: puts every address a local user writes to into that user's
//! "collected" address book, so that autocompletion knows it (tmail's mailet of that name).
//!
//! ```xml
//! <mailet match="All" class="com.linagora.tmail.mailet.CardDavCollectedContact">
//!     <!-- optional: at most this many recipients collected per mail (tmail's
//!          tmail.carddav.collect.limit) -->
//!     <limit>100</limit>
//! </mailet>
//! ```
//!
//! The owner is the SMTP AUTH user, else the envelope MAIL FROM (a null sender collects
//! nothing). Every envelope recipient but the owner is collected, `+detail` stripped and
//! domain lowercased; the display name the To/Cc headers give that address becomes FN and N.
//! The mailet only decides: each contact becomes an outbox job (`esn-contact` or
//! `carddav-contact`, after `[dav] dialect` of `mailetd.toml`) delivered with retries.
//! Pairs already known to exist (a bounded cache kept in the spool's store) cost nothing, and
//! a pair queued in the last ten minutes (the mirrored copy of the same mail) is not queued
//! twice.
//!
//! Where the contacts go is `mailetd.toml`, not the XML. Twake (the default) uses
//! `openpaas.properties`; any standard CardDAV server is configured like this:
//!
//! ```toml
//! [dav]
//! dialect = "caldav"
//! base_url = "http://127.0.0.1:5232"
//! addressbook_url = "{base}/{user}/collected/"   # SabreDAV: "{base}/addressbooks/{user}/collected/"
//! username = "svc"                               # a service account allowed to write every book,
//! password = "…"                                # or MAILETD_DAV__PASSWORD in the environment;
//!                                                # or credentials_file = "conf/dav-users" (user:password lines)
//! create_collections = true                      # extended MKCOL of a missing book, once
//! ```
//!
//! In that dialect only owners in a local domain (`domainlist.xml`) collect contacts.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use mail_parser::MessageParser;

use crate::config::ConfigError;
use crate::config::settings::DavDialect;
use crate::dav::carddav::CardDavContactHandler;
use crate::dav::contact::{CARDDAV_CONTACT, ContactJob, ESN_CONTACT, normalize};
use crate::dav::esn_contact::OwnerIds;
use crate::dav::known_contacts::{KnownContacts, RecentlyQueued};
use crate::mail::{Mail, MailAddress, attributes};
use crate::pipeline::{Mailet, MailetConfig, MailetContext, MailetError};

/// Turns the recipients of a mail into contact jobs for its owner.
pub struct CardDavCollectedContact {
    limit: Option<usize>,
    kind: &'static str,
    /// The standard dialect has no user directory: only owners in a local domain have a book.
    local_owners_only: bool,
    /// The esn dialect's user directory: an owner it does not know queues nothing, so
    /// incoming mail from external senders costs a cached lookup, not durable jobs.
    owners: Option<Arc<dyn OwnerIds>>,
    known: KnownContacts,
    queued: RecentlyQueued,
}

/// How long a queued pair is not queued again (the time its job normally takes to land).
const QUEUED_TTL: std::time::Duration = std::time::Duration::from_secs(600);

impl CardDavCollectedContact {
    /// Reads `limit` (a positive integer, optional) and the dialect of `[dav]`.
    pub fn build(
        config: &MailetConfig,
        ctx: &MailetContext,
    ) -> Result<Box<dyn Mailet>, ConfigError> {
        let limit = match config.parameter("limit") {
            None => None,
            Some(p) => match p.value.trim().parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(p.position.error(format!(
                        "parameter <limit> of CardDavCollectedContact is {:?}: expected a positive integer",
                        p.value
                    )));
                }
            },
        };
        let dav = &ctx.settings.dav;
        let (kind, local_owners_only, owners) = match dav.dialect {
            DavDialect::Esn => (ESN_CONTACT, false, esn_owner_ids(ctx)),
            DavDialect::Caldav => {
                // `mailetd check` reports a bad [dav] here, not at the first delivery.
                CardDavContactHandler::new(dav, KnownContacts::new(None, 1))?;
                (CARDDAV_CONTACT, true, None)
            }
        };
        Ok(Box::new(CardDavCollectedContact {
            limit,
            kind,
            local_owners_only,
            owners,
            known: KnownContacts::new(ctx.store.clone(), dav.known_contacts_max),
            queued: RecentlyQueued::new(QUEUED_TTL, dav.known_contacts_max),
        }))
    }

    /// The SMTP AUTH user, else MAIL FROM; James usernames are lowercase.
    fn owner(mail: &Mail, ctx: &MailetContext) -> Option<MailAddress> {
        let auth = mail
            .attribute(attributes::SMTP_AUTH_USER)
            .map(|v| v.to_text())
            .filter(|t| !t.trim().is_empty())
            .and_then(|t| MailAddress::parse(&t).ok())
            .map(|mut a| {
                if a.domain.is_empty() {
                    a.domain = ctx.default_domain.clone();
                }
                a
            });
        auth.or_else(|| mail.sender.clone())
            .map(|a| normalize(&a).lowercased())
    }
}

/// The shared OpenPaaS user lookup, when the process has one (a bad openpaas.properties is
/// reported by the handlers; without a lookup, the handler alone decides, which loses
/// nothing but queues jobs for unknown owners).
fn esn_owner_ids(ctx: &MailetContext) -> Option<Arc<dyn OwnerIds>> {
    crate::dav::DavServices::shared(&ctx.properties, &ctx.dav)
        .ok()
        .flatten()
        .map(|s| s as Arc<dyn OwnerIds>)
}

/// Display names of the To and Cc headers, by lowercased normalised address. Headers that
/// do not parse give no names; the addresses are still collected from the envelope.
fn header_names(message: &[u8]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    let Some(parsed) = MessageParser::new()
        .with_address_headers()
        .parse_headers(message)
    else {
        return names;
    };
    for header in [parsed.to(), parsed.cc()].into_iter().flatten() {
        for addr in header.iter() {
            let (Some(name), Some(address)) = (addr.name.as_deref(), addr.address.as_deref())
            else {
                continue;
            };
            let name = name.trim().trim_matches('"').trim();
            let Ok(parsed) = MailAddress::parse(address) else {
                continue;
            };
            let key = normalize(&parsed).lowercased().to_string();
            if !name.is_empty() && !name.eq_ignore_ascii_case(address) {
                names.entry(key).or_insert_with(|| name.to_string());
            }
        }
    }
    names
}

#[async_trait]
impl Mailet for CardDavCollectedContact {
    async fn service(&self, mail: &mut Mail, ctx: &MailetContext) -> Result<(), MailetError> {
        let Some(owner) = Self::owner(mail, ctx) else {
            return Ok(());
        };
        // A dry run (`replay --dry-run`) makes no network call: the owner is not looked up.
        if let Some(owners) = self.owners.as_ref().filter(|_| !ctx.dry_run) {
            match owners.user_id(&owner.to_string()).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::debug!(mail = %mail.name, %owner, "owner unknown to OpenPaaS: no contact collected");
                    return Ok(());
                }
                // The handler looks the owner up again when it delivers: nothing is lost.
                Err(e) => {
                    tracing::debug!(%owner, error = %e, "owner lookup failed; queuing anyway")
                }
            }
        }
        if self.local_owners_only && !ctx.is_local_domain(&owner.domain) {
            tracing::debug!(mail = %mail.name, %owner, "owner is not local: no contact collected");
            return Ok(());
        }
        let mut seen = std::collections::HashSet::new();
        let mut contacts: Vec<MailAddress> = Vec::new();
        for recipient in &mail.recipients {
            let contact = normalize(recipient);
            if contact.same_as(&owner) || !seen.insert(contact.lowercased()) {
                continue;
            }
            contacts.push(contact);
            if self.limit.is_some_and(|l| contacts.len() >= l) {
                break;
            }
        }
        if contacts.is_empty() {
            return Ok(());
        }
        let owner_text = owner.to_string();
        let texts: Vec<String> = contacts.iter().map(ToString::to_string).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let known = self.known.known(self.kind, &owner_text, &refs);
        let names = header_names(mail.header_block());
        let before = mail.jobs.len();
        for ((contact, text), known) in contacts.iter().zip(&texts).zip(known) {
            if known || !self.queued.mark(self.kind, &owner_text, text) {
                continue;
            }
            let name = names.get(&contact.lowercased().to_string());
            let job = ContactJob::new(&owner_text, text, name.map(String::as_str));
            let mut job = job.into_job(self.kind);
            job.mail_name = mail.name.clone();
            mail.jobs.push(job);
        }
        tracing::debug!(
            mail = %mail.name,
            owner = %owner_text,
            recipients = contacts.len(),
            new = mail.jobs.len() - before,
            "contacts collected"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dav::contact::uid;

    fn ctx() -> MailetContext {
        MailetContext::for_tests(std::env::temp_dir())
    }

    fn mail(from: Option<&str>, to: &[&str], headers: &str) -> Mail {
        Mail::new(
            from.map(|f| MailAddress::parse(f).unwrap()),
            to.iter().map(|t| MailAddress::parse(t).unwrap()).collect(),
            format!("{headers}Subject: hi\r\n\r\nbody\r\n").into_bytes(),
        )
    }

    async fn jobs(params: &[(&str, &str)], mut m: Mail) -> Vec<ContactJob> {
        let ctx = ctx();
        let mailet = CardDavCollectedContact::build(
            &MailetConfig::inline("CardDavCollectedContact", params),
            &ctx,
        )
        .unwrap();
        mailet.service(&mut m, &ctx).await.unwrap();
        m.jobs
            .iter()
            .map(|j| {
                assert_eq!(j.kind, ESN_CONTACT);
                ContactJob::from_job(j).unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn collects_normalised_recipients_but_not_the_owner() {
        let got = jobs(
            &[],
            mail(
                Some("Alice@Example.org"),
                &[
                    "bob+news@Other.ORG",
                    "alice@example.org",
                    "BOB@other.org",
                    "carol@x.org",
                ],
                "To: =?UTF-8?Q?Zo=C3=A9_Martin?= <carol@x.org>, bob@other.org\r\n",
            ),
        )
        .await;
        let contacts: Vec<&str> = got.iter().map(|j| j.contact.as_str()).collect();
        assert_eq!(contacts, vec!["bob@other.org", "carol@x.org"]);
        assert!(got.iter().all(|j| j.owner == "alice@example.org"));
        assert_eq!(got[0].uid, uid("bob@other.org"));
        assert!(got[0].vcard.contains("FN:bob@other.org\r\n"));
        assert!(
            got[1].vcard.contains("FN:Zoé Martin\r\n"),
            "{}",
            got[1].vcard
        );
    }

    #[tokio::test]
    async fn auth_user_wins_over_mail_from_and_null_sender_collects_nothing() {
        let mut m = mail(Some("alias@example.org"), &["bob@x.org"], "");
        m.set_attribute(
            attributes::SMTP_AUTH_USER,
            crate::mail::AttributeValue::String("alice@example.org".into()),
        );
        let got = jobs(&[], m).await;
        assert_eq!(got[0].owner, "alice@example.org");
        assert!(jobs(&[], mail(None, &["bob@x.org"], "")).await.is_empty());
    }

    /// Stands for the OpenPaaS user API: knows alice only.
    struct OnlyAlice;

    #[async_trait]
    impl OwnerIds for OnlyAlice {
        async fn user_id(&self, email: &str) -> Result<Option<String>, crate::dav::LookupError> {
            Ok((email == "alice@example.org").then(|| "id-alice".to_string()))
        }
    }

    #[tokio::test]
    async fn unknown_owner_queues_nothing_when_a_directory_is_there() {
        let ctx = ctx();
        let mailet = CardDavCollectedContact {
            limit: None,
            kind: ESN_CONTACT,
            local_owners_only: false,
            owners: Some(Arc::new(OnlyAlice)),
            known: KnownContacts::new(None, 10),
            queued: RecentlyQueued::new(QUEUED_TTL, 10),
        };
        let mut external = mail(Some("stranger@elsewhere.net"), &["alice@example.org"], "");
        mailet.service(&mut external, &ctx).await.unwrap();
        assert!(external.jobs.is_empty());
        let mut local = mail(Some("alice@example.org"), &["stranger@elsewhere.net"], "");
        mailet.service(&mut local, &ctx).await.unwrap();
        assert_eq!(local.jobs.len(), 1);
    }

    #[tokio::test]
    async fn limit_caps_contacts_per_mail() {
        let rcpts: Vec<String> = (0..1000).map(|i| format!("r{i}@x.org")).collect();
        let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let got = jobs(&[("limit", "100")], mail(Some("a@example.org"), &refs, "")).await;
        assert_eq!(got.len(), 100);
        assert_eq!(got[99].contact, "r99@x.org");
    }

    #[test]
    fn standard_dialect_without_base_url_is_a_config_error() {
        let mut ctx = ctx();
        ctx.settings.dav.dialect = DavDialect::Caldav;
        let err = CardDavCollectedContact::build(
            &MailetConfig::inline("CardDavCollectedContact", &[]),
            &ctx,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("base_url"), "{err}");
    }

    #[test]
    fn bad_limit_is_a_config_error() {
        for bad in ["0", "-1", "many"] {
            let err = CardDavCollectedContact::build(
                &MailetConfig::inline("CardDavCollectedContact", &[("limit", bad)]),
                &ctx(),
            )
            .err()
            .unwrap();
            assert!(err.to_string().contains("<limit>"), "{err}");
        }
    }
}
