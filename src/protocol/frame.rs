//! SIA DC-09 frame: decode and encode (see `protocols/dc09.md`, section "Frame").
//!
//! ```text
//! LF crc(4 hex) len(4 hex) body CR
//! body = DQUOTE ["*"] token DQUOTE seq(4 digits) ["R" 1*6HEX] "L" *6HEX account "[" rest
//! account   = "#" 3*16HEX | "A" 1*16HEX | ""     ; "A0" only in NAK frames; "" = in the data
//! plain     = data "]" *( "[" ALPHA value "]" ) [ "_" HH:MM:SS,MM-DD-YYYY ]
//! encrypted = 1*(32HEX)                           ; AES-CBC ciphertext as hex, either case
//! ```
//!
//! `decode_frame` takes exactly one frame as the [`Framer`](super::framer::Framer) found it
//! (LF … CR) and checks length, CRC and grammar, in that order. A frame whose CRC and length
//! are right but whose fields do not follow the grammar is [`DecodeError::Unreadable`]: the
//! panel sent it as it meant to, so it is answered (DUH) rather than dropped. Two field quirks are accepted only when the
//! caller allows them: the CRC sent as two raw bytes, and the CR counted inside CRC and length.
//! A frame records which framing it used so that responses echo it.

use serde::Serialize;

use super::crc::{crc16_arc, crc16_arc_parts};
use super::timestamp::{TIMESTAMP_LEN, Timestamp};

/// Start of frame.
pub const LF: u8 = 0x0A;
/// End of frame.
pub const CR: u8 = 0x0D;
/// The length field holds 12 bits (`0LLL`): no body can be longer.
pub const MAX_BODY_LEN: usize = 0x0FFF;
/// LF + CRC + length + maximum body + CR.
pub const MAX_FRAME_LEN: usize = 1 + 4 + 4 + MAX_BODY_LEN + 1;

/// Field quirks seen in the field. Each is off unless enabled (per listener for framing, per
/// account for acceptance).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quirks {
    /// CRC as two raw bytes (high byte first) instead of four hex digits (Lupusec, Trikdis).
    pub crc_binary: bool,
    /// CRC and length computed over the body plus the terminating CR (Eldes).
    pub cr_in_crc: bool,
    /// NUL bytes after the CR (ioBroker.sia #11 panels).
    pub trailing_nul: bool,
}

impl Quirks {
    /// No quirk.
    pub const NONE: Quirks = Quirks {
        crc_binary: false,
        cr_in_crc: false,
        trailing_nul: false,
    };
    /// Every quirk (for diagnostic decoding: `meldkamer parse`, the framer of a listener that
    /// has at least one quirky account).
    pub const ALL: Quirks = Quirks {
        crc_binary: true,
        cr_in_crc: true,
        trailing_nul: true,
    };

    /// True if every quirk in `used` is enabled in `self`.
    pub fn permits(&self, used: &Quirks) -> bool {
        (!used.crc_binary || self.crc_binary)
            && (!used.cr_in_crc || self.cr_in_crc)
            && (!used.trailing_nul || self.trailing_nul)
    }

    /// True if no quirk is set.
    pub fn is_empty(&self) -> bool {
        *self == Quirks::NONE
    }

    /// Union of two sets.
    pub fn union(self, other: Quirks) -> Quirks {
        Quirks {
            crc_binary: self.crc_binary || other.crc_binary,
            cr_in_crc: self.cr_in_crc || other.cr_in_crc,
            trailing_nul: self.trailing_nul || other.trailing_nul,
        }
    }

    /// Names of the quirks that are set, for logs and reports.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.crc_binary {
            v.push("crc_binary");
        }
        if self.cr_in_crc {
            v.push("cr_in_crc");
        }
        if self.trailing_nul {
            v.push("trailing_nul");
        }
        v
    }
}

/// How the CRC field is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CrcFormat {
    /// Four ASCII hex digits (the standard).
    #[default]
    Hex,
    /// Two raw bytes, high byte first (quirk).
    Binary,
}

/// How a frame is wrapped: the standard, or one of the field quirks. Responses use the framing
/// of the frame they answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Framing {
    /// CRC field format.
    pub crc: CrcFormat,
    /// CR counted inside CRC and length.
    pub cr_in_crc: bool,
    /// The CRC field was written in lower-case hex (kept so a decoded frame re-encodes byte
    /// for byte; responses always use upper case).
    pub lowercase_crc: bool,
    /// The ciphertext was written in lower-case hex (siadc09 does this).
    pub lowercase_ciphertext: bool,
}

impl Framing {
    /// The quirks this framing needs.
    pub fn quirks(&self) -> Quirks {
        Quirks {
            crc_binary: self.crc == CrcFormat::Binary,
            cr_in_crc: self.cr_in_crc,
            trailing_nul: false,
        }
    }

    /// The framing a response to this frame uses: same CRC format and CR rule, upper case.
    pub fn for_response(&self) -> Framing {
        Framing {
            crc: self.crc,
            cr_in_crc: self.cr_in_crc,
            lowercase_crc: false,
            lowercase_ciphertext: false,
        }
    }
}

/// The ID token, without quotes and without the `*` (see [`Frame::encrypted`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum Token {
    /// `SIA-DCS`: SIA DC-03/DC-04 data.
    SiaDcs,
    /// `ADM-CID`: Contact ID (DC-05) data.
    AdmCid,
    /// `NULL`: link test (supervision poll).
    Null,
    /// `XNM`: extended null (DC-09-2026): a link test that may carry extended data.
    Xnm,
    /// `ACK`: receiver acknowledgement.
    Ack,
    /// `NAK`: receiver refusal (timestamp).
    Nak,
    /// `DUH`: receiver cannot process.
    Duh,
    /// Any other well-formed token (legacy formats, `RSP`…): unsupported by meldkamer.
    Other(String),
}

impl Token {
    /// Classify a token text.
    pub fn from_text(s: &str) -> Token {
        match s {
            "SIA-DCS" => Token::SiaDcs,
            "ADM-CID" => Token::AdmCid,
            "NULL" => Token::Null,
            "XNM" => Token::Xnm,
            "ACK" => Token::Ack,
            "NAK" => Token::Nak,
            "DUH" => Token::Duh,
            other => Token::Other(other.to_string()),
        }
    }

    /// Classify a token as it came off the wire (token characters only: ASCII), without
    /// building a string for the tokens we know.
    pub(crate) fn from_bytes(b: &[u8]) -> Token {
        match b {
            b"SIA-DCS" => Token::SiaDcs,
            b"ADM-CID" => Token::AdmCid,
            b"NULL" => Token::Null,
            b"XNM" => Token::Xnm,
            b"ACK" => Token::Ack,
            b"NAK" => Token::Nak,
            b"DUH" => Token::Duh,
            other => Token::Other(String::from_utf8_lossy(other).into_owned()),
        }
    }

    /// The token text as it travels.
    pub fn as_str(&self) -> &str {
        match self {
            Token::SiaDcs => "SIA-DCS",
            Token::AdmCid => "ADM-CID",
            Token::Null => "NULL",
            Token::Xnm => "XNM",
            Token::Ack => "ACK",
            Token::Nak => "NAK",
            Token::Duh => "DUH",
            Token::Other(s) => s,
        }
    }

    /// True for the tokens a panel may send us and we process.
    pub fn is_supported_message(&self) -> bool {
        matches!(self, Token::SiaDcs | Token::AdmCid | Token::Null | Token::Xnm)
    }

    /// True for the link tests (supervision polls): `NULL` and `XNM`.
    pub fn is_link_test(&self) -> bool {
        matches!(self, Token::Null | Token::Xnm)
    }
}

impl From<Token> for String {
    fn from(t: Token) -> String {
        t.as_str().to_string()
    }
}

/// The account field of the header.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountField {
    /// `#` + 3–16 hex digits, kept as the string it was (so `#0123` and `#123` differ).
    Number(String),
    /// `A` + hex digits: the anonymous account of a NAK (`A0`).
    Anonymous(String),
    /// No account in the header: `[` follows the line directly and the account is only in the
    /// data (pysiaalarm test `case_op`: `"SIA-DCS"4738R0001L0001[#006969|…`). See
    /// [`Frame::account_number`].
    Absent,
}

impl AccountField {
    /// The account number, if this is a numbered account.
    pub fn number(&self) -> Option<&str> {
        match self {
            AccountField::Number(n) => Some(n),
            AccountField::Anonymous(_) | AccountField::Absent => None,
        }
    }
}

/// One extended-data field `[Xvalue]` (letters we do not know are kept as they came).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct XData {
    /// The field letter.
    pub id: char,
    /// The value, bytes as Latin-1 characters.
    pub value: String,
}

/// The clear part of a plain frame, or the decrypted part of an encrypted one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Default)]
pub struct Plain {
    /// Token-specific data between `[` and `]` (bytes as Latin-1 characters).
    pub data: String,
    /// Extended data fields, in order.
    pub xdata: Vec<XData>,
    /// The `_HH:MM:SS,MM-DD-YYYY` timestamp.
    pub timestamp: Option<Timestamp>,
}

/// The frame body after the header.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// Clear text.
    Plain(Plain),
    /// AES-CBC ciphertext (the bytes, not the hex).
    Encrypted(#[serde(serialize_with = "serialize_hex")] Vec<u8>),
}

fn serialize_hex<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode_upper(v))
}

/// A decoded DC-09 frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Frame {
    /// How the frame was wrapped.
    pub framing: Framing,
    /// The ID token.
    pub token: Token,
    /// `*` before the token: the body is encrypted.
    pub encrypted: bool,
    /// Sequence number, 0–9999.
    pub seq: u16,
    /// Receiver number (`R`), hex digits as sent.
    pub receiver: Option<String>,
    /// Line / account prefix (`L`), hex digits as sent.
    pub line: String,
    /// Account.
    pub account: AccountField,
    /// Clear or encrypted body.
    pub body: Body,
}

/// The field in which a frame went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The LF that starts a frame.
    Start,
    /// The CRC field.
    Crc,
    /// The length field.
    Length,
    /// The quoted ID token.
    Token,
    /// The sequence number.
    Sequence,
    /// The `R` receiver number.
    Receiver,
    /// The `L` line prefix.
    Line,
    /// The `#` account.
    Account,
    /// The `[data]` field.
    Data,
    /// An extended-data field.
    ExtendedData,
    /// The `_` timestamp.
    Timestamp,
    /// The encrypted part.
    Ciphertext,
    /// The CR that ends a frame, or bytes after it.
    End,
}

impl Field {
    /// Human name.
    pub fn name(&self) -> &'static str {
        match self {
            Field::Start => "start of frame (LF)",
            Field::Crc => "CRC field",
            Field::Length => "length field",
            Field::Token => "ID token",
            Field::Sequence => "sequence number",
            Field::Receiver => "receiver number (R)",
            Field::Line => "line prefix (L)",
            Field::Account => "account (#)",
            Field::Data => "data field",
            Field::ExtendedData => "extended data field",
            Field::Timestamp => "timestamp",
            Field::Ciphertext => "encrypted data",
            Field::End => "end of frame (CR)",
        }
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum DecodeError {
    /// More bytes are needed (no CR yet).
    Incomplete,
    /// Longer than the configured maximum.
    TooLong {
        /// Bytes seen.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The length field does not match the body.
    Length {
        /// What the field says.
        declared: u16,
        /// What the body is.
        actual: usize,
    },
    /// The CRC field does not match the body.
    Crc {
        /// What the field says.
        declared: u16,
        /// What the body gives.
        computed: u16,
    },
    /// A field does not follow the grammar (and the CRC and length could not be checked, or
    /// were not reached).
    Syntax {
        /// Which field.
        field: Field,
        /// Byte offset from the LF.
        offset: usize,
    },
    /// The CRC and length are right, but a field inside does not follow the grammar: a frame the
    /// panel sent as it meant to (a non-hex account, a missing `L`…). It is answered DUH.
    Unreadable {
        /// Which field.
        field: Field,
        /// Byte offset from the LF.
        offset: usize,
        /// The framing whose CRC and length checked out.
        framing: Framing,
    },
}

impl DecodeError {
    /// A short stable reason key for metrics and storage.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Incomplete => "incomplete",
            DecodeError::TooLong { .. } => "too_long",
            DecodeError::Length { .. } => "length",
            DecodeError::Crc { .. } => "crc",
            DecodeError::Syntax { .. } => "syntax",
            DecodeError::Unreadable { .. } => "unreadable",
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Incomplete => f.write_str("incomplete frame (no CR yet)"),
            DecodeError::TooLong { len, max } => {
                write!(f, "frame too long: {len} bytes, maximum {max}")
            }
            DecodeError::Length { declared, actual } => write!(
                f,
                "length mismatch: the length field says {declared:04X} ({declared} bytes), the body has {actual:04X} ({actual} bytes)"
            ),
            DecodeError::Crc { declared, computed } => write!(
                f,
                "CRC mismatch: the CRC field says {declared:04X}, CRC-16/ARC of the body is {computed:04X}"
            ),
            DecodeError::Syntax { field, offset } => {
                write!(f, "malformed {} at byte {offset}", field.name())
            }
            DecodeError::Unreadable { field, offset, .. } => {
                write!(
                    f,
                    "malformed {} at byte {offset} (CRC and length correct)",
                    field.name()
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// What a decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Quirks that may be used to accept a frame. The frame says which it needed.
    pub quirks: Quirks,
    /// Maximum frame length in bytes, LF and CR included.
    pub max_len: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            quirks: Quirks::NONE,
            max_len: 2048,
        }
    }
}

fn hex_value(d: u8) -> Option<u16> {
    match d {
        b'0'..=b'9' => Some(u16::from(d - b'0')),
        b'a'..=b'f' => Some(u16::from(d - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(d - b'A' + 10)),
        _ => None,
    }
}

fn hex4(s: &[u8]) -> Option<u16> {
    if s.len() != 4 {
        return None;
    }
    s.iter().try_fold(0u16, |acc, d| Some((acc << 4) | hex_value(*d)?))
}

/// Decide the CRC format from the first bytes of a frame (LF at index 0). `None` if neither
/// format fits (or the binary form is not allowed).
pub(crate) fn detect_crc_format(buf: &[u8], allow_binary: bool) -> Option<CrcFormat> {
    let hex_ok = buf.len() >= 10 && buf[1..9].iter().all(|b| hex_value(*b).is_some()) && buf[9] == b'"';
    if hex_ok {
        return Some(CrcFormat::Hex);
    }
    let bin_ok = allow_binary && buf.len() >= 8 && buf[3..7].iter().all(|b| hex_value(*b).is_some()) && buf[7] == b'"';
    if bin_ok {
        return Some(CrcFormat::Binary);
    }
    None
}

/// Check length and CRC in one layout. Returns where the body starts and whether the CR was
/// counted (the quirk).
fn check_integrity(buf: &[u8], format: CrcFormat, allow_cr_in_crc: bool) -> Result<(usize, bool), DecodeError> {
    let (declared_crc, len_at, body_at) = match format {
        CrcFormat::Hex => (hex4(&buf[1..5]).unwrap_or(0), 5, 9),
        CrcFormat::Binary => (u16::from_be_bytes([buf[1], buf[2]]), 3, 7),
    };
    let declared_len = hex4(&buf[len_at..len_at + 4]).unwrap_or(0);
    let body = &buf[body_at..buf.len() - 1];
    let mut cr_in_crc = false;
    if usize::from(declared_len) != body.len() {
        if allow_cr_in_crc && usize::from(declared_len) == body.len() + 1 {
            cr_in_crc = true;
        } else {
            return Err(DecodeError::Length {
                declared: declared_len,
                actual: body.len(),
            });
        }
    }
    let computed = if cr_in_crc {
        crc16_arc_parts(&[body, &[CR]])
    } else {
        crc16_arc(body)
    };
    if computed != declared_crc {
        return Err(DecodeError::Crc {
            declared: declared_crc,
            computed,
        });
    }
    Ok((body_at, cr_in_crc))
}

/// Decode one frame: `buf` is LF … CR exactly as the framer delivered it.
pub fn decode_frame(buf: &[u8], opts: &DecodeOptions) -> Result<Frame, DecodeError> {
    if buf.len() > opts.max_len {
        return Err(DecodeError::TooLong {
            len: buf.len(),
            max: opts.max_len,
        });
    }
    match buf.first() {
        None => return Err(DecodeError::Incomplete),
        Some(&LF) => {}
        Some(_) => {
            return Err(DecodeError::Syntax {
                field: Field::Start,
                offset: 0,
            });
        }
    }
    if buf.last() != Some(&CR) || buf.len() == 1 {
        return Err(DecodeError::Incomplete);
    }
    let Some(format) = detect_crc_format(buf, opts.quirks.crc_binary) else {
        // Eight hex digits but no token quote after them: if CRC and length are right over the
        // rest, the panel sent exactly this, and it can be answered.
        if buf.len() >= 10
            && buf[1..9].iter().all(|b| hex_value(*b).is_some())
            && check_integrity(buf, CrcFormat::Hex, false).is_ok()
        {
            return Err(DecodeError::Unreadable {
                field: Field::Token,
                offset: 9,
                framing: Framing::default(),
            });
        }
        // Say which field is at fault: the CRC digits, the length digits, or the quote.
        let field = if buf.len() >= 5 && buf[1..5].iter().all(|b| hex_value(*b).is_some()) {
            if buf.len() >= 9 && buf[5..9].iter().all(|b| hex_value(*b).is_some()) {
                Field::Token
            } else {
                Field::Length
            }
        } else {
            Field::Crc
        };
        let offset = match field {
            Field::Crc => 1,
            Field::Length => 5,
            _ => 9,
        };
        return Err(DecodeError::Syntax { field, offset });
    };
    // With the binary-CRC quirk allowed, two raw CRC bytes can happen to look like hex digits:
    // then both layouts fit. Take the first whose length and CRC check out; if none does,
    // report the first one's finding.
    let second = (format == CrcFormat::Hex
        && opts.quirks.crc_binary
        && buf.len() >= 8
        && buf[3..7].iter().all(|b| hex_value(*b).is_some()))
    .then_some(CrcFormat::Binary);
    let mut first_error = None;
    let mut found = None;
    for candidate in std::iter::once(format).chain(second) {
        match check_integrity(buf, candidate, opts.quirks.cr_in_crc) {
            Ok(ok) => {
                found = Some((candidate, ok));
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let Some((format, (body_at, cr_in_crc))) = found else {
        return Err(first_error.unwrap_or(DecodeError::Incomplete));
    };
    let body = &buf[body_at..buf.len() - 1];
    let lowercase_crc = format == CrcFormat::Hex && buf[1..5].iter().any(|b| b.is_ascii_lowercase());
    // The `*` test first: it is one byte, and plain frames (most of them) stop there.
    let lowercase_ciphertext = buf.get(body_at + 1) == Some(&b'*')
        && buf[body_at..].contains(&b'[')
        && buf[body_at..]
            .iter()
            .skip_while(|b| **b != b'[')
            .any(|b| b.is_ascii_lowercase());
    let framing = Framing {
        crc: format,
        cr_in_crc,
        lowercase_crc,
        lowercase_ciphertext,
    };
    let parts = body::parse_body(body, body_at).map_err(|e| match e {
        DecodeError::Syntax { field, offset } => DecodeError::Unreadable { field, offset, framing },
        other => other,
    })?;
    Ok(Frame {
        framing,
        token: parts.token,
        encrypted: parts.encrypted,
        seq: parts.seq,
        receiver: parts.receiver,
        line: parts.line,
        account: parts.account,
        body: parts.body,
    })
}

impl Frame {
    /// The account this frame is for: the header's `#` account, or, when the header carries
    /// none ([`AccountField::Absent`]), the `#acct` block that opens the clear data (SIA-DCS
    /// `#006969|Nri1/BA01`, ADM-CID `#006969|1130 01 003`). An encrypted frame without a header
    /// account has none: its key is chosen by account, before anything can be decrypted.
    pub fn account_number(&self) -> Option<&str> {
        match (&self.account, &self.body) {
            (AccountField::Number(n), _) => Some(n),
            (AccountField::Absent, Body::Plain(p)) => data_account(&p.data),
            _ => None,
        }
    }

    /// This frame with the value of every `K` (key change) extended-data field of a plain body
    /// replaced by `*`s of the same length: what may be stored or shown of a frame that offered
    /// a key. The CRC and length of [`Frame::encode`] then fit the redacted bytes.
    pub fn with_keys_redacted(&self) -> Frame {
        let mut f = self.clone();
        if let Body::Plain(p) = &mut f.body {
            for x in p.xdata.iter_mut().filter(|x| x.id == 'K') {
                x.value = "*".repeat(x.value.chars().count());
            }
        }
        f
    }

    /// Append the body bytes (the CRC/length span) to `out`.
    pub fn write_body(&self, out: &mut Vec<u8>) {
        out.push(b'"');
        if self.encrypted {
            out.push(b'*');
        }
        out.extend_from_slice(self.token.as_str().as_bytes());
        out.push(b'"');
        let seq = self.seq % 10000;
        for div in [1000, 100, 10, 1] {
            out.push(b'0' + ((seq / div) % 10) as u8);
        }
        if let Some(r) = &self.receiver {
            out.push(b'R');
            out.extend_from_slice(r.as_bytes());
        }
        out.push(b'L');
        out.extend_from_slice(self.line.as_bytes());
        match &self.account {
            AccountField::Number(n) => {
                out.push(b'#');
                out.extend_from_slice(n.as_bytes());
            }
            AccountField::Anonymous(a) => {
                out.push(b'A');
                out.extend_from_slice(a.as_bytes());
            }
            AccountField::Absent => {}
        }
        out.push(b'[');
        match &self.body {
            Body::Encrypted(ct) => {
                let digits = if self.framing.lowercase_ciphertext {
                    HEX_LOWER
                } else {
                    HEX_UPPER
                };
                let start = out.len();
                out.resize(start + ct.len() * 2, 0);
                for (pair, b) in out[start..].chunks_exact_mut(2).zip(ct) {
                    pair[0] = digits[usize::from(b >> 4)];
                    pair[1] = digits[usize::from(b & 0xF)];
                }
            }
            Body::Plain(p) => write_plain_tail(p, out),
        }
    }

    /// The complete frame, LF … CR, in this frame's framing.
    pub fn encode(&self) -> Vec<u8> {
        // One buffer: the CRC and length are filled in once the body is written after them.
        let mut out = Vec::with_capacity(128);
        let body_at = open_frame(&mut out, self.framing);
        self.write_body(&mut out);
        close_frame(&mut out, body_at, self.framing);
        if self.framing.lowercase_crc && self.framing.crc == CrcFormat::Hex {
            out[1..5].make_ascii_lowercase();
        }
        out
    }
}

/// The account of a data field that opens with an account block: `#` + 3–16 hex digits, then
/// `|` or the end of the data.
fn data_account(data: &str) -> Option<&str> {
    let digits = data.strip_prefix('#')?;
    let end = digits.find('|').unwrap_or(digits.len());
    let acct = &digits[..end];
    ((3..=16).contains(&acct.len()) && acct.bytes().all(|b| b.is_ascii_hexdigit())).then_some(acct)
}

/// `data ] xdata* [_ts]`: what follows the `[` in a plain frame and, after the pad, inside an
/// encrypted one.
pub(crate) fn write_plain_tail(p: &Plain, out: &mut Vec<u8>) {
    push_latin1(&p.data, out);
    out.push(b']');
    for x in &p.xdata {
        out.push(b'[');
        out.push(latin1_byte(x.id));
        push_latin1(&x.value, out);
        out.push(b']');
    }
    if let Some(ts) = p.timestamp {
        out.push(b'_');
        ts.write_to(out);
    }
}

/// Characters are written as single bytes (the decoder reads bytes as Latin-1); a character
/// beyond U+00FF cannot travel and is written as `?`.
pub(crate) fn push_latin1(s: &str, out: &mut Vec<u8>) {
    // ASCII (nearly every field) is its own bytes.
    if s.is_ascii() {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for c in s.chars() {
        out.push(latin1_byte(c));
    }
}

fn latin1_byte(c: char) -> u8 {
    u8::try_from(u32::from(c)).unwrap_or(b'?')
}

/// Bytes to a String, one char per byte (Latin-1); lossless and reversible.
pub(crate) fn latin1(bytes: &[u8]) -> String {
    // ASCII is the same text in UTF-8: copy it instead of encoding char by char.
    match std::str::from_utf8(bytes) {
        Ok(s) if s.is_ascii() => s.to_owned(),
        _ => bytes.iter().map(|b| char::from(*b)).collect(),
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// Nibble value of each byte; 0xFF for a byte that is not a hex digit.
const HEX_NIBBLE: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Hex digits (either case) to bytes, by table (`hex::decode` goes through an iterator of
/// `Result`s and was a tenth of decoding an encrypted frame). `None` for an odd count or a
/// non-digit.
pub(crate) fn decode_hex(digits: &[u8]) -> Option<Vec<u8>> {
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() / 2);
    for pair in digits.chunks_exact(2) {
        let (hi, lo) = (HEX_NIBBLE[usize::from(pair[0])], HEX_NIBBLE[usize::from(pair[1])]);
        if (hi | lo) > 0xF {
            return None;
        }
        out.push((hi << 4) | lo);
    }
    Some(out)
}

/// Start a frame in `out`: LF and room for the CRC and length fields. Returns where the body
/// starts; [`close_frame`] fills the fields in.
fn open_frame(out: &mut Vec<u8>, framing: Framing) -> usize {
    out.push(LF);
    let crc_len = match framing.crc {
        CrcFormat::Hex => 4,
        CrcFormat::Binary => 2,
    };
    out.resize(out.len() + crc_len + 4, b'0');
    out.len()
}

/// Fill in CRC and length for the body from `body_at` to the end of `out`, and append the CR.
fn close_frame(out: &mut Vec<u8>, body_at: usize, framing: Framing) {
    let body = &out[body_at..];
    let (crc, len) = if framing.cr_in_crc {
        (crc16_arc_parts(&[body, &[CR]]), body.len() + 1)
    } else {
        (crc16_arc(body), body.len())
    };
    let len_at = match framing.crc {
        CrcFormat::Hex => {
            write_hex4(crc, &mut out[1..5]);
            5
        }
        CrcFormat::Binary => {
            out[1..3].copy_from_slice(&crc.to_be_bytes());
            3
        }
    };
    write_hex4(u16::try_from(len).unwrap_or(u16::MAX), &mut out[len_at..len_at + 4]);
    out.push(CR);
}

/// Wrap a body into LF CRC LEN body CR.
pub fn wrap(body: &[u8], framing: Framing) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 10);
    let body_at = open_frame(&mut out, framing);
    out.extend_from_slice(body);
    close_frame(&mut out, body_at, framing);
    out
}

fn write_hex4(v: u16, out: &mut [u8]) {
    for (d, shift) in out.iter_mut().zip([12, 8, 4, 0]) {
        *d = HEX_UPPER[usize::from((v >> shift) & 0xF)];
    }
}

/// Body grammar, parsed with nom in complete mode over exactly the CRC-checked span.
mod body {
    use super::*;
    use nom::bytes::complete::{tag, take_while, take_while_m_n};
    use nom::combinator::opt;
    use nom::{IResult, Parser};

    pub(super) struct Parts {
        pub token: Token,
        pub encrypted: bool,
        pub seq: u16,
        pub receiver: Option<String>,
        pub line: String,
        pub account: AccountField,
        pub body: Body,
    }

    fn is_hex(b: u8) -> bool {
        b.is_ascii_hexdigit()
    }

    fn is_token_char(b: u8) -> bool {
        b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-'
    }

    /// Printable text inside `[...]`: anything but control characters and brackets.
    fn is_field_char(b: u8) -> bool {
        b >= 0x20 && b != b'[' && b != b']' && b != 0x7F
    }

    fn ascii(s: &[u8]) -> String {
        // Only ever called on hex digits or token characters: ASCII.
        String::from_utf8_lossy(s).into_owned()
    }

    pub(super) fn parse_body(body: &[u8], base: usize) -> Result<Parts, DecodeError> {
        let err = |field: Field, rest: &[u8]| DecodeError::Syntax {
            field,
            offset: base + body.len() - rest.len(),
        };

        // "TOKEN" or "*TOKEN"
        let r: IResult<&[u8], (&[u8], Option<&[u8]>, &[u8], &[u8])> = (
            tag(&b"\""[..]),
            opt(tag(&b"*"[..])),
            take_while_m_n(1, 16, is_token_char),
            tag(&b"\""[..]),
        )
            .parse(body);
        let (rest, (_, star, token, _)) = r.map_err(|_| err(Field::Token, body))?;

        let r: IResult<&[u8], &[u8]> = take_while_m_n(4, 4, |b: u8| b.is_ascii_digit()).parse(rest);
        let (rest, seq) = r.map_err(|_| err(Field::Sequence, rest))?;
        let seq = seq.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));

        let (rest, receiver) = if rest.first() == Some(&b'R') {
            let r: IResult<&[u8], &[u8]> = take_while_m_n(1, 6, is_hex).parse(&rest[1..]);
            let (rest2, rcv) = r.map_err(|_| err(Field::Receiver, rest))?;
            if rest2.first().is_some_and(|b| is_hex(*b)) {
                return Err(err(Field::Receiver, rest2));
            }
            (rest2, Some(ascii(rcv)))
        } else {
            (rest, None)
        };

        // "L" line, then "#" account, or (NAK only) "A" account, or no account at all. "A" is
        // also a hex digit, so "L0A0[" is split at the first "A" after at least one line digit;
        // a run without such an "A" is all line, and the account is only in the data. The line
        // may be empty ("L#", Chinese IP hosts, ioBroker.sia #11 and #19): an "L" followed at
        // once by "#" has no other reading, and the ACK echoes it as sent.
        let r: IResult<&[u8], (&[u8], &[u8])> = (tag(&b"L"[..]), take_while(is_hex)).parse(rest);
        let (after_line, (_, digits)) = r.map_err(|_| err(Field::Line, rest))?;
        let line_ok = |d: &[u8]| d.len() <= 6;
        let (rest, line, account) = match after_line.first() {
            Some(b'#') => {
                if !line_ok(digits) {
                    return Err(err(Field::Line, &rest[1..]));
                }
                let acct_at = &after_line[1..];
                let r: IResult<&[u8], &[u8]> = take_while(is_hex).parse(acct_at);
                let (rest2, acct) = r.map_err(|_| err(Field::Account, after_line))?;
                if !(3..=16).contains(&acct.len()) {
                    return Err(err(Field::Account, after_line));
                }
                (rest2, digits, AccountField::Number(ascii(acct)))
            }
            Some(b'[') => {
                match digits.iter().skip(1).position(|b| *b == b'A').map(|k| k + 1) {
                    Some(k) => {
                        let (line, acct) = (&digits[..k], &digits[k + 1..]);
                        if !line_ok(line) {
                            return Err(err(Field::Line, &rest[1..]));
                        }
                        if !(1..=16).contains(&acct.len()) {
                            return Err(err(Field::Account, after_line));
                        }
                        (after_line, line, AccountField::Anonymous(ascii(acct)))
                    }
                    // No account in the header: the whole run is the line.
                    None if line_ok(digits) => (after_line, digits, AccountField::Absent),
                    None => return Err(err(Field::Line, &rest[1..])),
                }
            }
            _ if !line_ok(digits) => return Err(err(Field::Line, &rest[1..])),
            _ => return Err(err(Field::Account, after_line)),
        };

        let r: IResult<&[u8], &[u8]> = tag(&b"["[..]).parse(rest);
        let (rest, _) = r.map_err(|_| err(Field::Data, rest))?;

        let encrypted = star.is_some();
        let body = if encrypted {
            let r: IResult<&[u8], &[u8]> = take_while(is_hex).parse(rest);
            let (after, hexdigits) = r.map_err(|_| err(Field::Ciphertext, rest))?;
            if !after.is_empty() {
                return Err(err(Field::Ciphertext, after));
            }
            if hexdigits.is_empty() || hexdigits.len() % 32 != 0 {
                return Err(err(Field::Ciphertext, rest));
            }
            let ct = decode_hex(hexdigits).ok_or_else(|| err(Field::Ciphertext, rest))?;
            Body::Encrypted(ct)
        } else {
            let (after, plain) = parse_plain_tail(rest).map_err(|(field, at)| err(field, at))?;
            if !after.is_empty() {
                return Err(err(Field::End, after));
            }
            Body::Plain(plain)
        };

        Ok(Parts {
            token: Token::from_bytes(token),
            encrypted,
            seq,
            receiver,
            line: ascii(line),
            account,
            body,
        })
    }

    /// `data "]" *xdata ["_" ts]`, returning what is left after it.
    pub(crate) fn parse_plain_tail(input: &[u8]) -> Result<(&[u8], Plain), (Field, &[u8])> {
        let r: IResult<&[u8], (&[u8], &[u8])> = (take_while(is_field_char), tag(&b"]"[..])).parse(input);
        let (mut rest, (data, _)) = r.map_err(|_| (Field::Data, input))?;
        let mut xdata = Vec::new();
        while rest.first() == Some(&b'[') {
            let r: IResult<&[u8], (&[u8], &[u8], &[u8], &[u8])> = (
                tag(&b"["[..]),
                take_while_m_n(1, 1, |b: u8| b.is_ascii_alphabetic()),
                take_while(is_field_char),
                tag(&b"]"[..]),
            )
                .parse(rest);
            let (r2, (_, id, value, _)) = r.map_err(|_| (Field::ExtendedData, rest))?;
            xdata.push(XData {
                id: char::from(id[0]),
                value: latin1(value),
            });
            rest = r2;
        }
        let mut timestamp = None;
        if rest.first() == Some(&b'_') {
            let ts_bytes = rest.get(1..1 + TIMESTAMP_LEN).ok_or((Field::Timestamp, rest))?;
            timestamp = Some(Timestamp::parse(ts_bytes).ok_or((Field::Timestamp, rest))?);
            rest = &rest[1 + TIMESTAMP_LEN..];
        }
        Ok((
            rest,
            Plain {
                data: latin1(data),
                xdata,
                timestamp,
            },
        ))
    }
}

pub(crate) use body::parse_plain_tail;

/// `raw` with the value of every `[K…]` block (a key offered over the air, in clear) starred
/// out, byte for byte, for bytes that could not be decoded as a frame and are still stored,
/// logged or recorded. The length stays; the CRC no longer fits (the frame did not decode
/// anyway). Borrowed as is when there is no `[K`.
pub fn redact_key_bytes(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !raw.windows(2).any(|w| w == b"[K") {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = raw.to_vec();
    let mut i = 0;
    while i + 1 < out.len() {
        if out[i] == b'[' && out[i + 1] == b'K' {
            let mut j = i + 2;
            while j < out.len() && out[j] != b']' {
                out[j] = b'*';
                j += 1;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> DecodeOptions {
        DecodeOptions::default()
    }

    #[test]
    fn decodes_plain_sia_frame() {
        let raw = b"\nF4D20029\"SIA-DCS\"0001RF3L77#1234[#1234|NRR|Atest]\r";
        let f = decode_frame(raw, &opts()).expect("valid");
        assert_eq!(f.token, Token::SiaDcs);
        assert!(!f.encrypted);
        assert_eq!(f.seq, 1);
        assert_eq!(f.receiver.as_deref(), Some("F3"));
        assert_eq!(f.line, "77");
        assert_eq!(f.account, AccountField::Number("1234".into()));
        let Body::Plain(p) = &f.body else { panic!("plain") };
        assert_eq!(p.data, "#1234|NRR|Atest");
        assert_eq!(f.encode(), raw.to_vec());
    }

    #[test]
    fn lower_case_crc_is_accepted() {
        let raw = b"\nf4d20029\"SIA-DCS\"0001RF3L77#1234[#1234|NRR|Atest]\r";
        assert!(decode_frame(raw, &opts()).is_ok());
    }

    #[test]
    fn crc_and_length_errors_are_named() {
        let bad_crc = b"\nD1A90039\"SIA-DCS\"0040L0#1234[#1234|Nri1/BA01]_12:00:00,01-15-2026\r";
        assert!(matches!(
            decode_frame(bad_crc, &opts()),
            Err(DecodeError::Crc {
                declared: 0xD1A9,
                computed: 0xD1A8
            })
        ));
        let bad_len = b"\nD1A8003A\"SIA-DCS\"0040L0#1234[#1234|Nri1/BA01]_12:00:00,01-15-2026\r";
        assert!(matches!(
            decode_frame(bad_len, &opts()),
            Err(DecodeError::Length {
                declared: 0x3A,
                actual: 0x39
            })
        ));
    }

    #[test]
    fn binary_crc_only_when_allowed() {
        let std = decode_frame(b"\nF4D20029\"SIA-DCS\"0001RF3L77#1234[#1234|NRR|Atest]\r", &opts()).expect("valid");
        let mut f = std.clone();
        f.framing.crc = CrcFormat::Binary;
        let raw = f.encode();
        assert_eq!(&raw[1..3], &[0xF4, 0xD2]);
        assert!(decode_frame(&raw, &opts()).is_err());
        let q = DecodeOptions {
            quirks: Quirks {
                crc_binary: true,
                ..Quirks::NONE
            },
            ..opts()
        };
        let back = decode_frame(&raw, &q).expect("binary crc accepted with quirk");
        assert_eq!(back, f);
        assert!(back.framing.quirks().crc_binary);
    }

    /// Found by the property tests: two binary CRC bytes that happen to be ASCII hex digits
    /// (0x37 0x66 = "7f") make the frame look like the hex layout too. The decoder must take
    /// the layout whose length and CRC check out, not blame the length.
    #[test]
    fn binary_crc_bytes_that_look_like_hex_digits() {
        let framing = Framing {
            crc: CrcFormat::Binary,
            cr_in_crc: true,
            ..Framing::default()
        };
        let raw = wrap(b"BA\"DUH", framing);
        assert_eq!(&raw[1..3], b"7f");
        let q = DecodeOptions {
            quirks: Quirks::ALL,
            ..opts()
        };
        assert!(matches!(
            decode_frame(&raw, &q),
            Err(DecodeError::Unreadable {
                field: Field::Token,
                framing: Framing {
                    crc: CrcFormat::Binary,
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn cr_in_crc_only_when_allowed() {
        let mut f = decode_frame(b"\nF4D20029\"SIA-DCS\"0001RF3L77#1234[#1234|NRR|Atest]\r", &opts()).expect("valid");
        f.framing.cr_in_crc = true;
        let raw = f.encode();
        assert_eq!(&raw[5..9], b"002A");
        assert!(matches!(decode_frame(&raw, &opts()), Err(DecodeError::Length { .. })));
        let q = DecodeOptions {
            quirks: Quirks {
                cr_in_crc: true,
                ..Quirks::NONE
            },
            ..opts()
        };
        assert_eq!(decode_frame(&raw, &q).expect("accepted with quirk"), f);
    }

    #[test]
    fn unsupported_token_parses() {
        let body = b"\"SIA-PUL\"0001L0#1234[]";
        let raw = wrap(body, Framing::default());
        let f = decode_frame(&raw, &opts()).expect("well-formed");
        assert_eq!(f.token, Token::Other("SIA-PUL".into()));
        assert!(!f.token.is_supported_message());
    }

    /// Bodies with a right CRC and length whose fields do not parse are `Unreadable`, naming
    /// the field; the frame then gets a DUH (`policy::evaluate_undecoded`).
    #[test]
    fn syntax_errors_name_the_field() {
        let cases: &[(&[u8], Field)] = &[
            (b"\"SIA-DCS\"001L0#1234[]", Field::Sequence),
            (b"\"SIA-DCS\"0001L1234567#1234[]", Field::Line),
            (b"\"SIA-DCS\"0001#1234[]", Field::Line),
            (b"\"ADM-CID\"6616R0L0#foc7688[#foc7688|1351 01 000]", Field::Account),
            (b"\"SIA-DCS\"0001L0#12[]", Field::Account),
            (b"\"SIA-DCS\"0001L0#1234[x", Field::Data),
            (b"\"SIA-DCS\"0001L0#1234[x][", Field::ExtendedData),
            (b"\"SIA-DCS\"0001L0#1234[x]_12:00", Field::Timestamp),
            (b"\"SIA-DCS\"0001L0#1234[x]_12:00:00,01-15-2026x", Field::End),
            (b"\"*SIA-DCS\"0001L0#1234[ABC", Field::Ciphertext),
            (b"SIA-DCS\"0001L0#1234[]", Field::Token),
            (b"\"SIA-DCS\"0001R0123456L0#1234[]", Field::Receiver),
            (b"\"SIA-DCS\"0001L0#12345678901234567[]", Field::Account),
        ];
        for (body, field) in cases {
            let raw = wrap(body, Framing::default());
            match decode_frame(&raw, &opts()) {
                Err(DecodeError::Unreadable {
                    field: got, framing, ..
                }) => {
                    assert_eq!(got, *field, "{}", String::from_utf8_lossy(body));
                    assert_eq!(framing, Framing::default());
                }
                other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
        // Without a token quote there is still a CRC and length to check.
        let raw = wrap(b"HID=1234#LFQ=600", Framing::default());
        assert!(matches!(
            decode_frame(&raw, &opts()),
            Err(DecodeError::Unreadable {
                field: Field::Token,
                offset: 9,
                ..
            })
        ));
        let mut bad = raw.clone();
        bad[1] = if bad[1] == b'0' { b'1' } else { b'0' };
        assert!(matches!(
            decode_frame(&bad, &opts()),
            Err(DecodeError::Syntax {
                field: Field::Token,
                ..
            })
        ));
    }

    /// An `L` with no digits (Chinese IP hosts, ioBroker.sia #11 and #19) is an empty line
    /// prefix, echoed as sent; without it the frame was unreadable.
    #[test]
    fn empty_line_prefix_is_line_absent() {
        let raw = wrap(b"\"NULL\"0001L#7303658550[]", Framing::default());
        let f = decode_frame(&raw, &opts()).expect("empty line prefix");
        assert_eq!(f.line, "");
        assert_eq!(f.account_number(), Some("7303658550"));
        assert_eq!(f.encode(), raw);
        let ack = crate::protocol::response::ack_plain(&f).encode();
        assert!(ack.ends_with(b"\"ACK\"0001L#7303658550[]\r"), "{}", ack.escape_ascii());
    }

    /// No account in the header (pysiaalarm `case_op`): the account is the data's `#` block
    /// for a plain frame, none for an encrypted one; the header is echoed without it.
    #[test]
    fn account_only_in_the_data() {
        let raw = wrap(b"\"SIA-DCS\"4738R0001L0001[#006969|Nri1/BA01]", Framing::default());
        let f = decode_frame(&raw, &opts()).expect("header without account");
        assert_eq!((f.line.as_str(), &f.account), ("0001", &AccountField::Absent));
        assert_eq!(f.account_number(), Some("006969"));
        assert_eq!(f.encode(), raw);
        let ack = crate::protocol::response::ack_plain(&f).encode();
        assert!(ack.ends_with(b"\"ACK\"4738R0001L0001[]\r"), "{}", ack.escape_ascii());
        for data in [&b"Nri1/BA01"[..], b"#12|Nri1/BA01", b"#12G4|Nri1/BA01", b""] {
            let mut body = b"\"SIA-DCS\"4738R0001L0001[".to_vec();
            body.extend_from_slice(data);
            body.push(b']');
            let f = decode_frame(&wrap(&body, Framing::default()), &opts()).expect("decodes");
            assert_eq!(f.account_number(), None, "{}", body.escape_ascii());
        }
        let enc = wrap(
            b"\"*SIA-DCS\"0001L0001[00112233445566778899AABBCCDDEEFF",
            Framing::default(),
        );
        assert_eq!(decode_frame(&enc, &opts()).expect("decodes").account_number(), None);
        // The NAK shape keeps its anonymous account.
        let nak = decode_frame(b"\nE4410025\"NAK\"0000R0L0A0[]_16:20:01,09-24-2025\r", &opts()).expect("NAK");
        assert_eq!(nak.account, AccountField::Anonymous("0".into()));
    }

    #[test]
    fn truncation_is_incomplete() {
        let raw = b"\nF4D20029\"SIA-DCS\"0001RF3L77#1234[#1234|NRR|Atest]\r";
        for cut in 0..raw.len() {
            assert_eq!(
                decode_frame(&raw[..cut], &opts()),
                Err(DecodeError::Incomplete),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn key_blocks_are_starred_out_of_undecodable_bytes() {
        let raw = b"\nBAD0003E\"SIA-DCS\"0001L0#1234[#1234|Nri1/BA01][K0123456789abcdef]_12:00:00,01-15-2026\r";
        let red = redact_key_bytes(raw);
        assert_eq!(red.len(), raw.len());
        assert!(!String::from_utf8_lossy(&red).contains("0123456789abcdef"));
        assert!(String::from_utf8_lossy(&red).contains("[K****************]"));
        assert!(matches!(
            redact_key_bytes(b"\n[#1234|Nri1/BA01]\r"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
