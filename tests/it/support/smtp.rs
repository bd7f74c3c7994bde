//! The tests' one SMTP client: Python's smtplib (a real, widely used client) run over one
//! session described by a [`Session`] builder, answering every step's reply code.
//!
//! Shapes: one mail ([`send`], [`send_code`]), many mails on one connection, a HELO name,
//! implicit TLS (`SMTP_SSL`), MAIL parameters (`SMTPUTF8`, `BODY=8BITMIME`), single commands
//! (`RSET`, `VRFY`, `RCPT TO:<postmaster>`), a bare `DATA`, and a DATA of any size streamed
//! from a generator. What no client library does on purpose (pipelined batches, garbage,
//! injection, a connection held open mid-command) stays raw TCP in the tests themselves.
//!
//! [`load`] is the same client as a load generator: concurrent sessions in the background
//! (while a test kills or restarts things), one result per mail as it comes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;

/// Runs one session from a JSON spec on stdin; prints the replies as JSON.
const CLIENT: &str = r#"
import base64, json, smtplib, ssl, sys
spec = json.load(sys.stdin)
out = {"ehlo": None, "features": {}, "replies": [], "quit": None}
def text(t):
    return t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t)
def reply(code, t="", refused=None):
    out["replies"].append({"code": code, "text": text(t), "refused": refused or {}})
s, lost = None, None
try:
    if spec["tls"]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = smtplib.SMTP_SSL("127.0.0.1", spec["port"], local_hostname=spec["helo"], timeout=spec["timeout"], context=ctx)
    else:
        s = smtplib.SMTP("127.0.0.1", spec["port"], local_hostname=spec["helo"], timeout=spec["timeout"])
    code, t = s.ehlo()
    out["ehlo"] = {"code": code, "text": text(t), "refused": {}}
    out["features"] = s.esmtp_features
except smtplib.SMTPResponseException as e:
    s, lost = None, (e.smtp_code, e.smtp_error)
except (smtplib.SMTPServerDisconnected, OSError) as e:
    s, lost = None, (0, repr(e))
if lost:
    out["ehlo"] = {"code": lost[0], "text": text(lost[1]), "refused": {}}
for step in spec["steps"]:
    if s is None:
        reply(*lost)
        continue
    try:
        if "send" in step:
            m = step["send"]
            refused = s.sendmail(m["from"], m["rcpts"], base64.b64decode(m["message"]), mail_options=m["options"])
            reply(250, "", {r: c for r, (c, _) in refused.items()})
        elif "command" in step:
            reply(*s.docmd(step["command"]))
        elif "data" in step:
            reply(*s.data(base64.b64decode(step["data"])))
        elif "stream" in step:
            code, t = s.docmd("DATA")
            if code != 354:
                reply(code, t)
                continue
            line = b"x" * 998 + b"\r\n"
            chunk, sent = b"Subject: big\r\n\r\n" + line * 1000, 0
            while sent < step["stream"]:
                s.sock.sendall(chunk)
                sent += len(chunk)
                chunk = line * 1000
            s.sock.sendall(b".\r\n")
            reply(*s.getreply())
    except smtplib.SMTPRecipientsRefused as e:
        refused = {r: c for r, (c, _) in e.recipients.items()}
        first = next(iter(e.recipients.values()))
        reply(first[0], first[1], refused)
    except smtplib.SMTPResponseException as e:
        reply(e.smtp_code, e.smtp_error)
    except (smtplib.SMTPServerDisconnected, OSError) as e:
        s, lost = None, (0, repr(e))
        reply(*lost)
if s is not None:
    try:
        out["quit"] = s.quit()[0]
    except Exception:
        out["quit"] = 0
print(json.dumps(out))
"#;

/// One server reply.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Reply {
    /// The reply code; for a mail, 250 when it was accepted (maybe not for every
    /// recipient), else the code of the refusal; 0 when the connection was lost.
    pub code: u16,
    /// The reply text (empty for an accepted mail).
    pub text: String,
    /// Recipients refused, with their codes.
    pub refused: BTreeMap<String, u16>,
}

/// What a session saw.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Transcript {
    /// The EHLO reply (or the refused greeting, or code 0 when the connection failed).
    pub ehlo: Reply,
    /// The EHLO keywords (lowercase) with their parameters.
    pub features: BTreeMap<String, String>,
    /// One reply per step, in order.
    pub replies: Vec<Reply>,
    /// The QUIT reply code (0 when the server had gone; absent without a connection).
    pub quit: Option<u16>,
}

impl Transcript {
    /// Panics unless every step got 250 (every mail accepted for every recipient).
    pub fn assert_accepted(&self) {
        assert!(
            self.replies
                .iter()
                .all(|r| r.code == 250 && r.refused.is_empty()),
            "not every step got 250: {self:?}"
        );
    }

    /// The reply codes of the steps.
    pub fn codes(&self) -> Vec<u16> {
        self.replies.iter().map(|r| r.code).collect()
    }
}

/// One SMTP session to `127.0.0.1:port`, built step by step, run by [`Session::run`].
pub struct Session {
    port: u16,
    helo: Option<String>,
    tls: bool,
    timeout_secs: u32,
    steps: Vec<serde_json::Value>,
}

/// A session to the listener on `port`.
pub fn session(port: u16) -> Session {
    Session {
        port,
        helo: None,
        tls: false,
        timeout_secs: 30,
        steps: Vec::new(),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Session {
    /// Says `name` in EHLO (smtplib's default is the host's FQDN).
    pub fn helo(mut self, name: &str) -> Session {
        self.helo = Some(name.to_string());
        self
    }

    /// Implicit TLS from the first byte (smtplib's `SMTP_SSL`), certificate not verified.
    pub fn tls(mut self) -> Session {
        self.tls = true;
        self
    }

    /// The socket timeout, in seconds (30 by default).
    pub fn timeout(mut self, secs: u32) -> Session {
        self.timeout_secs = secs;
        self
    }

    /// A whole transaction (MAIL, RCPT…, DATA) as smtplib's `sendmail` runs it.
    pub fn mail(self, from: &str, rcpts: &[&str], message: impl AsRef<[u8]>) -> Session {
        self.mail_with(from, rcpts, message, &[])
    }

    /// [`Session::mail`] with MAIL FROM parameters (`SMTPUTF8`, `BODY=8BITMIME`…).
    pub fn mail_with(
        mut self,
        from: &str,
        rcpts: &[&str],
        message: impl AsRef<[u8]>,
        options: &[&str],
    ) -> Session {
        self.steps.push(serde_json::json!({"send": {
            "from": from, "rcpts": rcpts, "message": b64(message.as_ref()), "options": options,
        }}));
        self
    }

    /// A transaction as three plain steps, `MAIL FROM:<from>` (no SIZE or other parameter,
    /// unlike [`Session::mail`]), one `RCPT TO` per recipient, then [`Session::data`]: the
    /// DATA reply is the last one.
    pub fn transaction(mut self, from: &str, rcpts: &[&str], message: impl AsRef<[u8]>) -> Session {
        self = self.command(&format!("MAIL FROM:<{from}>"));
        for rcpt in rcpts {
            self = self.command(&format!("RCPT TO:<{rcpt}>"));
        }
        self.data(message)
    }

    /// One command line as is (`RSET`, `VRFY bob@x`, `RCPT TO:<postmaster>`…).
    pub fn command(mut self, line: &str) -> Session {
        self.steps.push(serde_json::json!({ "command": line }));
        self
    }

    /// `DATA` then `message` (dot-stuffed by smtplib), after MAIL and RCPT commands.
    pub fn data(mut self, message: impl AsRef<[u8]>) -> Session {
        self.steps
            .push(serde_json::json!({ "data": b64(message.as_ref()) }));
        self
    }

    /// `DATA` then about `bytes` bytes of 1000-byte lines streamed from a generator (nothing
    /// in memory or on disk), after MAIL and RCPT commands.
    pub fn streamed_data(mut self, bytes: u64) -> Session {
        self.steps.push(serde_json::json!({ "stream": bytes }));
        self
    }

    /// Runs the session (then QUIT); panics only when the client itself fails.
    pub fn run(self) -> Transcript {
        let spec = serde_json::json!({
            "port": self.port, "helo": self.helo, "tls": self.tls,
            "timeout": self.timeout_secs, "steps": self.steps,
        });
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(CLIENT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut stdin = child.stdin.take().unwrap();
        let input = spec.to_string();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().expect("spec written to the client");
        assert!(
            out.status.success(),
            "the smtplib client failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the client's JSON transcript")
    }
}

/// Sends one mail on a connection of its own; panics unless every recipient got it.
pub fn send(port: u16, from: &str, rcpts: &[&str], message: impl AsRef<[u8]>) {
    session(port)
        .mail(from, rcpts, message)
        .run()
        .assert_accepted();
}

/// Sends one mail on a connection of its own; the reply code (250 when accepted).
pub fn send_code(port: u16, from: &str, rcpts: &[&str], message: impl AsRef<[u8]>) -> u16 {
    session(port).mail(from, rcpts, message).run().replies[0].code
}

/// Sends the file at `path` as is, on a connection of its own.
pub fn send_file(port: u16, from: &str, rcpts: &[&str], path: impl AsRef<std::path::Path>) {
    let path = path.as_ref();
    let message = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    send(port, from, rcpts, message);
}

/// Runs a load from a JSON spec on stdin; prints `mail code reason` per attempt.
const LOAD: &str = r#"
import json, os, smtplib, sys, threading, time
spec = json.load(sys.stdin)
lock = threading.Lock()
sessions, start, count = spec["sessions"], spec["start"], spec["count"]
deadline = time.time() + spec["retry_secs"]
def mail(i):
    rcpt = spec["rcpts"][i % len(spec["rcpts"])]
    fill = lambda t: t.replace("{i}", str(i)).replace("{rcpt}", rcpt)
    return fill(spec["from"]), rcpt, fill(spec["message"]).encode()
def more(i):
    if count:
        return i < start + count
    return not os.path.exists(spec["stop"])
def close(conn):
    try:
        conn.close()
    except Exception:
        pass
def session(k):
    port = spec["ports"][k % len(spec["ports"])]
    conn, i = None, start + k
    while more(i):
        sender, rcpt, msg = mail(i)
        try:
            if conn is None:
                conn = smtplib.SMTP("127.0.0.1", port, timeout=spec["timeout"])
            conn.sendmail(sender, [rcpt], msg)
            code, reason = 250, ""
        except smtplib.SMTPRecipientsRefused as e:
            code, reason = list(e.recipients.values())[0][0], repr(e)
        except smtplib.SMTPResponseException as e:
            code, reason = e.smtp_code, repr(e)
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            close(conn)
            conn, code, reason = None, 0, repr(e)
        with lock:
            print(i, code, reason.replace("\n", " "), flush=True)
        if code == 250:
            i += sessions
            if spec["pause"]:
                time.sleep(spec["pause"])
            continue
        if spec["on_failure"] == "end":
            break
        if spec["on_failure"] == "retry":
            if conn is not None:
                close(conn)
                conn = None
            if time.time() > deadline:
                return
        else:
            i += sessions
            if conn is not None:
                try:
                    conn.rset()
                except Exception:
                    close(conn)
                    conn = None
        time.sleep(0.2)  # as an MTA would, rather than hammer a server that refuses
    if conn is not None:
        try:
            conn.quit()
        except Exception:
            pass
threads = [threading.Thread(target=session, args=(k,)) for k in range(sessions)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"#;

/// What a load session does after a mail that did not get 250 (or lost its connection).
#[derive(Clone, Copy, Debug)]
pub enum OnFailure {
    /// Go on with the next mail (after RSET, or on a new connection), 0.2 s later.
    NextMail,
    /// Send the same mail again on a new connection 0.2 s later, as an MTA would, until
    /// `secs` seconds after the start; then the session ends.
    Retry {
        /// How long after the start retries stop.
        secs: u64,
    },
    /// The session ends.
    EndSession,
}

/// A load generator: `sessions` concurrent smtplib sessions spread over `ports`; session `k`
/// sends mails `start + k`, `start + k + sessions`, …, each from [`Load::from`] to one
/// recipient (`rcpts[i % rcpts.len()]`), `{i}` and `{rcpt}` replaced in the sender and the
/// message. Built with [`load`], run in the background by [`Load::start`].
#[derive(Clone, Debug)]
pub struct Load {
    ports: Vec<u16>,
    sessions: usize,
    start: usize,
    count: usize,
    pause_secs: f64,
    timeout_secs: u32,
    from: String,
    rcpts: Vec<String>,
    message: String,
    on_failure: OnFailure,
}

/// A load on the listeners at `ports`: one session, no mail yet (see [`Load`]).
pub fn load(ports: &[u16]) -> Load {
    Load {
        ports: ports.to_vec(),
        sessions: 1,
        start: 0,
        count: 0,
        pause_secs: 0.0,
        timeout_secs: 30,
        from: String::new(),
        rcpts: Vec::new(),
        message: String::new(),
        on_failure: OnFailure::NextMail,
    }
}

impl Load {
    /// How many concurrent sessions.
    pub fn sessions(mut self, n: usize) -> Load {
        self.sessions = n;
        self
    }

    /// Mails `start..start + count`; `count` 0 sends until [`RunningLoad::stop`].
    pub fn mails(mut self, start: usize, count: usize) -> Load {
        self.start = start;
        self.count = count;
        self
    }

    /// Seconds a session waits after each accepted mail.
    pub fn pause(mut self, secs: f64) -> Load {
        self.pause_secs = secs;
        self
    }

    /// The socket timeout, in seconds (30 by default).
    pub fn timeout(mut self, secs: u32) -> Load {
        self.timeout_secs = secs;
        self
    }

    /// Mail `i`: from `from`, to `rcpts[i % rcpts.len()]`, `message` (`{i}` and `{rcpt}`
    /// replaced in `from` and `message`).
    pub fn mail(mut self, from: &str, rcpts: &[String], message: &str) -> Load {
        self.from = from.to_string();
        self.rcpts = rcpts.to_vec();
        self.message = message.to_string();
        self
    }

    /// What a session does after a failed mail ([`OnFailure::NextMail`] by default).
    pub fn on_failure(mut self, on_failure: OnFailure) -> Load {
        self.on_failure = on_failure;
        self
    }

    /// Starts the load in the background.
    pub fn start(self) -> RunningLoad {
        assert!(!self.rcpts.is_empty(), "a load needs recipients");
        let dir = tempfile::tempdir().unwrap();
        let stop = dir.path().join("stop");
        let (on_failure, retry_secs) = match self.on_failure {
            OnFailure::NextMail => ("next", 0),
            OnFailure::Retry { secs } => ("retry", secs),
            OnFailure::EndSession => ("end", 0),
        };
        let spec = serde_json::json!({
            "ports": self.ports, "sessions": self.sessions, "start": self.start,
            "count": self.count, "pause": self.pause_secs, "timeout": self.timeout_secs,
            "from": self.from, "rcpts": self.rcpts, "message": self.message,
            "on_failure": on_failure, "retry_secs": retry_secs, "stop": stop,
        });
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(LOAD)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(spec.to_string().as_bytes()).unwrap();
        drop(stdin);
        let results = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = results.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut fields = line.splitn(3, ' ');
                let (Some(mail), Some(code)) = (fields.next(), fields.next()) else {
                    continue;
                };
                sink.lock().unwrap().push(LoadResult {
                    mail: mail.parse().unwrap(),
                    code: code.parse().unwrap_or(0),
                    reason: fields.next().unwrap_or("").to_string(),
                });
            }
        });
        RunningLoad {
            child,
            results,
            reader: Some(reader),
            stop,
            _dir: dir,
        }
    }
}

/// One attempt at one mail of a load.
#[derive(Clone, Debug)]
pub struct LoadResult {
    /// The mail's index `i`.
    pub mail: usize,
    /// 250 when accepted, else the refusal's code; 0 when the connection was lost.
    pub code: u16,
    /// What went wrong (empty when accepted).
    pub reason: String,
}

/// A load running in the background; its results accumulate as they come.
pub struct RunningLoad {
    child: Child,
    results: Arc<Mutex<Vec<LoadResult>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stop: PathBuf,
    _dir: tempfile::TempDir,
}

impl RunningLoad {
    /// The results so far.
    pub fn results(&self) -> Vec<LoadResult> {
        self.results.lock().unwrap().clone()
    }

    /// Results so far with this code.
    pub fn count(&self, code: u16) -> usize {
        self.results
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.code == code)
            .count()
    }

    /// Asks an open-ended load to stop, and waits for it.
    pub fn stop(self) -> Vec<LoadResult> {
        std::fs::write(&self.stop, "").unwrap();
        self.wait()
    }

    /// Waits for the load to end (every mail sent, or every session ended).
    pub fn wait(mut self) -> Vec<LoadResult> {
        assert!(
            self.child.wait().unwrap().success(),
            "the load client failed"
        );
        self.reader.take().unwrap().join().unwrap();
        self.results.lock().unwrap().clone()
    }
}

impl Drop for RunningLoad {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
