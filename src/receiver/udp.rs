//! DC-09 over UDP: one frame per datagram, the response to the datagram's source after commit.
//! Datagrams are handled concurrently up to a cap; beyond it the listener stops reading (the
//! kernel queue absorbs or drops the excess, as UDP does, and the panel retries).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Shared, garbage_record, prepare};
use crate::protocol::framer::{Chunk, Framer, split_all};
use crate::store::writer::{FrameRecord, Transport};

/// Receive datagrams until `cancel`.
pub async fn serve(socket: UdpSocket, shared: Arc<Shared>, cancel: CancellationToken, tracker: TaskTracker) {
    let max_inflight = shared.cfg.max_udp_inflight;
    // One byte more than the largest frame: a longer datagram is refused by `classify`.
    let cap = shared.cfg.max_frame_bytes;
    recv_loop(
        socket,
        max_inflight,
        cap,
        cancel,
        tracker,
        move |socket, datagram, peer, _| {
            let shared = shared.clone();
            async move { datagram_task(&shared, &socket, &datagram, peer).await }.instrument(info_span!("udp", %peer))
        },
    )
    .await;
    info!("UDP listener stopped");
}

/// The receive loop of a UDP listener (DC-09 and Contact ID): read datagrams of up to `cap`
/// bytes until `cancel` and hand each, with its source and whether it was longer than `cap`,
/// to `handle` in a task of its own. At most `max_inflight` run at once; beyond that the loop
/// stops reading (the kernel queue absorbs or drops the excess, and the panel retries).
pub(super) async fn recv_loop<F, Fut>(
    socket: UdpSocket,
    max_inflight: usize,
    cap: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
    handle: F,
) where
    F: Fn(Arc<UdpSocket>, Vec<u8>, SocketAddr, bool) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let socket = Arc::new(socket);
    let inflight = Arc::new(Semaphore::new(max_inflight));
    // One byte more than `cap`: a full buffer means the datagram was too long.
    let mut buf = vec![0u8; cap + 1];
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = inflight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (n, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "recv failed");
                    continue;
                }
            },
        };
        if peer.port() == 0 {
            // Nothing can be answered to port 0; a forged source.
            continue;
        }
        let task = handle(socket.clone(), buf[..n].to_vec(), peer, n > cap);
        tracker.spawn(async move {
            task.await;
            drop(permit);
        });
    }
}

fn classify(shared: &Shared, datagram: &[u8], peer: SocketAddr) -> FrameRecord {
    if datagram.len() > shared.cfg.max_frame_bytes {
        shared.metrics.refusals.inc("oversize");
        warn!(bytes = datagram.len(), "datagram longer than the maximum frame");
        return garbage_record(shared, datagram, Transport::Udp, peer, "oversize");
    }
    let framer = Framer::new(shared.cfg.max_frame_bytes, shared.accounts().quirks_in_use.crc_binary);
    let (chunks, rest) = split_all(&framer, datagram);
    match (chunks.as_slice(), rest.is_empty()) {
        ([(Chunk::Frame { .. }, frame)], true) => prepare(shared, frame, Transport::Udp, peer, false),
        ([(Chunk::Frame { .. }, frame), (Chunk::Garbage { nul_only: true, .. }, _)], true) => {
            prepare(shared, frame, Transport::Udp, peer, true)
        }
        _ => {
            // Not exactly one frame: decode the whole datagram so the stored reason says why.
            prepare(shared, datagram, Transport::Udp, peer, false)
        }
    }
}

async fn datagram_task(shared: &Shared, socket: &UdpSocket, datagram: &[u8], peer: SocketAddr) {
    let record = classify(shared, datagram, peer);
    let response = record.response.clone();
    let kind = record.response_kind;
    let received_ms = record.received_ms;
    let mut sent = None;
    match shared.writer.submit(record).await {
        Ok(_) => match (response, kind) {
            (Some(bytes), Some(kind)) => {
                if let Err(e) = socket.send_to(&bytes, peer).await {
                    debug!(error = %e, "send failed");
                } else {
                    shared.metrics.responses.inc(kind.as_str());
                    sent = Some(bytes);
                }
            }
            _ => shared.metrics.responses.inc("none"),
        },
        Err(e) => {
            warn!(error = %e, "commit failed: no response sent, the panel will retry");
            shared.metrics.responses.inc("none");
        }
    }
    if let Some(r) = &shared.recorder {
        r.udp(peer, datagram, received_ms, sent.as_deref(), &shared.accounts());
    }
}
