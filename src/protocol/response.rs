//! Receiver responses: ACK, `*ACK`, NAK and DUH (see `protocols/dc09.md`, "Responses").
//!
//! ```text
//! ACK  = "ACK" seq [R rcvr] L line #acct "[]"                 ; echoes the event's header
//! *ACK = "*ACK" seq [R rcvr] L line #acct "[" hex(AES(pad "]_" ts))   ; receiver time
//! NAK  = "NAK" "0000" "R0" "L0" "A0" "[]_" ts                  ; never encrypted, receiver time
//! DUH  = "DUH" seq [R rcvr] L line #acct "[]"                  ; never encrypted
//! DUH  = "DUH" header-as-sent "[]"  |  "DUH" "0000" "R0" "L0" "A0" "[]"   ; unreadable frame
//! ```
//!
//! Responses use the framing (CRC format, CR in CRC) of the frame they answer. A frame whose CRC
//! and length are right but whose header does not parse ([`duh_unreadable`]) gets a DUH that
//! echoes the header bytes as they came, so that the panel recognises its sequence number and
//! account, or the anonymous header of a NAK when there is nothing safe to echo.

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

/// The longest header echoed in the DUH for an unreadable frame: a full valid header
/// (`9999R123456L123456#` + 16 digits) is 35 bytes.
const MAX_ECHO: usize = 48;

/// The header of a frame, as sent: the bytes after the token's closing quote up to the first
/// `[` (or the end), if they are few and printable (no quote, no bracket), else `None`. `body`
/// is the span CRC and length cover.
pub fn header_as_sent(body: &[u8]) -> Option<&[u8]> {
    let rest = body.strip_prefix(b"\"")?;
    let close = rest.iter().take(18).position(|b| *b == b'"')?;
    let after = &rest[close + 1..];
    let header = &after[..after.iter().position(|b| *b == b'[').unwrap_or(after.len())];
    (!header.is_empty()
        && header.len() <= MAX_ECHO
        && header
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'[' | b']')))
    .then_some(header)
}

/// The DUH for a frame in the standard framing (`LF` CRC length body `CR`) whose CRC and length
/// are right but whose fields cannot be read ([`super::frame::DecodeError::Unreadable`]): the
/// header echoed as sent ([`header_as_sent`]), else the anonymous `0000R0L0A0` header. Never
/// encrypted, no timestamp.
pub fn duh_unreadable(frame: &[u8]) -> Vec<u8> {
    let body = frame.get(9..frame.len().saturating_sub(1)).unwrap_or_default();
    let mut out = b"\"DUH\"".to_vec();
    match header_as_sent(body) {
        Some(h) => out.extend_from_slice(h),
        None => out.extend_from_slice(b"0000R0L0A0"),
    }
    out.extend_from_slice(b"[]");
    super::frame::wrap(&out, Framing::default())
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
    fn duh_for_unreadable_frames_echoes_the_header_as_sent() {
        // FOCUS FC-7688 (pysiaalarm #36): a non-hex account.
        let focus =
            crate::protocol::frame::wrap(b"\"ADM-CID\"6616R0L0#foc7688[#foc7688|1351 01 000]", Framing::default());
        let want = crate::protocol::frame::wrap(b"\"DUH\"6616R0L0#foc7688[]", Framing::default());
        assert_eq!(duh_unreadable(&focus), want);
        // Nothing to echo safely: the anonymous header.
        let junk = crate::protocol::frame::wrap(b"garbage", Framing::default());
        let duh = duh_unreadable(&junk);
        assert!(duh.ends_with(b"\"DUH\"0000R0L0A0[]\r"), "{}", duh.escape_ascii());
        let controls = crate::protocol::frame::wrap(b"\"SIA-DCS\"0001L0#12\x0134[]", Framing::default());
        assert!(duh_unreadable(&controls).ends_with(b"\"DUH\"0000R0L0A0[]\r"));
        // The anonymous ones decode as DUH; CRC and length are right in every one.
        for raw in [junk, controls] {
            let d = decode_frame(&duh_unreadable(&raw), &DecodeOptions::default());
            assert_eq!(d.map(|f| f.token), Ok(Token::Duh), "{}", raw.escape_ascii());
        }
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
