//! Issue 18, memory amplification: a large invitation to a thousand recipients, or a
//! calendar of 100,000 events, goes through the real binary over real SMTP under a memory
//! cap (`prlimit --data` on the child) and reaches every recipient; neither memory nor the
//! files mailetd writes grow with the recipient count (the calendar is held once).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mailetd::mail::AttributeValue;
use mailetd::repository::Repository;

use crate::esn::example_conf;
use crate::support::esn_double::EsnDouble;
use crate::support::mailetd::{Mailetd, smtpserver_xml};
use crate::support::{eventually, free_port, wait_for_port, write_files};

const WAIT: Duration = Duration::from_secs(120);
const MIB: u64 = 1024 * 1024;

/// Writes `benches/big_invites.py`'s invitation (ICS of about `ics_kb` KiB in `events`
/// VEVENTs, base64) to `dir/big.eml`; returns the path and the first UID.
fn big_invitation(dir: &Path, ics_kb: u32, events: u32) -> (PathBuf, String) {
    let out = dir.join("big.eml");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/big_invites.py");
    let uid = Command::new("python3")
        .arg(&script)
        .args(["--ics-kb", &ics_kb.to_string()])
        .args(["--events", &events.to_string()])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("python3 runs");
    assert!(uid.status.success(), "{uid:?}");
    (
        out,
        String::from_utf8(uid.stdout).unwrap().trim().to_string(),
    )
}

/// `mailetd serve` with at most `data_limit` bytes of data segment (heap and anonymous
/// mappings: what an allocation spike needs), as `ulimit -d` would set it.
fn serve_capped(conf: &Path, env: &[(&str, String)], log: &Path, data_limit: u64) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new("prlimit")
        .arg(format!("--data={data_limit}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_mailetd"))
        .arg("--conf")
        .arg(conf)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("MAILETD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("prlimit (util-linux) starts mailetd")
}

fn send(port: u16, rcpts: &[String], mail: &Path) {
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    crate::support::smtp::send_file(port, "alice.martin@partner.example", &rcpts, mail);
}

/// The largest file under `dir`, in bytes.
fn largest_file(dir: &Path) -> u64 {
    let mut largest = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        largest = largest.max(if meta.is_dir() {
            largest_file(&entry.path())
        } else {
            meta.len()
        });
    }
    largest
}

/// The Twake example under a memory cap, against the esn double, with these users.
struct Capped {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Capped {
    fn start(double: &EsnDouble, data_limit: u64) -> Capped {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = example_conf(dir.path(), port);
        write_files(
            &conf,
            &[(
                "smtpserver.xml",
                smtpserver_xml(port, "<maxmessagesize>100M</maxmessagesize>"),
            )],
        );
        let child = serve_capped(
            &conf,
            &double.env(),
            &dir.path().join("mailetd.log"),
            data_limit,
        );
        wait_for_port(port, WAIT);
        Capped { dir, port, child }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mailetd.log")).unwrap_or_default()
    }

    /// Waits for `n` delivered ITIPs; fails with the log if mailetd died on the way.
    fn delivered(&mut self, double: &EsnDouble, n: usize) -> Vec<serde_json::Value> {
        eventually("every ITIP delivered", WAIT, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "mailetd exited ({status}) under its memory cap:\n{}",
                    self.log()
                );
            }
            let itips = double.delivered_itips();
            (itips.len() >= n).then(|| itips.iter().map(|r| r.json()).collect())
        })
    }
}

impl Drop for Capped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn invitation_to_a_thousand_recipients_reaches_each_under_a_memory_cap() {
    let double = EsnDouble::start();
    let rcpts: Vec<String> = (0..1000)
        .map(|i| format!("u{i:04}@linagora.local"))
        .collect();
    for r in &rcpts {
        double.add_user(r);
    }
    // before the calendar was shared this mail took 480 MB (one JSON copy per recipient,
    // copied again by CalDavCollect and the outbox) and wrote a 144 MB store file
    let mut mailetd = Capped::start(&double, 160 * MIB);
    let (mail, uid) = big_invitation(mailetd.dir.path(), 76, 1);
    assert!(std::fs::metadata(&mail).unwrap().len() > 100_000);
    send(mailetd.port, &rcpts, &mail);
    let itips = mailetd.delivered(&double, rcpts.len());
    let mut got: Vec<&str> = itips
        .iter()
        .map(|j| j["recipient"].as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, rcpts, "one ITIP per recipient");
    for itip in &itips {
        assert_eq!(itip["uid"], uid.as_str());
        assert!(itip["ical"].as_str().unwrap().len() > 70_000);
    }
    let largest = largest_file(&mailetd.dir.path().join("var"));
    assert!(
        largest < 16 * MIB,
        "a {largest}-byte file: the store holds the calendar per recipient"
    );
}

#[test]
fn calendar_of_100000_events_is_collected_under_a_memory_cap() {
    let double = EsnDouble::start();
    double.add_user("bob@linagora.local");
    // 926 MB before (the parse tree, a normalised copy, a cached copy, JSON copies)
    let mut mailetd = Capped::start(&double, 400 * MIB);
    let (mail, uid) = big_invitation(mailetd.dir.path(), 25 * 1024, 100_000);
    send(mailetd.port, &["bob@linagora.local".to_string()], &mail);
    let itips = mailetd.delivered(&double, 1);
    assert_eq!(itips[0]["uid"], uid.as_str());
    assert_eq!(
        itips[0]["ical"]
            .as_str()
            .unwrap()
            .matches("BEGIN:VEVENT")
            .count(),
        100_000
    );
}

#[test]
fn repository_file_holds_a_large_invitation_once() {
    // the default conf keeps what CalDavCollect would send in file://mail/collected/
    let mailetd = Mailetd::start(&[]);
    let (mail, uid) = big_invitation(mailetd.dir.path(), 76, 1);
    let rcpts: Vec<String> = (0..1000).map(|i| format!("u{i:04}@example.org")).collect();
    send(mailetd.smtp_port, &rcpts, &mail);
    let collected = Repository::open("file://mail/collected/", &mailetd.data_dir()).unwrap();
    let key = eventually("the mail in mail/collected", WAIT, || {
        collected.list().ok()?.into_iter().next()
    });
    let stored = collected.dir.join(format!("{key}.json"));
    let size = std::fs::metadata(&stored).unwrap().len();
    assert!(
        size < MIB,
        "{size} bytes for a 105 KB invitation: the calendar is stored per recipient"
    );
    let mail = collected.load(&key).unwrap();
    let Some(AttributeValue::CalendarJson(jsons)) = mail.attribute("icalendarAsJson2") else {
        panic!("no calendar JSON stored: {:?}", mail.attributes.keys());
    };
    let mut recipients: Vec<String> = jsons
        .documents()
        .map(|d| {
            let json: serde_json::Value = serde_json::from_slice(&d.render()).unwrap();
            assert_eq!(json["uid"], uid.as_str());
            json["recipient"].as_str().unwrap().to_string()
        })
        .collect();
    recipients.sort();
    assert_eq!(recipients, rcpts);
}
