//! `meldkamer send`: a panel simulator. Builds one DC-09 frame (fresh UTC timestamp; encrypted
//! when a key is given), sends it over TCP or UDP and waits for the answer as a panel does:
//!
//! - no answer within `--timeout`: send again (same sequence number, fresh timestamp), up to
//!   `--retries` times;
//! - NAK: read the receiver's clock from the NAK, correct the panel clock by the difference,
//!   rebuild the frame with the corrected timestamp and the same sequence number, and send it
//!   once more (`protocols/dc09.md` §10);
//! - DUH: give up (the receiver cannot process this frame; resending will not help).
//!
//! Both frames are printed decoded, as JSON (the escapes of `meldkamer parse`). The command
//! fails unless an ACK came. `--dry-run` prints the frame and sends nothing (for writing
//! fixtures without computing a CRC by hand).

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use crate::cli::parse::escape;
use crate::protocol::crypto::{Key, KeyFormat, PadSource, SeededPad, decrypt_body, encrypt_body};
use crate::protocol::frame::{AccountField, Body, DecodeOptions, Frame, Framing, MAX_FRAME_LEN, Plain, Quirks, Token};
use crate::protocol::frame::{decode_frame, push_latin1, write_plain_tail};
use crate::protocol::timestamp::Timestamp;

/// What `send` was asked.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("message").required(true).args(["sia", "cid", "null"])))]
pub struct SendArgs {
    /// The receiver, HOST:PORT (not needed with --dry-run).
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "dry_run")]
    pub target: Option<String>,
    /// Send over UDP instead of TCP.
    #[arg(long)]
    pub udp: bool,
    /// Account number (3–16 hex digits).
    #[arg(long)]
    pub account: String,
    /// Account key as hex digits (32/48/64): the frame is encrypted.
    #[arg(long, conflicts_with = "key_ascii", value_name = "HEX")]
    pub key: Option<String>,
    /// Account key as ASCII characters (16/24/32): the frame is encrypted.
    #[arg(long, value_name = "TEXT")]
    pub key_ascii: Option<String>,
    /// A SIA-DCS event: two-letter code and optional zone, e.g. BA,01.
    #[arg(long, value_name = "CODE[,ZONE]")]
    pub sia: Option<String>,
    /// A Contact ID event: qualifier+event, group, zone, e.g. 1130,01,003.
    #[arg(long, value_name = "QXYZ,GG,CCC")]
    pub cid: Option<String>,
    /// A link test (NULL).
    #[arg(long)]
    pub null: bool,
    /// Sequence number 0–9999. Default: the clock in tenths of a second (1–9999, the same
    /// number again after about 17 minutes), and `send` does not end within the tenth its
    /// number came from, so sends one after another get new numbers. The same number with the
    /// same event within the receiver's retransmission window (10 minutes by default) is a
    /// retransmission: acknowledged, not a new event.
    #[arg(long, value_name = "N")]
    pub seq: Option<u16>,
    /// Receiver number (R, hex digits; default: none).
    #[arg(long, value_name = "R")]
    pub receiver: Option<String>,
    /// Line number (L, hex digits).
    #[arg(long, value_name = "L", default_value = "0")]
    pub line: String,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub timeout: f64,
    /// Resends after a timeout.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub retries: u32,
    /// Panel clock error in seconds (e.g. -300: the panel is 5 minutes behind), to see the NAK
    /// and the clock correction.
    #[arg(long, value_name = "S", default_value_t = 0, allow_hyphen_values = true)]
    pub skew: i64,
    /// Print the frame and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The panel's clock for --dry-run (RFC 3339; default now).
    #[arg(long, requires = "dry_run", value_name = "TIME")]
    pub now: Option<String>,
    /// Seed for the pad of an encrypted frame (reproducible bytes; default random).
    #[arg(long, value_name = "N")]
    pub pad_seed: Option<u64>,
}

/// Errors of the `send` command.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
    /// The key text is not a key.
    #[error("the key is not usable")]
    Key(#[source] crate::protocol::crypto::KeyError),
    /// The runtime could not start.
    #[error("starting the runtime")]
    Runtime(#[source] std::io::Error),
    /// No ACK came (the report says what did).
    #[error("no ACK: {0}")]
    NoAck(String),
}

/// The message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `SIA-DCS`, `ADM-CID` or `NULL`.
    pub token: Token,
    /// The data field.
    pub data: String,
}

fn usage(s: impl Into<String>) -> SendError {
    SendError::Usage(s.into())
}

/// The message of `--sia`, `--cid` or `--null` for `account`.
pub fn message(args: &SendArgs) -> Result<Message, SendError> {
    let acct = &args.account;
    if let Some(s) = &args.sia {
        let (code, zone) = s.split_once(',').unwrap_or((s, ""));
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(usage(format!(
                "--sia {s:?}: the code is two capital letters (BA, FA, OP…)"
            )));
        }
        if zone.len() > 4 || !zone.bytes().all(|b| b.is_ascii_digit()) {
            return Err(usage(format!("--sia {s:?}: the zone is up to four digits")));
        }
        return Ok(Message {
            token: Token::SiaDcs,
            data: format!("#{acct}|Nri1/{code}{zone}"),
        });
    }
    if let Some(c) = &args.cid {
        let parts: Vec<&str> = c.split(',').collect();
        let ok = matches!(parts.as_slice(), [e, g, z]
            if e.len() == 4 && g.len() == 2 && z.len() == 3
                && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())));
        if !ok {
            return Err(usage(format!(
                "--cid {c:?}: QXYZ,GG,CCC (qualifier and event code, group, zone), e.g. 1130,01,003"
            )));
        }
        return Ok(Message {
            token: Token::AdmCid,
            data: format!("#{acct}|{} {} {}", parts[0], parts[1], parts[2]),
        });
    }
    Ok(Message {
        token: Token::Null,
        data: String::new(),
    })
}

fn check_hex(what: &str, s: &str, min: usize, max: usize) -> Result<(), SendError> {
    if !(min..=max).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(usage(format!("{what} {s:?}: {min} to {max} hex digits")));
    }
    Ok(())
}

/// Build the frame: `time` is the panel's clock (whole seconds, UTC).
pub fn build(
    args: &SendArgs,
    msg: &Message,
    seq: u16,
    key: Option<&Key>,
    time: OffsetDateTime,
    pad: &mut dyn PadSource,
) -> Frame {
    let plain = Plain {
        data: msg.data.clone(),
        xdata: Vec::new(),
        timestamp: Some(Timestamp::from_datetime(time)),
    };
    let body = match key {
        Some(k) => Body::Encrypted(encrypt_body(k, &plain, false, pad)),
        None => Body::Plain(plain),
    };
    Frame {
        framing: Framing::default(),
        token: msg.token.clone(),
        encrypted: key.is_some(),
        seq: seq % 10000,
        receiver: args.receiver.clone(),
        line: args.line.clone(),
        account: AccountField::Number(args.account.clone()),
        body,
    }
}

/// One frame, decoded for the report.
#[derive(Debug, Serialize)]
pub struct FrameView {
    /// The bytes, escaped as `meldkamer parse` writes them.
    pub bytes: String,
    /// The decoded frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<Frame>,
    /// The decrypted content of an encrypted frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<String>,
    /// Why it does not decode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Decode `raw` for the report (decrypting with `key`).
pub fn view(raw: &[u8], key: Option<&Key>) -> FrameView {
    let opts = DecodeOptions {
        quirks: Quirks::ALL,
        max_len: MAX_FRAME_LEN,
    };
    match decode_frame(raw, &opts) {
        Ok(f) => {
            let plaintext = match (&f.body, key) {
                (Body::Encrypted(ct), Some(k)) => Some(match decrypt_body(k, ct) {
                    Ok(d) => {
                        let mut v = Vec::new();
                        push_latin1(&d.pad, &mut v);
                        if d.separator || !d.plain.data.is_empty() {
                            v.push(b'|');
                        }
                        write_plain_tail(&d.plain, &mut v);
                        escape(&v)
                    }
                    Err(e) => format!("(does not decrypt with the key: {e})"),
                }),
                _ => None,
            };
            FrameView {
                bytes: escape(raw),
                frame: Some(f),
                plaintext,
                error: None,
            }
        }
        Err(e) => FrameView {
            bytes: escape(raw),
            frame: None,
            plaintext: None,
            error: Some(e.to_string()),
        },
    }
}

/// One exchange: what was sent, what came back.
#[derive(Debug, Serialize)]
pub struct Exchange {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Why this attempt was made.
    pub reason: String,
    /// The frame sent.
    pub sent: FrameView,
    /// The answer (`None`: none within the timeout).
    pub received: Option<FrameView>,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct SendReport {
    /// Where.
    pub target: String,
    /// TCP or UDP.
    pub transport: &'static str,
    /// Each attempt.
    pub exchanges: Vec<Exchange>,
    /// `ACK`, `*ACK`, `NAK`, `DUH`, `timeout` or `error: …`.
    pub result: String,
    /// True when an ACK came.
    pub acknowledged: bool,
}

enum Link {
    Tcp(SocketAddr),
    Udp(UdpSocket, SocketAddr),
}

impl Link {
    async fn exchange(&self, frame: &[u8], wait: Duration) -> Result<Option<Vec<u8>>, String> {
        match self {
            Link::Tcp(addr) => {
                // A panel connects per message and waits for the answer.
                let mut s = tokio::time::timeout(wait, TcpStream::connect(addr))
                    .await
                    .map_err(|_| format!("connect {addr}: timed out"))?
                    .map_err(|e| format!("connect {addr}: {e}"))?;
                let _ = s.set_nodelay(true);
                s.write_all(frame).await.map_err(|e| format!("write: {e}"))?;
                let mut buf = BytesMut::new();
                let r = crate::replay::run::read_tcp_response(&mut s, &mut buf, wait).await;
                let _ = s.shutdown().await;
                Ok(r)
            }
            Link::Udp(sock, addr) => {
                sock.send_to(frame, addr).await.map_err(|e| format!("send: {e}"))?;
                let mut b = vec![0u8; MAX_FRAME_LEN + 1];
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    match tokio::time::timeout_at(deadline, sock.recv_from(&mut b)).await {
                        Ok(Ok((n, from))) if from == *addr => return Ok(Some(b[..n].to_vec())),
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => return Err(format!("receive: {e}")),
                        Err(_) => return Ok(None),
                    }
                }
            }
        }
    }
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Tenths of a second since the epoch.
fn tenths(t: OffsetDateTime) -> i64 {
    crate::clock::unix_ms(t).div_euclid(100)
}

/// The default sequence number at `now`: the clock in tenths of a second, 1–9999. It comes
/// round again after 999.9 s, longer than the receiver's default retransmission window
/// (600 s), so sends at least a tenth of a second apart never look like retransmissions of
/// each other. (Whole seconds, as before, gave two sends within one second the same number:
/// the receiver acknowledged the second and dropped it as a retransmission.)
pub fn default_seq(now: OffsetDateTime) -> u16 {
    (tenths(now).rem_euclid(9999) + 1) as u16
}

/// Run `send`: print the report (JSON) and fail unless an ACK came. With the default sequence
/// number it does not return within the tenth of a second the number came from, so the next
/// `send` of a script gets another one.
pub fn run(args: &SendArgs, out: &mut dyn Write) -> Result<(), SendError> {
    let started = OffsetDateTime::now_utc();
    let result = run_from(args, out, started);
    if args.seq.is_none() && args.now.is_none() {
        let next = (tenths(started) + 1) * 100;
        let left = next - crate::clock::unix_ms(OffsetDateTime::now_utc());
        if left > 0 {
            std::thread::sleep(Duration::from_millis(left as u64));
        }
    }
    result
}

fn run_from(args: &SendArgs, out: &mut dyn Write, started: OffsetDateTime) -> Result<(), SendError> {
    check_hex("--account", &args.account, 3, 16)?;
    check_hex("--line", &args.line, 1, 6)?;
    if let Some(r) = &args.receiver {
        check_hex("--receiver", r, 1, 6)?;
    }
    if args.seq.is_some_and(|s| s > 9999) {
        return Err(usage("--seq: 0 to 9999"));
    }
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return Err(usage("--timeout: a positive number of seconds"));
    }
    let key = match (&args.key, &args.key_ascii) {
        (Some(k), _) => Some(Key::parse(k, KeyFormat::Hex).map_err(SendError::Key)?),
        (None, Some(k)) => Some(Key::parse(k, KeyFormat::Ascii).map_err(SendError::Key)?),
        _ => None,
    };
    let msg = message(args)?;
    let mut pad: Box<dyn PadSource> = match args.pad_seed {
        Some(s) => Box::new(SeededPad::new(s)),
        None => Box::new(crate::receiver::pad::OsPad),
    };
    let now = match &args.now {
        Some(s) => OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|e| usage(format!("--now {s:?} is not an RFC 3339 time: {e}")))?,
        None => started,
    };
    let seq = args.seq.unwrap_or_else(|| default_seq(now));
    let mut clock_error = time::Duration::seconds(args.skew);
    if args.dry_run {
        let f = build(
            args,
            &msg,
            seq,
            key.as_ref(),
            whole_seconds(now + clock_error),
            pad.as_mut(),
        );
        let v = view(&f.encode(), key.as_ref());
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let target = args.target.clone().unwrap_or_default();
    let addr = target
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| usage(format!("--target {target:?}: not a HOST:PORT address")))?;
    let wait = Duration::from_secs_f64(args.timeout);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SendError::Runtime)?;
    let report = rt.block_on(async {
        let link = if args.udp {
            let bind = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
            match UdpSocket::bind(bind).await {
                Ok(s) => Link::Udp(s, addr),
                Err(e) => {
                    return SendReport {
                        target: target.clone(),
                        transport: "udp",
                        exchanges: Vec::new(),
                        result: format!("error: bind: {e}"),
                        acknowledged: false,
                    };
                }
            }
        } else {
            Link::Tcp(addr)
        };
        let mut report = SendReport {
            target: target.clone(),
            transport: if args.udp { "udp" } else { "tcp" },
            exchanges: Vec::new(),
            result: "timeout".into(),
            acknowledged: false,
        };
        let mut attempt = 0;
        let mut timeouts = 0;
        let mut corrected = false;
        let mut reason = "first attempt".to_string();
        loop {
            attempt += 1;
            let panel_time = whole_seconds(OffsetDateTime::now_utc() + clock_error);
            let frame = build(args, &msg, seq, key.as_ref(), panel_time, pad.as_mut()).encode();
            let sent = view(&frame, key.as_ref());
            let answer = match link.exchange(&frame, wait).await {
                Ok(a) => a,
                Err(e) => {
                    report.exchanges.push(Exchange {
                        attempt,
                        reason: reason.clone(),
                        sent,
                        received: None,
                    });
                    report.result = format!("error: {e}");
                    break;
                }
            };
            let received = answer.as_deref().map(|a| view(a, key.as_ref()));
            let decoded = received.as_ref().and_then(|r| r.frame.clone());
            report.exchanges.push(Exchange {
                attempt,
                reason: reason.clone(),
                sent,
                received,
            });
            match decoded {
                None if answer.is_none() => {
                    report.result = "timeout".into();
                    if timeouts >= args.retries {
                        break;
                    }
                    timeouts += 1;
                    reason = format!(
                        "no answer within {} s: resend {timeouts} of {}",
                        args.timeout, args.retries
                    );
                }
                None => {
                    report.result = "error: the answer is not a DC-09 frame".into();
                    break;
                }
                Some(f) => {
                    let name = format!("{}{}", if f.encrypted { "*" } else { "" }, f.token.as_str());
                    report.result = name.clone();
                    match f.token {
                        Token::Ack => {
                            // An encrypted ACK must decrypt with the account key.
                            report.acknowledged = match (&f.body, key.as_ref()) {
                                (Body::Encrypted(ct), Some(k)) => decrypt_body(k, ct).is_ok(),
                                (Body::Encrypted(_), None) => false,
                                (Body::Plain(_), _) => true,
                            };
                            if !report.acknowledged {
                                report.result = format!("{name} that does not decrypt with the account key");
                            }
                            break;
                        }
                        Token::Nak if !corrected => {
                            let Body::Plain(Plain {
                                timestamp: Some(receiver_time),
                                ..
                            }) = &f.body
                            else {
                                report.result = "NAK without the receiver's time".into();
                                break;
                            };
                            // Set the panel clock to the receiver's: the error is the
                            // difference between our clock and the NAK's time.
                            let ours = whole_seconds(OffsetDateTime::now_utc());
                            let before = clock_error;
                            clock_error = receiver_time.to_datetime() - ours;
                            corrected = true;
                            reason = format!(
                                "NAK: panel clock corrected by {:+} s to the receiver's time; same sequence number",
                                (clock_error - before).whole_seconds()
                            );
                        }
                        _ => break,
                    }
                }
            }
        }
        report
    });
    let _ = writeln!(out, "{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    if report.acknowledged {
        Ok(())
    } else {
        Err(SendError::NoAck(report.result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        a: SendArgs,
    }

    fn args(v: &[&str]) -> SendArgs {
        let mut all = vec!["send"];
        all.extend_from_slice(v);
        Wrap::try_parse_from(all).expect("parses").a
    }

    #[test]
    fn messages() {
        let a = args(&["--dry-run", "--account", "1234", "--sia", "BA,01"]);
        assert_eq!(message(&a).expect("sia").data, "#1234|Nri1/BA01");
        let a = args(&["--dry-run", "--account", "1234", "--cid", "1130,01,003"]);
        let m = message(&a).expect("cid");
        assert_eq!((m.token, m.data.as_str()), (Token::AdmCid, "#1234|1130 01 003"));
        let a = args(&["--dry-run", "--account", "1234", "--null"]);
        assert_eq!(message(&a).expect("null").token, Token::Null);
        assert!(message(&args(&["--dry-run", "--account", "1234", "--sia", "ba"])).is_err());
        assert!(message(&args(&["--dry-run", "--account", "1234", "--cid", "113,01,003"])).is_err());
        let wrap = Wrap::try_parse_from(["send", "--dry-run", "--account", "1234"]);
        assert!(wrap.is_err(), "one of --sia, --cid, --null is required");
    }

    #[test]
    fn default_sequence_numbers_do_not_repeat_within_the_retransmission_window() {
        let t0 = time::macros::datetime!(2026-01-15 12:00:00.05 UTC);
        let mut seen = std::collections::HashSet::new();
        // One send every tenth of a second for 600 s: 6000 numbers, all different, all 1–9999.
        for i in 0..6000 {
            let s = default_seq(t0 + time::Duration::milliseconds(100 * i));
            assert!((1..=9999).contains(&s), "{s}");
            assert!(seen.insert(s), "{s} again after {i} tenths");
        }
        assert_ne!(
            default_seq(t0),
            default_seq(t0 + time::Duration::milliseconds(100)),
            "two sends in one second"
        );
    }

    #[test]
    fn dry_run_builds_a_valid_encrypted_frame() {
        let a = args(&[
            "--dry-run",
            "--account",
            "5678",
            "--key",
            "000102030405060708090A0B0C0D0E0F",
            "--sia",
            "FA,4",
            "--seq",
            "42",
            "--receiver",
            "1",
            "--line",
            "1",
            "--now",
            "2026-01-15T12:00:00Z",
            "--pad-seed",
            "1",
        ]);
        let mut out = Vec::new();
        run(&a, &mut out).expect("dry run");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["frame"]["seq"], 42);
        assert_eq!(v["frame"]["encrypted"], true);
        let pt = v["plaintext"].as_str().expect("decrypted");
        assert!(pt.ends_with("|#5678|Nri1/FA4]_12:00:00,01-15-2026"), "{pt}");
    }
}
