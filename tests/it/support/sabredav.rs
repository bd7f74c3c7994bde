//! A real SabreDAV 1.8 (Debian `php-sabre-dav`) served by `php -S` on a free loopback port,
//! with a throwaway sqlite database (recipe: spec/infra-probe.md §4.4). Basic auth checked
//! against the digest table (reqwest has no Digest). `admin` is the service account: it is
//! an ACL admin principal, so it may write into every user's address books and calendars.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::davhttp::{self, DavServer, Response};
use super::{eventually, free_port, python};

/// The service account (created by the Debian sample schema).
pub const SERVICE_USER: &str = "admin";
/// Its password.
pub const SERVICE_PASSWORD: &str = "admin";

/// The server script, shared with scripts/bench-chain.
const SERVER_PHP: &str = include_str!("../../../benches/sabredav/server.php");

const ADD_USER_PY: &str = r#"
import hashlib, sqlite3, sys
db, user, password = sys.argv[1:4]
c = sqlite3.connect(db)
a1 = hashlib.md5(f"{user}:SabreDAV:{password}".encode()).hexdigest()
c.execute("INSERT OR REPLACE INTO users (username, digesta1) VALUES (?, ?)", (user, a1))
for suffix in ("", "/calendar-proxy-read", "/calendar-proxy-write"):
    c.execute("INSERT OR IGNORE INTO principals (uri, email, displayname) VALUES (?, ?, ?)",
              (f"principals/{user}{suffix}", user if not suffix and "@" in user else None, None))
c.commit()
"#;

const SCHEMA_PY: &str = r#"
import glob, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for part in ("principals", "users", "calendars", "addressbooks", "locks"):
    for f in sorted(glob.glob(f"/usr/share/doc/php-sabre-dav/examples/sql/sqlite.{part}*.sql")):
        c.executescript(open(f).read())
c.commit()
"#;

/// A running SabreDAV; killed on drop.
pub struct SabreDav {
    child: Child,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl SabreDav {
    /// Creates the database, starts `php -S` and waits until it answers.
    pub fn start() -> SabreDav {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let root = dir.path();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(root.join("server.php"), SERVER_PHP).unwrap();
        let db = root.join("data/db.sqlite");
        python(SCHEMA_PY, &[db.to_str().unwrap()]);
        let log = std::fs::File::create(root.join("php.log")).unwrap();
        let child = Command::new("php")
            .args(["-S", &format!("127.0.0.1:{port}"), "server.php"])
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("php -S starts");
        let sabre = SabreDav { child, dir, port };
        eventually("SabreDAV answers", Duration::from_secs(30), || {
            let r = sabre.request("PROPFIND", "/", &[("Depth", "0")], None);
            (r.status == 207).then_some(())
        });
        sabre
    }

    /// `http://127.0.0.1:port`, without a trailing `/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The PHP server's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("php.log")).unwrap_or_default()
    }

    /// Adds a user and its principal (`principals/{user}`), so it has a calendar and an
    /// address-book home.
    pub fn add_user(&self, user: &str, password: &str) {
        let db = self.dir.path().join("data/db.sqlite");
        python(ADD_USER_PY, &[db.to_str().unwrap(), user, password]);
    }

    /// A request to `path` (starting with `/`) as the service account.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        davhttp::request(
            method,
            &format!("{}{path}", self.url()),
            Some((SERVICE_USER, SERVICE_PASSWORD)),
            headers,
            body,
        )
    }

    /// Creates `/addressbooks/{user}/{book}/`.
    pub fn create_addressbook(&self, user: &str, book: &str) {
        let body = davhttp::mkcol_addressbook_body(book);
        let r = self.request(
            "MKCOL",
            &format!("/addressbooks/{user}/{book}/"),
            &[("Content-Type", "application/xml")],
            Some(&body),
        );
        assert_eq!(r.status, 201, "MKCOL address book: {r:?}\n{}", self.log());
    }

    /// Creates `/calendars/{user}/{calendar}/`.
    pub fn create_calendar(&self, user: &str, calendar: &str) {
        let body = davhttp::mkcalendar_body(calendar);
        let r = self.request(
            "MKCALENDAR",
            &format!("/calendars/{user}/{calendar}/"),
            &[("Content-Type", "application/xml")],
            Some(&body),
        );
        assert_eq!(r.status, 201, "MKCALENDAR: {r:?}\n{}", self.log());
    }
}

impl DavServer for SabreDav {
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        SabreDav::request(self, method, path, headers, body)
    }

    fn log(&self) -> String {
        SabreDav::log(self)
    }
}

impl Drop for SabreDav {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
