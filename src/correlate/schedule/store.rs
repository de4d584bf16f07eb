//! Schedules in the database: a site's plan loaded from its rows, and [`reconcile`], which
//! compares the kinds that hold now ([`Plan::conditions`]) with those raised and not restored
//! (`schedule_state`) and raises or restores the difference. It runs in the writer's
//! transaction: for an opening or closing report (in the frame's own transaction, so an
//! opening at 03:00 is an alarm as it is stored), for an operator's extension, and for the
//! sites whose schedule has an edge now ([`super::timer`]). `schedule_state` is what survives
//! a restart: a kind raised before it is not raised again while it still holds (an operator
//! may have closed its alarm), and one that stopped holding while the daemon was down is
//! restored at start.
//!
//! A schedule alarm joins the site's most urgent open operator alarm when that one is at least
//! as urgent (an alarm of another category: the join is an entry in its record, naming the
//! kind, never a change of its category or priority); otherwise it opens an alarm of its own
//! kind (join key `schedule:KIND`), which a later episode of the same kind joins.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::plan::{self, Armed, Checks, Exception, Extension, Hours, Kinds, Lateness, Plan, WeeklyWindow};
use crate::correlate::alarms::{self, AlarmSpec, Queue};
use crate::store::StoreError;

/// Extensions are kept in a plan this long after they ended: a site that opened during one
/// and is still open is late to close, not an unexpected opening.
pub const EXTENSION_KEPT_MS: i64 = 14 * plan::DAY_MS;

/// The longest extension an operator can give: to the end of tonight, not for good.
pub const MAX_EXTENSION_MS: i64 = plan::DAY_MS;

/// The join key of a kind's own alarm.
pub fn join_key(k: Lateness) -> String {
    format!("schedule:{}", k.as_str())
}

/// Tell the supervision task that a site's schedule changed (`None`: every site's).
pub fn changed(tx: &Transaction<'_>, site_id: Option<i64>, now: i64) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO schedule_changes (site_id, at_ms) VALUES (?1, ?2)")?
        .execute(params![site_id, now])?;
    Ok(())
}

fn hours_list(text: &str) -> Vec<Hours> {
    text.split(';').filter_map(plan::parse_hours).collect()
}

fn date(text: &str) -> Option<Date> {
    text.parse().ok()
}

/// The statements that read plans, each in two forms: for one site (`?1`, by the tables'
/// indexes) and for every site (`?1` NULL). One statement with `?1 IS NULL OR site_id = ?1`
/// cannot use an index, so every opening or closing report read all 100,000 schedules and their
/// windows (6 ms per report; BENCHMARKS.md, schedules).
const PLAN_SQL: [(&str, &str); 5] = [
    (
        "SELECT calendar, date FROM holidays WHERE calendar = ?1 ORDER BY calendar",
        "SELECT calendar, date FROM holidays WHERE ?1 IS NULL ORDER BY calendar",
    ),
    (
        "SELECT site_id, time_zone, holidays, late_to_close, unexpected_opening, late_to_open, early_close
         FROM schedules WHERE site_id = ?1",
        "SELECT site_id, time_zone, holidays, late_to_close, unexpected_opening, late_to_open, early_close
         FROM schedules WHERE ?1 IS NULL",
    ),
    (
        "SELECT site_id, days, open_min, close_min, grace_min FROM schedule_windows WHERE site_id = ?1",
        "SELECT site_id, days, open_min, close_min, grace_min FROM schedule_windows WHERE ?1 IS NULL",
    ),
    (
        "SELECT site_id, from_date, to_date, hours, grace_min FROM schedule_exceptions WHERE site_id = ?1",
        "SELECT site_id, from_date, to_date, hours, grace_min FROM schedule_exceptions WHERE ?1 IS NULL",
    ),
    (
        "SELECT site_id, from_ms, until_ms, grace_min FROM schedule_extensions
         WHERE site_id = ?1 AND until_ms > ?2 ORDER BY id",
        "SELECT site_id, from_ms, until_ms, grace_min FROM schedule_extensions
         WHERE ?1 IS NULL AND until_ms > ?2 ORDER BY id",
    ),
];

/// [`PLAN_SQL`] number `i` for one site (`one`) or every site.
fn plan_sql(i: usize, one: bool) -> &'static str {
    if one { PLAN_SQL[i].0 } else { PLAN_SQL[i].1 }
}

/// Builds plans from rows, sharing time zones and holiday calendars.
#[derive(Default)]
struct Builder {
    zones: HashMap<String, Option<TimeZone>>,
    calendars: HashMap<String, Arc<BTreeSet<Date>>>,
    plans: HashMap<i64, Plan>,
}

impl Builder {
    fn calendars(&mut self, conn: &Connection, only: Option<&str>) -> Result<(), StoreError> {
        let mut stmt = conn.prepare_cached(plan_sql(0, only.is_some()))?;
        let mut sets: HashMap<String, BTreeSet<Date>> = HashMap::new();
        let rows = stmt.query_map(params![only], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (c, d) = row?;
            if let Some(d) = date(&d) {
                sets.entry(c).or_default().insert(d);
            }
        }
        self.calendars = sets.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        Ok(())
    }

    fn schedule(&mut self, site: i64, zone: String, calendar: String, checks: Checks) {
        let tz = self
            .zones
            .entry(zone)
            .or_insert_with_key(|z| TimeZone::get(z).ok())
            .clone();
        // Validated at import; a zone this build does not know leaves the site unchecked.
        let Some(tz) = tz else { return };
        let holidays = self.calendars.get(&calendar).cloned().unwrap_or_default();
        let mut p = Plan::weekly(tz, Vec::new());
        p.holidays = holidays;
        p.checks = checks;
        self.plans.insert(site, p);
    }

    fn load(&mut self, conn: &Connection, site: Option<i64>, now: i64) -> Result<(), StoreError> {
        let calendar: Option<String> = match site {
            Some(s) => conn
                .prepare_cached("SELECT holidays FROM schedules WHERE site_id = ?1")?
                .query_row(params![s], |r| r.get(0))
                .optional()?,
            None => None,
        };
        if site.is_some() && calendar.is_none() {
            return Ok(());
        }
        self.calendars(conn, calendar.as_deref())?;
        let one = site.is_some();
        let mut stmt = conn.prepare_cached(plan_sql(1, one))?;
        let rows = stmt.query_map(params![site], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                Checks {
                    late_to_close: r.get(3)?,
                    unexpected_opening: r.get(4)?,
                    late_to_open: r.get(5)?,
                    early_close: r.get(6)?,
                },
            ))
        })?;
        for row in rows {
            let (s, zone, calendar, checks) = row?;
            self.schedule(s, zone, calendar, checks);
        }
        let mut stmt = conn.prepare_cached(plan_sql(2, one))?;
        let rows = stmt.query_map(params![site], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                WeeklyWindow {
                    days: r.get(1)?,
                    hours: Hours {
                        open: r.get(2)?,
                        close: r.get(3)?,
                    },
                    grace: r.get(4)?,
                },
            ))
        })?;
        for row in rows {
            let (s, w) = row?;
            if let Some(p) = self.plans.get_mut(&s) {
                p.windows.push(w);
            }
        }
        let mut stmt = conn.prepare_cached(plan_sql(3, one))?;
        let rows = stmt.query_map(params![site], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, u16>(4)?,
            ))
        })?;
        for row in rows {
            let (s, from, to, hours, grace) = row?;
            if let (Some(p), Some(from), Some(to)) = (self.plans.get_mut(&s), date(&from), date(&to)) {
                p.exceptions.push(Exception {
                    from,
                    to,
                    hours: hours_list(&hours),
                    grace,
                });
            }
        }
        let mut stmt = conn.prepare_cached(plan_sql(4, one))?;
        let rows = stmt.query_map(params![site, now - EXTENSION_KEPT_MS], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Extension {
                    from_ms: r.get(1)?,
                    until_ms: r.get(2)?,
                    grace: r.get(3)?,
                },
            ))
        })?;
        for row in rows {
            let (s, e) = row?;
            if let Some(p) = self.plans.get_mut(&s) {
                p.extensions.push(e);
            }
        }
        Ok(())
    }
}

/// A site's plan as its rows say at `now` (`None`: the site has no schedule).
pub fn load_plan(conn: &Connection, site_id: i64, now: i64) -> Result<Option<Plan>, StoreError> {
    let mut b = Builder::default();
    b.load(conn, Some(site_id), now)?;
    Ok(b.plans.remove(&site_id))
}

/// Every site's plan.
pub fn load_all(conn: &Connection, now: i64) -> Result<HashMap<i64, Arc<Plan>>, StoreError> {
    let mut b = Builder::default();
    b.load(conn, None, now)?;
    Ok(b.plans.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
}

/// A site's armed state as the last opening or closing report left it.
pub fn armed_state(conn: &Connection, site_id: i64) -> Result<Option<Armed>, StoreError> {
    let row: Option<(String, Option<i64>)> = conn
        .prepare_cached("SELECT armed_state, armed_changed_ms FROM sites WHERE id = ?1")?
        .query_row(params![site_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(armed_from(row))
}

/// [`Armed`] from `sites.armed_state` and `armed_changed_ms`.
pub fn armed_from(row: Option<(String, Option<i64>)>) -> Option<Armed> {
    match row {
        Some((s, Some(at))) if s == "armed" => Some(Armed::Armed(at)),
        Some((s, Some(at))) if s == "disarmed" => Some(Armed::Disarmed(at)),
        _ => None,
    }
}

/// The kinds raised for a site and not restored, with the alarm each went to.
pub fn raised(conn: &Connection, site_id: i64) -> Result<Vec<(Lateness, i64, Option<i64>)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT kind, since_ms, alarm_id FROM schedule_state WHERE site_id = ?1")?;
    let rows = stmt.query_map(params![site_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<i64>>(2)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (k, since, alarm) = row?;
        if let Some(k) = Lateness::parse(&k) {
            out.push((k, since, alarm));
        }
    }
    Ok(out)
}

/// What [`reconcile`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Kinds raised, with the alarm each went to.
    pub raised: Vec<(Lateness, i64)>,
    /// Kinds restored.
    pub restored: Vec<Lateness>,
}

/// An opening or closing report of a site was stored (its armed state set): reconcile it now,
/// linking the report to what it raises. `suppress`: the account or site is on test or out of
/// service (restores still happen; nothing is raised).
pub fn on_report(
    tx: &Transaction<'_>,
    site_id: i64,
    event_id: i64,
    now: i64,
    suppress: bool,
) -> Result<Reconciled, StoreError> {
    reconcile(tx, site_id, now, Some(event_id), suppress)
}

/// Raise what holds at `now` and was not raised, restore what was raised and no longer holds.
/// `event`: the report that made this happen, linked to what it raises.
pub fn reconcile(
    tx: &Transaction<'_>,
    site_id: i64,
    now: i64,
    event: Option<i64>,
    suppress: bool,
) -> Result<Reconciled, StoreError> {
    let Some(plan) = load_plan(tx, site_id, now)? else {
        tx.prepare_cached("DELETE FROM schedule_state WHERE site_id = ?1")?
            .execute(params![site_id])?;
        return Ok(Reconciled::default());
    };
    let plan = &plan;
    // A site on test or out of service raises nothing until the period ends (it is looked at
    // again then); what stops holding is restored all the same.
    let suppress = suppress || crate::correlate::service::site_period(tx, site_id, now)?.is_some();
    let before = raised(tx, site_id)?;
    let armed = armed_state(tx, site_id)?;
    let holds = plan.conditions(armed, now);
    let was: Kinds = before.iter().map(|(k, _, _)| *k).collect();
    let mut out = Reconciled::default();
    for (k, _, alarm) in &before {
        if !holds.contains(*k) {
            restore(tx, site_id, plan, *k, *alarm, armed, now)?;
            out.restored.push(*k);
        }
    }
    if !suppress {
        for k in holds.minus(was).iter() {
            let id = raise(tx, site_id, plan, k, armed, now, event)?;
            out.raised.push((k, id));
        }
    }
    Ok(out)
}

fn by_user(tx: &Transaction<'_>, site_id: i64) -> Result<String, StoreError> {
    let u: Option<String> = tx
        .prepare_cached("SELECT armed_by_user FROM sites WHERE id = ?1")?
        .query_row(params![site_id], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(u.map(|u| format!(" by user {u}")).unwrap_or_default())
}

/// What a kind says, for its alarm's title (times in the site's zone).
fn describe(
    tx: &Transaction<'_>,
    site_id: i64,
    plan: &Plan,
    k: Lateness,
    armed: Option<Armed>,
    now: i64,
) -> Result<String, StoreError> {
    let at = |ms: i64| plan::local_clock(&plan.tz, ms);
    let reported = match armed {
        Some(Armed::Armed(d) | Armed::Disarmed(d)) => d,
        None => now,
    };
    Ok(match k {
        Lateness::LateToClose => format!(
            "Late to close: not armed by {}",
            at(plan.last_allowed_end(now).unwrap_or(now))
        ),
        Lateness::UnexpectedOpening => format!(
            "Unexpected opening at {}{}, outside the schedule",
            at(reported),
            by_user(tx, site_id)?
        ),
        Lateness::LateToOpen => match plan.window_for(k, now) {
            Some(w) => format!("Late to open: not disarmed by {}", at(w.open_ms + w.grace_ms)),
            None => "Late to open".into(),
        },
        Lateness::EarlyClose => match plan.window_for(k, now) {
            Some(w) => format!(
                "Early close at {}{}: the window is open until {}",
                at(reported),
                by_user(tx, site_id)?,
                at(w.close_ms)
            ),
            None => format!("Early close at {}", at(reported)),
        },
    })
}

fn raise(
    tx: &Transaction<'_>,
    site_id: i64,
    plan: &Plan,
    k: Lateness,
    armed: Option<Armed>,
    now: i64,
    event: Option<i64>,
) -> Result<i64, StoreError> {
    let (customer_id, account): (Option<i64>, String) = tx
        .prepare_cached(
            "SELECT s.customer_id, ifnull((SELECT a.account FROM accounts a WHERE a.site_id = s.id ORDER BY a.id LIMIT 1), '')
             FROM sites s WHERE s.id = ?1",
        )?
        .query_row(params![site_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let priority = crate::correlate::priority_for(tx, customer_id, k.category(), k.default_priority())?;
    let title = describe(tx, site_id, plan, k, armed, now)?;
    let sql = format!(
        "SELECT a.id, a.priority FROM alarms a
         WHERE a.site_id = ?1 AND a.state <> 'closed' AND a.queue = 'operator' AND a.join_key NOT LIKE 'schedule:%'
         ORDER BY {}, a.priority, a.opened_ms, a.id LIMIT 1",
        alarms::queue_tier_sql()
    );
    let other: Option<(i64, u8)> = tx
        .prepare_cached(&sql)?
        .query_row(params![site_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let id = match other {
        // The site is in alarm already: this joins that alarm, visibly.
        Some((id, p)) if p <= priority => {
            alarms::log(
                tx,
                id,
                now,
                "system",
                k.as_str(),
                &format!("{title} (joins this alarm)"),
            )?;
            id
        }
        _ => {
            alarms::open_or_join(
                tx,
                &AlarmSpec {
                    queue: Queue::Operator,
                    site_id: Some(site_id),
                    account_id: None,
                    account,
                    join_key: join_key(k),
                    category: Some(k.category()),
                    priority,
                    title,
                    zone: None,
                    area: None,
                    duress: false,
                    source_frame: None,
                },
                false,
                now,
            )?
            .id
        }
    };
    if let Some(e) = event {
        tx.prepare_cached("INSERT OR IGNORE INTO alarm_events (alarm_id, event_id) VALUES (?1, ?2)")?
            .execute(params![id, e])?;
    }
    tx.prepare_cached(
        "INSERT INTO schedule_state (site_id, kind, since_ms, alarm_id) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (site_id, kind) DO UPDATE SET since_ms = excluded.since_ms, alarm_id = excluded.alarm_id",
    )?
    .execute(params![site_id, k.as_str(), now, id])?;
    Ok(id)
}

fn restore(
    tx: &Transaction<'_>,
    site_id: i64,
    plan: &Plan,
    k: Lateness,
    alarm: Option<i64>,
    armed: Option<Armed>,
    now: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM schedule_state WHERE site_id = ?1 AND kind = ?2")?
        .execute(params![site_id, k.as_str()])?;
    let Some(id) = alarm else { return Ok(()) };
    let row: Option<(String, String)> = tx
        .prepare_cached("SELECT join_key, state FROM alarms WHERE id = ?1")?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((key, state)) = row else { return Ok(()) };
    if state == "closed" {
        return Ok(());
    }
    let at = |ms: i64| plan::local_clock(&plan.tz, ms);
    let why = match (k, armed) {
        (Lateness::LateToClose | Lateness::UnexpectedOpening, Some(Armed::Armed(d))) => {
            format!("armed at {}{}", at(d), by_user(tx, site_id)?)
        }
        (Lateness::LateToClose | Lateness::UnexpectedOpening, _) => {
            format!("the site may be open again from {}", at(now))
        }
        (Lateness::LateToOpen, Some(Armed::Disarmed(d))) => format!("disarmed at {}{}", at(d), by_user(tx, site_id)?),
        (Lateness::LateToOpen, _) => format!("the window closed at {}", at(now)),
        (Lateness::EarlyClose, Some(Armed::Disarmed(d))) => {
            format!("disarmed again at {}{}", at(d), by_user(tx, site_id)?)
        }
        (Lateness::EarlyClose, _) => format!("the window's closing time came at {}", at(now)),
    };
    if key == join_key(k) {
        tx.prepare_cached("UPDATE alarms SET restored_ms = ?2 WHERE id = ?1")?
            .execute(params![id, now])?;
        alarms::log(tx, id, now, "system", "restored", &format!("{}: {why}", k.label()))?;
    } else {
        alarms::log(tx, id, now, "system", &format!("{}_ended", k.as_str()), &why)?;
    }
    Ok(())
}

/// The next time after `now` that reads `hh_mm` (`HH:MM`) in the site's time zone: today's,
/// or tomorrow's when today's has passed. `None`: no schedule, or not a time of day.
pub fn next_local(conn: &Connection, site_id: i64, hh_mm: &str, now: i64) -> Result<Option<i64>, StoreError> {
    let zone: Option<String> = conn
        .prepare_cached("SELECT time_zone FROM schedules WHERE site_id = ?1")?
        .query_row(params![site_id], |r| r.get(0))
        .optional()?;
    let (Some(tz), Some(min)) = (
        zone.and_then(|z| TimeZone::get(&z).ok()),
        plan::parse_clock(hh_mm, false),
    ) else {
        return Ok(None);
    };
    let Some(today) = plan::local_date(&tz, now) else {
        return Ok(None);
    };
    let at = |d: Date| plan::first_instant(&tz, d.at((min / 60) as i8, (min % 60) as i8, 0, 0));
    Ok(match at(today) {
        Some(t) if t > now => Some(t),
        _ => today.tomorrow().ok().and_then(at),
    })
}

/// Why an extension cannot be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtendError {
    /// The site has no schedule.
    #[error("the site has no schedule to extend")]
    NoSchedule,
    /// The end is not in the next 24 hours.
    #[error("an extension ends after now and within 24 hours")]
    BadEnd,
    /// A reason is needed.
    #[error("an extension needs a reason (what the caller said), at most {0} characters")]
    NoReason(usize),
    /// Database.
    #[error("database error: {0}")]
    Store(String),
}

impl From<StoreError> for ExtendError {
    fn from(e: StoreError) -> Self {
        ExtendError::Store(e.to_string())
    }
}

impl From<rusqlite::Error> for ExtendError {
    fn from(e: rusqlite::Error) -> Self {
        ExtendError::Store(e.to_string())
    }
}

/// An operator's one-off extension: the site may be open until `until_ms` (plus the grace of
/// its windows), from now. Logged on the site's open late-to-close or unexpected-opening alarm
/// (with who and why), and reconciled at once, so such an alarm is restored now. Ends by
/// itself. Returns the extension's end.
pub fn extend(
    tx: &Transaction<'_>,
    site_id: i64,
    until_ms: i64,
    by: &str,
    reason: &str,
    now: i64,
) -> Result<i64, ExtendError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > alarms::MAX_NOTE {
        return Err(ExtendError::NoReason(alarms::MAX_NOTE));
    }
    if until_ms <= now || until_ms > now + MAX_EXTENSION_MS {
        return Err(ExtendError::BadEnd);
    }
    let Some(plan) = load_plan(tx, site_id, now)? else {
        return Err(ExtendError::NoSchedule);
    };
    let grace = plan.grace_at(now);
    tx.prepare_cached(
        "INSERT INTO schedule_extensions (site_id, from_ms, until_ms, grace_min, set_by, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![site_id, now, until_ms, grace, by, reason])?;
    let text = format!(
        "extended until {} by {by}: {reason}",
        plan::local_clock(&plan.tz, until_ms)
    );
    for (k, _, alarm) in raised(tx, site_id)? {
        if let (Lateness::LateToClose | Lateness::UnexpectedOpening, Some(id)) = (k, alarm) {
            alarms::log(tx, id, now, by, "extended", &text)?;
        }
    }
    changed(tx, Some(site_id), now)?;
    reconcile(tx, site_id, now, None, false)?;
    Ok(until_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report reconciles one site: each statement that reads its plan searches an index
    /// (a scan reads every site's schedule: 6 ms per report at 100,000 sites).
    #[test]
    fn one_sites_plan_is_read_by_index() {
        let conn = Connection::open_in_memory().expect("db");
        crate::store::schema::migrate(&conn).expect("schema");
        for (one, _) in PLAN_SQL {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {one}")).expect("explain");
            let n = stmt.parameter_count();
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter((0..n).map(|_| 1i64)), |r| {
                    r.get::<_, String>(3)
                })
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("plan");
            assert!(
                plan.iter().any(|d| d.starts_with("SEARCH")) && !plan.iter().any(|d| d.starts_with("SCAN")),
                "{one}: {plan:?}"
            );
        }
    }
}
