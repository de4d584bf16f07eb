//! Records files: what `meldkamer import` reads. Customers, sites, transmitter accounts, zones,
//! panel users, contacts (keyholders), procedures, priority rules and schedules (a site's time
//! zone and checks, weekly windows, holiday calendars, one-off exceptions), in TOML (one file
//! with every kind) or CSV (one file per kind, named after it: `customers.csv`, `sites.csv`,
//! `accounts.csv`, `zones.csv`, `users.csv`, `contacts.csv`, `procedures.csv`,
//! `priority_rules.csv`, `schedules.csv`, `schedule_windows.csv`, `holidays.csv`,
//! `schedule_exceptions.csv`). Format, columns and rules: `fixtures/records/README.md`.
//!
//! Everything is validated before anything is written: every problem of every file of a run
//! is collected ([`Problems`], one line each: `FILE:LINE: WHAT: FIELD: PROBLEM`), not only the
//! first, so one run shows all there is to fix. Then the records are applied in one
//! transaction (all or nothing: one problem anywhere and nothing is written) and idempotently
//! (records are keyed by their natural keys, so a re-import updates, never duplicates).
//! There is no field for a panel's keypad code, and an unknown field is an error.

mod problem;
mod read;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

pub use problem::{Problem, Problems};
pub use read::ZONE_TYPES;
use read::{Kind, Parsed};

use crate::protocol::codes::Category;
use crate::store::StoreError;
use crate::store::accounts::{self, AccountSpec};
use crate::store::sealed::SealKey;

/// An import that cannot be applied. Never contains a key.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Files that cannot be read, are not TOML or CSV, or hold values that are not acceptable
    /// or references to nothing: every problem of the run.
    #[error("nothing was imported:\n{0}")]
    Invalid(Problems),
    /// The database refused.
    #[error("writing to the database")]
    Store(#[from] StoreError),
    /// The keys file that seals the account keys is unusable.
    #[error(transparent)]
    Keys(#[from] crate::store::sealed::SealKeyError),
}

impl ImportError {
    /// The problems of the records (none when the database failed).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ImportError::Invalid(p) => p.as_slice(),
            ImportError::Store(_) | ImportError::Keys(_) => &[],
        }
    }
}

/// Where a record came from, for error messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// File name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
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

/// A site's schedule: its time zone, holiday calendar and the lateness it is checked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// Where from.
    pub origin: Origin,
    /// Site reference.
    pub site: String,
    /// IANA time zone.
    pub time_zone: String,
    /// Holiday calendar, if any.
    pub holidays: Option<String>,
    /// Which kinds are checked.
    pub checks: crate::correlate::schedule::plan::Checks,
}

/// A weekly window of a site. The windows of a site in an import replace all its windows.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpec {
    /// Where from.
    pub origin: Origin,
    /// Site reference.
    pub site: String,
    /// The window.
    pub window: crate::correlate::schedule::plan::WeeklyWindow,
}

/// A public holiday of a calendar.
#[derive(Debug, Clone, PartialEq)]
pub struct HolidaySpec {
    /// Where from.
    pub origin: Origin,
    /// Calendar name.
    pub calendar: String,
    /// The date.
    pub date: jiff::civil::Date,
    /// Its name.
    pub name: String,
}

/// A one-off exception of a site (keyed by site and first date).
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionSpec {
    /// Where from.
    pub origin: Origin,
    /// Site reference.
    pub site: String,
    /// Dates and hours.
    pub exception: crate::correlate::schedule::plan::Exception,
    /// Why (for operators).
    pub reason: String,
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
    /// Schedules.
    pub schedules: Vec<ScheduleSpec>,
    /// Weekly windows.
    pub windows: Vec<WindowSpec>,
    /// Public holidays.
    pub holidays: Vec<HolidaySpec>,
    /// One-off exceptions.
    pub exceptions: Vec<ExceptionSpec>,
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
        self.schedules.extend(other.schedules);
        self.windows.extend(other.windows);
        self.holidays.extend(other.holidays);
        self.exceptions.extend(other.exceptions);
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
    /// Schedules written.
    pub schedules: usize,
    /// Weekly windows written.
    pub windows: usize,
    /// Public holidays written.
    pub holidays: usize,
    /// Exceptions written.
    pub exceptions: usize,
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
        )?;
        if self.schedules + self.windows + self.holidays + self.exceptions > 0 {
            write!(
                f,
                ", {} schedule(s), {} window(s), {} holiday(s), {} exception(s)",
                self.schedules, self.windows, self.holidays, self.exceptions
            )?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Reading.

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
    "schedules",
    "schedule_windows",
    "holidays",
    "schedule_exceptions",
];

impl Parsed {
    /// The records, or every problem found.
    fn into_result(mut self) -> Result<Records, ImportError> {
        read::duplicates(&self.records, &mut self.problems);
        if self.problems.is_empty() {
            Ok(self.records)
        } else {
            Err(ImportError::Invalid(Problems::new(self.problems)))
        }
    }
}

/// Parse and validate a TOML records file: every problem in it, or its records.
pub fn parse_toml(text: &str, origin: &str) -> Result<Records, ImportError> {
    let mut p = Parsed::default();
    read::read_toml(text, origin, &mut p);
    p.into_result()
}

/// Parse and validate a CSV records file; `kind` is one of [`CSV_KINDS`].
pub fn parse_csv(text: &str, origin: &str, kind: &str) -> Result<Records, ImportError> {
    let mut p = Parsed::default();
    read_csv_kind(text, origin, kind, &mut p);
    p.into_result()
}

fn read_csv_kind(text: &str, origin: &str, kind: &str, p: &mut Parsed) {
    match Kind::from_csv(kind) {
        Some(k) => read::read_csv(text, origin, k, p),
        None => p.file_problem(
            origin,
            0,
            "",
            format!(
                "unknown CSV record kind {:?}: name the file one of {}",
                problem::printable(kind),
                CSV_KINDS
                    .iter()
                    .map(|k| format!("{k}.csv"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

fn read_file(path: &Path, p: &mut Parsed) {
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            p.file_problem(&origin, 0, "", format!("cannot read: {e}"));
            return;
        }
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => read::read_toml(&text, &origin, p),
        Some("csv") => {
            let kind = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            read_csv_kind(&text, &origin, kind, p);
        }
        _ => p.file_problem(
            &origin,
            0,
            "",
            "records files are .toml, or .csv named customers.csv, sites.csv, accounts.csv, …",
        ),
    }
}

/// Read and validate a file: `.toml`, or `.csv` named after its kind.
pub fn parse_file(path: &Path) -> Result<Records, ImportError> {
    parse_files(&[path.to_path_buf()])
}

/// Read and validate every file: every problem of all of them (an entry listed twice, also
/// across files, included), or all their records.
pub fn parse_files(paths: &[PathBuf]) -> Result<Records, ImportError> {
    let mut p = Parsed::default();
    for path in paths {
        read_file(path, &mut p);
    }
    p.into_result()
}

/// [`parse_files`], and every reference to a customer or site that is neither in the files
/// nor in the database (`None`: there is none yet): what `meldkamer import` checks before it
/// writes.
pub fn prepare(conn: Option<&Connection>, paths: &[PathBuf]) -> Result<Records, ImportError> {
    let mut p = Parsed::default();
    for path in paths {
        read_file(path, &mut p);
    }
    let unknown = read::references(conn, &p)?;
    p.problems.extend(unknown);
    p.into_result()
}

// ---------------------------------------------------------------------------------------------
// Applying.

/// Settings for a bulk import on a connection of its own (`meldkamer import`; the connection
/// is closed afterwards). The import is one transaction: with SQLite's default page cache
/// (2 MiB) a million customers, sites and accounts spill modified pages into the WAL in the
/// middle of it and read them back for nearly every insert into an index whose keys arrive out
/// of order (`public_id`, `ref`), which was most of the import's time. The cache may grow to
/// 1 GiB (pages are allocated as they are used: a million accounts with their customers and
/// sites are about 430 MB). (`temp_store = MEMORY` would make it slower: statement journals
/// are in memory up to 64 KiB anyway, and without a spill size SQLite keeps them in 1 KiB
/// chunks, several allocations per row.)
pub fn bulk_pragmas(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "cache_size", BULK_CACHE_KIB)
}

/// The page cache of [`bulk_pragmas`], negative: KiB.
const BULK_CACHE_KIB: i64 = -1_048_576;

/// The customers and sites an import has written so far, by reference: most references of a
/// large import are to records of the same import, found here instead of by an index search
/// per row.
#[derive(Default)]
struct Written<'r> {
    customers: HashMap<&'r str, i64>,
    sites: HashMap<&'r str, i64>,
}

impl Written<'_> {
    fn get(&self, kind: Kind, reference: &str) -> Option<i64> {
        match kind {
            Kind::Customer => self.customers.get(reference).copied(),
            Kind::Site => self.sites.get(reference).copied(),
            _ => None,
        }
    }
}

/// The id of the customer or site `reference` an upsert has just written: the new row id if it
/// inserted (the last inserted row id moved; an update leaves it), else found by its reference.
/// (Not `RETURNING id`: a statement with `RETURNING` keeps a statement journal, several page
/// copies per row.)
fn upserted_id(tx: &Transaction<'_>, before: i64, kind: Kind, reference: &str) -> Result<i64, StoreError> {
    let now = tx.last_insert_rowid();
    if now != before {
        return Ok(now);
    }
    Ok(tx
        .prepare_cached(read::lookup_sql(kind))?
        .query_row(params![reference], |r| r.get(0))?)
}

/// The id of the customer or site `reference`; none, and a problem in `unknown`, when there is
/// no such record.
#[allow(clippy::too_many_arguments)]
fn resolve(
    tx: &Transaction<'_>,
    written: &Written<'_>,
    unknown: &mut Vec<Problem>,
    o: &Origin,
    what: &dyn Fn() -> String,
    field: &str,
    kind: Kind,
    reference: &str,
) -> Result<Option<i64>, StoreError> {
    if let Some(id) = written.get(kind, reference) {
        return Ok(Some(id));
    }
    let id = tx
        .prepare_cached(read::lookup_sql(kind))?
        .query_row(params![reference], |r| r.get(0))
        .optional()?;
    if id.is_none() {
        unknown.push(read::unknown_ref(o, &what(), field, kind, reference));
    }
    Ok(id)
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
    // References to nothing are collected, not returned at the first: all of them in one
    // report. The caller's transaction is not committed then.
    let mut unknown = Vec::new();
    let mut written = Written {
        customers: HashMap::with_capacity(r.customers.len()),
        sites: HashMap::with_capacity(r.sites.len()),
    };
    // Statements are prepared once, not looked up in the statement cache for every row (the
    // cache hashes the whole SQL text on each lookup).
    let mut insert_customer = tx
        .prepare_cached(
            "INSERT INTO customers (ref, public_id, name, notes) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (ref) DO UPDATE SET name = excluded.name, notes = excluded.notes",
        )
        .map_err(e)?;
    for c in &r.customers {
        let before = tx.last_insert_rowid();
        insert_customer
            .execute(params![
                c.reference,
                crate::correlate::alarms::public_id(),
                c.name,
                c.notes
            ])
            .map_err(e)?;
        let id = upserted_id(tx, before, Kind::Customer, &c.reference)?;
        written.customers.insert(&c.reference, id);
    }
    drop(insert_customer);
    let mut insert_site = tx
        .prepare_cached(
            "INSERT INTO sites (ref, public_id, customer_id, name, address, postcode, city, responder_notes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (ref) DO UPDATE SET customer_id = excluded.customer_id, name = excluded.name,
                 address = excluded.address, postcode = excluded.postcode, city = excluded.city,
                 responder_notes = excluded.responder_notes",
        )
        .map_err(e)?;
    for s in &r.sites {
        let what = || format!("site {}", s.reference);
        let Some(cust) = resolve(
            tx,
            &written,
            &mut unknown,
            &s.origin,
            &what,
            "customer",
            Kind::Customer,
            &s.customer,
        )?
        else {
            continue;
        };
        let before = tx.last_insert_rowid();
        insert_site
            .execute(params![
                s.reference,
                crate::correlate::alarms::public_id(),
                cust,
                s.name,
                s.address,
                s.postcode,
                s.city,
                s.responder_notes
            ])
            .map_err(e)?;
        let id = upserted_id(tx, before, Kind::Site, &s.reference)?;
        written.sites.insert(&s.reference, id);
    }
    drop(insert_site);
    let mut upsert = accounts::Upsert::new(tx)?;
    for a in &r.accounts {
        let site_id = match &a.site {
            Some(site) => {
                let what = || format!("account {}", a.spec.account);
                let Some(id) = resolve(tx, &written, &mut unknown, &a.origin, &what, "site", Kind::Site, site)? else {
                    continue;
                };
                Some(id)
            }
            None => None,
        };
        upsert.run(&a.spec, site_id, now_ms, seal)?;
    }
    drop(upsert);
    for z in &r.zones {
        let what = || format!("zone {} of site {}", z.number, z.site);
        let Some(site) = resolve(
            tx,
            &written,
            &mut unknown,
            &z.origin,
            &what,
            "site",
            Kind::Site,
            &z.site,
        )?
        else {
            continue;
        };
        tx.prepare_cached(
            "INSERT INTO zones (site_id, number, description, zone_type) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (site_id, number) DO UPDATE SET description = excluded.description, zone_type = excluded.zone_type",
        )
        .and_then(|mut st| st.execute(params![site, z.number, z.description, z.zone_type]))
        .map_err(e)?;
    }
    for u in &r.users {
        let what = || format!("user {} of site {}", u.number, u.site);
        let Some(site) = resolve(
            tx,
            &written,
            &mut unknown,
            &u.origin,
            &what,
            "site",
            Kind::Site,
            &u.site,
        )?
        else {
            continue;
        };
        tx.prepare_cached(
            "INSERT INTO panel_users (site_id, number, name, role) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (site_id, number) DO UPDATE SET name = excluded.name, role = excluded.role",
        )
        .and_then(|mut st| st.execute(params![site, u.number, u.name, u.role]))
        .map_err(e)?;
    }
    for c in &r.contacts {
        let what = || format!("contact {}", c.reference);
        let Some(cust) = resolve(
            tx,
            &written,
            &mut unknown,
            &c.origin,
            &what,
            "customer",
            Kind::Customer,
            &c.customer,
        )?
        else {
            continue;
        };
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
            Some(c) => {
                let what = || format!("procedure {}", p.category.as_str());
                let Some(id) = resolve(
                    tx,
                    &written,
                    &mut unknown,
                    &p.origin,
                    &what,
                    "customer",
                    Kind::Customer,
                    c,
                )?
                else {
                    continue;
                };
                Some(id)
            }
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
            Some(c) => {
                let what = || format!("priority rule {}", pr.category.as_str());
                let Some(id) = resolve(
                    tx,
                    &written,
                    &mut unknown,
                    &pr.origin,
                    &what,
                    "customer",
                    Kind::Customer,
                    c,
                )?
                else {
                    continue;
                };
                Some(id)
            }
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
    apply_schedules(tx, r, &written, &mut unknown)?;
    if !unknown.is_empty() {
        return Err(ImportError::Invalid(Problems::new(unknown)));
    }
    accounts::bump_generation(tx)?;
    if !(r.schedules.is_empty() && r.windows.is_empty() && r.holidays.is_empty() && r.exceptions.is_empty()) {
        // Every site's schedule is loaded again by the supervision task.
        crate::correlate::schedule::store::changed(tx, None, now_ms)?;
    }
    Ok(ImportReport {
        customers: r.customers.len(),
        sites: r.sites.len(),
        accounts: r.accounts.len(),
        zones: r.zones.len(),
        users: r.users.len(),
        contacts: r.contacts.len(),
        procedures: r.procedures.len(),
        priority_rules: r.priority_rules.len(),
        schedules: r.schedules.len(),
        windows: r.windows.len(),
        holidays: r.holidays.len(),
        exceptions: r.exceptions.len(),
    })
}

/// Schedules, holidays, windows and exceptions. The windows of each site an import lists
/// replace all of that site's windows (a window has no key of its own); exceptions are keyed by
/// site and first date, holidays by calendar and date, schedules by site.
fn apply_schedules(
    tx: &Transaction<'_>,
    r: &Records,
    written: &Written<'_>,
    unknown: &mut Vec<Problem>,
) -> Result<(), ImportError> {
    use crate::correlate::schedule::plan::days_text;
    let e = |e: rusqlite::Error| ImportError::Store(StoreError::from(e));
    for h in &r.holidays {
        tx.prepare_cached(
            "INSERT INTO holidays (calendar, date, name) VALUES (?1, ?2, ?3)
             ON CONFLICT (calendar, date) DO UPDATE SET name = excluded.name",
        )
        .and_then(|mut st| st.execute(params![h.calendar, h.date.to_string(), h.name]))
        .map_err(e)?;
    }
    for s in &r.schedules {
        let what = || format!("schedule of site {}", s.site);
        let Some(site) = resolve(tx, written, unknown, &s.origin, &what, "site", Kind::Site, &s.site)? else {
            continue;
        };
        if let Some(h) = &s.holidays
            && resolve(tx, written, unknown, &s.origin, &what, "holidays", Kind::Holiday, h)?.is_none()
        {
            continue;
        }
        let c = s.checks;
        tx.prepare_cached(
            "INSERT INTO schedules (site_id, time_zone, holidays, late_to_close, unexpected_opening, late_to_open,
                                    early_close)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (site_id) DO UPDATE SET time_zone = excluded.time_zone, holidays = excluded.holidays,
                 late_to_close = excluded.late_to_close, unexpected_opening = excluded.unexpected_opening,
                 late_to_open = excluded.late_to_open, early_close = excluded.early_close",
        )
        .and_then(|mut st| {
            st.execute(params![
                site,
                s.time_zone,
                s.holidays.clone().unwrap_or_default(),
                c.late_to_close,
                c.unexpected_opening,
                c.late_to_open,
                c.early_close
            ])
        })
        .map_err(e)?;
    }
    let mut replaced = std::collections::HashSet::new();
    for w in &r.windows {
        let what = || format!("window {} of site {}", days_text(w.window.days), w.site);
        let Some(site) = resolve(tx, written, unknown, &w.origin, &what, "site", Kind::Schedule, &w.site)? else {
            continue;
        };
        if replaced.insert(site) {
            tx.execute("DELETE FROM schedule_windows WHERE site_id = ?1", params![site])
                .map_err(e)?;
        }
        let x = w.window;
        tx.prepare_cached(
            "INSERT INTO schedule_windows (site_id, days, open_min, close_min, grace_min) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut st| st.execute(params![site, x.days, x.hours.open, x.hours.close, x.grace]))
        .map_err(e)?;
    }
    for x in &r.exceptions {
        let what = || format!("exception {} of site {}", x.exception.from, x.site);
        let Some(site) = resolve(tx, written, unknown, &x.origin, &what, "site", Kind::Schedule, &x.site)? else {
            continue;
        };
        let hours: Vec<String> = x
            .exception
            .hours
            .iter()
            .map(|h| {
                use crate::correlate::schedule::plan::clock_text;
                format!("{}-{}", clock_text(h.open), clock_text(h.close))
            })
            .collect();
        tx.prepare_cached(
            "INSERT INTO schedule_exceptions (site_id, from_date, to_date, hours, grace_min, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (site_id, from_date) DO UPDATE SET to_date = excluded.to_date, hours = excluded.hours,
                 grace_min = excluded.grace_min, reason = excluded.reason",
        )
        .and_then(|mut st| {
            st.execute(params![
                site,
                x.exception.from.to_string(),
                x.exception.to.to_string(),
                hours.join(";"),
                x.exception.grace,
                x.reason
            ])
        })
        .map_err(e)?;
    }
    Ok(())
}

/// The demo data set loaded into an empty database on first start.
pub const DEMO_RECORDS: &str = include_str!("../../fixtures/demo/records.toml");

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            msg.contains("\nf.toml:4: account 5678: key: a hex key must be"),
            "{msg}"
        );
        assert!(!msg.contains("00112233"), "the key must not be echoed: {msg}");
        let e = parse_toml("[[account]]\naccount = \"1234\"\nkey = 112233\n", "f").expect_err("a number");
        assert!(!e.to_string().contains("112233"), "nor a key of the wrong type: {e}");
        assert!(e.to_string().contains("f:3: account 1234: key: invalid type"), "{e}");
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
            let p = &e.problems()[0];
            assert!(p.problem.starts_with("unknown field"), "{e}");
            assert!(!p.field.is_empty() && !e.to_string().contains("1234"), "{e}");
        }
        let e = parse_csv("site,number,name,code\nS,5,X,1234\n", "users.csv", "users").expect_err("csv");
        assert!(e.to_string().contains("users.csv:1: code: unknown column"), "{e}");
        assert!(!e.to_string().contains("1234"), "{e}");
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
            // (the default procedures of the schedule categories come with the schema)
            ("procedure_steps WHERE category = 'burglary'", 2),
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
        // The entry's line is its [[zone]] header, the one before `site = "NOPE"`.
        let line = bad.lines().position(|l| l == "site = \"NOPE\"").expect("line");
        assert!(
            e.to_string().contains(&format!(
                "\ng:{line}: zone 9 of site NOPE: site: no site with ref \"NOPE\""
            )),
            "{e}"
        );
        let n: i64 = conn
            .query_row("SELECT count(*) FROM customers", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1, "nothing of the failed import was written");
    }

    /// References to customers and sites of the same import are resolved from what the import
    /// wrote (not by a lookup per row), to the right rows also when ids and file order differ
    /// and some references are to rows already in the database.
    #[test]
    fn references_resolve_to_the_rows_an_import_wrote() {
        let mut conn = db();
        let key = crate::store::sealed::test_key();
        let first = parse_toml("[[customer]]\nref = \"C0\"\nname = \"Zero\"\n", "a").expect("ok");
        apply(&mut conn, &first, &key).expect("first");
        let text = "[[customer]]\nref = \"C2\"\nname = \"Two\"\n[[customer]]\nref = \"C1\"\nname = \"One\"\n\
            [[site]]\nref = \"S1\"\ncustomer = \"C1\"\naddress = \"x\"\n\
            [[site]]\nref = \"S0\"\ncustomer = \"C0\"\naddress = \"x\"\n\
            [[site]]\nref = \"S2\"\ncustomer = \"C2\"\naddress = \"x\"\n\
            [[account]]\naccount = \"1002\"\nsite = \"S2\"\n[[account]]\naccount = \"1000\"\nsite = \"S0\"\n\
            [[zone]]\nsite = \"S1\"\nnumber = \"1\"\ndescription = \"Door\"\n";
        let r = parse_toml(text, "b").expect("ok");
        // Twice: the second time every row exists and is updated.
        for _ in 0..2 {
            apply(&mut conn, &r, &key).expect("import");
            let pairs = |sql: &str| -> Vec<(String, String)> {
                let mut st = conn.prepare(sql).expect("sql");
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .expect("rows")
                    .collect::<Result<_, _>>()
                    .expect("rows")
            };
            let site_of =
                pairs("SELECT s.ref, c.ref FROM sites s JOIN customers c ON c.id = s.customer_id ORDER BY s.ref");
            let expect = |v: &[(&str, &str)]| -> Vec<(String, String)> {
                v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
            };
            assert_eq!(site_of, expect(&[("S0", "C0"), ("S1", "C1"), ("S2", "C2")]));
            let account_of =
                pairs("SELECT a.account, s.ref FROM accounts a JOIN sites s ON s.id = a.site_id ORDER BY a.account");
            assert_eq!(account_of, expect(&[("1000", "S0"), ("1002", "S2")]));
            let zone_of = pairs("SELECT z.number, s.ref FROM zones z JOIN sites s ON s.id = z.site_id");
            assert_eq!(zone_of, expect(&[("1", "S1")]));
        }
    }

    #[test]
    fn a_bulk_import_keeps_its_pages_in_memory() {
        let conn = db();
        bulk_pragmas(&conn).expect("pragmas");
        let cache: i64 = conn.query_row("PRAGMA cache_size", [], |r| r.get(0)).expect("cache");
        assert_eq!(cache, BULK_CACHE_KIB);
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
        assert!(
            e.to_string()
                .contains("customers.csv:2: customer C1: name: must not be empty"),
            "{e}"
        );
    }
}
