//! Event-code tables for SIA (DC-03) and Contact ID (DC-05), kept as data in
//! `protocols/sia-codes.csv` and `protocols/cid-codes.csv` and parsed once.
//!
//! Codes are open types: a code not in a table still parses, prints and is stored; it only has
//! no [`SiaCodeInfo`]/[`CidCodeInfo`], which sends its event to the supervisor queue.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The SIA table, as shipped.
pub const SIA_TABLE: &str = include_str!("../../protocols/sia-codes.csv");
/// The Contact ID table, as shipped.
pub const CID_TABLE: &str = include_str!("../../protocols/cid-codes.csv");

/// What an event is about. The order of importance is the priority column, not this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Duress (a user forced to disarm).
    Duress,
    /// Hold-up / robbery.
    Holdup,
    /// Panic.
    Panic,
    /// Medical emergency.
    Medical,
    /// Fire.
    Fire,
    /// Gas, water, heat, freeze and similar hazards.
    Environmental,
    /// Burglary / intrusion.
    Burglary,
    /// Tamper.
    Tamper,
    /// Technical troubles: power, battery, faults.
    Technical,
    /// Communication and transmission path.
    Communication,
    /// Opening, closing and access control.
    Access,
    /// Bypass and disable.
    Bypass,
    /// Tests.
    Test,
    /// Everything informational.
    Information,
    /// Schedule: not armed by the close of its window plus grace.
    LateToClose,
    /// Schedule: not disarmed by the open of its window plus grace (where the site asks).
    LateToOpen,
    /// Schedule: disarmed outside every window.
    UnexpectedOpening,
    /// Schedule: armed during a window, well before its close (where the site asks).
    EarlyClose,
}

impl Category {
    /// Stable lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Category::Duress => "duress",
            Category::Holdup => "holdup",
            Category::Panic => "panic",
            Category::Medical => "medical",
            Category::Fire => "fire",
            Category::Environmental => "environmental",
            Category::Burglary => "burglary",
            Category::Tamper => "tamper",
            Category::Technical => "technical",
            Category::Communication => "communication",
            Category::Access => "access",
            Category::Bypass => "bypass",
            Category::Test => "test",
            Category::Information => "information",
            Category::LateToClose => "late_to_close",
            Category::LateToOpen => "late_to_open",
            Category::UnexpectedOpening => "unexpected_opening",
            Category::EarlyClose => "early_close",
        }
    }

    /// Parse the lower-case name.
    pub fn parse(s: &str) -> Option<Category> {
        ALL_CATEGORIES.iter().copied().find(|c| c.as_str() == s)
    }

    /// The place of a life-safety category in the queue's top tier (0 first), `None` for
    /// every other category. A person may be in danger now: duress (someone is forced),
    /// hold-up (a robbery under way), panic (someone called for help), fire, medical. No
    /// priority and no escalation moves an alarm of another category above these.
    pub fn life_safety_rank(&self) -> Option<u8> {
        LIFE_SAFETY.iter().position(|c| c == self).map(|i| i as u8)
    }
}

/// The life-safety categories, in the order the queue shows them.
pub const LIFE_SAFETY: [Category; 5] = [
    Category::Duress,
    Category::Holdup,
    Category::Panic,
    Category::Fire,
    Category::Medical,
];

/// The categories of schedule alarms (`correlate::schedule`): raised by the schedule, not by
/// a code; none is life-safety.
pub const SCHEDULE: [Category; 4] = [
    Category::LateToClose,
    Category::LateToOpen,
    Category::UnexpectedOpening,
    Category::EarlyClose,
];

/// Every category.
pub const ALL_CATEGORIES: [Category; 18] = [
    Category::Duress,
    Category::Holdup,
    Category::Panic,
    Category::Medical,
    Category::Fire,
    Category::Environmental,
    Category::Burglary,
    Category::Tamper,
    Category::Technical,
    Category::Communication,
    Category::Access,
    Category::Bypass,
    Category::Test,
    Category::Information,
    Category::LateToClose,
    Category::LateToOpen,
    Category::UnexpectedOpening,
    Category::EarlyClose,
];

/// What an event does to the state of a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An alarm condition begins.
    Alarm,
    /// An alarm condition ends.
    Restore,
    /// A trouble begins.
    Trouble,
    /// A trouble ends.
    TroubleRestore,
    /// The system (or an area) is disarmed / opened.
    Disarm,
    /// The system (or an area) is armed / closed.
    Arm,
    /// An alarm is cancelled at the panel.
    Cancel,
    /// A zone is bypassed.
    Bypass,
    /// A bypass ends.
    Unbypass,
    /// A test report.
    Test,
    /// A status report.
    Status,
    /// Information only.
    Info,
}

impl Kind {
    /// Stable lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Alarm => "alarm",
            Kind::Restore => "restore",
            Kind::Trouble => "trouble",
            Kind::TroubleRestore => "trouble_restore",
            Kind::Disarm => "disarm",
            Kind::Arm => "arm",
            Kind::Cancel => "cancel",
            Kind::Bypass => "bypass",
            Kind::Unbypass => "unbypass",
            Kind::Test => "test",
            Kind::Status => "status",
            Kind::Info => "info",
        }
    }

    /// Parse the lower-case name.
    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Alarm,
            Kind::Restore,
            Kind::Trouble,
            Kind::TroubleRestore,
            Kind::Disarm,
            Kind::Arm,
            Kind::Cancel,
            Kind::Bypass,
            Kind::Unbypass,
            Kind::Test,
            Kind::Status,
            Kind::Info,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What the address number of an event means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressKind {
    /// A zone (detector).
    Zone,
    /// A panel user number.
    User,
    /// An area / partition.
    Area,
    /// No address.
    None,
}

impl AddressKind {
    fn parse(s: &str) -> Option<AddressKind> {
        match s {
            "zone" => Some(AddressKind::Zone),
            "user" => Some(AddressKind::User),
            "area" => Some(AddressKind::Area),
            "none" => Some(AddressKind::None),
            _ => None,
        }
    }
}

/// A two-letter SIA event code. Any two capitals parse; [`SiaCode::info`] says if we know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiaCode(pub [u8; 2]);

impl SiaCode {
    /// From text: exactly two ASCII capitals.
    pub fn parse(s: &str) -> Option<SiaCode> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Some(SiaCode([*a, *b])),
            _ => None,
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// Table row, if the code is known.
    pub fn info(&self) -> Option<&'static SiaCodeInfo> {
        sia_table().get(self)
    }
}

impl std::fmt::Display for SiaCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SiaCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A three-digit Contact ID event code. Any value parses; [`CidCode::info`] says if we know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CidCode(pub u16);

impl CidCode {
    /// Table row, if the code is known.
    pub fn info(&self) -> Option<&'static CidCodeInfo> {
        cid_table().get(self)
    }
}

impl std::fmt::Display for CidCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:03}", self.0)
    }
}

impl Serialize for CidCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// One row of the SIA table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiaCodeInfo {
    /// The code.
    pub code: SiaCode,
    /// Category.
    pub category: Category,
    /// Kind.
    pub kind: Kind,
    /// Address meaning.
    pub address: AddressKind,
    /// Default priority, 1 (most urgent) … 9.
    pub priority: u8,
    /// Description.
    pub description: String,
}

/// One row of the Contact ID table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CidCodeInfo {
    /// The code.
    pub code: CidCode,
    /// Category.
    pub category: Category,
    /// Kind with qualifier 1 (new / opening).
    pub kind_new: Kind,
    /// Kind with qualifier 3 (restore / closing).
    pub kind_restore: Kind,
    /// Address meaning.
    pub address: AddressKind,
    /// Default priority, 1 (most urgent) … 9.
    pub priority: u8,
    /// Equivalent SIA code with qualifier 1.
    pub sia_new: Option<SiaCode>,
    /// Equivalent SIA code with qualifier 3.
    pub sia_restore: Option<SiaCode>,
    /// Description.
    pub description: String,
}

/// A table row that does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table} line {line}: {problem}")]
pub struct TableError {
    /// Which table.
    pub table: &'static str,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

fn records(table: &'static str, text: &str, header: &[&str]) -> Result<Vec<(usize, Vec<String>)>, TableError> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let got: Vec<String> = rdr
        .headers()
        .map_err(|e| TableError {
            table,
            line: 1,
            problem: e.to_string(),
        })?
        .iter()
        .map(str::to_string)
        .collect();
    if got != header {
        return Err(TableError {
            table,
            line: 1,
            problem: format!("header must be {}", header.join(",")),
        });
    }
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| TableError {
            table,
            line: e.position().map_or(0, |p| p.line() as usize),
            problem: e.to_string(),
        })?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        out.push((line, rec.iter().map(|s| s.trim().to_string()).collect()));
    }
    Ok(out)
}

fn field<T>(table: &'static str, line: usize, name: &str, value: &str, parsed: Option<T>) -> Result<T, TableError> {
    parsed.ok_or_else(|| TableError {
        table,
        line,
        problem: format!("bad {name} {value:?}"),
    })
}

fn priority(s: &str) -> Option<u8> {
    s.parse::<u8>().ok().filter(|p| (1..=9).contains(p))
}

/// Parse the SIA table text (exposed for tests of every row).
pub fn parse_sia_table(text: &str) -> Result<HashMap<SiaCode, SiaCodeInfo>, TableError> {
    const T: &str = "sia-codes.csv";
    let mut map = HashMap::new();
    for (line, r) in records(
        T,
        text,
        &["code", "category", "kind", "address", "priority", "description"],
    )? {
        let code = field(T, line, "code", &r[0], SiaCode::parse(&r[0]))?;
        let info = SiaCodeInfo {
            code,
            category: field(T, line, "category", &r[1], Category::parse(&r[1]))?,
            kind: field(T, line, "kind", &r[2], Kind::parse(&r[2]))?,
            address: field(T, line, "address", &r[3], AddressKind::parse(&r[3]))?,
            priority: field(T, line, "priority", &r[4], priority(&r[4]))?,
            description: field(
                T,
                line,
                "description",
                &r[5],
                Some(r[5].clone()).filter(|d| !d.is_empty()),
            )?,
        };
        if map.insert(code, info).is_some() {
            return Err(TableError {
                table: T,
                line,
                problem: format!("duplicate code {code}"),
            });
        }
    }
    Ok(map)
}

/// Parse the Contact ID table text (exposed for tests of every row).
pub fn parse_cid_table(text: &str) -> Result<HashMap<CidCode, CidCodeInfo>, TableError> {
    const T: &str = "cid-codes.csv";
    let mut map = HashMap::new();
    let header = [
        "code",
        "category",
        "kind_new",
        "kind_restore",
        "address",
        "priority",
        "sia_new",
        "sia_restore",
        "description",
    ];
    for (line, r) in records(T, text, &header)? {
        let code_ok = r[0].len() == 3 && r[0].bytes().all(|b| b.is_ascii_digit());
        let code = field(
            T,
            line,
            "code",
            &r[0],
            code_ok.then(|| r[0].parse::<u16>().ok()).flatten().map(CidCode),
        )?;
        let sia = |i: usize, name: &str| -> Result<Option<SiaCode>, TableError> {
            if r[i].is_empty() {
                Ok(None)
            } else {
                field(T, line, name, &r[i], SiaCode::parse(&r[i])).map(Some)
            }
        };
        let info = CidCodeInfo {
            code,
            category: field(T, line, "category", &r[1], Category::parse(&r[1]))?,
            kind_new: field(T, line, "kind_new", &r[2], Kind::parse(&r[2]))?,
            kind_restore: field(T, line, "kind_restore", &r[3], Kind::parse(&r[3]))?,
            address: field(T, line, "address", &r[4], AddressKind::parse(&r[4]))?,
            priority: field(T, line, "priority", &r[5], priority(&r[5]))?,
            sia_new: sia(6, "sia_new")?,
            sia_restore: sia(7, "sia_restore")?,
            description: field(
                T,
                line,
                "description",
                &r[8],
                Some(r[8].clone()).filter(|d| !d.is_empty()),
            )?,
        };
        if map.insert(code, info).is_some() {
            return Err(TableError {
                table: T,
                line,
                problem: format!("duplicate code {code}"),
            });
        }
    }
    Ok(map)
}

/// The SIA table, parsed on first use. A broken shipped table is a build defect caught by the
/// unit tests; at run time it degrades to an empty table (every code "unknown") rather than
/// taking the receiver down.
pub fn sia_table() -> &'static HashMap<SiaCode, SiaCodeInfo> {
    static T: OnceLock<HashMap<SiaCode, SiaCodeInfo>> = OnceLock::new();
    T.get_or_init(|| parse_sia_table(SIA_TABLE).unwrap_or_default())
}

/// The Contact ID table, parsed on first use (see [`sia_table`]).
pub fn cid_table() -> &'static HashMap<CidCode, CidCodeInfo> {
    static T: OnceLock<HashMap<CidCode, CidCodeInfo>> = OnceLock::new();
    T.get_or_init(|| parse_cid_table(CID_TABLE).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sia_row_is_valid() {
        let t = parse_sia_table(SIA_TABLE).expect("sia-codes.csv is valid");
        assert!(t.len() >= 150, "only {} SIA codes", t.len());
        for (code, info) in &t {
            assert_eq!(*code, info.code);
            // Restores never outrank the alarms they end.
            if matches!(info.kind, Kind::Restore | Kind::TroubleRestore | Kind::Unbypass) {
                assert_eq!(info.priority, 9, "{code} is a restore with priority {}", info.priority);
            }
        }
        assert_eq!(t.len(), sia_table().len());
    }

    #[test]
    fn every_cid_row_is_valid() {
        let t = parse_cid_table(CID_TABLE).expect("cid-codes.csv is valid");
        assert!(t.len() >= 150, "only {} Contact ID codes", t.len());
        for (code, info) in &t {
            assert_eq!(*code, info.code);
            assert!(code.0 < 1000);
            for s in [info.sia_new, info.sia_restore].into_iter().flatten() {
                assert!(s.as_str().bytes().all(|b| b.is_ascii_uppercase()));
            }
        }
        assert_eq!(t.len(), cid_table().len());
    }

    #[test]
    fn well_known_codes() {
        let ba = SiaCode::parse("BA").and_then(|c| c.info()).expect("BA known");
        assert_eq!(
            (ba.category, ba.kind, ba.address),
            (Category::Burglary, Kind::Alarm, AddressKind::Zone)
        );
        let op = SiaCode::parse("OP").and_then(|c| c.info()).expect("OP known");
        assert_eq!((op.kind, op.address), (Kind::Disarm, AddressKind::User));
        let cl = SiaCode::parse("CL").and_then(|c| c.info()).expect("CL known");
        assert_eq!(cl.kind, Kind::Arm);
        let duress = CidCode(121).info().expect("121 known");
        assert_eq!(
            (duress.category, duress.priority, duress.address),
            (Category::Duress, 1, AddressKind::User)
        );
        let burg = CidCode(130).info().expect("130 known");
        assert_eq!((burg.kind_new, burg.kind_restore), (Kind::Alarm, Kind::Restore));
        assert_eq!(burg.sia_new.map(|c| c.to_string()).as_deref(), Some("BA"));
        let oc = CidCode(401).info().expect("401 known");
        assert_eq!(
            (oc.kind_new, oc.kind_restore, oc.address),
            (Kind::Disarm, Kind::Arm, AddressKind::User)
        );
        assert_eq!(oc.sia_restore.map(|c| c.to_string()).as_deref(), Some("CL"));
        let fire = CidCode(110).info().expect("110 known");
        assert!(fire.priority < burg.priority);
    }

    /// The schedule categories are new names, parse back, and never join life-safety.
    #[test]
    fn schedule_categories_are_not_life_safety() {
        for c in SCHEDULE {
            assert_eq!(Category::parse(c.as_str()), Some(c));
            assert_eq!(c.life_safety_rank(), None, "{}", c.as_str());
            assert!(ALL_CATEGORIES.contains(&c));
        }
        let names: std::collections::HashSet<_> = ALL_CATEGORIES.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ALL_CATEGORIES.len());
    }

    #[test]
    fn unknown_codes_parse_and_print() {
        let zx = SiaCode::parse("ZX").expect("two capitals");
        assert_eq!(zx.to_string(), "ZX");
        assert!(zx.info().is_none());
        assert_eq!(CidCode(999).to_string(), "999");
        assert!(CidCode(999).info().is_none());
        assert_eq!(CidCode(7).to_string(), "007");
    }

    #[test]
    fn malformed_rows_are_named() {
        let bad = "code,category,kind,address,priority,description\nBA,burglary,alarm,zone,1,ok\nBB,nonsense,alarm,zone,1,x\n";
        let e = parse_sia_table(bad).expect_err("bad category");
        assert_eq!(e.line, 3);
        assert!(e.problem.contains("category"));
        let dup =
            "code,category,kind,address,priority,description\nBA,burglary,alarm,zone,1,a\nBA,burglary,alarm,zone,1,b\n";
        assert!(
            parse_sia_table(dup)
                .expect_err("duplicate")
                .problem
                .contains("duplicate")
        );
    }
}
