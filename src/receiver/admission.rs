//! Who may connect: the accept loop shared by the TCP listeners (DC-09 and Contact ID), with a
//! total and a per-address connection cap and back-off when accepting fails.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics::Metrics;

/// Per-address connection counts.
#[derive(Default)]
struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one per-address slot; frees it on drop.
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn try_take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<IpSlot> {
        let mut g = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = g.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut g = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = g.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                g.remove(&self.ip);
            }
        }
    }
}

/// A connection's place under the caps; given back when dropped.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    _slot: IpSlot,
}

/// The connection caps of one listener.
pub struct Admission {
    total: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    total_cap: usize,
    per_ip_cap: usize,
}

impl Admission {
    /// Caps: `total` connections, `per_ip` from one address.
    pub fn new(total: usize, per_ip: usize) -> Admission {
        Admission {
            total: Arc::new(Semaphore::new(total)),
            per_ip: Arc::new(PerIp::default()),
            total_cap: total,
            per_ip_cap: per_ip,
        }
    }

    /// Admit a connection from `peer`, or refuse it (counted in the metrics and logged).
    pub fn admit(&self, peer: SocketAddr, metrics: &Metrics, listener: &'static str) -> Option<Admitted> {
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            metrics.connections_refused.inc("total");
            warn!(%peer, listener, cap = self.total_cap, "connection refused: total connection cap");
            return None;
        };
        let Some(slot) = self.per_ip.try_take(peer.ip(), self.per_ip_cap) else {
            metrics.connections_refused.inc("per_ip");
            warn!(%peer, listener, cap = self.per_ip_cap, "connection refused: per-address cap");
            return None;
        };
        Some(Admitted {
            _permit: permit,
            _slot: slot,
        })
    }
}

/// The next connection, or `None` once cancelled. When accepting fails (out of file
/// descriptors and the like) it backs off, doubling up to 1 s, instead of spinning.
pub async fn accept(
    listener: &TcpListener,
    cancel: &CancellationToken,
    backoff: &mut Duration,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return None,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                *backoff = Duration::from_millis(10);
                let _ = stream.set_nodelay(true);
                return Some((stream, peer));
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
            }
        }
    }
}
