//! CardDavCollectedContact in the esn dialect, against `support::esn_double` (esn-sabre and
//! the OpenPaaS user API cannot run here; the double follows spec/twake-collector.md): one
//! conditional PUT per contact, impersonating the owner.

use std::sync::Arc;

use mailetd::config::Properties;
use mailetd::config::component::MailetConfig;
use mailetd::config::settings::DavDialect;
use mailetd::dav::contact::uid;
use mailetd::dav::esn_contact::EsnContactHandler;
use mailetd::dav::known_contacts::KnownContacts;
use mailetd::dav::{DavServices, OpenPaasConfig};
use mailetd::mail::job::{Delivery, JobHandler};
use mailetd::mailets;
use mailetd::pipeline::MailetContext;
use mailetd::store::Store;

use crate::contacts::mail;
use crate::support::davhttp::Card;
use crate::support::esn_double::{DAV_ADMIN, EsnDouble, OPENPAAS_ADMIN};

/// The card `file` (`{uid}.vcf`) in the collected book of user `id`, as text.
pub(crate) fn esn_card(double: &EsnDouble, id: &str, file: &str) -> Option<String> {
    let cards = double.cards();
    let card = cards.get(&format!("{id}/{file}"))?;
    Some(String::from_utf8(card.clone()).unwrap())
}

#[tokio::test]
async fn direct_esn_one_conditional_put_per_contact_impersonating_the_owner() {
    let double = EsnDouble::start();
    let alice = double.add_user("alice@example.org");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("spool.redb")).unwrap();
    let mut ctx = MailetContext::for_tests(dir.path().to_path_buf());
    ctx.store = Some(store.clone());
    assert_eq!(ctx.settings.dav.dialect, DavDialect::Esn);
    let mailet =
        mailets::build(&MailetConfig::inline("CardDavCollectedContact", &[]), &ctx).unwrap();
    let handler = esn_handler(&double, DAV_ADMIN.1, KnownContacts::new(Some(store), 1000));

    let mut m = mail(
        "alice@example.org",
        &["zoe@partner.com", "bob+x@Other.org"],
        "To: =?ISO-8859-1?Q?Zo=E9_Martin?= <zoe@partner.com>, bob+x@Other.org\r\n",
    );
    mailet.service(&mut m, &ctx).await.unwrap();
    assert!(m.jobs.iter().all(|j| j.kind == "esn-contact"));
    for job in &m.jobs {
        assert_eq!(handler.deliver(job).await, Delivery::Done);
    }
    let zoe_file = format!("{}.vcf", uid("zoe@partner.com"));
    let zoe = Card::parse(&esn_card(&double, &alice, &zoe_file).unwrap());
    assert_eq!(zoe.value("FN").as_deref(), Some("Zoé Martin"));
    assert_eq!(zoe.value("VERSION").as_deref(), Some("4.0"));
    assert!(esn_card(&double, &alice, &format!("{}.vcf", uid("bob@other.org"))).is_some());
    // the requests to the address books (the user lookups are OpenPaaS's)
    let log: Vec<_> = double
        .requests()
        .into_iter()
        .filter(|r| r.uri.starts_with("/addressbooks/"))
        .collect();
    let calls: Vec<(String, String)> = log
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.header("accept").unwrap_or("").to_string(),
            )
        })
        .collect();
    // per new contact: one PUT, create-only, with Accept: application/vcard+json
    assert_eq!(
        calls.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
        vec!["PUT", "PUT"]
    );
    assert!(
        calls
            .iter()
            .all(|(_, accept)| accept == "application/vcard+json")
    );
    assert_eq!(log[1].header("content-type"), Some("application/vcard"));
    assert_eq!(log[1].header("if-none-match"), Some("*"));

    // An external sender is unknown to OpenPaaS: Done, and no DAV request at all.
    let mut m = mail("stranger@elsewhere.net", &["alice@example.org"], "");
    mailet.service(&mut m, &ctx).await.unwrap();
    let before = handler.requests_sent();
    for job in &m.jobs {
        assert_eq!(handler.deliver(job).await, Delivery::Done);
    }
    assert_eq!(handler.requests_sent(), before);

    // A contact that exists already, edited by its owner, and the cache lost: one PUT,
    // refused (412), Done, and the owner's card is left as it is.
    let zoe_url = format!(
        "{}/addressbooks/{alice}/collected/{zoe_file}",
        double.dav_uri()
    );
    let edited = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Zoé (dentist)\r\nEND:VCARD\r\n";
    let r = crate::support::davhttp::request(
        "PUT",
        &zoe_url,
        Some((&format!("{}&alice@example.org", DAV_ADMIN.0), DAV_ADMIN.1)),
        &[("Content-Type", "application/vcard")],
        Some(edited),
    );
    assert_eq!(r.status, 204, "{r:?}");
    let fresh = esn_handler(&double, DAV_ADMIN.1, KnownContacts::new(None, 10));
    let mut m = mail("alice@example.org", &["zoe@partner.com"], "");
    mailet.service(&mut m, &ctx).await.unwrap();
    assert!(m.jobs.is_empty(), "known to the persistent cache");
    let job = mailetd::dav::contact::ContactJob::new("alice@example.org", "zoe@partner.com", None)
        .into_job("esn-contact");
    assert_eq!(fresh.deliver(&job).await, Delivery::Done);
    assert_eq!(fresh.requests_sent(), 1);
    assert_eq!(esn_card(&double, &alice, &zoe_file).unwrap(), edited);

    // A wrong admin password is a permanent failure naming the status, not the password.
    let wrong = esn_handler(&double, "bad-pw", KnownContacts::new(None, 10));
    match wrong.deliver(&job).await {
        Delivery::Permanent(reason) => {
            assert!(reason.contains("401"), "{reason}");
            assert!(!reason.contains("bad-pw"), "{reason}");
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

/// An esn contact handler against the esn double, built the way `serve` builds it: from
/// openpaas.properties, with the shared (cached) OpenPaaS user lookup.
pub(crate) fn esn_handler(
    double: &EsnDouble,
    dav_password: &str,
    known: KnownContacts,
) -> EsnContactHandler {
    let text = format!(
        "openpaas.api.uri={}\nopenpaas.admin.user={}\nopenpaas.admin.password={}\n\
         dav.api.uri={}\ndav.admin.user={}\ndav.admin.password={dav_password}\n",
        double.api_uri(),
        OPENPAAS_ADMIN.0,
        OPENPAAS_ADMIN.1,
        double.dav_uri(),
        DAV_ADMIN.0,
    );
    let properties = Properties::parse(&text, std::path::Path::new("openpaas.properties")).unwrap();
    let config = OpenPaasConfig::from_properties(&properties)
        .unwrap()
        .unwrap();
    let services = Arc::new(DavServices::build(config).unwrap());
    let (client, dav) = services.dav().unwrap();
    EsnContactHandler::new(client.clone(), dav.clone(), services.clone(), known)
}
