//! The protocol-independent event every layer above the protocol speaks. SIA-DCS events,
//! Contact ID events and link tests all become an [`Event`]; unknown codes survive as events
//! without table information.

use serde::Serialize;

use crate::protocol::cid::{CidQualifier, parse_adm_cid};
use crate::protocol::codes::{AddressKind, Category, CidCode, Kind, SiaCode};
use crate::protocol::frame::{Frame, Plain, Token, XData};
use crate::protocol::sia::{SiaItem, first_text_block, visit_sia_data};
use crate::protocol::timestamp::Timestamp;

/// The event code, in the payload's own code space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "format", content = "code", rename_all = "snake_case")]
pub enum EventCode {
    /// SIA two-letter code.
    Sia(SiaCode),
    /// Contact ID three-digit code.
    Cid(CidCode),
    /// A link test (DC-09 `NULL`): no code, it only proves the path works.
    LinkTest,
}

impl std::fmt::Display for EventCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventCode::Sia(c) => write!(f, "SIA {c}"),
            EventCode::Cid(c) => write!(f, "CID {c}"),
            EventCode::LinkTest => f.write_str("link test"),
        }
    }
}

/// New event, restore, or status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Qualifier {
    /// A new event (or an opening).
    New,
    /// A restore (or a closing).
    Restore,
    /// A condition still present.
    Status,
    /// A Contact ID qualifier digit we do not know.
    Unknown(u8),
}

/// What the tables say about an event's code. `None` fields mean "unknown code".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Meaning {
    /// Category.
    pub category: Category,
    /// Kind (alarm, restore, disarm…).
    pub kind: Kind,
    /// Default priority 1–9.
    pub priority: u8,
    /// Description from the table.
    pub description: &'static str,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Account from the frame header.
    pub account: String,
    /// Receiver number from the header.
    pub receiver: Option<String>,
    /// Line prefix from the header.
    pub line: String,
    /// Sequence number of the frame.
    pub seq: u16,
    /// Code.
    pub code: EventCode,
    /// Qualifier.
    pub qualifier: Qualifier,
    /// Table meaning (absent for unknown codes and link tests).
    pub meaning: Option<Meaning>,
    /// Zone number, as sent.
    pub zone: Option<String>,
    /// Panel user number, as sent.
    pub user: Option<String>,
    /// Area / partition / group, as sent.
    pub area: Option<String>,
    /// The event's own address number as sent (whatever the code says it means).
    pub address: Option<String>,
    /// Text that came with the event.
    pub text: Option<String>,
    /// When the event happened, if the panel said (`H` extended data, or `da`/`ti`).
    pub occurred: Option<Timestamp>,
    /// The frame's timestamp.
    pub sent: Option<Timestamp>,
    /// Reported late (SIA `O` block).
    pub old: bool,
    /// Extended data of the frame, shared by all events of the frame (a frame with many events
    /// and many fields must not multiply them).
    pub xdata: std::sync::Arc<Vec<XData>>,
}

#[cfg(test)]
impl Event {
    /// A new SIA event of `account` (frame `seq`) with `code`, its meaning from the table, in
    /// `zone`: what the receiver hands the writer, for tests.
    pub(crate) fn sia_for_tests(account: &str, seq: u16, code: &[u8; 2], zone: &str) -> Event {
        let code = crate::protocol::codes::SiaCode(*code);
        Event {
            account: account.into(),
            receiver: None,
            line: "0".into(),
            seq,
            code: EventCode::Sia(code),
            qualifier: Qualifier::New,
            meaning: code.info().map(|i| Meaning {
                category: i.category,
                kind: i.kind,
                priority: i.priority,
                description: i.description.as_str(),
            }),
            zone: Some(zone.into()),
            user: None,
            area: None,
            address: None,
            text: None,
            occurred: None,
            sent: None,
            old: false,
            xdata: Default::default(),
        }
    }
}

impl Event {
    /// A one-line description for logs and the console.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        // One allocation: this runs for every stored event.
        let mut s = String::with_capacity(48);
        let _ = match (&self.meaning, self.code) {
            (_, EventCode::LinkTest) => s.write_str("link test"),
            (Some(m), _) => s.write_str(m.description),
            (None, code) => write!(s, "unknown code {code}"),
        };
        if let Qualifier::Unknown(q) = self.qualifier {
            let _ = write!(s, " (unknown qualifier {q})");
        }
        if let Some(z) = &self.zone {
            let _ = write!(s, ", zone {z}");
        }
        if let Some(u) = &self.user {
            let _ = write!(s, ", user {u}");
        }
        if let Some(a) = &self.area {
            let _ = write!(s, ", area {a}");
        }
        s
    }

    /// True for link tests (supervision polls).
    pub fn is_link_test(&self) -> bool {
        self.code == EventCode::LinkTest
    }
}

/// The data field of an accepted frame could not be understood. The frame is still stored and
/// acknowledged: it reaches the supervisor rather than wedging the panel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

fn strip_zero(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Combine SIA `da` (MM-DD-YY) and `ti` (`hh:mm[:ss]`) into a timestamp.
fn sia_time(da: Option<&str>, ti: Option<&str>, sent: Option<Timestamp>) -> Option<Timestamp> {
    let ti = ti?;
    let t = if ti.len() == 5 {
        format!("{ti}:00")
    } else {
        ti.to_string()
    };
    let date = match da {
        Some(d) if d.len() == 8 => format!("{}-20{}", &d[..5], &d[6..8]),
        Some(_) => return None,
        None => {
            let s = sent?.to_wire_string();
            s[9..].to_string()
        }
    };
    Timestamp::parse(format!("{t},{date}").as_bytes())
}

/// The events of an accepted frame with its clear content.
pub fn events_from(frame: &Frame, plain: &Plain) -> Result<Vec<Event>, PayloadError> {
    let account = frame.account_number().unwrap_or_default();
    // A key-change field (K) carries key material: it never leaves the protocol layer.
    let xdata: std::sync::Arc<Vec<XData>> = plain
        .xdata
        .iter()
        .map(|x| XData {
            id: x.id,
            value: if x.id == 'K' {
                "<redacted>".to_string()
            } else {
                x.value.clone()
            },
        })
        .collect::<Vec<_>>()
        .into();
    let occurred_x = plain
        .xdata
        .iter()
        .find(|x| x.id == 'H')
        .and_then(|x| Timestamp::parse(x.value.as_bytes()));
    let base = |code: EventCode, qualifier: Qualifier| Event {
        account: account.to_string(),
        receiver: frame.receiver.clone(),
        line: frame.line.clone(),
        seq: frame.seq,
        code,
        qualifier,
        meaning: None,
        zone: None,
        user: None,
        area: None,
        address: None,
        text: None,
        occurred: occurred_x,
        sent: plain.timestamp,
        old: false,
        xdata: xdata.clone(),
    };
    match frame.token {
        Token::Null | Token::Xnm if plain.data.trim().is_empty() => Ok(vec![base(EventCode::LinkTest, Qualifier::New)]),
        Token::Null | Token::Xnm => {
            // Some hubs (Hikvision, field report eavanvalkenburg/sia #17) tag events NULL: a
            // NULL (or XNM) that carries data is read as SIA-DCS, else as ADM-CID, never dropped.
            let mut as_sia = frame.clone();
            as_sia.token = Token::SiaDcs;
            let sia = events_from(&as_sia, plain).map_err(|e| e.0);
            match sia {
                Ok(ev) if !ev.is_empty() => Ok(ev),
                other => {
                    let mut as_cid = frame.clone();
                    as_cid.token = Token::AdmCid;
                    events_from(&as_cid, plain).map_err(|_| {
                        let why = other.err().unwrap_or_else(|| "no event in it".into());
                        PayloadError(format!(
                            "{} frame carrying data that is neither SIA-DCS nor ADM-CID ({why})",
                            frame.token.as_str()
                        ))
                    })
                }
            }
        }
        Token::SiaDcs => {
            // The parser lends each event with its modifiers in force; no tree of owned blocks
            // is built only to be copied into the events and dropped.
            let message_text = first_text_block(&plain.data);
            // Most frames carry one event. (A first push into `Vec::new()` makes room for four,
            // over 1 KiB of events: a large allocation, which glibc serves only after
            // consolidating its fast bins, in every frame; see `receiver::READ_RESERVE`.)
            let mut out = Vec::with_capacity(1);
            visit_sia_data(&plain.data, |item| {
                let SiaItem::Event(se) = item else {
                    return;
                };
                let info = se.code.info();
                let qualifier = match info.map(|i| i.kind) {
                    Some(Kind::Restore | Kind::TroubleRestore | Kind::Unbypass) => Qualifier::Restore,
                    Some(Kind::Status) => Qualifier::Status,
                    _ => Qualifier::New,
                };
                let mut ev = base(EventCode::Sia(se.code), qualifier);
                ev.old = se.old;
                ev.meaning = info.map(|i| Meaning {
                    category: i.category,
                    kind: i.kind,
                    priority: i.priority,
                    description: i.description.as_str(),
                });
                let address = se.address.map(str::to_string);
                ev.area = se.modifier("ri").and_then(strip_zero);
                ev.user = se.modifier("id").and_then(strip_zero);
                match info.map_or(AddressKind::Zone, |i| i.address) {
                    AddressKind::User => ev.user = address.clone().or(ev.user),
                    AddressKind::Area => ev.area = address.clone().or(ev.area),
                    AddressKind::Zone => ev.zone = address.clone(),
                    AddressKind::None => {}
                }
                ev.address = address;
                ev.text = se.text.or(message_text).map(str::to_string);
                if ev.occurred.is_none() {
                    ev.occurred = sia_time(se.modifier("da"), se.modifier("ti"), plain.timestamp);
                }
                out.push(ev);
            })
            .map_err(|e| PayloadError(e.to_string()))?;
            Ok(out)
        }
        Token::AdmCid => {
            let d = parse_adm_cid(&plain.data).map_err(|e| PayloadError(e.to_string()))?;
            let e = d.event;
            let info = e.code.info();
            let qualifier = match e.qualifier {
                CidQualifier::New => Qualifier::New,
                CidQualifier::Restore => Qualifier::Restore,
                CidQualifier::Status => Qualifier::Status,
                CidQualifier::Other(q) => Qualifier::Unknown(q),
            };
            let mut ev = base(EventCode::Cid(e.code), qualifier);
            // Qualifier 1 takes the "new" meaning, 3 the "restore" one. A status report (6) or
            // an unknown qualifier keeps the code's category and description but opens nothing.
            ev.meaning = info.map(|i| {
                let (kind, priority) = match qualifier {
                    Qualifier::New => (i.kind_new, i.priority),
                    Qualifier::Restore => (
                        i.kind_restore,
                        if i.kind_restore == i.kind_new { i.priority } else { 9 },
                    ),
                    Qualifier::Status => (Kind::Status, 9),
                    Qualifier::Unknown(_) => (Kind::Info, i.priority),
                };
                Meaning {
                    category: i.category,
                    kind,
                    priority,
                    description: i.description.as_str(),
                }
            });
            // The parsed event is ours: its strings move into the event (one copy of the zone
            // for the field it names, the original for `address`).
            ev.area = (e.group != "00").then_some(e.group);
            match info.map_or(AddressKind::Zone, |i| i.address) {
                AddressKind::User => ev.user = Some(e.zone.clone()),
                AddressKind::Area => ev.area = Some(e.zone.clone()),
                AddressKind::None => {}
                AddressKind::Zone => ev.zone = Some(e.zone.clone()),
            }
            ev.address = Some(e.zone);
            Ok(vec![ev])
        }
        _ => Err(PayloadError(format!(
            "token {} carries no events",
            frame.token.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{DecodeOptions, decode_frame};

    fn frame(raw: &[u8]) -> (Frame, Plain) {
        let f = decode_frame(raw, &DecodeOptions::default()).expect("valid");
        let crate::protocol::frame::Body::Plain(p) = &f.body else {
            panic!("plain")
        };
        let p = p.clone();
        (f, p)
    }

    /// Field report (Hikvision hub, eavanvalkenburg/sia #17): events arrive tagged NULL. A NULL
    /// with data must give its events, not be taken for a link test and lost.
    #[test]
    fn null_frame_with_data_gives_its_events() {
        let body = b"\"NULL\"0005L0#1234[#1234|Nri1/BA01]";
        let raw = crate::protocol::frame::wrap(body, Default::default());
        let (f, p) = frame(&raw);
        let ev = events_from(&f, &p).expect("events");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].code, EventCode::Sia(SiaCode(*b"BA")));
        let raw = crate::protocol::frame::wrap(b"\"NULL\"0006L0#1234[#1234|1130 01 003]", Default::default());
        let (f, p) = frame(&raw);
        assert_eq!(events_from(&f, &p).expect("cid")[0].code, EventCode::Cid(CidCode(130)));
        let raw = crate::protocol::frame::wrap(b"\"NULL\"0000L0#1234[]", Default::default());
        let (f, p) = frame(&raw);
        assert!(events_from(&f, &p).expect("poll")[0].is_link_test());
    }

    /// The fuzzers' LeakSanitizer found every event with a known code leaking a copy of its
    /// description (`Box::leak`): a daemon would grow without bound. The description must
    /// borrow the static code table instead.
    #[test]
    fn meaning_description_borrows_the_table_instead_of_leaking() {
        let (f, p) = frame(b"\nF5F5003B\"SIA-DCS\"0001R1L1#1234[#1234|Nri1/BA01]_12:00:00,01-15-2026\r");
        let ev = events_from(&f, &p).expect("events");
        let table = SiaCode(*b"BA").info().expect("BA is in the table");
        let meaning = ev[0].meaning.expect("known code");
        assert!(std::ptr::eq(meaning.description, table.description.as_str()));

        let (f, p) = frame(b"\n4D63003D\"ADM-CID\"0010R1L1#1234[#1234|1130 01 003]_12:00:00,01-15-2026\r");
        let ev = events_from(&f, &p).expect("events");
        let table = CidCode(130).info().expect("130 is in the table");
        let meaning = ev[0].meaning.expect("known code");
        assert!(std::ptr::eq(meaning.description, table.description.as_str()));
    }
}
