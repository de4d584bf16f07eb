//! Property tests for the pure protocol core (issue "Protocol core … fuzzed").
//!
//! * encode → decode → encode is byte-identical for every frame kind and framing, encrypted
//!   frames included (decrypt, re-encrypt with the same pad, re-encode);
//! * no input makes the decoder, framer, decrypter or payload parsers panic, and the framer
//!   always makes progress and never buffers more than its maximum;
//! * every single-bit flip of a valid frame is refused (or decodes to the same content: a
//!   case flip of a hex digit in the CRC or length field);
//! * the timestamp window is exactly −40 s … +20 s.
//!
//! Generators produce only values the grammar in `src/protocol/frame.rs` allows. Every property
//! runs 10 000 cases.

use meldkamer::event::events_from;
use meldkamer::protocol::cid::{encode_contact_id, parse_adm_cid, parse_contact_id};
use meldkamer::protocol::crypto::{
    Key, KeyFormat, SeededPad, aes_cbc_encrypt, decrypt_body, encrypt_body, encrypt_body_with_pad,
};
use meldkamer::protocol::frame::{
    AccountField, Body, CrcFormat, DecodeError, DecodeOptions, Frame, Framing, MAX_BODY_LEN, MAX_FRAME_LEN, Plain,
    Quirks, Token, XData, decode_frame, wrap,
};
use meldkamer::protocol::framer::{Chunk, Framer, split_all};
use meldkamer::protocol::policy::{AccountPolicy, Refusal, Verdict, Window, evaluate, response_frame};
use meldkamer::protocol::sia::parse_sia_data;
use meldkamer::protocol::timestamp::Timestamp;
use proptest::prelude::*;
use proptest::sample::select;
use time::{Date, Duration, Month};

const CASES: u32 = 10_000;

fn opts(quirks: Quirks) -> DecodeOptions {
    DecodeOptions {
        quirks,
        max_len: MAX_FRAME_LEN,
    }
}

fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

// ---------------------------------------------------------------------------------------------
// Generators of valid field values
// ---------------------------------------------------------------------------------------------

const HEX: &[u8] = b"0123456789ABCDEFabcdef";
/// Hex digits without `A`: a line prefix in front of an anonymous `A` account must not contain
/// one, since `L1A2A0` is ambiguous and the decoder splits at the first `A`.
const HEX_NO_A: &[u8] = b"0123456789BCDEFabcdef";
const TOKEN_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-";
const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn string_of(chars: &'static [u8], len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(select(chars), len).prop_map(|v| v.into_iter().map(char::from).collect())
}

/// Characters allowed in `[data]` and extended-data values: 0x20..=0xFF except `[`, `]` and
/// DEL, as Latin-1 characters.
fn field_chars() -> Vec<char> {
    (0x20u8..=0xFF)
        .filter(|b| !matches!(b, b'[' | b']' | 0x7F))
        .map(char::from)
        .collect()
}

pub(crate) fn field_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(select(field_chars()), 0..=max).prop_map(String::from_iter)
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (2000i32..2100, 1u8..=12, 1u8..=31, 0u8..24, 0u8..60, 0u8..60).prop_map(|(y, m, d, h, mi, s)| {
        let month = Month::try_from(m).expect("1..=12");
        // Clamp the day to the month's length.
        let day = (1..=d)
            .rev()
            .find(|d| Date::from_calendar_date(y, month, *d).is_ok())
            .expect("day 1 exists");
        let text = format!("{h:02}:{mi:02}:{s:02},{m:02}-{day:02}-{y:04}");
        Timestamp::parse(text.as_bytes()).expect("generated timestamp is valid")
    })
}

fn xdata() -> impl Strategy<Value = XData> {
    (select(LETTERS), field_text(12)).prop_map(|(id, value)| XData {
        id: char::from(id),
        value,
    })
}

/// Sizes of generated content: data characters and extended-data fields.
#[derive(Debug, Clone, Copy)]
struct Size {
    data: usize,
    xdata: usize,
}

/// Full-size content for the round trips.
const FULL: Size = Size { data: 32, xdata: 2 };
/// Smaller frames for the bit-flip property, which decodes 8 variants of every byte.
const SMALL: Size = Size { data: 12, xdata: 1 };

fn plain_with(size: Size, ts: BoxedStrategy<Option<Timestamp>>) -> impl Strategy<Value = Plain> {
    (
        field_text(size.data),
        prop::collection::vec(xdata(), 0..=size.xdata),
        ts,
    )
        .prop_map(|(data, xdata, timestamp)| Plain { data, xdata, timestamp })
}

fn plain_sized(size: Size) -> impl Strategy<Value = Plain> {
    plain_with(size, prop::option::of(timestamp()).boxed())
}

fn plain() -> impl Strategy<Value = Plain> {
    plain_sized(FULL)
}

/// Encrypted frames must carry a timestamp.
fn plain_with_timestamp(size: Size) -> impl Strategy<Value = Plain> {
    plain_with(size, timestamp().prop_map(Some).boxed())
}

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![
        Just(Token::SiaDcs),
        Just(Token::AdmCid),
        Just(Token::Null),
        Just(Token::Xnm),
        Just(Token::Ack),
        Just(Token::Nak),
        Just(Token::Duh),
        string_of(TOKEN_CHARS, 1..=16).prop_map(|s| Token::from_text(&s)),
    ]
}

fn line_and_account() -> impl Strategy<Value = (String, AccountField)> {
    prop_oneof![
        4 => (string_of(HEX, 0..=6), string_of(HEX, 3..=16)).prop_map(|(l, a)| (l, AccountField::Number(a))),
        1 => (string_of(HEX_NO_A, 1..=6), string_of(HEX, 1..=16)).prop_map(|(l, a)| (l, AccountField::Anonymous(a))),
        // No account in the header (the account only in the data); the line may be empty.
        1 => string_of(HEX_NO_A, 0..=6).prop_map(|l| (l, AccountField::Absent)),
    ]
}

fn framing() -> impl Strategy<Value = Framing> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(binary, cr_in_crc, lc_crc, lc_ct)| {
        Framing {
            crc: if binary { CrcFormat::Binary } else { CrcFormat::Hex },
            cr_in_crc,
            lowercase_crc: lc_crc && !binary,
            lowercase_ciphertext: lc_ct,
        }
    })
}

/// Header fields shared by all frames: token, sequence, receiver, line, account.
type Header = (Token, u16, Option<String>, (String, AccountField));

fn header() -> impl Strategy<Value = Header> {
    (
        token(),
        0u16..=9999,
        prop::option::of(string_of(HEX, 1..=6)),
        line_and_account(),
    )
}

fn frame_of(h: Header, framing: Framing, encrypted: bool, body: Body) -> Frame {
    let (token, seq, receiver, (line, account)) = h;
    Frame {
        framing,
        token,
        encrypted,
        seq,
        receiver,
        line,
        account,
        body,
    }
}

fn plain_frame() -> impl Strategy<Value = Frame> {
    plain_frame_sized(FULL)
}

fn plain_frame_sized(size: Size) -> impl Strategy<Value = Frame> {
    (header(), framing(), plain_sized(size)).prop_map(|(h, mut framing, p)| {
        framing.lowercase_ciphertext = false;
        frame_of(h, framing, false, Body::Plain(p))
    })
}

/// The receiver's answers, in every framing: ACK `[]`, NAK `R0L0A0[]_ts`, DUH `[]`.
fn response_shaped_frame() -> impl Strategy<Value = Frame> {
    (
        prop_oneof![Just(Token::Ack), Just(Token::Nak), Just(Token::Duh)],
        header(),
        framing(),
        timestamp(),
    )
        .prop_map(|(token, h, mut framing, ts)| {
            framing.lowercase_ciphertext = false;
            let mut f = frame_of(h, framing, false, Body::Plain(Plain::default()));
            f.token = token.clone();
            if token == Token::Nak {
                f.seq = 0;
                f.receiver = Some("0".into());
                f.line = "0".into();
                f.account = AccountField::Anonymous("0".into());
                f.body = Body::Plain(Plain {
                    timestamp: Some(ts),
                    ..Plain::default()
                });
            }
            f
        })
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 16),
        prop::collection::vec(any::<u8>(), 24),
        prop::collection::vec(any::<u8>(), 32),
    ]
    .prop_map(|b| Key::from_bytes(&b, KeyFormat::Hex).expect("16/24/32 bytes"))
}

/// An encrypted frame and what it was built from.
#[derive(Debug, Clone)]
struct Encrypted {
    frame: Frame,
    key: Key,
    plain: Plain,
    separator: bool,
}

fn encrypted_frame() -> impl Strategy<Value = Encrypted> {
    encrypted_frame_sized(FULL)
}

fn encrypted_frame_sized(size: Size) -> impl Strategy<Value = Encrypted> {
    (
        header(),
        framing(),
        plain_with_timestamp(size),
        key(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(h, framing, plain, key, seed, separator)| {
            let ct = encrypt_body(&key, &plain, separator, &mut SeededPad::new(seed));
            Encrypted {
                frame: frame_of(h, framing, true, Body::Encrypted(ct)),
                key,
                plain,
                separator,
            }
        })
}

fn any_valid_frame() -> impl Strategy<Value = Frame> {
    any_valid_frame_sized(FULL)
}

fn any_valid_frame_sized(size: Size) -> impl Strategy<Value = Frame> {
    prop_oneof![
        3 => plain_frame_sized(size),
        1 => response_shaped_frame(),
        2 => encrypted_frame_sized(size).prop_map(|e| e.frame),
    ]
}

/// The frame with another framing: compares content only.
fn with_framing(f: &Frame, framing: Framing) -> Frame {
    Frame { framing, ..f.clone() }
}

/// encode → decode (all quirks) → encode is byte-identical, the decoded content is the
/// original, and the quirky framings are refused without their quirk.
fn check_round_trip(f: &Frame) -> Result<Frame, TestCaseError> {
    let bytes = f.encode();
    let back =
        decode_frame(&bytes, &opts(Quirks::ALL)).map_err(|e| TestCaseError::fail(format!("{e}: {}", show(&bytes))))?;
    prop_assert_eq!(show(&back.encode()), show(&bytes));
    prop_assert_eq!(&with_framing(&back, f.framing), f);
    prop_assert_eq!(back.framing.crc, f.framing.crc);
    prop_assert_eq!(back.framing.cr_in_crc, f.framing.cr_in_crc);
    let strict = decode_frame(&bytes, &opts(Quirks::NONE));
    if f.framing.quirks().is_empty() {
        prop_assert_eq!(strict, Ok(back.clone()));
    } else {
        prop_assert!(strict.is_err(), "quirky framing accepted without the quirk");
    }
    Ok(back)
}

// ---------------------------------------------------------------------------------------------
// Generators of hostile input
// ---------------------------------------------------------------------------------------------

/// Pieces of the DC-09 and payload grammars, so that random concatenations get deep into the
/// parsers instead of failing at the first byte.
const SOUP: &[&str] = &[
    "\"",
    "*",
    "SIA-DCS",
    "ADM-CID",
    "NULL",
    "ACK",
    "NAK",
    "DUH",
    "0001",
    "9999",
    "R",
    "L",
    "#",
    "A",
    "A0",
    "1234",
    "F3",
    "0",
    "[",
    "]",
    "_",
    "|",
    "^",
    "/",
    "N",
    "O",
    "ri",
    "id",
    "ti",
    "da",
    "pi",
    "BA",
    "OP",
    "CL",
    "RP",
    "TA",
    "FA",
    "ZX",
    "01",
    "003",
    "12:00",
    "12:00:00",
    "01-15-26",
    "12:00:00,01-15-2026",
    "24:00:00,02-30-2026",
    "1130 01 003",
    "3401 02 012",
    "113001003",
    "H",
    "X",
    "V",
    "text",
    " ",
    "-",
    ":",
    ",",
    "\u{e9}",
    "\u{ff}",
    "\r",
    "\n",
    "\0",
    "\u{7f}",
];

/// SplitMix64: hostile inputs are expanded from a seed, which is much cheaper than a proptest
/// value tree per byte (and shrinking still works on the length and the seed).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    /// A byte that is neither LF nor CR.
    fn inner_byte(&mut self) -> u8 {
        match self.byte() {
            b'\n' | b'\r' => b'x',
            b => b,
        }
    }

    /// Any character: ASCII, Latin-1, the rest of the BMP, or beyond.
    fn char(&mut self) -> char {
        let max = [0x80, 0x100, 0x1_0000, 0x11_0000][self.below(4)];
        char::from_u32(self.below(max) as u32).unwrap_or('\u{fffd}')
    }
}

fn soup_of(pieces: usize, seed: u64) -> String {
    let mut m = Mix(seed);
    let mut s = String::new();
    for _ in 0..pieces {
        if m.below(5) == 0 {
            s.push(m.char());
        } else {
            s.push_str(SOUP[m.below(SOUP.len())]);
        }
    }
    s
}

fn soup(max_pieces: usize) -> impl Strategy<Value = String> {
    (0..=max_pieces, any::<u64>()).prop_map(|(n, seed)| soup_of(n, seed))
}

/// Arbitrary Unicode text.
fn any_text(max_chars: usize) -> impl Strategy<Value = String> {
    (0..=max_chars, any::<u64>()).prop_map(|(n, seed)| {
        let mut m = Mix(seed);
        (0..n).map(|_| m.char()).collect()
    })
}

/// Bytes as Latin-1 (what the decoder does with data bytes).
fn latin1_bytes(s: &str) -> Vec<u8> {
    s.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')).collect()
}

fn wire_bytes_of(len: usize, seed: u64) -> Vec<u8> {
    let mut m = Mix(seed);
    let mut out = Vec::with_capacity(len);
    match m.below(4) {
        // Random bytes with the delimiters, the quote and `0` over-represented.
        0 => out.extend((0..len).map(|_| match m.below(10) {
            0 => b'\n',
            1 => b'\r',
            2 => b'"',
            3 => b'0',
            _ => m.byte(),
        })),
        // A frame start followed by a long run without CR or LF (oversize frames).
        1 => {
            out.push(b'\n');
            out.extend((1..len).map(|_| m.inner_byte()));
            if m.below(2) == 0 {
                out.push(b'\r');
            }
        }
        // NUL padding with the odd delimiter (the trailing-NUL quirk).
        2 => out.extend((0..len).map(|_| match m.below(16) {
            0 => b'\n',
            1 => b'\r',
            _ => 0,
        })),
        // Runs of ordinary bytes of any length between single delimiters.
        _ => {
            while out.len() < len {
                let run = m.below(80);
                out.extend((0..run).map(|_| m.inner_byte()));
                out.push([b'\n', b'\r', 0][m.below(3)]);
            }
            out.truncate(len);
        }
    }
    out
}

/// Arbitrary bytes, in four shapes (see `wire_bytes_of`).
fn wire_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..=max, any::<u64>()).prop_map(|(len, seed)| wire_bytes_of(len, seed))
}

/// A frame body for `wrap`: random bytes, grammar soup, or a valid body with damage.
pub(crate) fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        wire_bytes(120),
        soup(24).prop_map(|s| latin1_bytes(&s)),
        (
            any_valid_frame(),
            any::<prop::sample::Index>(),
            wire_bytes(8),
            0usize..4
        )
            .prop_map(|(f, at, junk, cut)| {
                let mut body = Vec::new();
                f.write_body(&mut body);
                let at = at.index(body.len() + 1);
                let end = (at + cut).min(body.len());
                body.splice(at..end, junk);
                body
            }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Plain SIA-DCS, ADM-CID, NULL and any other token; with and without receiver, xdata and
    /// timestamp; hex or binary CRC, CR in CRC, lower-case CRC digits.
    #[test]
    fn plain_frames_round_trip(f in plain_frame()) {
        check_round_trip(&f)?;
    }

    /// ACK, NAK and DUH shapes in every framing.
    #[test]
    fn response_frames_round_trip(f in response_shaped_frame()) {
        check_round_trip(&f)?;
    }

    /// Encrypted frames: decode, decrypt, re-encrypt with the recovered pad, re-encode.
    #[test]
    fn encrypted_frames_round_trip(e in encrypted_frame()) {
        let back = check_round_trip(&e.frame)?;
        let (Body::Encrypted(ct), Body::Encrypted(ct0)) = (&back.body, &e.frame.body) else {
            return Err(TestCaseError::fail("not encrypted after decode"));
        };
        prop_assert_eq!(ct, ct0);
        let d = decrypt_body(&e.key, ct).map_err(|err| TestCaseError::fail(format!("{err}")))?;
        prop_assert_eq!(&d.plain, &e.plain);
        prop_assert_eq!(d.separator, e.separator || !e.plain.data.is_empty());
        prop_assert!(d.pad.chars().all(|c| c.is_ascii_alphanumeric()) && (1..=16).contains(&d.pad.len()));
        let again = encrypt_body_with_pad(&e.key, &d).ok_or_else(|| TestCaseError::fail("pad not aligned"))?;
        prop_assert_eq!(&again, ct);
        let re = Frame { body: Body::Encrypted(again), ..back.clone() };
        prop_assert_eq!(show(&re.encode()), show(&e.frame.encode()));
    }

    /// Arbitrary bytes, raw or between LF and CR: the decoder returns, whatever the quirks.
    #[test]
    fn decode_arbitrary_bytes_never_panics(bytes in wire_bytes(160), framed in any::<bool>(), max in 0usize..400) {
        let bytes = if framed {
            let mut v = vec![b'\n'];
            v.extend_from_slice(&bytes);
            v.push(b'\r');
            v
        } else {
            bytes
        };
        for quirks in [Quirks::NONE, Quirks::ALL] {
            let _ = decode_frame(&bytes, &DecodeOptions { quirks, max_len: max });
            if let Ok(f) = decode_frame(&bytes, &opts(quirks)) {
                check_round_trip_content(&f)?;
            }
        }
    }

    /// Arbitrary bodies with a correct CRC and length, so the body grammar is what is tested.
    /// A body that starts with the token's `"` is never blamed on CRC or length. (One that does
    /// not is invalid anyway, and in a binary-CRC wrap whose two CRC bytes happen to be hex
    /// characters it looks like a hex-CRC frame, so a length error is right there.) Whatever
    /// the decoder accepts re-encodes to a frame that decodes to the same content, and events and
    /// policy never panic on it.
    #[test]
    fn wrapped_arbitrary_body_reaches_the_grammar(body in hostile_body(), framing in framing(), k in key()) {
        prop_assume!(body.len() < MAX_BODY_LEN);
        let raw = wrap(&body, framing);
        let starts_like_a_body = body.first() == Some(&b'"');
        match decode_frame(&raw, &opts(Quirks::ALL)) {
            Err(e @ (DecodeError::Incomplete | DecodeError::TooLong { .. })) => {
                return Err(TestCaseError::fail(format!("{e:?} for a wrapped body: {}", show(&raw))));
            }
            Err(e @ (DecodeError::Crc { .. } | DecodeError::Length { .. })) if starts_like_a_body => {
                return Err(TestCaseError::fail(format!("{e:?} for a wrapped body: {}", show(&raw))));
            }
            Err(DecodeError::Syntax { offset, .. } | DecodeError::Unreadable { offset, .. }) => {
                prop_assert!(offset < raw.len())
            }
            Err(_) => {}
            Ok(f) => {
                check_round_trip_content(&f)?;
                exercise_accepted(&f, &k);
            }
        }
    }

    /// Framer over arbitrary bytes: every chunk is non-empty, a frame chunk is LF … CR within
    /// the maximum, an oversize chunk is at least the maximum, and the framer only waits
    /// (`None`) while it holds less than the maximum.
    #[test]
    fn framer_always_progresses(bytes in wire_bytes(600), max in 0usize..300, binary in any::<bool>()) {
        let framer = Framer::new(max, binary);
        let mut buf: &[u8] = &bytes;
        loop {
            let Some(chunk) = framer.next_chunk(buf) else {
                prop_assert!(buf.len() < framer.max_len, "waits with {} bytes buffered", buf.len());
                break;
            };
            prop_assert!(!chunk.is_empty() && chunk.len() <= buf.len(), "{chunk:?} of {}", buf.len());
            match chunk {
                Chunk::Frame { len } => {
                    prop_assert!(len <= framer.max_len, "{chunk:?} over max {}", framer.max_len);
                    prop_assert_eq!(buf[0], b'\n');
                    prop_assert_eq!(buf[len - 1], b'\r');
                }
                Chunk::Garbage { len, nul_only } => {
                    prop_assert_eq!(nul_only, buf[..len].iter().all(|b| *b == 0));
                }
                Chunk::Oversize { len } => {
                    prop_assert!(len >= framer.max_len);
                    prop_assert_eq!(buf[0], b'\n');
                }
            }
            let _ = decode_frame(&buf[..chunk.len()], &opts(Quirks::ALL));
            buf = &buf[chunk.len()..];
        }
    }

    /// The framer fed piece by piece, as a socket would: the buffer never exceeds the maximum
    /// plus one read.
    #[test]
    fn framer_streaming_is_bounded(
        bytes in wire_bytes(600),
        cuts in prop::collection::vec(1usize..64, 1..40),
        max in 16usize..200,
        binary in any::<bool>(),
    ) {
        let framer = Framer::new(max, binary);
        let mut buf: Vec<u8> = Vec::new();
        let mut rest: &[u8] = &bytes;
        let mut cuts = cuts.into_iter().cycle();
        while !rest.is_empty() {
            let n = cuts.next().unwrap_or(1).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            prop_assert!(buf.len() < max + n);
            while let Some(chunk) = framer.next_chunk(&buf) {
                prop_assert!(!chunk.is_empty() && chunk.len() <= buf.len());
                buf.drain(..chunk.len());
            }
        }
    }

    /// A valid frame after any garbage is found: the framer resynchronises on its LF.
    #[test]
    fn framer_resynchronises_after_garbage(garbage in wire_bytes(600), f in plain_frame(), extra in 0usize..300) {
        let mut f = f;
        f.framing = Framing::default();
        let frame = f.encode();
        let max = frame.len().max(16) + extra;
        let mut stream = garbage.clone();
        stream.extend_from_slice(&frame);
        let framer = Framer::new(max, false);
        let (chunks, rest) = split_all(&framer, &stream);
        prop_assert!(rest.is_empty());
        let last = chunks.last().map(|(c, b)| (*c, b.to_vec()));
        prop_assert_eq!(
            last,
            Some((Chunk::Frame { len: frame.len() }, frame.clone())),
            "garbage {}", show(&garbage)
        );
    }

    /// Arbitrary ciphertext (and arbitrary whole-block plaintext, encrypted) under any key:
    /// decryption returns, and whatever decrypts re-encrypts to the same ciphertext.
    #[test]
    fn decrypt_arbitrary_never_panics(
        ct in prop::collection::vec(any::<u8>(), 0..100),
        text in soup(20),
        k in key(),
    ) {
        let _ = decrypt_body(&k, &ct);
        let mut pt = latin1_bytes(&text);
        pt.resize(pt.len().div_ceil(16).max(1) * 16, b'x');
        let ct = aes_cbc_encrypt(&k, &pt);
        if let Ok(d) = decrypt_body(&k, &ct) {
            prop_assert_eq!(encrypt_body_with_pad(&k, &d), Some(ct));
        }
    }

    /// SIA and Contact ID parsers on arbitrary Unicode and on grammar soup.
    #[test]
    fn payload_parsers_never_panic(any_text in any_text(40), text in soup(30), digits in string_of(b"0123456789ABCDEF#| ", 0..=20)) {
        for s in [&any_text, &text, &digits] {
            let _ = parse_sia_data(s);
            let _ = parse_adm_cid(s);
            let _ = parse_contact_id(s);
        }
        if let Ok(m) = parse_contact_id(&digits) {
            let again = encode_contact_id(&m.account, &m.message_type, &m.event);
            prop_assert!(again.is_some());
        }
    }

    /// `events_from` on any frame the decoder can produce: any token, any data.
    #[test]
    fn events_from_never_panics(h in header(), data in prop_oneof![soup(30), field_text(40)], p in plain()) {
        let p = Plain { data: data.chars().filter(|c| !matches!(c, '[' | ']')).collect(), ..p };
        for token in [h.0.clone(), Token::SiaDcs, Token::AdmCid, Token::Null] {
            let f = frame_of((token, h.1, h.2.clone(), h.3.clone()), Framing::default(), false, Body::Plain(p.clone()));
            if let Ok(events) = events_from(&f, &p) {
                for e in &events {
                    let _ = e.describe();
                }
            }
        }
    }

    /// Every single-bit flip of a valid frame is refused, except a case flip of a hex letter
    /// in the CRC or length field (same value, same content). Flips inside the CRC-covered body
    /// are always refused; a flip of the final CR leaves the frame incomplete. Decoding uses
    /// every quirk: whatever `Quirks::NONE` accepts, `Quirks::ALL` accepts identically, so an
    /// error here is an error without quirks too.
    #[test]
    fn single_bit_flips_are_refused(f in any_valid_frame_sized(SMALL)) {
        let bytes = f.encode();
        let body_at = if f.framing.crc == CrcFormat::Binary { 7 } else { 9 };
        let all = opts(Quirks::ALL);
        let mut flipped = bytes.clone();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                flipped[i] ^= 1 << bit;
                match decode_frame(&flipped, &all) {
                    Err(e) if i == bytes.len() - 1 => prop_assert_eq!(e, DecodeError::Incomplete),
                    Err(_) => {}
                    Ok(g) => {
                        prop_assert!(
                            (1..body_at).contains(&i),
                            "flip of bit {bit} at byte {i} accepted: {}", show(&flipped)
                        );
                        prop_assert_eq!(&with_framing(&g, f.framing), &f, "at byte {}", i);
                    }
                }
                flipped[i] ^= 1 << bit;
            }
        }
    }

    /// The window is −40 s … +20 s inclusive, for an encrypted frame, at any time and with any
    /// key: inside ACK, outside NAK.
    #[test]
    fn timestamp_window_edges(
        e in encrypted_frame(),
        token in prop_oneof![Just(Token::SiaDcs), Just(Token::AdmCid), Just(Token::Null)],
        account in string_of(HEX, 3..=16),
        skew in -120i64..120,
    ) {
        let Some(ts) = e.plain.timestamp else {
            return Err(TestCaseError::fail("encrypted frames carry a timestamp"));
        };
        let sent = Frame { token, account: AccountField::Number(account), ..e.frame.clone() };
        let f = decode_frame(&sent.encode(), &opts(Quirks::ALL)).map_err(|err| TestCaseError::fail(err.to_string()))?;
        let policy = AccountPolicy { key: Some(e.key.clone()), quirks: Quirks::ALL, ..AccountPolicy::default() };
        let w = Window::default();
        for s in [-41, -40, 20, 21, skew] {
            // The message is `s` seconds ahead of the receiver.
            let now = ts.to_datetime() - Duration::seconds(s);
            let v = evaluate(&f, Some(&policy), now, w);
            if (-40..=20).contains(&s) {
                prop_assert!(matches!(&v, Verdict::Accepted(a) if a.skew_s == Some(s)), "{s}: {v:?}");
                let ack = response_frame(&f, &v, Some(&policy), now, &mut SeededPad::new(1));
                prop_assert!(matches!(ack, Some(Frame { token: Token::Ack, encrypted: true, .. })), "{ack:?}");
            } else {
                prop_assert_eq!(&v, &Verdict::Refused(Refusal::Timestamp { skew_s: s }));
                let nak = response_frame(&f, &v, Some(&policy), now, &mut SeededPad::new(1));
                prop_assert!(matches!(nak, Some(Frame { token: Token::Nak, .. })), "{nak:?}");
            }
        }
    }
}

/// A decoded frame re-encodes to bytes that decode to the same content (not necessarily the
/// same bytes: mixed-case hex is normalised).
fn check_round_trip_content(f: &Frame) -> Result<(), TestCaseError> {
    let bytes = f.encode();
    let back = decode_frame(&bytes, &opts(Quirks::ALL))
        .map_err(|e| TestCaseError::fail(format!("re-encoded frame does not decode: {e}: {}", show(&bytes))))?;
    prop_assert_eq!(&with_framing(&back, f.framing), f);
    prop_assert_eq!(show(&back.encode()), show(&bytes));
    Ok(())
}

/// Run an accepted frame through the rest of the pure pipeline: policy, response, events.
fn exercise_accepted(f: &Frame, key: &Key) {
    let now = Timestamp::parse(b"12:00:00,01-15-2026").expect("valid").to_datetime();
    let policy = AccountPolicy {
        key: Some(key.clone()),
        quirks: Quirks::ALL,
        ..AccountPolicy::default()
    };
    for account in [None, Some(&policy)] {
        let v = evaluate(f, account, now, Window::default());
        if let Some(r) = response_frame(f, &v, account, now, &mut SeededPad::new(3)) {
            let _ = decode_frame(&r.encode(), &opts(Quirks::ALL)).map(|back| assert_eq!(back.encode(), r.encode()));
        }
        if let Verdict::Accepted(a) = &v {
            let _ = events_from(f, &a.plain);
        }
    }
    if let Body::Plain(p) = &f.body {
        let _ = events_from(f, p);
    }
}
