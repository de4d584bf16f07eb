//! The receiver's decision table (`protocols/dc09.md`, "What the receiver answers"): given a
//! decoded frame, what we know of its account, and the receiver's clock, decide ACK, NAK, DUH
//! or silence. Pure: the caller looks the account up and supplies the time.
//!
//! | situation                                             | answer |
//! |-------------------------------------------------------|--------|
//! | not a frame / CRC / length wrong                       | none   |
//! | CRC and length right, a field unreadable               | DUH    |
//! | framing quirk the account has not enabled             | none   |
//! | well-formed, unsupported token                         | DUH    |
//! | unknown account                                        | DUH    |
//! | `*` token, account has no key                          | DUH    |
//! | plain token, account requires encryption               | DUH    |
//! | does not decrypt / garbled / no timestamp              | NAK    |
//! | timestamp outside −40 s … +20 s (encrypted; plain if enabled) | NAK |
//! | valid (unknown event codes included)                   | ACK / `*ACK` after commit |

use serde::Serialize;
use time::OffsetDateTime;

use super::crypto::{DecryptError, Key, PadSource, decrypt_body};
use super::frame::{Body, DecodeError, Field, Frame, Plain, Quirks};
use super::response::{self, ResponseKind};

/// What the receiver knows of an account, as far as the decision table needs it.
#[derive(Debug, Clone, Default)]
pub struct AccountPolicy {
    /// The DC-09 key, if the account has one.
    pub key: Option<Key>,
    /// Refuse plain frames.
    pub require_encryption: bool,
    /// Field quirks accepted from this account.
    pub quirks: Quirks,
    /// Check the timestamp window on plain frames that carry a timestamp too.
    pub check_plain_timestamp: bool,
    /// Write `pad|]` rather than `pad]` in the encrypted ACK.
    pub ack_separator: bool,
}

/// The timestamp window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    /// How far a message may be behind the receiver, seconds (40).
    pub behind_s: i64,
    /// How far a message may be ahead of the receiver, seconds (20).
    pub ahead_s: i64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            behind_s: 40,
            ahead_s: 20,
        }
    }
}

impl Window {
    /// True if a message `skew` seconds ahead of the receiver (negative: behind) is inside.
    pub fn contains(&self, skew: i64) -> bool {
        -self.behind_s <= skew && skew <= self.ahead_s
    }
}

/// Why a frame is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    /// CRC and length are right (in the standard framing) but a field cannot be read
    /// ([`DecodeError::Unreadable`]): the panel sent exactly this, so it is answered, DUH.
    Unreadable {
        /// The field.
        field: Field,
        /// Byte offset from the LF.
        offset: usize,
    },
    /// A token we do not process.
    UnsupportedToken,
    /// The account is not in the database (or the frame has no account number).
    UnknownAccount,
    /// Encrypted, but the account has no key.
    NoKey,
    /// Plain, but the account requires encryption (downgrade).
    PlainRefused,
    /// Did not decrypt to a valid plaintext (wrong key or tampering).
    Decrypt {
        /// Detail.
        error: DecryptError,
    },
    /// Timestamp outside the window.
    Timestamp {
        /// Message time minus receiver time, seconds.
        skew_s: i64,
    },
}

impl Refusal {
    /// Stable key for metrics and storage.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unreadable { .. } => "unreadable",
            Refusal::UnsupportedToken => "unsupported_token",
            Refusal::UnknownAccount => "unknown_account",
            Refusal::NoKey => "no_key",
            Refusal::PlainRefused => "plain_refused",
            Refusal::Decrypt { .. } => "decrypt",
            Refusal::Timestamp { .. } => "timestamp",
        }
    }

    /// The answer the decision table gives.
    pub fn response(&self) -> ResponseKind {
        match self {
            Refusal::Decrypt { .. } | Refusal::Timestamp { .. } => ResponseKind::Nak,
            _ => ResponseKind::Duh,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unreadable { field, offset } => {
                write!(
                    f,
                    "malformed {} at byte {offset} (CRC and length correct)",
                    field.name()
                )
            }
            Refusal::UnsupportedToken => f.write_str("unsupported ID token"),
            Refusal::UnknownAccount => f.write_str("unknown account"),
            Refusal::NoKey => f.write_str("encrypted frame for an account without a key"),
            Refusal::PlainRefused => f.write_str("plain frame for an account that requires encryption"),
            Refusal::Decrypt { error } => write!(f, "does not decrypt: {error}"),
            Refusal::Timestamp { skew_s } => {
                write!(f, "timestamp {skew_s:+} s from receiver time, outside the window")
            }
        }
    }
}

/// Why nothing is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Silence {
    /// Not a valid frame.
    Decode {
        /// The decoder's finding.
        error: DecodeError,
    },
    /// Valid only with a framing quirk this account has not enabled.
    QuirkNotEnabled {
        /// The quirks the frame needs.
        needs: Quirks,
    },
}

impl Silence {
    /// Stable key for metrics and storage.
    pub fn reason(&self) -> &'static str {
        match self {
            Silence::Decode { error } => error.reason(),
            Silence::QuirkNotEnabled { .. } => "quirk_not_enabled",
        }
    }
}

impl std::fmt::Display for Silence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Silence::Decode { error } => error.fmt(f),
            Silence::QuirkNotEnabled { needs } => write!(
                f,
                "valid only with framing quirk(s) {} which this account has not enabled",
                needs.names().join(", ")
            ),
        }
    }
}

/// An accepted message: the frame and its clear content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// The clear content (decrypted if the frame was encrypted).
    pub plain: Plain,
    /// Message time minus receiver time, seconds, when the message has a timestamp.
    pub skew_s: Option<i64>,
}

/// The decision for one frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Answer nothing.
    Silent(Silence),
    /// Answer DUH or NAK.
    Refused(Refusal),
    /// Store, then answer ACK.
    Accepted(Accepted),
}

impl Verdict {
    /// The response kind this verdict leads to, if any.
    pub fn response_kind(&self) -> Option<ResponseKind> {
        match self {
            Verdict::Silent(_) => None,
            Verdict::Refused(r) => Some(r.response()),
            Verdict::Accepted(_) => Some(ResponseKind::Ack),
        }
    }
}

/// Apply the decision table to a decoded frame. `account` is `None` for an unknown account.
pub fn evaluate(frame: &Frame, account: Option<&AccountPolicy>, now: OffsetDateTime, window: Window) -> Verdict {
    let needs = frame.framing.quirks();
    if !needs.is_empty() {
        let permitted = account.is_some_and(|a| a.quirks.permits(&needs));
        if !permitted {
            return Verdict::Silent(Silence::QuirkNotEnabled { needs });
        }
    }
    if !frame.token.is_supported_message() {
        return Verdict::Refused(Refusal::UnsupportedToken);
    }
    let Some(account) = account.filter(|_| frame.account_number().is_some()) else {
        return Verdict::Refused(Refusal::UnknownAccount);
    };
    let (plain, encrypted) = match &frame.body {
        Body::Encrypted(ct) => {
            let Some(key) = &account.key else {
                return Verdict::Refused(Refusal::NoKey);
            };
            match decrypt_body(key, ct) {
                Ok(d) => (d.plain, true),
                Err(error) => return Verdict::Refused(Refusal::Decrypt { error }),
            }
        }
        Body::Plain(p) => {
            if account.require_encryption {
                return Verdict::Refused(Refusal::PlainRefused);
            }
            (p.clone(), false)
        }
    };
    let skew_s = plain.timestamp.map(|ts| ts.seconds_since(now));
    if let Some(skew) = skew_s
        && (encrypted || account.check_plain_timestamp)
        && !window.contains(skew)
    {
        return Verdict::Refused(Refusal::Timestamp { skew_s: skew });
    }
    Verdict::Accepted(Accepted { plain, skew_s })
}

/// The verdict for a frame that did not decode: [`Refusal::Unreadable`] (DUH) when its CRC and
/// length are right in the standard framing, else silence. A quirky framing (binary CRC, CR
/// counted) is answered only for an account that enabled it, and an unreadable frame names no
/// account, so it stays silent. The response bytes are [`response::duh_unreadable`].
pub fn evaluate_undecoded(error: DecodeError) -> Verdict {
    match error {
        DecodeError::Unreadable { field, offset, framing } if framing.quirks().is_empty() => {
            Verdict::Refused(Refusal::Unreadable { field, offset })
        }
        error => Verdict::Silent(Silence::Decode { error }),
    }
}

/// The response frame for a verdict (`None` for silence). For an accepted encrypted frame the
/// ACK is encrypted with the account key and a fresh pad.
pub fn response_frame(
    frame: &Frame,
    verdict: &Verdict,
    account: Option<&AccountPolicy>,
    now: OffsetDateTime,
    pad: &mut dyn PadSource,
) -> Option<Frame> {
    match verdict {
        Verdict::Silent(_) => None,
        Verdict::Refused(r) => Some(match r.response() {
            ResponseKind::Nak => response::nak(now, frame.framing),
            _ => response::duh(frame),
        }),
        Verdict::Accepted(_) => {
            let key = account.and_then(|a| a.key.as_ref());
            match (frame.encrypted, key) {
                (true, Some(key)) => Some(response::ack_encrypted(
                    frame,
                    key,
                    now,
                    pad,
                    account.is_some_and(|a| a.ack_separator),
                )),
                _ => Some(response::ack_plain(frame)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::crypto::SeededPad;
    use crate::protocol::frame::{DecodeOptions, decode_frame};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-01-15 12:00:00 UTC);

    fn frame(raw: &[u8]) -> Frame {
        decode_frame(
            raw,
            &DecodeOptions {
                quirks: Quirks::ALL,
                ..DecodeOptions::default()
            },
        )
        .expect("valid")
    }

    fn keyed() -> AccountPolicy {
        AccountPolicy {
            key: Some(Key::from_hex("2B7E151628AED2A6ABF7158809CF4F3C").expect("key")),
            ..AccountPolicy::default()
        }
    }

    const PLAIN_BA: &[u8] = b"\nF5F5003B\"SIA-DCS\"0001R1L1#1234[#1234|Nri1/BA01]_12:00:00,01-15-2026\r";
    const ENC_BA: &[u8] = b"\n56770078\"*SIA-DCS\"0020R1L1#1234[2DE06BF9D0F1C17881556E4EBB97807B090F923DEB8139DD0FAC2735FBB3BE87C9D06AA71FE691BF4A5B17F5DC83D6B6\r";

    #[test]
    fn the_decision_table() {
        let plain = frame(PLAIN_BA);
        let enc = frame(ENC_BA);
        let open = AccountPolicy::default();
        let w = Window::default();
        assert!(matches!(evaluate(&plain, Some(&open), NOW, w), Verdict::Accepted(_)));
        assert_eq!(
            evaluate(&plain, None, NOW, w),
            Verdict::Refused(Refusal::UnknownAccount)
        );
        assert_eq!(evaluate(&enc, Some(&open), NOW, w), Verdict::Refused(Refusal::NoKey));
        let strict = AccountPolicy {
            require_encryption: true,
            ..keyed()
        };
        assert_eq!(
            evaluate(&plain, Some(&strict), NOW, w),
            Verdict::Refused(Refusal::PlainRefused)
        );
        assert!(matches!(evaluate(&enc, Some(&keyed()), NOW, w), Verdict::Accepted(_)));
        let wrong = AccountPolicy {
            key: Some(Key::from_hex("000102030405060708090A0B0C0D0E0F").expect("key")),
            ..AccountPolicy::default()
        };
        assert!(matches!(
            evaluate(&enc, Some(&wrong), NOW, w),
            Verdict::Refused(Refusal::Decrypt { .. })
        ));
        // 41 s later the same encrypted frame is stale.
        assert_eq!(
            evaluate(&enc, Some(&keyed()), NOW + time::Duration::seconds(41), w),
            Verdict::Refused(Refusal::Timestamp { skew_s: -41 })
        );
        assert!(matches!(
            evaluate(&enc, Some(&keyed()), NOW + time::Duration::seconds(40), w),
            Verdict::Accepted(_)
        ));
        assert!(matches!(
            evaluate(&enc, Some(&keyed()), NOW - time::Duration::seconds(20), w),
            Verdict::Accepted(_)
        ));
        assert!(matches!(
            evaluate(&enc, Some(&keyed()), NOW - time::Duration::seconds(21), w),
            Verdict::Refused(Refusal::Timestamp { skew_s: 21 })
        ));
        // Plain frames: the window is a per-account choice.
        let later = NOW + time::Duration::hours(1);
        assert!(matches!(evaluate(&plain, Some(&open), later, w), Verdict::Accepted(_)));
        let checked = AccountPolicy {
            check_plain_timestamp: true,
            ..AccountPolicy::default()
        };
        assert!(matches!(
            evaluate(&plain, Some(&checked), later, w),
            Verdict::Refused(Refusal::Timestamp { .. })
        ));
    }

    /// The window is checked at the wire's one-second resolution: the receiver's clock is
    /// truncated to its second like a panel's, so the edges do not depend on the fraction.
    #[test]
    fn window_edges_at_whole_seconds() {
        let enc = frame(ENC_BA);
        let w = Window::default();
        let ms = time::Duration::milliseconds;
        let accepted = |d| matches!(evaluate(&enc, Some(&keyed()), NOW + d, w), Verdict::Accepted(_));
        assert!(accepted(ms(40_000)));
        assert!(accepted(ms(40_999)), "still second -40");
        assert!(!accepted(ms(41_000)));
        assert!(accepted(ms(-20_000)));
        assert!(!accepted(ms(-20_001)), "the receiver's second is -21 from the message");
    }

    #[test]
    fn unsupported_token_is_duh_even_for_unknown_accounts() {
        let f = frame(&crate::protocol::frame::wrap(
            b"\"SIA-PUL\"0001L0#1234[]",
            Default::default(),
        ));
        assert_eq!(
            evaluate(&f, None, NOW, Window::default()),
            Verdict::Refused(Refusal::UnsupportedToken)
        );
        let v = evaluate(&f, None, NOW, Window::default());
        let r = response_frame(&f, &v, None, NOW, &mut SeededPad::new(0)).expect("DUH");
        assert_eq!(r.token, crate::protocol::frame::Token::Duh);
    }

    #[test]
    fn quirky_framing_needs_the_account_switch() {
        let mut f = frame(PLAIN_BA);
        f.framing.crc = crate::protocol::frame::CrcFormat::Binary;
        let open = AccountPolicy::default();
        assert!(matches!(
            evaluate(&f, Some(&open), NOW, Window::default()),
            Verdict::Silent(Silence::QuirkNotEnabled { .. })
        ));
        let quirky = AccountPolicy {
            quirks: Quirks {
                crc_binary: true,
                ..Quirks::NONE
            },
            ..AccountPolicy::default()
        };
        let v = evaluate(&f, Some(&quirky), NOW, Window::default());
        assert!(matches!(v, Verdict::Accepted(_)));
        let ack = response_frame(&f, &v, Some(&quirky), NOW, &mut SeededPad::new(0)).expect("ack");
        assert_eq!(ack.framing.crc, crate::protocol::frame::CrcFormat::Binary);
    }
}
