//! Reading records files: TOML and CSV rows into validated specs, every problem collected
//! (not only the first), duplicates found across all files of a run, references checked
//! against the import and the database. Columns and rules: `fixtures/records/README.md`.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use serde::Deserialize;

use super::problem::{
    Check, NAME_MAX, NOTES_MAX, PHONE_MAX, POSTCODE_MAX, Problem, REF_MAX, ROLE_MAX, STEP_MAX, printable, without_value,
};
use super::{
    AccountRecord, ContactSpec, CustomerSpec, ExceptionSpec, HolidaySpec, Origin, PriorityRuleSpec, ProcedureSpec,
    Records, ScheduleSpec, SiteSpec, UserSpec, WindowSpec, ZoneSpec,
};
use crate::correlate::norm_number;
use crate::correlate::schedule::plan::{self as sched, MAX_GRACE_MIN};
use crate::protocol::codes::Category;
use crate::protocol::crypto::{Key, KeyFormat};
use crate::protocol::frame::Quirks;
use crate::store::StoreError;
use crate::store::accounts::AccountSpec;

/// The zone types a zone may have (or none). What each means: `fixtures/records/README.md`.
pub const ZONE_TYPES: &[&str] = &[
    "entry/exit",
    "instant",
    "interior",
    "burglary",
    "24h",
    "fire",
    "hold-up",
    "panic",
    "medical",
    "environmental",
    "tamper",
    "technical",
    "key switch",
    "other",
];

/// A record kind: a TOML array of tables (`[[zone]]`) or a CSV file (`zones.csv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Customer,
    Site,
    Account,
    Zone,
    User,
    Contact,
    Procedure,
    PriorityRule,
    Schedule,
    ScheduleWindow,
    Holiday,
    ScheduleException,
}

pub(crate) const KINDS: [Kind; 12] = [
    Kind::Customer,
    Kind::Site,
    Kind::Account,
    Kind::Zone,
    Kind::User,
    Kind::Contact,
    Kind::Procedure,
    Kind::PriorityRule,
    Kind::Schedule,
    Kind::ScheduleWindow,
    Kind::Holiday,
    Kind::ScheduleException,
];

/// How a CSV cell is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cell {
    Text,
    /// `true`/`false` (also `yes`/`no`, `1`/`0`).
    Bool,
    /// A whole number.
    Int,
}

/// A CSV column: name, cell type, required.
pub(crate) type Column = (&'static str, Cell, bool);

impl Kind {
    /// The TOML table name.
    pub(crate) fn toml(self) -> &'static str {
        match self {
            Kind::Customer => "customer",
            Kind::Site => "site",
            Kind::Account => "account",
            Kind::Zone => "zone",
            Kind::User => "user",
            Kind::Contact => "contact",
            Kind::Procedure => "procedure",
            Kind::PriorityRule => "priority_rule",
            Kind::Schedule => "schedule",
            Kind::ScheduleWindow => "schedule_window",
            Kind::Holiday => "holiday",
            Kind::ScheduleException => "schedule_exception",
        }
    }

    /// The CSV file stem.
    pub(crate) fn csv(self) -> &'static str {
        match self {
            Kind::Customer => "customers",
            Kind::Site => "sites",
            Kind::Account => "accounts",
            Kind::Zone => "zones",
            Kind::User => "users",
            Kind::Contact => "contacts",
            Kind::Procedure => "procedures",
            Kind::PriorityRule => "priority_rules",
            Kind::Schedule => "schedules",
            Kind::ScheduleWindow => "schedule_windows",
            Kind::Holiday => "holidays",
            Kind::ScheduleException => "schedule_exceptions",
        }
    }

    /// The columns of its CSV file (documented in `fixtures/records/README.md`, which a test
    /// checks against this list).
    pub(crate) fn columns(self) -> &'static [Column] {
        use Cell::{Bool, Int, Text};
        match self {
            Kind::Customer => &[("ref", Text, true), ("name", Text, true), ("notes", Text, false)],
            Kind::Site => &[
                ("ref", Text, true),
                ("customer", Text, true),
                ("name", Text, false),
                ("address", Text, true),
                ("postcode", Text, false),
                ("city", Text, false),
                ("responder_notes", Text, false),
            ],
            Kind::Account => &[
                ("account", Text, true),
                ("site", Text, false),
                ("receiver", Text, false),
                ("line", Text, false),
                ("path", Text, false),
                ("key", Text, false),
                ("key_format", Text, false),
                ("require_encryption", Bool, false),
                ("quirks", Text, false),
                ("check_plain_timestamp", Bool, false),
                ("ack_separator", Bool, false),
                ("enabled", Bool, false),
                ("ats_category", Text, false),
                ("supervision_secs", Int, false),
            ],
            Kind::Zone => &[
                ("site", Text, true),
                ("number", Text, true),
                ("description", Text, true),
                ("type", Text, false),
            ],
            Kind::User => &[
                ("site", Text, true),
                ("number", Text, true),
                ("name", Text, true),
                ("role", Text, false),
            ],
            Kind::Contact => &[
                ("ref", Text, true),
                ("customer", Text, true),
                ("name", Text, true),
                ("phones", Text, false),
                ("call_order", Int, false),
                ("may_cancel", Bool, false),
            ],
            Kind::Procedure => &[
                ("customer", Text, false),
                ("category", Text, true),
                ("step", Int, true),
                ("instruction", Text, true),
                ("mandatory", Text, false),
            ],
            Kind::PriorityRule => &[
                ("customer", Text, false),
                ("category", Text, true),
                ("priority", Int, true),
            ],
            Kind::Schedule => &[
                ("site", Text, true),
                ("time_zone", Text, true),
                ("holidays", Text, false),
                ("late_to_close", Bool, false),
                ("unexpected_opening", Bool, false),
                ("late_to_open", Bool, false),
                ("early_close", Bool, false),
            ],
            Kind::ScheduleWindow => &[
                ("site", Text, true),
                ("days", Text, true),
                ("open", Text, true),
                ("close", Text, true),
                ("grace", Int, false),
            ],
            Kind::Holiday => &[("calendar", Text, true), ("date", Text, true), ("name", Text, false)],
            Kind::ScheduleException => &[
                ("site", Text, true),
                ("from", Text, true),
                ("to", Text, false),
                ("hours", Text, false),
                ("grace", Int, false),
                ("reason", Text, false),
            ],
        }
    }

    fn from_toml(name: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.toml() == name)
    }

    pub(crate) fn from_csv(stem: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.csv() == stem)
    }

    /// Names an entry from its raw fields, also when the row does not deserialize.
    fn what(self, get: &dyn Fn(&str) -> Option<String>) -> String {
        let of_customer = |s: String| match get("customer") {
            Some(c) => format!("{s} of customer {c}"),
            None => s,
        };
        let name = |noun: &str, key: &str| match get(key) {
            Some(v) => format!("{noun} {v}"),
            None => noun.to_string(),
        };
        let of_site = |s: String| match get("site") {
            Some(v) => format!("{s} of site {v}"),
            None => s,
        };
        match self {
            Kind::Customer => name("customer", "ref"),
            Kind::Site => name("site", "ref"),
            Kind::Account => name("account", "account"),
            Kind::Zone => of_site(name("zone", "number")),
            Kind::User => of_site(name("user", "number")),
            Kind::Contact => name("contact", "ref"),
            Kind::Procedure => of_customer(name("procedure", "category")),
            Kind::PriorityRule => of_customer(name("priority rule", "category")),
            Kind::Schedule => of_site("schedule".into()),
            Kind::ScheduleWindow => of_site(name("window", "days")),
            Kind::Holiday => match get("calendar") {
                Some(c) => format!("{} of calendar {c}", name("holiday", "date")),
                None => name("holiday", "date"),
            },
            Kind::ScheduleException => of_site(name("exception", "from")),
        }
    }

    /// The field whose value other rows refer to (declared even when the row has problems).
    fn declares(self) -> Option<&'static str> {
        match self {
            Kind::Customer | Kind::Site => Some("ref"),
            Kind::Schedule => Some("site"),
            Kind::Holiday => Some("calendar"),
            _ => None,
        }
    }
}

/// What reading gives: the valid records, every problem, and the customer and site references
/// that rows of the import name, valid or not (so that a zone of a site whose row has a
/// problem is not reported a second time as naming an unknown site).
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub(crate) records: Records,
    pub(crate) problems: Vec<Problem>,
    pub(crate) declared: HashMap<Kind, HashSet<String>>,
    /// CSV procedure steps, grouped into procedures when their file is done.
    steps: Vec<(Origin, ProcedureStepRow)>,
}

impl Parsed {
    fn declare(&mut self, kind: Kind, reference: Option<String>) {
        if kind.declares().is_some()
            && let Some(r) = reference
        {
            self.declared.entry(kind).or_default().insert(r.trim().to_string());
        }
    }

    /// A problem of the whole file, or of a line of it outside any entry.
    pub(crate) fn file_problem(&mut self, file: &str, line: usize, field: &str, problem: impl Into<String>) {
        self.problems.push(Problem {
            file: file.to_string(),
            line,
            what: String::new(),
            field: field.to_string(),
            problem: problem.into(),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Row shapes shared by TOML and CSV. A list is a TOML array or, in CSV, text split on ';'.

#[derive(Debug, Clone, Default)]
struct List(Vec<String>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Many(Vec<String>),
            One(String),
        }
        Ok(List(match Either::deserialize(d)? {
            Either::Many(v) => v,
            Either::One(s) => s
                .split(';')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
        }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerRow {
    #[serde(rename = "ref")]
    reference: String,
    name: String,
    #[serde(default)]
    notes: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteRow {
    #[serde(rename = "ref")]
    reference: String,
    customer: String,
    #[serde(default)]
    name: String,
    address: String,
    #[serde(default)]
    postcode: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    responder_notes: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountRow {
    account: String,
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    receiver: String,
    #[serde(default)]
    line: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_format: Option<String>,
    /// Default: true when a key is given (a keyed account refuses plain frames unless this is
    /// explicitly false, e.g. during a migration window).
    #[serde(default)]
    require_encryption: Option<bool>,
    #[serde(default)]
    quirks: List,
    #[serde(default)]
    check_plain_timestamp: bool,
    #[serde(default)]
    ack_separator: bool,
    #[serde(default)]
    enabled: Option<bool>,
    /// EN 50136 category (SP1…SP6, DP1…DP4).
    #[serde(default)]
    ats_category: Option<String>,
    #[serde(default)]
    supervision_secs: Option<u64>,
}

// The key must never show up in a Debug print of a row.
impl std::fmt::Debug for AccountRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRow")
            .field("account", &self.account)
            .field("site", &self.site)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneRow {
    site: String,
    number: String,
    description: String,
    #[serde(default, rename = "type")]
    zone_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRow {
    site: String,
    number: String,
    name: String,
    #[serde(default)]
    role: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactRow {
    #[serde(rename = "ref")]
    reference: String,
    customer: String,
    name: String,
    #[serde(default)]
    phones: List,
    #[serde(default)]
    call_order: Option<i64>,
    #[serde(default)]
    may_cancel: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcedureRow {
    #[serde(default)]
    customer: Option<String>,
    category: String,
    steps: List,
    #[serde(default)]
    mandatory: Vec<u32>,
}

/// CSV has one row per step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcedureStepRow {
    #[serde(default)]
    customer: Option<String>,
    category: String,
    step: u32,
    instruction: String,
    #[serde(default)]
    mandatory: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriorityRuleRow {
    #[serde(default)]
    customer: Option<String>,
    category: String,
    priority: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleRow {
    site: String,
    time_zone: String,
    #[serde(default)]
    holidays: Option<String>,
    #[serde(default)]
    late_to_close: Option<bool>,
    #[serde(default)]
    unexpected_opening: Option<bool>,
    #[serde(default)]
    late_to_open: Option<bool>,
    #[serde(default)]
    early_close: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowRow {
    site: String,
    days: String,
    open: String,
    close: String,
    #[serde(default)]
    grace: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayRow {
    calendar: String,
    date: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionRow {
    site: String,
    from: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    hours: List,
    #[serde(default)]
    grace: Option<i64>,
    #[serde(default)]
    reason: String,
}

// ---------------------------------------------------------------------------------------------
// Validation: rows to specs, every problem of a row at once.

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `zone 3`, or `zone` when the number is missing.
fn named(noun: &str, id: &str) -> String {
    match id.trim() {
        "" => noun.to_string(),
        id => format!("{noun} {id}"),
    }
}

fn of_site(entry: String, site: &str) -> String {
    match site.trim() {
        "" => entry,
        site => format!("{entry} of site {site}"),
    }
}

fn opt(s: Option<String>) -> Option<String> {
    s.map(|x| x.trim().to_string()).filter(|x| !x.is_empty())
}

fn category(c: &mut Check<'_>, s: &str) -> Option<Category> {
    let found = Category::parse(s.trim());
    if found.is_none() {
        let all: Vec<&str> = crate::protocol::codes::ALL_CATEGORIES
            .iter()
            .map(|c| c.as_str())
            .collect();
        c.bad(
            "category",
            format!("{:?} is not a category ({})", printable(s), all.join(", ")),
        );
    }
    found
}

/// A customer reference that may be absent (procedures and priority rules: the default set).
fn optional_ref(c: &mut Check<'_>, field: &str, v: Option<String>) -> Option<String> {
    opt(v).map(|r| c.required(field, &r, REF_MAX))
}

/// A zone or user number as the panel reports it: digits only, 0 to 9999; leading zeros do
/// not count (`003` is 3). Contact ID sends three digits (000–999); SIA-DCS sends the digits
/// after the event code (`BA0012`: zone 12), and the parser takes digits only
/// (`protocols/sia-dcs.md` §4); four digits cover the zones and users of the panels we know.
fn panel_number(c: &mut Check<'_>, noun: &str, v: &str) -> String {
    let t = v.trim();
    if t.is_empty() {
        c.bad("number", "must not be empty");
    } else if t.len() > 8 || !t.bytes().all(|b| b.is_ascii_digit()) || norm_number(t).len() > 4 {
        c.bad(
            "number",
            format!("a {noun} number is digits only, 0 to 9999 (leading zeros are ignored: 003 is 3)"),
        );
    }
    norm_number(t)
}

fn zone_type(c: &mut Check<'_>, v: &str) -> String {
    let t = v.trim();
    if t.is_empty() {
        return String::new();
    }
    match ZONE_TYPES.iter().find(|z| z.eq_ignore_ascii_case(t)) {
        Some(z) => z.to_string(),
        None => {
            c.bad(
                "type",
                format!("{:?} is not a zone type ({})", printable(t), ZONE_TYPES.join(", ")),
            );
            String::new()
        }
    }
}

fn customer(o: Origin, r: CustomerRow, out: &mut Vec<Problem>) -> Option<CustomerSpec> {
    let mut c = Check::new(&o.file, o.line, named("customer", &r.reference));
    let spec = CustomerSpec {
        reference: c.required("ref", &r.reference, REF_MAX),
        name: c.required("name", &r.name, NAME_MAX),
        notes: c.notes("notes", &r.notes, NOTES_MAX),
        origin: o.clone(),
    };
    c.finish(out, spec)
}

fn site(o: Origin, r: SiteRow, out: &mut Vec<Problem>) -> Option<SiteSpec> {
    let mut c = Check::new(&o.file, o.line, named("site", &r.reference));
    let spec = SiteSpec {
        reference: c.required("ref", &r.reference, REF_MAX),
        customer: c.required("customer", &r.customer, REF_MAX),
        name: c.optional("name", &r.name, NAME_MAX),
        address: c.required("address", &r.address, NAME_MAX),
        postcode: c.optional("postcode", &r.postcode, POSTCODE_MAX),
        city: c.optional("city", &r.city, NAME_MAX),
        responder_notes: c.notes("responder_notes", &r.responder_notes, NOTES_MAX),
        origin: o.clone(),
    };
    c.finish(out, spec)
}

fn account(o: Origin, row: AccountRow, out: &mut Vec<Problem>) -> Option<AccountRecord> {
    let mut c = Check::new(&o.file, o.line, named("account", &row.account));
    if !(3..=16).contains(&row.account.len()) || !is_hex(&row.account) {
        c.bad("account", "must be 3 to 16 hex digits (0-9, A-F)");
    }
    if !row.receiver.is_empty() && (row.receiver.len() > 6 || !is_hex(&row.receiver)) {
        c.bad("receiver", "must be 1 to 6 hex digits, or empty for any");
    }
    if !row.line.is_empty() && (row.line.len() > 6 || !is_hex(&row.line)) {
        c.bad("line", "must be 1 to 6 hex digits, or empty for any");
    }
    let site = optional_ref(&mut c, "site", row.site);
    let key_format = opt(row.key_format);
    let format = match key_format.as_deref() {
        None | Some("hex") => Some(KeyFormat::Hex),
        Some("ascii") => Some(KeyFormat::Ascii),
        Some(other) => {
            c.bad(
                "key_format",
                format!("{:?} is not \"hex\" or \"ascii\"", printable(other)),
            );
            None
        }
    };
    let key_text = opt(row.key);
    let key = match (&key_text, format) {
        (Some(k), Some(format)) => match Key::parse(k, format) {
            Ok(k) => Some(k),
            Err(e) => {
                c.bad("key", e.to_string());
                None
            }
        },
        (None, _) if key_format.is_some() => {
            c.bad("key_format", "given without a key");
            None
        }
        _ => None,
    };
    let require_encryption = row.require_encryption.unwrap_or(key_text.is_some());
    if require_encryption && key_text.is_none() {
        c.bad("require_encryption", "needs a key");
    }
    let mut quirks = Quirks::NONE;
    for q in &row.quirks.0 {
        match q.as_str() {
            "crc_binary" => quirks.crc_binary = true,
            "cr_in_crc" => quirks.cr_in_crc = true,
            "trailing_nul" => quirks.trailing_nul = true,
            other => c.bad(
                "quirks",
                format!(
                    "unknown quirk {:?} (known: crc_binary, cr_in_crc, trailing_nul)",
                    printable(other)
                ),
            ),
        }
    }
    let path = opt(row.path).unwrap_or_else(|| "primary".to_string());
    if path != "primary" && path != "secondary" {
        c.bad(
            "path",
            format!("{:?} is not \"primary\" or \"secondary\"", printable(&path)),
        );
    }
    let ats_category = opt(row.ats_category).map(|c| c.to_ascii_uppercase());
    if let Some(cat) = &ats_category
        && crate::correlate::supervision::ats_reporting_secs(cat, false).is_none()
    {
        c.bad(
            "ats_category",
            format!("{:?} is not SP1…SP6 or DP1…DP4", printable(cat)),
        );
    }
    if row.supervision_secs == Some(0) {
        c.bad("supervision_secs", "must be greater than 0");
    }
    let record = AccountRecord {
        site,
        spec: AccountSpec {
            account: row.account,
            receiver: row.receiver,
            line: row.line,
            key,
            require_encryption,
            quirks,
            check_plain_timestamp: row.check_plain_timestamp,
            ack_separator: row.ack_separator,
            enabled: row.enabled.unwrap_or(true),
            site_id: None,
            path,
            ats_category,
            supervision_secs: row.supervision_secs,
            created_ms: 0,
        },
        origin: o.clone(),
    };
    c.finish(out, record)
}

fn zone(o: Origin, r: ZoneRow, out: &mut Vec<Problem>) -> Option<ZoneSpec> {
    let mut c = Check::new(&o.file, o.line, of_site(named("zone", &r.number), &r.site));
    let spec = ZoneSpec {
        site: c.required("site", &r.site, REF_MAX),
        number: panel_number(&mut c, "zone", &r.number),
        description: c.required("description", &r.description, NAME_MAX),
        zone_type: zone_type(&mut c, &r.zone_type),
        origin: o.clone(),
    };
    c.finish(out, spec)
}

fn user(o: Origin, r: UserRow, out: &mut Vec<Problem>) -> Option<UserSpec> {
    let mut c = Check::new(&o.file, o.line, of_site(named("user", &r.number), &r.site));
    let spec = UserSpec {
        site: c.required("site", &r.site, REF_MAX),
        number: panel_number(&mut c, "user", &r.number),
        name: c.required("name", &r.name, NAME_MAX),
        role: c.optional("role", &r.role, ROLE_MAX),
        origin: o.clone(),
    };
    c.finish(out, spec)
}

fn contact(o: Origin, r: ContactRow, out: &mut Vec<Problem>) -> Option<ContactSpec> {
    let mut c = Check::new(&o.file, o.line, named("contact", &r.reference));
    let call_order = r.call_order.unwrap_or(1);
    if call_order < 1 {
        c.bad("call_order", "must be 1 or more");
    }
    for p in &r.phones.0 {
        let digits = p.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c));
        if !digits || !p.chars().any(|c| c.is_ascii_digit()) || p.chars().count() > PHONE_MAX {
            c.bad(
                "phones",
                format!(
                    "{:?} is not a phone number (digits, spaces, + - ( ), at most {PHONE_MAX} characters)",
                    printable(p)
                ),
            );
        }
    }
    let spec = ContactSpec {
        reference: c.required("ref", &r.reference, REF_MAX),
        customer: c.required("customer", &r.customer, REF_MAX),
        name: c.required("name", &r.name, NAME_MAX),
        phones: r.phones.0,
        call_order,
        may_cancel: r.may_cancel,
        origin: o.clone(),
    };
    c.finish(out, spec)
}

fn procedure(o: Origin, p: ProcedureRow, out: &mut Vec<Problem>) -> Option<ProcedureSpec> {
    let mut c = Check::new(&o.file, o.line, named("procedure", &p.category));
    let customer = optional_ref(&mut c, "customer", p.customer);
    let category = category(&mut c, &p.category);
    if p.steps.0.is_empty() {
        c.bad("steps", "at least one step");
    }
    for s in &p.steps.0 {
        c.required("steps", s, STEP_MAX);
    }
    if let Some(bad) = p.mandatory.iter().find(|n| **n == 0 || **n as usize > p.steps.0.len()) {
        c.bad(
            "mandatory",
            format!(
                "step {bad} does not exist (steps are numbered 1 to {})",
                p.steps.0.len()
            ),
        );
    }
    let mut mandatory = p.mandatory;
    mandatory.sort_unstable();
    mandatory.dedup();
    let spec = category.map(|category| ProcedureSpec {
        customer,
        category,
        steps: p.steps.0.iter().map(|s| s.trim().to_string()).collect(),
        mandatory,
        origin: o.clone(),
    });
    c.finish(out, spec).flatten()
}

fn priority_rule(o: Origin, r: PriorityRuleRow, out: &mut Vec<Problem>) -> Option<PriorityRuleSpec> {
    let mut c = Check::new(&o.file, o.line, named("priority rule", &r.category));
    if !(1..=9).contains(&r.priority) {
        c.bad("priority", "must be 1 (most urgent) to 9");
    }
    let customer = optional_ref(&mut c, "customer", r.customer);
    let spec = category(&mut c, &r.category).map(|category| PriorityRuleSpec {
        customer,
        category,
        priority: r.priority,
        origin: o.clone(),
    });
    c.finish(out, spec).flatten()
}

fn grace(c: &mut Check<'_>, v: Option<i64>) -> u16 {
    match v {
        None => 0,
        Some(g) if (0..=i64::from(MAX_GRACE_MIN)).contains(&g) => g as u16,
        Some(_) => {
            c.bad("grace", format!("minutes, 0 to {MAX_GRACE_MIN}"));
            0
        }
    }
}

fn date(c: &mut Check<'_>, field: &str, v: &str) -> Option<jiff::civil::Date> {
    let t = v.trim();
    let d = (t.len() == 10).then(|| t.parse::<jiff::civil::Date>().ok()).flatten();
    if d.is_none() {
        c.bad(field, format!("{:?} is not a date (YYYY-MM-DD)", printable(t)));
    }
    d
}

fn schedule(o: Origin, r: ScheduleRow, out: &mut Vec<Problem>) -> Option<ScheduleSpec> {
    let mut c = Check::new(&o.file, o.line, of_site("schedule".into(), &r.site));
    let site = c.required("site", &r.site, REF_MAX);
    let zone = r.time_zone.trim().to_string();
    if jiff::tz::TimeZone::get(&zone).is_err() {
        c.bad(
            "time_zone",
            format!(
                "{:?} is not a time zone (an IANA name such as \"Europe/Amsterdam\")",
                printable(&zone)
            ),
        );
    }
    let holidays = optional_ref(&mut c, "holidays", r.holidays);
    let d = sched::Checks::default();
    let spec = ScheduleSpec {
        site,
        time_zone: zone,
        holidays,
        checks: sched::Checks {
            late_to_close: r.late_to_close.unwrap_or(d.late_to_close),
            unexpected_opening: r.unexpected_opening.unwrap_or(d.unexpected_opening),
            late_to_open: r.late_to_open.unwrap_or(d.late_to_open),
            early_close: r.early_close.unwrap_or(d.early_close),
        },
        origin: o.clone(),
    };
    c.finish(out, spec)
}

fn window(o: Origin, r: WindowRow, out: &mut Vec<Problem>) -> Option<WindowSpec> {
    let mut c = Check::new(&o.file, o.line, of_site(named("window", &r.days), &r.site));
    let site = c.required("site", &r.site, REF_MAX);
    let days = sched::parse_days(&r.days);
    if days.is_none() {
        c.bad(
            "days",
            format!(
                "{:?} is not a set of days (mon-fri, sat;sun, daily, mon,wed)",
                printable(&r.days)
            ),
        );
    }
    let open = sched::parse_clock(&r.open, false);
    if open.is_none() {
        c.bad(
            "open",
            format!("{:?} is not a time of day (HH:MM, 00:00 to 23:59)", printable(&r.open)),
        );
    }
    let close = sched::parse_clock(&r.close, true);
    if close.is_none() {
        c.bad(
            "close",
            format!("{:?} is not a time of day (HH:MM, 00:00 to 24:00)", printable(&r.close)),
        );
    }
    let hours = match (open, close) {
        (Some(open), Some(close)) => {
            let h = sched::parse_hours(&format!("{}-{}", r.open.trim(), r.close.trim()));
            if h.is_none() {
                c.bad(
                    "close",
                    format!(
                        "the same time as the open ({}): a window of a whole day is 00:00 to 24:00",
                        sched::clock_text(open)
                    ),
                );
            }
            h.map(|_| sched::Hours { open, close })
        }
        _ => None,
    };
    let grace = grace(&mut c, r.grace);
    let spec = match (days, hours) {
        (Some(days), Some(hours)) => Some(WindowSpec {
            site,
            window: sched::WeeklyWindow { days, hours, grace },
            origin: o.clone(),
        }),
        _ => None,
    };
    c.finish(out, spec).flatten()
}

fn holiday(o: Origin, r: HolidayRow, out: &mut Vec<Problem>) -> Option<HolidaySpec> {
    let what = format!("{} of calendar {}", named("holiday", &r.date), r.calendar.trim());
    let mut c = Check::new(&o.file, o.line, what);
    let calendar = c.required("calendar", &r.calendar, REF_MAX);
    let d = date(&mut c, "date", &r.date);
    let name = c.optional("name", &r.name, NAME_MAX);
    let spec = d.map(|date| HolidaySpec {
        calendar,
        date,
        name,
        origin: o.clone(),
    });
    c.finish(out, spec).flatten()
}

fn exception(o: Origin, r: ExceptionRow, out: &mut Vec<Problem>) -> Option<ExceptionSpec> {
    let mut c = Check::new(&o.file, o.line, of_site(named("exception", &r.from), &r.site));
    let site = c.required("site", &r.site, REF_MAX);
    let from = date(&mut c, "from", &r.from);
    let to = match opt(r.to) {
        Some(t) => date(&mut c, "to", &t),
        None => from,
    };
    if let (Some(f), Some(t)) = (from, to) {
        if t < f {
            c.bad("to", "before from");
        } else if (t - f).get_days() > 366 {
            c.bad("to", "at most 366 days after from");
        }
    }
    let mut hours = Vec::new();
    for h in &r.hours.0 {
        match sched::parse_hours(h) {
            Some(x) => hours.push(x),
            None => c.bad(
                "hours",
                format!(
                    "{:?} is not opening hours (HH:MM-HH:MM; leave empty for closed)",
                    printable(h)
                ),
            ),
        }
    }
    let grace = grace(&mut c, r.grace);
    let reason = c.optional("reason", &r.reason, NAME_MAX);
    let spec = match (from, to) {
        (Some(from), Some(to)) => Some(ExceptionSpec {
            site,
            exception: sched::Exception { from, to, hours, grace },
            reason,
            origin: o.clone(),
        }),
        _ => None,
    };
    c.finish(out, spec).flatten()
}

/// CSV procedure steps, grouped by (customer, category) and ordered by step number.
fn group_steps(out: &mut Parsed) {
    type Group = (Origin, Option<String>, Category, Vec<(u32, String, bool)>);
    let mut groups: Vec<Group> = Vec::new();
    for (o, row) in std::mem::take(&mut out.steps) {
        let mut c = Check::new(&o.file, o.line, format!("procedure {} step {}", row.category, row.step));
        let cust = optional_ref(&mut c, "customer", row.customer);
        let cat = category(&mut c, &row.category);
        let instruction = c.required("instruction", &row.instruction, STEP_MAX);
        let mandatory = match row.mandatory.as_deref().map(str::trim) {
            None | Some("") | Some("no") | Some("false") | Some("0") => false,
            Some("yes") | Some("true") | Some("1") => true,
            Some(other) => {
                c.bad("mandatory", format!("{:?} is not yes or no", printable(other)));
                false
            }
        };
        if let Some(cat) = cat
            && groups
                .iter()
                .any(|g| g.1 == cust && g.2 == cat && g.3.iter().any(|s| s.0 == row.step))
        {
            c.bad("step", format!("step {} listed twice in this procedure", row.step));
        }
        let ok = c.finish(&mut out.problems, ()).is_some();
        let (Some(cat), true) = (cat, ok) else {
            continue;
        };
        let step = (row.step, instruction, mandatory);
        match groups.iter_mut().find(|g| g.1 == cust && g.2 == cat) {
            Some(g) => g.3.push(step),
            None => groups.push((o, cust, cat, vec![step])),
        }
    }
    for (o, customer, category, mut steps) in groups {
        steps.sort_by_key(|s| s.0);
        out.records.procedures.push(ProcedureSpec {
            origin: o,
            customer,
            category,
            mandatory: (1..).zip(&steps).filter(|(_, s)| s.2).map(|(n, _)| n).collect(),
            steps: steps.into_iter().map(|s| s.1).collect(),
        });
    }
}

/// A deserialized row of `kind`, validated into `out`.
fn accept<'de, D: serde::Deserializer<'de>>(
    kind: Kind,
    de: D,
    o: Origin,
    csv: bool,
    out: &mut Parsed,
) -> Result<(), D::Error> {
    fn go<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(de: D) -> Result<T, D::Error> {
        T::deserialize(de)
    }
    let p = &mut out.problems;
    let r = &mut out.records;
    match kind {
        Kind::Customer => r.customers.extend(customer(o, go(de)?, p)),
        Kind::Site => r.sites.extend(site(o, go(de)?, p)),
        Kind::Account => r.accounts.extend(account(o, go(de)?, p)),
        Kind::Zone => r.zones.extend(zone(o, go(de)?, p)),
        Kind::User => r.users.extend(user(o, go(de)?, p)),
        Kind::Contact => r.contacts.extend(contact(o, go(de)?, p)),
        // A TOML procedure is one table; a CSV procedure is one row per step.
        Kind::Procedure if csv => out.steps.push((o, go(de)?)),
        Kind::Procedure => r.procedures.extend(procedure(o, go(de)?, p)),
        Kind::PriorityRule => r.priority_rules.extend(priority_rule(o, go(de)?, p)),
        Kind::Schedule => r.schedules.extend(schedule(o, go(de)?, p)),
        Kind::ScheduleWindow => r.windows.extend(window(o, go(de)?, p)),
        Kind::Holiday => r.holidays.extend(holiday(o, go(de)?, p)),
        Kind::ScheduleException => r.exceptions.extend(exception(o, go(de)?, p)),
    }
    Ok(())
}

/// A serde message as field and problem: `missing field `x`` names field x.
fn serde_problem(message: &str) -> (Option<String>, String) {
    let quoted = |rest: &str| rest.split('`').next().map(str::to_string);
    if let Some(rest) = message.strip_prefix("missing field `") {
        return (quoted(rest), "missing".into());
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let known = rest.split_once("expected ").map_or("", |x| x.1);
        return (
            quoted(rest),
            format!(
                "unknown field (known: {})",
                known.replace("one of ", "").replace('`', "")
            ),
        );
    }
    (None, without_value(message))
}

// ---------------------------------------------------------------------------------------------
// TOML.

/// Line numbers by byte offset, for every row of a large file: the newline offsets are found
/// once, then each lookup is a binary search. (Counting from the start of the text for every
/// row made a 100,000-account import quadratic: minutes instead of seconds.)
pub(crate) struct LineIndex(Vec<usize>);

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        LineIndex(
            text.bytes()
                .enumerate()
                .filter_map(|(i, b)| (b == b'\n').then_some(i))
                .collect(),
        )
    }

    /// The 1-based line of byte offset `at`.
    pub(crate) fn line(&self, at: usize) -> usize {
        self.0.partition_point(|nl| *nl < at) + 1
    }
}

/// Read a TOML records file into `out`. A syntax error stops the file (what follows it cannot
/// be read reliably); every other problem is collected, each row on its own.
///
/// A large file is parsed in parts of about [`PART_ENTRIES`] entries ([`toml_parts`]): the
/// parsed tree of a whole file of a million customers, sites and accounts took 7 GiB and most
/// of the import's time went to faulting in its pages. A part holds whole entries and parses
/// exactly as it would within the file. If any part does not parse, the whole file is read
/// again in one piece, so a syntax error is reported as it is in one piece (and where a part
/// was cut wrongly, the file still reads as it should).
pub(crate) fn read_toml(text: &str, file: &str, out: &mut Parsed) {
    read_toml_in_parts(text, file, out, PART_ENTRIES);
}

/// [`read_toml`] in parts of about `entries` entries.
fn read_toml_in_parts(text: &str, file: &str, out: &mut Parsed, entries: usize) {
    let lines = LineIndex::new(text);
    let parts = toml_parts(text, entries);
    if parts.len() > 1 {
        let mut read = Parsed::default();
        let whole = parts.iter().enumerate().all(|(i, &start)| {
            let end = parts.get(i + 1).copied().unwrap_or(text.len());
            read_toml_part(&text[start..end], start, file, &lines, &mut read)
        });
        if whole {
            out.records.extend(read.records);
            out.problems.extend(read.problems);
            for (kind, refs) in read.declared {
                out.declared.entry(kind).or_default().extend(refs);
            }
            return;
        }
    }
    read_toml_part(text, 0, file, &lines, out);
}

/// A key as written in the file, without the quotes of a quoted key (`"ref"`, `'ref'`).
fn key_text(raw: &str) -> String {
    let t = raw.trim();
    t.strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .or_else(|| t.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')))
        .unwrap_or(t)
        .to_string()
}

/// Entries per part of a TOML file (see [`read_toml`]).
const PART_ENTRIES: usize = 10_000;

/// Where a TOML text may be cut into parts that each hold whole entries: the byte offsets of
/// the parts' starts (the first is 0), a part about every `entries` top-level `[[name]]`
/// headers. A cut is made only before a line that is such a header (a bare name, no dots)
/// outside every string, comment and array, so that what follows a cut parses on its own as
/// it would in the whole text: the keys before the first header are in the first part, and a
/// sub-table (`[name.x]`, `[[name.x]]`) stays with its entry.
pub(crate) fn toml_parts(text: &str, entries: usize) -> Vec<usize> {
    let b = text.as_bytes();
    let mut cuts = vec![0];
    let mut headers = 0usize;
    // Open arrays (and inline tables) of the value being read.
    let mut depth = 0i64;
    // The closing delimiter of the multi-line string being read.
    let mut multi: Option<&[u8]> = None;
    let mut i = 0;
    while i < b.len() {
        // At the start of a line.
        if multi.is_none() && depth == 0 {
            let line_end = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| i + n);
            let line = &text[i..line_end];
            let head = line.trim_start_matches([' ', '\t']);
            if head.starts_with('[') {
                // A table header holds no value: nothing in it opens a string or an array.
                if is_entry_header(head) {
                    headers += 1;
                    if headers > entries {
                        cuts.push(i);
                        headers = 1;
                    }
                }
                i = line_end + 1;
                continue;
            }
        }
        // The rest of the line (of a multi-line string: up to its end).
        while i < b.len() {
            if let Some(close) = multi {
                if b[i..].starts_with(close) {
                    i += 3;
                    // Up to two more quotes belong to the string (`""""` ends it with one).
                    let mut more = 0;
                    while more < 2 && i < b.len() && b[i] == close[0] {
                        i += 1;
                        more += 1;
                    }
                    multi = None;
                } else if close[0] == b'"' && b[i] == b'\\' {
                    i += 2;
                } else {
                    i += 1;
                }
                continue;
            }
            match b[i] {
                b'\n' => {
                    i += 1;
                    break;
                }
                b'#' => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                q @ (b'"' | b'\'') => {
                    if b[i..].starts_with(if q == b'"' { b"\"\"\"" } else { b"'''" }) {
                        multi = Some(if q == b'"' { b"\"\"\"" } else { b"'''" });
                        i += 3;
                        continue;
                    }
                    // A one-line string: to its closing quote, never past the line's end.
                    i += 1;
                    while i < b.len() && b[i] != q && b[i] != b'\n' {
                        if q == b'"' && b[i] == b'\\' && b.get(i + 1).is_some_and(|&c| c != b'\n') {
                            i += 1;
                        }
                        i += 1;
                    }
                    if b.get(i) == Some(&q) {
                        i += 1;
                    }
                }
                b'[' | b'{' => {
                    depth += 1;
                    i += 1;
                }
                b']' | b'}' => {
                    depth -= 1;
                    i += 1;
                }
                _ => i += 1,
            }
        }
    }
    cuts
}

/// `[[name]]` with a bare name (letters, digits, `_`, `-`), spaces allowed, a comment after.
fn is_entry_header(head: &str) -> bool {
    let Some(rest) = head.strip_prefix("[[") else {
        return false;
    };
    let Some((name, after)) = rest.split_once("]]") else {
        return false;
    };
    let name = name.trim_matches([' ', '\t']);
    let after = after.trim_matches([' ', '\t', '\r']);
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        && (after.is_empty() || after.starts_with('#'))
}

/// Read `part`, which starts at byte `offset` of the file whose lines are `lines`. A syntax
/// error stops it (reported, returns false).
fn read_toml_part(part: &str, offset: usize, file: &str, lines: &LineIndex, out: &mut Parsed) -> bool {
    use toml::de::{DeTable, DeValue, ValueDeserializer};
    let line_of = |at: usize| lines.line(offset + at);
    let (table, errors) = DeTable::parse_recoverable(part);
    // toml's Display quotes the offending source line, which may hold a secret (a key, or a
    // code someone tried to import): the line number and the message only. The first error
    // only: the parser's recovery reports follow-on errors that would mislead.
    if let Some(e) = errors.iter().min_by_key(|e| e.span().map_or(0, |s| s.start)) {
        let line = e.span().map_or(1, |s| line_of(s.start));
        out.file_problem(
            file,
            line,
            "",
            format!("not valid TOML: {} (the rest of the file is not checked)", e.message()),
        );
        return false;
    }
    for (key, value) in table.into_inner() {
        let name = key.get_ref().to_string();
        let Some(kind) = Kind::from_toml(&name) else {
            let known: Vec<String> = KINDS.iter().map(|k| format!("[[{}]]", k.toml())).collect();
            out.file_problem(
                file,
                line_of(key.span().start),
                &printable(&name),
                format!("unknown record kind (known: {})", known.join(", ")),
            );
            continue;
        };
        let at = line_of(value.span().start);
        let DeValue::Array(rows) = value.into_inner() else {
            out.file_problem(
                file,
                at,
                &name,
                format!("must be an array of tables: [[{name}]] before each entry"),
            );
            continue;
        };
        for row in rows {
            let line = line_of(row.span().start);
            let Some(table) = row.get_ref().as_table() else {
                out.file_problem(file, line, &name, "each entry must be a table");
                continue;
            };
            let get = |k: &str| {
                table
                    .get(k)
                    .and_then(|v| v.get_ref().as_str())
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            };
            let what = printable(&kind.what(&get));
            let reference = kind.declares().and_then(get);
            // The span of every key and of its value, to name the field of an error that gives
            // only a span (the name is read from the text then: the row is consumed by the
            // deserializer).
            let fields: Vec<(Range<usize>, Range<usize>)> = table.iter().map(|(k, v)| (k.span(), v.span())).collect();
            out.declare(kind, reference);
            let o = Origin {
                file: file.to_string(),
                line,
            };
            if let Err(e) = accept(kind, ValueDeserializer::from(row), o, false, out) {
                let (named, problem) = serde_problem(e.message());
                let within = |s: &Range<usize>, r: &Range<usize>| r.start <= s.start && s.end <= r.end;
                let field = named.or_else(|| {
                    let span = e.span()?;
                    fields
                        .iter()
                        .find(|(k, v)| within(&span, k) || within(&span, v))
                        .and_then(|(k, _)| part.get(k.clone()))
                        .map(key_text)
                });
                out.problems.push(Problem {
                    file: file.to_string(),
                    line: e.span().map_or(line, |s| line_of(s.start)),
                    what,
                    field: printable(&field.unwrap_or_default()),
                    problem,
                });
            }
        }
    }
    true
}
// ---------------------------------------------------------------------------------------------
// CSV.

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// Read a CSV records file of `kind` into `out`: the header first (unknown, repeated and
/// missing columns), then every row.
pub(crate) fn read_csv(text: &str, file: &str, kind: Kind, out: &mut Parsed) {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let columns = kind.columns();
    let names = || columns.iter().map(|c| c.0).collect::<Vec<_>>().join(", ");
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            out.file_problem(file, 1, "", format!("not a CSV header line: {}", csv_problem(&e)));
            return;
        }
    };
    let before = out.problems.len();
    for (i, h) in headers.iter().enumerate() {
        if !columns.iter().any(|c| c.0 == h) {
            out.file_problem(
                file,
                1,
                &printable(h),
                format!("unknown column (the columns of {}.csv: {})", kind.csv(), names()),
            );
        } else if headers.iter().take(i).any(|x| x == h) {
            out.file_problem(file, 1, h, "column given twice");
        }
    }
    for (name, _, required) in columns {
        if *required && !headers.iter().any(|h| h == *name) {
            out.file_problem(file, 1, name, "required column missing");
        }
    }
    if out.problems.len() > before {
        // Every row would repeat the header's problem.
        return;
    }
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                out.file_problem(file, line, "", csv_problem(&e));
                continue;
            }
        };
        let line = rec.position().map_or(0, |p| p.line() as usize);
        let get = |k: &str| {
            headers
                .iter()
                .position(|h| h == k)
                .and_then(|i| rec.get(i))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let what = printable(&kind.what(&get));
        out.declare(kind, kind.declares().and_then(get));
        let mut c = Check::new(file, line, what.clone());
        // Empty cells are absent values, not empty strings.
        let mut map = serde_json::Map::new();
        for (h, v) in headers.iter().zip(rec.iter()) {
            let Some((_, cell, required)) = columns.iter().find(|c| c.0 == h) else {
                continue;
            };
            if v.is_empty() {
                if *required {
                    c.bad(h, "must not be empty");
                }
                continue;
            }
            let value = match cell {
                Cell::Text => serde_json::Value::String(v.to_string()),
                Cell::Bool => match parse_bool(v) {
                    Some(b) => serde_json::Value::Bool(b),
                    None => {
                        c.bad(h, "must be true or false (or yes/no, 1/0)");
                        continue;
                    }
                },
                Cell::Int => match v.parse::<i64>() {
                    Ok(n) => serde_json::Value::from(n),
                    Err(_) => {
                        c.bad(h, "must be a whole number");
                        continue;
                    }
                },
            };
            map.insert(h.to_string(), value);
        }
        if c.finish(&mut out.problems, ()).is_none() {
            continue;
        }
        let o = Origin {
            file: file.to_string(),
            line,
        };
        if let Err(e) = accept(kind, serde_json::Value::Object(map), o, true, out) {
            let (field, problem) = serde_problem(&e.to_string());
            out.problems.push(Problem {
                file: file.to_string(),
                line,
                what,
                field: field.unwrap_or_default(),
                problem,
            });
        }
    }
    if kind == Kind::Procedure {
        group_steps(out);
    }
}

fn csv_problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("{len} fields, but the header line has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".into(),
        _ => "not readable as CSV".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Across rows and files.

/// Note `key` as seen at `o`, or a problem if it was seen before.
fn twice<'a, K: std::hash::Hash + Eq>(
    seen: &mut HashMap<K, &'a Origin>,
    key: K,
    o: &'a Origin,
    what: impl FnOnce() -> String,
    field: &str,
    out: &mut Vec<Problem>,
) {
    match seen.get(&key) {
        Some(first) => out.push(Problem {
            file: o.file.clone(),
            line: o.line,
            what: printable(&what()),
            field: field.to_string(),
            problem: format!("listed twice (first at {}:{})", first.file, first.line),
        }),
        None => {
            seen.insert(key, o);
        }
    }
}

/// Entries listed more than once in one run (in one file or across files): a later one would
/// silently replace the earlier. (Keys borrow from the records, and an entry is named only
/// when it is listed twice: a million entries make a million keys.)
pub(crate) fn duplicates(r: &Records, out: &mut Vec<Problem>) {
    fn customer(c: &Option<String>) -> &str {
        c.as_deref().unwrap_or_default()
    }
    let mut seen = HashMap::with_capacity(r.customers.len());
    for c in &r.customers {
        twice(
            &mut seen,
            c.reference.as_str(),
            &c.origin,
            || format!("customer {}", c.reference),
            "ref",
            out,
        );
    }
    let mut seen = HashMap::with_capacity(r.sites.len());
    for s in &r.sites {
        twice(
            &mut seen,
            s.reference.as_str(),
            &s.origin,
            || format!("site {}", s.reference),
            "ref",
            out,
        );
    }
    let mut seen = HashMap::with_capacity(r.accounts.len());
    for a in &r.accounts {
        let s = &a.spec;
        let k = (s.account.as_str(), s.receiver.as_str(), s.line.as_str());
        twice(
            &mut seen,
            k,
            &a.origin,
            || format!("account {}", s.account),
            "account",
            out,
        );
    }
    let mut seen = HashMap::new();
    for z in &r.zones {
        let what = || format!("zone {} of site {}", z.number, z.site);
        twice(
            &mut seen,
            (z.site.as_str(), z.number.as_str()),
            &z.origin,
            what,
            "number",
            out,
        );
    }
    let mut seen = HashMap::new();
    for u in &r.users {
        let what = || format!("user {} of site {}", u.number, u.site);
        twice(
            &mut seen,
            (u.site.as_str(), u.number.as_str()),
            &u.origin,
            what,
            "number",
            out,
        );
    }
    let mut seen = HashMap::new();
    for c in &r.contacts {
        twice(
            &mut seen,
            c.reference.as_str(),
            &c.origin,
            || format!("contact {}", c.reference),
            "ref",
            out,
        );
    }
    let mut seen = HashMap::new();
    for p in &r.procedures {
        let k = (customer(&p.customer), p.category.as_str());
        let what = || format!("procedure {}", p.category.as_str());
        twice(&mut seen, k, &p.origin, what, "category", out);
    }
    let mut seen = HashMap::new();
    for p in &r.priority_rules {
        let k = (customer(&p.customer), p.category.as_str());
        let what = || format!("priority rule {}", p.category.as_str());
        twice(&mut seen, k, &p.origin, what, "category", out);
    }
    let mut seen = HashMap::new();
    for s in &r.schedules {
        let what = || format!("schedule of site {}", s.site);
        twice(&mut seen, s.site.as_str(), &s.origin, what, "site", out);
    }
    let mut seen = HashMap::new();
    for h in &r.holidays {
        let what = || format!("holiday {} of calendar {}", h.date, h.calendar);
        twice(&mut seen, (h.calendar.as_str(), h.date), &h.origin, what, "date", out);
    }
    let mut seen = HashMap::new();
    for e in &r.exceptions {
        let what = || format!("exception {} of site {}", e.exception.from, e.site);
        twice(
            &mut seen,
            (e.site.as_str(), e.exception.from),
            &e.origin,
            what,
            "from",
            out,
        );
    }
}

/// The problem of a reference to a customer or site that is neither in the import nor in the
/// database.
pub(crate) fn unknown_ref(o: &Origin, what: &str, field: &str, kind: Kind, reference: &str) -> Problem {
    let r = printable(reference);
    Problem {
        file: o.file.clone(),
        line: o.line,
        what: printable(what),
        field: field.to_string(),
        problem: match kind {
            Kind::Schedule => {
                format!("site {r:?} has no [[schedule]] (its time zone) in this import or the database")
            }
            Kind::Holiday => format!("no holiday calendar {r:?} (in this import or the database)"),
            _ => format!("no {} with ref {r:?} (in this import or the database)", kind.toml()),
        },
    }
}

/// The SQL that finds a record another row refers to, by its reference.
pub(crate) fn lookup_sql(kind: Kind) -> &'static str {
    match kind {
        Kind::Customer => "SELECT id FROM customers WHERE ref = ?1",
        Kind::Schedule => "SELECT s.id FROM schedules sc JOIN sites s ON s.id = sc.site_id WHERE s.ref = ?1",
        Kind::Holiday => "SELECT 1 FROM holidays WHERE calendar = ?1 LIMIT 1",
        _ => "SELECT id FROM sites WHERE ref = ?1",
    }
}

/// Every reference that names a customer or site neither in the import (valid or not) nor in
/// the database. (References are looked up as borrowed text, and a row is named only when its
/// reference is unknown: a million accounts name a million sites.)
pub(crate) fn references(conn: Option<&rusqlite::Connection>, p: &Parsed) -> Result<Vec<Problem>, StoreError> {
    let r = &p.records;
    // Every customer, site, schedule and calendar of the import is declared by its row (also
    // a row with problems), so the declared references are all the import knows.
    let known = |kind: Kind, reference: &str| p.declared.get(&kind).is_some_and(|d| d.contains(reference));
    // What the database said about references not in the import.
    let mut in_db: HashMap<(Kind, String), bool> = HashMap::new();
    let mut out = Vec::new();
    let mut check = |o: &Origin,
                     what: &dyn Fn() -> String,
                     field: &str,
                     kind: Kind,
                     reference: &'_ str|
     -> Result<(), StoreError> {
        if known(kind, reference) {
            return Ok(());
        }
        let k = (kind, reference.to_string());
        let found = match in_db.get(&k) {
            Some(f) => *f,
            None => {
                let n = match conn {
                    Some(conn) => {
                        use rusqlite::OptionalExtension;
                        conn.prepare_cached(lookup_sql(kind))?
                            .query_row(rusqlite::params![reference], |r| r.get::<_, i64>(0))
                            .optional()?
                            .is_some()
                    }
                    None => false,
                };
                in_db.insert(k, n);
                n
            }
        };
        if !found {
            out.push(unknown_ref(o, &what(), field, kind, reference));
        }
        Ok(())
    };
    for s in &r.sites {
        let what = || format!("site {}", s.reference);
        check(&s.origin, &what, "customer", Kind::Customer, &s.customer)?;
    }
    for a in &r.accounts {
        if let Some(site) = &a.site {
            let what = || format!("account {}", a.spec.account);
            check(&a.origin, &what, "site", Kind::Site, site)?;
        }
    }
    for z in &r.zones {
        let what = || format!("zone {} of site {}", z.number, z.site);
        check(&z.origin, &what, "site", Kind::Site, &z.site)?;
    }
    for u in &r.users {
        let what = || format!("user {} of site {}", u.number, u.site);
        check(&u.origin, &what, "site", Kind::Site, &u.site)?;
    }
    for c in &r.contacts {
        let what = || format!("contact {}", c.reference);
        check(&c.origin, &what, "customer", Kind::Customer, &c.customer)?;
    }
    for pr in &r.procedures {
        if let Some(c) = &pr.customer {
            let what = || format!("procedure {}", pr.category.as_str());
            check(&pr.origin, &what, "customer", Kind::Customer, c)?;
        }
    }
    for pr in &r.priority_rules {
        if let Some(c) = &pr.customer {
            let what = || format!("priority rule {}", pr.category.as_str());
            check(&pr.origin, &what, "customer", Kind::Customer, c)?;
        }
    }
    for s in &r.schedules {
        let what = || format!("schedule of site {}", s.site);
        check(&s.origin, &what, "site", Kind::Site, &s.site)?;
        if let Some(h) = &s.holidays {
            check(&s.origin, &what, "holidays", Kind::Holiday, h)?;
        }
    }
    for w in &r.windows {
        let what = || format!("window {} of site {}", sched::days_text(w.window.days), w.site);
        check(&w.origin, &what, "site", Kind::Schedule, &w.site)?;
    }
    for e in &r.exceptions {
        let what = || format!("exception {} of site {}", e.exception.from, e.site);
        check(&e.origin, &what, "site", Kind::Schedule, &e.site)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ImportError, apply, parse_csv, parse_files, parse_toml, prepare};

    fn lines(e: &ImportError) -> Vec<String> {
        e.problems().iter().map(|p| p.to_string()).collect()
    }

    fn db() -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().expect("db");
        crate::store::schema::migrate(&conn).expect("schema");
        conn
    }

    #[test]
    fn line_index_agrees_with_counting_newlines() {
        let text = "a\n\nbc\nd\n";
        let idx = LineIndex::new(text);
        for at in 0..=text.len() {
            let counted = text[..at].bytes().filter(|b| *b == b'\n').count() + 1;
            assert_eq!(idx.line(at), counted, "offset {at}");
        }
        assert_eq!(LineIndex::new("").line(0), 1);
    }

    /// A records file with what could be mistaken for an entry header: in multi-line strings
    /// (basic and literal, with escaped and extra quotes), in an array spanning lines, in a
    /// comment, as a sub-table of an entry; and real headers with spaces and a comment.
    const TRICKY: &str = "top = 1\n\
        [[customer]]\nref = \"C1\"\nname = \"One\"\nnotes = \"\"\"\n[[customer]]\n\\\"\"\" x \"\"\"\"\n\
        [[ customer ]]  # the second\nref = \"C2\"\nname = 'Two [[customer]]'\nnotes = \'\'\'\n[[site]]\n\'\'\'\n\
        [[contact]]\nref = \"K1\"\ncustomer = \"C1\"\nname = \"Keyholder\"\nphones = [\n[[\"+31\"]],\n\"x\"]\n\
        # [[customer]]\n\
        [[customer]]\nref = \"C3\"\nname = \"Three\"\n[[customer.extra]]\nx = 1\n\
        [[site]]\nref = \"S1\"\ncustomer = \"C3\"\naddress = \"Teststraat 1\"\n";

    #[test]
    fn toml_parts_are_cut_only_before_entry_headers() {
        let at = |needle: &str| TRICKY.find(needle).expect(needle);
        assert_eq!(
            toml_parts(TRICKY, 1),
            vec![
                0,
                at("[[ customer ]]"),
                at("[[contact]]"),
                at("[[customer]]\nref = \"C3\""),
                at("[[site]]\nref = \"S1\""),
            ]
        );
        assert_eq!(
            toml_parts(TRICKY, 2),
            vec![0, at("[[contact]]"), at("[[site]]\nref = \"S1\"")]
        );
        assert_eq!(toml_parts(TRICKY, 10), vec![0]);
    }

    #[test]
    fn a_file_read_in_parts_reads_as_in_one_piece() {
        let read = |text: &str, entries: usize| {
            let mut p = Parsed::default();
            read_toml_in_parts(text, "f.toml", &mut p, entries);
            // (problems are reported sorted by line)
            let problems = crate::records::Problems::new(p.problems).as_slice().to_vec();
            (format!("{:?}", p.records), problems, p.declared)
        };
        // Problems in later parts keep their lines; a syntax error in a later part is reported
        // as in one piece (the whole file is read again).
        let bad_row = format!("{TRICKY}\n[[zone]]\nsite = \"S1\"\nnumber = \"x\"\ndescription = \"\"\n");
        let bad_syntax = format!("{bad_row}\n[[zone]]\nsite = = \"S1\"\n");
        for text in [TRICKY, bad_row.as_str(), bad_syntax.as_str()] {
            let whole = read(text, usize::MAX);
            assert_eq!(read(text, 1), whole, "{text}");
        }
        let (_, problems, _) = read(&bad_row, 1);
        // (the line of an entry is its header's, the one before `site`)
        let zone = bad_row.lines().position(|l| l == "site = \"S1\"").expect("line");
        let of_zone: Vec<&Problem> = problems.iter().filter(|p| p.what.starts_with("zone")).collect();
        assert!(
            !of_zone.is_empty() && of_zone.iter().all(|p| p.line == zone),
            "{problems:?}"
        );
        let (_, problems, _) = read(&bad_syntax, 1);
        assert!(
            problems.iter().any(|p| p.problem.starts_with("not valid TOML")),
            "{problems:?}"
        );
    }

    #[test]
    fn every_problem_of_every_file_in_one_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let toml = dir.path().join("a.toml");
        std::fs::write(
            &toml,
            "[[account]]\naccount = \"12\"\nkey = \"00112233\"\n\n\
             [[site]]\nref = \"S1\"\ncustomer = \"C1\"\naddress = \"\"\n\n\
             [[zone]]\nsite = \"S1\"\nnumber = \"1A\"\ndescription = \"Door\"\ntype = \"alarm\"\n\n\
             [[zone]]\nsite = \"S1\"\nnumber = \"2\"\ndescription = \"Window\"\nsupervised = true\n",
        )
        .expect("write");
        let csv = dir.path().join("zones.csv");
        std::fs::write(
            &csv,
            "site,number,description,type\nS1,3,Back door,entry/exit\nS1,4,,fire\nS1,5,Hall,interior,x\n",
        )
        .expect("write");
        let missing = dir.path().join("b.toml");
        let e = parse_files(&[csv.clone(), toml.clone(), missing.clone()]).expect_err("problems");
        let (a, z, b) = (toml.display(), csv.display(), missing.display());
        assert_eq!(
            lines(&e),
            vec![
                format!("{a}:1: account 12: account: must be 3 to 16 hex digits (0-9, A-F)"),
                format!(
                    "{a}:1: account 12: key: a hex key must be 32, 48 or 64 hex digits (AES-128/192/256), got 8 characters"
                ),
                format!("{a}:5: site S1: address: must not be empty"),
                format!(
                    "{a}:10: zone 1A of site S1: number: a zone number is digits only, 0 to 9999 (leading zeros are ignored: 003 is 3)"
                ),
                format!(
                    "{a}:10: zone 1A of site S1: type: \"alarm\" is not a zone type ({})",
                    ZONE_TYPES.join(", ")
                ),
                format!(
                    "{a}:20: zone 2 of site S1: supervised: unknown field (known: site, number, description, type)"
                ),
                format!("{b}: cannot read: No such file or directory (os error 2)"),
                format!("{z}:3: zone 4 of site S1: description: must not be empty"),
                format!("{z}:4: 5 fields, but the header line has 4"),
            ]
        );
        let text = e.to_string();
        assert!(text.starts_with("nothing was imported:\n"), "{text}");
        assert!(text.ends_with("\n9 problems"), "{text}");
        assert!(!text.contains("00112233"), "{text}");
    }

    #[test]
    fn zone_numbers_types_and_texts() {
        let zone = |number: &str, ty: &str| {
            format!("[[zone]]\nsite = \"S1\"\nnumber = \"{number}\"\ndescription = \"Door\"\ntype = \"{ty}\"\n")
        };
        for (number, ty) in [
            ("0", "entry/exit"),
            ("003", "Fire"),
            ("9999", "hold-up"),
            ("00001234", "key switch"),
            ("12", ""),
        ] {
            let r = parse_toml(&zone(number, ty), "f").unwrap_or_else(|e| panic!("{number} {ty}: {e}"));
            assert_eq!(r.zones[0].zone_type, ty.to_ascii_lowercase(), "stored as listed");
        }
        for (number, ty, field) in [
            ("10000", "fire", "number"),
            ("-1", "fire", "number"),
            ("1 2", "fire", "number"),
            ("BA", "fire", "number"),
            ("", "fire", "number"),
            ("1", "smoke", "type"),
        ] {
            let e = parse_toml(&zone(number, ty), "f").expect_err(number);
            assert_eq!(e.problems()[0].field, field, "{e}");
        }
        let site = |name: &str, address: &str| {
            format!(
                "[[site]]\nref = \"S1\"\ncustomer = \"C1\"\nname = \"{name}\"\naddress = \"{address}\"\n\
                 responder_notes = \"\"\"\nKey safe left of the door.\n\tDog upstairs.\n\"\"\"\n"
            )
        };
        parse_toml(&site("Shop", "Teststraat 1"), "f").expect("notes may have line breaks");
        for (name, address, field, problem) in [
            ("Shop\\u001b[2J", "Teststraat 1", "name", "control character U+001B"),
            ("Shop", "Teststraat\\n1", "address", "control character U+000A"),
            (
                "Bank\\u202eknaB",
                "Teststraat 1",
                "name",
                "bidirectional formatting character U+202E",
            ),
            ("Shop", &"x".repeat(201), "address", "201 characters, at most 200"),
            ("Shop", " ", "address", "must not be empty"),
        ] {
            let e = parse_toml(&site(name, address), "f").expect_err(field);
            let p = &e.problems()[0];
            assert_eq!((p.field.as_str(), p.problem.contains(problem)), (field, true), "{e}");
            assert!(
                !e.to_string().contains('\u{1b}'),
                "no control character reaches the report"
            );
        }
        let e = parse_toml(
            "[[site]]\nref = \"S\\u001b1\"\ncustomer = \"C\"\naddress = \"x\"\n",
            "f",
        )
        .expect_err("ref");
        assert!(e.to_string().contains("site S\\u{1b}1: ref:"), "{e}");
    }

    #[test]
    fn duplicates_within_a_site_and_across_files() {
        let e = parse_toml(
            "[[zone]]\nsite = \"S1\"\nnumber = \"3\"\ndescription = \"Door\"\n\
             [[zone]]\nsite = \"S1\"\nnumber = \"003\"\ndescription = \"Window\"\n\
             [[zone]]\nsite = \"S2\"\nnumber = \"3\"\ndescription = \"Door\"\n\
             [[user]]\nsite = \"S1\"\nnumber = \"5\"\nname = \"A\"\n\
             [[user]]\nsite = \"S1\"\nnumber = \"05\"\nname = \"B\"\n\
             [[priority_rule]]\ncategory = \"fire\"\npriority = 1\n\
             [[priority_rule]]\ncategory = \"fire\"\npriority = 2\n",
            "f",
        )
        .expect_err("duplicates");
        assert_eq!(
            lines(&e),
            vec![
                "f:5: zone 3 of site S1: number: listed twice (first at f:1)",
                "f:17: user 5 of site S1: number: listed twice (first at f:13)",
                "f:24: priority rule fire: category: listed twice (first at f:21)",
            ]
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.toml");
        std::fs::write(&a, "[[customer]]\nref = \"C1\"\nname = \"A\"\n").expect("write");
        let b = dir.path().join("customers.csv");
        std::fs::write(&b, "ref,name\nC2,B\nC1,C\n").expect("write");
        parse_files(std::slice::from_ref(&a)).expect("one file alone is fine");
        let e = parse_files(&[a.clone(), b.clone()]).expect_err("across files");
        assert_eq!(
            lines(&e),
            vec![format!(
                "{}:3: customer C1: ref: listed twice (first at {}:1)",
                b.display(),
                a.display()
            )]
        );
    }

    #[test]
    fn references_are_checked_before_writing_once_per_row() {
        let mut conn = db();
        let known = parse_toml("[[customer]]\nref = \"C0\"\nname = \"In the database\"\n", "db").expect("ok");
        apply(&mut conn, &known, &crate::store::sealed::test_key()).expect("import");
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("r.toml");
        std::fs::write(
            &f,
            // S1 has a problem of its own: its zone is not also reported for naming it.
            "[[site]]\nref = \"S1\"\ncustomer = \"C0\"\naddress = \"\"\n\
             [[zone]]\nsite = \"S1\"\nnumber = \"1\"\ndescription = \"Door\"\n\
             [[zone]]\nsite = \"S9\"\nnumber = \"1\"\ndescription = \"Door\"\n\
             [[contact]]\nref = \"K1\"\ncustomer = \"C9\"\nname = \"K\"\n",
        )
        .expect("write");
        let e = prepare(Some(&conn), std::slice::from_ref(&f)).expect_err("problems");
        let p = f.display();
        assert_eq!(
            lines(&e),
            vec![
                format!("{p}:1: site S1: address: must not be empty"),
                format!("{p}:9: zone 1 of site S9: site: no site with ref \"S9\" (in this import or the database)"),
                format!("{p}:13: contact K1: customer: no customer with ref \"C9\" (in this import or the database)"),
            ]
        );
    }

    #[test]
    fn apply_names_every_unknown_reference() {
        let mut conn = db();
        let r = parse_toml(
            "[[site]]\nref = \"S1\"\ncustomer = \"C8\"\naddress = \"x\"\n\
             [[account]]\naccount = \"1234\"\nsite = \"S9\"\n\
             [[priority_rule]]\ncustomer = \"C7\"\ncategory = \"fire\"\npriority = 1\n",
            "f",
        )
        .expect("valid rows");
        let e = apply(&mut conn, &r, &crate::store::sealed::test_key()).expect_err("unknown references");
        assert_eq!(e.problems().len(), 3, "{e}");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 0, "nothing written");
    }

    #[test]
    fn csv_cells_and_headers() {
        let e = parse_csv(
            "account,enabled,supervision_secs\n1234,maybe,ten\n5678,yes,60\n",
            "accounts.csv",
            "accounts",
        )
        .expect_err("bad cells");
        assert_eq!(
            lines(&e),
            vec![
                "accounts.csv:2: account 1234: enabled: must be true or false (or yes/no, 1/0)",
                "accounts.csv:2: account 1234: supervision_secs: must be a whole number",
            ]
        );
        let e = parse_csv("number,site,number\n1,S1,2\n", "zones.csv", "zones").expect_err("header");
        assert_eq!(
            lines(&e),
            vec![
                "zones.csv:1: number: column given twice",
                "zones.csv:1: description: required column missing",
            ]
        );
        let e = parse_csv(
            "category,step,instruction\nfire,1,Call\nfire,1,Again\n",
            "procedures.csv",
            "procedures",
        )
        .expect_err("step twice");
        assert_eq!(
            lines(&e),
            vec!["procedures.csv:3: procedure fire step 1: step: step 1 listed twice in this procedure"]
        );
    }

    /// Schedules: every problem of every row named, in TOML and CSV; references to a site
    /// without a schedule or to an unknown holiday calendar found before anything is written;
    /// a re-import replaces a site's windows.
    #[test]
    fn schedule_rows_are_checked_row_by_row() {
        let e = parse_toml(
            "[[schedule]]\nsite = \"S1\"\ntime_zone = \"Europe/Amsterdm\"\n\
             [[schedule_window]]\nsite = \"S1\"\ndays = \"mon-fry\"\nopen = \"8:00\"\nclose = \"24:01\"\ngrace = 300\n\
             [[schedule_window]]\nsite = \"S1\"\ndays = \"daily\"\nopen = \"08:00\"\nclose = \"08:00\"\n\
             [[holiday]]\ncalendar = \"NL\"\ndate = \"2026-13-01\"\n\
             [[schedule_exception]]\nsite = \"S1\"\nfrom = \"2026-05-02\"\nto = \"2026-05-01\"\nhours = \"9-17\"\n",
            "f",
        )
        .expect_err("problems");
        assert_eq!(
            lines(&e),
            vec![
                "f:1: schedule of site S1: time_zone: \"Europe/Amsterdm\" is not a time zone (an IANA name such as \"Europe/Amsterdam\")",
                "f:4: window mon-fry of site S1: days: \"mon-fry\" is not a set of days (mon-fri, sat;sun, daily, mon,wed)",
                "f:4: window mon-fry of site S1: open: \"8:00\" is not a time of day (HH:MM, 00:00 to 23:59)",
                "f:4: window mon-fry of site S1: close: \"24:01\" is not a time of day (HH:MM, 00:00 to 24:00)",
                "f:4: window mon-fry of site S1: grace: minutes, 0 to 240",
                "f:10: window daily of site S1: close: the same time as the open (08:00): a window of a whole day is 00:00 to 24:00",
                "f:15: holiday 2026-13-01 of calendar NL: date: \"2026-13-01\" is not a date (YYYY-MM-DD)",
                "f:18: exception 2026-05-02 of site S1: to: before from",
                "f:18: exception 2026-05-02 of site S1: hours: \"9-17\" is not opening hours (HH:MM-HH:MM; leave empty for closed)",
            ]
        );
        let e = parse_csv(
            "site,days,open,close,grace\nS1,mon-fri,08:00,18:00,15\nS1,weekend,10:00,12:00,x\n",
            "schedule_windows.csv",
            "schedule_windows",
        )
        .expect_err("csv");
        assert_eq!(
            lines(&e),
            vec!["schedule_windows.csv:3: window weekend of site S1: grace: must be a whole number",]
        );
        let e = parse_csv(
            "site,days,open,close\nS1,weekend,10:00,12:00\n",
            "schedule_windows.csv",
            "schedule_windows",
        )
        .expect_err("csv");
        assert!(lines(&e)[0].contains("days: \"weekend\" is not a set of days"), "{e}");

        // References: a window of a site without a schedule, a calendar nobody defined.
        let mut conn = db();
        let base = "[[customer]]\nref = \"C1\"\nname = \"C\"\n[[site]]\nref = \"S1\"\ncustomer = \"C1\"\naddress = \"x\"\n\
                    [[site]]\nref = \"S2\"\ncustomer = \"C1\"\naddress = \"y\"\n";
        apply(
            &mut conn,
            &parse_toml(base, "base").expect("base"),
            &crate::store::sealed::test_key(),
        )
        .expect("base");
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("s.toml");
        std::fs::write(
            &f,
            "[[schedule]]\nsite = \"S1\"\ntime_zone = \"Europe/Amsterdam\"\nholidays = \"XX\"\n\
             [[schedule_window]]\nsite = \"S2\"\ndays = \"daily\"\nopen = \"08:00\"\nclose = \"18:00\"\n",
        )
        .expect("write");
        let e = prepare(Some(&conn), std::slice::from_ref(&f)).expect_err("references");
        let p = f.display();
        assert_eq!(
            lines(&e),
            vec![
                format!(
                    "{p}:1: schedule of site S1: holidays: no holiday calendar \"XX\" (in this import or the database)"
                ),
                format!(
                    "{p}:5: window daily of site S2: site: site \"S2\" has no [[schedule]] (its time zone) in this import or the database"
                ),
            ]
        );

        // Windows are replaced per site on a re-import.
        let sched = "[[schedule]]\nsite = \"S1\"\ntime_zone = \"Europe/Amsterdam\"\n\
                     [[schedule_window]]\nsite = \"S1\"\ndays = \"mon-fri\"\nopen = \"08:00\"\nclose = \"18:00\"\n\
                     [[schedule_window]]\nsite = \"S1\"\ndays = \"sat\"\nopen = \"22:00\"\nclose = \"02:00\"\ngrace = 10\n";
        let r = parse_toml(sched, "s").expect("valid");
        let report = apply(&mut conn, &r, &crate::store::sealed::test_key()).expect("import");
        assert_eq!((report.schedules, report.windows), (1, 2));
        apply(&mut conn, &r, &crate::store::sealed::test_key()).expect("again");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM schedule_windows", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 2, "replaced, not added");
        let one = "[[schedule_window]]\nsite = \"S1\"\ndays = \"daily\"\nopen = \"00:00\"\nclose = \"24:00\"\n";
        apply(
            &mut conn,
            &parse_toml(one, "o").expect("valid"),
            &crate::store::sealed::test_key(),
        )
        .expect("import");
        let w: (i64, i64, i64) = conn
            .query_row("SELECT days, open_min, close_min FROM schedule_windows", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("one window");
        assert_eq!(w, (127, 0, 1440));
        let changes: i64 = conn
            .query_row("SELECT count(*) FROM schedule_changes WHERE site_id IS NULL", [], |r| {
                r.get(0)
            })
            .expect("changes");
        assert_eq!(changes, 3, "every schedule import tells the daemon to load them again");
    }

    /// `fixtures/records/README.md` documents every CSV file and column the import accepts.
    #[test]
    fn the_csv_columns_are_documented() {
        let doc = include_str!("../../fixtures/records/README.md");
        for kind in KINDS {
            let heading = format!("### `{}.csv`", kind.csv());
            let at = doc.find(&heading).unwrap_or_else(|| panic!("no section {heading:?}"));
            let section = &doc[at + heading.len()..];
            let section = &section[..section.find("\n### ").unwrap_or(section.len())];
            for (column, _, required) in kind.columns() {
                let row = section
                    .lines()
                    .find(|l| l.starts_with(&format!("| `{column}` |")))
                    .unwrap_or_else(|| panic!("{heading}: no row for column {column:?}"));
                let says = if *required { "| yes |" } else { "| no |" };
                assert!(row.contains(says), "{heading}: {column} should say {says}: {row}");
            }
            let header: Vec<&str> = kind.columns().iter().map(|c| c.0).collect();
            let example = section
                .lines()
                .skip_while(|l| !l.starts_with("```csv"))
                .nth(1)
                .unwrap_or_else(|| panic!("{heading}: no example"));
            let cols: Vec<&str> = example.split(',').collect();
            assert!(
                cols.iter().all(|c| header.contains(c)),
                "{heading}: example header {example:?}"
            );
            let text: String = section
                .lines()
                .skip_while(|l| !l.starts_with("```csv"))
                .skip(1)
                .take_while(|l| !l.starts_with("```"))
                .map(|l| format!("{l}\n"))
                .collect();
            let mut p = Parsed::default();
            read_csv(&text, "example", kind, &mut p);
            assert!(
                p.problems.is_empty(),
                "{heading}: the example has problems: {:?}",
                p.problems
            );
        }
    }
}
