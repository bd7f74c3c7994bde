//! CardDavCollectedContact through a running mailetd (SMTP → spool → container → outbox →
//! CardDAV or esn-sabre), against a real Radicale, a real SabreDAV and the esn double.

use std::sync::Arc;

use mailetd::dav::contact::uid;

use crate::contacts::card_for;
use crate::contacts_esn::esn_card;
use crate::support::davhttp::{Card, DavServer};
use crate::support::esn_double::{DAV_ADMIN, EsnDouble, OPENPAAS_ADMIN};
use crate::support::mailetd::Mailetd;
use crate::support::radicale::{self, Radicale};
use crate::support::sabredav::{self, SabreDav};

fn container_xml(limit: Option<u32>) -> String {
    let limit = limit
        .map(|l| format!("<limit>{l}</limit>"))
        .unwrap_or_default();
    format!(
        r#"<mailetcontainer enableJmx="false">
  <context><postmaster>postmaster@example.org</postmaster></context>
  <spooler><threads>2</threads></spooler>
  <processors>
    <processor state="root" enableJmx="false">
      <mailet match="All" class="com.linagora.tmail.mailet.CardDavCollectedContact">{limit}</mailet>
      <mailet match="All" class="Null"/>
    </processor>
    <processor state="error" enableJmx="false">
      <mailet match="All" class="Null"/>
    </processor>
  </processors>
</mailetcontainer>
"#
    )
}

const DOMAINLIST_XML: &str = "<domainlist><autodetect>false</autodetect><autodetectIP>false</autodetectIP><domainnames><domainname>example.org</domainname></domainnames><defaultDomain>example.org</defaultDomain></domainlist>\n";

fn mailetd_toml(base: &str, template: &str, user: &str, password: &str) -> String {
    format!(
        "[dav]\ndialect = \"caldav\"\nbase_url = \"{base}\"\naddressbook_url = \"{template}\"\nusername = \"{user}\"\npassword = \"{password}\"\ncreate_collections = true\n\n[outbox]\nretry_base_secs = 1\n"
    )
}

/// Sends one message over SMTP: `rcpts` in the envelope, `headers` on top.
fn send(port: u16, from: &str, rcpts: &[String], headers: &str) {
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let message = format!("{headers}From: {from}\r\nSubject: hello\r\n\r\nHi.\r\n");
    crate::support::smtp::send(port, from, &rcpts, message);
}

/// Polls the book until it holds `n` cards; on timeout, fails with mailetd's log.
fn wait_for_cards(mailetd: &Mailetd, n: usize, cards: impl Fn() -> Vec<Card>) -> Vec<Card> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got = cards();
        if got.len() >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} cards after 60 s; mailetd log:\n{}",
            got.len(),
            mailetd.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// mailetd whose chain collects contacts (limit 100) into the books at `template` on `base`,
/// as the service account `user`.
fn collecting_mailetd(base: &str, template: &str, user: &str, password: &str) -> Mailetd {
    Mailetd::start(&[
        ("mailetcontainer.xml", container_xml(Some(100))),
        ("domainlist.xml", DOMAINLIST_XML.to_string()),
        ("mailetd.toml", mailetd_toml(base, template, user, password)),
    ])
}

/// `cards(owner)` reads the owner's collected book back.
fn smtp_case(mailetd: &Mailetd, cards: &dyn Fn(&str) -> Vec<Card>) {
    let port = mailetd.smtp_port;
    let rcpts = vec![
        "zoe@partner.com".to_string(),
        "Bob+lunch@Other.ORG".to_string(),
    ];
    let headers = "To: =?UTF-8?Q?Zo=C3=A9_Martin?= <zoe@partner.com>, Bob+lunch@Other.ORG\r\n";
    send(port, "alice@example.org", &rcpts, headers);
    // the mirrored copy of the same mail
    send(port, "alice@example.org", &rcpts, headers);
    let got = wait_for_cards(mailetd, 2, || cards("alice@example.org"));
    assert_eq!(got.len(), 2, "{got:#?}\n{}", mailetd.log());
    card_for(&got, "zoe@partner.com", "Zoé Martin");
    card_for(&got, "Bob@other.org", "Bob@other.org");

    let many: Vec<String> = (0..1000)
        .map(|i| format!("guest{i:04}@party.org"))
        .collect();
    send(port, "carol@example.org", &many, "");
    let got = wait_for_cards(mailetd, 100, || cards("carol@example.org"));
    assert_eq!(got.len(), 100);
}

#[test]
fn smtp_radicale_collects_contacts() {
    let server = Arc::new(Radicale::start());
    let mailetd = collecting_mailetd(
        &server.url(),
        "{base}/{user}/collected/",
        radicale::SERVICE_USER,
        radicale::SERVICE_PASSWORD,
    );
    let s = server.clone();
    smtp_case(&mailetd, &move |owner| {
        s.cards(&format!("/{owner}/collected/"))
    });
}

#[test]
fn smtp_sabredav_collects_contacts() {
    let server = Arc::new(SabreDav::start());
    for user in ["alice@example.org", "carol@example.org"] {
        server.add_user(user, "pw");
    }
    let mailetd = collecting_mailetd(
        &server.url(),
        "{base}/addressbooks/{user}/collected/",
        sabredav::SERVICE_USER,
        sabredav::SERVICE_PASSWORD,
    );
    let s = server.clone();
    smtp_case(&mailetd, &move |owner| {
        s.cards(&format!("/addressbooks/{owner}/collected/"))
    });
}

#[test]
fn smtp_esn_collects_contacts() {
    let double = EsnDouble::start();
    let alice = double.add_user("alice@example.org");
    let properties = double.properties();
    let mailetd = Mailetd::start(&[
        ("mailetcontainer.xml", container_xml(None)),
        ("domainlist.xml", DOMAINLIST_XML.to_string()),
        ("openpaas.properties", properties),
        (
            "mailetd.toml",
            "[outbox]\nretry_base_secs = 1\n".to_string(),
        ),
    ]);
    let port = mailetd.smtp_port;
    // an external sender first: unknown to OpenPaaS, so nothing reaches the address books
    send(
        port,
        "stranger@elsewhere.net",
        &["alice@example.org".to_string()],
        "",
    );
    send(
        port,
        "alice@example.org",
        &["zoe@partner.com".to_string(), "bob+x@Other.org".to_string()],
        "To: =?UTF-8?Q?Zo=C3=A9_Martin?= <zoe@partner.com>\r\n",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let cards = loop {
        let cards = double.cards();
        if cards.len() >= 2 {
            break cards;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{cards:?}\n{}",
            mailetd.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let zoe = esn_card(&double, &alice, &format!("{}.vcf", uid("zoe@partner.com"))).unwrap();
    assert_eq!(Card::parse(&zoe).value("FN").as_deref(), Some("Zoé Martin"));
    assert!(esn_card(&double, &alice, &format!("{}.vcf", uid("bob@other.org"))).is_some());
    assert_eq!(cards.len(), 2, "{cards:?}");
    // the stranger's mail stopped at the (cached) user lookup, in the mailet
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !mailetd
        .log()
        .contains("owner unknown to OpenPaaS: no contact collected")
    {
        assert!(std::time::Instant::now() < deadline, "{}", mailetd.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!mailetd.log().contains(DAV_ADMIN.1));
    assert!(!mailetd.log().contains(OPENPAAS_ADMIN.1));
}
