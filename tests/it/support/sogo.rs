//! A real SOGo (Debian `sogo`, Mailcow's groupware) with a real PostgreSQL: `initdb` in a
//! throwaway directory, `postgres` on a free loopback port, a SQL user source (the
//! `sogo_users` table, plain passwords), then `sogod` in the foreground on another free port,
//! configured entirely by command-line defaults (GNUstep's argument domain outranks
//! `/etc/sogo/sogo.conf`, and a user-defaults file would live in the `sogo` user's home).
//! As root, postgres and sogod run as the `postgres` and `sogo` users the packages create
//! (both refuse root). SOGo's CalDAV: `/SOGo/dav/<user>/Calendar/personal/`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::davhttp::DavServer;
use super::{eventually, free_port, peer_installed, wait_for_port};

const SOGOD: &str = "/usr/sbin/sogod";
/// The database account SOGo uses.
const DB_USER: &str = "sogo";
const DB_PASSWORD: &str = "sogo-db-secret";

/// Whether sogod and PostgreSQL are installed; when they are not, tests skip with a note,
/// or fail under CI (see [`peer_installed`]).
pub fn available() -> bool {
    peer_installed(
        Path::new(SOGOD).exists() && pg_bin("initdb").exists(),
        "SOGo or PostgreSQL is not installed (apt-get install sogo postgresql)",
    )
}

/// Debian's versioned PostgreSQL binaries (not on PATH), else PATH's.
fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| PathBuf::from(name))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// `program` as `user` when we are root (postgres and sogod refuse root), else as us.
fn command_as(user: &str, program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A running SOGo and its PostgreSQL; both stopped on drop.
pub struct Sogo {
    dir: tempfile::TempDir,
    pg_port: u16,
    sogod: Child,
    /// SOGo's HTTP port on 127.0.0.1.
    pub port: u16,
}

impl Sogo {
    /// Starts PostgreSQL and SOGo with `users` (login, password) and waits until SOGo
    /// answers for the first one.
    pub fn start(users: &[(&str, &str)]) -> Sogo {
        let dir = tempfile::tempdir().unwrap();
        // the postgres and sogo users write here
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let data = dir.path().join("pg");
        let out = command_as("postgres", &pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg_port = free_port();
        let out = command_as("postgres", &pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("postgres.log"))
            .arg("-o")
            .arg(format!(
                "-p {pg_port} -k {} -c listen_addresses=127.0.0.1",
                dir.path().display()
            ))
            .args(["-w", "start"])
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let psql = |user: &str, db: &str, sql: &str| {
            let out = Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &pg_port.to_string(),
                    "-U",
                    user,
                    "-d",
                    db,
                ])
                .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
                .output()
                .expect("psql runs");
            assert!(
                out.status.success(),
                "psql {sql}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        psql(
            "postgres",
            "postgres",
            &format!("CREATE USER {DB_USER} PASSWORD '{DB_PASSWORD}'"),
        );
        psql(
            "postgres",
            "postgres",
            &format!("CREATE DATABASE sogo OWNER {DB_USER}"),
        );
        psql(
            DB_USER,
            "sogo",
            "CREATE TABLE sogo_users (c_uid varchar(128) PRIMARY KEY, c_name varchar(128), \
             c_password varchar(256), c_cn varchar(128), mail varchar(128))",
        );
        for (login, password) in users {
            psql(
                DB_USER,
                "sogo",
                &format!(
                    "INSERT INTO sogo_users VALUES ('{login}', '{login}', '{password}', '{login}', '{login}@sogo.test')"
                ),
            );
        }
        let db = format!("postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{pg_port}/sogo");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("sogo.log")).unwrap();
        let sogod = command_as("sogo", Path::new(SOGOD))
            .args(["-WONoDetach", "YES", "-WOLogFile", "-", "-WOWorkersCount", "1"])
            .args(["-WOPort", &format!("127.0.0.1:{port}")])
            .arg("-WOPidFile")
            .arg(dir.path().join("sogo.pid"))
            .args(["-SOGoProfileURL", &format!("{db}/sogo_user_profile")])
            .args(["-OCSFolderInfoURL", &format!("{db}/sogo_folder_info")])
            .args(["-OCSSessionsFolderURL", &format!("{db}/sogo_sessions_folder")])
            .args(["-OCSEMailAlarmsFolderURL", &format!("{db}/sogo_alarms_folder")])
            .args(["-SOGoTimeZone", "UTC"])
            .args(["-SOGoAppointmentSendEMailNotifications", "NO"])
            // no memcached: a closed port makes SOGo skip its cache
            .args(["-SOGoMemcachedHost", &format!("127.0.0.1:{}", free_port())])
            .arg("-SOGoUserSources")
            .arg(format!(
                "({{type = sql; id = users; viewURL = \"{db}/sogo_users\"; canAuthenticate = YES; isAddressBook = NO; userPasswordAlgorithm = plain;}})"
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // its own process group: the watchdog's worker children are stopped with it
            .process_group(0)
            .spawn()
            .expect("sogod starts");
        let sogo = Sogo {
            dir,
            pg_port,
            sogod,
            port,
        };
        wait_for_port(port, Duration::from_secs(60));
        if let Some((login, password)) = users.first() {
            eventually(
                "SOGo serves the user's calendars",
                Duration::from_secs(60),
                || {
                    let r = sogo.user(login, password).request(
                        "PROPFIND",
                        &format!("/SOGo/dav/{login}/Calendar/personal/"),
                        &[("Depth", "0")],
                        None,
                    );
                    (r.status == 207).then_some(())
                },
            );
        }
        sogo
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The user's personal calendar, as SOGo names it.
    pub fn calendar_path(login: &str) -> String {
        format!("/SOGo/dav/{login}/Calendar/personal/")
    }

    /// `login`'s view of the server, for [`DavServer`]'s requests and queries.
    pub fn user<'a>(&'a self, login: &'a str, password: &'a str) -> SogoUser<'a> {
        SogoUser {
            sogo: self,
            login,
            password,
        }
    }

    /// SOGo's and PostgreSQL's logs.
    pub fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!(
            "--- sogo.log\n{}\n--- postgres.log\n{}",
            read("sogo.log"),
            read("postgres.log")
        )
    }
}

/// A SOGo user's view, for [`DavServer`]'s queries.
pub struct SogoUser<'a> {
    /// The server.
    pub sogo: &'a Sogo,
    /// Login.
    pub login: &'a str,
    /// Password.
    pub password: &'a str,
}

impl DavServer for SogoUser<'_> {
    fn port(&self) -> u16 {
        self.sogo.port
    }

    fn credentials(&self) -> Option<(&str, &str)> {
        Some((self.login, self.password))
    }

    fn log(&self) -> String {
        self.sogo.log()
    }
}

impl Drop for Sogo {
    fn drop(&mut self) {
        // SIGTERM: the watchdog stops its worker children with it (SIGKILL would orphan them)
        let _ = Command::new("kill")
            .arg(self.sogod.id().to_string())
            .status();
        let _ = self.sogod.wait();
        let _ = command_as("postgres", &pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("pg"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.pg_port;
    }
}
