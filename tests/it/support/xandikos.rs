//! A real Xandikos (`python3 -m xandikos serve`, PyPI 0.4.10) on a free loopback port with a
//! throwaway git-backed store. Single-user server without authentication: any path can be
//! made a collection, so each test user gets `/{user}/calendar/`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::davhttp::{self, DavServer, Response};
use super::{eventually, free_port};

/// A running Xandikos; killed on drop.
pub struct Xandikos {
    child: Child,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Xandikos {
    /// Starts Xandikos and waits until it answers.
    pub fn start() -> Xandikos {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("xandikos.log")).unwrap();
        let child = Command::new("python3")
            .args(["-m", "xandikos", "serve", "--autocreate", "-l", "127.0.0.1"])
            .arg("-p")
            .arg(port.to_string())
            .arg("-d")
            .arg(dir.path().join("data"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("python3 -m xandikos starts");
        let xandikos = Xandikos { child, dir, port };
        eventually("Xandikos answers", Duration::from_secs(30), || {
            let r = xandikos.request("PROPFIND", "/", &[("Depth", "0")], None);
            (r.status == 207).then_some(())
        });
        xandikos
    }

    /// `http://127.0.0.1:port`, without a trailing `/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Xandikos's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("xandikos.log")).unwrap_or_default()
    }

    /// A request to `path` (starting with `/`), unauthenticated.
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
            None,
            headers,
            body,
        )
    }

    /// Creates `/{user}/` and the calendar `/{user}/{calendar}/`.
    pub fn create_calendar(&self, user: &str, calendar: &str) {
        let r = self.request("MKCOL", &format!("/{user}/"), &[], None);
        assert!(matches!(r.status, 201 | 405), "MKCOL home: {r:?}");
        let body = davhttp::mkcalendar_body(calendar);
        let r = self.request(
            "MKCALENDAR",
            &format!("/{user}/{calendar}/"),
            &[("Content-Type", "application/xml")],
            Some(&body),
        );
        assert_eq!(r.status, 201, "MKCALENDAR: {r:?}\n{}", self.log());
    }
}

impl DavServer for Xandikos {
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        Xandikos::request(self, method, path, headers, body)
    }

    fn log(&self) -> String {
        Xandikos::log(self)
    }
}

impl Drop for Xandikos {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
