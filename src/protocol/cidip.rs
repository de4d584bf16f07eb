//! Contact ID over IP without DC-09: the framings meldkamer's Contact ID input accepts, a
//! streaming splitter for them, and the per-message detection. See `protocols/surgard.md`.
//!
//! | framing | looks like | integrity | answer |
//! |---|---|---|---|
//! | [`Framing::SurGard`] | `5011 181234E13001003` DC4 (a Sur-Gard automation line, [`super::surgard`]) | none (TCP) | ACK 0x06; NAK 0x15 if not understood |
//! | [`Framing::Lupusec`] | `[1234 18113001003B4B6]` (Lupusec XT / Climax) | 8-bit Fletcher, 4 hex | ACK 0x06; nothing if the checksum fails |
//! | [`Framing::Dc05`] | `1234181130010037` CR (the raw 16-digit DC-05 message) | DC-05 check digit | ACK 0x06; NAK 0x15 if the check digit fails |
//!
//! A message is detected by its shape: `[` starts a Lupusec frame (it ends at `]`, no
//! terminator); a line of exactly 16 Contact ID digits is DC-05; any other line starting with
//! a letter or digit is a Sur-Gard line. Lines end at DC4, CR or LF.

use serde::Serialize;

use super::cid::{CidError, CidEvent, ContactIdMessage, parse_contact_id};
use super::surgard::{self, DC4, SgError, SgMessage};

/// The framings, for configuration and storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// Sur-Gard automation lines (translators such as Ajax Translator).
    SurGard,
    /// `[ACCOUNT 18QXYZGGCCCSSSS]` (Lupusec XT1–XT4, Climax).
    Lupusec,
    /// The raw 16-digit DC-05 message, one per line.
    Dc05,
}

impl Framing {
    /// All framings.
    pub const ALL: [Framing; 3] = [Framing::SurGard, Framing::Lupusec, Framing::Dc05];

    /// The configuration name.
    pub fn name(&self) -> &'static str {
        match self {
            Framing::SurGard => "surgard",
            Framing::Lupusec => "lupusec",
            Framing::Dc05 => "dc05",
        }
    }

    /// From the configuration name.
    pub fn parse(s: &str) -> Option<Framing> {
        Framing::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// A Lupusec/Climax frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LupusecFrame {
    /// The subscriber as configured in the panel (free text; no spaces or brackets).
    pub account: String,
    /// Message type, `18` or `98`.
    pub message_type: String,
    /// The event.
    pub event: CidEvent,
    /// The checksum as sent (4 hex characters).
    pub checksum: String,
}

/// Why a Lupusec frame is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum LupusecError {
    /// Not `[ACCOUNT 18QXYZGGCCCSSSS]`.
    #[error("not of the form [ACCOUNT 18QXYZGGCCCSSSS]")]
    Shape,
    /// Event fields malformed.
    #[error("Contact ID event: {0}")]
    Event(CidError),
    /// The Fletcher checksum does not match.
    #[error("checksum {got} does not match the computed {expected}")]
    Checksum {
        /// Computed.
        expected: String,
        /// Sent.
        got: String,
    },
}

/// The 8-bit Fletcher checksum of a Lupusec frame: running sums mod 256, written as `sum2`
/// then `sum1`, two upper-case hex characters each.
pub fn fletcher(text: &[u8]) -> String {
    let (mut s1, mut s2) = (0u8, 0u8);
    for b in text {
        s1 = s1.wrapping_add(*b);
        s2 = s2.wrapping_add(s1);
    }
    format!("{s2:02X}{s1:02X}")
}

fn account_ok(a: &[u8]) -> bool {
    (1..=32).contains(&a.len()) && a.iter().all(|b| b.is_ascii_graphic() && *b != b'[' && *b != b']')
}

/// Parse and check a Lupusec frame (`[` … `]`, nothing around it).
pub fn parse_lupusec(frame: &[u8]) -> Result<LupusecFrame, LupusecError> {
    let inner = frame
        .strip_prefix(b"[")
        .and_then(|f| f.strip_suffix(b"]"))
        .ok_or(LupusecError::Shape)?;
    // ACCOUNT SP 18 Q XYZ GG CCC SSSS: 16 fixed characters after the space.
    if inner.len() < 17 {
        return Err(LupusecError::Shape);
    }
    let (checked, sum) = inner.split_at(inner.len() - 4);
    let (head, msg) = checked.split_at(checked.len() - 11);
    let Some((b' ', account)) = head.split_last().map(|(l, a)| (*l, a)) else {
        return Err(LupusecError::Shape);
    };
    if !account_ok(account) || !sum.iter().all(u8::is_ascii_hexdigit) {
        return Err(LupusecError::Shape);
    }
    let mt = &msg[..2];
    if mt != b"18" && mt != b"98" {
        return Err(LupusecError::Shape);
    }
    let q = match msg[2] {
        b'1' => super::cid::CidQualifier::New,
        b'3' => super::cid::CidQualifier::Restore,
        b'6' => super::cid::CidQualifier::Status,
        d if d.is_ascii_digit() => super::cid::CidQualifier::Other(d - b'0'),
        _ => return Err(LupusecError::Event(CidError::Shape)),
    };
    let event = surgard::event_from(q, &msg[3..]).map_err(LupusecError::Event)?;
    let expected = fletcher(checked);
    let got = String::from_utf8_lossy(sum).into_owned();
    if !expected.eq_ignore_ascii_case(&got) {
        return Err(LupusecError::Checksum { expected, got });
    }
    Ok(LupusecFrame {
        account: String::from_utf8_lossy(account).into_owned(),
        message_type: String::from_utf8_lossy(mt).into_owned(),
        event,
        checksum: got,
    })
}

/// Encode a Lupusec frame with its checksum. `None` if the account or event does not fit.
pub fn encode_lupusec(account: &str, message_type: &str, e: &CidEvent) -> Option<Vec<u8>> {
    if !account_ok(account.as_bytes())
        || !matches!(message_type, "18" | "98")
        || e.code.0 > 999
        || e.group.len() != 2
        || e.zone.len() != 3
    {
        return None;
    }
    let checked = format!(
        "{account} {message_type}{}{:03}{}{}",
        e.qualifier.digit() % 10,
        e.code.0,
        e.group,
        e.zone
    );
    let frame = format!("[{checked}{}]", fletcher(checked.as_bytes())).into_bytes();
    // Group and zone digits are checked by parsing what was built.
    parse_lupusec(&frame).ok().map(|_| frame)
}

/// One message, detected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "framing", rename_all = "snake_case")]
pub enum Input {
    /// A Sur-Gard line.
    SurGard(Result<SgMessage, SgError>),
    /// A Lupusec frame.
    Lupusec(Result<LupusecFrame, LupusecError>),
    /// A raw DC-05 message.
    Dc05(Result<ContactIdMessage, CidError>),
    /// None of the enabled framings.
    Unknown,
}

fn is_cid_char(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

/// Which framing a complete message (as [`Splitter::next_piece`] cut it) belongs to, parsed.
/// `enabled` lists the framings this listener accepts.
pub fn classify(msg: &[u8], enabled: &[Framing]) -> Input {
    let on = |f: Framing| enabled.contains(&f);
    if msg.first() == Some(&b'[') {
        return if on(Framing::Lupusec) {
            Input::Lupusec(parse_lupusec(msg))
        } else {
            Input::Unknown
        };
    }
    let body = match msg.split_last() {
        Some((t, rest)) if *t == DC4 || *t == b'\r' || *t == b'\n' => rest,
        _ => msg,
    };
    if on(Framing::Dc05) && body.len() == 16 && body.iter().all(|b| is_cid_char(*b)) {
        return Input::Dc05(
            std::str::from_utf8(body)
                .map_err(|_| CidError::Digit)
                .and_then(parse_contact_id),
        );
    }
    if on(Framing::SurGard) && body.first().is_some_and(u8::is_ascii_alphanumeric) {
        return Input::SurGard(surgard::decode_line(msg));
    }
    Input::Unknown
}

/// What [`Splitter::next_piece`] found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// A complete message (a Lupusec frame, or a line with its terminator).
    Message {
        /// Bytes.
        len: usize,
    },
    /// CR, LF, NUL, DC4, space or tab between messages: dropped quietly.
    Separator {
        /// Bytes.
        len: usize,
    },
    /// Bytes that cannot start a message, up to the next possible start.
    Garbage {
        /// Bytes.
        len: usize,
    },
    /// A message longer than the maximum: discarded up to its end (or all that is buffered).
    Oversize {
        /// Bytes.
        len: usize,
    },
}

impl Piece {
    /// Bytes the piece covers.
    pub fn len(&self) -> usize {
        match self {
            Piece::Message { len } | Piece::Separator { len } | Piece::Garbage { len } | Piece::Oversize { len } => {
                *len
            }
        }
    }

    /// Never true: every piece covers at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn is_separator(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | 0 | DC4 | b' ' | b'\t')
}

fn is_terminator(b: u8) -> bool {
    matches!(b, DC4 | b'\r' | b'\n')
}

/// Cuts a byte stream into [`Piece`]s. It remembers one thing between reads: that it is in
/// the middle of discarding an over-long message, which ends at the next terminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Splitter {
    /// Largest message, terminator included.
    pub max: usize,
    discarding: bool,
}

impl Splitter {
    /// A splitter for messages of at most `max` bytes (at least 2).
    pub fn new(max: usize) -> Splitter {
        Splitter {
            max: max.max(2),
            discarding: false,
        }
    }

    /// True while the rest of an over-long message is being discarded (the next piece is its
    /// continuation).
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Cut the next piece off the front of `buf`; `None` when the buffer holds only the start
    /// of a message (wait for more bytes).
    ///
    /// A line that does not start like a Sur-Gard SIA line (`S`/`0`, 3–9 header characters,
    /// `[`) ends before a `[`, so that a Lupusec frame after stray bytes is still found.
    pub fn next_piece(&mut self, buf: &[u8]) -> Option<Piece> {
        if buf.is_empty() {
            return None;
        }
        if self.discarding {
            return Some(match buf.iter().position(|b| is_terminator(*b) || *b == b'[') {
                Some(i) => {
                    self.discarding = false;
                    let len = i + usize::from(is_terminator(buf[i]));
                    if len == 0 {
                        return self.next_piece(buf);
                    }
                    Piece::Oversize { len }
                }
                None => Piece::Oversize { len: buf.len() },
            });
        }
        let p = next_piece(buf, self.max)?;
        if let Piece::Oversize { len } = p {
            // The message's end has not arrived yet: discard the rest of it as it comes.
            self.discarding = len == buf.len() && !buf[len - 1..].iter().any(|b| is_terminator(*b));
        }
        Some(p)
    }
}

/// The stateless part of [`Splitter::next_piece`].
fn next_piece(buf: &[u8], max: usize) -> Option<Piece> {
    let first = *buf.first()?;
    if is_separator(first) {
        let len = buf.iter().position(|b| !is_separator(*b)).unwrap_or(buf.len());
        return Some(Piece::Separator { len });
    }
    let window = &buf[..buf.len().min(max)];
    if first == b'[' {
        // A Lupusec frame: up to `]`; a terminator or a new `[` first means it never closed.
        for (i, b) in window.iter().enumerate().skip(1) {
            match *b {
                b']' => return Some(Piece::Message { len: i + 1 }),
                b'[' => return Some(Piece::Garbage { len: i }),
                b if is_terminator(b) => return Some(Piece::Message { len: i + 1 }),
                _ => {}
            }
        }
        return (buf.len() >= max).then(|| Piece::Oversize {
            len: oversize_len(buf, max),
        });
    }
    if !first.is_ascii_alphanumeric() {
        let len = buf
            .iter()
            .position(|b| *b == b'[' || b.is_ascii_alphanumeric() || is_separator(*b))
            .unwrap_or(buf.len());
        return Some(Piece::Garbage { len });
    }
    for (i, b) in window.iter().enumerate() {
        if is_terminator(*b) {
            return Some(Piece::Message { len: i + 1 });
        }
        if *b == b'[' {
            let sia_head = matches!(first, b'S' | b'0')
                && surgard::HEADER_LEN.contains(&(i - 1))
                && window[1..i].iter().all(u8::is_ascii_alphanumeric);
            if !sia_head {
                return Some(Piece::Garbage { len: i });
            }
        }
    }
    (buf.len() >= max).then(|| Piece::Oversize {
        len: oversize_len(buf, max),
    })
}

/// An oversize message ends at the first terminator after the maximum (included), before a
/// `[`, or covers everything buffered.
fn oversize_len(buf: &[u8], max: usize) -> usize {
    buf[max..]
        .iter()
        .position(|b| is_terminator(*b) || *b == b'[')
        .map_or(buf.len(), |i| max + i + usize::from(is_terminator(buf[max + i])))
}

/// Split a whole buffer (a datagram): every piece, and what is left incomplete.
pub fn split_all(buf: &[u8], max: usize) -> (Vec<(Piece, &[u8])>, &[u8]) {
    let mut s = Splitter::new(max);
    let mut out = Vec::new();
    let mut rest = buf;
    while let Some(p) = s.next_piece(rest) {
        let (a, b) = rest.split_at(p.len());
        out.push((p, a));
        rest = b;
    }
    (out, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::cid::CidQualifier;
    use crate::protocol::codes::CidCode;

    #[test]
    fn fletcher_matches_the_real_frames() {
        // The four frames of protocols/surgard.md, checksums computed by hand and in the field.
        for (frame, sum) in [
            ("[alarmanlage 18140101001B4B6]", "B4B6"),
            ("[alarmanlage 18160200000C5B7]", "C5B7"),
            ("[CID2 181401010012843]", "2843"),
            ("[test 18313100003D504]", "D504"),
        ] {
            let f = parse_lupusec(frame.as_bytes()).unwrap_or_else(|e| panic!("{frame}: {e}"));
            assert_eq!(f.checksum, sum);
            assert_eq!(
                encode_lupusec(&f.account, &f.message_type, &f.event).as_deref(),
                Some(frame.as_bytes())
            );
        }
        let f = parse_lupusec(b"[CID2 181401010012843]").expect("XT2 frame");
        assert_eq!(f.account, "CID2");
        assert_eq!((f.event.qualifier, f.event.code), (CidQualifier::New, CidCode(401)));
        assert_eq!((f.event.group.as_str(), f.event.zone.as_str()), ("01", "001"));
        let f = parse_lupusec(b"[test 18313100003D504]").expect("XTCID test frame");
        assert_eq!((f.event.qualifier, f.event.code), (CidQualifier::Restore, CidCode(131)));
    }

    #[test]
    fn lupusec_refusals() {
        assert!(matches!(
            parse_lupusec(b"[CID2 181401010012844]"),
            Err(LupusecError::Checksum { .. })
        ));
        // The hand-typed README example of IOB-CID does not validate.
        assert!(parse_lupusec(b"[test 18160201010B]").is_err());
        for bad in [
            &b"CID2 181401010012843]"[..],
            b"[CID2 181401010012843",
            b"[ 181401010012843]",
            b"[CID2181401010012843]",
            b"[CID2 281401010012843]",
            b"[CID2 18X401010012843]",
            b"[CID2 1814010100128G3]",
            b"[]",
        ] {
            assert!(parse_lupusec(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // The shortest frame: a one-character subscriber (found by the round-trip property).
        let short =
            encode_lupusec("!", "18", &parse_lupusec(b"[test 18313100003D504]").expect("ok").event).expect("encodes");
        assert_eq!(parse_lupusec(&short).expect("parses").account, "!");
        // Lower-case checksum digits are accepted.
        let ok = b"[test 18313100003d504]";
        assert!(parse_lupusec(ok).is_ok());
    }

    #[test]
    fn detection() {
        let all = Framing::ALL;
        assert!(matches!(
            classify(b"[CID2 181401010012843]", &all),
            Input::Lupusec(Ok(_))
        ));
        assert!(matches!(
            classify(b"5011 181234E12101001\x14", &all),
            Input::SurGard(Ok(_))
        ));
        assert!(matches!(classify(b"1234181130010037\r", &all), Input::Dc05(Ok(_))));
        assert!(matches!(
            classify(b"1234181130010038\n", &all),
            Input::Dc05(Err(CidError::Checksum))
        ));
        // The COOPER examples of protocols/surgard.md (check digits 2 and F).
        assert!(matches!(classify(b"1234181137010152\x14", &all), Input::Dc05(Ok(_))));
        assert!(matches!(classify(b"123418313701015F\r", &all), Input::Dc05(Ok(_))));
        assert!(matches!(
            classify(b"5011 181234E1210100\x14", &all),
            Input::SurGard(Err(_))
        ));
        assert_eq!(classify(b"[CID2 181401010012843]", &[Framing::SurGard]), Input::Unknown);
        assert_eq!(classify(b"1234181130010037\r", &[Framing::Lupusec]), Input::Unknown);
        // Without the DC-05 framing a 16-digit line is read as a Sur-Gard line (and refused).
        assert!(matches!(
            classify(b"1234181130010037\r", &[Framing::SurGard]),
            Input::SurGard(_)
        ));
    }

    #[test]
    fn pieces() {
        let stream = b"\r\n5011 181234E12101001\x14[CID2 181401010012843]1234181130010037\r\n1011           @    \x14";
        let (pieces, rest) = split_all(stream, 256);
        assert!(rest.is_empty());
        let messages: Vec<&[u8]> = pieces
            .iter()
            .filter(|(p, _)| matches!(p, Piece::Message { .. }))
            .map(|(_, b)| *b)
            .collect();
        assert_eq!(
            messages,
            vec![
                &b"5011 181234E12101001\x14"[..],
                b"[CID2 181401010012843]",
                b"1234181130010037\r",
                b"1011           @    \x14"
            ]
        );
        // Incomplete: wait.
        let next_piece = |b: &[u8], max: usize| Splitter::new(max).next_piece(b);
        assert_eq!(next_piece(b"5011 1812", 256), None);
        assert_eq!(next_piece(b"[CID2 18", 256), None);
        // A SIA line keeps its brackets; stray bytes before a Lupusec frame are cut off.
        assert_eq!(
            next_piece(b"S011[#1234|NBA01]\x14", 256),
            Some(Piece::Message { len: 18 })
        );
        assert_eq!(
            next_piece(b"xx[CID2 181401010012843]", 256),
            Some(Piece::Garbage { len: 2 })
        );
        assert_eq!(next_piece(b"\xff\xfe[CID2", 256), Some(Piece::Garbage { len: 2 }));
        assert_eq!(
            next_piece(b"[CID2 [CID2 181401010012843]", 256),
            Some(Piece::Garbage { len: 6 })
        );
        // Oversize: up to the next terminator, or all that is buffered.
        let mut long = vec![b'5'; 300];
        let mut s = Splitter::new(256);
        assert_eq!(s.next_piece(&long), Some(Piece::Oversize { len: 300 }));
        // The rest of that line is discarded as it arrives, up to its terminator.
        assert_eq!(s.next_piece(b"555"), Some(Piece::Oversize { len: 3 }));
        assert_eq!(
            s.next_piece(b"55\x145011 181234E12101001\x14"),
            Some(Piece::Oversize { len: 3 })
        );
        assert_eq!(
            s.next_piece(b"5011 181234E12101001\x14"),
            Some(Piece::Message { len: 21 })
        );
        long.extend_from_slice(b"\x145011 181234E12101001\x14");
        assert_eq!(next_piece(&long, 256), Some(Piece::Oversize { len: 301 }));
        assert_eq!(next_piece(&long[301..], 256), Some(Piece::Message { len: 21 }));
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;
        use crate::protocol::cid::CidQualifier;
        use crate::protocol::codes::CidCode;

        proptest! {
            #[test]
            fn lupusec_round_trips(
                account in "[!-Z\\\\^-~]{1,32}",
                q in 0u8..10, code in 0u16..1000, group in "[0-9B-F]{2}", zone in "[0-9B-F]{3}",
                mt in prop_oneof![Just("18"), Just("98")],
            ) {
                let event = CidEvent {
                    qualifier: match q {
                        1 => CidQualifier::New,
                        3 => CidQualifier::Restore,
                        6 => CidQualifier::Status,
                        d => CidQualifier::Other(d),
                    },
                    code: CidCode(code),
                    group,
                    zone,
                };
                let frame = encode_lupusec(&account, mt, &event).expect("encodes");
                let f = parse_lupusec(&frame).expect("parses");
                prop_assert_eq!((f.account, f.message_type, f.event), (account, mt.to_string(), event));
                prop_assert!(matches!(classify(&frame, &Framing::ALL), Input::Lupusec(Ok(_))));
                let (pieces, rest) = split_all(&frame, 256);
                prop_assert!(rest.is_empty());
                prop_assert_eq!(pieces.len(), 1);
            }

            #[test]
            fn pieces_cover_the_stream_in_any_cut(
                stream in proptest::collection::vec(any::<u8>(), 0..600),
                cut in 1usize..64,
                max in 16usize..300,
            ) {
                // Every piece is non-empty and within bounds; feeding the stream in pieces of
                // `cut` bytes finds the same messages as splitting it whole.
                let (whole, _) = split_all(&stream, max);
                let mut buf: Vec<u8> = Vec::new();
                let mut streamed = Vec::new();
                let mut splitter = Splitter::new(max);
                for chunk in stream.chunks(cut) {
                    buf.extend_from_slice(chunk);
                    while let Some(p) = splitter.next_piece(&buf) {
                        prop_assert!(!p.is_empty() && p.len() <= buf.len());
                        if let Piece::Message { len } = p {
                            prop_assert!(len <= max);
                            streamed.push(buf[..len].to_vec());
                            let _ = classify(&buf[..len], &Framing::ALL);
                        }
                        buf.drain(..p.len());
                    }
                    prop_assert!(buf.len() < max + cut);
                }
                let at_once: Vec<Vec<u8>> = whole
                    .iter()
                    .filter(|(p, _)| matches!(p, Piece::Message { .. }))
                    .map(|(_, b)| b.to_vec())
                    .collect();
                prop_assert_eq!(streamed, at_once);
            }
        }
    }
}
