//! The operator API's listeners: the Unix socket (owner-only) and TCP with TLS. Both accept
//! through [`admission::serve`], each under its own caps (`[operator] max_connections` and
//! `max_connections_per_peer`), so a flood on the TLS port cannot lock out the local console;
//! each admitted connection is served by [`connection_from`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span, warn};

use super::server::{ApiState, connection_from};
use crate::admission::{self, Admission};

/// A TLS handshake must end within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bind the Unix socket with owner-only permissions: bound under a temporary name, restricted,
/// then renamed into place, so no client can ever connect to a socket with wider permissions.
#[cfg(unix)]
pub fn bind_unix(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let l = std::os::unix::net::UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    l.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(l)
}

/// Serve the Unix socket until cancelled, under `admission`'s caps (per peer: per user id);
/// then remove the socket file.
#[cfg(unix)]
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    state: Arc<ApiState>,
    admission: Admission,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let c = cancel.clone();
    admission::serve(listener, admission, cancel, tracker, move |stream, peer, admitted| {
        let (state, cancel) = (state.clone(), c.clone());
        async move {
            let _admitted = admitted;
            connection_from(stream, peer_name("local", peer), state, cancel).await;
        }
        .instrument(info_span!("api", transport = "unix", %peer))
    })
    .await;
    let _ = std::fs::remove_file(&path);
}

/// The peer as the API knows it (for login throttling and the audit log): `local:uid 1000`,
/// `tls:203.0.113.5`. A TCP peer is its address without the port, so reconnecting does not make
/// a new peer.
fn peer_name(transport: &str, peer: admission::Peer) -> String {
    format!("{transport}:{peer}")
}

/// A TLS acceptor for the operator API with the certificate chain and key in these PEM files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    tls_acceptor_with(Arc::new(ServerCert::load(cert, key)?))
}

/// A TLS acceptor that presents whatever `cert` holds at each handshake.
pub fn tls_acceptor_with(cert: Arc<ServerCert>) -> Result<tokio_rustls::TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// The operator API's certificate chain and key, read from their PEM files, and read again on
/// `systemctl reload` (a renewed certificate without a restart): each handshake presents the
/// one held when it starts; connections already open keep theirs.
#[derive(Debug)]
pub struct ServerCert {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl ServerCert {
    /// Read the chain and key; the key must match the first certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerCert, String> {
        Ok(ServerCert {
            current: std::sync::RwLock::new(Arc::new(certified_key(cert, key)?)),
        })
    }

    /// Read the files again. A pair that does not load leaves the one in use; returns whether
    /// another certificate is now presented.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<bool, String> {
        let next = certified_key(cert, key)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.cert == next.cert {
            return Ok(false);
        }
        *current = Arc::new(next);
        Ok(true)
    }

    /// SHA-256 of the presented end-entity certificate, hex (what `openssl x509 -fingerprint
    /// -sha256` shows, without the colons).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current
            .cert
            .first()
            .map(|c| hex::encode(sha2::Sha256::digest(c.as_ref())))
            .unwrap_or_default()
    }
}

impl rustls::server::ResolvesServerCert for ServerCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<rustls::sign::CertifiedKey, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    rustls::sign::CertifiedKey::from_der(certs, der, &rustls::crypto::ring::default_provider())
        .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))
}

/// Serve TLS over TCP until cancelled, under `admission`'s caps (per peer: per IP address). A
/// connection holds its place from the start of the handshake, which must end within
/// [`HANDSHAKE_TIMEOUT`].
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<ApiState>,
    admission: Admission,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let c = cancel.clone();
    admission::serve(listener, admission, cancel, tracker, move |stream, peer, admitted| {
        let (state, cancel, acceptor) = (state.clone(), c.clone(), acceptor.clone());
        async move {
            let _admitted = admitted;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => connection_from(tls, format!("tls:{}", peer.ip()), state, cancel).await,
                _ => warn!("TLS handshake failed"),
            }
        }
        .instrument(info_span!("api", transport = "tls", %peer))
    })
    .await;
}
