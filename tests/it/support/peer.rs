//! A peer server process a harness starts (Radicale, SabreDAV, Xandikos): a throwaway
//! directory holding its files and its log, the process killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running peer process and its throwaway directory; killed on drop.
pub struct PeerProcess {
    child: Child,
    dir: tempfile::TempDir,
    log_file: &'static str,
}

impl PeerProcess {
    /// Spawns `command` with stdin closed and stdout and stderr going to `log_file` in `dir`;
    /// `what` names it in the panic when it cannot start.
    pub fn spawn(
        mut command: Command,
        dir: tempfile::TempDir,
        log_file: &'static str,
        what: &str,
    ) -> PeerProcess {
        let log = std::fs::File::create(dir.path().join(log_file)).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts: {e}"));
        PeerProcess {
            child,
            dir,
            log_file,
        }
    }

    /// The throwaway directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(self.log_file)).unwrap_or_default()
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
