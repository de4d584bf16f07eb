//! The Contact ID input (`[cid_input]`): Contact ID over IP without DC-09, on its own TCP and
//! UDP address. The framing is detected per message ([`crate::protocol::cidip`]): Sur-Gard
//! automation lines (what translators such as Ajax Translator send), Lupusec/Climax frames, and
//! raw 16-digit DC-05 lines.
//!
//! Every message takes the DC-09 path from here on: a [`FrameRecord`] with events built by
//! [`crate::event::events_from`], the same account table, the same store writer (so the same
//! correlation, outbox and retransmission memory), and the answer written only after the
//! commit, in order.
//!
//! | input | stored as | answer |
//! |---|---|---|
//! | valid, known account | accepted, events | ACK 0x06 |
//! | the previous message of the account again, within the window | retransmission | ACK |
//! | unknown account | refused `unknown_account` (supervisor alarm) | ACK (stops the retries) |
//! | account that requires encryption | refused `plain_refused` | ACK |
//! | Sur-Gard heartbeat | not stored | ACK at once |
//! | Sur-Gard line with another protocol ID | refused `unsupported_format` (supervisor alarm) | ACK |
//! | Sur-Gard line not understood | refused `syntax` | NAK 0x15 |
//! | DC-05 line, check digit wrong / malformed | refused `checksum` / `syntax` | NAK |
//! | Lupusec frame, checksum wrong / malformed | silent `checksum` / `syntax` | none |
//! | bytes of no framing, over-long messages | garbage `garbage` / `oversize` | none |
//!
//! These formats have no sequence number. A message equal to the previous accepted message of
//! the same account (receiver and line included) within `retransmission_window_secs` reuses
//! that message's retransmission identity, so the writer records it as a retransmission; any
//! other message gets a fresh identity. Alarm, restore, alarm are three events; alarm, alarm
//! (an unacknowledged message sent again) is one. The memory is reloaded from the database at
//! start, so a message committed just before a restart and sent again after it is recognised.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Shared;
use crate::admission::{self, Admission, Admitted};
use crate::clock::unix_ms;
use crate::config::CidInputConfig;
use crate::event::{Event, PayloadError, events_from};
use crate::protocol::cid::CidEvent;
use crate::protocol::cidip::{Framing, Input, Piece, Splitter, classify, split_all};
use crate::protocol::frame::{AccountField, Body, Frame, Framing as Dc09Framing, Plain, Token};
use crate::protocol::response::ResponseKind;
use crate::protocol::sia::parse_sia_data;
use crate::protocol::surgard::{ACK, NAK, SgMessage};
use crate::store::StoreError;
use crate::store::writer::{AnswerRx, FrameRecord, Outcome, Transport, dedupe_key};

/// The `token` stored for each kind of Contact ID input.
pub const TOKENS: [&str; 5] = ["SG-CID", "SG-SIA", "SG-OTHER", "LUPUSEC-CID", "DC05-CID"];

/// The last accepted message of one account path.
#[derive(Debug, Clone)]
struct Last {
    payload: String,
    key: [u8; 16],
    at_ms: i64,
}

/// Retransmission identities: what each account path sent last.
#[derive(Debug, Default)]
struct Retransmissions {
    window_ms: i64,
    /// New identities are made unique by this run's nonce and a counter: the same payload
    /// can come again within one millisecond as a new event (alarm, restore, alarm).
    nonce: u64,
    counter: u64,
    last: HashMap<String, Last>,
    /// Insertion order, for expiry.
    order: VecDeque<(i64, String)>,
}

/// Most account paths remembered (memory bound); expired ones go first.
const MAX_REMEMBERED: usize = 1_000_000;

impl Retransmissions {
    /// The identity of a message: the remembered one if it repeats the path's last message
    /// within the window, else a new one (remembered from now on).
    fn identity(&mut self, path: &str, payload: &str, now_ms: i64) -> [u8; 16] {
        if let Some(l) = self.last.get(path)
            && l.payload == payload
            && now_ms - l.at_ms <= self.window_ms
        {
            return l.key;
        }
        self.counter += 1;
        let mut p = payload.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(&now_ms.to_be_bytes());
        p.extend_from_slice(&self.nonce.to_be_bytes());
        p.extend_from_slice(&self.counter.to_be_bytes());
        let key = dedupe_key(path, None, "", 0, &p);
        self.remember(path, payload, key, now_ms);
        key
    }

    fn remember(&mut self, path: &str, payload: &str, key: [u8; 16], at_ms: i64) {
        self.last.insert(
            path.to_string(),
            Last {
                payload: payload.to_string(),
                key,
                at_ms,
            },
        );
        self.order.push_back((at_ms, path.to_string()));
        // Forget what is older than the window, and the oldest beyond the cap.
        while let Some((t, p)) = self.order.front() {
            let expired = at_ms - *t > self.window_ms;
            if !expired && self.order.len() <= MAX_REMEMBERED {
                break;
            }
            if self.last.get(p).is_some_and(|l| l.at_ms == *t) {
                self.last.remove(p);
            }
            self.order.pop_front();
        }
    }
}

/// What the Contact ID listeners share.
pub struct CidShared {
    /// The receiver's shared state: accounts, writer, metrics, clock.
    pub shared: Arc<Shared>,
    /// `[cid_input]`.
    pub cfg: CidInputConfig,
    /// The accepted framings.
    pub framings: Vec<Framing>,
    retransmissions: Mutex<Retransmissions>,
}

impl CidShared {
    /// Shared state for the listeners; the retransmission memory is reloaded from `db`.
    pub fn new(shared: Arc<Shared>, cfg: CidInputConfig, db: &rusqlite::Connection) -> Result<CidShared, StoreError> {
        let framings: Vec<Framing> = cfg.framings.iter().filter_map(|f| Framing::parse(f)).collect();
        let window_ms = cfg.retransmission_window_secs as i64 * 1000;
        let now_ms = unix_ms(shared.clock.now());
        let mut nonce = [0u8; 8];
        if getrandom::fill(&mut nonce).is_err() {
            nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                .to_be_bytes();
        }
        let mut r = Retransmissions {
            window_ms,
            nonce: u64::from_be_bytes(nonce),
            ..Retransmissions::default()
        };
        if window_ms > 0 {
            let mut stmt = db.prepare(
                "SELECT raw, dedupe_key, received_ms, token, account, receiver, line FROM frames
                 WHERE outcome = 'accepted' ORDER BY id DESC",
            )?;
            let mut rows = stmt.query([])?;
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                let at: i64 = row.get(2)?;
                if now_ms - at > window_ms {
                    break;
                }
                let token: Option<String> = row.get(3)?;
                if !token.is_some_and(|t| TOKENS.contains(&t.as_str())) {
                    continue;
                }
                let raw: Vec<u8> = row.get(0)?;
                let key: Option<Vec<u8>> = row.get(1)?;
                let Some(key) = key.and_then(|k| <[u8; 16]>::try_from(k.as_slice()).ok()) else {
                    continue;
                };
                if let Some(m) = parse(&raw, &Framing::ALL) {
                    found.push((m.path(), m.payload(), key, at));
                }
            }
            for (path, payload, key, at) in found.into_iter().rev() {
                r.remember(&path, &payload, key, at);
            }
        }
        Ok(CidShared {
            shared,
            cfg,
            framings,
            retransmissions: Mutex::new(r),
        })
    }

    fn identity(&self, path: &str, payload: &str, now_ms: i64) -> Option<[u8; 16]> {
        if self.cfg.retransmission_window_secs == 0 {
            return None;
        }
        let mut g = self.retransmissions.lock().unwrap_or_else(|p| p.into_inner());
        Some(g.identity(path, payload, now_ms))
    }
}

/// What a message carries, whatever its framing.
enum Content {
    /// One Contact ID event.
    Cid { message_type: String, event: CidEvent },
    /// SIA data (`#acct|N…`).
    Sia(String),
}

/// A valid message with an account.
struct Message {
    token: &'static str,
    account: String,
    receiver: Option<String>,
    line: String,
    content: Content,
}

impl Message {
    /// The account path: account, receiver and line.
    fn path(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{}",
            self.account,
            self.receiver.as_deref().unwrap_or(""),
            self.line
        )
    }

    /// What a retransmission repeats: the event, not the framing details around it.
    fn payload(&self) -> String {
        match &self.content {
            Content::Cid { message_type, event } => format!(
                "{}|{message_type}{}{:03}{}{}",
                self.token,
                event.qualifier.digit(),
                event.code.0,
                event.group,
                event.zone
            ),
            Content::Sia(d) => format!("{}|{d}", self.token),
        }
    }

    /// The events, built as for the same content inside DC-09.
    fn events(&self) -> Result<Vec<Event>, PayloadError> {
        let (token, data) = match &self.content {
            Content::Cid { event, .. } => (
                Token::AdmCid,
                format!(
                    "{}{:03} {} {}",
                    event.qualifier.digit(),
                    event.code.0,
                    event.group,
                    event.zone
                ),
            ),
            Content::Sia(d) => (Token::SiaDcs, d.clone()),
        };
        let frame = Frame {
            framing: Dc09Framing::default(),
            token,
            encrypted: false,
            seq: 0,
            receiver: self.receiver.clone(),
            line: self.line.clone(),
            account: AccountField::Number(self.account.clone()),
            body: Body::Plain(Plain {
                data,
                xdata: Vec::new(),
                timestamp: None,
            }),
        };
        match &frame.body {
            Body::Plain(p) => events_from(&frame, p),
            Body::Encrypted(_) => Err(PayloadError("not plain".into())),
        }
    }
}

/// A valid message of any framing, or `None`.
fn parse(raw: &[u8], framings: &[Framing]) -> Option<Message> {
    match classify(raw, framings) {
        Input::SurGard(Ok(SgMessage::ContactId(c))) => Some(Message {
            token: "SG-CID",
            account: c.account,
            receiver: Some(c.header.receiver),
            line: c.header.line,
            content: Content::Cid {
                message_type: c.layout.format().to_string(),
                event: c.event,
            },
        }),
        Input::SurGard(Ok(SgMessage::Sia(s))) => {
            let account = parse_sia_data(&s.data).ok()?.account?;
            Some(Message {
                token: "SG-SIA",
                account,
                receiver: Some(s.header.receiver),
                line: s.header.line,
                content: Content::Sia(s.data),
            })
        }
        Input::Lupusec(Ok(f)) => Some(Message {
            token: "LUPUSEC-CID",
            account: f.account,
            receiver: None,
            line: String::new(),
            content: Content::Cid {
                message_type: f.message_type,
                event: f.event,
            },
        }),
        Input::Dc05(Ok(m)) => Some(Message {
            token: "DC05-CID",
            account: m.account,
            receiver: None,
            line: String::new(),
            content: Content::Cid {
                message_type: m.message_type,
                event: m.event,
            },
        }),
        _ => None,
    }
}

/// What to do with one message.
#[derive(Debug)]
pub enum Prepared {
    /// Store the record; after its commit write `record.response` (if any).
    Store(Box<FrameRecord>),
    /// Answer at once (in turn), store nothing: a heartbeat.
    Answer(Vec<u8>),
}

fn answer(rec: &mut FrameRecord, byte: u8) {
    rec.response = Some(vec![byte]);
    rec.response_kind = Some(if byte == ACK {
        ResponseKind::Ack
    } else {
        ResponseKind::Nak
    });
}

/// Decide what to do with one complete message (as [`Splitter`] cut it).
pub fn prepare(cs: &CidShared, raw: &[u8], transport: Transport, peer: SocketAddr) -> Prepared {
    let shared = &cs.shared;
    let now_ms = unix_ms(shared.clock.now());
    let m = &shared.metrics;
    let mut rec = FrameRecord::new(now_ms, transport, peer.to_string(), raw.to_vec(), Outcome::Silent);
    let input = classify(raw, &cs.framings);
    m.cid_messages.inc(match &input {
        Input::SurGard(Ok(SgMessage::Heartbeat(_))) => "heartbeat",
        Input::SurGard(_) => "surgard",
        Input::Lupusec(_) => "lupusec",
        Input::Dc05(_) => "dc05",
        Input::Unknown => "other",
    });
    let refuse = |rec: &mut FrameRecord, outcome: Outcome, reason: &'static str, detail: String, reply: Option<u8>| {
        m.refusals.inc(reason);
        warn!(%peer, reason, detail = %detail, bytes = %String::from_utf8_lossy(raw), "Contact ID message refused");
        rec.outcome = outcome;
        rec.reason = Some(reason);
        rec.detail = Some(detail);
        if let Some(b) = reply {
            answer(rec, b);
        }
    };
    match &input {
        Input::Unknown => {
            refuse(
                &mut rec,
                Outcome::Garbage,
                "garbage",
                format!("{} bytes of no accepted framing", raw.len()),
                None,
            );
            return Prepared::Store(Box::new(rec));
        }
        Input::SurGard(Ok(SgMessage::Heartbeat(h))) => {
            debug!(%peer, receiver = %h.receiver, line = %h.line, "Sur-Gard heartbeat");
            return Prepared::Answer(vec![ACK]);
        }
        Input::SurGard(Ok(SgMessage::Other(o))) => {
            rec.token = Some("SG-OTHER".into());
            refuse(
                &mut rec,
                Outcome::Refused,
                "unsupported_format",
                format!("Sur-Gard protocol ID {:?} is not interpreted", o.id),
                Some(ACK),
            );
            return Prepared::Store(Box::new(rec));
        }
        Input::SurGard(Err(e)) => {
            rec.token = Some("SG-CID".into());
            refuse(&mut rec, Outcome::Refused, "syntax", e.to_string(), Some(NAK));
            return Prepared::Store(Box::new(rec));
        }
        Input::Dc05(Err(e)) => {
            rec.token = Some("DC05-CID".into());
            let reason = if *e == crate::protocol::cid::CidError::Checksum {
                "checksum"
            } else {
                "syntax"
            };
            refuse(&mut rec, Outcome::Refused, reason, e.to_string(), Some(NAK));
            return Prepared::Store(Box::new(rec));
        }
        Input::Lupusec(Err(e)) => {
            rec.token = Some("LUPUSEC-CID".into());
            let reason = if matches!(e, crate::protocol::cidip::LupusecError::Checksum { .. }) {
                "checksum"
            } else {
                "syntax"
            };
            refuse(&mut rec, Outcome::Silent, reason, e.to_string(), None);
            return Prepared::Store(Box::new(rec));
        }
        _ => {}
    }
    let Some(msg) = parse(raw, &cs.framings) else {
        // A SIA line whose data has no account block.
        rec.token = Some("SG-SIA".into());
        refuse(
            &mut rec,
            Outcome::Refused,
            "syntax",
            "SIA data without an account block (#ACCT|…)".into(),
            Some(NAK),
        );
        return Prepared::Store(Box::new(rec));
    };
    rec.token = Some(msg.token.to_string());
    rec.account = Some(msg.account.clone());
    rec.receiver = msg.receiver.clone();
    rec.line = Some(msg.line.clone());
    let accounts = shared.accounts();
    let entry = accounts
        .lookup(&msg.account, msg.receiver.as_deref(), &msg.line)
        .cloned();
    rec.account_id = entry.as_ref().map(|e| e.id);
    match entry {
        None => {
            refuse(
                &mut rec,
                Outcome::Refused,
                "unknown_account",
                "unknown account".into(),
                Some(ACK),
            );
        }
        Some(e) if e.policy.require_encryption => {
            refuse(
                &mut rec,
                Outcome::Refused,
                "plain_refused",
                "the account requires encrypted DC-09; plain Contact ID refused".into(),
                Some(ACK),
            );
        }
        Some(e) => {
            rec.outcome = Outcome::Accepted;
            rec.supervision_ms = e.supervision_ms;
            match msg.events() {
                Ok(events) => {
                    rec.periodic_test = !events.is_empty() && events.iter().all(crate::event::Event::is_periodic_test);
                    rec.events = events;
                }
                Err(e) => {
                    warn!(%peer, account = %msg.account, error = %e, "data not understood; stored and acknowledged for the supervisor");
                    rec.reason = Some("payload");
                    rec.detail = Some(e.0);
                }
            }
            rec.dedupe_key = cs.identity(&msg.path(), &msg.payload(), now_ms);
            answer(&mut rec, ACK);
            debug!(%peer, account = %msg.account, token = msg.token, events = rec.events.len(), "Contact ID message accepted");
        }
    }
    Prepared::Store(Box::new(rec))
}

/// A record for bytes that are no message (the first `max_line_bytes` kept).
fn garbage(cs: &CidShared, raw: &[u8], transport: Transport, peer: SocketAddr, reason: &'static str) -> FrameRecord {
    super::stray_bytes(
        &cs.shared,
        raw,
        cs.cfg.max_line_bytes,
        "Contact ID message",
        transport,
        peer,
        reason,
    )
}

/// Accept Contact ID connections until `cancel` under `admission`'s caps; each connection
/// runs in `tracker`.
pub async fn serve_tcp(
    listener: TcpListener,
    cs: Arc<CidShared>,
    admission: Admission,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let c = cancel.clone();
    admission::serve(listener, admission, cancel, tracker, move |stream, peer, admitted| {
        let cs = cs.clone();
        let cancel = c.clone();
        async move {
            cs.shared.metrics.open_connections.add(1);
            connection(stream, peer, &cs, cancel, admitted).await;
            cs.shared.metrics.open_connections.add(-1);
        }
        .instrument(info_span!("cid-tcp", %peer))
    })
    .await;
}

struct Pending {
    /// `None`: nothing was stored (a heartbeat); answer at once.
    rx: Option<AnswerRx>,
    response: Option<Vec<u8>>,
    kind: Option<ResponseKind>,
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    cs: &CidShared,
    cancel: CancellationToken,
    _admitted: Admitted,
) {
    debug!("connected");
    let shared = &cs.shared;
    let idle = Duration::from_secs(cs.cfg.idle_timeout_secs);
    let line_timeout = Duration::from_secs(cs.cfg.line_timeout_secs);
    let write_timeout = Duration::from_secs(10);
    let mut splitter = Splitter::new(cs.cfg.max_line_bytes);
    let mut buf = BytesMut::new();
    let mut inflight: VecDeque<Pending> = VecDeque::new();
    let mut last_activity = Instant::now();
    let mut timer = super::Deadline::new(last_activity + idle);
    let mut started: Option<Instant> = None;
    let mut reading = true;
    let mut garbage_stored = 0usize;
    loop {
        if !reading && inflight.is_empty() {
            break;
        }
        let deadline = match started {
            Some(t) => (t + line_timeout).min(last_activity + idle),
            None => last_activity + idle,
        };
        let can_read = reading && inflight.len() < shared.cfg.max_inflight_per_connection;
        tokio::select! {
            biased;
            res = async {
                match inflight.front_mut().and_then(|p| p.rx.as_mut()) {
                    Some(rx) => Some(rx.await),
                    None => None,
                }
            }, if !inflight.is_empty() => {
                let p = inflight.pop_front().expect("guarded");
                let committed = match res.map(|r| r.map(|a| a.result)) {
                    None => true,
                    Some(Ok(Ok(_))) => true,
                    Some(Ok(Err(e))) => {
                        warn!(error = %e, "commit failed: no answer sent, the sender will retry");
                        false
                    }
                    Some(Err(_)) => {
                        warn!("store writer stopped: no answer sent");
                        reading = false;
                        false
                    }
                };
                match (committed, p.response, p.kind) {
                    (true, Some(bytes), Some(kind)) => {
                        match tokio::time::timeout(write_timeout, stream.write_all(&bytes)).await {
                            Ok(Ok(())) => shared.metrics.responses.inc(kind.as_str()),
                            _ => {
                                debug!("write failed; closing");
                                reading = false;
                                inflight.clear();
                            }
                        }
                    }
                    _ => shared.metrics.responses.inc("none"),
                }
                last_activity = Instant::now();
            }
            _ = cancel.cancelled(), if reading => {
                reading = false;
            }
            r = stream.readable(), if can_read => {
                if r.is_err() {
                    reading = false;
                    continue;
                }
                match super::read_available(&stream, &mut buf) {
                    Ok(0) => reading = false,
                    Ok(_) => {
                        last_activity = Instant::now();
                        loop {
                            // The rest of an over-long message, arriving later, was counted
                            // and stored with its start.
                            let continued = splitter.is_discarding();
                            let Some(piece) = splitter.next_piece(&buf) else { break };
                            let len = piece.len();
                            let bytes = &buf[..len];
                            let prepared = match piece {
                                Piece::Separator { .. } => None,
                                Piece::Oversize { .. } if continued => None,
                                Piece::Message { .. } => Some(prepare(cs, bytes, Transport::Tcp, peer)),
                                Piece::Garbage { .. } | Piece::Oversize { .. } => {
                                    let reason = if matches!(piece, Piece::Oversize { .. }) { "oversize" } else { "garbage" };
                                    shared.metrics.refusals.inc(reason);
                                    warn!(bytes = len, reason, "bytes outside any Contact ID message discarded");
                                    (garbage_stored < shared.cfg.max_garbage_records_per_connection).then(|| {
                                        garbage_stored += 1;
                                        Prepared::Store(Box::new(garbage(cs, bytes, Transport::Tcp, peer, reason)))
                                    })
                                }
                            };
                            buf.advance(len);
                            match prepared {
                                None => {}
                                Some(Prepared::Answer(bytes)) => inflight.push_back(Pending {
                                    rx: None,
                                    response: Some(bytes),
                                    kind: Some(ResponseKind::Ack),
                                }),
                                Some(Prepared::Store(record)) => {
                                    let response = record.response.clone();
                                    let kind = record.response_kind;
                                    match shared.writer.enqueue(*record).await {
                                        Ok(rx) => inflight.push_back(Pending { rx: Some(rx), response, kind }),
                                        Err(_) => {
                                            reading = false;
                                            break;
                                        }
                                    }
                                }
                            }
                        }
                        started = if buf.is_empty() { None } else { started.or(Some(Instant::now())) };
                        if buf.is_empty() {
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
                if started.is_some_and(|t| Instant::now() >= t + line_timeout) {
                    shared.metrics.refusals.inc("frame_timeout");
                    warn!(buffered = buf.len(), "Contact ID message not completed in time; closing");
                    if garbage_stored < shared.cfg.max_garbage_records_per_connection {
                        let rec = garbage(cs, &buf, Transport::Tcp, peer, "frame_timeout");
                        if let Ok(rx) = shared.writer.enqueue(rec).await {
                            inflight.push_back(Pending { rx: Some(rx), response: None, kind: None });
                        }
                    }
                } else {
                    debug!("idle timeout; closing");
                }
                reading = false;
            }
        }
    }
    let _ = stream.shutdown().await;
    debug!("closed");
}

/// Receive datagrams until `cancel`. A datagram may hold several messages; each is answered
/// with its own datagram, in order, after its commit.
pub async fn serve_udp(socket: UdpSocket, cs: Arc<CidShared>, cancel: CancellationToken, tracker: TaskTracker) {
    let max_inflight = cs.shared.cfg.max_udp_inflight;
    // Room for several messages per datagram.
    let cap = cs.cfg.max_line_bytes * 8;
    super::udp::recv_loop(
        socket,
        max_inflight,
        cap,
        cancel,
        tracker,
        move |socket, datagram, peer, too_long| {
            let cs = cs.clone();
            async move { datagram_task(&cs, &socket, &datagram, peer, too_long).await }
                .instrument(info_span!("cid-udp", %peer))
        },
    )
    .await;
    info!("Contact ID UDP listener stopped");
}

async fn datagram_task(cs: &CidShared, socket: &UdpSocket, datagram: &[u8], peer: SocketAddr, too_long: bool) {
    let shared = &cs.shared;
    let mut prepared = Vec::new();
    if too_long {
        shared.metrics.refusals.inc("oversize");
        prepared.push(Prepared::Store(Box::new(garbage(
            cs,
            datagram,
            Transport::Udp,
            peer,
            "oversize",
        ))));
    } else {
        let (pieces, rest) = split_all(datagram, cs.cfg.max_line_bytes);
        for (piece, bytes) in pieces {
            match piece {
                Piece::Separator { .. } => {}
                Piece::Message { .. } => prepared.push(prepare(cs, bytes, Transport::Udp, peer)),
                Piece::Garbage { .. } | Piece::Oversize { .. } => {
                    let reason = if matches!(piece, Piece::Oversize { .. }) {
                        "oversize"
                    } else {
                        "garbage"
                    };
                    shared.metrics.refusals.inc(reason);
                    prepared.push(Prepared::Store(Box::new(garbage(
                        cs,
                        bytes,
                        Transport::Udp,
                        peer,
                        reason,
                    ))));
                }
            }
        }
        if !rest.is_empty() {
            // A datagram is complete: an unterminated last line is a message all the same.
            prepared.push(prepare(cs, rest, Transport::Udp, peer));
        }
    }
    for p in prepared {
        let (response, kind) = match p {
            Prepared::Answer(b) => (Some(b), Some(ResponseKind::Ack)),
            Prepared::Store(record) => {
                let response = record.response.clone();
                let kind = record.response_kind;
                match shared.writer.submit(*record).await {
                    Ok(_) => (response, kind),
                    Err(e) => {
                        warn!(error = %e, "commit failed: no answer sent, the sender will retry");
                        (None, None)
                    }
                }
            }
        };
        match (response, kind) {
            (Some(bytes), Some(kind)) => match socket.send_to(&bytes, peer).await {
                Ok(_) => shared.metrics.responses.inc(kind.as_str()),
                Err(e) => debug!(error = %e, "send failed"),
            },
            _ => shared.metrics.responses.inc("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_repeat_of_the_last_message_is_a_retransmission() {
        let mut r = Retransmissions {
            window_ms: 60_000,
            ..Retransmissions::default()
        };
        let alarm = r.identity("1234", "E130", 0);
        assert_eq!(r.identity("1234", "E130", 4_000), alarm, "sent again: same identity");
        let restore = r.identity("1234", "R130", 10_000);
        assert_ne!(restore, alarm);
        let again = r.identity("1234", "E130", 20_000);
        assert_ne!(again, alarm, "alarm, restore, alarm: a new alarm");
        // Even within the same millisecond.
        let a = r.identity("9", "E130", 30_000);
        r.identity("9", "R130", 30_000);
        assert_ne!(r.identity("9", "E130", 30_000), a);
        assert_eq!(r.identity("1234", "E130", 79_000), again);
        assert_ne!(r.identity("1234", "E130", 200_000), again, "outside the window: new");
        // Paths are separate.
        let other = r.identity("5678", "E130", 200_000);
        assert_ne!(other, r.identity("1234", "R130", 200_000));
        assert_eq!(r.identity("5678", "E130", 201_000), other);
    }

    #[test]
    fn memory_expires_with_the_window() {
        let mut r = Retransmissions {
            window_ms: 1000,
            ..Retransmissions::default()
        };
        for i in 0..100 {
            r.identity(&format!("a{i}"), "x", i64::from(i) * 100);
        }
        assert!(r.last.len() <= 12, "{}", r.last.len());
        assert!(r.order.len() <= 12);
    }
}
