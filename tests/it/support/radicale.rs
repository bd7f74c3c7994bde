//! A real Radicale (`python3 -m radicale`) on a free loopback port with a throwaway storage
//! directory: htpasswd (plain) users, and a rights file letting the service account read and
//! write every user's collections while users keep to their own.

use std::path::PathBuf;
use std::process::Command;

use super::davhttp::DavServer;
use super::free_port;
use super::peer::PeerProcess;

/// The service account every Radicale harness has.
pub const SERVICE_USER: &str = "svc";
/// Its password.
pub const SERVICE_PASSWORD: &str = "svc-secret";

/// A running Radicale; killed on drop.
pub struct Radicale {
    process: PeerProcess,
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
        let mut command = Command::new("python3");
        command
            .args(["-m", "radicale", "--config"])
            .arg(root.join("config"));
        let process = PeerProcess::spawn(command, dir, "radicale.log", "python3 -m radicale");
        let radicale = Radicale { process, port };
        radicale.wait_until_answering("Radicale answers");
        radicale
    }

    fn users_file(&self) -> PathBuf {
        self.process.dir().join("users")
    }

    /// Adds a user (Radicale reads the htpasswd file on every login).
    pub fn add_user(&self, user: &str, password: &str) {
        let mut users = std::fs::read_to_string(self.users_file()).unwrap();
        users.push_str(&format!("{user}:{password}\n"));
        std::fs::write(self.users_file(), users).unwrap();
    }

    /// Creates the principal collection `/{user}/` (Radicale makes it on the user's first
    /// login; a service account must create it).
    pub fn create_home(&self, user: &str) {
        self.create_collection(&format!("/{user}/"));
    }

    /// Creates the address book `/{user}/{book}/` (and the user's home).
    pub fn create_addressbook(&self, user: &str, book: &str) {
        self.create_home(user);
        self.create_addressbook_at(&format!("/{user}/{book}/"), book);
    }

    /// Creates the calendar `/{user}/{calendar}/` (and the user's home).
    pub fn create_calendar(&self, user: &str, calendar: &str) {
        self.create_home(user);
        self.create_calendar_at(&format!("/{user}/{calendar}/"), calendar);
    }
}

impl DavServer for Radicale {
    fn port(&self) -> u16 {
        self.port
    }

    fn credentials(&self) -> Option<(&str, &str)> {
        Some((SERVICE_USER, SERVICE_PASSWORD))
    }

    fn log(&self) -> String {
        self.process.log()
    }
}
