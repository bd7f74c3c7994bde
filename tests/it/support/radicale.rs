//! A real Radicale (`python3 -m radicale`) on a free loopback port with a throwaway storage
//! directory: htpasswd (plain) users, and a rights file letting the service account read and
//! write every user's collections while users keep to their own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::davhttp::{self, DavServer, Response};
use super::{eventually, free_port};

/// The service account every Radicale harness has.
pub const SERVICE_USER: &str = "svc";
/// Its password.
pub const SERVICE_PASSWORD: &str = "svc-secret";

/// A running Radicale; killed on drop.
pub struct Radicale {
    child: Child,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Radicale {
    /// Starts Radicale with the service account and waits until it answers.
    pub fn start() -> Radicale {
        Self::start_on(free_port())
    }

    /// Starts Radicale on `port` (a restart on the same address).
    pub fn start_on(port: u16) -> Radicale {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("collections")).unwrap();
        std::fs::write(
            root.join("users"),
            format!("{SERVICE_USER}:{SERVICE_PASSWORD}\n"),
        )
        .unwrap();
        std::fs::write(
            root.join("rights"),
            format!(
                "[service]\nuser: {SERVICE_USER}\ncollection: .*\npermissions: RrWw\n\n\
                 [owner]\nuser: .+\ncollection: {{user}}(/.*)?\npermissions: RrWw\n\n\
                 [root]\nuser: .+\ncollection:\npermissions: R\n"
            ),
        )
        .unwrap();
        std::fs::write(
            root.join("config"),
            format!(
                "[server]\nhosts = 127.0.0.1:{port}\n\n[auth]\ntype = htpasswd\nhtpasswd_filename = {users}\nhtpasswd_encryption = plain\n\n\
                 [storage]\nfilesystem_folder = {cols}\n\n[rights]\ntype = from_file\nfile = {rights}\n\n[logging]\nlevel = warning\n",
                users = root.join("users").display(),
                cols = root.join("collections").display(),
                rights = root.join("rights").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(root.join("radicale.log")).unwrap();
        let child = Command::new("python3")
            .args(["-m", "radicale", "--config"])
            .arg(root.join("config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("python3 -m radicale starts");
        let radicale = Radicale { child, dir, port };
        eventually("Radicale answers", Duration::from_secs(30), || {
            let probe = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(radicale.url())
                .output()
                .ok()?;
            (!probe.stdout.is_empty() && probe.stdout != b"000").then_some(())
        });
        radicale
    }

    /// `http://127.0.0.1:port`, without a trailing `/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Radicale's own log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("radicale.log")).unwrap_or_default()
    }

    fn users_file(&self) -> PathBuf {
        self.dir.path().join("users")
    }

    /// Adds a user (Radicale reads the htpasswd file on every login).
    pub fn add_user(&self, user: &str, password: &str) {
        let mut users = std::fs::read_to_string(self.users_file()).unwrap();
        users.push_str(&format!("{user}:{password}\n"));
        std::fs::write(self.users_file(), users).unwrap();
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

    /// Creates the principal collection `/{user}/` (Radicale makes it on the user's first
    /// login; a service account must create it).
    pub fn create_home(&self, user: &str) {
        let r = self.request("MKCOL", &format!("/{user}/"), &[], None);
        assert!(matches!(r.status, 201 | 405), "MKCOL home: {r:?}");
    }

    /// Creates the address book `/{user}/{book}/` (and the user's home).
    pub fn create_addressbook(&self, user: &str, book: &str) {
        self.create_home(user);
        let body = davhttp::mkcol_addressbook_body(book);
        let r = self.request(
            "MKCOL",
            &format!("/{user}/{book}/"),
            &[("Content-Type", "application/xml")],
            Some(&body),
        );
        assert_eq!(r.status, 201, "MKCOL address book: {r:?}");
    }

    /// Creates the calendar `/{user}/{calendar}/` (and the user's home).
    pub fn create_calendar(&self, user: &str, calendar: &str) {
        self.create_home(user);
        let body = davhttp::mkcalendar_body(calendar);
        let r = self.request(
            "MKCALENDAR",
            &format!("/{user}/{calendar}/"),
            &[("Content-Type", "application/xml")],
            Some(&body),
        );
        assert_eq!(r.status, 201, "MKCALENDAR: {r:?}");
    }
}

impl DavServer for Radicale {
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        Radicale::request(self, method, path, headers, body)
    }

    fn log(&self) -> String {
        Radicale::log(self)
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
