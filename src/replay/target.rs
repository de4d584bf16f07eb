//! Replaying a trace against a running daemon (`meldkamer replay --target`).
//!
//! A remote daemon runs on the real clock, so the panel frames are made current before they are
//! sent: each frame's timestamp becomes *real now + (frame time − trace clock)*, with the same
//! truncation to whole seconds the receiver applies, so a frame that was 41 s stale in the trace
//! is 41 s stale on the wire. Encrypted frames are decrypted with the account key from the
//! trace's `@records` file, re-stamped and re-encrypted with the same pad; CRC and length are
//! recomputed. Frames that do not decode (or whose key is unknown, or that were encrypted with
//! a wrong key on purpose) travel unchanged.
//!
//! Responses that carry the receiver's clock (NAK, `*ACK`) are compared with a tolerance on the
//! timestamp; everything else must match as in-process. `@advance` sleeps when short (≤ 2 s)
//! and is otherwise skipped with a note; `@restart`, `@stop`, `@start` and `@in-process` make
//! the trace in-process only, and it is skipped.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use super::diff::differing_fields;
use super::run::{DEFAULT_CLOCK, Mismatch, RunError, read_tcp_response};
use crate::protocol::crypto::{Key, decrypt_body, encrypt_body_with_pad};
use crate::protocol::escape::escape;
use crate::protocol::frame::{Body, DecodeOptions, Frame, MAX_FRAME_LEN, Quirks, decode_frame};
use crate::protocol::framer::{Chunk, Framer, split_all};
use crate::protocol::timestamp::Timestamp;
use crate::trace::{Step, Trace, TraceTransport};

/// Where the daemon listens.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// TCP address.
    pub tcp: SocketAddr,
    /// UDP address (`@transport udp`).
    pub udp: SocketAddr,
}

/// Tolerance on receiver timestamps (NAK, `*ACK`) against a real daemon, in seconds.
pub const TIMESTAMP_TOLERANCE_S: i64 = 3;
/// The longest `@advance` that is waited for against a real daemon.
pub const MAX_SLEEP: time::Duration = time::Duration::seconds(2);
const RESPONSE_WAIT: Duration = Duration::from_secs(10);
const SILENCE_WAIT: Duration = Duration::from_millis(250);

/// One account of the trace's records, as far as re-stamping needs it.
#[derive(Debug, Clone)]
struct KeyEntry {
    account: String,
    receiver: String,
    line: String,
    key: Option<Key>,
    check_plain_timestamp: bool,
}

/// The accounts of a trace's `@records` files: keys for re-stamping encrypted frames and for
/// comparing encrypted responses.
#[derive(Debug, Clone, Default)]
pub struct KeyBook {
    entries: Vec<KeyEntry>,
}

impl KeyBook {
    /// The accounts from the trace's `@records` files.
    pub fn for_trace(trace: &Trace) -> Result<KeyBook, RunError> {
        let mut book = KeyBook::default();
        for (_, s) in &trace.steps {
            if let Step::Records(p) = s {
                let r = crate::records::parse_file(p).map_err(|source| RunError::Records {
                    trace: trace.path.display().to_string(),
                    source,
                })?;
                for a in r.accounts {
                    book.entries.push(KeyEntry {
                        account: a.spec.account,
                        receiver: a.spec.receiver,
                        line: a.spec.line,
                        key: a.spec.key,
                        check_plain_timestamp: a.spec.check_plain_timestamp,
                    });
                }
            }
        }
        Ok(book)
    }

    /// The best match, as the receiver's account table chooses it (exact receiver and line
    /// first, then wildcards).
    fn lookup(&self, f: &Frame) -> Option<&KeyEntry> {
        let account = f.account.number()?;
        let receiver = f.receiver.as_deref().unwrap_or("");
        self.entries
            .iter()
            .filter(|e| e.account == account)
            .filter_map(|e| {
                let r = if e.receiver.is_empty() {
                    0
                } else if e.receiver == receiver {
                    2
                } else {
                    return None;
                };
                let l = if e.line.is_empty() {
                    0
                } else if e.line == f.line {
                    1
                } else {
                    return None;
                };
                Some((r + l, e))
            })
            .max_by_key(|(s, _)| *s)
            .map(|(_, e)| e)
    }

    /// The key of the account a frame belongs to.
    pub fn key_for(&self, f: &Frame) -> Option<&Key> {
        self.lookup(f)?.key.as_ref()
    }
}

fn opts() -> DecodeOptions {
    DecodeOptions {
        quirks: Quirks::ALL,
        max_len: MAX_FRAME_LEN,
    }
}

/// The timestamp of a frame's clear content (decrypting with `key` when encrypted).
fn frame_time(f: &Frame, key: Option<&Key>) -> Option<Timestamp> {
    match &f.body {
        Body::Plain(p) => p.timestamp,
        Body::Encrypted(ct) => decrypt_body(key?, ct).ok()?.plain.timestamp,
    }
}

/// The frame with its timestamp replaced (re-encrypted with the same pad when encrypted).
fn with_time(f: &Frame, key: Option<&Key>, ts: Timestamp) -> Option<Frame> {
    let mut out = f.clone();
    match &mut out.body {
        Body::Plain(p) => {
            p.timestamp.as_ref()?;
            p.timestamp = Some(ts);
        }
        Body::Encrypted(ct) => {
            let key = key?;
            let mut d = decrypt_body(key, ct).ok()?;
            d.plain.timestamp = Some(ts);
            *ct = encrypt_body_with_pad(key, &d)?;
        }
    }
    Some(out)
}

/// Whole seconds, truncated toward zero (as the receiver computes skew).
fn whole_seconds(d: time::Duration) -> i64 {
    d.whole_seconds()
}

/// The new timestamp for a frame that was `skew_s` whole seconds from the trace clock, sent
/// at real time `now`: the receiver compares whole seconds (its clock truncated to the second,
/// as a panel's is), so the skew counts from the start of the current second.
fn restamped(skew_s: i64, now: OffsetDateTime) -> OffsetDateTime {
    now.replace_nanosecond(0).unwrap_or(now) + time::Duration::seconds(skew_s)
}

/// Does this frame's timestamp matter to the receiver (encrypted, or an account that checks
/// plain timestamps)? Such frames are not sent in the last instants of a second.
fn time_sensitive(f: &Frame, keys: &KeyBook) -> bool {
    f.encrypted || keys.lookup(f).is_some_and(|e| e.check_plain_timestamp)
}

/// One frame made current: `None` when it cannot be (no timestamp, no key, not decodable, or
/// it does not re-encode to the bytes it came from).
fn restamp_frame(raw: &[u8], vclock: OffsetDateTime, now: OffsetDateTime, keys: &KeyBook) -> Option<Vec<u8>> {
    let f = decode_frame(raw, &opts()).ok()?;
    if f.encode() != raw {
        return None;
    }
    let key = keys.key_for(&f);
    let ts = frame_time(&f, key)?;
    let skew = whole_seconds(ts.to_datetime() - vclock);
    let new = with_time(&f, key, Timestamp::from_datetime(restamped(skew, now)))?;
    Some(new.encode())
}

/// The panel bytes of a `>` line made current. Garbage and undecodable frames are kept.
pub fn restamp(bytes: &[u8], vclock: OffsetDateTime, now: OffsetDateTime, keys: &KeyBook) -> Vec<u8> {
    let (chunks, rest) = split_all(&Framer::new(MAX_FRAME_LEN, true), bytes);
    let mut out = Vec::with_capacity(bytes.len());
    for (chunk, b) in chunks {
        match chunk {
            Chunk::Frame { .. } => out.extend(restamp_frame(b, vclock, now, keys).unwrap_or_else(|| b.to_vec())),
            _ => out.extend_from_slice(b),
        }
    }
    out.extend_from_slice(rest);
    out
}

/// Does some frame in `bytes` sit within a second or two of the edges of the (default)
/// timestamp window, where the receiver's whole-second truncation decides? Such a `>` line is
/// sent early in a second, so that stamping and receipt fall into the same second.
fn near_window_edge(bytes: &[u8], vclock: OffsetDateTime, keys: &KeyBook) -> bool {
    let w = crate::protocol::policy::Window::default();
    let (chunks, _) = split_all(&Framer::new(MAX_FRAME_LEN, true), bytes);
    chunks.iter().any(|(c, b)| {
        let Some(f) = matches!(c, Chunk::Frame { .. })
            .then(|| decode_frame(b, &opts()).ok())
            .flatten()
        else {
            return false;
        };
        let Some(ts) = time_sensitive(&f, keys)
            .then(|| frame_time(&f, keys.key_for(&f)))
            .flatten()
        else {
            return false;
        };
        let skew = whole_seconds(ts.to_datetime() - vclock);
        (-w.behind_s - 2..=-w.behind_s + 1).contains(&skew) || (w.ahead_s - 1..=w.ahead_s + 2).contains(&skew)
    })
}

/// Compare a response from a real daemon with the trace's expectation. A timestamp in the
/// expected response is receiver time on the trace clock: shifted by `shift` (real − trace
/// clock at the time of sending), it must be within [`TIMESTAMP_TOLERANCE_S`] of the actual one.
pub fn compare_live(expected: &[u8], actual: &[u8], keys: &KeyBook, shift: time::Duration) -> Vec<&'static str> {
    let (Ok(e), Ok(a)) = (decode_frame(expected, &opts()), decode_frame(actual, &opts())) else {
        return differing_fields(expected, actual, None);
    };
    let key = keys.key_for(&a).or_else(|| keys.key_for(&e));
    let normalised = match (frame_time(&e, key), frame_time(&a, key)) {
        (Some(et), Some(at)) => {
            let want = et.to_datetime() + shift;
            if (at.to_datetime() - want).abs() <= time::Duration::seconds(TIMESTAMP_TOLERANCE_S) {
                with_time(&e, key, at).map(|f| f.encode())
            } else {
                None
            }
        }
        _ => None,
    };
    differing_fields(normalised.as_deref().unwrap_or(expected), actual, key)
}

/// Why a trace cannot run against a remote daemon, if it cannot.
pub fn in_process_only(trace: &Trace) -> Option<String> {
    trace.steps.iter().find_map(|(line, s)| {
        let what = match s {
            Step::Restart => "@restart",
            Step::Stop => "@stop",
            Step::Start => "@start",
            Step::InProcessOnly => "@in-process",
            Step::Operator(crate::trace::OperatorStep::Extend { .. }) => "@extend",
            Step::Operator(crate::trace::OperatorStep::Service { .. }) => "@service",
            Step::Transport(t) if super::side::is_side(*t) => {
                return Some(format!("@transport {} at line {line}", super::side::name(*t)));
            }
            _ => return None,
        };
        Some(format!("{what} at line {line}"))
    })
}

/// The result of a trace against a real daemon.
#[derive(Debug, Clone)]
pub struct TargetRun {
    /// Skipped, and why (needs in-process).
    pub skipped: Option<String>,
    /// Responses that differ.
    pub mismatches: Vec<Mismatch>,
    /// What could not be reproduced exactly (`@advance` skipped…).
    pub notes: Vec<String>,
    /// Every expectation line with the actual response.
    pub actual: Vec<(usize, Option<Vec<u8>>)>,
}

struct Peer {
    target: Target,
    transport: TraceTransport,
    tcp: Option<(TcpStream, BytesMut)>,
    udp: Option<UdpSocket>,
}

impl Peer {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self.transport {
            TraceTransport::Tcp => {
                if self.tcp.is_none() {
                    let s = TcpStream::connect(self.target.tcp)
                        .await
                        .map_err(|e| format!("connect {}: {e}", self.target.tcp))?;
                    let _ = s.set_nodelay(true);
                    self.tcp = Some((s, BytesMut::new()));
                }
                let Some((s, _)) = self.tcp.as_mut() else {
                    return Err("no connection".into());
                };
                s.write_all(bytes).await.map_err(|e| format!("write: {e}"))
            }
            TraceTransport::Udp => {
                if self.udp.is_none() {
                    let bind = if self.target.udp.is_ipv6() {
                        "[::1]:0"
                    } else {
                        "127.0.0.1:0"
                    };
                    self.udp = Some(UdpSocket::bind(bind).await.map_err(|e| format!("bind: {e}"))?);
                }
                let Some(s) = self.udp.as_ref() else {
                    return Err("no socket".into());
                };
                s.send_to(bytes, self.target.udp)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("send to {}: {e}", self.target.udp))
            }
            // Traces using these are skipped (`in_process_only`).
            t => Err(format!("@transport {} needs in-process", super::side::name(t))),
        }
    }

    async fn receive(&mut self, wait: Duration) -> Option<Vec<u8>> {
        match self.transport {
            TraceTransport::Tcp => {
                let (s, buf) = self.tcp.as_mut()?;
                read_tcp_response(s, buf, wait).await
            }
            TraceTransport::Udp => {
                let s = self.udp.as_ref()?;
                let mut b = vec![0u8; MAX_FRAME_LEN + 1];
                match tokio::time::timeout(wait, s.recv_from(&mut b)).await {
                    Ok(Ok((n, _))) => Some(b[..n].to_vec()),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// Run one trace against a daemon at `target`, comparing responses only.
pub async fn run_against(trace: &Trace, target: Target) -> Result<TargetRun, RunError> {
    let mut run = TargetRun {
        skipped: in_process_only(trace).map(|w| format!("needs in-process: {w}")),
        mismatches: Vec::new(),
        notes: Vec::new(),
        actual: Vec::new(),
    };
    if run.skipped.is_some() {
        return Ok(run);
    }
    let keys = KeyBook::for_trace(trace)?;
    let mut vclock = trace
        .steps
        .iter()
        .find_map(|(_, s)| match s {
            Step::Clock(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(DEFAULT_CLOCK);
    let mut shift = OffsetDateTime::now_utc() - vclock;
    let mut peer = Peer {
        target,
        transport: TraceTransport::Tcp,
        tcp: None,
        udp: None,
    };
    let io = |line: usize, what: String| RunError::Io {
        trace: trace.path.display().to_string(),
        line,
        what,
    };
    for (line, step) in &trace.steps {
        match step {
            Step::Title(_)
            | Step::Records(_)
            | Step::PadSeed(_)
            | Step::NoOutcome
            | Step::InProcessOnly
            | Step::Restart
            | Step::Stop
            | Step::Start
            | Step::Operator(_) => {}
            Step::Clock(t) => vclock = *t,
            Step::Transport(t) => peer.transport = *t,
            Step::Connect => peer.tcp = None,
            Step::Advance(d) => {
                vclock += *d;
                if *d <= MAX_SLEEP {
                    tokio::time::sleep(d.unsigned_abs()).await;
                } else {
                    run.notes.push(format!(
                        "line {line}: @advance {}s not waited for against a remote daemon",
                        d.whole_seconds()
                    ));
                }
            }
            Step::Send(bytes) => {
                if near_window_edge(bytes, vclock, &keys) {
                    // Keep clear of a second boundary between stamping and receipt, so the
                    // receiver's whole-second skew is the trace's.
                    let frac = OffsetDateTime::now_utc().nanosecond();
                    if frac > 400_000_000 {
                        tokio::time::sleep(Duration::from_nanos(u64::from(1_000_000_000 - frac) + 5_000_000)).await;
                    }
                }
                let now = OffsetDateTime::now_utc();
                shift = now - vclock;
                let bytes = restamp(bytes, vclock, now, &keys);
                peer.send(&bytes).await.map_err(|e| io(*line, e))?;
            }
            Step::Expect(expected) => {
                let got = peer
                    .receive(if expected.is_some() {
                        RESPONSE_WAIT
                    } else {
                        SILENCE_WAIT
                    })
                    .await;
                let fields = match (expected, &got) {
                    (Some(e), Some(a)) => compare_live(e, a, &keys, shift),
                    (None, None) => Vec::new(),
                    (Some(_), None) => vec!["response (none received)"],
                    (None, Some(_)) => vec!["response (none expected)"],
                };
                if !fields.is_empty() {
                    run.mismatches.push(Mismatch {
                        line: *line,
                        expected: expected.as_deref().map_or("(none)".into(), escape),
                        actual: got.as_deref().map_or("(none)".into(), escape),
                        fields,
                    });
                }
                run.actual.push((*line, got));
            }
        }
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::crypto::{SeededPad, encrypt_body};
    use crate::protocol::frame::{AccountField, Framing, Plain, Token};
    use crate::protocol::response::{ack_encrypted, nak};
    use time::macros::datetime;

    const T: OffsetDateTime = datetime!(2026-01-15 12:00:00 UTC);

    fn book(key: &Key) -> KeyBook {
        KeyBook {
            entries: vec![KeyEntry {
                account: "5678".into(),
                receiver: String::new(),
                line: String::new(),
                key: Some(key.clone()),
                check_plain_timestamp: false,
            }],
        }
    }

    fn enc_frame(key: &Key, ts: OffsetDateTime) -> Vec<u8> {
        let p = Plain {
            data: "#5678|Nri1/BA01".into(),
            xdata: vec![],
            timestamp: Some(Timestamp::from_datetime(ts)),
        };
        Frame {
            framing: Framing::default(),
            token: Token::SiaDcs,
            encrypted: true,
            seq: 7,
            receiver: Some("1".into()),
            line: "1".into(),
            account: AccountField::Number("5678".into()),
            body: Body::Encrypted(encrypt_body(key, &p, false, &mut SeededPad::new(3))),
        }
        .encode()
    }

    #[test]
    fn restamping_keeps_the_skew_and_the_pad() {
        let key = Key::from_hex("2B7E151628AED2A6ABF7158809CF4F3C").expect("key");
        let keys = book(&key);
        let raw = enc_frame(&key, T - time::Duration::seconds(41));
        let now = datetime!(2026-03-01 08:30:10.400 UTC);
        let out = restamp(&raw, T, now, &keys);
        let f = decode_frame(&out, &opts()).expect("decodes: CRC and length recomputed");
        let Body::Encrypted(ct) = &f.body else {
            panic!("encrypted")
        };
        let d = decrypt_body(&key, ct).expect("re-encrypted with the account key");
        assert_eq!(
            d.plain.timestamp.map(|t| t.to_wire_string()).as_deref(),
            Some("08:29:29,03-01-2026")
        );
        assert_eq!(d.plain.data, "#5678|Nri1/BA01");
        let Body::Encrypted(old) = &decode_frame(&raw, &opts()).expect("raw").body else {
            panic!()
        };
        assert_eq!(decrypt_body(&key, old).expect("old").pad, d.pad, "same pad");
        // Ahead: counted from the start of the current second, as the receiver compares.
        let ahead = restamp(&enc_frame(&key, T + time::Duration::seconds(21)), T, now, &keys);
        let f = decode_frame(&ahead, &opts()).expect("decodes");
        assert_eq!(
            frame_time(&f, Some(&key)).map(|t| t.to_wire_string()).as_deref(),
            Some("08:30:31,03-01-2026")
        );
        // Garbage, undecodable frames and frames without a key are kept as they are.
        let junk = b"junk\n0000\r".to_vec();
        assert_eq!(restamp(&junk, T, now, &keys), junk);
        assert_eq!(restamp(&raw, T, now, &KeyBook::default()), raw);
    }

    #[test]
    fn receiver_time_is_compared_with_tolerance() {
        let key = Key::from_hex("2B7E151628AED2A6ABF7158809CF4F3C").expect("key");
        let keys = book(&key);
        let shift = datetime!(2026-03-01 08:30:00 UTC) - T;
        let expected = nak(T, Framing::default()).encode();
        let close = nak(datetime!(2026-03-01 08:30:02 UTC), Framing::default()).encode();
        let far = nak(datetime!(2026-03-01 08:30:09 UTC), Framing::default()).encode();
        assert!(compare_live(&expected, &close, &keys, shift).is_empty());
        assert_eq!(compare_live(&expected, &far, &keys, shift), vec!["crc", "timestamp"]);

        let ev = decode_frame(&enc_frame(&key, T), &opts()).expect("frame");
        let e = ack_encrypted(&ev, &key, T, &mut SeededPad::new(1), false).encode();
        let a = ack_encrypted(
            &ev,
            &key,
            datetime!(2026-03-01 08:29:59 UTC),
            &mut SeededPad::new(2),
            false,
        )
        .encode();
        assert!(compare_live(&e, &a, &keys, shift).is_empty());
        let late = ack_encrypted(
            &ev,
            &key,
            datetime!(2026-03-01 08:31:00 UTC),
            &mut SeededPad::new(2),
            false,
        )
        .encode();
        assert!(compare_live(&e, &late, &keys, shift).contains(&"timestamp (decrypted)"));
    }
}
