//! What is wrong with an import, each problem with its file, line, entry and field, collected
//! for the whole run so that one report shows all of them; and the rules for free text.

use std::fmt;

/// One thing wrong with an import. Never holds a secret value (a key, a code): messages name
/// the field and the rule, not what was typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as given.
    pub file: String,
    /// 1-based line; 0 when the problem is the whole file (it cannot be read, or its name says
    /// no record kind).
    pub line: usize,
    /// The entry, e.g. `account 1234` or `zone 3 of site S1`; empty when none can be named.
    pub what: String,
    /// The field (TOML key or CSV column); empty when no single field is at fault.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for Problem {
    /// `FILE:LINE: WHAT: FIELD: PROBLEM`, the parts that are empty left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        for part in [&self.what, &self.field] {
            if !part.is_empty() {
                write!(f, ": {part}")?;
            }
        }
        write!(f, ": {}", self.problem)
    }
}

/// Every problem of an import run, sorted by file and line (the order found within a line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Sort `problems` by file and line.
    pub fn new(mut problems: Vec<Problem>) -> Self {
        problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        Problems(problems)
    }

    /// The problems, sorted.
    pub fn as_slice(&self) -> &[Problem] {
        &self.0
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Problems {
    /// One problem per line, then the count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        let n = self.0.len();
        write!(f, "{n} problem{}", if n == 1 { "" } else { "s" })
    }
}

/// A row's problems, collected while its fields are checked; the row is kept only when it
/// has none.
pub(crate) struct Check<'a> {
    file: &'a str,
    line: usize,
    what: String,
    problems: Vec<Problem>,
}

/// Longest reference (`ref`, `customer`, `site`).
pub(crate) const REF_MAX: usize = 64;
/// Longest name, address, city, zone description.
pub(crate) const NAME_MAX: usize = 200;
/// Longest postcode.
pub(crate) const POSTCODE_MAX: usize = 20;
/// Longest role of a panel user.
pub(crate) const ROLE_MAX: usize = 64;
/// Longest procedure step.
pub(crate) const STEP_MAX: usize = 500;
/// Longest notes (customer notes, responder notes), line breaks included.
pub(crate) const NOTES_MAX: usize = 4000;
/// Longest phone number.
pub(crate) const PHONE_MAX: usize = 32;

impl<'a> Check<'a> {
    pub(crate) fn new(file: &'a str, line: usize, what: String) -> Self {
        Check {
            file,
            line,
            // Made printable when there is a problem to name it in (most entries have none).
            what,
            problems: Vec::new(),
        }
    }

    /// Record a problem with `field`.
    pub(crate) fn bad(&mut self, field: &str, problem: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            line: self.line,
            what: printable(&self.what),
            field: field.to_string(),
            problem: problem.into(),
        });
    }

    /// A one-line text that must be given: trimmed, at most `max` characters, no control
    /// characters.
    pub(crate) fn required(&mut self, field: &str, v: &str, max: usize) -> String {
        let t = v.trim();
        if t.is_empty() {
            self.bad(field, "must not be empty");
        } else {
            self.text(field, t, max);
        }
        t.to_string()
    }

    /// A one-line text that may be empty: trimmed, at most `max` characters, no control
    /// characters.
    pub(crate) fn optional(&mut self, field: &str, v: &str, max: usize) -> String {
        let t = v.trim();
        self.text(field, t, max);
        t.to_string()
    }

    /// Free text that may span lines (notes): at most `max` characters, no control characters
    /// but line breaks and tabs.
    pub(crate) fn notes(&mut self, field: &str, v: &str, max: usize) -> String {
        let t = v.trim();
        if let Some(p) = text_problem(t, max, true) {
            self.bad(field, p);
        }
        t.to_string()
    }

    fn text(&mut self, field: &str, t: &str, max: usize) {
        if let Some(p) = text_problem(t, max, false) {
            self.bad(field, p);
        }
    }

    /// `value` if the row had no problem; else its problems go to `out`.
    pub(crate) fn finish<T>(self, out: &mut Vec<Problem>, value: T) -> Option<T> {
        if self.problems.is_empty() {
            Some(value)
        } else {
            out.extend(self.problems);
            None
        }
    }
}

/// Unicode's bidirectional formatting characters: they can make a name display as something
/// else on an operator's screen ("Trojan Source").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// What is wrong with a text, if anything. Control characters could move the cursor or
/// change colours in the operator's terminal, so none is allowed (line breaks and tabs only in
/// notes).
pub(crate) fn text_problem(t: &str, max: usize, multiline: bool) -> Option<String> {
    let n = t.chars().count();
    if n > max {
        return Some(format!("{n} characters, at most {max} allowed"));
    }
    for c in t.chars() {
        if multiline && matches!(c, '\n' | '\r' | '\t') {
            continue;
        }
        if c.is_control() {
            return Some(format!("contains the control character U+{:04X}", c as u32));
        }
        if is_bidi_control(c) {
            return Some(format!(
                "contains the bidirectional formatting character U+{:04X}",
                c as u32
            ));
        }
    }
    None
}

/// `s` with control and bidirectional formatting characters escaped, for naming an entry
/// whose reference is itself bad.
pub(crate) fn printable(s: &str) -> String {
    let escaped = |c: char| c.is_control() || is_bidi_control(c);
    // Nearly every text has nothing to escape: one copy (this runs for every entry of an
    // import, a million of them).
    if !s.chars().any(escaped) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if escaped(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// A serde message without the value it quotes: `invalid type: string "…", expected u64`
/// becomes `invalid type: a string, expected u64`. The value could be a key typed into the
/// wrong field, or a code someone tried to import.
pub(crate) fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (got, expected) = rest.split_once(", expected").unwrap_or((rest, ""));
            let kind = if got.starts_with("string") {
                "a string"
            } else if got.starts_with("integer") {
                "an integer"
            } else if got.starts_with("floating point") {
                "a number with a fraction"
            } else if got.starts_with("boolean") {
                "a boolean"
            } else if got.starts_with("sequence") {
                "a list"
            } else if got.starts_with("map") {
                "a table"
            } else {
                "a value"
            };
            let expected = if expected.is_empty() {
                String::new()
            } else {
                format!(", expected{expected}")
            };
            return format!("{prefix}{kind}{expected}");
        }
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_file_line_what_field_problem_then_a_count() {
        let p = |file: &str, line, field: &str| Problem {
            file: file.into(),
            line,
            what: "zone 3 of site S1".into(),
            field: field.into(),
            problem: "wrong".into(),
        };
        let all = Problems::new(vec![
            p("b.csv", 2, "type"),
            p("a.toml", 9, ""),
            p("a.toml", 3, "number"),
        ]);
        assert_eq!(
            all.to_string(),
            "a.toml:3: zone 3 of site S1: number: wrong\n\
             a.toml:9: zone 3 of site S1: wrong\n\
             b.csv:2: zone 3 of site S1: type: wrong\n\
             3 problems"
        );
        let read = Problem {
            file: "x.toml".into(),
            line: 0,
            what: String::new(),
            field: String::new(),
            problem: "cannot read".into(),
        };
        assert_eq!(Problems::new(vec![read]).to_string(), "x.toml: cannot read\n1 problem");
    }

    #[test]
    fn text_rules() {
        assert_eq!(text_problem("Back door", 200, false), None);
        assert!(text_problem("Back\u{1b}[31m door", 200, false).is_some_and(|p| p.contains("U+001B")));
        assert!(text_problem("two\nlines", 200, false).is_some());
        assert_eq!(text_problem("two\nlines\tok", 200, true), None);
        assert!(text_problem("a\u{7}bell", 200, true).is_some());
        assert!(text_problem("Bank\u{202E}lapyap", 200, false).is_some_and(|p| p.contains("U+202E")));
        assert!(text_problem(&"é".repeat(201), 200, false).is_some_and(|p| p.contains("201 characters")));
        assert_eq!(text_problem(&"é".repeat(200), 200, false), None);
        assert_eq!(printable("S\u{1b}1"), "S\\u{1b}1");
    }

    #[test]
    fn serde_messages_lose_the_value() {
        assert_eq!(
            without_value("invalid type: string \"00112233\", expected u64"),
            "invalid type: a string, expected u64"
        );
        assert_eq!(
            without_value("invalid type: integer `583947`, expected a string"),
            "invalid type: an integer, expected a string"
        );
        assert_eq!(
            without_value("invalid value: integer `300`, expected u8"),
            "invalid value: an integer, expected u8"
        );
        assert_eq!(without_value("missing field `name`"), "missing field `name`");
    }
}
