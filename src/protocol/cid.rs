//! Contact ID (SIA DC-05, Ademco): the `ADM-CID` data of a DC-09 frame and the raw 16-digit
//! message (see `protocols/contact-id.md`).
//!
//! ```text
//! adm-cid = [ "#" account "|" ] Q XYZ SP GG SP CCC      ; "#1234|1130 01 003"
//! raw     = ACCT(4) MT(2) Q XYZ GG CCC S                ; "1234181130010037"
//! ```
//!
//! Q is 1 (new event / opening), 3 (restore / closing) or 6 (status); other digits parse as
//! [`CidQualifier::Other`] and reach the supervisor rather than being dropped. The checksum
//! digit makes the sum of all 16 digits (0 counted as 10, B–F as 11–15) a multiple of 15.

use serde::Serialize;

use super::codes::CidCode;

/// The event qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CidQualifier {
    /// `1`: new event, or opening (disarm).
    New,
    /// `3`: restore, or closing (arm).
    Restore,
    /// `6`: previously reported condition still present.
    Status,
    /// Any other digit, kept.
    Other(u8),
}

impl CidQualifier {
    fn from_digit(d: u8) -> CidQualifier {
        match d {
            b'1' => CidQualifier::New,
            b'3' => CidQualifier::Restore,
            b'6' => CidQualifier::Status,
            other => CidQualifier::Other(other - b'0'),
        }
    }

    /// The digit.
    pub fn digit(&self) -> u8 {
        match self {
            CidQualifier::New => 1,
            CidQualifier::Restore => 3,
            CidQualifier::Status => 6,
            CidQualifier::Other(d) => *d,
        }
    }
}

/// One Contact ID event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CidEvent {
    /// Qualifier.
    pub qualifier: CidQualifier,
    /// Event code XYZ.
    pub code: CidCode,
    /// Group / partition GG (`00` = none).
    pub group: String,
    /// Zone or user CCC (which one depends on the code).
    pub zone: String,
}

/// `ADM-CID` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdmCidData {
    /// The account before `|`, if present.
    pub account: Option<String>,
    /// The event.
    pub event: CidEvent,
}

/// A raw 16-digit Contact ID message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactIdMessage {
    /// Account, 4 digits.
    pub account: String,
    /// Message type, `18` or `98`.
    pub message_type: String,
    /// The event.
    pub event: CidEvent,
    /// The checksum digit as sent.
    pub checksum: char,
}

/// Why Contact ID did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum CidError {
    /// Not the `[#acct|]QXYZ GG CCC` shape.
    #[error("Contact ID data is not of the form #ACCT|QXYZ GG CCC")]
    Shape,
    /// Not 16 digits.
    #[error("a Contact ID message has 16 digits")]
    Length,
    /// A character that is not a Contact ID digit.
    #[error("a Contact ID message has only the digits 0-9 and B-F")]
    Digit,
    /// Message type not 18 or 98.
    #[error("Contact ID message type must be 18 or 98")]
    MessageType,
    /// Checksum does not add up.
    #[error("Contact ID checksum does not add up (sum of digits not a multiple of 15)")]
    Checksum,
}

fn digits(s: &[u8], n: usize) -> bool {
    s.len() == n && s.iter().all(|b| b.is_ascii_digit())
}

fn cid_digit(s: &[u8]) -> bool {
    s.iter().all(|b| b.is_ascii_digit() || (b'B'..=b'F').contains(b))
}

fn parse_event(q: u8, code: &[u8], group: &[u8], zone: &[u8]) -> Result<CidEvent, CidError> {
    if !q.is_ascii_digit()
        || !digits(code, 3)
        || group.len() != 2
        || zone.len() != 3
        || !cid_digit(group)
        || !cid_digit(zone)
    {
        return Err(CidError::Shape);
    }
    let code = code.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
    Ok(CidEvent {
        qualifier: CidQualifier::from_digit(q),
        code: CidCode(code),
        group: String::from_utf8_lossy(group).into_owned(),
        zone: String::from_utf8_lossy(zone).into_owned(),
    })
}

/// Parse `ADM-CID` data: `#ACCT|QXYZ GG CCC`. The account block is optional; the unspaced form
/// `QXYZGGCCC` is also accepted (seen from translators).
pub fn parse_adm_cid(data: &str) -> Result<AdmCidData, CidError> {
    let (account, event) = match data.split_once('|') {
        Some((acct, ev)) => {
            let acct = acct.strip_prefix('#').ok_or(CidError::Shape)?;
            if acct.is_empty() || !acct.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(CidError::Shape);
            }
            (Some(acct.to_string()), ev)
        }
        None => (None, data),
    };
    let e = event.as_bytes();
    let event = match e.len() {
        11 if e[4] == b' ' && e[7] == b' ' => parse_event(e[0], &e[1..4], &e[5..7], &e[8..11])?,
        9 => parse_event(e[0], &e[1..4], &e[4..6], &e[6..9])?,
        _ => return Err(CidError::Shape),
    };
    Ok(AdmCidData { account, event })
}

/// Value of a Contact ID digit for the checksum (0 counts as 10).
fn digit_value(b: u8) -> Option<u32> {
    match b {
        // 0 is sent as the tone for 10; some senders write that as A.
        b'0' | b'A' => Some(10),
        b'1'..=b'9' => Some(u32::from(b - b'0')),
        b'B'..=b'F' => Some(u32::from(b - b'A' + 10)),
        _ => None,
    }
}

/// The checksum digit for the first 15 digits of a message (`F` stands for 15, i.e. 0).
pub fn contact_id_checksum(first15: &str) -> Option<char> {
    let sum = first15.bytes().map(digit_value).sum::<Option<u32>>()?;
    // The digit that brings the sum to a multiple of 15: 1–9 as themselves, 10 is the digit 0,
    // 11–15 are B–F (so a "zero" checksum travels as F).
    let s = 15 - sum % 15;
    Some(match s {
        1..=9 => char::from(b'0' + s as u8),
        10 => '0',
        _ => char::from(b'A' + (s - 10) as u8),
    })
}

/// Parse and check a raw 16-digit Contact ID message.
pub fn parse_contact_id(msg: &str) -> Result<ContactIdMessage, CidError> {
    let b = msg.as_bytes();
    if b.len() != 16 {
        return Err(CidError::Length);
    }
    if !b.iter().all(|c| digit_value(*c).is_some() || *c == b'A') {
        return Err(CidError::Digit);
    }
    let sum: u32 = b.iter().map(|c| digit_value(*c).unwrap_or(10)).sum();
    if !sum.is_multiple_of(15) {
        return Err(CidError::Checksum);
    }
    let mt = &msg[4..6];
    if mt != "18" && mt != "98" {
        return Err(CidError::MessageType);
    }
    let event = parse_event(b[6], &b[7..10], &b[10..12], &b[12..15])?;
    Ok(ContactIdMessage {
        account: msg[..4].to_string(),
        message_type: mt.to_string(),
        event,
        checksum: char::from(b[15]),
    })
}

/// Encode a raw message with its checksum.
pub fn encode_contact_id(account: &str, message_type: &str, ev: &CidEvent) -> Option<String> {
    let first15 = format!(
        "{account}{message_type}{}{:03}{}{}",
        ev.qualifier.digit(),
        ev.code.0,
        ev.group,
        ev.zone
    );
    if first15.len() != 15 {
        return None;
    }
    let s = contact_id_checksum(&first15)?;
    Some(format!("{first15}{s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adm_cid_data() {
        let d = parse_adm_cid("#1234|1130 01 003").expect("parses");
        assert_eq!(d.account.as_deref(), Some("1234"));
        assert_eq!(d.event.qualifier, CidQualifier::New);
        assert_eq!(d.event.code, CidCode(130));
        assert_eq!(d.event.group, "01");
        assert_eq!(d.event.zone, "003");
        let d = parse_adm_cid("#4F39|3401 01 057").expect("parses");
        assert_eq!(d.event.qualifier, CidQualifier::Restore);
        assert_eq!(parse_adm_cid("1130 01 003").expect("no account").account, None);
        assert_eq!(parse_adm_cid("113001003").expect("unspaced").event.zone, "003");
    }

    #[test]
    fn adm_cid_errors() {
        for bad in [
            "",
            "#1234|",
            "#1234|1130 01",
            "1234|1130 01 003",
            "#1234|1X30 01 003",
            "#12G4|1130 01 003",
            "#1234|1130-01-003",
        ] {
            assert!(parse_adm_cid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_qualifier_is_kept() {
        let d = parse_adm_cid("#1234|2130 01 003").expect("parses");
        assert_eq!(d.event.qualifier, CidQualifier::Other(2));
    }

    #[test]
    fn raw_message_checksum() {
        let m = parse_contact_id("1234181130010037").expect("valid");
        assert_eq!(m.account, "1234");
        assert_eq!(m.message_type, "18");
        assert_eq!(m.event.code, CidCode(130));
        assert_eq!(m.checksum, '7');
        assert_eq!(parse_contact_id("1234181130010038"), Err(CidError::Checksum));
        assert_eq!(contact_id_checksum("123418113001003"), Some('7'));
        assert_eq!(
            encode_contact_id("1234", "18", &m.event).as_deref(),
            Some("1234181130010037")
        );
        assert_eq!(parse_contact_id("12341811300100"), Err(CidError::Length));
        assert_eq!(parse_contact_id("123418113001003x"), Err(CidError::Digit));
    }

    #[test]
    fn checksum_zero_is_sent_as_f() {
        // Find a message whose checksum is 0 → F, and check it validates.
        let first15 = "123418113001004";
        let s = contact_id_checksum(first15).expect("digits");
        let msg = format!("{first15}{s}");
        assert!(parse_contact_id(&msg).is_ok(), "{msg}");
        let sum: u32 = "000000000000000".bytes().map(|b| digit_value(b).unwrap_or(0)).sum();
        assert_eq!(sum % 15, 0);
        assert_eq!(contact_id_checksum("000000000000000"), Some('F'));
    }
}
