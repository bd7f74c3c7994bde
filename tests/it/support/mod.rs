//! Shared test harness: free ports, temp dirs, a running `mailetd serve`, waiting helpers.

#![allow(dead_code)]

pub mod caldav;
pub mod davhttp;
pub mod esn_double;
pub mod graph_double;
pub mod mailetd;
pub mod peer;
pub mod rabbitmq;
pub mod radicale;
pub mod sabredav;
pub mod smtp;
pub mod smtp_listener;
pub mod sogo;
pub mod xandikos;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Whether a peer a test needs is installed. Outside CI a missing one skips the test with a
/// note; under CI (the `CI` environment variable set to anything but `false` or `0`, as
/// scripts/test does after installing every peer) it fails the test, so a broken install
/// cannot turn a whole family of tests into silent passes.
pub fn peer_installed(installed: bool, missing: &str) -> bool {
    if installed {
        return true;
    }
    let ci = std::env::var("CI").unwrap_or_default();
    if is_ci(&ci) {
        panic!("CI={ci} but {missing}: install it (scripts/test does) instead of skipping");
    }
    eprintln!("SKIPPED: {missing}");
    false
}

/// Whether a `CI` variable's value means "running under CI" (GitHub and GitLab set `true`).
pub fn is_ci(value: &str) -> bool {
    !matches!(value.trim(), "" | "false" | "0")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `127.0.0.1:port` accepts connections, or panics after `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `files` (name → content) into `dir`, creating parent directories.
pub fn write_files(dir: &Path, files: &[(&str, String)]) {
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// Runs `python3 -c script args…` and returns stdout; panics with stderr on failure.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The CI values CI providers and scripts/test use turn a missing peer into a failure; an
/// unset, empty, `false` or `0` one keeps the skip for a developer's machine.
#[test]
fn a_missing_peer_fails_only_under_ci() {
    for ci in ["true", "1", "yes", "TRUE"] {
        assert!(is_ci(ci), "CI={ci}");
    }
    for not_ci in ["", " ", "false", "0"] {
        assert!(!is_ci(not_ci), "CI={not_ci:?}");
    }
    assert!(peer_installed(true, "nothing is missing"));
}

/// Serves the HTTP double `handle` (called with a clone of `state` per request) on a free
/// loopback port from a thread of its own, for the rest of the test process; its port.
pub fn serve_double<S, F, Fut>(state: S, handle: F) -> u16
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, axum::http::Request<axum::body::Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = axum::response::Response> + Send + 'static,
{
    serve_double_with(state, handle, |listener, app| async move {
        axum::serve(listener, app).await.unwrap();
    })
}

/// [`serve_double`] over HTTPS with a fresh self-signed certificate (rcgen) for 127.0.0.1;
/// its port. Every failed TLS handshake (a client that verifies certificates) is counted
/// in `handshakes_failed`.
pub fn serve_double_tls<S, F, Fut>(
    state: S,
    handle: F,
    handshakes_failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> u16
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, axum::http::Request<axum::body::Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = axum::response::Response> + Send + 'static,
{
    use tokio_rustls::rustls;
    let pair =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(pair.signing_key.serialize_der().into());
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pair.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    serve_double_with(state, handle, |listener, app| async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, app, failed) =
                (acceptor.clone(), app.clone(), handshakes_failed.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(app),
                    )
                    .await;
            });
        }
    })
}

/// The double `handle` as an axum app, served by `serve` on a free loopback listener, on a
/// current-thread runtime in a thread of its own; its port.
fn serve_double_with<S, F, Fut, Srv, SrvFut>(state: S, handle: F, serve: Srv) -> u16
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, axum::http::Request<axum::body::Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = axum::response::Response> + Send + 'static,
    Srv: FnOnce(tokio::net::TcpListener, axum::Router) -> SrvFut + Send + 'static,
    SrvFut: std::future::Future<Output = ()>,
{
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let port = std_listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let app =
                axum::Router::new().fallback(move |req: axum::http::Request<axum::body::Body>| {
                    handle(state.clone(), req)
                });
            serve(listener, app).await;
        });
    });
    port
}
