//! The operator API's listeners: the Unix socket (owner-only) and TCP with TLS. Each accepted
//! connection is served by [`server::connection`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span, warn};

use super::server::{ApiState, connection};

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

/// Serve the Unix socket until cancelled.
#[cfg(unix)]
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    state: Arc<ApiState>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (s, _) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue } },
        };
        let state = state.clone();
        let cancel = cancel.clone();
        tracker.spawn(connection(s, state, cancel).instrument(info_span!("api", transport = "unix")));
    }
    let _ = std::fs::remove_file(&path);
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

/// Serve TLS over TCP until cancelled.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<ApiState>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (s, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue } },
        };
        let (state, cancel, acceptor) = (state.clone(), cancel.clone(), acceptor.clone());
        tracker.spawn(
            async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(s)).await {
                    Ok(Ok(tls)) => connection(tls, state, cancel).await,
                    _ => warn!("TLS handshake failed"),
                }
            }
            .instrument(info_span!("api", transport = "tls", %peer)),
        );
    }
}
