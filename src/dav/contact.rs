//! A collected contact: the address normalisation, UID and vCard shared by
//! `CardDavCollectedContact` (which decides) and the contact handlers (which deliver).

use calcard::vcard::{VCard, VCardEntry, VCardParameter, VCardProperty, VCardType, VCardValue};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::address::MailAddress;
use crate::mail::job::OutboxJob;

/// Job kind of a contact for esn-sabre (impersonated GET then PUT).
pub const ESN_CONTACT: &str = "esn-contact";
/// Job kind of a contact for a standard CardDAV server (PUT with `If-None-Match: *`).
pub const CARDDAV_CONTACT: &str = "carddav-contact";

/// tmail's normalisation: `+detail` stripped from the local part (case kept), domain lowercased.
pub fn normalize(address: &MailAddress) -> MailAddress {
    let local = match address.local.split_once('+') {
        Some((base, _)) if !base.is_empty() => base,
        _ => address.local.as_str(),
    };
    MailAddress {
        local: local.to_string(),
        domain: address.domain.to_ascii_lowercase(),
    }
}

/// The vCard UID and resource name: lowercase hex SHA-1 of the normalised address.
pub fn uid(normalized: &str) -> String {
    crate::mail::hex(&Sha1::digest(normalized.as_bytes()))
}

/// A contact job whose payload is not a [`ContactJob`] (written by another version?).
#[derive(Debug, thiserror::Error)]
#[error("malformed contact job payload: {0}")]
pub struct MalformedJob(#[from] serde_json::Error);

/// What an outbox job carries for one contact (the job payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactJob {
    /// Whose address book: the owner's address.
    pub owner: String,
    /// The normalised contact address.
    pub contact: String,
    /// Its UID, also the resource name `{uid}.vcf`.
    pub uid: String,
    /// The vCard 4.0 to store.
    pub vcard: String,
}

impl ContactJob {
    /// The contact `address` (already normalised) for `owner`, with an optional display name.
    pub fn new(owner: &str, address: &str, name: Option<&str>) -> Self {
        let uid = uid(address);
        let vcard = vcard(&uid, address, name);
        ContactJob {
            owner: owner.to_string(),
            contact: address.to_string(),
            uid,
            vcard,
        }
    }

    /// The outbox job of `kind` delivering this contact.
    pub fn into_job(self, kind: &str) -> OutboxJob {
        let target = format!("{} → {}", self.owner, self.contact);
        OutboxJob::new(
            kind,
            target,
            serde_json::to_value(self).expect("contact jobs serialise"),
        )
    }

    /// Reads the payload of a contact job.
    pub fn from_job(job: &OutboxJob) -> Result<Self, MalformedJob> {
        Ok(Self::deserialize(&job.payload)?)
    }
}

/// The vCard 4.0: UID, FN (the name, else the address, since FN is mandatory), N when a name
/// is known, and `EMAIL;TYPE=work`.
pub fn vcard(uid: &str, address: &str, name: Option<&str>) -> String {
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let text = |s: &str| VCardValue::Text(s.to_string());
    let mut card = VCard::default();
    card.entries
        .push(VCardEntry::new(VCardProperty::Version).with_value(text("4.0")));
    card.entries
        .push(VCardEntry::new(VCardProperty::Uid).with_value(text(uid)));
    card.entries
        .push(VCardEntry::new(VCardProperty::Fn).with_value(text(name.unwrap_or(address))));
    if let Some(name) = name {
        let (family, given) = split_name(name);
        card.entries
            .push(VCardEntry::new(VCardProperty::N).with_values(vec![
                text(family),
                text(given),
                text(""),
                text(""),
                text(""),
            ]));
    }
    card.entries.push(
        VCardEntry::new(VCardProperty::Email)
            .with_value(text(address))
            .with_param(VCardParameter::typ(VCardType::Work)),
    );
    card.to_string()
}

/// (family, given) from a display name: "Martin, Zoé" or "Zoé Martin" → ("Martin", "Zoé");
/// a single word is a given name.
fn split_name(name: &str) -> (&str, &str) {
    if let Some((family, given)) = name.split_once(',') {
        return (family.trim(), given.trim());
    }
    match name.rsplit_once(char::is_whitespace) {
        Some((given, family)) => (family.trim(), given.trim()),
        None => ("", name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_strips_detail_and_lowercases_domain_only() {
        let a = MailAddress::parse("Bob+news@Example.ORG").unwrap();
        assert_eq!(normalize(&a).to_string(), "Bob@example.org");
        let plain = MailAddress::parse("+only@x.org").unwrap();
        assert_eq!(normalize(&plain).to_string(), "+only@x.org");
    }

    #[test]
    fn uid_is_sha1_of_normalised_address() {
        // sha1("bob@domain.tld"), the spec's example
        assert_eq!(
            uid("bob@domain.tld"),
            "998934eb341320e2b0d2dead04bf1afd5c0f8b17"
        );
    }

    #[test]
    fn vcard_has_fn_n_and_work_email() {
        let card = vcard("u1", "zoe@example.org", Some("Zoé Martin"));
        assert!(card.starts_with("BEGIN:VCARD\r\nVERSION:4.0\r\n"), "{card}");
        assert!(card.contains("UID:u1\r\n"), "{card}");
        assert!(card.contains("FN:Zoé Martin\r\n"), "{card}");
        assert!(card.contains("N:Martin;Zoé;;;\r\n"), "{card}");
        assert!(
            card.contains("EMAIL;TYPE=WORK:zoe@example.org\r\n")
                || card.contains("EMAIL;TYPE=work:zoe@example.org\r\n"),
            "{card}"
        );
        let bare = vcard("u2", "bob@example.org", None);
        assert!(bare.contains("FN:bob@example.org\r\n"), "{bare}");
        assert!(!bare.contains("\r\nN:"), "{bare}");
    }
}
