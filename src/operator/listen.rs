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

/// Load a TLS server configuration from PEM files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
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
