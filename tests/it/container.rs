//! The mailet container from the outside: `mailetd check`, `replay`, `repo` and `serve` run
//! as a user runs them, on the sample configurations of `tests/conf/` and the fixtures of
//! `fixtures/container/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::support::{self, eventually, write_files};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `mailetd ARGS` in the repository root with a clean environment for our variables.
fn mailetd(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailetd"))
        .args(args)
        .current_dir(root())
        .env_remove("MAILETD_DATA_DIR")
        .env("MAILETD_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("mailetd runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The files of a repository directory, sorted by name.
fn repository_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether a repository holds one whole mail: its JSON is written last (renamed from
/// `.json.part`), so two entries may still be the message and the part.
fn stored(dir: &Path) -> bool {
    repository_files(dir)
        .iter()
        .any(|name| name.ends_with(".json"))
}

/// Reads the one mail stored in a repository: (envelope JSON, message).
fn only_mail(dir: &Path) -> (serde_json::Value, Vec<u8>) {
    let files = repository_files(dir);
    assert_eq!(
        files.len(),
        2,
        "one mail (.eml + .json) in {}: {files:?}",
        dir.display()
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(&files[1])).unwrap()).unwrap();
    (json, std::fs::read(dir.join(&files[0])).unwrap())
}

#[test]
fn check_prints_the_processor_graph_of_the_distributed_shape() {
    let out = mailetd(&["--conf", "tests/conf/distributed", "check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "domains: example.org, example.net (default example.org)",
        "postmaster: admin@example.org",
        "spooler: 20 threads, errorRepository memory://var/mail/error/",
        "processor transport:\n  matcher relay-allowed = Or(match=\"SMTPAuthSuccessful\", match=\"SMTPIsAuthNetwork\", match=\"RemoteAddrInNetwork=10.0.0.0/8\")\n  1. match=\"All\" RemoveMimeHeader\n     onMailetException: ignore\n",
        "  5. match=\"relay-allowed\" ToProcessor -> relay\n  6. match=\"All\" ToProcessor -> relay-denied\n",
        "processor error:\n  1. match=\"All\" MetricsMailet\n  2. match=\"All\" ToRepository\n     onMailetException: propagate (retry later)\n",
        "  openpaas.admin.password = (hidden)\n",
        "  dav.admin.secret.token = (hidden)\n",
        "  openpaas.api.uri = http://127.0.0.1:8080/api\n",
        "warning: errorRepository memory://var/mail/error/: mailetd has no such store",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        text.contains("  rabbitmq.uri = amqp://james:(hidden)@127.0.0.1:5672\n"),
        "{text}"
    );
    for secret in ["s3cr3t-admin-pass", "hunter2", "rabbit-pass"] {
        assert!(!text.contains(secret), "{secret} in:\n{text}");
    }
    assert!(text.ends_with("OK\n"));
}

#[test]
fn check_accepts_the_default_conf_and_warns_about_the_missing_bcc_strip() {
    let out = mailetd(&["--conf", "conf", "check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("warning:"), "{}", stdout(&out));

    let out = mailetd(&["--conf", "tests/conf/minimal", "check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(
        "warning: tests/conf/minimal/mailetcontainer.xml:9:5: processor transport has no <mailet match=\"All\" class=\"RemoveMimeHeader\"><name>bcc</name></mailet>: James refuses to start without it; mailetd continues, but Bcc headers reach the next mailets\n"
    ));
}

/// A conf dir holding only `mailetcontainer.xml`; returns (temp dir, conf path as text).
fn conf_with(xml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("mailetcontainer.xml", xml.to_string())]);
    let path = dir.path().to_string_lossy().into_owned();
    (dir, path)
}

fn check_error(xml: &str, env: &[(&str, &str)]) -> (String, String) {
    let (_dir, conf) = conf_with(xml);
    let out = mailetd(&["--conf", &conf, "check"], env);
    assert!(!out.status.success(), "check accepted:\n{}", stdout(&out));
    assert!(stdout(&out).is_empty());
    (stderr(&out).trim_end().to_string(), conf)
}

#[test]
fn check_reports_a_missing_root_processor() {
    let (err, conf) = check_error(
        "<mailetcontainer>\n  <processors>\n    <processor state=\"error\"><mailet class=\"Null\"/></processor>\n  </processors>\n</mailetcontainer>\n",
        &[],
    );
    assert_eq!(
        err,
        format!(
            "mailetd: {conf}/mailetcontainer.xml:1:1: no <processor state=\"root\">: the processors root and error are required (found: error)"
        )
    );
}

#[test]
fn check_reports_an_unknown_class_with_suggestions() {
    let (err, conf) = check_error(
        "<mailetcontainer><processors>\n<processor state=\"root\">\n  <mailet match=\"All\" class=\"ToProccessor\"><processor>error</processor></mailet>\n</processor>\n<processor state=\"error\"><mailet class=\"Null\"/></processor>\n</processors></mailetcontainer>\n",
        &[],
    );
    assert_eq!(
        err,
        format!(
            "mailetd: {conf}/mailetcontainer.xml:3:3: unknown mailet class \"ToProccessor\"; did you mean ToProcessor?"
        )
    );
    let (err, conf) = check_error(
        "<mailetcontainer><processors>\n<processor state=\"root\">\n  <mailet match=\"org.apache.james.transport.matchers.RecipientIsLocl\" class=\"Null\"/>\n</processor>\n<processor state=\"error\"><mailet class=\"Null\"/></processor>\n</processors></mailetcontainer>\n",
        &[],
    );
    assert_eq!(
        err,
        format!(
            "mailetd: {conf}/mailetcontainer.xml:3:11: unknown matcher \"org.apache.james.transport.matchers.RecipientIsLocl\"; did you mean RecipientIsLocal, RecipientIs?"
        )
    );
}

#[test]
fn check_reports_a_dangling_to_processor() {
    let (err, conf) = check_error(
        "<mailetcontainer><processors>\n<processor state=\"root\">\n  <mailet match=\"All\" class=\"ToProcessor\">\n    <processor>transprot</processor>\n  </mailet>\n</processor>\n<processor state=\"transport\"><mailet class=\"Null\"/></processor>\n<processor state=\"error\"><mailet class=\"Null\"/></processor>\n</processors></mailetcontainer>\n",
        &[],
    );
    assert_eq!(
        err,
        format!(
            "mailetd: {conf}/mailetcontainer.xml:4:5: ToProcessor in processor root sends mail to processor \"transprot\", which does not exist (processors: root, transport, error); did you mean transport?"
        )
    );
}

#[test]
fn check_reports_an_unset_environment_variable() {
    let (err, conf) = check_error(
        "<mailetcontainer><processors>\n<processor state=\"root\">\n  <mailet match=\"All\" class=\"ToRepository\">\n    <repositoryPath>file://${env:MAILETD_IT_UNSET_REPO}/x</repositoryPath>\n  </mailet>\n</processor>\n<processor state=\"error\"><mailet class=\"Null\"/></processor>\n</processors></mailetcontainer>\n",
        &[],
    );
    assert_eq!(
        err,
        format!(
            "mailetd: {conf}/mailetcontainer.xml:4:28: environment variable MAILETD_IT_UNSET_REPO is not set and ${{env:MAILETD_IT_UNSET_REPO}} has no default (write ${{env:MAILETD_IT_UNSET_REPO:-default}} to give one)"
        )
    );
}

const LOCAL_AND_REMOTE_TRACE: &str = "mail replay-1 (fixtures/container/local-and-remote.eml): from alice@remote.test to bob@example.org, eve@remote.test
  [root] replay-1 match=\"All\" PostmasterAlias recipients: bob@example.org, eve@remote.test
  [root] replay-1 match=\"All\" org.apache.james.transport.mailets.ToProcessor recipients: bob@example.org, eve@remote.test
      state -> transport
  [transport] replay-1 match=\"All\" RemoveMimeHeader recipients: bob@example.org, eve@remote.test
      message changed: 293 -> 268 bytes
  [transport] replay-1 match=\"All\" SetMailAttribute recipients: bob@example.org, eve@remote.test
      attribute org.example.transport = seen
  [transport] replay-1-!1 match=\"RecipientIsLocal\" ToProcessor recipients: bob@example.org
      state -> local-delivery
  [local-delivery] replay-1-!1 match=\"All\" AddHeader recipients: bob@example.org
      message changed: 268 -> 288 bytes
  [local-delivery] replay-1-!1 match=\"All\" ToRepository recipients: bob@example.org
      state -> ghost
  [transport] replay-1 match=\"All\" ToProcessor recipients: eve@remote.test
      state -> relay-denied
  [relay-denied] replay-1 match=\"All\" MetricsMailet recipients: eve@remote.test
  [relay-denied] replay-1 match=\"All\" ToRepository recipients: eve@remote.test
      state -> ghost
  final: replay-1-!1 ghost in local-delivery
  final: replay-1 ghost in relay-denied
";

#[test]
fn replay_dry_run_traces_the_split_and_stores_nothing() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_string_lossy().into_owned();
    let out = mailetd(
        &[
            "--conf",
            "tests/conf/distributed",
            "replay",
            "--dry-run",
            "fixtures/container/local-and-remote.eml",
            "fixtures/container/to-postmaster.eml",
        ],
        &[("MAILETD_DATA_DIR", &data_dir)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(LOCAL_AND_REMOTE_TRACE), "{text}");
    assert!(text[LOCAL_AND_REMOTE_TRACE.len()..].starts_with(
        "mail replay-2 (fixtures/container/to-postmaster.eml): from mailer-daemon@remote.test to postmaster@example.org\n  [root] replay-2 match=\"All\" PostmasterAlias recipients: admin@example.org\n"
    ), "{text}");
    assert!(repository_files(&data.path().join("mail/inbox")).is_empty());
}

#[test]
fn replay_stores_in_repositories_and_repo_reprocesses_through_serve() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_string_lossy().into_owned();
    let env = [("MAILETD_DATA_DIR", data_dir.as_str())];
    let out = mailetd(
        &[
            "--conf",
            "tests/conf/distributed",
            "replay",
            "--from",
            "alice@remote.test",
            "--to",
            "bob@example.org",
            "--to",
            "eve@remote.test",
            "fixtures/container/local-and-remote.eml",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // bob's copy: Bcc removed, X-Delivered added, body intact, envelope and attributes kept
    let (json, message) = only_mail(&data.path().join("mail/inbox"));
    let message = String::from_utf8(message).unwrap();
    assert!(!message.contains("Bcc:"), "{message}");
    assert!(
        message.contains("\r\nX-Delivered: local\r\n\r\nLunch at noon?\r\n"),
        "{message}"
    );
    assert_eq!(json["recipients"][0]["local"], "bob");
    assert_eq!(json["name"], "replay-1-!1");
    assert_eq!(json["attributes"]["org.example.transport"]["value"], "seen");

    // eve's copy was denied relay, with the notice as error message
    let denied = data.path().join("mail/relay-denied");
    let (json, _) = only_mail(&denied);
    assert_eq!(json["recipients"][0]["local"], "eve");
    assert_eq!(
        json["error_message"],
        "550 - Requested action not taken: relaying denied"
    );

    let out = mailetd(
        &[
            "--conf",
            "tests/conf/distributed",
            "repo",
            "list",
            "file://mail/relay-denied/",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = stdout(&out);
    assert!(listing.contains("state=relay-denied  from=alice@remote.test  to=eve@remote.test  error=550 - Requested action not taken: relaying denied\n"), "{listing}");
    assert!(listing.contains("\n1 mail(s) in "), "{listing}");

    let out = mailetd(
        &[
            "--conf",
            "tests/conf/distributed",
            "repo",
            "reprocess",
            "mail/relay-denied",
            "--processor",
            "relay",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("1 mail(s) reprocessed\n"),
        "{}",
        stdout(&out)
    );
    assert!(repository_files(&denied).is_empty());

    // the spooler of `serve` picks the mail up in processor relay
    let _server = Server::start("tests/conf/distributed", &env);
    let outgoing = data.path().join("mail/outgoing");
    eventually(
        "the reprocessed mail is relayed",
        Duration::from_secs(30),
        || stored(&outgoing).then_some(()),
    );
    let (json, _) = only_mail(&outgoing);
    assert_eq!(json["recipients"][0]["local"], "eve");
}

/// `mailetd serve` without the harness (which waits for an SMTP port); killed on drop.
struct Server(Child);

impl Server {
    fn start(conf: &str, env: &[(&str, &str)]) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_mailetd"))
            .args(["--conf", conf, "serve"])
            .current_dir(root())
            .envs(env.iter().copied())
            .env("MAILETD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mailetd serve starts");
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn mail_sent_over_smtp_lands_in_a_repository() {
    let xml = r#"<mailetcontainer>
  <processors>
    <processor state="root">
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor state="transport">
      <mailet match="All" class="RemoveMimeHeader"><name>bcc</name></mailet>
      <mailet match="All" class="ToRepository"><repositoryPath>file://mail/received/</repositoryPath></mailet>
    </processor>
    <processor state="error"><mailet class="Null"/></processor>
  </processors>
</mailetcontainer>
"#;
    let server = support::mailetd::Mailetd::start(&[("mailetcontainer.xml", xml.to_string())]);
    support::smtp::send(
        server.smtp_port,
        "alice@remote.test",
        &["bob@localhost"],
        "From: alice@remote.test\r\nBcc: x@y.test\r\nSubject: hi\r\n\r\nhello\r\n",
    );
    let received = server.data_dir().join("mail/received");
    eventually(
        "the mail is in the repository",
        Duration::from_secs(30),
        || stored(&received).then_some(()),
    );
    let (json, message) = only_mail(&received);
    assert_eq!(json["sender"]["local"], "alice");
    assert_eq!(json["recipients"][0]["local"], "bob");
    let message = String::from_utf8(message).unwrap();
    assert!(!message.contains("Bcc:"), "{message}");
    assert!(message.ends_with("\r\n\r\nhello\r\n"), "{message}");
}
