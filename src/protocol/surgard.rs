//! The Sur-Gard automation protocol: the lines a Sur-Gard receiver (MLR2, MLR2000, System
//! III/5) sends to automation software, and that translators such as Ajax Translator send
//! to an ARC "in the Sur-Gard shell". See `protocols/surgard.md`.
//!
//! ```text
//! line       = id header body DC4                   ; every line ends with DC4 (0x14)
//! header     = RR L…                                ; 3–9 upper-case hex characters: receiver
//!                                                   ; number (2) then line number (1–7)
//! contact-id = "5" header SP ("18" / "98") AAAA QXYZGGCCC [time]   ; 4-character account
//!            / "Q" header SP "58" AAAAAAAAAA QXYZGGCCC [time]      ; 10-character account
//! sia        = ("S" / "0") header "[" data "]"      ; SIA data block, e.g. #1234|Nri1BA01
//! heartbeat  = "1" header 1*SP "@" *SP               ; canonical: 11 spaces, "@", 4 spaces
//! time       = HH ":" MM ":" SS "-" dd "/" mm       ; optional MLR2 time-stamp suffix
//! ```
//!
//! Q is a letter (`E` new, `R` restore, `P` previous/status) as Sur-Gard documents it; a digit
//! (`1`, `3`, `6`, or any other) is accepted too, and the parsed line remembers which style it
//! used so it re-encodes byte for byte. There is no checksum: integrity rests on TCP (or serial
//! parity) and on the one-byte answer, [`ACK`] or [`NAK`].
//!
//! The header width is detected from the line (the body has a fixed length, so the space
//! before it marks where the header ends); receiver and line numbers are kept as the hex text
//! they were sent as (`01`, `001`, `1` and `E` all occur).

use serde::Serialize;

use super::cid::{CidError, CidEvent, CidQualifier};
use super::codes::CidCode;

/// DC4, the terminator of every Sur-Gard line.
pub const DC4: u8 = 0x14;
/// The automation's answer: processed.
pub const ACK: u8 = 0x06;
/// The automation's answer: received but not understood (the sender retransmits).
pub const NAK: u8 = 0x15;

/// Shortest and longest header (`RRL` … `RRLLLLLLL`).
pub const HEADER_LEN: std::ops::RangeInclusive<usize> = 3..=9;

/// Receiver and line number, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Header {
    /// Receiver number: two hex characters.
    pub receiver: String,
    /// Line (line card) number: 1–7 hex characters.
    pub line: String,
}

impl Header {
    /// A header from its parts, checked: receiver two hex characters, line 1–7, upper case.
    pub fn new(receiver: &str, line: &str) -> Option<Header> {
        let ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        (receiver.len() == 2 && (1..=7).contains(&line.len()) && ok(receiver) && ok(line)).then(|| Header {
            receiver: receiver.to_string(),
            line: line.to_string(),
        })
    }

    /// Split `RRL…` as it appears in a line.
    fn parse(s: &[u8]) -> Option<Header> {
        if !HEADER_LEN.contains(&s.len()) {
            return None;
        }
        let s = std::str::from_utf8(s).ok()?;
        Header::new(&s[..2], &s[2..])
    }

    /// The header as it is written.
    pub fn text(&self) -> String {
        format!("{}{}", self.receiver, self.line)
    }

    /// The header of a heartbeat from this receiver: the real receiver number, and the line
    /// written as zeros when it is wider than one character (`1RR000…`, SG-AOP §4.2), or as
    /// configured when it is one character (`1011…` on MLR2 receivers, MLR2-DG).
    pub fn heartbeat(&self) -> Header {
        Header {
            receiver: self.receiver.clone(),
            line: if self.line.len() == 1 {
                self.line.clone()
            } else {
                "0".repeat(self.line.len())
            },
        }
    }
}

/// How the qualifier was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QualifierStyle {
    /// `E`, `R`, `P` (the Sur-Gard documentation).
    Letter,
    /// `1`, `3`, `6` (Contact ID digits, seen from looser emitters).
    Digit,
}

/// Which Contact ID line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CidLayout {
    /// Protocol `5`, format `18`: four-character account.
    Four,
    /// Protocol `5`, format `98` (the spec notes it may appear instead of `18`).
    Four98,
    /// Protocol `Q`, format `58`: ten-character account.
    Ten,
}

impl CidLayout {
    fn id(&self) -> u8 {
        match self {
            CidLayout::Four | CidLayout::Four98 => b'5',
            CidLayout::Ten => b'Q',
        }
    }

    /// The format ID: `18`, `98` or `58`.
    pub fn format(&self) -> &'static str {
        match self {
            CidLayout::Four => "18",
            CidLayout::Four98 => "98",
            CidLayout::Ten => "58",
        }
    }

    /// Characters in the account.
    pub fn account_len(&self) -> usize {
        match self {
            CidLayout::Four | CidLayout::Four98 => 4,
            CidLayout::Ten => 10,
        }
    }

    /// The layout for an account: four characters → `5`, up to ten → `Q` (caller pads).
    pub fn for_account(account: &str) -> Option<CidLayout> {
        match account.len() {
            4 => Some(CidLayout::Four),
            10 => Some(CidLayout::Ten),
            _ => None,
        }
    }
}

/// A Contact ID line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SgContactId {
    /// Receiver and line.
    pub header: Header,
    /// `5`/`18`, `5`/`98` or `Q`/`58`.
    pub layout: CidLayout,
    /// Account: 4 or 10 upper-case hex characters.
    pub account: String,
    /// The event.
    pub event: CidEvent,
    /// Letter or digit qualifier.
    pub style: QualifierStyle,
    /// The MLR2 time-stamp suffix `HH:MM:SS-dd/mm`, as sent (no year; informational only).
    pub time: Option<String>,
}

/// A SIA line (`S`, or `0` for receiver-internal messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SgSia {
    /// `S` or `0`.
    pub id: char,
    /// Receiver and line.
    pub header: Header,
    /// The SIA data between `[` and `]`, e.g. `#1234|Nri1BA01`.
    pub data: String,
}

/// A line with a protocol ID meldkamer does not interpret (pulse formats, caller ID…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SgOther {
    /// The protocol ID.
    pub id: char,
    /// Everything after the ID, before DC4.
    pub rest: String,
}

/// One Sur-Gard line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SgMessage {
    /// Contact ID (`5`, `Q`).
    ContactId(SgContactId),
    /// SIA (`S`, `0`).
    Sia(SgSia),
    /// The supervision heartbeat (`1…@`).
    Heartbeat(Header),
    /// Another protocol ID, kept raw.
    Other(SgOther),
}

/// Why a line is not a Sur-Gard message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum SgError {
    /// Nothing before the terminator.
    #[error("empty Sur-Gard line")]
    Empty,
    /// A byte that no Sur-Gard line contains (control characters, non-ASCII).
    #[error("a Sur-Gard line holds printable ASCII only")]
    Bytes,
    /// The protocol ID is not a letter or digit.
    #[error("a Sur-Gard line starts with a protocol ID (letter or digit)")]
    Id,
    /// Receiver/line header not 3–9 upper-case hex characters.
    #[error("the receiver/line header must be 3 to 9 upper-case hex characters")]
    Header,
    /// A Contact ID line of the wrong length or without the space before the body.
    #[error("a Contact ID line is ID, header, space, 18AAAAQXYZGGCCC (or 58 and a 10-character account)")]
    Layout,
    /// Format ID not 18/98 (protocol 5) or 58 (protocol Q).
    #[error("Contact ID format must be 18 or 98 (protocol 5) or 58 (protocol Q)")]
    Format,
    /// Account not upper-case hex.
    #[error("the account must be upper-case hex characters")]
    Account,
    /// Qualifier not E, R, P or a digit.
    #[error("the qualifier must be E, R, P or a digit")]
    Qualifier,
    /// Event code, group or zone malformed.
    #[error("Contact ID event: {0}")]
    Event(CidError),
    /// Time-stamp suffix not `HH:MM:SS-dd/mm`.
    #[error("the time-stamp suffix must be HH:MM:SS-dd/mm")]
    Time,
    /// A SIA line without `[…]` at the end.
    #[error("a SIA line is ID, header, [data]")]
    Sia,
}

fn is_hex_upper(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

fn cid_digit(b: u8) -> bool {
    b.is_ascii_digit() || (b'B'..=b'F').contains(&b)
}

/// The qualifier from its character.
fn qualifier(q: u8) -> Option<(CidQualifier, QualifierStyle)> {
    Some(match q {
        b'E' => (CidQualifier::New, QualifierStyle::Letter),
        b'R' => (CidQualifier::Restore, QualifierStyle::Letter),
        b'P' => (CidQualifier::Status, QualifierStyle::Letter),
        b'1' => (CidQualifier::New, QualifierStyle::Digit),
        b'3' => (CidQualifier::Restore, QualifierStyle::Digit),
        b'6' => (CidQualifier::Status, QualifierStyle::Digit),
        d if d.is_ascii_digit() => (CidQualifier::Other(d - b'0'), QualifierStyle::Digit),
        _ => return None,
    })
}

/// The qualifier character for a style (an unknown qualifier is always its digit).
pub fn qualifier_char(q: CidQualifier, style: QualifierStyle) -> char {
    match (style, q) {
        (QualifierStyle::Letter, CidQualifier::New) => 'E',
        (QualifierStyle::Letter, CidQualifier::Restore) => 'R',
        (QualifierStyle::Letter, CidQualifier::Status) => 'P',
        (_, q) => char::from(b'0' + q.digit() % 10),
    }
}

/// `XYZ GG CCC` from `XYZGGCCC` bytes (9 with Q), with the qualifier already read.
pub(crate) fn event_from(q: CidQualifier, rest: &[u8]) -> Result<CidEvent, CidError> {
    if rest.len() != 8 {
        return Err(CidError::Shape);
    }
    let (code, group, zone) = (&rest[..3], &rest[3..5], &rest[5..8]);
    if !code.iter().all(u8::is_ascii_digit)
        || !group.iter().all(|b| cid_digit(*b))
        || !zone.iter().all(|b| cid_digit(*b))
    {
        return Err(CidError::Shape);
    }
    let code = code.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
    Ok(CidEvent {
        qualifier: q,
        code: CidCode(code),
        group: String::from_utf8_lossy(group).into_owned(),
        zone: String::from_utf8_lossy(zone).into_owned(),
    })
}

fn time_suffix(s: &[u8]) -> Result<String, SgError> {
    // HH:MM:SS-dd/mm
    let shape = b"00:00:00-00/00";
    if s.len() != shape.len()
        || !s
            .iter()
            .zip(shape)
            .all(|(c, p)| if *p == b'0' { c.is_ascii_digit() } else { c == p })
    {
        return Err(SgError::Time);
    }
    Ok(String::from_utf8_lossy(s).into_owned())
}

fn parse_contact_id(id: u8, line: &[u8]) -> Result<SgContactId, SgError> {
    // line = header SP body [time], after the ID.
    let sp = line.iter().position(|b| *b == b' ').ok_or(SgError::Layout)?;
    let header = Header::parse(&line[..sp]).ok_or(SgError::Header)?;
    let rest = &line[sp + 1..];
    let body_len = if id == b'5' { 15 } else { 21 };
    let (body, time) = match rest.len() {
        n if n == body_len => (rest, None),
        n if n == body_len + 14 => (&rest[..body_len], Some(time_suffix(&rest[body_len..])?)),
        _ => return Err(SgError::Layout),
    };
    let layout = match (id, &body[..2]) {
        (b'5', b"18") => CidLayout::Four,
        (b'5', b"98") => CidLayout::Four98,
        (b'Q', b"58") => CidLayout::Ten,
        _ => return Err(SgError::Format),
    };
    let n = layout.account_len();
    let account = &body[2..2 + n];
    if !account.iter().all(|b| is_hex_upper(*b)) {
        return Err(SgError::Account);
    }
    let ev = &body[2 + n..];
    let (q, style) = qualifier(ev[0]).ok_or(SgError::Qualifier)?;
    let event = event_from(q, &ev[1..]).map_err(SgError::Event)?;
    Ok(SgContactId {
        header,
        layout,
        account: String::from_utf8_lossy(account).into_owned(),
        event,
        style,
        time,
    })
}

fn parse_heartbeat(line: &[u8]) -> Option<Header> {
    // header 1*SP "@" *SP
    let sp = line.iter().position(|b| *b == b' ')?;
    let header = Header::parse(&line[..sp])?;
    let rest = &line[sp..];
    let at = rest.iter().position(|b| *b != b' ')?;
    (rest[at] == b'@' && rest[at + 1..].iter().all(|b| *b == b' ')).then_some(header)
}

fn parse_sia(id: u8, line: &[u8]) -> Result<SgSia, SgError> {
    let open = line.iter().position(|b| *b == b'[').ok_or(SgError::Sia)?;
    let header = Header::parse(&line[..open]).ok_or(SgError::Header)?;
    let data = &line[open + 1..];
    let Some((b']', data)) = data.split_last() else {
        return Err(SgError::Sia);
    };
    if data.contains(&b']') || data.contains(&b'[') {
        return Err(SgError::Sia);
    }
    Ok(SgSia {
        id: char::from(id),
        header,
        data: String::from_utf8_lossy(data).into_owned(),
    })
}

/// Decode one line. `line` may end with its terminator (DC4, or CR/LF from emulators that
/// use them); one is removed.
pub fn decode_line(line: &[u8]) -> Result<SgMessage, SgError> {
    let line = match line.split_last() {
        Some((t, rest)) if *t == DC4 || *t == b'\r' || *t == b'\n' => rest,
        _ => line,
    };
    let Some((&id, rest)) = line.split_first() else {
        return Err(SgError::Empty);
    };
    if !line.iter().all(|b| (0x20..0x7F).contains(b)) {
        return Err(SgError::Bytes);
    }
    if !id.is_ascii_alphanumeric() {
        return Err(SgError::Id);
    }
    match id {
        b'5' | b'Q' => parse_contact_id(id, rest).map(SgMessage::ContactId),
        b'S' | b'0' => parse_sia(id, rest).map(SgMessage::Sia),
        b'1' => Ok(match parse_heartbeat(rest) {
            Some(h) => SgMessage::Heartbeat(h),
            None => SgMessage::Other(SgOther {
                id: '1',
                rest: String::from_utf8_lossy(rest).into_owned(),
            }),
        }),
        _ => Ok(SgMessage::Other(SgOther {
            id: char::from(id),
            rest: String::from_utf8_lossy(rest).into_owned(),
        })),
    }
}

/// Encode a Contact ID line, DC4 included. `None` if a field does not fit its layout
/// (account length or characters, group/zone length, code above 999).
pub fn encode_contact_id(m: &SgContactId) -> Option<Vec<u8>> {
    let e = &m.event;
    if m.account.len() != m.layout.account_len()
        || !m.account.bytes().all(is_hex_upper)
        || e.code.0 > 999
        || e.group.len() != 2
        || e.zone.len() != 3
        || !e.group.bytes().chain(e.zone.bytes()).all(cid_digit)
        || m.time.as_deref().is_some_and(|t| time_suffix(t.as_bytes()).is_err())
    {
        return None;
    }
    let mut s = String::with_capacity(40);
    s.push(char::from(m.layout.id()));
    s.push_str(&m.header.text());
    s.push(' ');
    s.push_str(m.layout.format());
    s.push_str(&m.account);
    s.push(qualifier_char(e.qualifier, m.style));
    s.push_str(&format!("{:03}", e.code.0));
    s.push_str(&e.group);
    s.push_str(&e.zone);
    if let Some(t) = &m.time {
        s.push_str(t);
    }
    let mut out = s.into_bytes();
    out.push(DC4);
    Some(out)
}

/// Encode a SIA line, DC4 included. `None` if the data holds `[`, `]` or non-printable bytes.
pub fn encode_sia(m: &SgSia) -> Option<Vec<u8>> {
    if !matches!(m.id, 'S' | '0')
        || !m
            .data
            .bytes()
            .all(|b| (0x20..0x7F).contains(&b) && b != b'[' && b != b']')
    {
        return None;
    }
    let mut out = format!("{}{}[{}]", m.id, m.header.text(), m.data).into_bytes();
    out.push(DC4);
    Some(out)
}

/// The heartbeat line for a header (use [`Header::heartbeat`] for a receiver's own): `1`,
/// header, 11 spaces, `@`, 4 spaces, DC4.
pub fn encode_heartbeat(h: &Header) -> Vec<u8> {
    let mut out = format!("1{}           @    ", h.text()).into_bytes();
    out.push(DC4);
    out
}

/// Encode any message (an [`SgOther`] as its ID and text).
pub fn encode(m: &SgMessage) -> Option<Vec<u8>> {
    match m {
        SgMessage::ContactId(c) => encode_contact_id(c),
        SgMessage::Sia(s) => encode_sia(s),
        SgMessage::Heartbeat(h) => Some(encode_heartbeat(h)),
        SgMessage::Other(o) => {
            let mut out = format!("{}{}", o.id, o.rest).into_bytes();
            out.push(DC4);
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(line: &[u8]) -> SgContactId {
        match decode_line(line) {
            Ok(SgMessage::ContactId(c)) => c,
            other => panic!("{}: {other:?}", String::from_utf8_lossy(line)),
        }
    }

    #[test]
    fn vendor_contact_id_lines() {
        // MLR2-DG / MLR2E-IM: receiver 01, line 1, account 1234, duress 121, group 01, user 001.
        let c = cid(b"5011 181234E12101001\x14");
        assert_eq!(c.header, Header::new("01", "1").expect("header"));
        assert_eq!(
            (c.layout, c.account.as_str(), c.style),
            (CidLayout::Four, "1234", QualifierStyle::Letter)
        );
        assert_eq!(c.event.qualifier, CidQualifier::New);
        assert_eq!(
            (c.event.code, c.event.group.as_str(), c.event.zone.as_str()),
            (CidCode(121), "01", "001")
        );
        assert_eq!(encode_contact_id(&c).as_deref(), Some(&b"5011 181234E12101001\x14"[..]));
        // SG-AOP §4.9: RRLLL header, receiver 01 line 100.
        let c = cid(b"501100 181234E12101001\x14");
        assert_eq!((c.header.receiver.as_str(), c.header.line.as_str()), ("01", "100"));
        assert_eq!(
            encode_contact_id(&c).as_deref(),
            Some(&b"501100 181234E12101001\x14"[..])
        );
        // SG-AOP §4.10: 10-character account, format 58.
        let c = cid(b"Q01100 581234567890E13001005\x14");
        assert_eq!((c.layout, c.account.as_str()), (CidLayout::Ten, "1234567890"));
        assert_eq!(c.event.code, CidCode(130));
        // Field captures: EBS OSM (MLR2 style) and the Hik IP Receiver (restore, 5-char header).
        let c = cid(b"5011 187037E13001004\x14");
        assert_eq!((c.account.as_str(), c.event.zone.as_str()), ("7037", "004"));
        let c = cid(b"501001 187037R30100000\x14");
        assert_eq!((c.event.qualifier, c.event.code), (CidQualifier::Restore, CidCode(301)));
        assert_eq!(c.header.line, "001");
    }

    #[test]
    fn time_suffix_and_digit_qualifiers() {
        let c = cid(b"5011 181234E1210100112:34:56-31/12\x14");
        assert_eq!(c.time.as_deref(), Some("12:34:56-31/12"));
        assert_eq!(
            encode_contact_id(&c).as_deref(),
            Some(&b"5011 181234E1210100112:34:56-31/12\x14"[..])
        );
        let c = cid(b"5011 181234640101001\x14");
        assert_eq!(
            (c.event.qualifier, c.style),
            (CidQualifier::Status, QualifierStyle::Digit)
        );
        let c = cid(b"5011 181234212101001\x14");
        assert_eq!(c.event.qualifier, CidQualifier::Other(2));
        assert_eq!(encode_contact_id(&c).as_deref(), Some(&b"5011 181234212101001\x14"[..]));
        // CR or LF instead of DC4 (emulators), and no terminator at all.
        assert_eq!(cid(b"5011 181234E12101001\r"), cid(b"5011 181234E12101001"));
    }

    #[test]
    fn heartbeats() {
        for (line, rr, l) in [
            (&b"1011           @    \x14"[..], "01", "1"),     // MLR2-DG
            (&b"101000           @    \x14"[..], "01", "000"), // SG-AOP §4.2, receiver 01
            (&b"1010            @     \x14"[..], "01", "0"),   // 12/5 spaces (PY-RX, weak)
        ] {
            match decode_line(line) {
                Ok(SgMessage::Heartbeat(h)) => assert_eq!((h.receiver.as_str(), h.line.as_str()), (rr, l)),
                other => panic!("{other:?}"),
            }
        }
        let h = Header::new("01", "1").expect("h");
        assert_eq!(encode_heartbeat(&h.heartbeat()), b"1011           @    \x14");
        let h = Header::new("01", "100").expect("h");
        assert_eq!(encode_heartbeat(&h.heartbeat()), b"101000           @    \x14");
        // A protocol-1 line that is not a heartbeat is kept as another format.
        assert!(matches!(
            decode_line(b"1011    001234 E 130\x14"),
            Ok(SgMessage::Other(SgOther { id: '1', .. }))
        ));
    }

    #[test]
    fn sia_lines() {
        for (line, rr, l, data) in [
            (&b"S011[#1234|Nri1BA01]\x14"[..], "01", "1", "#1234|Nri1BA01"),
            (&b"S01002[#1234|NBA01]\x14"[..], "01", "002", "#1234|NBA01"),
            (&b"S011[#1234|Nri1BA01/L90]\x14"[..], "01", "1", "#1234|Nri1BA01/L90"),
            (&b"001000[#0000|NYC01]\x14"[..], "01", "000", "#0000|NYC01"),
        ] {
            match decode_line(line) {
                Ok(SgMessage::Sia(s)) => {
                    assert_eq!(
                        (s.header.receiver.as_str(), s.header.line.as_str(), s.data.as_str()),
                        (rr, l, data)
                    );
                    assert_eq!(encode_sia(&s).as_deref(), Some(line));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn errors() {
        for (line, e) in [
            (&b"\x14"[..], SgError::Empty),
            (b"5011 181234E1210100\x14", SgError::Layout),
            (b"5011181234E12101001\x14", SgError::Layout),
            (b"50 181234E12101001\x14", SgError::Header),
            (b"50110000000 181234E12101001\x14", SgError::Header),
            (b"5011 281234E12101001\x14", SgError::Format),
            (b"Q01100 181234567890E13001005\x14", SgError::Format),
            (b"5011 18123xE12101001\x14", SgError::Account),
            (b"5011 181234X12101001\x14", SgError::Qualifier),
            (b"5011 181234E1X101001\x14", SgError::Event(CidError::Shape)),
            (b"5011 181234E1210100112:34:56/31-12\x14", SgError::Time),
            (b"5011 181234E\x0012101001\x14", SgError::Bytes),
            (b"#011 181234E12101001\x14", SgError::Id),
            (b"S011#1234|NBA01\x14", SgError::Sia),
            (b"S011[#1234|NBA01\x14", SgError::Sia),
            (b"S011[#12]34|NBA01]\x14", SgError::Sia),
        ] {
            assert_eq!(decode_line(line), Err(e), "{}", String::from_utf8_lossy(line));
        }
        assert!(matches!(decode_line(b"8011A1234 1234 1\x14"), Ok(SgMessage::Other(_))));
    }

    #[test]
    fn encoder_refuses_what_does_not_fit() {
        let mut c = cid(b"5011 181234E12101001\x14");
        c.account = "12345".into();
        assert!(encode_contact_id(&c).is_none());
        c.account = "12a4".into();
        assert!(encode_contact_id(&c).is_none());
        let mut c = cid(b"5011 181234E12101001\x14");
        c.event.zone = "1".into();
        assert!(encode_contact_id(&c).is_none());
        assert!(Header::new("1", "1").is_none());
        assert!(Header::new("01", "").is_none());
        assert!(Header::new("01", "12345678").is_none());
        assert!(Header::new("0g", "1").is_none());
        let s = SgSia {
            id: 'S',
            header: Header::new("01", "1").expect("h"),
            data: "#1234|N]BA".into(),
        };
        assert!(encode_sia(&s).is_none());
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;

        fn hex(n: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
            proptest::collection::vec(proptest::sample::select(b"0123456789ABCDEF".to_vec()), n)
                .prop_map(|v| String::from_utf8(v).expect("ascii"))
        }

        fn cidd(n: usize) -> impl Strategy<Value = String> {
            proptest::collection::vec(proptest::sample::select(b"0123456789BCDEF".to_vec()), n)
                .prop_map(|v| String::from_utf8(v).expect("ascii"))
        }

        fn header() -> impl Strategy<Value = Header> {
            (hex(2..=2), hex(1..=7)).prop_map(|(r, l)| Header { receiver: r, line: l })
        }

        fn contact_id() -> impl Strategy<Value = SgContactId> {
            (
                header(),
                prop_oneof![Just(CidLayout::Four), Just(CidLayout::Four98), Just(CidLayout::Ten)],
                hex(10..=10),
                0u8..10,
                any::<bool>(),
                0u16..1000,
                cidd(2),
                cidd(3),
                proptest::option::of((0u8..24, 0u8..60, 0u8..60, 1u8..32, 1u8..13)),
            )
                .prop_map(|(header, layout, acct, q, letter, code, group, zone, t)| {
                    let qualifier = match q {
                        1 => CidQualifier::New,
                        3 => CidQualifier::Restore,
                        6 => CidQualifier::Status,
                        d => CidQualifier::Other(d),
                    };
                    let letter = letter && matches!(q, 1 | 3 | 6);
                    SgContactId {
                        header,
                        layout,
                        account: acct[..layout.account_len()].to_string(),
                        event: CidEvent {
                            qualifier,
                            code: CidCode(code),
                            group,
                            zone,
                        },
                        style: if letter {
                            QualifierStyle::Letter
                        } else {
                            QualifierStyle::Digit
                        },
                        time: t.map(|(h, m, s, d, mo)| format!("{h:02}:{m:02}:{s:02}-{d:02}/{mo:02}")),
                    }
                })
        }

        proptest! {
            #[test]
            fn contact_id_round_trips(c in contact_id()) {
                let line = encode_contact_id(&c).expect("encodes");
                prop_assert_eq!(decode_line(&line), Ok(SgMessage::ContactId(c)));
            }

            #[test]
            fn sia_and_heartbeat_round_trip(h in header(), data in "[ -Z\\\\^-~]{0,60}", s in any::<bool>()) {
                let m = SgSia { id: if s { 'S' } else { '0' }, header: h.clone(), data };
                let line = encode_sia(&m).expect("encodes");
                prop_assert_eq!(decode_line(&line), Ok(SgMessage::Sia(m)));
                prop_assert_eq!(decode_line(&encode_heartbeat(&h)), Ok(SgMessage::Heartbeat(h)));
            }

            #[test]
            fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
                if let Ok(m) = decode_line(&bytes) {
                    // Whatever decodes re-encodes to something that decodes the same.
                    if let Some(again) = encode(&m) {
                        let m2 = decode_line(&again);
                        prop_assert!(m2.is_ok());
                        if !matches!(m, SgMessage::Heartbeat(_) | SgMessage::Other(_)) {
                            prop_assert_eq!(m2, Ok(m));
                        }
                    }
                }
            }
        }
    }
}
