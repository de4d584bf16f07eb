//! Receiver responses: ACK, `*ACK`, NAK and DUH (see `protocols/dc09.md`, "Responses").
//!
//! ```text
//! ACK  = "ACK" seq [R rcvr] L line #acct "[]"                 ; echoes the event's header
//! *ACK = "*ACK" seq [R rcvr] L line #acct "[" hex(AES(pad "]_" ts))   ; receiver time
//! NAK  = "NAK" "0000" "R0" "L0" "A0" "[]_" ts                  ; never encrypted, receiver time
//! DUH  = "DUH" seq [R rcvr] L line #acct "[]"                  ; never encrypted
//! ```
//!
//! Responses use the framing (CRC format, CR in CRC) of the frame they answer.

use serde::Serialize;
use time::OffsetDateTime;

use super::crypto::{Key, PadSource, encrypt_body};
use super::frame::{AccountField, Body, Frame, Framing, Plain, Token};
use super::timestamp::Timestamp;

/// The three answers a receiver gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseKind {
    /// Accepted.
    Ack,
    /// Refused: timestamp outside the window, or not decryptable.
    Nak,
    /// Well-formed but cannot be processed.
    Duh,
}

impl ResponseKind {
    /// Stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ResponseKind::Ack => "ACK",
            ResponseKind::Nak => "NAK",
            ResponseKind::Duh => "DUH",
        }
    }
}

fn echo(frame: &Frame, token: Token, encrypted: bool, body: Body) -> Frame {
    Frame {
        framing: frame.framing.for_response(),
        token,
        encrypted,
        seq: frame.seq,
        receiver: frame.receiver.clone(),
        line: frame.line.clone(),
        account: frame.account.clone(),
        body,
    }
}

/// Plain ACK echoing the event's sequence, receiver, line and account.
pub fn ack_plain(frame: &Frame) -> Frame {
    echo(frame, Token::Ack, false, Body::Plain(Plain::default()))
}

/// Encrypted ACK: pad from `pad`, then `]_` and the receiver's time. `separator` writes `pad|]`
/// instead of `pad]` for panels that expect it (open question 1 in the notes).
pub fn ack_encrypted(frame: &Frame, key: &Key, now: OffsetDateTime, pad: &mut dyn PadSource, separator: bool) -> Frame {
    let plain = Plain {
        data: String::new(),
        xdata: Vec::new(),
        timestamp: Some(Timestamp::from_datetime(now)),
    };
    let ct = encrypt_body(key, &plain, separator, pad);
    echo(frame, Token::Ack, true, Body::Encrypted(ct))
}

/// NAK with the receiver's time, in the framing of the refused frame.
pub fn nak(now: OffsetDateTime, framing: Framing) -> Frame {
    Frame {
        framing: framing.for_response(),
        token: Token::Nak,
        encrypted: false,
        seq: 0,
        receiver: Some("0".into()),
        line: "0".into(),
        account: AccountField::Anonymous("0".into()),
        body: Body::Plain(Plain {
            data: String::new(),
            xdata: Vec::new(),
            timestamp: Some(Timestamp::from_datetime(now)),
        }),
    }
}

/// DUH echoing the frame's header (never encrypted).
pub fn duh(frame: &Frame) -> Frame {
    echo(frame, Token::Duh, false, Body::Plain(Plain::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::crypto::{SeededPad, decrypt_body};
    use crate::protocol::frame::{DecodeOptions, decode_frame};
    use time::macros::datetime;

    fn frame(raw: &[u8]) -> Frame {
        decode_frame(raw, &DecodeOptions::default()).expect("valid")
    }

    #[test]
    fn plain_ack_bytes() {
        let f = frame(b"\nF4D20029\"SIA-DCS\"0001RF3L77#1234[#1234|NRR|Atest]\r");
        assert_eq!(ack_plain(&f).encode(), b"\n61DB0016\"ACK\"0001RF3L77#1234[]\r".to_vec());
    }

    #[test]
    fn nak_bytes() {
        let n = nak(datetime!(2025-09-24 16:20:01 UTC), Framing::default());
        assert_eq!(
            n.encode(),
            b"\nE4410025\"NAK\"0000R0L0A0[]_16:20:01,09-24-2025\r".to_vec()
        );
    }

    #[test]
    fn duh_bytes() {
        let f = frame(b"\n1CF10039\"SIA-DCS\"0042L0#9999[#9999|Nri1/BA01]_12:00:00,01-15-2026\r");
        assert_eq!(duh(&f).encode(), b"\n88CC0012\"DUH\"0042L0#9999[]\r".to_vec());
    }

    #[test]
    fn encrypted_ack_decrypts_to_pad_and_receiver_time() {
        let key = Key::from_hex("2B7E151628AED2A6ABF7158809CF4F3C").expect("key");
        let f =
            frame(b"\n1B160053\"*NULL\"0000L0#1234[BF5FDD167CD34313729C436D9359EBC052BEC69BCBD81C19FE2BDE8C76A94A04\r");
        let now = datetime!(2026-01-15 12:00:00 UTC);
        let a = ack_encrypted(&f, &key, now, &mut SeededPad::new(9), false);
        let bytes = a.encode();
        assert!(bytes.starts_with(b"\n"));
        assert_eq!(&bytes[9..27], b"\"*ACK\"0000L0#1234[");
        let Body::Encrypted(ct) = &a.body else {
            panic!("encrypted")
        };
        let d = decrypt_body(&key, ct).expect("decrypts");
        assert_eq!(d.pad.len(), 11);
        assert!(d.pad.bytes().all(|b| b != b'[' && b != b']' && b != b'|'));
        assert!(!d.separator);
        assert_eq!(
            d.plain.timestamp.map(|t| t.to_wire_string()).as_deref(),
            Some("12:00:00,01-15-2026")
        );
        // Two ACKs with fresh pads differ.
        let b = ack_encrypted(&f, &key, now, &mut SeededPad::new(10), false);
        assert_ne!(a.encode(), b.encode());
    }
}
