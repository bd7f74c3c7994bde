//! A `mailetd serve` child process with its own conf and data directories.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for_port, write_files};

/// A running mailetd; killed (and its temp dir removed) on drop.
pub struct Mailetd {
    /// The child process.
    pub child: Option<Child>,
    /// The temp dir holding `conf/`, `var/` and `mailetd.log`.
    pub dir: tempfile::TempDir,
    /// The SMTP port of the first listener.
    pub smtp_port: u16,
    /// The port of the HTTP admin endpoint (`MAILETD_HTTP__BIND`, unless `env` overrides it).
    pub http_port: u16,
    extra_env: Vec<(String, String)>,
    /// RLIMIT_NOFILE (soft, hard) the process starts with, when set.
    open_files: Option<(u64, u64)>,
}

/// The minimal smtpserver.xml listening on `port`, with extra XML inside `<smtpserver>`.
pub fn smtpserver_xml(port: u16, extra: &str) -> String {
    format!(
        "<smtpservers>\n  <smtpserver enabled=\"true\">\n    <jmxName>smtpserver</jmxName>\n    <bind>127.0.0.1:{port}</bind>\n    <helloName autodetect=\"false\">mailetd.test</helloName>\n    <authorizedAddresses>127.0.0.0/8</authorizedAddresses>\n{extra}\n  </smtpserver>\n</smtpservers>\n"
    )
}

impl Mailetd {
    /// Starts mailetd with the default `conf/` of the repository, overridden by `files`
    /// (paths relative to the conf dir). `smtpserver.xml` is generated on a free port
    /// unless `files` has one (use [`smtpserver_xml`] with `port`).
    pub fn start_with(port: u16, files: &[(&str, String)], env: &[(&str, &str)]) -> Mailetd {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("conf"), &conf);
        write_files(&conf, &[("smtpserver.xml", smtpserver_xml(port, ""))]);
        write_files(
            &conf,
            &[(
                "mailetd.toml",
                format!(
                    "data_dir = {:?}\n",
                    dir.path().join("var").display().to_string()
                ),
            )],
        );
        write_files(&conf, files);
        let mut m = Mailetd {
            child: None,
            dir,
            smtp_port: port,
            http_port: free_port(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            open_files: None,
        };
        m.spawn();
        m
    }

    /// Starts mailetd on a free port with the default conf plus `files`.
    pub fn start(files: &[(&str, String)]) -> Mailetd {
        Self::start_with(free_port(), files, &[])
    }

    /// The conf directory.
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("var")
    }

    /// Everything mailetd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mailetd.log")).unwrap_or_default()
    }

    /// (Re)starts the process and waits for the SMTP port.
    pub fn spawn(&mut self) {
        self.spawn_no_wait();
        wait_for_port(self.smtp_port, Duration::from_secs(20));
    }

    /// (Re)starts the process without waiting for it to listen (it may die first).
    pub fn spawn_no_wait(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mailetd"));
        if let Some((soft, hard)) = self.open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit, async-signal-safe, between fork and exec
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        command
            .arg("--conf")
            .arg(self.conf_dir())
            .arg("serve")
            .current_dir(self.dir.path())
            .env("MAILETD_LOG", "info,mailetd=debug")
            .env(
                "MAILETD_HTTP__BIND",
                format!("127.0.0.1:{}", self.http_port),
            )
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = spawn_logged(command, &self.dir.path().join("mailetd.log"));
        self.child = Some(child);
    }

    /// Sets (or replaces) an environment variable for the next [`Mailetd::spawn`].
    pub fn extra_env_set(&mut self, key: &str, value: &str) {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.to_string(), value.to_string()));
    }

    /// Restarts the process with this open files limit (soft, hard), as `ulimit -n` would.
    pub fn restart_with_open_files(&mut self, soft: u64, hard: u64) {
        self.kill9();
        self.open_files = Some((soft, hard));
        self.spawn();
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe_sigterm(c.id());
        c.wait().unwrap()
    }
}

/// Spawns `command` (a mailetd command line) with stdin closed and stdout and stderr
/// appended to the file `log`, logging at `info,mailetd=debug` unless the command sets
/// `MAILETD_LOG` itself.
pub fn spawn_logged(mut command: Command, log: &Path) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    if !command.get_envs().any(|(key, _)| key == "MAILETD_LOG") {
        command.env("MAILETD_LOG", "info,mailetd=debug");
    }
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("mailetd starts")
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

impl Drop for Mailetd {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries.flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
