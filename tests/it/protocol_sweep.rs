//! Deterministic sweep over every DC-09 frame in `fixtures/vectors/dc09-public.json` (the
//! `frame` fields that start with LF; a vector with several frames counts each) and over the
//! frames of every `fixtures/**/*.trace` file (the `>` and `<` lines of the trace format in
//! `src/replay/trace.rs`, unescaped and cut into frames by the framer; skipped if there are none).
//!
//! For each frame:
//! * every truncation is `DecodeError::Incomplete`, and the framer waits for more bytes;
//! * every single-byte substitution (all 256 values at every offset, with and without quirks)
//!   is an error or decodes to the same content as the original (a case change of a hex digit
//!   in the CRC or length field); an accepted result goes through policy, response and events.
//!   Trace frames that differ only in their CRC/length fields and digits (sequence numbers,
//!   zones, times: the 1000 frames of a flood trace) are swept once per shape; every frame gets
//!   the truncation sweep.
//!
//! The Contact ID vectors get the same truncation/substitution sweep through `parse_contact_id`.

use std::path::{Path, PathBuf};

use meldkamer::event::events_from;
use meldkamer::protocol::cid::parse_contact_id;
use meldkamer::protocol::crypto::Key;
use meldkamer::protocol::frame::{Body, DecodeError, DecodeOptions, Frame, MAX_FRAME_LEN, Quirks, decode_frame};
use meldkamer::protocol::framer::{Chunk, Framer, split_all};
use meldkamer::protocol::policy::{AccountPolicy, Verdict, Window, evaluate, response_frame};
use meldkamer::protocol::timestamp::Timestamp;
use meldkamer::protocol::{PadSource, SeededPad};
use serde_json::Value;

const VECTORS: &str = include_str!("../../fixtures/vectors/dc09-public.json");

/// One frame to sweep.
struct Sample {
    name: String,
    bytes: Vec<u8>,
    key: Option<Key>,
    /// From a capture: binary CRC bytes may be CR or LF, so a truncation may end in CR.
    from_trace: bool,
}

fn opts(quirks: Quirks) -> DecodeOptions {
    DecodeOptions {
        quirks,
        max_len: MAX_FRAME_LEN,
    }
}

const QUIRKS: [Quirks; 2] = [Quirks::NONE, Quirks::ALL];

/// Frames of a byte stream, as the framer cuts them.
fn frames_in(bytes: &[u8], allow_binary: bool) -> Vec<Vec<u8>> {
    let (chunks, _) = split_all(&Framer::new(MAX_FRAME_LEN, allow_binary), bytes);
    chunks
        .into_iter()
        .filter(|(c, _)| matches!(c, Chunk::Frame { .. }))
        .map(|(_, b)| b.to_vec())
        .collect()
}

fn vector_samples() -> Vec<Sample> {
    let vectors: Value = serde_json::from_str(VECTORS).expect("vectors parse");
    let mut out = Vec::new();
    for v in vectors.as_array().expect("array") {
        let id = v["id"].as_str().expect("id");
        let Some(frame) = v["frame"].as_str().filter(|f| f.starts_with('\n')) else {
            continue;
        };
        let key = v["key_hex"].as_str().map(|k| Key::from_hex(k).expect("vector key"));
        let frames = frames_in(frame.as_bytes(), false);
        assert!(!frames.is_empty(), "{id}: no frame found");
        for (k, bytes) in frames.into_iter().enumerate() {
            out.push(Sample {
                name: format!("{id}#{k}"),
                bytes,
                key: key.clone(),
                from_trace: false,
            });
        }
    }
    out
}

fn trace_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            trace_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "trace") {
            out.push(path);
        }
    }
}

/// The trace format's byte escapes (`\n \r \t \0 \\ \xNN`); anything else is literal.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let hex = b
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
            match (b[i + 1], hex) {
                (b'n', _) => out.push(b'\n'),
                (b'r', _) => out.push(b'\r'),
                (b't', _) => out.push(b'\t'),
                (b'0', _) => out.push(0),
                (b'\\', _) => out.push(b'\\'),
                (b'x', Some(v)) => {
                    out.push(v);
                    i += 4;
                    continue;
                }
                _ => {
                    out.push(b'\\');
                    i += 1;
                    continue;
                }
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn trace_samples() -> Vec<Sample> {
    let mut files = Vec::new();
    trace_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"), &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("trace readable");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (line_no, line) in text.lines().enumerate() {
            let Some(payload) = line.strip_prefix("> ").or_else(|| line.strip_prefix("< ")) else {
                continue;
            };
            if payload.trim() == "(none)" {
                continue;
            }
            for (k, frame) in frames_in(&unescape(payload), true).into_iter().enumerate() {
                out.push(Sample {
                    name: format!("{name}:{}#{k}", line_no + 1),
                    bytes: frame,
                    key: None,
                    from_trace: true,
                });
            }
        }
    }
    out
}

/// A frame with its CRC and length fields and every ASCII digit replaced by `0`: frames of one
/// shape exercise the same paths.
fn shape(bytes: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = bytes
        .iter()
        .map(|b| if b.is_ascii_digit() { b'0' } else { *b })
        .collect();
    v.iter_mut().take(9).skip(1).for_each(|b| *b = b'0');
    v
}

fn samples() -> Vec<Sample> {
    let mut s = vector_samples();
    // 20 vectors carry DC-09 frames; the two-frame vector adds one.
    assert!(s.len() >= 21, "only {} vector frames", s.len());
    s.extend(trace_samples());
    s
}

/// The frame with the original's framing, to compare content only.
fn content(f: &Frame, like: &Frame) -> Frame {
    Frame {
        framing: like.framing,
        ..f.clone()
    }
}

/// Policy, response and events for an accepted frame; none of it may panic.
fn exercise(f: &Frame, key: Option<&Key>) {
    let policy = AccountPolicy {
        key: key.cloned(),
        quirks: Quirks::ALL,
        ..AccountPolicy::default()
    };
    let plain_ts = match &f.body {
        Body::Plain(p) => p.timestamp,
        Body::Encrypted(_) => None,
    };
    let now = plain_ts
        .or_else(|| Timestamp::parse(b"12:00:00,01-15-2026"))
        .expect("clock")
        .to_datetime();
    let mut pad: Box<dyn PadSource> = Box::new(SeededPad::new(5));
    let v = evaluate(f, Some(&policy), now, Window::default());
    if let Some(r) = response_frame(f, &v, Some(&policy), now, pad.as_mut()) {
        let bytes = r.encode();
        let back = decode_frame(&bytes, &opts(Quirks::ALL)).expect("our response decodes");
        assert_eq!(back.encode(), bytes);
    }
    if let Verdict::Accepted(a) = &v {
        let _ = events_from(f, &a.plain);
    }
}

#[test]
fn every_truncation_is_incomplete_and_the_framer_waits() {
    let (mut checked, mut frames, mut traced) = (0usize, 0usize, 0usize);
    for s in samples() {
        frames += 1;
        traced += usize::from(s.from_trace);
        let n = s.bytes.len();
        // The whole frame is one frame chunk for either framer.
        // (Trace frames were cut by the binary-CRC framer; their CRC bytes may be CR or LF.)
        for binary in [s.from_trace, true] {
            let framer = Framer::new(MAX_FRAME_LEN, binary);
            let (chunks, rest) = split_all(&framer, &s.bytes);
            assert_eq!(chunks.len(), 1, "{}: {chunks:?}", s.name);
            assert_eq!(chunks[0].0, Chunk::Frame { len: n }, "{}", s.name);
            assert!(rest.is_empty(), "{}", s.name);
        }
        for cut in 0..n {
            let prefix = &s.bytes[..cut];
            for quirks in QUIRKS {
                let got = decode_frame(prefix, &opts(quirks));
                if s.from_trace && prefix.last() == Some(&b'\r') {
                    assert!(got.is_err(), "{} cut at {cut}: {got:?}", s.name);
                } else {
                    assert_eq!(got, Err(DecodeError::Incomplete), "{} cut at {cut}", s.name);
                }
                checked += 1;
            }
            for binary in [false, true] {
                let framer = Framer::new(MAX_FRAME_LEN, binary);
                let (chunks, rest) = split_all(&framer, prefix);
                assert!(
                    chunks.iter().all(|(c, _)| !matches!(c, Chunk::Frame { .. })) || s.from_trace,
                    "{} cut at {cut}: {chunks:?}",
                    s.name
                );
                if !s.from_trace {
                    assert!(chunks.is_empty(), "{} cut at {cut}: {chunks:?}", s.name);
                    assert_eq!(rest, prefix, "{} cut at {cut}: the framer waits", s.name);
                }
            }
        }
    }
    println!(
        "truncation sweep: {frames} frames ({traced} from traces), {checked} decodes, each prefix with both framers"
    );
}

#[test]
fn every_single_byte_substitution_is_refused_or_harmless() {
    let (mut decodes, mut accepted, mut frames) = (0usize, 0usize, 0usize);
    let mut shapes = std::collections::HashSet::new();
    for s in samples() {
        if s.from_trace && !shapes.insert(shape(&s.bytes)) {
            continue;
        }
        frames += 1;
        let original: Vec<Result<Frame, DecodeError>> =
            QUIRKS.iter().map(|q| decode_frame(&s.bytes, &opts(*q))).collect();
        let mut buf = s.bytes.clone();
        for at in 0..buf.len() {
            let was = buf[at];
            for value in 0..=255u8 {
                buf[at] = value;
                for (qi, quirks) in QUIRKS.iter().enumerate() {
                    decodes += 1;
                    let Ok(f) = decode_frame(&buf, &opts(*quirks)) else {
                        continue;
                    };
                    if value == was {
                        assert_eq!(Ok(&f), original[qi].as_ref(), "{}", s.name);
                        continue;
                    }
                    accepted += 1;
                    let what = format!("{}: byte {at} {was:#04x} -> {value:#04x} accepted", s.name);
                    // Only the CRC and length fields lie outside the CRC; a change there that
                    // still decodes must mean the same thing (a case change of a hex digit),
                    // or it repaired a frame whose CRC field was wrong.
                    assert!((1..9).contains(&at), "{what}");
                    match &original[qi] {
                        Ok(o) => assert_eq!(content(&f, o), *o, "{what}"),
                        // A substitution in the CRC or length field may repair a frame whose
                        // CRC or length was wrong (the `neg-bad-crc` vector).
                        Err(DecodeError::Crc { computed, .. }) if s.bytes[1..5].iter().all(u8::is_ascii_hexdigit) => {
                            let digits = format!("{computed:04X}");
                            assert!(
                                buf[1..5].eq_ignore_ascii_case(digits.as_bytes()),
                                "{what}: CRC field {}",
                                buf[1..5].escape_ascii()
                            );
                        }
                        Err(_) => {}
                    }
                    // Whatever is accepted re-encodes and goes through the rest of the core.
                    let again = decode_frame(&f.encode(), &opts(Quirks::ALL)).expect("re-encoded frame decodes");
                    assert_eq!(content(&again, &f), f, "{what}");
                    exercise(&f, s.key.as_ref());
                }
            }
            buf[at] = was;
        }
    }
    println!(
        "substitution sweep: {frames} frames, {decodes} decodes, {accepted} accepted (case changes in CRC/length, \
         CRC repairs)"
    );
}

#[test]
fn vector_frames_go_through_the_core() {
    // The unmodified frames, with their keys: policy, response and events never panic.
    for s in samples() {
        if let Ok(f) = decode_frame(&s.bytes, &opts(Quirks::ALL)) {
            exercise(&f, s.key.as_ref());
        }
    }
}

#[test]
fn contact_id_vectors_truncated_and_substituted() {
    let vectors: Value = serde_json::from_str(VECTORS).expect("vectors parse");
    let mut messages = 0;
    for v in vectors.as_array().expect("array") {
        if v["transport"].as_str() != Some("contactid-dtmf") {
            continue;
        }
        messages += 1;
        let msg = v["frame"].as_str().expect("frame");
        let valid = parse_contact_id(msg).is_ok();
        assert_eq!(valid, v["expect"]["valid"] == Value::Bool(true), "{msg}");
        for cut in 0..msg.len() {
            assert!(parse_contact_id(&msg[..cut]).is_err(), "{msg} cut at {cut}");
        }
        let mut b = msg.as_bytes().to_vec();
        for at in 0..b.len() {
            let was = b[at];
            for value in 0..=255u8 {
                b[at] = value;
                let s = String::from_utf8_lossy(&b);
                let _ = parse_contact_id(&s);
            }
            b[at] = was;
        }
    }
    assert_eq!(messages, 2);
}
