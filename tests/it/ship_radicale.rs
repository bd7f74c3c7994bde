//! Shipping the Radicale example (`examples/radicale`): its compose file pairs mailetd with
//! Radicale, its rights file lets the service account write every collection of a real
//! Radicale, and its configuration loads with `mailetd check`. The rest of shipping is
//! ship.rs.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::davhttp;
use crate::support::{free_port, wait_for_port};

use crate::ship::{NEEDS_CALDAV, check, read, repo, strings, yaml};

#[test]
fn radicale_compose_pairs_mailetd_with_radicale() {
    let compose = yaml("examples/radicale/docker-compose.yml");
    let radicale = &compose["services"]["radicale"];
    let mailetd = &compose["services"]["mailetd"];
    assert_eq!(strings(&mailetd["depends_on"]), ["radicale"]);
    assert!(strings(&mailetd["ports"]).contains(&"25:25".to_string()));
    // Every file the services mount exists next to the compose file.
    for service in [radicale, mailetd] {
        for volume in strings(&service["volumes"]) {
            if let Some(local) = volume.strip_prefix("./") {
                let local = local.split(':').next().unwrap();
                assert!(
                    repo().join("examples/radicale").join(local).exists(),
                    "{volume} is missing"
                );
            }
        }
    }

    // mailetd's service account and password are the ones Radicale knows.
    let settings = mailetd::config::Settings::load(&repo().join("examples/radicale/conf")).unwrap();
    let user = settings.dav.username.clone().expect("[dav] username");
    let env = &mailetd["environment"];
    let base_url = env["MAILETD_DAV__BASE_URL"].as_str().unwrap();
    assert_eq!(base_url, settings.dav.base_url);
    assert_eq!(
        base_url, "http://radicale:5232",
        "the radicale service's port"
    );
    assert!(read("examples/radicale/radicale/config").contains("hosts = 0.0.0.0:5232"));
    let password = env["MAILETD_DAV__PASSWORD"].as_str().unwrap();
    let default = password
        .strip_prefix("${MAILETD_DAV_PASSWORD:-")
        .and_then(|p| p.strip_suffix('}'))
        .expect("the password comes from the environment");
    assert!(
        read("examples/radicale/radicale/users")
            .lines()
            .any(|l| l == format!("{user}:{default}")),
        "radicale/users has no {user}:{default}"
    );
    assert!(read("examples/radicale/radicale/rights").contains(&format!("user: {user}\n")));
}

/// A Radicale started from the example's config, rights and users files (paths moved into
/// a temp dir, port free): the service account writes every user's calendar and address
/// book; a user reads their own and cannot write someone else's.
#[test]
fn radicale_example_rights_let_the_service_account_write_every_collection() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let example = repo().join("examples/radicale/radicale");
    let log = std::fs::File::create(dir.path().join("radicale.log")).unwrap();
    let mut child = Command::new("python3")
        .args(["-m", "radicale", "--config"])
        .arg(example.join("config"))
        .arg(format!("--server-hosts=127.0.0.1:{port}"))
        .arg(format!(
            "--auth-htpasswd-filename={}",
            example.join("users").display()
        ))
        .arg(format!(
            "--rights-file={}",
            example.join("rights").display()
        ))
        .arg(format!(
            "--storage-filesystem-folder={}",
            dir.path().join("collections").display()
        ))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("python3 -m radicale");
    let _guard = KillOnDrop(&mut child);
    wait_for_port(port, Duration::from_secs(30));
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let svc = Some(("mailetd", "change-me-mailetd"));
    let bob = Some(("bob@example.org", "change-me-bob"));
    let alice = Some(("alice@example.org", "change-me-alice"));
    let xml = [("Content-Type", "application/xml")];

    for home in ["/bob@example.org/", "/alice@example.org/"] {
        let r = davhttp::request("MKCOL", &url(home), svc, &[], None);
        assert_eq!(r.status, 201, "MKCOL {home}: {r:?}");
    }
    let r = davhttp::request(
        "MKCALENDAR",
        &url("/bob@example.org/calendar/"),
        svc,
        &xml,
        Some(&davhttp::mkcalendar_body("calendar")),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let event = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailetd//ship test//EN\r\nBEGIN:VEVENT\r\nUID:ship-1\r\nDTSTAMP:20261122T020000Z\r\nDTSTART:20261201T100000Z\r\nDTEND:20261201T110000Z\r\nSUMMARY:Rights check\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let ics = [("Content-Type", "text/calendar")];
    let r = davhttp::request(
        "PUT",
        &url("/bob@example.org/calendar/ship-1.ics"),
        svc,
        &ics,
        Some(event),
    );
    assert_eq!(r.status, 201, "service account PUT: {r:?}");
    let r = davhttp::request(
        "MKCOL",
        &url("/alice@example.org/collected/"),
        svc,
        &xml,
        Some(&davhttp::mkcol_addressbook_body("collected")),
    );
    assert_eq!(r.status, 201, "service account creates a book: {r:?}");

    let r = davhttp::request(
        "GET",
        &url("/bob@example.org/calendar/ship-1.ics"),
        bob,
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("UID:ship-1"));
    let r = davhttp::request(
        "PUT",
        &url("/bob@example.org/calendar/intruder.ics"),
        alice,
        &ics,
        Some(&event.replace("ship-1", "intruder")),
    );
    assert_eq!(r.status, 403, "alice writes bob's calendar: {r:?}");
    let r = davhttp::request(
        "GET",
        &url("/bob@example.org/calendar/ship-1.ics"),
        Some(("mailetd", "wrong")),
        &[],
        None,
    );
    assert_eq!(r.status, 401, "a wrong password: {r:?}");
}

struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn radicale_example_conf_loads_with_mailetd_check() {
    let out = check(
        &repo().join(NEEDS_CALDAV),
        &[("MAILETD_DAV__PASSWORD", "change-me-mailetd")],
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
