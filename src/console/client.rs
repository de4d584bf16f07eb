//! The console's connection to the operator API: a Unix socket or TLS over TCP, JSON lines,
//! reconnecting with back-off when the daemon goes away. Requests and replies travel over
//! channels so the screen never waits on the network.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::operator::protocol::{Envelope, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LinesCodec};

/// Where the API is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A Unix socket.
    Unix(PathBuf),
    /// TLS over TCP.
    Tls {
        /// host:port.
        addr: String,
        /// Name in the server certificate.
        server_name: String,
        /// PEM file with the certificate(s) to trust.
        ca: PathBuf,
    },
}

/// What the connection task reports.
#[derive(Debug)]
pub enum NetEvent {
    /// Connected (again).
    Connected,
    /// Lost or failed (attempt number, reason).
    Down(u32, String),
    /// A message from the API.
    Message(ServerMessage),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(ep: &Endpoint) -> Result<Box<dyn Io>, String> {
    match ep {
        #[cfg(unix)]
        Endpoint::Unix(p) => tokio::net::UnixStream::connect(p)
            .await
            .map(|s| Box::new(s) as Box<dyn Io>)
            .map_err(|e| format!("{}: {e}", p.display())),
        #[cfg(not(unix))]
        Endpoint::Unix(_) => Err("Unix sockets are not available on this platform".into()),
        Endpoint::Tls { addr, server_name, ca } => {
            use rustls_pki_types::pem::PemObject;
            use rustls_pki_types::{CertificateDer, ServerName};
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
                roots
                    .add(c.map_err(|e| format!("{}: {e}", ca.display()))?)
                    .map_err(|e| e.to_string())?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(server_name.clone()).map_err(|e| e.to_string())?;
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Ok(Box::new(tls))
        }
    }
}

/// Run the connection until `outgoing` closes: connect, pump lines both ways, reconnect on
/// failure with back-off (0.5 s doubling to 5 s).
pub async fn run(ep: Endpoint, mut outgoing: mpsc::Receiver<Envelope>, events: mpsc::Sender<NetEvent>) {
    let mut attempt = 0u32;
    loop {
        let io = match connect(&ep).await {
            Ok(io) => io,
            Err(e) => {
                attempt += 1;
                if events.send(NetEvent::Down(attempt, e)).await.is_err() {
                    return;
                }
                let wait =
                    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(4))).min(Duration::from_secs(5));
                // Drop requests made while down: the console re-requests after reconnecting.
                let deadline = tokio::time::sleep(wait);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        m = outgoing.recv() => if m.is_none() { return },
                    }
                }
                continue;
            }
        };
        attempt = 0;
        if events.send(NetEvent::Connected).await.is_err() {
            return;
        }
        let mut framed = Framed::new(io, LinesCodec::new_with_max_length(64 * 1024 * 1024));
        let why = loop {
            tokio::select! {
                m = outgoing.recv() => match m {
                    Some(v) => {
                        // A login or verify line holds what the operator typed: wiped after sending.
                        let line = zeroize::Zeroizing::new(serde_json::to_string(&v).unwrap_or_default());
                        drop(v);
                        if let Err(e) = framed.send(line.as_str()).await { break e.to_string() }
                    }
                    None => return,
                },
                line = framed.next() => match line {
                    Some(Ok(l)) => match serde_json::from_str::<ServerMessage>(&l) {
                        Ok(v) => if events.send(NetEvent::Message(v)).await.is_err() { return },
                        Err(_) => continue,
                    },
                    Some(Err(e)) => break e.to_string(),
                    None => break "connection closed".to_string(),
                },
            }
        };
        attempt += 1;
        if events.send(NetEvent::Down(attempt, why)).await.is_err() {
            return;
        }
    }
}
