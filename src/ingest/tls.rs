//! TLS for the listener: the rustls acceptor built from the PEM pair of `<tls>`, the
//! self-signed pair generated on demand, and the stream a session reads whether or not it
//! went through STARTTLS.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, bail};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

use crate::config::smtpserver::TlsSettings;

/// Builds the acceptor from the configured pair; when both files are missing and generation
/// was asked for, from a self-signed pair for `hello_name` in `generate_into` (created on
/// the first start, reused afterwards).
pub fn acceptor(tls: &TlsSettings, hello_name: &str) -> anyhow::Result<TlsAcceptor> {
    let (private_key, certificates) = key_pair(tls, hello_name)?;
    let tls = &TlsSettings {
        private_key,
        certificates,
        ..tls.clone()
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.certificates)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: <certificates> {}: {e}",
                tls.position,
                tls.certificates.display()
            )
        })?;
    if certs.is_empty() {
        bail!(
            "{}: <certificates> {} holds no PEM certificate",
            tls.position,
            tls.certificates.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&tls.private_key).map_err(|e| {
        anyhow::anyhow!(
            "{}: <privateKey> {}: {e}",
            tls.position,
            tls.private_key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "{}: the private key does not fit the certificate",
                tls.position
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The PEM files to load: the configured ones, or the generated ones of the same names in
/// `generate_into` (the configured pair may sit in a read-only `conf/`).
fn key_pair(tls: &TlsSettings, hello_name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let configured = (tls.private_key.clone(), tls.certificates.clone());
    let pair = match &tls.generate_into {
        Some(dir) if !configured.0.exists() && !configured.1.exists() => {
            let in_dir = |p: &Path| dir.join(p.file_name().unwrap_or(p.as_os_str()));
            let generated = (in_dir(&configured.0), in_dir(&configured.1));
            if !generated.0.exists() && !generated.1.exists() {
                generate(&generated.0, &generated.1, hello_name)?;
            }
            generated
        }
        _ => configured,
    };
    for (path, other) in [(&pair.0, &pair.1), (&pair.1, &pair.0)] {
        if !path.exists() && other.exists() {
            bail!(
                "{}: <tls>: {} does not exist (set generate_certificate = true in mailetd.toml or \
                 MAILETD_GENERATE_CERTIFICATE=true to create a self-signed pair)",
                tls.position,
                path.display()
            );
        }
    }
    if !pair.0.exists() {
        bail!(
            "{}: <tls>: {} and {} do not exist (set generate_certificate = true in mailetd.toml or \
             MAILETD_GENERATE_CERTIFICATE=true to create a self-signed pair in data_dir/tls)",
            tls.position,
            pair.0.display(),
            pair.1.display()
        );
    }
    Ok(pair)
}

/// Writes a self-signed certificate for `hello_name` and its key (mode 0600).
fn generate(key_path: &Path, cert_path: &Path, hello_name: &str) -> anyhow::Result<()> {
    let pair = rcgen::generate_simple_self_signed(vec![hello_name.to_string()])
        .context("generating a self-signed certificate")?;
    for path in [key_path, cert_path] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    write_private(key_path, pair.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, pair.cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    tracing::warn!(
        key = %key_path.display(),
        certificate = %cert_path.display(),
        "generated a self-signed TLS certificate for {hello_name}"
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A session's connection: plain TCP, or TLS after STARTTLS / on a socketTLS port.
pub enum SessionStream {
    /// Clear text.
    Plain(TcpStream),
    /// Under TLS.
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the TLS handshake owns the socket.
    Closed,
    /// An in-memory pipe: a session driven without sockets ([`super::session_in_memory`]).
    Memory(tokio::io::DuplexStream),
}

impl SessionStream {
    /// Whether the session is under TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, SessionStream::Tls(_))
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl AsyncRead for SessionStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SessionStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            SessionStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            SessionStream::Memory(s) => Pin::new(s).poll_read(cx, buf),
            SessionStream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for SessionStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SessionStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            SessionStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            SessionStream::Memory(s) => Pin::new(s).poll_write(cx, buf),
            SessionStream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SessionStream::Plain(s) => Pin::new(s).poll_flush(cx),
            SessionStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            SessionStream::Memory(s) => Pin::new(s).poll_flush(cx),
            SessionStream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SessionStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            SessionStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            SessionStream::Memory(s) => Pin::new(s).poll_shutdown(cx),
            SessionStream::Closed => Poll::Ready(Ok(())),
        }
    }
}
