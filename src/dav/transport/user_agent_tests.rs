//! Every dialect's requests reach the server with mailetd's User-Agent: each handler is
//! built from its own settings, as the server builds it, and sends to a [`Recorder`].

use std::path::Path;
use std::sync::{Arc, OnceLock};

use super::recorder::{Recorded, Recorder};
use crate::config::Properties;
use crate::config::consolidate::DestinationSettings;
use crate::config::settings::{DavDialect, DavSettings, Secret};
use crate::consolidate::handler::Destination;
use crate::dav::caldav::apply::Options;
use crate::dav::caldav::handler::{CalDavItipHandler, ItipJob};
use crate::dav::contact::{CARDDAV_CONTACT, ContactJob, ESN_CONTACT};
use crate::dav::known_contacts::KnownContacts;
use crate::dav::{DavServices, carddav, contact_handlers, esn_itip, outbox_handlers};
use crate::mail::job::Delivery;

const INVITE: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nMETHOD:REQUEST\r\n\
BEGIN:VEVENT\r\nUID:ua-1\r\nSEQUENCE:0\r\nDTSTAMP:20260101T100000Z\r\nDTSTART:20260102T100000Z\r\n\
ORGANIZER:mailto:alice@example.org\r\nATTENDEE:mailto:bob@example.org\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

fn dav_settings(base: &str) -> DavSettings {
    DavSettings {
        dialect: DavDialect::Caldav,
        base_url: base.into(),
        username: Some("svc".into()),
        password: Some(Secret::new("pw")),
        ..DavSettings::default()
    }
}

#[tokio::test]
async fn openpaas_and_esn_sabre_requests_carry_the_user_agent() {
    // the OpenPaaS user API knows bob; esn-sabre takes the ITIP and the contact
    let server = Recorder::start(Box::new(|r: &Recorded| match r.method.as_str() {
        "GET" => (
            200,
            r#"[{"_id":"u1","preferredEmail":"bob@example.org"}]"#.into(),
        ),
        "ITIP" => (204, String::new()),
        _ => (201, String::new()),
    }))
    .await;
    let properties = Properties::parse(
        &format!(
            "openpaas.api.uri={0}/api\nopenpaas.admin.user=a\nopenpaas.admin.password=p\n\
             dav.api.uri={0}\ndav.admin.user=a\ndav.admin.password=p\n",
            server.base
        ),
        Path::new("openpaas.properties"),
    )
    .unwrap();
    let cell = OnceLock::<Arc<DavServices>>::new();
    let itip = outbox_handlers(&properties, &cell).unwrap();
    let job = crate::mail::job::OutboxJob::new(
        esn_itip::KIND,
        "bob@example.org",
        esn_itip::payload(
            "bob@example.org",
            &serde_json::json!({ "ical": INVITE }).to_string(),
        ),
    );
    assert_eq!(itip[0].deliver(&job).await, Delivery::Done);
    let esn = DavSettings::default();
    let contacts = contact_handlers(&esn, &properties, &cell, None).unwrap();
    let contact = ContactJob::new("bob@example.org", "carol@x.org", None).into_job(ESN_CONTACT);
    assert_eq!(contacts[0].deliver(&contact).await, Delivery::Done);
    let methods: Vec<String> = server.requests().into_iter().map(|r| r.method).collect();
    // no Cache-Control on the user API's answer: each job looks the owner up
    assert_eq!(methods, ["GET", "ITIP", "GET", "PUT"]);
    server.assert_user_agent();
}

#[tokio::test]
async fn caldav_and_carddav_requests_carry_the_user_agent() {
    let server = Recorder::start(Box::new(|_: &Recorded| (201, String::new()))).await;
    let settings = dav_settings(&server.base);
    let calendar = CalDavItipHandler::new(&settings).unwrap();
    let job = ItipJob {
        recipient: "bob@example.org".into(),
        ical: INVITE.into(),
        options: Options::default(),
        calendar_id: None,
    }
    .into_job();
    use crate::mail::job::JobHandler;
    assert_eq!(calendar.deliver(&job).await, Delivery::Done);
    let book =
        carddav::CardDavContactHandler::new(&settings, KnownContacts::new(None, 10)).unwrap();
    let contact = ContactJob::new("bob@example.org", "carol@x.org", None).into_job(CARDDAV_CONTACT);
    assert_eq!(book.deliver(&contact).await, Delivery::Done);
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(
        paths[0].ends_with(".ics") && paths[1].ends_with(".vcf"),
        "{paths:?}"
    );
    server.assert_user_agent();
}

#[tokio::test]
async fn graph_requests_carry_the_user_agent() {
    // Microsoft's token endpoint and Graph: a token, no event yet, the event created
    let server = Recorder::start(Box::new(|r: &Recorded| match r.method.as_str() {
        "POST" if r.path.contains("/token") => {
            (200, r#"{"access_token":"t","expires_in":3600}"#.into())
        }
        "GET" => (200, r#"{"value":[]}"#.into()),
        _ => (201, r#"{"id":"e1"}"#.into()),
    }))
    .await;
    let settings = DestinationSettings {
        tenant: "t".into(),
        client_id: "c".into(),
        client_secret: Some(Secret::new("s")),
        user: "room@example.org".into(),
        login_url: server.base.clone(),
        graph_url: server.base.clone(),
        ..DestinationSettings::default()
    };
    let graph = crate::consolidate::graph::GraphDestination::new("m365", &settings).unwrap();
    let message = crate::ical::parse(INVITE).unwrap();
    let applied = graph
        .apply(&message, INVITE, "ua-1", &Options::default())
        .await
        .unwrap();
    assert_eq!(applied, crate::consolidate::handler::Applied::Added);
    assert!(server.requests().len() >= 3, "{:?}", server.requests());
    server.assert_user_agent();
}
