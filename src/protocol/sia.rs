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

/// Split on `|` outside `^…^` text.
fn split_blocks(data: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut in_text = false;
    let mut start = 0;
    for (i, c) in data.char_indices() {
        match c {
            '^' => in_text = !in_text,
            '|' if !in_text => {
                out.push((start, &data[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push((start, &data[start..]));
    out
}

/// Parse SIA-DCS data.
pub fn parse_sia_data(data: &str) -> Result<SiaData, SiaError> {
    let mut account = None;
    let mut blocks = Vec::new();
    for (offset, block) in split_blocks(data) {
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
                account = Some(body.to_string());
            }
            'N' | 'O' => blocks.push(SiaBlock::Events {
                old: function == 'O',
                events: parse_event_block(body, offset + 1)?,
            }),
            'A' => blocks.push(SiaBlock::Text { text: body.to_string() }),
            other => blocks.push(SiaBlock::Other {
                function: other,
                body: body.to_string(),
            }),
        }
    }
    Ok(SiaData { account, blocks })
}

fn modifier_value_char(name: &[u8], c: u8) -> bool {
    match name {
        b"ti" => c.is_ascii_digit() || c == b':',
        b"da" => c.is_ascii_digit() || c == b'-',
        _ => c.is_ascii_digit(),
    }
}

fn parse_event_block(body: &str, base: usize) -> Result<Vec<SiaEvent>, SiaError> {
    let b = body.as_bytes();
    let mut modifiers: Vec<Modifier> = Vec::new();
    let mut events: Vec<SiaEvent> = Vec::new();
    let mut i = 0;
    let err = |i: usize, what: &'static str| SiaError { offset: base + i, what };
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
            match events.last_mut() {
                Some(ev) if ev.text.is_none() => ev.text = Some(text.to_string()),
                _ => return Err(err(i, "an event code before ^text^")),
            }
            i += end + 2;
            continue;
        }
        let pair = b.get(i..i + 2);
        match pair {
            Some([x, y]) if x.is_ascii_lowercase() && y.is_ascii_lowercase() => {
                let name = &b[i..i + 2];
                let start = i + 2;
                let mut end = start;
                while end < b.len() && modifier_value_char(name, b[end]) {
                    end += 1;
                }
                let m = Modifier {
                    name: body[i..i + 2].to_string(),
                    value: body[start..end].to_string(),
                };
                match modifiers.iter_mut().find(|x| x.name == m.name) {
                    Some(existing) => *existing = m,
                    None => {
                        modifiers.push(m);
                        modifiers.sort_by(|a, b| a.name.cmp(&b.name));
                    }
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
                events.push(SiaEvent {
                    code,
                    address: (end > start).then(|| body[start..end].to_string()),
                    text: None,
                    modifiers: modifiers.clone(),
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
    Ok(events)
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

    #[test]
    fn pipe_inside_text_does_not_split() {
        let e = events("#1234|NBA1^a|b^");
        assert_eq!(e[0].text.as_deref(), Some("a|b"));
    }
}
