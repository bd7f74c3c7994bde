//! A real SabreDAV 1.8 (Debian `php-sabre-dav`) served by `php -S` on a free loopback port,
//! with a throwaway sqlite database (recipe: spec/infra-probe.md §4.4). Basic auth checked
//! against the digest table (reqwest has no Digest). `admin` is the service account: it is
//! an ACL admin principal, so it may write into every user's address books and calendars.

use std::process::Command;

use super::davhttp::DavServer;
use super::peer::PeerProcess;
use super::{free_port, python};

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
    process: PeerProcess,
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
        let mut command = Command::new("php");
        command
            .args(["-S", &format!("127.0.0.1:{port}"), "server.php"])
            .current_dir(root);
        let process = PeerProcess::spawn(command, dir, "php.log", "php -S");
        let sabre = SabreDav { process, port };
        sabre.wait_until_answering("SabreDAV answers");
        sabre
    }

    /// Adds a user and its principal (`principals/{user}`), so it has a calendar and an
    /// address-book home.
    pub fn add_user(&self, user: &str, password: &str) {
        let db = self.process.dir().join("data/db.sqlite");
        python(ADD_USER_PY, &[db.to_str().unwrap(), user, password]);
    }

    /// Creates `/addressbooks/{user}/{book}/`.
    pub fn create_addressbook(&self, user: &str, book: &str) {
        self.create_addressbook_at(&format!("/addressbooks/{user}/{book}/"), book);
    }

    /// Creates `/calendars/{user}/{calendar}/`.
    pub fn create_calendar(&self, user: &str, calendar: &str) {
        self.create_calendar_at(&format!("/calendars/{user}/{calendar}/"), calendar);
    }
}

impl DavServer for SabreDav {
    fn port(&self) -> u16 {
        self.port
    }

    fn credentials(&self) -> Option<(&str, &str)> {
        Some((SERVICE_USER, SERVICE_PASSWORD))
    }

    /// The PHP server's log.
    fn log(&self) -> String {
        self.process.log()
    }
}
