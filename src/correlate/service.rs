//! Service periods: a site, or an account number (every path of that transmitter), **on test**
//! or **out of service**, from now until a time, with who set it and why.
//!
//! | | on test | out of service |
//! |---|---|---|
//! | events | stored, listed with the period ("shown as test") | stored |
//! | alarms and troubles | none | one supervisor-queue item per category (never an operator alarm) |
//! | openings, closings | the armed state is kept; no schedule alarm | the same |
//! | communication lost | to the supervisor queue, marked | the same |
//! | when it ends | a summary of what came in, in the supervisor queue | nothing |
//!
//! A period ends by itself at its `until` (the supervision task's timer structure) or by hand.
//! A new period for the same site or account replaces the open one. The writer keeps the open
//! periods in memory ([`PeriodCache`]) and reads them again whenever `schedule_changes` moved,
//! which every change of a period appends to (the supervision task reads it too).

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use super::alarms::{self, AlarmSpec};
use crate::protocol::codes::Category;
use crate::store::StoreError;

/// Longest test period.
pub const MAX_TEST_MS: i64 = 7 * 86_400_000;
/// Longest out-of-service period (set again to go on).
pub const MAX_OUT_OF_SERVICE_MS: i64 = 366 * 86_400_000;
/// Priority of a test's summary in the supervisor queue.
pub const SUMMARY_PRIORITY: u8 = 7;

/// What a period does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Events stored and shown as test, no alarm; a summary at the end.
    Test,
    /// Events stored and shown to the supervisor; no operator alarm.
    OutOfService,
}

impl Mode {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Test => "test",
            Mode::OutOfService => "out_of_service",
        }
    }

    /// Parse the stable name.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "test" => Some(Mode::Test),
            "out_of_service" => Some(Mode::OutOfService),
            _ => None,
        }
    }

    /// For people ("on test", "out of service").
    pub fn label(self) -> &'static str {
        match self {
            Mode::Test => "on test",
            Mode::OutOfService => "out of service",
        }
    }

    fn longest_ms(self) -> i64 {
        match self {
            Mode::Test => MAX_TEST_MS,
            Mode::OutOfService => MAX_OUT_OF_SERVICE_MS,
        }
    }
}

/// What a period applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A site (row id) and every account of it.
    Site(i64),
    /// An account number (every row with that number: both paths of a transmitter).
    Account(String),
}

/// An open period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// Row id.
    pub id: i64,
    /// Mode.
    pub mode: Mode,
    /// Starts.
    pub from_ms: i64,
    /// Ends.
    pub until_ms: i64,
}

impl Period {
    /// Whether it applies at `at`.
    pub fn covers(&self, at: i64) -> bool {
        self.from_ms <= at && at < self.until_ms
    }
}

/// The open periods, for the writer: looked up for every event of a frame, read again when
/// `schedule_changes` moved (one indexed read per transaction).
#[derive(Debug, Default)]
pub struct PeriodCache {
    seen: Option<i64>,
    by_site: HashMap<i64, Period>,
    by_account: HashMap<String, Period>,
}

impl PeriodCache {
    /// Read the open periods again if anything changed since the last look.
    pub fn refresh(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let newest: i64 = tx
            .prepare_cached("SELECT ifnull(max(id), 0) FROM schedule_changes")?
            .query_row([], |r| r.get(0))?;
        if self.seen == Some(newest) {
            return Ok(());
        }
        self.by_site.clear();
        self.by_account.clear();
        for (p, site, account) in open(tx)? {
            match (site, account) {
                (Some(s), _) => {
                    self.by_site.insert(s, p);
                }
                (None, Some(a)) => {
                    self.by_account.insert(a, p);
                }
                (None, None) => {}
            }
        }
        self.seen = Some(newest);
        Ok(())
    }

    /// Forget (after a rollback): the next transaction reads the periods again.
    pub fn forget(&mut self) {
        self.seen = None;
    }

    /// The period that applies to an event of `account` (of site `site_id`) received at `at`:
    /// the account's own, else its site's.
    pub fn period_for(&self, account: &str, site_id: Option<i64>, at: i64) -> Option<&Period> {
        if self.by_site.is_empty() && self.by_account.is_empty() {
            return None;
        }
        self.by_account
            .get(account)
            .filter(|p| p.covers(at))
            .or_else(|| site_id.and_then(|s| self.by_site.get(&s)).filter(|p| p.covers(at)))
    }
}

/// Every open period, with its site or account.
pub fn open(conn: &Connection) -> Result<Vec<(Period, Option<i64>, Option<String>)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, mode, from_ms, until_ms, site_id, account FROM service_periods WHERE ended_ms IS NULL",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, mode, from_ms, until_ms, site, account) = row?;
        if let Some(mode) = Mode::parse(&mode) {
            out.push((
                Period {
                    id,
                    mode,
                    from_ms,
                    until_ms,
                },
                site,
                account,
            ));
        }
    }
    Ok(out)
}

/// The open period of a site (not of its accounts) at `at`, if any: schedule alarms of the
/// site are held back while it lasts.
pub fn site_period(conn: &Connection, site_id: i64, at: i64) -> Result<Option<Period>, StoreError> {
    let row: Option<(i64, String, i64, i64)> = conn
        .prepare_cached(
            "SELECT id, mode, from_ms, until_ms FROM service_periods
             WHERE site_id = ?1 AND ended_ms IS NULL AND from_ms <= ?2 AND until_ms > ?2",
        )?
        .query_row(params![site_id, at], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    Ok(row.and_then(|(id, mode, from_ms, until_ms)| {
        Mode::parse(&mode).map(|mode| Period {
            id,
            mode,
            from_ms,
            until_ms,
        })
    }))
}

/// The open period that applies to an account row at `at` (its number's, else its site's).
pub fn account_period(conn: &Connection, account_id: i64, at: i64) -> Result<Option<Period>, StoreError> {
    let row: Option<(i64, String, i64, i64)> = conn
        .prepare_cached(
            "SELECT p.id, p.mode, p.from_ms, p.until_ms FROM accounts a JOIN service_periods p
                 ON (p.account = a.account OR p.site_id = a.site_id)
             WHERE a.id = ?1 AND p.ended_ms IS NULL AND p.from_ms <= ?2 AND p.until_ms > ?2
             ORDER BY p.account IS NULL LIMIT 1",
        )?
        .query_row(params![account_id, at], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    Ok(row.and_then(|(id, mode, from_ms, until_ms)| {
        Mode::parse(&mode).map(|mode| Period {
            id,
            mode,
            from_ms,
            until_ms,
        })
    }))
}

/// Why a period cannot be set or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// No such site or account.
    #[error("no such site or account")]
    NotFound,
    /// The end is not after now, or too far.
    #[error("{0}")]
    BadEnd(String),
    /// A reason is needed.
    #[error("a reason is needed, at most {0} characters")]
    NoReason(usize),
    /// Nothing to end.
    #[error("the site or account is neither on test nor out of service")]
    NothingOpen,
    /// Database.
    #[error("database error: {0}")]
    Store(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Store(e.to_string())
    }
}

impl From<rusqlite::Error> for ServiceError {
    fn from(e: rusqlite::Error) -> Self {
        ServiceError::Store(e.to_string())
    }
}

/// A target named by a site reference or an account number, as it is in the database: the
/// target, the site (the account's, for an account), and a name for people.
pub fn resolve(
    conn: &Connection,
    site_ref: Option<&str>,
    account: Option<&str>,
) -> Result<Option<(Target, Option<i64>, String)>, StoreError> {
    match (site_ref, account) {
        (Some(r), None) => {
            let id: Option<i64> = conn
                .prepare_cached("SELECT id FROM sites WHERE ref = ?1")?
                .query_row(params![r], |x| x.get(0))
                .optional()?;
            Ok(id.map(|id| (Target::Site(id), Some(id), format!("site {r}"))))
        }
        (None, Some(a)) => {
            let a = a.trim().to_ascii_uppercase();
            let site: Option<Option<i64>> = conn
                .prepare_cached("SELECT site_id FROM accounts WHERE account = ?1 ORDER BY id LIMIT 1")?
                .query_row(params![a], |x| x.get(0))
                .optional()?;
            Ok(site.map(|s| (Target::Account(a.clone()), s, format!("account {a}"))))
        }
        _ => Ok(None),
    }
}

fn open_of(tx: &Transaction<'_>, target: &Target) -> Result<Option<i64>, StoreError> {
    let (site, account) = match target {
        Target::Site(s) => (Some(*s), None),
        Target::Account(a) => (None, Some(a.as_str())),
    };
    Ok(tx
        .prepare_cached(
            "SELECT id FROM service_periods WHERE ended_ms IS NULL
               AND ifnull(site_id, -1) = ifnull(?1, -1) AND ifnull(account, '') = ifnull(?2, '')",
        )?
        .query_row(params![site, account], |r| r.get(0))
        .optional()?)
}

/// Put `target` (of site `site_id`) on test or out of service until `until_ms`, replacing an
/// open period of the same target. Returns the period's id.
#[allow(clippy::too_many_arguments)]
pub fn start(
    tx: &Transaction<'_>,
    target: &Target,
    site_id: Option<i64>,
    mode: Mode,
    until_ms: i64,
    by: &str,
    reason: &str,
    now: i64,
) -> Result<i64, ServiceError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > alarms::MAX_NOTE {
        return Err(ServiceError::NoReason(alarms::MAX_NOTE));
    }
    if until_ms <= now || until_ms > now + mode.longest_ms() {
        return Err(ServiceError::BadEnd(format!(
            "{} ends after now and within {} days",
            mode.label(),
            mode.longest_ms() / 86_400_000
        )));
    }
    if let Some(old) = open_of(tx, target)? {
        end(tx, old, by, now, "replaced by a new period")?;
    }
    let (site, account) = match target {
        Target::Site(s) => (Some(*s), None),
        Target::Account(a) => (None, Some(a.clone())),
    };
    tx.prepare_cached(
        "INSERT INTO service_periods (mode, site_id, account, from_ms, until_ms, set_by, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![mode.as_str(), site, account, now, until_ms, by, reason])?;
    let id = tx.last_insert_rowid();
    super::schedule::store::changed(tx, Some(site_id.unwrap_or(0)), now)?;
    Ok(id)
}

/// End the open period of `target` by hand.
pub fn end_target(tx: &Transaction<'_>, target: &Target, by: &str, now: i64) -> Result<i64, ServiceError> {
    let Some(id) = open_of(tx, target)? else {
        return Err(ServiceError::NothingOpen);
    };
    end(tx, id, by, now, "ended by hand")?;
    Ok(id)
}

/// End a period (if still open): `by` and `how` are recorded; a test gets its summary in the
/// supervisor queue, with its events linked. The site's schedule is looked at again. Returns
/// the summary alarm of a test.
pub fn end(tx: &Transaction<'_>, id: i64, by: &str, now: i64, how: &str) -> Result<Option<i64>, StoreError> {
    type Row = (
        String,
        Option<i64>,
        Option<String>,
        i64,
        i64,
        String,
        String,
        Option<i64>,
    );
    let row: Option<Row> = tx
        .prepare_cached(
            "SELECT mode, site_id, account, from_ms, until_ms, set_by, reason, ended_ms FROM service_periods WHERE id = ?1",
        )?
        .query_row(params![id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .optional()?;
    let Some((mode, site, account, from_ms, until_ms, set_by, reason, None)) = row else {
        return Ok(None);
    };
    let ended = now.min(until_ms);
    tx.prepare_cached("UPDATE service_periods SET ended_ms = ?2, ended_by = ?3 WHERE id = ?1")?
        .execute(params![id, ended, by])?;
    let site_of_account: Option<i64> = match &account {
        Some(a) => tx
            .prepare_cached("SELECT site_id FROM accounts WHERE account = ?1 ORDER BY id LIMIT 1")?
            .query_row(params![a], |r| r.get::<_, Option<i64>>(0))
            .optional()?
            .flatten(),
        None => None,
    };
    let site_id = site.or(site_of_account);
    super::schedule::store::changed(tx, Some(site_id.unwrap_or(0)), now)?;
    if Mode::parse(&mode) != Some(Mode::Test) {
        return Ok(None);
    }
    let name = match (&account, site) {
        (Some(a), _) => format!("account {a}"),
        (None, Some(s)) => tx
            .prepare_cached("SELECT 'site ' || ref FROM sites WHERE id = ?1")?
            .query_row(params![s], |r| r.get(0))?,
        (None, None) => "?".into(),
    };
    let mut stmt = tx.prepare_cached(
        "SELECT e.description, ifnull(e.kind, '') FROM service_period_events p JOIN events e ON e.id = p.event_id
         WHERE p.period_id = ?1 ORDER BY e.id",
    )?;
    let descriptions: Vec<(String, String)> = stmt
        .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for (d, kind) in &descriptions {
        // "Burglary alarm, zone 03" → "Burglary alarm"; openings and closings by what they did.
        let what = match kind.as_str() {
            "arm" => "Closing".to_string(),
            "disarm" => "Opening".to_string(),
            "restore" | "trouble_restore" => format!("{} restore", d.split(',').next().unwrap_or(d).trim()),
            _ => d.split(',').next().unwrap_or(d).trim().to_string(),
        };
        match counts.iter_mut().find(|(w, _)| *w == what) {
            Some(c) => c.1 += 1,
            None => counts.push((what, 1)),
        }
    }
    let list = counts
        .iter()
        .map(|(w, n)| format!("{n}x {w}"))
        .collect::<Vec<_>>()
        .join(", ");
    let title = match descriptions.len() {
        0 => format!("Test of {name} ended: nothing came in"),
        n => format!("Test of {name} ended: {n} event(s): {list}"),
    };
    let account_text = match &account {
        Some(a) => a.clone(),
        None => tx
            .prepare_cached("SELECT ifnull((SELECT account FROM accounts WHERE site_id = ?1 ORDER BY id LIMIT 1), '')")?
            .query_row(params![site], |r| r.get(0))?,
    };
    let alarm = alarms::open_or_join(
        tx,
        &AlarmSpec {
            site_id,
            category: Some(Category::Test),
            ..AlarmSpec::supervisor(account_text, format!("test-ended:{id}"), title, SUMMARY_PRIORITY)
        },
        false,
        now,
    )?
    .id;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO alarm_events (alarm_id, event_id) SELECT ?1, event_id FROM service_period_events
         WHERE period_id = ?2",
    )?
    .execute(params![alarm, id])?;
    alarms::log(
        tx,
        alarm,
        now,
        by,
        "test_ended",
        &format!(
            "{how}; on test from {} until {} by {set_by}: {reason}",
            crate::clock::rfc3339_ms(from_ms),
            crate::clock::rfc3339_ms(until_ms)
        ),
    )?;
    tx.prepare_cached("UPDATE service_periods SET summary_alarm_id = ?2 WHERE id = ?1")?
        .execute(params![id, alarm])?;
    Ok(Some(alarm))
}

/// Periods whose end has come by `now` and that are still open.
pub fn due(conn: &Connection, now: i64) -> Result<Vec<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id FROM service_periods WHERE ended_ms IS NULL AND until_ms <= ?1")?
        .query_map(params![now], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// Remember the events of a test, for its summary.
pub fn record_test_events(tx: &Transaction<'_>, period: i64, events: &[i64]) -> Result<(), StoreError> {
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO service_period_events (period_id, event_id) VALUES (?1, ?2)")?;
    for e in events {
        stmt.execute(params![period, e])?;
    }
    Ok(())
}

/// A period as listed to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodView {
    /// `test` or `out_of_service`.
    pub mode: Mode,
    /// The site's reference ("" for an account without a site).
    pub site_ref: String,
    /// The account number, for a period of one account ("" for a site's).
    pub account: String,
    /// Site name and address.
    pub site: String,
    /// Started, Unix ms.
    pub from_ms: i64,
    /// Ends, Unix ms.
    pub until_ms: i64,
    /// Set by.
    pub set_by: String,
    /// Why.
    pub reason: String,
    /// Events received during it (a test's).
    pub events: i64,
    /// Ended (a test listed for a day after its end, for its summary).
    pub ended_ms: Option<i64>,
    /// The summary's alarm id (an ended test).
    pub summary: Option<String>,
}

/// Open periods, and tests that ended in the last day, most recent first.
pub fn list(conn: &Connection, now: i64) -> Result<Vec<PeriodView>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.mode, ifnull(s.ref, ifnull(sa.ref, '')), ifnull(p.account, ''),
                ifnull(ifnull(s.name, sa.name) || ', ' || ifnull(s.address, sa.address), ''),
                p.from_ms, p.until_ms, p.set_by, p.reason,
                (SELECT count(*) FROM service_period_events e WHERE e.period_id = p.id), p.ended_ms,
                (SELECT public_id FROM alarms WHERE id = p.summary_alarm_id)
         FROM service_periods p LEFT JOIN sites s ON s.id = p.site_id
              LEFT JOIN sites sa ON sa.id = (SELECT site_id FROM accounts WHERE account = p.account ORDER BY id LIMIT 1)
         WHERE p.ended_ms IS NULL OR (p.mode = 'test' AND p.ended_ms > ?1 - 86400000)
         ORDER BY p.ended_ms IS NOT NULL, p.until_ms, p.id",
    )?;
    let rows = stmt.query_map(params![now], |r| {
        Ok((
            r.get::<_, String>(0)?,
            PeriodView {
                mode: Mode::Test,
                site_ref: r.get(1)?,
                account: r.get(2)?,
                site: r.get(3)?,
                from_ms: r.get(4)?,
                until_ms: r.get(5)?,
                set_by: r.get(6)?,
                reason: r.get(7)?,
                events: r.get(8)?,
                ended_ms: r.get(9)?,
                summary: r.get(10)?,
            },
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (mode, mut v) = row?;
        if let Some(m) = Mode::parse(&mode) {
            v.mode = m;
            out.push(v);
        }
    }
    Ok(out)
}

/// An alarm or trouble event of an account or site in `period`: on test nothing (the event is
/// stored and listed with the test); out of service one supervisor-queue item per site (or
/// account) and category, the event linked to it. Never an operator alarm, and never an event
/// in an alarm of another category.
#[allow(clippy::too_many_arguments)]
pub fn divert(
    tx: &Transaction<'_>,
    cache: &mut super::RecordCache,
    period: &Period,
    owner: super::Owner,
    account_id: i64,
    account: &str,
    ev: &crate::event::Event,
    meaning: crate::event::Meaning,
    event_id: i64,
    now: i64,
) -> Result<(), StoreError> {
    if period.mode == Mode::Test {
        return Ok(());
    }
    let key = format!("out-of-service/{}", meaning.category.as_str());
    let join_key = match owner.site_id {
        Some(_) => key,
        None => format!("acct:{account}/{key}"),
    };
    let zone = ev.zone.as_deref().map(super::norm_number);
    let title = match owner.site_id {
        Some(site) => alarms::title_for(tx, site, meaning.description, zone.as_deref())?,
        None => format!("{} from account {account}", meaning.description),
    };
    cache.open_or_join(
        tx,
        &AlarmSpec {
            site_id: owner.site_id,
            account_id: Some(account_id),
            category: Some(meaning.category),
            zone,
            area: ev.area.as_deref().map(super::norm_number),
            ..AlarmSpec::supervisor(
                account,
                join_key,
                format!("Out of service: {title}"),
                meaning.priority.max(1),
            )
        },
        Some(event_id),
        now,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &std::path::Path) -> Connection {
        let conn = crate::store::open_write(&dir.join("s.db"), std::time::Duration::from_secs(5)).expect("db");
        conn.execute_batch(
            "INSERT INTO customers (id, ref, public_id, name) VALUES (1, 'C1', 'c1', 'C');
             INSERT INTO sites (id, ref, public_id, customer_id, address) VALUES (1, 'S1', 's1', 1, 'x');
             INSERT INTO accounts (id, account, site_id, path) VALUES (1, '1234', 1, 'primary');",
        )
        .expect("records");
        conn
    }

    /// A path that goes silent while its account is on test is the supervisor's (marked), and
    /// a silence after the test opens an operator alarm again, not a join to the marked one.
    #[test]
    fn communication_lost_during_a_period_is_the_supervisors() {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn = db(dir.path());
        let tx = conn.transaction().expect("tx");
        let target = Target::Account("1234".into());
        start(&tx, &target, Some(1), Mode::Test, 10_000, "sam", "new detector", 1_000).expect("start");
        let during = crate::correlate::supervision::communication_lost(&tx, 1, 500, 2_000).expect("lost");
        end_target(&tx, &target, "sam", 3_000).expect("end");
        let after = crate::correlate::supervision::communication_lost(&tx, 1, 2_500, 4_000).expect("lost");
        assert_ne!(during, after);
        let row = |id: i64| -> (String, String) {
            tx.query_row("SELECT queue, title FROM alarms WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("alarm")
        };
        assert_eq!(
            row(during),
            (
                "supervisor".into(),
                "Communication lost: account 1234 (primary path) (on test)".into()
            )
        );
        assert_eq!(row(after).0, "operator");
    }

    /// The writer's cache sees a period from the next transaction, covers only its time, and
    /// an account's period before its site's.
    #[test]
    fn the_cache_follows_changes_and_time() {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn = db(dir.path());
        let mut cache = PeriodCache::default();
        let tx = conn.transaction().expect("tx");
        cache.refresh(&tx).expect("refresh");
        assert_eq!(cache.period_for("1234", Some(1), 1_500), None);
        start(
            &tx,
            &Target::Site(1),
            Some(1),
            Mode::OutOfService,
            9_000,
            "sam",
            "moved",
            1_000,
        )
        .expect("site");
        start(
            &tx,
            &Target::Account("1234".into()),
            Some(1),
            Mode::Test,
            5_000,
            "sam",
            "test",
            1_000,
        )
        .expect("acct");
        cache.refresh(&tx).expect("refresh");
        assert_eq!(
            cache.period_for("1234", Some(1), 1_500).map(|p| p.mode),
            Some(Mode::Test)
        );
        assert_eq!(
            cache.period_for("9999", Some(1), 1_500).map(|p| p.mode),
            Some(Mode::OutOfService)
        );
        assert_eq!(
            cache.period_for("1234", Some(1), 6_000).map(|p| p.mode),
            Some(Mode::OutOfService)
        );
        assert_eq!(cache.period_for("1234", Some(1), 9_000), None, "ended by its time");
        assert!(matches!(
            start(
                &tx,
                &Target::Site(1),
                Some(1),
                Mode::Test,
                1_000 + MAX_TEST_MS + 1,
                "sam",
                "x",
                1_000
            ),
            Err(ServiceError::BadEnd(_))
        ));
        assert!(matches!(
            start(&tx, &Target::Site(1), Some(1), Mode::Test, 2_000, "sam", " ", 1_000),
            Err(ServiceError::NoReason(_))
        ));
    }
}
