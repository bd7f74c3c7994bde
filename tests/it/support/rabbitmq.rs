//! A real RabbitMQ (Debian's `rabbitmq-server`) started as a plain process on free loopback
//! ports, with its data and logs in a temp dir owned by the `rabbitmq` user (the server
//! drops to that user). A watchdog shell stops the node when the test process is gone, so
//! a shared broker (kept in a `OnceLock`, never dropped) does not outlive the test run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port, peer_installed, wait_for_port};

/// Where Debian installs the server.
const SERVER: &str = "/usr/sbin/rabbitmq-server";

/// A running broker.
pub struct RabbitMq {
    /// AMQP port.
    pub port: u16,
    /// Erlang node name, for `rabbitmqctl -n`.
    pub node: String,
    dir: tempfile::TempDir,
    dist_port: u16,
    watchdog: Option<Child>,
}

/// Whether rabbitmq-server is installed; when it is not, tests skip with a note, or fail
/// under CI (see [`peer_installed`]).
pub fn available() -> bool {
    peer_installed(
        Path::new(SERVER).exists(),
        "rabbitmq-server is not installed (apt-get install rabbitmq-server)",
    )
}

fn chown_rabbitmq(path: &Path) {
    let status = Command::new("chown")
        .arg("-R")
        .arg("rabbitmq")
        .arg(path)
        .status()
        .expect("chown runs");
    assert!(
        status.success(),
        "cannot chown {} to rabbitmq",
        path.display()
    );
}

impl RabbitMq {
    /// Starts a node and waits until it accepts AMQP connections.
    pub fn start() -> RabbitMq {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").unwrap();
        chown_rabbitmq(dir.path());
        let port = free_port();
        let mut rabbit = RabbitMq {
            port,
            node: format!("mailetd-test-{port}@localhost"),
            dir,
            dist_port: free_port(),
            watchdog: None,
        };
        rabbit.spawn();
        rabbit
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// (Re)starts the node on the same ports and data (durable queues survive).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("server.out"))
            .unwrap();
        // The watchdog runs the server and, once the test process exits, stops it.
        let script = format!(
            "rabbitmq-server & server=$!\n\
             while kill -0 {test_pid} 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 1; done\n\
             rabbitmqctl -n {node} stop >/dev/null 2>&1\n",
            test_pid = std::process::id(),
            node = self.node,
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("RABBITMQ_MNESIA_BASE", self.path("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.path("log"))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_NODENAME", &self.node)
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.path("enabled_plugins"),
            )
            .env("RABBITMQ_FEATURE_FLAGS_FILE", self.path("feature_flags"))
            // loopback only: the Erlang distribution and epmd too
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server starts");
        self.watchdog = Some(child);
        wait_for_port(self.port, Duration::from_secs(90));
        self.wait_for_amqp(Duration::from_secs(60));
    }

    /// Waits until an AMQP handshake succeeds: the node listens on its port a moment before
    /// it finishes booting, and aborts the connections that come in between.
    fn wait_for_amqp(&self, timeout: Duration) {
        let uri = self.uri();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        eventually("RabbitMQ accepts AMQP connections", timeout, || {
            rt.block_on(async {
                let conn = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
                    .await
                    .ok()?;
                let _ = conn.close(200, "ready".into()).await;
                Some(())
            })
        });
    }

    /// Publishes `body` to `queue` with mailetd's broker link (no Python AMQP client here).
    pub fn publish(&self, queue: &str, body: &str) {
        let settings = mailetd::config::settings::SpoolSettings {
            uri: mailetd::config::settings::Secret::new(self.uri()),
            queue: format!("{queue}.unused"),
            outbox_queue: queue.to_string(),
            ..Default::default()
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let link = mailetd::broker::Broker::new(&settings);
            link.publish(queue, body.as_bytes(), None).await.unwrap();
        });
    }

    /// The AMQP URI of the default (guest, loopback-only) user.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `rabbitmqctl -n NODE args…`; stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .output()
            .expect("rabbitmqctl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Messages in each queue whose name starts with `prefix` (ready + unacked).
    pub fn queue_depths(&self, prefix: &str) -> Vec<(String, u64)> {
        self.ctl(&[
            "list_queues",
            "--quiet",
            "--no-table-headers",
            "name",
            "messages",
        ])
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            let count = parts.next()?.parse().ok()?;
            name.starts_with(prefix).then(|| (name.to_string(), count))
        })
        .collect()
    }

    /// Stops the node (`rabbitmqctl stop`) and waits for its process to exit.
    pub fn stop(&mut self) {
        self.ctl(&["stop"]);
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.wait();
        }
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        if self.watchdog.is_some() {
            self.stop();
        }
    }
}
