//! The DC-09 receiver: TCP and UDP listeners over the pure protocol core, the response policy,
//! and the limits that keep one panel (or one attacker) from hurting the others.
//!
//! Flow for every frame: framer → [`prepare`] (decode, account lookup, decision table,
//! response bytes, events) → the store writer (commit) → response written. The ACK is built
//! before the commit but written only after it.
//!
//! [`cid_ip`] is the Contact ID input (Sur-Gard lines, Lupusec frames, raw DC-05) on its own
//! address, built the same way and sharing [`Shared`], the writer and the limits' patterns.

pub mod cid_ip;
pub mod pad;
pub mod record;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tracing::{debug, warn};

use crate::clock::{Clock, unix_ms};
use crate::config::ReceiverConfig;
use crate::event::events_from;
use crate::metrics::Metrics;
use crate::protocol::frame::{Body, DecodeOptions, Quirks, Token, decode_frame};
use crate::protocol::policy::{Silence, Verdict, Window, evaluate, evaluate_undecoded, response_frame};
use crate::protocol::response::{self, ResponseKind};
use crate::store::accounts::AccountTable;
use crate::store::writer::{FrameRecord, Outcome, Transport, WriterHandle, dedupe_key};

/// A stream connection's timer for its idle and unfinished-frame timeouts. Every frame moves
/// the idle deadline later; resetting the timer for each (a timer-wheel removal and insertion
/// per frame) was about 1 % of the machine at 64 connections. The timer is moved only to an
/// earlier deadline; when it fires before the deadline in force, it is re-armed once to that.
pub(crate) struct Deadline {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    pub(crate) fn new(at: tokio::time::Instant) -> Self {
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(at)),
        }
    }

    /// Completes once `at`, the deadline in force, has passed.
    pub(crate) async fn expired(&mut self, at: tokio::time::Instant) {
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
        }
        loop {
            self.sleep.as_mut().await;
            if tokio::time::Instant::now() >= at {
                return;
            }
            self.sleep.as_mut().reset(at);
        }
    }
}

/// Room made in a stream connection's buffer before each read. A connection frees its buffer
/// whenever it holds no partial frame (10,000 idle panels hold none), so every frame costs one
/// allocation of this size. Kept below 1,024 bytes: glibc serves a request of 1,024 or more
/// from its large bins and first consolidates its fast bins, which at 64 connections cost
/// about 3 % of the machine (BENCHMARKS.md, series L). A longer frame takes several reads.
pub const READ_RESERVE: usize = 960;

/// Read what a ready stream socket holds into `buf` (after making [`READ_RESERVE`] bytes of
/// room): `Ok(0)` at the end of the stream, `WouldBlock` when there was nothing after all.
///
/// tokio forgets a socket's read readiness only when a read fails with `WouldBlock`, so the usual
/// `readable().await` + `try_read_buf` loop makes a second `recv` after every frame just to
/// learn that the socket is empty: one system call in three on the receive path. A read that
/// left some of the room empty has already drained the socket, so this tells tokio to forget
/// the readiness it observed before the read, the rule tokio's own `AsyncRead` for sockets
/// applies. Data that arrives after the read raises a new readiness event, which this does not
/// clear, so nothing is left unread.
pub fn read_available(stream: &tokio::net::TcpStream, buf: &mut bytes::BytesMut) -> std::io::Result<usize> {
    use std::io::ErrorKind::WouldBlock;
    buf.reserve(READ_RESERVE);
    let room = buf.capacity() - buf.len();
    let mut read = 0;
    // `try_io` records the readiness first and clears that same readiness on `WouldBlock`.
    match stream.try_io(tokio::io::Interest::READABLE, || {
        read = stream.try_read_buf(buf)?;
        if read > 0 && read < room {
            Err(WouldBlock.into())
        } else {
            Ok(read)
        }
    }) {
        Err(e) if e.kind() == WouldBlock && read > 0 => Ok(read),
        r => r,
    }
}

/// What every listener task shares.
pub struct Shared {
    /// Current accounts (swapped on reload).
    pub accounts: RwLock<Arc<AccountTable>>,
    /// The store writer.
    pub writer: WriterHandle,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Injected clock.
    pub clock: Arc<dyn Clock>,
    /// Receiver settings.
    pub cfg: ReceiverConfig,
    /// A seeded pad source for encrypted ACKs (deterministic replays); `None`: OS randomness.
    pub seeded_pad: std::sync::Mutex<Option<crate::protocol::crypto::SeededPad>>,
    /// `serve --record`: traffic written as fixture traces. `None` (the listeners skip it)
    /// unless recording.
    pub recorder: Option<Arc<record::Recorder>>,
}

impl Shared {
    /// The current account table.
    pub fn accounts(&self) -> Arc<AccountTable> {
        self.accounts
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replace the account table.
    pub fn set_accounts(&self, t: AccountTable) {
        let t = Arc::new(t);
        match self.accounts.write() {
            Ok(mut g) => *g = t,
            Err(p) => *p.into_inner() = t,
        }
    }

    fn window(&self) -> Window {
        Window {
            behind_s: self.cfg.timestamp_behind_secs,
            ahead_s: self.cfg.timestamp_ahead_secs,
        }
    }
}

/// Hex for logs: only plain frames are logged as bytes (AU-4); encrypted ones by length.
fn log_bytes(raw: &[u8], encrypted: bool) -> String {
    if encrypted {
        format!("<{} bytes encrypted>", raw.len())
    } else {
        // A key offered in clear (`[K…]`) never reaches a log, not even as hex.
        hex::encode_upper(crate::protocol::frame::redact_key_bytes(raw))
    }
}

/// The stored detail of a frame that offered a new key (`K` extended data).
const KEY_CHANGE_REFUSED: &str =
    "key change over the air refused: the key (K) is neither stored nor used; keys change only by import";

/// Decide what to do with one frame and build its storage record (with the response bytes to
/// send after commit). `trailing_nuls`: the datagram carried NUL bytes after the CR.
pub fn prepare(
    shared: &Shared,
    raw: &[u8],
    transport: Transport,
    peer: SocketAddr,
    trailing_nuls: bool,
) -> FrameRecord {
    prepare_frame(shared, raw, transport, peer, trailing_nuls).0
}

/// [`prepare`], also saying whether the frame's account accepts NUL bytes after its frames
/// (TCP uses it to tell quirk padding from garbage).
pub fn prepare_frame(
    shared: &Shared,
    raw: &[u8],
    transport: Transport,
    peer: SocketAddr,
    trailing_nuls: bool,
) -> (FrameRecord, bool) {
    let now = shared.clock.now();
    // Stored as received, but for the value of a key offered in clear (`[K…]`): a frame that
    // decodes has it starred out below (with a fitting CRC); one that does not, here.
    let stored = crate::protocol::frame::redact_key_bytes(raw).into_owned();
    let mut rec = FrameRecord::new(unix_ms(now), transport, peer.to_string(), stored, Outcome::Silent);
    let m = &shared.metrics;
    let opts = DecodeOptions {
        quirks: Quirks::ALL,
        max_len: shared.cfg.max_frame_bytes,
    };
    let frame = match decode_frame(raw, &opts) {
        Ok(f) => f,
        Err(e) => {
            m.frames.inc("other");
            match evaluate_undecoded(e) {
                Verdict::Refused(r) => {
                    // CRC and length right, a field unreadable: DUH, and the supervisor sees
                    // the frame (correlate::on_frame), so the ARC can call the installer.
                    m.refusals.inc(r.reason());
                    let header = response::header_as_sent(raw.get(9..raw.len() - 1).unwrap_or_default());
                    let detail = match header {
                        Some(h) => format!("{r} in header {}", String::from_utf8_lossy(h)),
                        None => r.to_string(),
                    };
                    warn!(%peer, reason = r.reason(), detail = %detail, bytes = %log_bytes(raw, false),
                        response = "DUH", "frame refused");
                    rec.outcome = Outcome::Refused;
                    rec.reason = Some(r.reason());
                    rec.detail = Some(detail);
                    rec.response = Some(response::duh_unreadable(raw));
                    rec.response_kind = Some(ResponseKind::Duh);
                }
                _ => {
                    m.refusals.inc(e.reason());
                    m.responses.inc("none");
                    warn!(%peer, reason = e.reason(), error = %e, bytes = %log_bytes(raw, false), "frame dropped, no response");
                    rec.reason = Some(e.reason());
                    rec.detail = Some(e.to_string());
                }
            }
            return (rec, false);
        }
    };
    m.frames.inc(match frame.token {
        Token::SiaDcs => "SIA-DCS",
        Token::AdmCid => "ADM-CID",
        Token::Null => "NULL",
        Token::Xnm => "XNM",
        _ => "other",
    });
    rec.token = Some(frame.token.as_str().to_string());
    rec.encrypted = frame.encrypted;
    rec.account = frame.account_number().map(str::to_string);
    rec.receiver = frame.receiver.clone();
    rec.line = Some(frame.line.clone());
    rec.seq = Some(frame.seq);

    let accounts = shared.accounts();
    let entry = frame
        .account_number()
        .and_then(|a| accounts.lookup(a, frame.receiver.as_deref(), &frame.line))
        .cloned();
    rec.account_id = entry.as_ref().map(|e| e.id);
    let policy = entry.as_ref().map(|e| &e.policy);
    let nul_ok = policy.is_some_and(|p| p.quirks.trailing_nul);

    let mut verdict = evaluate(&frame, policy, now, shared.window());
    if trailing_nuls && !policy.is_some_and(|p| p.quirks.trailing_nul) && !matches!(verdict, Verdict::Silent(_)) {
        verdict = Verdict::Silent(Silence::QuirkNotEnabled {
            needs: Quirks {
                trailing_nul: true,
                ..Quirks::NONE
            },
        });
    }
    rec.response = {
        let mut seeded = shared.seeded_pad.lock().unwrap_or_else(|p| p.into_inner());
        match seeded.as_mut() {
            Some(p) => response_frame(&frame, &verdict, policy, now, p),
            None => response_frame(&frame, &verdict, policy, now, &mut pad::OsPad),
        }
        .map(|f| f.encode())
    };
    rec.response_kind = verdict.response_kind();
    let account = rec.account.as_deref().unwrap_or("");
    match &verdict {
        Verdict::Silent(s) => {
            m.refusals.inc(s.reason());
            warn!(%peer, account, seq = frame.seq, reason = s.reason(), detail = %s, "frame dropped, no response");
            rec.outcome = Outcome::Silent;
            rec.reason = Some(s.reason());
            rec.detail = Some(s.to_string());
        }
        Verdict::Refused(r) => {
            m.refusals.inc(r.reason());
            warn!(%peer, account, seq = frame.seq, reason = r.reason(), detail = %r,
                response = r.response().as_str(), "frame refused");
            rec.outcome = Outcome::Refused;
            rec.reason = Some(r.reason());
            rec.detail = Some(r.to_string());
        }
        Verdict::Accepted(a) => {
            rec.outcome = Outcome::Accepted;
            rec.skew_s = a.skew_s;
            if a.plain.xdata.iter().any(|x| x.id == 'K') {
                // A new key offered over the air (`[K…]`): never stored, never used, and its
                // value kept out of the stored frame and the logs (protocols/dc09.md §15.4).
                warn!(%peer, account, seq = frame.seq, "key change over the air refused; the frame's events are kept");
                rec.reason = Some("key_change_refused");
                rec.detail = Some(KEY_CHANGE_REFUSED.to_string());
                if !frame.encrypted {
                    rec.raw = frame.with_keys_redacted().encode();
                }
            }
            if frame.token.is_link_test() && a.plain.data.trim().is_empty() {
                rec.link_test_only = true;
                debug!(%peer, account, "link test");
            } else {
                match events_from(&frame, &a.plain) {
                    Ok(events) => rec.events = events,
                    Err(e) => {
                        warn!(%peer, account, seq = frame.seq, error = %e, "data not understood; stored and acknowledged for the supervisor");
                        rec.detail = Some(match rec.reason {
                            Some("key_change_refused") => format!("{}; {KEY_CHANGE_REFUSED}", e.0),
                            _ => e.0,
                        });
                        rec.reason = Some("payload");
                    }
                }
                let mut payload = Vec::with_capacity(a.plain.data.len() + 16);
                crate::protocol::frame::push_latin1(&a.plain.data, &mut payload);
                for x in &a.plain.xdata {
                    payload.push(b'[');
                    crate::protocol::frame::push_latin1(&x.id.to_string(), &mut payload);
                    crate::protocol::frame::push_latin1(&x.value, &mut payload);
                    payload.push(b']');
                }
                rec.dedupe_key = Some(dedupe_key(
                    account,
                    frame.receiver.as_deref(),
                    &frame.line,
                    frame.seq,
                    &payload,
                ));
                debug!(%peer, account, seq = frame.seq, events = rec.events.len(),
                    bytes = %log_bytes(&rec.raw, matches!(frame.body, Body::Encrypted(_))), "frame accepted");
            }
        }
    }
    (rec, nul_ok)
}

/// A record for bytes that are not a frame.
pub fn garbage_record(
    shared: &Shared,
    raw: &[u8],
    transport: Transport,
    peer: SocketAddr,
    reason: &'static str,
) -> FrameRecord {
    stray_bytes(
        shared,
        raw,
        shared.cfg.max_frame_bytes,
        "frame",
        transport,
        peer,
        reason,
    )
}

/// A record for bytes outside any `unit` (frame, Contact ID message): the first `keep_at_most`
/// kept, and how many there were.
pub(crate) fn stray_bytes(
    shared: &Shared,
    raw: &[u8],
    keep_at_most: usize,
    unit: &str,
    transport: Transport,
    peer: SocketAddr,
    reason: &'static str,
) -> FrameRecord {
    let keep = raw.len().min(keep_at_most);
    let mut rec = FrameRecord::new(
        unix_ms(shared.clock.now()),
        transport,
        peer.to_string(),
        raw[..keep].to_vec(),
        Outcome::Garbage,
    );
    rec.reason = Some(reason);
    rec.detail = Some(if keep < raw.len() {
        format!("{} bytes outside any {unit} (first {keep} kept)", raw.len())
    } else {
        format!("{} bytes outside any {unit}", raw.len())
    });
    rec
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind::WouldBlock;
    use std::time::Duration;

    use bytes::BytesMut;
    use tokio::io::{AsyncWriteExt, Interest};
    use tokio::net::{TcpListener, TcpStream};

    use super::{READ_RESERVE, read_available};

    /// Waits for read readiness; a generous guard against a hang, not a timing assertion.
    async fn ready(s: &TcpStream) {
        tokio::time::timeout(Duration::from_secs(10), s.readable())
            .await
            .expect("readable in time")
            .expect("readable");
    }

    /// Would tokio call the socket again (readiness kept), or answer `WouldBlock` itself?
    fn readiness_kept(s: &TcpStream) -> bool {
        let mut called = false;
        let r = s.try_io(Interest::READABLE, || {
            called = true;
            Ok(())
        });
        assert!(called || r.is_err_and(|e| e.kind() == WouldBlock));
        called
    }

    #[tokio::test]
    async fn a_short_read_forgets_the_readiness_and_new_data_raises_it_again() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = l.accept().await.expect("accept");
        let mut buf = BytesMut::new();

        client.write_all(b"\nframe one\r").await.expect("write");
        ready(&server).await;
        assert_eq!(read_available(&server, &mut buf).expect("read"), 11);
        assert!(!readiness_kept(&server), "a drained socket needs no second recv");

        // Data after the read is not lost: it raises readiness again.
        client.write_all(b"\nframe two\r").await.expect("write");
        ready(&server).await;
        assert_eq!(read_available(&server, &mut buf).expect("read"), 11);
        assert_eq!(&buf[..], b"\nframe one\r\nframe two\r");

        // A read that filled the room keeps the readiness: more may be waiting.
        buf.clear();
        let big = vec![b'x'; 3 * READ_RESERVE];
        client.write_all(&big).await.expect("write");
        let (mut got, mut full) = (0, 0);
        while got < big.len() {
            ready(&server).await;
            buf.clear();
            match read_available(&server, &mut buf) {
                Ok(n) => {
                    got += n;
                    if n == buf.capacity() {
                        full += 1;
                        assert!(readiness_kept(&server), "a full read keeps the readiness");
                    }
                }
                Err(e) if e.kind() == WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        assert_eq!(got, big.len());
        assert!(full > 0, "the room is smaller than what was sent");

        // The end of the stream reads as 0.
        client.shutdown().await.expect("shutdown");
        ready(&server).await;
        assert_eq!(read_available(&server, &mut buf).expect("read"), 0);
    }
}
