//! Comparing responses. Equal bytes are equal. Otherwise both are decoded; encrypted responses
//! whose headers match and whose decrypted content (without the random pad) matches are equal
//! too. Anything else is a mismatch with the differing fields named.

use crate::protocol::crypto::{Key, decrypt_body};
use crate::protocol::frame::{Body, DecodeOptions, Frame, MAX_FRAME_LEN, Quirks, decode_frame};

/// The fields in which two responses differ (empty: they are equivalent).
pub fn differing_fields(expected: &[u8], actual: &[u8], key: Option<&Key>) -> Vec<&'static str> {
    if expected == actual {
        return Vec::new();
    }
    let opts = DecodeOptions {
        quirks: Quirks::ALL,
        max_len: MAX_FRAME_LEN,
    };
    // A hand-edited expectation often keeps a stale CRC or length: decode its body anyway, so
    // the fields that differ can still be named (its CRC and length then count as differing).
    let (e, stale) = match decode_frame(expected, &opts) {
        Ok(e) => (e, false),
        Err(_) => match rewrapped(expected).and_then(|b| decode_frame(&b, &opts).ok()) {
            Some(e) => (e, true),
            None => return vec!["bytes (not a decodable frame)"],
        },
    };
    let Ok(a) = decode_frame(actual, &opts) else {
        return vec!["bytes (not a decodable frame)"];
    };
    let mut out = header_diff(&e, &a);
    if stale {
        for f in ["crc", "length"] {
            let (from, to) = if f == "crc" { (1, 5) } else { (5, 9) };
            if expected.get(from..to) != actual.get(from..to) && !out.contains(&f) {
                out.push(f);
            }
        }
    }
    match (&e.body, &a.body) {
        (Body::Plain(pe), Body::Plain(pa)) => {
            if pe.data != pa.data {
                out.push("data");
            }
            if pe.xdata != pa.xdata {
                out.push("extended data");
            }
            if pe.timestamp != pa.timestamp {
                out.push("timestamp");
            }
        }
        (Body::Encrypted(ce), Body::Encrypted(ca)) => match key.map(|k| (decrypt_body(k, ce), decrypt_body(k, ca))) {
            Some((Ok(de), Ok(da))) => {
                if de.plain.data != da.plain.data {
                    out.push("data (decrypted)");
                }
                if de.plain.xdata != da.plain.xdata {
                    out.push("extended data (decrypted)");
                }
                if de.plain.timestamp != da.plain.timestamp {
                    out.push("timestamp (decrypted)");
                }
                if de.separator != da.separator {
                    out.push("pad separator (decrypted)");
                }
                // Same content, different pad: equivalent. CRC and length follow the pad.
                if out.iter().all(|f| *f == "crc" || *f == "length") {
                    out.clear();
                }
            }
            _ => out.push("ciphertext (no key to compare the decrypted content)"),
        },
        _ => out.push("encryption (one plain, one encrypted)"),
    }
    if out.is_empty() && expected != actual && !matches!((&e.body, &a.body), (Body::Encrypted(_), Body::Encrypted(_))) {
        out.push("framing");
    }
    out
}

/// A hex-CRC frame (`LF crc len body CR`) with its CRC and length recomputed over its body.
fn rewrapped(frame: &[u8]) -> Option<Vec<u8>> {
    if frame.len() < 11 || frame[0] != b'\n' || frame[9] != b'"' || frame.last() != Some(&b'\r') {
        return None;
    }
    Some(crate::protocol::frame::wrap(
        &frame[9..frame.len() - 1],
        crate::protocol::frame::Framing::default(),
    ))
}

fn header_diff(e: &Frame, a: &Frame) -> Vec<&'static str> {
    let mut out = Vec::new();
    let (eb, ab) = (e.encode(), a.encode());
    if eb.get(1..5) != ab.get(1..5) {
        out.push("crc");
    }
    if eb.get(5..9) != ab.get(5..9) {
        out.push("length");
    }
    if e.framing.crc != a.framing.crc || e.framing.cr_in_crc != a.framing.cr_in_crc {
        out.push("framing");
    }
    if e.token != a.token || e.encrypted != a.encrypted {
        out.push("token");
    }
    if e.seq != a.seq {
        out.push("sequence");
    }
    if e.receiver != a.receiver {
        out.push("receiver");
    }
    if e.line != a.line {
        out.push("line");
    }
    if e.account != a.account {
        out.push("account");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_fields() {
        let a = b"\nD2770014\"ACK\"0001R1L1#1234[]\r";
        assert!(differing_fields(a, a, None).is_empty());
        let b = crate::protocol::frame::wrap(b"\"ACK\"0002R1L1#1234[]", Default::default());
        let f = differing_fields(a, &b, None);
        assert!(f.contains(&"sequence") && f.contains(&"crc"), "{f:?}");
        let c = crate::protocol::frame::wrap(b"\"DUH\"0001R1L1#9999[]", Default::default());
        let f = differing_fields(a, &c, None);
        assert!(f.contains(&"token") && f.contains(&"account"), "{f:?}");
        assert_eq!(
            differing_fields(a, b"junk", None),
            vec!["bytes (not a decodable frame)"]
        );
        // An expectation edited by hand without fixing its CRC: the edited field is named.
        let edited = b"\nD2770014\"ACK\"0002R1L1#1234[]\r";
        let f = differing_fields(edited, a, None);
        assert!(f.contains(&"sequence") && f.contains(&"crc"), "{f:?}");
    }

    #[test]
    fn encrypted_acks_compare_on_content() {
        use crate::protocol::crypto::SeededPad;
        use crate::protocol::response::ack_encrypted;
        let key = Key::from_hex("2B7E151628AED2A6ABF7158809CF4F3C").expect("key");
        let ev = decode_frame(
            b"\n1B160053\"*NULL\"0000L0#1234[BF5FDD167CD34313729C436D9359EBC052BEC69BCBD81C19FE2BDE8C76A94A04\r",
            &DecodeOptions::default(),
        )
        .expect("frame");
        let t = time::macros::datetime!(2026-01-15 12:00:00 UTC);
        let x = ack_encrypted(&ev, &key, t, &mut SeededPad::new(1), false).encode();
        let y = ack_encrypted(&ev, &key, t, &mut SeededPad::new(2), false).encode();
        assert_ne!(x, y);
        assert!(differing_fields(&x, &y, Some(&key)).is_empty());
        let z = ack_encrypted(&ev, &key, t + time::Duration::seconds(1), &mut SeededPad::new(2), false).encode();
        assert!(differing_fields(&x, &z, Some(&key)).contains(&"timestamp (decrypted)"));
    }
}
