//! `meldkamer parse`: decode one frame and show the verdict and the response a receiver would
//! send, for integrators and support staff.

use std::io::Read;

use serde::Serialize;
use time::OffsetDateTime;

use crate::event::{Event, events_from};
use crate::protocol::crc::crc16_arc;
use crate::protocol::crypto::{Decrypted, Key, KeyFormat, SeededPad, decrypt_body};
use crate::protocol::frame::{Body, DecodeError, DecodeOptions, Frame, MAX_FRAME_LEN, Quirks, decode_frame};
use crate::protocol::framer::{Chunk, Framer, split_all};
use crate::protocol::policy::{AccountPolicy, Verdict, Window, evaluate, response_frame};

/// What `parse` was asked.
pub struct ParseArgs {
    /// The frame text (with `\n`, `\r`, `\xNN` escapes), or `-` for stdin.
    pub frame: String,
    /// The account key, if any.
    pub key: Option<(String, KeyFormat)>,
    /// The receiver's "now".
    pub now: OffsetDateTime,
    /// Require encryption for the account.
    pub require_encryption: bool,
    /// Accept the field quirks.
    pub quirks: Quirks,
    /// Seed for the ACK pad (deterministic output).
    pub pad_seed: u64,
}

/// Errors of the `parse` command.
#[derive(Debug, thiserror::Error)]
pub enum ParseCmdError {
    /// Reading stdin failed.
    #[error("reading the frame from stdin")]
    Stdin(#[source] std::io::Error),
    /// A bad escape in the frame text.
    #[error("bad escape in the frame text at character {0}: use \\n, \\r, \\t, \\\\ or \\xNN")]
    Escape(usize),
    /// The key text is not a key.
    #[error("the key is not usable")]
    Key(#[source] crate::protocol::crypto::KeyError),
    /// Not a single valid frame (the report is still printed).
    #[error("{0}")]
    Invalid(String),
}

pub use crate::protocol::escape::{escape, unescape};

#[derive(Serialize)]
struct Checks {
    crc_field: Option<String>,
    crc_computed: Option<String>,
    crc_ok: Option<bool>,
    length_field: Option<String>,
    length_actual: Option<String>,
    length_ok: Option<bool>,
}

#[derive(Serialize)]
struct Report<'a> {
    input: String,
    valid: bool,
    verdict: String,
    checks: Checks,
    #[serde(skip_serializing_if = "Option::is_none")]
    frame: Option<&'a Frame>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quirks_used: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decrypted: Option<DecryptedView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<&'a Verdict>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_error: Option<String>,
    response: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_kind: Option<&'static str>,
}

#[derive(Serialize)]
struct DecryptedView {
    pad_len: usize,
    separator: bool,
    plaintext: String,
}

impl DecryptedView {
    fn from(d: &Decrypted) -> DecryptedView {
        let mut v = Vec::new();
        crate::protocol::frame::push_latin1(&d.pad, &mut v);
        if d.separator || !d.plain.data.is_empty() {
            v.push(b'|');
        }
        crate::protocol::frame::write_plain_tail(&d.plain, &mut v);
        DecryptedView {
            pad_len: d.pad.chars().count(),
            separator: d.separator,
            plaintext: escape(&v),
        }
    }
}

/// CRC and length checks computed independently of the decoder, for the report.
fn checks(raw: &[u8]) -> Checks {
    let mut c = Checks {
        crc_field: None,
        crc_computed: None,
        crc_ok: None,
        length_field: None,
        length_actual: None,
        length_ok: None,
    };
    if raw.len() >= 10 && raw[0] == b'\n' && raw.last() == Some(&b'\r') {
        let (crc_end, body_at) = if raw[9] == b'"' { (5, 9) } else { (3, 7) };
        let crc_field = if crc_end == 5 {
            String::from_utf8_lossy(&raw[1..5]).to_uppercase()
        } else {
            format!("{:02X}{:02X} (binary)", raw[1], raw[2])
        };
        let body = &raw[body_at..raw.len() - 1];
        let computed = format!("{:04X}", crc16_arc(body));
        c.crc_ok = Some(crc_field.starts_with(&computed));
        c.crc_field = Some(crc_field);
        c.crc_computed = Some(computed);
        let len_field = String::from_utf8_lossy(&raw[crc_end..crc_end + 4]).to_uppercase();
        let actual = format!("{:04X}", body.len());
        c.length_ok = Some(len_field == actual);
        c.length_field = Some(len_field);
        c.length_actual = Some(actual);
    }
    c
}

/// Run `parse`: print the JSON report to `out`; an invalid frame is an error after printing.
pub fn run(args: &ParseArgs, out: &mut dyn std::io::Write) -> Result<(), ParseCmdError> {
    let text = if args.frame == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(ParseCmdError::Stdin)?;
        // A trailing newline from `echo` is not part of the frame text.
        s.trim_end_matches(['\n']).to_string()
    } else {
        args.frame.clone()
    };
    let raw = unescape(&text).map_err(ParseCmdError::Escape)?;
    let key = match &args.key {
        Some((k, f)) => Some(Key::parse(k, *f).map_err(ParseCmdError::Key)?),
        None => None,
    };
    let policy = AccountPolicy {
        key: key.clone(),
        require_encryption: args.require_encryption,
        quirks: args.quirks,
        ..AccountPolicy::default()
    };
    let opts = DecodeOptions {
        quirks: args.quirks,
        max_len: MAX_FRAME_LEN,
    };
    // Exactly one frame is expected; report anything else.
    let framer = Framer::new(MAX_FRAME_LEN, args.quirks.crc_binary);
    let (chunks, rest) = split_all(&framer, &raw);
    let frames: Vec<&[u8]> = chunks
        .iter()
        .filter(|(c, _)| matches!(c, Chunk::Frame { .. }))
        .map(|(_, b)| *b)
        .collect();
    let stray = chunks
        .iter()
        .filter(|(c, _)| match c {
            Chunk::Garbage { nul_only: true, .. } => !args.quirks.trailing_nul,
            Chunk::Frame { .. } => false,
            _ => true,
        })
        .count();
    let candidate: &[u8] = match frames.as_slice() {
        [one] => one,
        _ => &raw,
    };
    let decoded: Result<Frame, DecodeError> = if frames.len() > 1 {
        Err(DecodeError::Syntax {
            field: crate::protocol::frame::Field::End,
            offset: frames[0].len(),
        })
    } else if stray > 0 || !rest.is_empty() && frames.len() == 1 {
        Err(DecodeError::Syntax {
            field: crate::protocol::frame::Field::End,
            offset: frames.first().map_or(0, |f| f.len()),
        })
    } else {
        decode_frame(candidate, &opts)
    };

    let mut report = Report {
        input: escape(&raw),
        valid: false,
        verdict: String::new(),
        checks: checks(candidate),
        frame: None,
        quirks_used: None,
        decrypted: None,
        decision: None,
        events: Vec::new(),
        payload_error: None,
        response: None,
        response_kind: None,
    };
    let frame;
    let verdict;
    let failure;
    match decoded {
        Err(e) => {
            report.verdict = match e {
                DecodeError::Incomplete if frames.is_empty() => "incomplete: no LF … CR frame in the input".to_string(),
                e => e.to_string(),
            };
            // CRC and length right, a field unreadable: the receiver answers DUH.
            if frames.len() == 1
                && let Verdict::Refused(_) = crate::protocol::policy::evaluate_undecoded(e)
            {
                report.response = Some(escape(&crate::protocol::response::duh_unreadable(candidate)));
                report.response_kind = Some("DUH");
            }
            failure = Some(report.verdict.clone());
        }
        Ok(f) => {
            frame = f;
            report.frame = Some(&frame);
            let q = frame.framing.quirks();
            if !q.is_empty() {
                report.quirks_used = Some(q.names());
            }
            if let (Body::Encrypted(ct), Some(k)) = (&frame.body, &key)
                && let Ok(d) = decrypt_body(k, ct)
            {
                report.decrypted = Some(DecryptedView::from(&d));
            }
            verdict = evaluate(&frame, Some(&policy), args.now, Window::default());
            report.valid = true;
            report.verdict = match &verdict {
                Verdict::Accepted(a) => match a.skew_s {
                    Some(s) => format!("valid; timestamp {s:+} s from receiver time"),
                    None => "valid".to_string(),
                },
                Verdict::Refused(r) => format!("well-formed, refused: {r}"),
                Verdict::Silent(s) => {
                    report.valid = false;
                    s.to_string()
                }
            };
            if let Verdict::Accepted(a) = &verdict {
                match events_from(&frame, &a.plain) {
                    Ok(ev) => report.events = ev,
                    Err(e) => report.payload_error = Some(e.0),
                }
            }
            let mut pad = SeededPad::new(args.pad_seed);
            if let Some(resp) = response_frame(&frame, &verdict, Some(&policy), args.now, &mut pad) {
                report.response = Some(escape(&resp.encode()));
                report.response_kind = verdict.response_kind().map(|k| k.as_str());
            }
            report.decision = Some(&verdict);
            failure = (!report.valid).then(|| report.verdict.clone());
        }
    }
    let json = serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let _ = writeln!(out, "{json}");
    match failure {
        Some(msg) => Err(ParseCmdError::Invalid(msg)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip() {
        let raw = b"\n\"x\"\r\x00\xFF\\";
        assert_eq!(unescape(&escape(raw)).expect("valid"), raw.to_vec());
        assert_eq!(unescape("\\q"), Err(0));
        assert_eq!(unescape("ab\\x4"), Err(2));
    }

    /// An unreadable frame with a right CRC and length is reported with the DUH the receiver
    /// answers (FOCUS FC-7688, pysiaalarm #36).
    #[test]
    fn an_unreadable_frame_shows_its_duh() {
        let args = ParseArgs {
            frame: r#"\n7A28002F"ADM-CID"6616R0L0#foc7688[#foc7688|1351 01 000]\r"#.into(),
            key: None,
            now: time::macros::datetime!(2026-01-15 12:00:00 UTC),
            require_encryption: false,
            quirks: Quirks::NONE,
            pad_seed: 0,
        };
        let mut out = Vec::new();
        assert!(run(&args, &mut out).is_err(), "still not a valid frame");
        let report: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(report["response_kind"], "DUH");
        assert_eq!(report["response"], r#"\n274C0017"DUH"6616R0L0#foc7688[]\r"#);
    }
}
