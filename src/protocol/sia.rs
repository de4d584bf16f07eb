//! SIA DC-03 / DC-04 data, as carried in the `[...]` of a `SIA-DCS` frame (see
//! `protocols/sia-dcs.md`).
//!
//! ```text
//! data    = block *( "|" block )
//! block   = "#" account | ("N" / "O") events | "A" text | other
//! events  = packet *( "/" packet )
//! packet  = *( modifier | event )
//! modifier= 2LOWER value            ; ri area, id user, ti hh:mm[:ss], da MM-DD-YY, pi, ai…
//! event   = 2UPPER *DIGIT [ "^" text "^" ]
//! ```
//!
//! Modifiers apply to every event after them in the same block, in any order and with or
//! without `/` (`Nri1/BA01`, `Nri2/id1/OP`, `Nri1CL0^VX FRONTE ^`, `Nti19:44/id1/RP` all occur
//! in the field). Addresses are kept as strings: `01` and `1` both occur.

use serde::Serialize;

use super::codes::SiaCode;

/// Parsed SIA-DCS data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiaData {
    /// The account block (`#1234`), if present.
    pub account: Option<String>,
    /// Blocks in order.
    pub blocks: Vec<SiaBlock>,
}

/// One `|`-separated block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "block", rename_all = "snake_case")]
pub enum SiaBlock {
    /// `N` (new) or `O` (old) event block.
    Events {
        /// `O` block: an event reported late.
        old: bool,
        /// The events, each with the modifiers in force.
        events: Vec<SiaEvent>,
    },
    /// `A` ASCII text block.
    Text {
        /// The text.
        text: String,
    },
    /// Any other function block (`E`, `C`, `P`, `X`, `L`, `V`…), kept raw.
    Other {
        /// The function character.
        function: char,
        /// The rest of the block.
        body: String,
    },
}

/// A modifier in force for an event (`ri1`, `id5`…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Modifier {
    /// Two lower-case letters.
    pub name: String,
    /// The value as sent.
    pub value: String,
}

/// One event packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiaEvent {
    /// Two-letter event code.
    pub code: SiaCode,
    /// Address (zone, user, area… depending on the code), as sent.
    pub address: Option<String>,
    /// `^text^` description.
    pub text: Option<String>,
    /// Modifiers in force, sorted by name.
    pub modifiers: Vec<Modifier>,
}

impl SiaEvent {
    /// The value of a modifier in force.
    pub fn modifier(&self, name: &str) -> Option<&str> {
        self.modifiers.iter().find(|m| m.name == name).map(|m| m.value.as_str())
    }
}

/// Why SIA data did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("SIA data not understood at character {offset}: {what}")]
pub struct SiaError {
    /// Character offset in the data field.
    pub offset: usize,
    /// What was expected.
    pub what: &'static str,
}

/// The `|`-separated blocks of SIA data with their byte offsets, split outside `^…^` text
/// (a `^` left open runs on into the following blocks, as it does in a panel's text).
struct Blocks<'a> {
    data: &'a str,
    start: usize,
    in_text: bool,
    done: bool,
}

impl<'a> Blocks<'a> {
    fn new(data: &'a str) -> Self {
        Blocks {
            data,
            start: 0,
            in_text: false,
            done: false,
        }
    }
}

impl<'a> Iterator for Blocks<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<(usize, &'a str)> {
        if self.done {
            return None;
        }
        let start = self.start;
        // `^` and `|` are ASCII: they never occur inside a multi-byte character, so byte
        // positions are character boundaries.
        for (i, b) in self.data.bytes().enumerate().skip(start) {
            match b {
                b'^' => self.in_text = !self.in_text,
                b'|' if !self.in_text => {
                    self.start = i + 1;
                    return Some((start, &self.data[start..i]));
                }
                _ => {}
            }
        }
        self.done = true;
        Some((start, &self.data[start..]))
    }
}

/// A modifier in force, borrowed from the data: (name, value).
pub(crate) type ModifierRef<'a> = (&'a str, &'a str);

/// An event as the parser meets it, borrowing from the data text and from the parser's list of
/// modifiers in force (no copy per event).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SiaEventRef<'a, 'm> {
    /// Two-letter event code.
    pub code: SiaCode,
    /// Address, as sent.
    pub address: Option<&'a str>,
    /// `^text^` description.
    pub text: Option<&'a str>,
    /// From an `O` block.
    pub old: bool,
    /// Modifiers in force, sorted by name.
    pub modifiers: &'m [ModifierRef<'a>],
}

impl<'a> SiaEventRef<'a, '_> {
    /// The value of a modifier in force.
    pub fn modifier(&self, name: &str) -> Option<&'a str> {
        self.modifiers.iter().find(|m| m.0 == name).map(|m| m.1)
    }
}

/// What [`visit_sia_data`] reports, in data order.
pub(crate) enum SiaItem<'a, 'm> {
    /// The `#` account block.
    Account(&'a str),
    /// An `N`/`O` block starts; its events follow.
    EventsBlock { old: bool },
    /// An event of the current block.
    Event(SiaEventRef<'a, 'm>),
    /// An `A` text block.
    Text(&'a str),
    /// Any other block.
    Other(char, &'a str),
}

/// Parse SIA-DCS data.
pub fn parse_sia_data(data: &str) -> Result<SiaData, SiaError> {
    let mut account = None;
    let mut blocks = Vec::new();
    visit_sia_data(data, |item| match item {
        SiaItem::Account(a) => account = Some(a.to_string()),
        SiaItem::EventsBlock { old } => blocks.push(SiaBlock::Events {
            old,
            events: Vec::new(),
        }),
        SiaItem::Event(e) => {
            if let Some(SiaBlock::Events { events, .. }) = blocks.last_mut() {
                events.push(SiaEvent {
                    code: e.code,
                    address: e.address.map(str::to_string),
                    text: e.text.map(str::to_string),
                    modifiers: e
                        .modifiers
                        .iter()
                        .map(|(name, value)| Modifier {
                            name: name.to_string(),
                            value: value.to_string(),
                        })
                        .collect(),
                });
            }
        }
        SiaItem::Text(text) => blocks.push(SiaBlock::Text { text: text.to_string() }),
        SiaItem::Other(function, body) => blocks.push(SiaBlock::Other {
            function,
            body: body.to_string(),
        }),
    })?;
    Ok(SiaData { account, blocks })
}

/// The text of the first `A` block, if any (it describes every event of the message). Does
/// not check the rest of the data.
pub(crate) fn first_text_block(data: &str) -> Option<&str> {
    Blocks::new(data).find_map(|(_, block)| block.strip_prefix('A'))
}

/// Parse SIA-DCS data without copying it: `f` sees accounts, blocks and events in order, each
/// event with its text and the modifiers in force. [`parse_sia_data`] builds its owned tree from
/// this; the receiver turns the events straight into its own. On an error `f` may already have
/// seen the items before it.
pub(crate) fn visit_sia_data<'a>(data: &'a str, mut f: impl FnMut(SiaItem<'a, '_>)) -> Result<(), SiaError> {
    // Reused from block to block.
    let mut scratch = EventScratch::default();
    for (offset, block) in Blocks::new(data) {
        let mut chars = block.chars();
        let Some(function) = chars.next() else {
            continue; // empty block: a leading "|" (account omitted)
        };
        let body = chars.as_str();
        match function {
            '#' => {
                if body.is_empty() || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(SiaError {
                        offset,
                        what: "an account of hex digits after #",
                    });
                }
                f(SiaItem::Account(body));
            }
            'N' | 'O' => {
                let old = function == 'O';
                f(SiaItem::EventsBlock { old });
                parse_event_block(body, offset + 1, old, &mut scratch, &mut f)?;
            }
            'A' => f(SiaItem::Text(body)),
            other => f(SiaItem::Other(other, body)),
        }
    }
    Ok(())
}

fn modifier_value_char(name: &[u8], c: u8) -> bool {
    match name {
        b"ti" => c.is_ascii_digit() || c == b':',
        b"da" => c.is_ascii_digit() || c == b'-',
        _ => c.is_ascii_digit(),
    }
}

/// Working lists of one event block.
#[derive(Default)]
struct EventScratch<'a> {
    /// Modifiers in force, sorted by name.
    modifiers: Vec<ModifierRef<'a>>,
    /// The modifiers as they were at the pending event, once a modifier after it changed them.
    at_pending: Vec<ModifierRef<'a>>,
}

/// The last event of a block is handed out only when the next one starts (or the block ends):
/// a `^text^` after it still belongs to it.
struct Pending<'a> {
    code: SiaCode,
    address: Option<&'a str>,
    text: Option<&'a str>,
    /// `at_pending` holds its modifiers (they changed after it).
    snapshot: bool,
}

fn parse_event_block<'a>(
    body: &'a str,
    base: usize,
    old: bool,
    scratch: &mut EventScratch<'a>,
    f: &mut impl FnMut(SiaItem<'a, '_>),
) -> Result<(), SiaError> {
    let b = body.as_bytes();
    scratch.modifiers.clear();
    let mut pending: Option<Pending<'a>> = None;
    let mut i = 0;
    let err = |i: usize, what: &'static str| SiaError { offset: base + i, what };
    let emit = |p: Pending<'a>, scratch: &EventScratch<'a>, f: &mut dyn FnMut(SiaItem<'a, '_>)| {
        f(SiaItem::Event(SiaEventRef {
            code: p.code,
            address: p.address,
            text: p.text,
            old,
            modifiers: if p.snapshot {
                &scratch.at_pending
            } else {
                &scratch.modifiers
            },
        }))
    };
    while i < b.len() {
        let c = b[i];
        if c == b'/' {
            i += 1;
            continue;
        }
        if c == b'^' {
            // Text belongs to the event just before it.
            let end = b[i + 1..]
                .iter()
                .position(|x| *x == b'^')
                .ok_or_else(|| err(i, "a closing ^ after the text"))?;
            let text = &body[i + 1..i + 1 + end];
            match pending.as_mut() {
                Some(ev) if ev.text.is_none() => ev.text = Some(text),
                _ => return Err(err(i, "an event code before ^text^")),
            }
            i += end + 2;
            continue;
        }
        let pair = b.get(i..i + 2);
        match pair {
            Some([x, y]) if x.is_ascii_lowercase() && y.is_ascii_lowercase() => {
                let name_bytes = &b[i..i + 2];
                let start = i + 2;
                let mut end = start;
                while end < b.len() && modifier_value_char(name_bytes, b[end]) {
                    end += 1;
                }
                let (name, value) = (&body[i..i + 2], &body[start..end]);
                if let Some(p) = pending.as_mut().filter(|p| !p.snapshot) {
                    scratch.at_pending.clear();
                    scratch.at_pending.extend_from_slice(&scratch.modifiers);
                    p.snapshot = true;
                }
                // Sorted and unique by name: a repeated modifier replaces the earlier one.
                match scratch.modifiers.binary_search_by(|m| m.0.cmp(name)) {
                    Ok(k) => scratch.modifiers[k] = (name, value),
                    Err(k) => scratch.modifiers.insert(k, (name, value)),
                }
                i = end;
            }
            Some([x, y]) if x.is_ascii_uppercase() && y.is_ascii_uppercase() => {
                let code = SiaCode([*x, *y]);
                let start = i + 2;
                let mut end = start;
                while end < b.len() && b[end].is_ascii_digit() {
                    end += 1;
                }
                if let Some(p) = pending.take() {
                    emit(p, scratch, f);
                }
                pending = Some(Pending {
                    code,
                    address: (end > start).then(|| &body[start..end]),
                    text: None,
                    snapshot: false,
                });
                i = end;
            }
            _ => {
                return Err(err(
                    i,
                    "a modifier (two lower-case letters) or an event code (two capitals)",
                ));
            }
        }
    }
    if let Some(p) = pending {
        emit(p, scratch, f);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(data: &str) -> Vec<SiaEvent> {
        parse_sia_data(data)
            .expect("parses")
            .blocks
            .into_iter()
            .flat_map(|b| match b {
                SiaBlock::Events { events, .. } => events,
                _ => vec![],
            })
            .collect()
    }

    #[test]
    fn account_area_zone() {
        let d = parse_sia_data("#1234|Nri1/BA01").expect("parses");
        assert_eq!(d.account.as_deref(), Some("1234"));
        let e = events("#1234|Nri1/BA01");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].code.as_str(), "BA");
        assert_eq!(e[0].address.as_deref(), Some("01"));
        assert_eq!(e[0].modifier("ri"), Some("1"));
    }

    #[test]
    fn several_events_share_modifiers() {
        let e = events("#1234|Nri1/TA12/BA12");
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].code.as_str(), e[1].code.as_str()), ("TA", "BA"));
        assert!(
            e.iter()
                .all(|x| x.modifier("ri") == Some("1") && x.address.as_deref() == Some("12"))
        );
    }

    #[test]
    fn user_modifier_before_code_without_address() {
        // pysiaalarm #51 (Satel): "id" must not be taken for the code.
        let e = events("#006969|Nri2/id1/OP");
        assert_eq!(e[0].code.as_str(), "OP");
        assert_eq!(e[0].address, None);
        assert_eq!(e[0].modifier("id"), Some("1"));
        assert_eq!(e[0].modifier("ri"), Some("2"));
    }

    #[test]
    fn time_modifier_and_text_without_slash() {
        // pysiaalarm #8 (Scantronic) and a real panel with text in ^…^.
        let e = events("Nti19:44/id1/RP");
        assert_eq!(e[0].modifier("ti"), Some("19:44"));
        let e = events("Nri1CL0^VX FRONTE ^");
        assert_eq!(e[0].code.as_str(), "CL");
        assert_eq!(e[0].address.as_deref(), Some("0"));
        assert_eq!(e[0].text.as_deref(), Some("VX FRONTE "));
    }

    #[test]
    fn text_block_and_other_blocks_kept() {
        let d = parse_sia_data("#1234|NRR|Atest|X12").expect("parses");
        assert!(matches!(&d.blocks[1], SiaBlock::Text { text } if text == "test"));
        assert!(matches!(&d.blocks[2], SiaBlock::Other { function: 'X', body } if body == "12"));
    }

    #[test]
    fn date_time_and_old_block() {
        let d = parse_sia_data("#1234|Oda01-15-26ti11:59:58/FA129").expect("parses");
        let SiaBlock::Events { old, events } = &d.blocks[0] else {
            panic!("events")
        };
        assert!(*old);
        assert_eq!(events[0].modifier("da"), Some("01-15-26"));
        assert_eq!(events[0].modifier("ti"), Some("11:59:58"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_sia_data("#1234|Nri1/B").is_err());
        assert!(parse_sia_data("#12G4|NBA1").is_err());
        assert!(parse_sia_data("#1234|N^text^").is_err());
        assert!(parse_sia_data("#1234|NBA1^unterminated").is_err());
        assert!(parse_sia_data("#1234|N!!").is_err());
    }

    /// Events are handed out one late (a `^text^` may still follow): a modifier between an
    /// event and its text must not reach that event.
    #[test]
    fn modifier_between_event_and_its_text_belongs_to_the_next_event() {
        let e = events("Nri1BA01ri2id3^t^TA02");
        assert_eq!((e[0].modifier("ri"), e[0].modifier("id")), (Some("1"), None));
        assert_eq!(e[0].text.as_deref(), Some("t"));
        assert_eq!((e[1].modifier("ri"), e[1].modifier("id")), (Some("2"), Some("3")));
        assert_eq!(e[1].text, None);
        assert!(parse_sia_data("#1234|NBA1^a^ri2^b^").is_err());
    }

    #[test]
    fn pipe_inside_text_does_not_split() {
        let e = events("#1234|NBA1^a|b^");
        assert_eq!(e[0].text.as_deref(), Some("a|b"));
    }
}
