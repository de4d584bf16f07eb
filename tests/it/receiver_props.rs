//! Properties of the receiver's answers, through `receiver::prepare` (what every DC-09 listener
//! calls for a frame) on a test daemon's accounts and clock:
//!
//! * any frame in the standard framing whose CRC and length are right (and that fits the frame
//!   cap) is answered ACK, `*ACK`, NAK or DUH, never silence: random bodies, grammar soup,
//!   damaged valid frames, and frames for the daemon's accounts with every header shape;
//! * the same plaintext retransmitted with a new pad and the same sequence number (and a new
//!   timestamp inside the window, as a panel renews it) is one event: the same retransmission
//!   key and the same events, and end to end over UDP both copies are ACKed and one event is
//!   stored.

use std::net::SocketAddr;

use meldkamer::protocol::crypto::{Key, SeededPad, encrypt_body};
use meldkamer::protocol::frame::{
    AccountField, Body, DecodeError, Frame, Framing, Plain, Token, XData, decode_frame, wrap,
};
use meldkamer::protocol::response::ResponseKind;
use meldkamer::protocol::timestamp::Timestamp;
use meldkamer::receiver::prepare;
use meldkamer::store::writer::{Outcome, Transport};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner};

use crate::common::*;
use crate::protocol_props::{field_text, hostile_body};

const CASES: u32 = 10_000;

fn peer() -> SocketAddr {
    "192.0.2.10:40000".parse().expect("addr")
}

fn keys() -> Vec<Key> {
    vec![
        key_5678(),
        Key::from_ascii("0123456789abcdef").expect("2222's key"),
        Key::from_hex("000102030405060708090A0B0C0D0E0F").expect("no account's key"),
    ]
}

/// A frame for one of the daemon's accounts (or none of them), in any header shape the
/// decoder reads: every token class, receiver or not, an empty or absent line prefix, the
/// account in the header or only in the data, plain or encrypted with the right or a wrong
/// key, a timestamp inside or outside the window or none.
fn account_frame() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(Token::SiaDcs),
        Just(Token::AdmCid),
        Just(Token::Null),
        Just(Token::Xnm),
        Just(Token::Ack),
        Just(Token::Other("RSP".into())),
        Just(Token::Other("SIA-PUL".into())),
    ];
    let account = select(vec!["1234", "5678", "2222", "4321", "9999", "ABCDEF0123"]);
    let data = prop_oneof![
        Just(String::new()),
        Just("#ACCT|Nri1/BA01".to_string()),
        Just("#ACCT|1130 01 003".to_string()),
        Just("Nri1/ZX9".to_string()),
        field_text(24),
    ];
    let xdata = prop::collection::vec(
        (select(vec!['K', 'G', 'C', 'H', 'X']), "[0-9A-F]{0,12}").prop_map(|(id, value)| XData { id, value }),
        0..=2,
    );
    (
        token,
        0u16..=9999,
        prop::option::of(select(vec!["0", "1", "R9"])),
        select(vec!["", "0", "1", "00AB"]),
        (account, any::<bool>()),
        data,
        xdata,
        prop::option::of(-120i64..120),
        prop::option::of((0usize..3, any::<u64>(), any::<bool>())),
    )
        .prop_map(
            |(token, seq, receiver, line, (account, in_header), data, xdata, skew, enc)| {
                let plain = Plain {
                    data: data.replace("ACCT", account),
                    xdata,
                    timestamp: skew.map(|s| Timestamp::from_datetime(T0 + time::Duration::seconds(s))),
                };
                let (encrypted, body) = match enc {
                    Some((k, seed, sep)) => {
                        let plain = Plain {
                            timestamp: plain.timestamp.or(Some(Timestamp::from_datetime(T0))),
                            ..plain
                        };
                        let ct = encrypt_body(&keys()[k], &plain, sep, &mut SeededPad::new(seed));
                        (true, Body::Encrypted(ct))
                    }
                    None => (false, Body::Plain(plain)),
                };
                let mut out = Vec::new();
                Frame {
                    framing: Framing::default(),
                    token,
                    encrypted,
                    seq,
                    receiver: receiver.map(|r| r.trim_start_matches('R').to_string()),
                    line: line.to_string(),
                    account: if in_header {
                        AccountField::Number(account.to_string())
                    } else {
                        AccountField::Absent
                    },
                    body,
                }
                .write_body(&mut out);
                out
            },
        )
}

/// Any frame body: the decoder's hostile bodies, or a frame for an account.
fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![2 => hostile_body(), 3 => account_frame()]
}

#[test]
fn every_frame_with_a_right_crc_and_length_is_answered() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut d = rt.block_on(TestDaemon::start());
    let shared = d.running.as_ref().expect("running").shared.clone();
    let max = d.cfg.receiver.max_frame_bytes;
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(&any_body(), |mut body| {
            // A CR or LF inside would end (or restart) the frame before its end: another input.
            body.retain(|b| !matches!(b, b'\r' | b'\n'));
            let raw = wrap(&body, Framing::default());
            prop_assume!(raw.len() <= max);
            let rec = prepare(&shared, &raw, Transport::Udp, peer(), false);
            let shown = raw.escape_ascii().to_string();
            let Some(resp) = rec.response.as_deref() else {
                return Err(TestCaseError::fail(format!("silence ({:?}) for {shown}", rec.reason)));
            };
            prop_assert!(
                matches!(
                    rec.response_kind,
                    Some(ResponseKind::Ack | ResponseKind::Nak | ResponseKind::Duh)
                ),
                "{shown}"
            );
            prop_assert!(matches!(rec.outcome, Outcome::Accepted | Outcome::Refused), "{shown}");
            // The answer is a frame whose CRC and length are right (a DUH that echoes an
            // unreadable header need not parse further).
            match decode_frame(resp, &Default::default()) {
                Ok(f) => {
                    let kind = rec.response_kind.map(|k| k.as_str());
                    prop_assert_eq!(Some(f.token.as_str()), kind, "{}", shown);
                }
                Err(DecodeError::Unreadable { .. }) => {
                    prop_assert_eq!(rec.response_kind, Some(ResponseKind::Duh), "{}", shown);
                    prop_assert_eq!(resp.get(9..14), Some(&b"\"DUH\""[..]), "{}", shown);
                }
                Err(e) => return Err(TestCaseError::fail(format!("answer {e}: {shown}"))),
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(d.stop());
}

/// An encrypted event of account 5678 and the same plaintext resent: a new pad, a new
/// timestamp (both inside the window), the same sequence number.
fn resend() -> impl Strategy<Value = (u16, String, (u64, i64), (u64, i64))> {
    let data = select(vec![
        "#5678|Nri1/BA01",
        "#5678|Nri2/FA04/BA03",
        "#5678|1130 01 003",
        "#5678|Nri1/ZX9",
        "#5678|Nid7/OP",
    ]);
    (
        0u16..=9999,
        data.prop_map(str::to_string),
        (any::<u64>(), -40i64..=20),
        (any::<u64>(), -40i64..=20),
    )
        .prop_filter("two different pads", |(_, _, a, b)| a.0 != b.0)
}

fn encrypted_at(seq: u16, data: &str, (seed, skew): (u64, i64)) -> Vec<u8> {
    let token = if data.contains(' ') {
        Token::AdmCid
    } else {
        Token::SiaDcs
    };
    encrypted(
        token,
        seq,
        "5678",
        data,
        &key_5678(),
        T0 + time::Duration::seconds(skew),
        seed,
    )
}

#[test]
fn a_retransmission_with_a_new_pad_is_the_same_event() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut d = rt.block_on(TestDaemon::start());
    let shared = d.running.as_ref().expect("running").shared.clone();
    let mut runner = TestRunner::new(Config::with_cases(CASES / 5));
    runner
        .run(&resend(), |(seq, data, first, again)| {
            let a = encrypted_at(seq, &data, first);
            let b = encrypted_at(seq, &data, again);
            prop_assert_ne!(&a, &b, "a new pad is new ciphertext");
            let ra = prepare(&shared, &a, Transport::Udp, peer(), false);
            let rb = prepare(&shared, &b, Transport::Udp, peer(), false);
            prop_assert_eq!(ra.outcome, Outcome::Accepted);
            prop_assert_eq!(rb.outcome, Outcome::Accepted);
            prop_assert!(ra.dedupe_key.is_some());
            prop_assert_eq!(ra.dedupe_key, rb.dedupe_key);
            let codes = |r: &meldkamer::store::writer::FrameRecord| {
                r.events
                    .iter()
                    .map(|e| (e.code.to_string(), e.zone.clone(), e.user.clone(), e.area.clone()))
                    .collect::<Vec<_>>()
            };
            prop_assert_eq!(codes(&ra), codes(&rb));
            // A different sequence number is another event.
            let c = prepare(
                &shared,
                &encrypted_at((seq + 1) % 10000, &data, again),
                Transport::Udp,
                peer(),
                false,
            );
            prop_assert_ne!(ra.dedupe_key, c.dedupe_key);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));

    // End to end: both copies over UDP get *ACK, one event is stored.
    let mut runner = TestRunner::new(Config::with_cases(24));
    let n = std::cell::Cell::new(0u16);
    runner
        .run(&resend(), |(_, data, first, again)| {
            n.set(n.get() + 1);
            let seq = 9000 + n.get();
            let (ra, rb) = rt.block_on(async {
                let ra = udp_exchange(d.udp(), &encrypted_at(seq, &data, first)).await;
                let rb = udp_exchange(d.udp(), &encrypted_at(seq, &data, again)).await;
                (ra, rb)
            });
            let (ta, tb) = (ra.as_deref().map(token_of), rb.as_deref().map(token_of));
            prop_assert_eq!(ta.as_deref(), Some("*ACK"));
            prop_assert_eq!(tb.as_deref(), Some("*ACK"));
            let frames = d.query_i64(&format!(
                "SELECT count(*) FROM frames WHERE seq = {seq} AND account = '5678'"
            ));
            let dups = d.query_i64(&format!(
                "SELECT count(*) FROM frames WHERE seq = {seq} AND account = '5678' AND duplicate_of IS NOT NULL"
            ));
            let events = d.query_i64(&format!(
                "SELECT count(*) FROM events WHERE seq = {seq} AND account = '5678'"
            ));
            let per_frame = prepare(&shared, &encrypted_at(seq, &data, first), Transport::Udp, peer(), false)
                .events
                .len() as i64;
            prop_assert_eq!((frames, dups), (2, 1));
            prop_assert_eq!(events, per_frame, "one frame's events, not two");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(d.stop());
}
