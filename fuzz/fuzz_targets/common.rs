//! Shared by the fuzz targets: decode options, the fixed test key, and the checks every
//! accepted frame goes through (re-encode, policy, response, events).

#![allow(dead_code)]

use meldkamer::event::{EventCode, events_from};
use meldkamer::protocol::crypto::{Key, SeededPad, decrypt_body};
use meldkamer::protocol::frame::{Body, DecodeOptions, Frame, MAX_FRAME_LEN, Quirks, Token, decode_frame};
use meldkamer::protocol::policy::{AccountPolicy, Verdict, Window, evaluate, response_frame};
use meldkamer::protocol::timestamp::Timestamp;

/// The AES-128 key of the public vectors (NIST SP 800-38A); the seed corpus holds frames
/// encrypted with it, so the fuzzer starts with decryptable input.
pub const KEY_HEX: &str = "2B7E151628AED2A6ABF7158809CF4F3C";

pub fn key() -> Key {
    Key::from_hex(KEY_HEX).expect("fixed key")
}

pub fn opts(quirks: Quirks) -> DecodeOptions {
    DecodeOptions {
        quirks,
        max_len: MAX_FRAME_LEN,
    }
}

/// Bytes as Latin-1 characters, as the decoder reads data fields.
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|b| char::from(*b)).collect()
}

/// A decoded frame re-encodes to bytes that decode to the same content, and those bytes are
/// a fixed point.
pub fn check_reencode(f: &Frame) {
    let bytes = f.encode();
    let back = decode_frame(&bytes, &opts(Quirks::ALL)).expect("a decoded frame re-encodes to a valid frame");
    assert_eq!(
        Frame {
            framing: f.framing,
            ..back.clone()
        },
        *f,
        "re-encoded content differs"
    );
    assert_eq!(back.encode(), bytes, "re-encoding is not a fixed point");
}

/// The frame's own time (plain timestamp, or the decrypted one under the fixed key).
fn own_time(f: &Frame, key: &Key) -> Option<Timestamp> {
    match &f.body {
        Body::Plain(p) => p.timestamp,
        Body::Encrypted(ct) => decrypt_body(key, ct).ok()?.plain.timestamp,
    }
}

/// Policy for several accounts and clocks, the response frame, and the events.
pub fn exercise(f: &Frame) {
    let key = key();
    let open = AccountPolicy::default();
    let keyed = AccountPolicy {
        key: Some(key.clone()),
        quirks: Quirks::ALL,
        ..AccountPolicy::default()
    };
    let strict = AccountPolicy {
        key: Some(key.clone()),
        require_encryption: true,
        quirks: Quirks::ALL,
        check_plain_timestamp: true,
        ack_separator: true,
    };
    let fixed = Timestamp::parse(b"12:00:00,01-15-2026").expect("clock").to_datetime();
    let mut clocks = vec![fixed];
    if let Some(ts) = own_time(f, &key) {
        clocks.push(ts.to_datetime());
    }
    for now in clocks {
        for account in [None, Some(&open), Some(&keyed), Some(&strict)] {
            let v = evaluate(f, account, now, Window::default());
            if let Verdict::Accepted(a) = &v {
                assert!(f.token.is_supported_message(), "accepted {:?}", f.token);
                assert!(f.account.number().is_some(), "accepted an anonymous account");
                if let Ok(events) = events_from(f, &a.plain) {
                    // A NULL without data is a link test (one with data may carry events).
                    if f.token == Token::Null && a.plain.data.trim().is_empty() {
                        assert!(events.len() == 1 && events[0].code == EventCode::LinkTest);
                    }
                    for e in &events {
                        let _ = e.describe();
                    }
                }
            }
            let Some(r) = response_frame(f, &v, account, now, &mut SeededPad::new(7)) else {
                continue;
            };
            let bytes = r.encode();
            let back = decode_frame(&bytes, &opts(Quirks::ALL)).expect("our response decodes");
            assert_eq!(back.encode(), bytes, "our response re-encodes differently");
            assert_eq!(back.framing.quirks(), f.framing.quirks(), "response framing differs");
            if let Body::Encrypted(ct) = &r.body {
                let d = decrypt_body(&key, ct).expect("our *ACK decrypts");
                assert_eq!(d.plain.timestamp, Some(Timestamp::from_datetime(now)));
            }
        }
    }
}
