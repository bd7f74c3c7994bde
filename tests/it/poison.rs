//! Poison mails (issue 18, item 2): a mail whose processing kills the process is set aside
//! in the error repository after `[spool] max_attempts` restarts, unprocessed, while the
//! mails around it are processed; `mailetd spool list|show|drop` takes one mail out of a
//! stopped server's spool without touching the others.
//!
//! The crash is the debug-build fault-injection knob `MAILETD_FAULT_ABORT_ON` (see
//! `src/pipeline/fault.rs`): the real binary aborts (SIGABRT) once processing of the named
//! mail has started, as it does on a failed allocation under a memory cap.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use crate::support::mailetd::Mailetd;
use crate::support::{eventually, free_port, smtp};

const WAIT: Duration = Duration::from_secs(60);

/// Sends one mail per subject (one connection each, in order); each DATA reply code.
fn send(port: u16, subjects: &[&str]) -> String {
    let codes: Vec<String> = subjects
        .iter()
        .map(|subject| {
            let body = format!(
                "From: a@partner.example\r\nTo: bob@example.org\r\nSubject: {subject}\r\nX-Test: {subject}\r\n\r\nhello\r\n"
            );
            let session = smtp::session(port)
                .transaction("a@partner.example", &["bob@example.org"], body)
                .run();
            session.codes()[2].to_string()
        })
        .collect();
    codes.join(" ")
}

/// Lines of the log saying a mail was processed.
fn processed(m: &Mailetd) -> usize {
    m.log().matches("mail processed").count()
}

fn cli(m: &Mailetd, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mailetd"))
        .arg("--conf")
        .arg(m.conf_dir())
        .args(args)
        .current_dir(m.dir.path())
        .env("MAILETD_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_mail_that_kills_the_process_is_set_aside_after_max_attempts_and_its_neighbours_are_processed()
{
    let max_attempts = 2;
    // received while the spooler is off, so that the poison mail sits between the others
    let mut m = Mailetd::start_with(free_port(), &[], &[("MAILETD_WORKERS", "0")]);
    assert_eq!(
        send(m.smtp_port, &["before", "poison", "after"]),
        "250 250 250"
    );
    assert!(m.terminate().success());
    m.extra_env_set("MAILETD_WORKERS", "1");
    m.extra_env_set("MAILETD_SPOOL__MAX_ATTEMPTS", "2");
    m.extra_env_set("MAILETD_FAULT_ABORT_ON", "X-Test: poison");
    m.spawn_no_wait();
    let mut aborts = 0;
    loop {
        // either the process dies on the poison mail, or it set the mail aside
        let exit = eventually("the process dies or sets the mail aside", WAIT, || {
            if m.log().contains("set aside unprocessed as a poison mail") {
                return Some(None);
            }
            m.child.as_mut().unwrap().try_wait().unwrap().map(Some)
        });
        let Some(status) = exit else { break };
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{}", m.log());
        aborts += 1;
        assert!(
            aborts <= max_attempts,
            "still aborting after {aborts} restarts:\n{}",
            m.log()
        );
        m.spawn_no_wait();
    }
    assert_eq!(aborts, max_attempts, "{}", m.log());
    crate::support::wait_for_port(m.smtp_port, WAIT);
    // the neighbours are processed, once each, and the process keeps running
    eventually("both neighbours processed", WAIT, || {
        (processed(&m) >= 2).then_some(())
    });
    assert_eq!(send(m.smtp_port, &["later"]), "250");
    eventually("the later mail processed", WAIT, || {
        (processed(&m) >= 3).then_some(())
    });
    assert!(m.child.as_mut().unwrap().try_wait().unwrap().is_none());
    let log = m.log();
    assert!(
        log.contains("processing started 2 times and never finished"),
        "{log}"
    );
    // the poison mail is in the error repository with the reason, unprocessed
    let (ok, listing) = cli(&m, &["repo", "list", "mail/error"]);
    assert!(ok, "{listing}");
    assert!(listing.contains("1 mail(s)"), "{listing}");
    assert!(listing.contains("never finished"), "{listing}");
    let (_, shown) = cli(&m, &["repo", "show", "mail/error"]);
    assert!(shown.contains("X-Test: poison"), "{shown}");
    assert!(shown.contains("mailetd.unfinished-attempts"), "{shown}");
}

#[test]
fn spool_list_show_and_drop_take_one_mail_out_and_leave_its_neighbours() {
    // the spooler is off: mails wait in the spool, as behind a poison mail in a crash loop
    let mut m = Mailetd::start_with(free_port(), &[], &[("MAILETD_WORKERS", "0")]);
    assert_eq!(send(m.smtp_port, &["one", "two", "three"]), "250 250 250");
    let (ok, refused) = cli(&m, &["spool", "list"]);
    assert!(!ok, "the spool of a running server was opened: {refused}");
    assert!(refused.contains("stop mailetd serve first"), "{refused}");
    assert!(m.terminate().success());

    let (ok, listing) = cli(&m, &["spool", "list"]);
    assert!(ok, "{listing}");
    assert!(listing.contains("3 mail(s) in the spool"), "{listing}");
    let line = listing
        .lines()
        .find(|l| l.contains("subject=\"two\""))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(line.contains("from=a@partner.example"), "{line}");
    assert!(line.contains("to=bob@example.org"), "{line}");
    assert!(line.contains("attempts=0"), "{line}");
    let id = line.split_whitespace().next().unwrap().to_string();

    let (ok, shown) = cli(&m, &["spool", "show", &id]);
    assert!(ok, "{shown}");
    assert!(shown.contains("X-Test: two"), "{shown}");
    assert!(shown.contains("\"processing_attempts\": 0"), "{shown}");
    let (ok, unknown) = cli(&m, &["spool", "show", "12345"]);
    assert!(
        !ok && unknown.contains("no mail 12345 in the spool"),
        "{unknown}"
    );

    let (ok, dropped) = cli(&m, &["spool", "drop", &id]);
    assert!(ok, "{dropped}");
    assert!(
        dropped.contains(&format!("mail {id} moved to")),
        "{dropped}"
    );
    let (_, listing) = cli(&m, &["spool", "list"]);
    assert!(listing.contains("2 mail(s) in the spool"), "{listing}");
    assert!(!listing.contains("subject=\"two\""), "{listing}");
    let (_, errors) = cli(&m, &["repo", "show", "mail/error"]);
    assert!(errors.contains("X-Test: two"), "{errors}");

    // back in service: the two neighbours are processed, the dropped mail is not
    m.extra_env_set("MAILETD_WORKERS", "2");
    m.spawn();
    eventually("the neighbours processed", WAIT, || {
        (processed(&m) >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(processed(&m), 2, "{}", m.log());
    let (_, listing) = {
        m.terminate();
        cli(&m, &["spool", "list"])
    };
    assert!(listing.contains("0 mail(s) in the spool"), "{listing}");
}
