//! DC-09 over TCP: LF…CR framing, several frames per connection and per read, responses in
//! order, each written only after its frame committed.
//!
//! Limits: a total and a per-address connection cap ([`crate::admission`]), an idle timeout, a deadline for a frame
//! that started but never ends, a cap on frames awaiting commit per connection (reading pauses,
//! nothing is dropped), and a bounded buffer (the framer discards oversize input).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::{Shared, garbage_record, prepare_frame};
use crate::admission::{self, Admission, Admitted};
use crate::protocol::frame::LF;
use crate::protocol::framer::{Chunk, Framer};
use crate::store::writer::{AnswerRx, Transport};

/// Accept connections until `cancel` under `admission`'s caps; each connection runs in
/// `tracker`.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    admission: Admission,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let c = cancel.clone();
    admission::serve(listener, admission, cancel, tracker, move |stream, peer, admitted| {
        let shared = shared.clone();
        let cancel = c.clone();
        async move {
            shared.metrics.open_connections.add(1);
            connection(stream, peer, &shared, cancel, admitted).await;
            shared.metrics.open_connections.add(-1);
        }
        .instrument(info_span!("tcp", %peer))
    })
    .await;
}

struct Pending {
    /// The answer carries the record back, with the response to send.
    rx: AnswerRx,
    /// `serve --record`: the trace slot for this frame's response.
    slot: Option<usize>,
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    cancel: CancellationToken,
    _admitted: Admitted,
) {
    debug!("connected");
    let cfg = &shared.cfg;
    let idle = Duration::from_secs(cfg.idle_timeout_secs);
    let frame_timeout = Duration::from_secs(cfg.frame_timeout_secs);
    let write_timeout = Duration::from_secs(10);
    let mut buf = BytesMut::new();
    let mut inflight: VecDeque<Pending> = VecDeque::new();
    let mut last_activity = Instant::now();
    let mut timer = super::Deadline::new(last_activity + idle);
    let mut frame_started: Option<Instant> = None;
    let mut reading = true;
    let mut garbage_stored = 0usize;
    // After a frame: does its account accept NUL padding after frames (the trailing-NUL quirk)?
    let mut after_frame: Option<bool> = None;
    let mut recording = shared.recorder.as_ref().map(|r| r.tcp(peer));

    loop {
        if !reading && inflight.is_empty() {
            break;
        }
        let deadline = match frame_started {
            Some(t) => (t + frame_timeout).min(last_activity + idle),
            None => last_activity + idle,
        };
        let can_read = reading && inflight.len() < cfg.max_inflight_per_connection;
        tokio::select! {
            biased;
            res = async { inflight.front_mut().map(|p| &mut p.rx).expect("guarded").await }, if !inflight.is_empty() => {
                let p = inflight.pop_front().expect("guarded");
                let mut written = false;
                let mut response = None;
                match res.map(|a| (a.result, a.record)) {
                    Ok((Ok(committed), record)) => {
                        response = record.response;
                        if let (Some(bytes), Some(kind)) = (&response, record.response_kind) {
                            match tokio::time::timeout(write_timeout, stream.write_all(bytes)).await {
                                Ok(Ok(())) => {
                                    written = true;
                                    shared.metrics.responses.inc(kind.as_str());
                                    if committed.duplicate_of.is_some() {
                                        debug!(duplicate_of = committed.duplicate_of, "retransmission acknowledged again");
                                    }
                                }
                                _ => {
                                    debug!("write failed; closing");
                                    reading = false;
                                    // Responses still pending cannot be written either; their
                                    // frames are committed and the panel will retransmit.
                                    inflight.clear();
                                }
                            }
                        } else {
                            shared.metrics.responses.inc("none");
                        }
                    }
                    Ok((Err(e), _)) => {
                        warn!(error = %e, "commit failed: no response sent, the panel will retry");
                        shared.metrics.responses.inc("none");
                    }
                    Err(_) => {
                        warn!("store writer stopped: no response sent");
                        reading = false;
                    }
                }
                if let (Some(r), Some(slot)) = (recording.as_mut(), p.slot) {
                    r.respond(slot, response.as_deref().filter(|_| written), &shared.accounts());
                }
                last_activity = Instant::now();
            }
            _ = cancel.cancelled(), if reading => {
                // Shutdown: stop reading; answer what is already committed, then close.
                reading = false;
            }
            r = stream.readable(), if can_read => {
                if r.is_err() {
                    reading = false;
                    continue;
                }
                match super::read_available(&stream, &mut buf) {
                    Ok(0) => {
                        reading = false;
                    }
                    Ok(_) => {
                        last_activity = Instant::now();
                        let framer = Framer::new(cfg.max_frame_bytes, shared.accounts().quirks_in_use.crc_binary);
                        while let Some(chunk) = framer.next_chunk(&buf) {
                            let len = chunk.len();
                            let bytes = &buf[..len];
                            let is_frame = matches!(chunk, Chunk::Frame { .. });
                            let record = match chunk {
                                Chunk::Frame { .. } => {
                                    let (rec, nul_ok) = prepare_frame(shared, bytes, Transport::Tcp, peer, false);
                                    after_frame = Some(nul_ok);
                                    Some(rec)
                                }
                                Chunk::Garbage { nul_only, .. } => {
                                    let padding = nul_only && after_frame == Some(true);
                                    after_frame = None;
                                    if padding {
                                        // NUL padding after a frame of an account with the
                                        // trailing-NUL quirk: expected, discarded quietly.
                                        debug!(bytes = len, "NUL bytes after a frame discarded");
                                        None
                                    } else {
                                        shared.metrics.refusals.inc("garbage");
                                        warn!(bytes = len, "bytes outside any frame discarded");
                                        (garbage_stored < cfg.max_garbage_records_per_connection).then(|| {
                                            garbage_stored += 1;
                                            garbage_record(shared, bytes, Transport::Tcp, peer, "garbage")
                                        })
                                    }
                                }
                                Chunk::Oversize { .. } => {
                                    after_frame = None;
                                    shared.metrics.refusals.inc("oversize");
                                    warn!(bytes = len, max = cfg.max_frame_bytes, "frame longer than the maximum discarded");
                                    (garbage_stored < cfg.max_garbage_records_per_connection).then(|| {
                                        garbage_stored += 1;
                                        garbage_record(shared, bytes, Transport::Tcp, peer, "oversize")
                                    })
                                }
                            };
                            let slot = match recording.as_mut() {
                                Some(r) => r.chunk(
                                    &buf[..len],
                                    record.as_ref().filter(|_| is_frame).map(|x| x.received_ms),
                                    &shared.accounts(),
                                ),
                                None => None,
                            };
                            buf.advance(len);
                            if let Some(record) = record {
                                match shared.writer.enqueue(record).await {
                                    Ok(rx) => inflight.push_back(Pending { rx, slot }),
                                    Err(_) => {
                                        reading = false;
                                        break;
                                    }
                                }
                            }
                        }
                        if let Some(r) = recording.as_mut() {
                            r.end_read();
                        }
                        frame_started = if buf.first() == Some(&LF) { frame_started.or(Some(Instant::now())) } else { None };
                        if buf.is_empty() {
                            // Idle connections hold no buffer.
                            buf = BytesMut::new();
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        debug!(error = %e, "read failed");
                        reading = false;
                    }
                }
            }
            _ = timer.expired(deadline), if reading => {
                if frame_started.is_some_and(|t| Instant::now() >= t + frame_timeout) {
                    shared.metrics.refusals.inc("frame_timeout");
                    warn!(buffered = buf.len(), "frame not completed in time; closing");
                    if garbage_stored < cfg.max_garbage_records_per_connection {
                        let rec = garbage_record(shared, &buf, Transport::Tcp, peer, "frame_timeout");
                        if let Ok(rx) = shared.writer.enqueue(rec).await {
                            inflight.push_back(Pending { rx, slot: None });
                        }
                    }
                } else {
                    debug!("idle timeout; closing");
                }
                reading = false;
            }
        }
    }
    if let Some(r) = recording.take() {
        r.finish(&buf, crate::clock::unix_ms(shared.clock.now()));
    }
    let _ = stream.shutdown().await;
    debug!("closed");
}
