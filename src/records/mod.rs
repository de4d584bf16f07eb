//! Records files: what `meldkamer import` reads. Customers, sites, transmitter accounts, zones,
//! panel users, contacts (keyholders), procedures and priority rules, in TOML (one file with
//! every kind) or CSV (one file per kind, named after it: `customers.csv`, `sites.csv`,
//! `accounts.csv`, `zones.csv`, `users.csv`, `contacts.csv`, `procedures.csv`,
//! `priority_rules.csv`). Format: `fixtures/records/README.md`.
//!
//! Everything is validated before anything is written, then applied in one transaction (all
//! or nothing: one bad row rejects every file with its line and field named) and idempotently
//! (records are keyed by their natural keys, so a re-import updates, never duplicates).
//! There is no field for a panel's keypad code, and an unknown field is an error.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Deserialize;

use crate::correlate::norm_number;
use crate::protocol::codes::Category;
use crate::protocol::crypto::{Key, KeyFormat};
use crate::protocol::frame::Quirks;
use crate::store::StoreError;
use crate::store::accounts::{self, AccountSpec};
use crate::store::sealed::SealKey;

/// An import that cannot be applied. Never contains a key.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the file failed.
    #[error("cannot read {path}")]
    Read {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML/CSV, or an unknown field.
    #[error("{origin}: {message}")]
    Syntax {
        /// File.
        origin: String,
        /// Parser message with line (and column).
        message: String,
    },
    /// A value is not acceptable.
    #[error("{origin}, line {line}: {what}: {field}: {problem}")]
    Invalid {
        /// File.
        origin: String,
        /// 1-based line of the entry.
        line: usize,
        /// Which entry, e.g. `account 1234`.
        what: String,
        /// Field name.
        field: &'static str,
        /// What is wrong (no secret values).
        problem: String,
    },
    /// The database refused.
    #[error("writing to the database")]
    Store(#[from] StoreError),
    /// The keys file that seals the account keys is unusable.
    #[error(transparent)]
    Keys(#[from] crate::store::sealed::SealKeyError),
}

/// Where a record came from, for error messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// File name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

impl Origin {
    fn invalid(&self, what: impl Into<String>, field: &'static str, problem: impl Into<String>) -> ImportError {
        ImportError::Invalid {
            origin: self.file.clone(),
            line: self.line,
            what: what.into(),
            field,
            problem: problem.into(),
        }
    }
}

/// A customer.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerSpec {
    /// Where from.
    pub origin: Origin,
    /// Customer reference (the ARC's own id, unique).
    pub reference: String,
    /// Name.
    pub name: String,
    /// Notes for operators.
    pub notes: String,
}

/// A site (premises).
#[derive(Debug, Clone, PartialEq)]
pub struct SiteSpec {
    /// Where from.
    pub origin: Origin,
    /// Site reference.
    pub reference: String,
    /// Customer reference.
    pub customer: String,
    /// Name.
    pub name: String,
    /// Street address.
    pub address: String,
    /// Postcode.
    pub postcode: String,
    /// City.
    pub city: String,
    /// Notes for responders (access, dog, key safe location…).
    pub responder_notes: String,
}

/// A transmitter account and the site it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRecord {
    /// Where from.
    pub origin: Origin,
    /// Site reference, if linked.
    pub site: Option<String>,
    /// The account itself.
    pub spec: AccountSpec,
}

/// A zone.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneSpec {
    /// Where from.
    pub origin: Origin,
    /// Site reference.
    pub site: String,
    /// Zone number (leading zeros do not matter).
    pub number: String,
    /// Description ("back door, ground floor").
    pub description: String,
    /// Type (entry/exit, interior, fire…).
    pub zone_type: String,
}

/// A panel user: number, name and role. Never a keypad code.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSpec {
    /// Where from.
    pub origin: Origin,
    /// Site reference.
    pub site: String,
    /// User number as the panel reports it.
    pub number: String,
    /// Name.
    pub name: String,
    /// Role (owner, cleaner, installer…).
    pub role: String,
}

/// A contact / keyholder.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactSpec {
    /// Where from.
    pub origin: Origin,
    /// Contact reference.
    pub reference: String,
    /// Customer reference.
    pub customer: String,
    /// Name.
    pub name: String,
    /// Phone numbers, in the order to try.
    pub phones: Vec<String>,
    /// Position in the call list (1 first).
    pub call_order: i64,
    /// May cancel an alarm by phone (with a phone cancellation code).
    pub may_cancel: bool,
}

/// Procedure steps for a category (for one customer, or the default set).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcedureSpec {
    /// Where from.
    pub origin: Origin,
    /// Customer reference, or none for the default set.
    pub customer: Option<String>,
    /// Event category.
    pub category: Category,
    /// Steps, in order.
    pub steps: Vec<String>,
    /// The numbers (1-based) of the steps that must be done, or the reason given, before an
    /// alarm of this category is closed.
    pub mandatory: Vec<u32>,
}

/// A priority rule.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorityRuleSpec {
    /// Where from.
    pub origin: Origin,
    /// Customer reference, or none for the global rule.
    pub customer: Option<String>,
    /// Category.
    pub category: Category,
    /// Priority 1–9.
    pub priority: u8,
}

/// Validated contents of one or more records files.
#[derive(Debug, Default)]
pub struct Records {
    /// Customers.
    pub customers: Vec<CustomerSpec>,
    /// Sites.
    pub sites: Vec<SiteSpec>,
    /// Accounts.
    pub accounts: Vec<AccountRecord>,
    /// Zones.
    pub zones: Vec<ZoneSpec>,
    /// Panel users.
    pub users: Vec<UserSpec>,
    /// Contacts.
    pub contacts: Vec<ContactSpec>,
    /// Procedures.
    pub procedures: Vec<ProcedureSpec>,
    /// Priority rules.
    pub priority_rules: Vec<PriorityRuleSpec>,
}

impl Records {
    /// Add another file's records.
    pub fn extend(&mut self, other: Records) {
        self.customers.extend(other.customers);
        self.sites.extend(other.sites);
        self.accounts.extend(other.accounts);
        self.zones.extend(other.zones);
        self.users.extend(other.users);
        self.contacts.extend(other.contacts);
        self.procedures.extend(other.procedures);
        self.priority_rules.extend(other.priority_rules);
    }
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Customers written.
    pub customers: usize,
    /// Sites written.
    pub sites: usize,
    /// Accounts written (inserted or updated).
    pub accounts: usize,
    /// Zones written.
    pub zones: usize,
    /// Users written.
    pub users: usize,
    /// Contacts written.
    pub contacts: usize,
    /// Procedures written.
    pub procedures: usize,
    /// Priority rules written.
    pub priority_rules: usize,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} customer(s), {} site(s), {} account(s), {} zone(s), {} user(s), {} contact(s), {} procedure(s), {} priority rule(s)",
            self.customers,
            self.sites,
            self.accounts,
            self.zones,
            self.users,
            self.contacts,
            self.procedures,
            self.priority_rules
        )
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
struct TomlFile {
    #[serde(default)]
    customer: Vec<toml::Spanned<CustomerRow>>,
    #[serde(default)]
    site: Vec<toml::Spanned<SiteRow>>,
    #[serde(default)]
    account: Vec<toml::Spanned<AccountRow>>,
    #[serde(default)]
    zone: Vec<toml::Spanned<ZoneRow>>,
    #[serde(default)]
    user: Vec<toml::Spanned<UserRow>>,
    #[serde(default)]
    contact: Vec<toml::Spanned<ContactRow>>,
    #[serde(default)]
    procedure: Vec<toml::Spanned<ProcedureRow>>,
    #[serde(default)]
    priority_rule: Vec<toml::Spanned<PriorityRuleRow>>,
}

// ---------------------------------------------------------------------------------------------
// Validation: rows to specs.

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn non_empty(o: &Origin, what: &str, field: &'static str, v: &str) -> Result<String, ImportError> {
    let t = v.trim();
    if t.is_empty() {
        return Err(o.invalid(what, field, "must not be empty"));
    }
    Ok(t.to_string())
}

fn opt(s: Option<String>) -> Option<String> {
    s.map(|x| x.trim().to_string()).filter(|x| !x.is_empty())
}

fn category(o: &Origin, what: &str, s: &str) -> Result<Category, ImportError> {
    Category::parse(s.trim()).ok_or_else(|| {
        o.invalid(
            what,
            "category",
            format!("{s:?} is not a category (duress, holdup, panic, medical, fire, environmental, burglary, tamper, technical, communication, access, bypass, test, information)"),
        )
    })
}

fn customer(o: Origin, r: CustomerRow) -> Result<CustomerSpec, ImportError> {
    let what = format!("customer {}", r.reference);
    Ok(CustomerSpec {
        reference: non_empty(&o, &what, "ref", &r.reference)?,
        name: non_empty(&o, &what, "name", &r.name)?,
        notes: r.notes,
        origin: o,
    })
}

fn site(o: Origin, r: SiteRow) -> Result<SiteSpec, ImportError> {
    let what = format!("site {}", r.reference);
    Ok(SiteSpec {
        reference: non_empty(&o, &what, "ref", &r.reference)?,
        customer: non_empty(&o, &what, "customer", &r.customer)?,
        name: r.name,
        address: non_empty(&o, &what, "address", &r.address)?,
        postcode: r.postcode,
        city: r.city,
        responder_notes: r.responder_notes,
        origin: o,
    })
}

fn account(o: Origin, row: AccountRow) -> Result<AccountRecord, ImportError> {
    let what = format!("account {}", row.account);
    let invalid = |field: &'static str, problem: String| o.invalid(what.clone(), field, problem);
    if !(3..=16).contains(&row.account.len()) || !is_hex(&row.account) {
        return Err(invalid("account", "must be 3 to 16 hex digits (0-9, A-F)".into()));
    }
    if !row.receiver.is_empty() && (row.receiver.len() > 6 || !is_hex(&row.receiver)) {
        return Err(invalid(
            "receiver",
            "must be 1 to 6 hex digits, or empty for any".into(),
        ));
    }
    if !row.line.is_empty() && (row.line.len() > 6 || !is_hex(&row.line)) {
        return Err(invalid("line", "must be 1 to 6 hex digits, or empty for any".into()));
    }
    let key_format = opt(row.key_format);
    let format = match key_format.as_deref() {
        None | Some("hex") => KeyFormat::Hex,
        Some("ascii") => KeyFormat::Ascii,
        Some(other) => return Err(invalid("key_format", format!("{other:?} is not \"hex\" or \"ascii\""))),
    };
    let key = match opt(row.key) {
        Some(k) => Some(Key::parse(&k, format).map_err(|e| invalid("key", e.to_string()))?),
        None if key_format.is_some() => return Err(invalid("key_format", "given without a key".into())),
        None => None,
    };
    let require_encryption = row.require_encryption.unwrap_or(key.is_some());
    if require_encryption && key.is_none() {
        return Err(invalid("require_encryption", "needs a key".into()));
    }
    let mut quirks = Quirks::NONE;
    for q in &row.quirks.0 {
        match q.as_str() {
            "crc_binary" => quirks.crc_binary = true,
            "cr_in_crc" => quirks.cr_in_crc = true,
            "trailing_nul" => quirks.trailing_nul = true,
            other => {
                return Err(invalid(
                    "quirks",
                    format!("unknown quirk {other:?} (known: crc_binary, cr_in_crc, trailing_nul)"),
                ));
            }
        }
    }
    let path = opt(row.path).unwrap_or_else(|| "primary".to_string());
    if path != "primary" && path != "secondary" {
        return Err(invalid("path", format!("{path:?} is not \"primary\" or \"secondary\"")));
    }
    let ats_category = opt(row.ats_category).map(|c| c.to_ascii_uppercase());
    if let Some(c) = &ats_category
        && crate::correlate::supervision::ats_reporting_secs(c, false).is_none()
    {
        return Err(invalid("ats_category", format!("{c:?} is not SP1…SP6 or DP1…DP4")));
    }
    if row.supervision_secs == Some(0) {
        return Err(invalid("supervision_secs", "must be greater than 0".into()));
    }
    Ok(AccountRecord {
        site: opt(row.site),
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
        origin: o,
    })
}

fn zone(o: Origin, r: ZoneRow) -> Result<ZoneSpec, ImportError> {
    let what = format!("zone {} of site {}", r.number, r.site);
    Ok(ZoneSpec {
        site: non_empty(&o, &what, "site", &r.site)?,
        number: norm_number(&non_empty(&o, &what, "number", &r.number)?),
        description: non_empty(&o, &what, "description", &r.description)?,
        zone_type: r.zone_type,
        origin: o,
    })
}

fn user(o: Origin, r: UserRow) -> Result<UserSpec, ImportError> {
    let what = format!("user {} of site {}", r.number, r.site);
    Ok(UserSpec {
        site: non_empty(&o, &what, "site", &r.site)?,
        number: norm_number(&non_empty(&o, &what, "number", &r.number)?),
        name: non_empty(&o, &what, "name", &r.name)?,
        role: r.role,
        origin: o,
    })
}

fn contact(o: Origin, r: ContactRow) -> Result<ContactSpec, ImportError> {
    let what = format!("contact {}", r.reference);
    let call_order = r.call_order.unwrap_or(1);
    if call_order < 1 {
        return Err(o.invalid(what, "call_order", "must be 1 or more"));
    }
    for p in &r.phones.0 {
        if !p.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c)) || !p.chars().any(|c| c.is_ascii_digit()) {
            return Err(o.invalid(what, "phones", format!("{p:?} is not a phone number")));
        }
    }
    Ok(ContactSpec {
        reference: non_empty(&o, &what, "ref", &r.reference)?,
        customer: non_empty(&o, &what, "customer", &r.customer)?,
        name: non_empty(&o, &what, "name", &r.name)?,
        phones: r.phones.0,
        call_order,
        may_cancel: r.may_cancel,
        origin: o,
    })
}

fn priority_rule(o: Origin, r: PriorityRuleRow) -> Result<PriorityRuleSpec, ImportError> {
    let what = format!("priority rule {}", r.category);
    if !(1..=9).contains(&r.priority) {
        return Err(o.invalid(what, "priority", "must be 1 (most urgent) to 9"));
    }
    Ok(PriorityRuleSpec {
        customer: opt(r.customer),
        category: category(&o, &what, &r.category)?,
        priority: r.priority,
        origin: o,
    })
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Line numbers by byte offset, for every row of a large file: the newline offsets are found
/// once, then each lookup is a binary search. (Counting from the start of the text for every
/// row made a 100,000-account import quadratic: minutes instead of seconds.)
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(text: &str) -> Self {
        LineIndex(
            text.bytes()
                .enumerate()
                .filter_map(|(i, b)| (b == b'\n').then_some(i))
                .collect(),
        )
    }

    /// The 1-based line of byte offset `at` (as [`line_of`]).
    fn line(&self, at: usize) -> usize {
        self.0.partition_point(|nl| *nl < at) + 1
    }
}

/// Parse and validate a TOML records file.
pub fn parse_toml(text: &str, origin: &str) -> Result<Records, ImportError> {
    // toml's Display quotes the offending source line, which may hold a secret (a key, or a
    // code someone tried to import): give the line number and the message only.
    let file: TomlFile = toml::from_str(text).map_err(|e| ImportError::Syntax {
        origin: origin.to_string(),
        message: match e.span() {
            Some(span) => format!("line {}: {}", line_of(text, span.start), e.message()),
            None => e.message().to_string(),
        },
    })?;
    let lines = LineIndex::new(text);
    let o = |span: std::ops::Range<usize>| Origin {
        file: origin.to_string(),
        line: lines.line(span.start),
    };
    let mut r = Records::default();
    for x in file.customer {
        r.customers.push(customer(o(x.span()), x.into_inner())?);
    }
    for x in file.site {
        r.sites.push(site(o(x.span()), x.into_inner())?);
    }
    for x in file.account {
        r.accounts.push(account(o(x.span()), x.into_inner())?);
    }
    for x in file.zone {
        r.zones.push(zone(o(x.span()), x.into_inner())?);
    }
    for x in file.user {
        r.users.push(user(o(x.span()), x.into_inner())?);
    }
    for x in file.contact {
        r.contacts.push(contact(o(x.span()), x.into_inner())?);
    }
    for x in file.procedure {
        let origin = o(x.span());
        let p = x.into_inner();
        let what = format!("procedure {}", p.category);
        if p.steps.0.is_empty() {
            return Err(origin.invalid(what, "steps", "at least one step"));
        }
        if let Some(bad) = p.mandatory.iter().find(|n| **n == 0 || **n as usize > p.steps.0.len()) {
            return Err(origin.invalid(
                what,
                "mandatory",
                format!(
                    "step {bad} does not exist (steps are numbered 1 to {})",
                    p.steps.0.len()
                ),
            ));
        }
        let mut mandatory = p.mandatory;
        mandatory.sort_unstable();
        mandatory.dedup();
        r.procedures.push(ProcedureSpec {
            customer: opt(p.customer),
            category: category(&origin, &what, &p.category)?,
            steps: p.steps.0,
            mandatory,
            origin,
        });
    }
    for x in file.priority_rule {
        r.priority_rules.push(priority_rule(o(x.span()), x.into_inner())?);
    }
    check_duplicates(&r)?;
    Ok(r)
}

fn csv_rows<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<Vec<(Origin, T)>, ImportError> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = rdr
        .headers()
        .map_err(|e| ImportError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })?
        .clone();
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| ImportError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        // Empty cells are absent values, not empty strings.
        let mut map = serde_json::Map::new();
        for (h, v) in headers.iter().zip(rec.iter()) {
            if !v.is_empty() {
                let value = match v {
                    "true" => serde_json::Value::Bool(true),
                    "false" => serde_json::Value::Bool(false),
                    _ if h == "supervision_secs" || h == "call_order" || h == "priority" || h == "step" => v
                        .parse::<i64>()
                        .map(serde_json::Value::from)
                        .unwrap_or_else(|_| serde_json::Value::String(v.to_string())),
                    _ => serde_json::Value::String(v.to_string()),
                };
                map.insert(h.to_string(), value);
            }
        }
        let row: T = serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| ImportError::Syntax {
            origin: origin.to_string(),
            message: format!("line {line}: {e}"),
        })?;
        out.push((
            Origin {
                file: origin.to_string(),
                line,
            },
            row,
        ));
    }
    Ok(out)
}

/// The record kinds a CSV file can hold, by file name.
pub const CSV_KINDS: &[&str] = &[
    "customers",
    "sites",
    "accounts",
    "zones",
    "users",
    "contacts",
    "procedures",
    "priority_rules",
];

/// Parse and validate a CSV records file; `kind` is one of [`CSV_KINDS`].
pub fn parse_csv(text: &str, origin: &str, kind: &str) -> Result<Records, ImportError> {
    let mut r = Records::default();
    match kind {
        "customers" => {
            for (o, row) in csv_rows(text, origin)? {
                r.customers.push(customer(o, row)?);
            }
        }
        "sites" => {
            for (o, row) in csv_rows(text, origin)? {
                r.sites.push(site(o, row)?);
            }
        }
        "accounts" => {
            for (o, row) in csv_rows(text, origin)? {
                r.accounts.push(account(o, row)?);
            }
        }
        "zones" => {
            for (o, row) in csv_rows(text, origin)? {
                r.zones.push(zone(o, row)?);
            }
        }
        "users" => {
            for (o, row) in csv_rows(text, origin)? {
                r.users.push(user(o, row)?);
            }
        }
        "contacts" => {
            for (o, row) in csv_rows(text, origin)? {
                r.contacts.push(contact(o, row)?);
            }
        }
        "procedures" => {
            // Group consecutive step rows by (customer, category), ordered by step.
            let mut groups: Vec<(Origin, Option<String>, Category, Vec<(u32, String, bool)>)> = Vec::new();
            for (o, row) in csv_rows::<ProcedureStepRow>(text, origin)? {
                let what = format!("procedure {} step {}", row.category, row.step);
                let cat = category(&o, &what, &row.category)?;
                let cust = opt(row.customer);
                let instruction = non_empty(&o, &what, "instruction", &row.instruction)?;
                let mandatory = match row.mandatory.as_deref().map(str::trim) {
                    None | Some("") | Some("no") | Some("false") | Some("0") => false,
                    Some("yes") | Some("true") | Some("1") => true,
                    Some(other) => {
                        return Err(o.invalid(what, "mandatory", format!("{other:?} is not yes or no")));
                    }
                };
                match groups.iter_mut().find(|g| g.1 == cust && g.2 == cat) {
                    Some(g) => g.3.push((row.step, instruction, mandatory)),
                    None => groups.push((o, cust, cat, vec![(row.step, instruction, mandatory)])),
                }
            }
            for (o, customer, category, mut steps) in groups {
                steps.sort_by_key(|s| s.0);
                r.procedures.push(ProcedureSpec {
                    origin: o,
                    customer,
                    category,
                    mandatory: (1..).zip(&steps).filter(|(_, s)| s.2).map(|(n, _)| n).collect(),
                    steps: steps.into_iter().map(|s| s.1).collect(),
                });
            }
        }
        "priority_rules" => {
            for (o, row) in csv_rows(text, origin)? {
                r.priority_rules.push(priority_rule(o, row)?);
            }
        }
        other => {
            return Err(ImportError::Syntax {
                origin: origin.to_string(),
                message: format!(
                    "unknown CSV record kind {other:?}: name the file one of {}",
                    CSV_KINDS.join(", ")
                ),
            });
        }
    }
    check_duplicates(&r)?;
    Ok(r)
}

/// Read and validate a file: `.toml`, or `.csv` named after its kind.
pub fn parse_file(path: &Path) -> Result<Records, ImportError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: origin.clone(),
        source,
    })?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => parse_toml(&text, &origin),
        Some("csv") => {
            let kind = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            parse_csv(&text, &origin, kind)
        }
        _ => Err(ImportError::Syntax {
            origin,
            message: "records files are .toml, or .csv named customers.csv, sites.csv, accounts.csv, …".into(),
        }),
    }
}

fn check_duplicates(r: &Records) -> Result<(), ImportError> {
    let mut seen = HashSet::new();
    for c in &r.customers {
        if !seen.insert(("customer", c.reference.clone(), String::new(), String::new())) {
            return Err(c
                .origin
                .invalid(format!("customer {}", c.reference), "ref", "listed twice"));
        }
    }
    for s in &r.sites {
        if !seen.insert(("site", s.reference.clone(), String::new(), String::new())) {
            return Err(s.origin.invalid(format!("site {}", s.reference), "ref", "listed twice"));
        }
    }
    for a in &r.accounts {
        let k = (
            "account",
            a.spec.account.clone(),
            a.spec.receiver.clone(),
            a.spec.line.clone(),
        );
        if !seen.insert(k) {
            return Err(a.origin.invalid(
                format!("account {}", a.spec.account),
                "account",
                "listed twice with the same receiver and line",
            ));
        }
    }
    for c in &r.contacts {
        if !seen.insert(("contact", c.reference.clone(), String::new(), String::new())) {
            return Err(c
                .origin
                .invalid(format!("contact {}", c.reference), "ref", "listed twice"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Applying.

fn id_by_ref(tx: &Transaction<'_>, table: &'static str, reference: &str) -> Result<Option<i64>, StoreError> {
    let sql = match table {
        "customers" => "SELECT id FROM customers WHERE ref = ?1",
        "sites" => "SELECT id FROM sites WHERE ref = ?1",
        _ => "SELECT id FROM contacts WHERE ref = ?1",
    };
    Ok(tx
        .prepare_cached(sql)?
        .query_row(params![reference], |r| r.get(0))
        .optional()?)
}

fn resolve(
    tx: &Transaction<'_>,
    o: &Origin,
    what: String,
    field: &'static str,
    table: &'static str,
    reference: &str,
) -> Result<i64, ImportError> {
    id_by_ref(tx, table, reference)?.ok_or_else(|| {
        let kind = table.trim_end_matches('s');
        o.invalid(
            what,
            field,
            format!("no {kind} with ref {reference:?} (in this import or the database)"),
        )
    })
}

/// Apply validated records in one transaction and bump the accounts generation so running
/// daemons reload. `now_ms` stamps newly created accounts (supervision starts counting there).
/// Account keys are sealed with `seal` (`store::sealed`).
pub fn apply(conn: &mut Connection, records: &Records, seal: &SealKey) -> Result<ImportReport, ImportError> {
    apply_at(
        conn,
        records,
        crate::clock::unix_ms(time::OffsetDateTime::now_utc()),
        seal,
    )
}

/// [`apply`] with an explicit time.
pub fn apply_at(
    conn: &mut Connection,
    records: &Records,
    now_ms: i64,
    seal: &SealKey,
) -> Result<ImportReport, ImportError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(StoreError::from)?;
    let report = apply_in(&tx, records, now_ms, seal)?;
    tx.commit().map_err(StoreError::from)?;
    Ok(report)
}

/// Apply inside an existing transaction (the daemon's writer uses this for the demo data).
pub fn apply_in(tx: &Transaction<'_>, r: &Records, now_ms: i64, seal: &SealKey) -> Result<ImportReport, ImportError> {
    let e = |e: rusqlite::Error| ImportError::Store(StoreError::from(e));
    for c in &r.customers {
        tx.prepare_cached(
            "INSERT INTO customers (ref, public_id, name, notes) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (ref) DO UPDATE SET name = excluded.name, notes = excluded.notes",
        )
        .and_then(|mut s| {
            s.execute(params![
                c.reference,
                crate::correlate::alarms::public_id(),
                c.name,
                c.notes
            ])
        })
        .map_err(e)?;
    }
    for s in &r.sites {
        let cust = resolve(
            tx,
            &s.origin,
            format!("site {}", s.reference),
            "customer",
            "customers",
            &s.customer,
        )?;
        tx.prepare_cached(
            "INSERT INTO sites (ref, public_id, customer_id, name, address, postcode, city, responder_notes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (ref) DO UPDATE SET customer_id = excluded.customer_id, name = excluded.name,
                 address = excluded.address, postcode = excluded.postcode, city = excluded.city,
                 responder_notes = excluded.responder_notes",
        )
        .and_then(|mut st| {
            st.execute(params![
                s.reference,
                crate::correlate::alarms::public_id(),
                cust,
                s.name,
                s.address,
                s.postcode,
                s.city,
                s.responder_notes
            ])
        })
        .map_err(e)?;
    }
    for a in &r.accounts {
        let mut spec = a.spec.clone();
        spec.site_id = match &a.site {
            Some(site) => Some(resolve(
                tx,
                &a.origin,
                format!("account {}", spec.account),
                "site",
                "sites",
                site,
            )?),
            None => None,
        };
        spec.created_ms = now_ms;
        accounts::upsert(tx, &spec, seal)?;
    }
    for z in &r.zones {
        let site = resolve(tx, &z.origin, format!("zone {}", z.number), "site", "sites", &z.site)?;
        tx.prepare_cached(
            "INSERT INTO zones (site_id, number, description, zone_type) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (site_id, number) DO UPDATE SET description = excluded.description, zone_type = excluded.zone_type",
        )
        .and_then(|mut st| st.execute(params![site, z.number, z.description, z.zone_type]))
        .map_err(e)?;
    }
    for u in &r.users {
        let site = resolve(tx, &u.origin, format!("user {}", u.number), "site", "sites", &u.site)?;
        tx.prepare_cached(
            "INSERT INTO panel_users (site_id, number, name, role) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (site_id, number) DO UPDATE SET name = excluded.name, role = excluded.role",
        )
        .and_then(|mut st| st.execute(params![site, u.number, u.name, u.role]))
        .map_err(e)?;
    }
    for c in &r.contacts {
        let cust = resolve(
            tx,
            &c.origin,
            format!("contact {}", c.reference),
            "customer",
            "customers",
            &c.customer,
        )?;
        let phones = serde_json::to_string(&c.phones).unwrap_or_else(|_| "[]".into());
        tx.prepare_cached(
            "INSERT INTO contacts (ref, public_id, customer_id, name, phones, call_order, may_cancel)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (ref) DO UPDATE SET customer_id = excluded.customer_id, name = excluded.name,
                 phones = excluded.phones, call_order = excluded.call_order, may_cancel = excluded.may_cancel",
        )
        .and_then(|mut st| {
            st.execute(params![
                c.reference,
                crate::correlate::alarms::public_id(),
                cust,
                c.name,
                phones,
                c.call_order,
                c.may_cancel
            ])
        })
        .map_err(e)?;
    }
    for p in &r.procedures {
        let cust = match &p.customer {
            Some(c) => Some(resolve(
                tx,
                &p.origin,
                format!("procedure {}", p.category.as_str()),
                "customer",
                "customers",
                c,
            )?),
            None => None,
        };
        tx.execute(
            "DELETE FROM procedure_steps WHERE ifnull(customer_id, 0) = ifnull(?1, 0) AND category = ?2",
            params![cust, p.category.as_str()],
        )
        .map_err(e)?;
        for (n, step) in (1u32..).zip(&p.steps) {
            tx.prepare_cached(
                "INSERT INTO procedure_steps (customer_id, category, step, instruction, mandatory)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| st.execute(params![cust, p.category.as_str(), n, step, p.mandatory.contains(&n)]))
            .map_err(e)?;
        }
    }
    for pr in &r.priority_rules {
        let cust = match &pr.customer {
            Some(c) => Some(resolve(
                tx,
                &pr.origin,
                format!("priority rule {}", pr.category.as_str()),
                "customer",
                "customers",
                c,
            )?),
            None => None,
        };
        tx.execute(
            "DELETE FROM priority_rules WHERE ifnull(customer_id, 0) = ifnull(?1, 0) AND category = ?2",
            params![cust, pr.category.as_str()],
        )
        .map_err(e)?;
        tx.execute(
            "INSERT INTO priority_rules (customer_id, category, priority) VALUES (?1, ?2, ?3)",
            params![cust, pr.category.as_str(), pr.priority],
        )
        .map_err(e)?;
    }
    accounts::bump_generation(tx)?;
    Ok(ImportReport {
        customers: r.customers.len(),
        sites: r.sites.len(),
        accounts: r.accounts.len(),
        zones: r.zones.len(),
        users: r.users.len(),
        contacts: r.contacts.len(),
        procedures: r.procedures.len(),
        priority_rules: r.priority_rules.len(),
    })
}

/// The demo data set loaded into an empty database on first start.
pub const DEMO_RECORDS: &str = include_str!("../../fixtures/demo/records.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_agrees_with_counting_newlines() {
        let text = "a\n\nbc\nd\n";
        let idx = LineIndex::new(text);
        for at in 0..=text.len() + 2 {
            assert_eq!(idx.line(at), line_of(text, at), "offset {at}");
        }
        assert_eq!(LineIndex::new("").line(0), 1);
    }

    fn db() -> Connection {
        let conn = Connection::open_in_memory().expect("db");
        crate::store::schema::migrate(&conn).expect("schema");
        conn
    }

    #[test]
    fn demo_records_are_valid_and_import() {
        let r = parse_toml(DEMO_RECORDS, "demo").expect("demo records parse");
        assert!(!r.accounts.is_empty());
        let mut conn = db();
        apply(&mut conn, &r, &crate::store::sealed::test_key()).expect("demo imports");
    }

    #[test]
    fn errors_name_line_and_field_without_the_key() {
        let text = "[[account]]\naccount = \"1234\"\n\n[[account]]\naccount = \"5678\"\nkey = \"00112233\"\n";
        let e = parse_toml(text, "f.toml").expect_err("short key");
        let msg = e.to_string();
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("account 5678"), "{msg}");
        assert!(msg.contains("key"), "{msg}");
        assert!(!msg.contains("00112233"), "the key must not be echoed: {msg}");
        let e = parse_toml("[[account]]\naccount = \"12\"\n", "f").expect_err("short account");
        assert!(e.to_string().contains("3 to 16 hex"));
        let e = parse_toml("[[account]]\naccount = \"1234\"\nquirk = []\n", "f").expect_err("unknown field");
        assert!(e.to_string().contains("quirk"));
    }

    #[test]
    fn no_field_accepts_a_keypad_code() {
        for (kind, text) in [
            (
                "user",
                "[[user]]\nsite = \"S\"\nnumber = \"5\"\nname = \"X\"\ncode = \"1234\"\n",
            ),
            (
                "user",
                "[[user]]\nsite = \"S\"\nnumber = \"5\"\nname = \"X\"\npin = \"1234\"\n",
            ),
            (
                "contact",
                "[[contact]]\nref = \"K\"\ncustomer = \"C\"\nname = \"X\"\nkeypad_code = \"1234\"\n",
            ),
        ] {
            let e = parse_toml(text, "f").expect_err(kind);
            assert!(matches!(e, ImportError::Syntax { .. }), "{e}");
        }
        let e = parse_csv("site,number,name,code\nS,5,X,1234\n", "users.csv", "users").expect_err("csv");
        assert!(e.to_string().contains("code"), "{e}");
    }

    #[test]
    fn import_is_atomic_and_idempotent() {
        let mut conn = db();
        let text = r#"
[[customer]]
ref = "C1"
name = "Synthetic BV"
[[site]]
ref = "S1"
customer = "C1"
address = "Teststraat 1"
[[account]]
account = "1234"
site = "S1"
ats_category = "SP5"
[[zone]]
site = "S1"
number = "003"
description = "Back door"
[[user]]
site = "S1"
number = "5"
name = "A. Tester"
[[contact]]
ref = "K1"
customer = "C1"
name = "B. Tester"
phones = ["+31 20 000 0000"]
may_cancel = true
[[procedure]]
category = "burglary"
steps = ["Check cameras", "Call keyholders"]
[[priority_rule]]
customer = "C1"
category = "burglary"
priority = 2
"#;
        let r = parse_toml(text, "f").expect("ok");
        apply(&mut conn, &r, &crate::store::sealed::test_key()).expect("first");
        apply(&mut conn, &r, &crate::store::sealed::test_key()).expect("second");
        for (table, n) in [
            ("customers", 1),
            ("sites", 1),
            ("accounts", 1),
            ("zones", 1),
            ("panel_users", 1),
            ("contacts", 1),
            ("procedure_steps", 2),
            ("priority_rules", 1),
        ] {
            let got: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .expect("count");
            assert_eq!(got, n, "{table}");
        }
        let zone: String = conn
            .query_row("SELECT number FROM zones", [], |r| r.get(0))
            .expect("zone");
        assert_eq!(zone, "3", "zone numbers are stored without leading zeros");
        // A bad reference rejects everything, naming the line.
        let bad = format!("{text}\n[[zone]]\nsite = \"NOPE\"\nnumber = \"9\"\ndescription = \"x\"\n");
        let r = parse_toml(&bad.replace("C1", "C2").replace("S1\"\naddress", "S2\"\naddress"), "g").expect("parses");
        let e = apply(&mut conn, &r, &crate::store::sealed::test_key()).expect_err("unknown site");
        assert!(e.to_string().contains("NOPE"), "{e}");
        assert!(e.to_string().contains("line"), "{e}");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM customers", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1, "nothing of the failed import was written");
    }

    #[test]
    fn csv_files_by_kind() {
        let r = parse_csv(
            "ref,name,notes\nC1,Synthetic BV,\nC2,Other BV,vip\n",
            "customers.csv",
            "customers",
        )
        .expect("ok");
        assert_eq!(r.customers.len(), 2);
        let r = parse_csv(
            "account,site,key,quirks\n1234,S1,,crc_binary;trailing_nul\n",
            "accounts.csv",
            "accounts",
        )
        .expect("ok");
        assert!(r.accounts[0].spec.quirks.crc_binary && r.accounts[0].spec.quirks.trailing_nul);
        let r = parse_csv(
            "category,step,instruction\nfire,2,Call the fire brigade\nfire,1,Check the fire panel\n",
            "procedures.csv",
            "procedures",
        )
        .expect("ok");
        assert_eq!(
            r.procedures[0].steps,
            vec!["Check the fire panel", "Call the fire brigade"]
        );
        let e = parse_csv("ref,name\nC1,\n", "customers.csv", "customers").expect_err("empty name");
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
