//! The embedded default `conf/`: with no DAV server, invitations are kept in
//! `var/mail/collected/` as the JSON CalDavCollect would send.

use std::process::Command;
use std::time::Duration;

use crate::support::eventually;
use crate::support::mailetd::Mailetd;
use crate::support::smtp::send_file;

const RCPTS: &[&str] = &["bob@example.org", "carol@example.org"];

#[test]
fn default_conf_keeps_each_invitation_json_in_the_collected_repository() {
    let m = Mailetd::start(&[]);
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/google-request.eml");
    send_file(m.smtp_port, "organizer@gmail.com", RCPTS, fixture);
    // a mail without a calendar is not kept
    let plain = m.dir.path().join("plain.eml");
    std::fs::write(
        &plain,
        "From: a@example.org\r\nSubject: hi\r\n\r\nno invitation\r\n",
    )
    .unwrap();
    send_file(m.smtp_port, "organizer@gmail.com", RCPTS, &plain);
    let collected = m.data_dir().join("mail/collected");
    eventually(
        "the invitation is in the collected repository",
        Duration::from_secs(20),
        || {
            m.log()
                .matches("mail processed")
                .count()
                .eq(&2)
                .then_some(())
        },
    );
    let stored: Vec<_> = std::fs::read_dir(&collected)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(stored.len(), 1, "only the invitation is kept");

    let out = Command::new(env!("CARGO_BIN_EXE_mailetd"))
        .args([
            "--conf",
            m.conf_dir().to_str().unwrap(),
            "repo",
            "show",
            "mail/collected",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let jsons: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with("{\"ical\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut recipients: Vec<&str> = jsons
        .iter()
        .map(|j| j["recipient"].as_str().unwrap())
        .collect();
    recipients.sort();
    assert_eq!(recipients, ["bob@example.org", "carol@example.org"]);
    for j in &jsons {
        assert_eq!(j["method"], "REQUEST");
        assert_eq!(j["uid"], "4q1v0b6m2l8f5k3r9s7t0u2w4y@google.com");
        assert_eq!(j["sender"], "alice.martin@partner.example");
        assert!(
            j["ical"]
                .as_str()
                .unwrap()
                .contains("SUMMARY:Revue trimestrielle – partenariat")
        );
    }
}
