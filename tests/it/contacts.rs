//! CardDavCollectedContact against real CardDAV servers (Radicale, SabreDAV 1.8).
//!
//! Two layers:
//! - `direct_*`: the mailet built from its config and serviced on a mail, then its outbox
//!   jobs delivered by the real handler to the real server, as the outbox workers do;
//!   the address book is then read back with REPORT addressbook-query.
//! - `contacts_smtp`: the same through a running mailetd (SMTP → spool → container →
//!   outbox); `contacts_esn`: the esn dialect against the esn double.

use std::collections::HashSet;

use mailetd::config::component::MailetConfig;
use mailetd::config::settings::{DavDialect, DavSettings, Secret};
use mailetd::dav::carddav::CardDavContactHandler;
use mailetd::dav::contact::uid;
use mailetd::dav::known_contacts::KnownContacts;
use mailetd::mail::job::{Delivery, JobHandler};
use mailetd::mail::{Mail, MailAddress};
use mailetd::mailets;
use mailetd::pipeline::{Mailet, MailetContext};
use mailetd::store::Store;

use crate::contacts_esn::esn_handler;
use crate::support::davhttp::{Card, DavServer};
use crate::support::esn_double::{DAV_ADMIN, EsnDouble};
use crate::support::radicale::{self, Radicale};
use crate::support::sabredav::{self, SabreDav};

/// The mailet and the CardDAV handler sharing one store, as in `mailetd serve`.
struct Collector {
    _dir: tempfile::TempDir,
    ctx: MailetContext,
    mailet: Box<dyn Mailet>,
    handler: CardDavContactHandler,
}

impl Collector {
    fn new(dav: DavSettings, params: &[(&str, &str)]) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        Self::in_dir(dir, dav, params)
    }

    /// Opens (or reopens) the store in `dir`: what a restart of mailetd does.
    fn in_dir(dir: tempfile::TempDir, dav: DavSettings, params: &[(&str, &str)]) -> Collector {
        let store = Store::open(&dir.path().join("spool.redb")).unwrap();
        let mut ctx = MailetContext::for_tests(dir.path().to_path_buf());
        ctx.settings.dav = dav.clone();
        ctx.store = Some(store.clone());
        let mailet = mailets::build(
            &MailetConfig::inline("CardDavCollectedContact", params),
            &ctx,
        )
        .unwrap();
        let known = KnownContacts::new(Some(store), dav.known_contacts_max);
        let handler = CardDavContactHandler::new(&dav, known).unwrap();
        Collector {
            _dir: dir,
            ctx,
            mailet,
            handler,
        }
    }

    /// Closes the store (a stopped mailetd) and hands back its directory.
    fn stop(self) -> tempfile::TempDir {
        let Collector {
            _dir,
            ctx,
            mailet,
            handler,
        } = self;
        drop((mailet, handler, ctx));
        _dir
    }

    /// Services `mail` and returns its jobs (not yet delivered).
    async fn service(&self, mut mail: Mail) -> Mail {
        self.mailet.service(&mut mail, &self.ctx).await.unwrap();
        mail
    }

    /// Delivers the jobs of `mail` as an outbox worker does.
    async fn deliver(&self, mail: &Mail) -> Vec<Delivery> {
        let mut out = Vec::new();
        for job in &mail.jobs {
            out.push(self.handler.deliver(job).await);
        }
        out
    }

    /// Services and delivers; returns the outcomes.
    async fn collect(&self, mail: Mail) -> Vec<Delivery> {
        let mail = self.service(mail).await;
        self.deliver(&mail).await
    }
}

fn standard(base: &str, template: &str, user: &str, password: &str) -> DavSettings {
    DavSettings {
        dialect: DavDialect::Caldav,
        base_url: base.to_string(),
        addressbook_url: template.to_string(),
        username: Some(user.to_string()),
        password: Some(Secret::new(password)),
        create_collections: true,
        ..DavSettings::default()
    }
}

/// Standard-dialect settings for Radicale's `/{user}/collected/` books, as its service account.
fn radicale_collected(base: &str) -> DavSettings {
    standard(
        base,
        "{base}/{user}/collected/",
        radicale::SERVICE_USER,
        radicale::SERVICE_PASSWORD,
    )
}

/// Standard-dialect settings for SabreDAV's `/addressbooks/{user}/collected/` books, as its
/// service account.
fn sabredav_collected(base: &str) -> DavSettings {
    standard(
        base,
        "{base}/addressbooks/{user}/collected/",
        sabredav::SERVICE_USER,
        sabredav::SERVICE_PASSWORD,
    )
}

pub(crate) fn mail(from: &str, to: &[&str], headers: &str) -> Mail {
    Mail::new(
        Some(MailAddress::parse(from).unwrap()),
        to.iter().map(|t| MailAddress::parse(t).unwrap()).collect(),
        format!("From: {from}\r\n{headers}Subject: lunch\r\n\r\nSee you.\r\n").into_bytes(),
    )
}

/// The card whose EMAIL is `address`, checked for UID and FN.
pub(crate) fn card_for<'a>(cards: &'a [Card], address: &str, fn_value: &str) -> &'a Card {
    let matching: Vec<&Card> = cards
        .iter()
        .filter(|c| c.value("EMAIL").as_deref() == Some(address))
        .collect();
    assert_eq!(matching.len(), 1, "one card for {address} in {cards:#?}");
    let card = matching[0];
    assert_eq!(
        card.value("UID").as_deref(),
        Some(uid(address).as_str()),
        "{card:#?}"
    );
    assert_eq!(card.value("FN").as_deref(), Some(fn_value), "{card:#?}");
    assert!(
        card.line("EMAIL")
            .unwrap()
            .to_ascii_lowercase()
            .contains("type=work"),
        "{card:#?}"
    );
    card
}

fn all_done(outcomes: &[Delivery]) {
    assert!(
        outcomes.iter().all(|d| *d == Delivery::Done),
        "{outcomes:?}"
    );
}

/// The scenario of the issue, on any server: names, `+tag`, uppercase domain, the owner
/// not collected, the same contact twice, the same mail mirrored twice.
async fn scenario(dav: DavSettings, cards: impl Fn() -> Vec<Card>) {
    let c = Collector::new(dav, &[]);
    let first = mail(
        "alice@example.org",
        &[
            "zoe@partner.com",
            "Bob+lunch@Other.ORG",
            "alice@example.org",
        ],
        "To: =?UTF-8?Q?Zo=C3=A9_Martin?= <zoe@partner.com>, \"Bob\" <Bob+lunch@Other.ORG>\r\n",
    );
    let outcomes = c.collect(first).await;
    assert_eq!(outcomes.len(), 2);
    all_done(&outcomes);
    let got = cards();
    assert_eq!(got.len(), 2, "{got:#?}");
    let zoe = card_for(&got, "zoe@partner.com", "Zoé Martin");
    assert_eq!(zoe.value("N").as_deref(), Some("Martin;Zoé;;;"));
    card_for(&got, "Bob@other.org", "Bob");

    // Same contact again, other case and tag: known, so no job and no request at all.
    let before = c.handler.requests_sent();
    let again = c
        .service(mail("alice@example.org", &["ZOE+x@PARTNER.COM"], ""))
        .await;
    assert!(again.jobs.is_empty(), "{:?}", again.jobs);
    assert_eq!(c.handler.requests_sent(), before);

    // The same mail mirrored twice before any delivery: the second copy queues nothing.
    let fresh = mail("alice@example.org", &["carol@third.net"], "");
    let copy1 = c.service(fresh.clone()).await;
    let copy2 = c.service(fresh).await;
    assert_eq!((copy1.jobs.len(), copy2.jobs.len()), (1, 0));
    all_done(&c.deliver(&copy1).await);
    // A job delivered twice (a crash after the PUT, before the job was removed): the
    // server's 412 to `If-None-Match: *` is success, and no duplicate card appears.
    all_done(&c.deliver(&copy1).await);
    let got = cards();
    assert_eq!(got.len(), 3, "{got:#?}");
    card_for(&got, "carol@third.net", "carol@third.net");
}

#[tokio::test]
async fn direct_radicale_collects_contacts_with_names_once() {
    let server = Radicale::start();
    let dav = radicale_collected(&server.url());
    scenario(dav, || server.cards("/alice@example.org/collected/")).await;
}

#[tokio::test]
async fn direct_sabredav_collects_contacts_with_names_once() {
    let server = SabreDav::start();
    server.add_user("alice@example.org", "alice-pw");
    let dav = sabredav_collected(&server.url());
    scenario(dav, || {
        server.cards("/addressbooks/alice@example.org/collected/")
    })
    .await;
}

async fn thousand_recipients(dav: DavSettings, cards: impl Fn() -> Vec<Card>) {
    let c = Collector::new(dav, &[("limit", "100")]);
    let rcpts: Vec<String> = (0..1000)
        .map(|i| format!("guest{i:04}@party.org"))
        .collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let outcomes = c.collect(mail("alice@example.org", &refs, "")).await;
    assert_eq!(outcomes.len(), 100);
    all_done(&outcomes);
    let got = cards();
    assert_eq!(got.len(), 100);
    let emails: HashSet<String> = got.iter().filter_map(|c| c.value("EMAIL")).collect();
    let expected: HashSet<String> = rcpts[..100].iter().cloned().collect();
    assert_eq!(emails, expected);
    card_for(&got, "guest0042@party.org", "guest0042@party.org");
}

#[tokio::test]
async fn direct_radicale_thousand_recipients_limit_100() {
    let server = Radicale::start();
    let dav = radicale_collected(&server.url());
    thousand_recipients(dav, || server.cards("/alice@example.org/collected/")).await;
}

#[tokio::test]
async fn direct_sabredav_thousand_recipients_limit_100() {
    let server = SabreDav::start();
    server.add_user("alice@example.org", "alice-pw");
    server.create_addressbook("alice@example.org", "collected");
    let mut dav = sabredav_collected(&server.url());
    dav.create_collections = false;
    thousand_recipients(dav, || {
        server.cards("/addressbooks/alice@example.org/collected/")
    })
    .await;
}

#[tokio::test]
async fn direct_missing_book_is_permanent_unless_creation_allowed() {
    let server = Radicale::start();
    let mut dav = radicale_collected(&server.url());
    dav.create_collections = false;
    let c = Collector::new(dav, &[]);
    let outcomes = c
        .collect(mail("alice@example.org", &["bob@x.org"], ""))
        .await;
    match &outcomes[..] {
        [Delivery::Permanent(reason)] => {
            assert!(reason.contains("/alice@example.org/collected/"), "{reason}");
            assert!(reason.contains("create_collections"), "{reason}");
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
    assert!(server.cards("/alice@example.org/collected/").is_empty());
}

/// Outbox workers deliver concurrently: jobs racing into a book that does not exist yet all
/// land (one MKCOL, the others wait for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_concurrent_jobs_for_a_new_book_all_land() {
    let server = Radicale::start();
    let dav = radicale_collected(&server.url());
    let c = Collector::new(dav, &[]);
    let m = c
        .service(mail(
            "alice@example.org",
            &["a@x.org", "b@x.org", "c@x.org"],
            "",
        ))
        .await;
    let h = &c.handler;
    let (a, b, d) = tokio::join!(
        h.deliver(&m.jobs[0]),
        h.deliver(&m.jobs[1]),
        h.deliver(&m.jobs[2])
    );
    all_done(&[a, b, d]);
    assert_eq!(server.cards("/alice@example.org/collected/").len(), 3);
}

#[tokio::test]
async fn direct_wrong_password_is_permanent_and_not_logged() {
    let server = Radicale::start();
    let dav = standard(
        &server.url(),
        "{base}/{user}/collected/",
        radicale::SERVICE_USER,
        "not-the-password",
    );
    let c = Collector::new(dav, &[]);
    let outcomes = c
        .collect(mail("alice@example.org", &["bob@x.org"], ""))
        .await;
    match &outcomes[..] {
        [Delivery::Permanent(reason)] => {
            assert!(reason.contains("401"), "{reason}");
            assert!(!reason.contains("not-the-password"), "{reason}");
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

#[tokio::test]
async fn direct_server_down_is_retried_then_delivered() {
    let server = Radicale::start();
    let url = server.url();
    let port = server.port;
    drop(server);
    let dav = radicale_collected(&url);
    let c = Collector::new(dav, &[]);
    let queued = c
        .service(mail("alice@example.org", &["bob@x.org"], ""))
        .await;
    let outcomes = c.deliver(&queued).await;
    assert!(
        matches!(&outcomes[..], [Delivery::Retry(_)]),
        "{outcomes:?}"
    );
    // The server comes back on the same address: the retried job lands.
    let server = Radicale::start_on(port);
    all_done(&c.deliver(&queued).await);
    card_for(
        &server.cards("/alice@example.org/collected/"),
        "bob@x.org",
        "bob@x.org",
    );
}

#[tokio::test]
async fn direct_external_sender_collects_nothing_in_standard_dialect() {
    let server = Radicale::start();
    let dav = radicale_collected(&server.url());
    let c = Collector::new(dav, &[]);
    let queued = c
        .service(mail("stranger@elsewhere.net", &["alice@example.org"], ""))
        .await;
    assert!(queued.jobs.is_empty());
}

#[tokio::test]
async fn direct_known_contacts_survive_a_restart() {
    let server = Radicale::start();
    let dav = radicale_collected(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let c = Collector::in_dir(dir, dav.clone(), &[]);
    all_done(
        &c.collect(mail("alice@example.org", &["bob@x.org"], ""))
            .await,
    );
    let dir = c.stop();
    // Reopen the same store: a restarted mailetd.
    let c = Collector::in_dir(dir, dav, &[]);
    assert!(path.join("spool.redb").exists());
    let queued = c
        .service(mail("alice@example.org", &["bob@x.org", "dan@x.org"], ""))
        .await;
    let targets: Vec<&str> = queued.jobs.iter().map(|j| j.target.as_str()).collect();
    assert_eq!(targets, vec!["alice@example.org → dan@x.org"]);
}

#[tokio::test]
async fn direct_per_user_credentials_file() {
    let server = Radicale::start();
    server.add_user("alice@example.org", "alice-pw");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dav-users");
    std::fs::write(&file, "# owner:password\nalice@example.org:alice-pw\n").unwrap();
    let dav = DavSettings {
        dialect: DavDialect::Caldav,
        base_url: server.url(),
        addressbook_url: "{base}/{user}/collected/".into(),
        credentials_file: Some(file),
        create_collections: true,
        ..DavSettings::default()
    };
    let c = Collector::new(dav, &[]);
    all_done(
        &c.collect(mail("alice@example.org", &["bob@x.org"], ""))
            .await,
    );
    // bob@example.org is local but has no credentials: nothing is sent for him.
    let before = c.handler.requests_sent();
    all_done(
        &c.collect(mail("bob@example.org", &["carol@x.org"], ""))
            .await,
    );
    assert_eq!(c.handler.requests_sent(), before);
    let got = server.cards("/alice@example.org/collected/");
    card_for(&got, "bob@x.org", "bob@x.org");
}

/// A realistic replay: 10,000 mails from 100 users to a pool of 500 contacts (each user
/// has 50 regular correspondents, half the picks among their 10 closest; 1–3 recipients per
/// mail). Deterministic (xorshift), so the figures are reproducible.
fn replay_traffic() -> Vec<(u64, Vec<u64>)> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let correspondents: Vec<Vec<u64>> = (0..100)
        .map(|_| (0..50).map(|_| next(500)).collect())
        .collect();
    (0..10_000)
        .map(|_| {
            let user = next(100);
            let count = 1 + next(3);
            let rcpts = (0..count)
                .map(|_| {
                    let i = if next(2) == 0 { next(10) } else { next(50) };
                    correspondents[user as usize][i as usize]
                })
                .collect();
            (user, rcpts)
        })
        .collect()
}

/// tmail's requests for the same traffic: a GET per recipient of every mail, plus a PUT per
/// pair not yet in the book. Also returns the number of distinct pairs.
fn tmail_requests(traffic: &[(u64, Vec<u64>)]) -> (u64, usize) {
    let mut existing: HashSet<(u64, u64)> = HashSet::new();
    let mut requests = 0u64;
    for (user, rcpts) in traffic {
        for r in rcpts {
            requests += 1;
            if existing.insert((*user, *r)) {
                requests += 1;
            }
        }
    }
    (requests, existing.len())
}

fn replay_mail(user: u64, rcpts: &[u64]) -> Mail {
    let to: Vec<String> = rcpts
        .iter()
        .map(|r| format!("contact{r}@partner.com"))
        .collect();
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    mail(&format!("user{user}@example.org"), &to, "")
}

/// The replay through the mailet, the cache and the real CardDAV handler against Radicale.
#[tokio::test]
#[ignore = "replay of 10,000 mails (about a minute and a half); run with --ignored --nocapture"]
async fn replay_request_count_vs_tmail_carddav() {
    let server = Radicale::start();
    let dav = radicale_collected(&server.url());
    let c = Collector::new(dav, &[]);
    let traffic = replay_traffic();
    let (tmail, pairs) = tmail_requests(&traffic);
    let mut jobs = 0u64;
    for (user, rcpts) in &traffic {
        let m = c.service(replay_mail(*user, rcpts)).await;
        jobs += m.jobs.len() as u64;
        all_done(&c.deliver(&m).await);
    }
    let ours = c.handler.requests_sent();
    let books: usize = (0..100)
        .map(|u| {
            server
                .cards(&format!("/user{u}@example.org/collected/"))
                .len()
        })
        .sum();
    println!(
        "replay (carddav, Radicale): 10000 mails, {pairs} distinct (owner, contact) pairs; \
         mailetd: {jobs} jobs, {ours} DAV requests; tmail: {tmail} DAV requests ({:.1}x)",
        tmail as f64 / ours as f64
    );
    assert_eq!(books, pairs);
    assert!(ours < tmail / 2, "{ours} vs {tmail}");
    // one PUT per new pair, plus the creation of each of the 100 books (PUT 409, MKCOL 409,
    // MKCOL of the parent, MKCOL)
    assert!(
        ours as f64 <= 1.1 * pairs as f64,
        "{ours} for {pairs} pairs"
    );
}

/// The same replay in the esn dialect (one conditional PUT per new pair) against the esn
/// double, every sender a known user.
#[tokio::test]
#[ignore = "replay of 10,000 mails; run with --ignored --nocapture"]
async fn replay_request_count_vs_tmail_esn() {
    let double = EsnDouble::start();
    for u in 0..100 {
        double.add_user(&format!("user{u}@example.org"));
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("spool.redb")).unwrap();
    let mut ctx = MailetContext::for_tests(dir.path().to_path_buf());
    ctx.store = Some(store.clone());
    let mailet =
        mailets::build(&MailetConfig::inline("CardDavCollectedContact", &[]), &ctx).unwrap();
    let handler = esn_handler(
        &double,
        DAV_ADMIN.1,
        KnownContacts::new(Some(store), 200_000),
    );
    let traffic = replay_traffic();
    let (tmail, pairs) = tmail_requests(&traffic);
    for (user, rcpts) in &traffic {
        let mut m = replay_mail(*user, rcpts);
        mailet.service(&mut m, &ctx).await.unwrap();
        for job in &m.jobs {
            assert_eq!(handler.deliver(job).await, Delivery::Done);
        }
    }
    let ours = handler.requests_sent();
    let stored = double.cards().len();
    println!(
        "replay (esn, double): 10000 mails, {pairs} distinct pairs; mailetd: {ours} DAV \
         requests; tmail: {tmail} DAV requests ({:.1}x)",
        tmail as f64 / ours as f64
    );
    assert_eq!(stored, pairs);
    assert!(ours < tmail / 2, "{ours} vs {tmail}");
    assert!(
        ours as f64 <= 1.1 * pairs as f64,
        "{ours} for {pairs} pairs"
    );
}
