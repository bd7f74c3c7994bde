//! A real Xandikos (`python3 -m xandikos serve`, PyPI 0.4.10) on a free loopback port with a
//! throwaway git-backed store. Single-user server without authentication: any path can be
//! made a collection, so each test user gets `/{user}/calendar/`.

use std::process::Command;

use super::davhttp::DavServer;
use super::free_port;
use super::peer::PeerProcess;

/// A running Xandikos; killed on drop.
pub struct Xandikos {
    process: PeerProcess,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Xandikos {
    /// Starts Xandikos and waits until it answers.
    pub fn start() -> Xandikos {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new("python3");
        command
            .args(["-m", "xandikos", "serve", "--autocreate", "-l", "127.0.0.1"])
            .arg("-p")
            .arg(port.to_string())
            .arg("-d")
            .arg(dir.path().join("data"))
            .arg("--state-dir")
            .arg(dir.path().join("state"));
        let process = PeerProcess::spawn(command, dir, "xandikos.log", "python3 -m xandikos");
        let xandikos = Xandikos { process, port };
        xandikos.wait_until_answering("Xandikos answers");
        xandikos
    }

    /// Creates `/{user}/` and the calendar `/{user}/{calendar}/`.
    pub fn create_calendar(&self, user: &str, calendar: &str) {
        self.create_collection(&format!("/{user}/"));
        self.create_calendar_at(&format!("/{user}/{calendar}/"), calendar);
    }
}

impl DavServer for Xandikos {
    fn port(&self) -> u16 {
        self.port
    }

    /// Single-user, unauthenticated.
    fn credentials(&self) -> Option<(&str, &str)> {
        None
    }

    fn log(&self) -> String {
        self.process.log()
    }
}
