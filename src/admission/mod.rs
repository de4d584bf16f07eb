//! Who may connect: the one accept path of every stream listener (DC-09 and Contact ID over
//! TCP, the operator API's Unix socket and TLS port, metrics, the event stream, the Sur-Gard
//! output in server mode).
//!
//! [`serve`] accepts, admits the connection under its listener's caps (a total and one per
//! peer: the IP address for TCP, the user id for the Unix socket) and runs its handler as a
//! task of the daemon's tracker, so shutdown waits for it. A connection over a cap is counted
//! (`meldkamer_connections_refused_total{listener, cap}`), logged and closed at once: left in
//! the kernel's queue it would keep its peer waiting for an answer that never comes. When
//! accepting fails (out of descriptors and the like) the loop backs off, doubling from 10 ms
//! to 1 s, instead of spinning. [`budget`] sizes the caps to the process's descriptor limit.

pub mod budget;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// The daemon's stream listeners, as named in logs and in the `listener` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// SIA DC-09 over TCP.
    Dc09,
    /// The Contact ID input over TCP (`[cid_input]`).
    ContactId,
    /// The operator API on its Unix socket.
    OperatorUnix,
    /// The operator API over TLS.
    OperatorTls,
    /// The Prometheus endpoint.
    Metrics,
    /// The JSON Lines event stream's TCP subscribers.
    EventStream,
    /// The Sur-Gard output in server mode.
    Automation,
}

impl Listener {
    /// Every listener.
    pub const ALL: [Listener; 7] = [
        Listener::Dc09,
        Listener::ContactId,
        Listener::OperatorUnix,
        Listener::OperatorTls,
        Listener::Metrics,
        Listener::EventStream,
        Listener::Automation,
    ];

    /// Stable name (the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Dc09 => "dc09",
            Listener::ContactId => "contact_id",
            Listener::OperatorUnix => "operator_unix",
            Listener::OperatorTls => "operator_tls",
            Listener::Metrics => "metrics",
            Listener::EventStream => "event_stream",
            Listener::Automation => "automation",
        }
    }

    /// True for the listeners panels report alarms on; the others share a bounded part of
    /// the descriptors ([`budget`]).
    pub fn alarm_path(self) -> bool {
        matches!(self, Listener::Dc09 | Listener::ContactId)
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a connection comes from, for the per-peer cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP peer's address (panels behind a carrier NAT share one).
    Ip(IpAddr),
    /// A Unix socket peer's user id, from the kernel (`SO_PEERCRED`).
    Uid(u32),
    /// A Unix socket peer whose credentials could not be read: all such share one key.
    Unknown,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(ip) => ip.fmt(f),
            Peer::Uid(uid) => write!(f, "uid {uid}"),
            Peer::Unknown => f.write_str("unknown peer"),
        }
    }
}

/// A listening socket that [`serve`] accepts stream connections on.
pub trait Accept: Send + 'static {
    /// The accepted connection.
    type Stream: Send + 'static;
    /// The peer's address as the connection's handler sees it.
    type Addr: fmt::Display + Send + 'static;
    /// Accept one connection: the stream, its address and the peer it counts against.
    fn accept_one(&self) -> impl Future<Output = std::io::Result<(Self::Stream, Self::Addr, Peer)>> + Send;
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    type Addr = SocketAddr;

    async fn accept_one(&self) -> std::io::Result<(TcpStream, SocketAddr, Peer)> {
        let (stream, addr) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, addr, Peer::Ip(addr.ip())))
    }
}

/// The peer of a Unix socket connection is its user id. The operator socket is owner-only, so
/// normally every client runs as the daemon's user and they all share one per-peer cap; a
/// client as another user (root, who passes the permissions) gets a cap of its own, so an
/// administrator can still connect when a runaway client of the daemon's user holds its share.
#[cfg(unix)]
impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    type Addr = Peer;

    async fn accept_one(&self) -> std::io::Result<(tokio::net::UnixStream, Peer, Peer)> {
        let (stream, _) = self.accept().await?;
        let peer = stream.peer_cred().map_or(Peer::Unknown, |c| Peer::Uid(c.uid()));
        Ok((stream, peer, peer))
    }
}

/// Per-peer connection counts.
#[derive(Default)]
struct PerPeer {
    counts: Mutex<HashMap<Peer, usize>>,
}

/// Holds one per-peer slot; frees it on drop.
struct PeerSlot {
    table: Arc<PerPeer>,
    peer: Peer,
}

impl PerPeer {
    fn try_take(self: &Arc<Self>, peer: Peer, cap: usize) -> Option<PeerSlot> {
        let mut g = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = g.entry(peer).or_insert(0);
        if *n >= cap {
            if *n == 0 {
                g.remove(&peer);
            }
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            table: self.clone(),
            peer,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut g = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = g.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                g.remove(&self.peer);
            }
        }
    }
}

/// A connection's place under the caps; given back when dropped.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    _slot: PeerSlot,
}

/// The connection caps of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Connections at once, in total.
    pub total: usize,
    /// Connections at once from one peer.
    pub per_peer: usize,
}

/// One listener's caps and who holds them.
pub struct Admission {
    listener: Listener,
    caps: Caps,
    total: Arc<Semaphore>,
    per_peer: Arc<PerPeer>,
    metrics: Arc<Metrics>,
}

impl Admission {
    /// The caps of `listener`; refusals are counted in `metrics`.
    pub fn new(listener: Listener, caps: Caps, metrics: Arc<Metrics>) -> Admission {
        let total = caps.total.min(Semaphore::MAX_PERMITS);
        Admission {
            listener,
            caps: Caps {
                total,
                per_peer: caps.per_peer.min(total),
            },
            total: Arc::new(Semaphore::new(total)),
            per_peer: Arc::new(PerPeer::default()),
            metrics,
        }
    }

    /// The listener these caps are for.
    pub fn listener(&self) -> Listener {
        self.listener
    }

    /// Admit a connection from `peer`, or refuse it (counted and logged).
    pub fn admit(&self, peer: Peer, addr: &dyn fmt::Display) -> Option<Admitted> {
        let listener = self.listener.as_str();
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            self.metrics.connections_refused.inc(listener, "total");
            warn!(%addr, listener, cap = self.caps.total, "connection refused: total connection cap");
            return None;
        };
        let Some(slot) = self.per_peer.try_take(peer, self.caps.per_peer) else {
            self.metrics.connections_refused.inc(listener, "per_peer");
            warn!(%addr, %peer, listener, cap = self.caps.per_peer, "connection refused: per-peer connection cap");
            return None;
        };
        Some(Admitted {
            _permit: permit,
            _slot: slot,
        })
    }
}

/// First pause after a failed accept; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between failed accepts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The next connection, or `None` once cancelled. When accepting fails it backs off instead
/// of spinning: the error (typically out of descriptors) lasts until connections close.
async fn accept<A: Accept>(
    listener: &A,
    name: Listener,
    cancel: &CancellationToken,
    backoff: &mut Duration,
) -> Option<(A::Stream, A::Addr, Peer)> {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return None,
            r = listener.accept_one() => r,
        };
        match accepted {
            Ok(x) => {
                *backoff = MIN_BACKOFF;
                return Some(x);
            }
            Err(e) => {
                warn!(listener = name.as_str(), error = %e, pause_ms = backoff.as_millis() as u64, "accept failed; pausing");
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(*backoff) => {}
                }
                *backoff = (*backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
            }
        }
    }
}

/// Accept connections on `listener` until `cancel`: each one admitted under `admission` runs
/// `handle(stream, address, admitted)` as a task of `tracker` (it keeps `admitted` until it
/// is done); each one refused is closed at once.
pub async fn serve<A, H, F>(
    listener: A,
    admission: Admission,
    cancel: CancellationToken,
    tracker: TaskTracker,
    mut handle: H,
) where
    A: Accept,
    H: FnMut(A::Stream, A::Addr, Admitted) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let name = admission.listener();
    let mut backoff = MIN_BACKOFF;
    while let Some((stream, addr, peer)) = accept(&listener, name, &cancel, &mut backoff).await {
        let Some(admitted) = admission.admit(peer, &addr) else {
            drop(stream);
            continue;
        };
        tracker.spawn(handle(stream, addr, admitted));
    }
    info!(listener = name.as_str(), "listener stopped");
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn admission(total: usize, per_peer: usize) -> (Admission, Arc<Metrics>) {
        let m = Arc::new(Metrics::default());
        (
            Admission::new(Listener::Metrics, Caps { total, per_peer }, m.clone()),
            m,
        )
    }

    #[test]
    fn caps_count_per_peer_and_in_total_and_free_on_drop() {
        let (a, m) = admission(3, 2);
        let ip = |n| Peer::Ip(IpAddr::from([10, 0, 0, n]));
        let x1 = a.admit(ip(1), &"x").expect("first");
        let _x2 = a.admit(ip(1), &"x").expect("second from the same peer");
        assert!(a.admit(ip(1), &"x").is_none(), "third from one peer");
        let _y = a.admit(ip(2), &"y").expect("another peer");
        assert!(a.admit(ip(3), &"z").is_none(), "total cap");
        assert_eq!(m.connections_refused.get("metrics", "per_peer"), 1);
        assert_eq!(m.connections_refused.get("metrics", "total"), 1);
        drop(x1);
        assert!(a.admit(ip(1), &"x").is_some(), "a slot freed up");
        // Unix peers count by user id.
        let (a, _) = admission(8, 1);
        let _u = a.admit(Peer::Uid(1000), &"uid 1000").expect("uid 1000");
        assert!(a.admit(Peer::Uid(1000), &"uid 1000").is_none());
        assert!(a.admit(Peer::Uid(0), &"uid 0").is_some(), "root has a cap of its own");
    }

    #[test]
    fn listener_names_are_metric_labels() {
        for l in Listener::ALL {
            assert!(crate::metrics::LISTENERS.contains(&l.as_str()), "{l}");
        }
    }

    /// A listener whose every accept fails, counting the attempts.
    struct Failing {
        attempts: Arc<AtomicUsize>,
    }

    impl Accept for Failing {
        type Stream = ();
        type Addr = Peer;

        async fn accept_one(&self) -> std::io::Result<((), Peer, Peer)> {
            // Enough to show a spinning loop; then it never returns, so the test ends.
            if self.attempts.fetch_add(1, Ordering::Relaxed) >= 1000 {
                std::future::pending::<()>().await;
            }
            Err(std::io::Error::from_raw_os_error(24)) // EMFILE
        }
    }

    /// Accepting fails (out of descriptors): the loop pauses, 10 ms doubling to 1 s, instead
    /// of retrying at once. In one virtual second it tries 7 times (10+20+…+640 ms), not 1,000.
    #[tokio::test(start_paused = true)]
    async fn a_failing_accept_backs_off() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let (a, _) = admission(4, 4);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(
            Failing {
                attempts: attempts.clone(),
            },
            a,
            cancel.clone(),
            TaskTracker::new(),
            |_, _, _| async {},
        ));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let n = attempts.load(Ordering::Relaxed);
        assert!((6..=8).contains(&n), "{n} attempts in the first second");
        // Then at most one a second.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let m = attempts.load(Ordering::Relaxed);
        assert!(m - n <= 11, "{} attempts in the next ten seconds", m - n);
        cancel.cancel();
        task.await.expect("the loop ends when cancelled");
    }

    /// Over a cap, a connection is closed at once (its peer reads end-of-stream, it does not
    /// wait for the handler), counted under the listener; the admitted one keeps working and
    /// its handler runs on the tracker.
    #[tokio::test]
    async fn a_refused_connection_is_closed_at_once_and_counted() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, m) = admission(1, 1);
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let task = tokio::spawn(serve(
            l,
            a,
            cancel.clone(),
            tracker.clone(),
            |mut s: TcpStream, _, admitted| async move {
                let _admitted = admitted;
                let mut b = [0u8; 1];
                while matches!(s.read(&mut b).await, Ok(1)) {
                    let _ = s.write_all(&b).await;
                }
            },
        ));
        let mut first = TcpStream::connect(addr).await.expect("first");
        first.write_all(b"a").await.expect("write");
        let mut b = [0u8; 1];
        first.read_exact(&mut b).await.expect("echo");
        let mut second = TcpStream::connect(addr).await.expect("second connects, then is closed");
        let r = tokio::time::timeout(Duration::from_secs(5), second.read(&mut b)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "closed at once: {r:?}");
        assert_eq!(m.connections_refused.get("metrics", "total"), 1);
        first.write_all(b"b").await.expect("write");
        first
            .read_exact(&mut b)
            .await
            .expect("the admitted connection still works");
        assert_eq!(tracker.len(), 1, "its handler is a task of the tracker");
        cancel.cancel();
        task.await.expect("stopped");
        drop(first);
        tracker.close();
        tracker.wait().await;
    }
}
