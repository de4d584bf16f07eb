//! Properties of the receiver's answers, through `receiver::prepare` (what every DC-09 listener
//! calls for a frame) on a test daemon's accounts and clock:
//!
//! * any frame in the standard framing whose CRC and length are right (and that fits the frame
//!   cap) is answered ACK, `*ACK`, NAK or DUH, never silence: random bodies, grammar soup,
//!   damaged valid frames, and frames for the daemon's accounts with every header shape.

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
