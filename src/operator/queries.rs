//! Read-side queries behind the operator API. All run on a read-only connection.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::clock::rfc3339_ms;
use crate::correlate::alarms::PENDING_EVENTS;
use crate::store::writer::{SEEN_COLUMN, SEEN_PENDING};
use crate::view::{ContactView, CustomerCard, customer_card};

/// One alarm in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmSummary {
    /// Opaque id.
    pub id: String,
    /// "operator" or "supervisor".
    pub queue: String,
    /// 1 (most urgent) … 9.
    pub priority: i64,
    /// Category (empty for unknown codes/accounts).
    pub category: String,
    /// Title.
    pub title: String,
    /// Account number.
    pub account: String,
    /// Site name and address ("" if none).
    pub site: String,
    /// new, acknowledged, in_progress, closed.
    pub state: String,
    /// Opened, Unix ms.
    pub opened_ms: i64,
    /// Last event, Unix ms.
    pub last_event_ms: i64,
    /// Events joined.
    pub events: i64,
    /// Restored.
    pub restored: bool,
    /// Escalated.
    pub escalated: bool,
    /// Panel disarm user, if the keypad factor is present.
    pub keypad_factor: Option<String>,
    /// Keypad factor time.
    pub keypad_factor_ms: Option<i64>,
    /// A phone code was verified.
    pub phone_factor: bool,
    /// Duress.
    pub duress: bool,
    /// The operator handling it.
    #[serde(default)]
    pub owner: Option<String>,
    /// Put aside until then (Unix ms): out of the queue until it comes back.
    #[serde(default)]
    pub recall_ms: Option<i64>,
    /// The site's reference ("" for alarms without a site).
    #[serde(default)]
    pub site_ref: String,
}

impl AlarmSummary {
    /// Its tier in the queue ([`crate::correlate::alarms::queue_tier`]).
    pub fn tier(&self) -> u8 {
        crate::correlate::alarms::queue_tier(&self.category, self.duress)
    }

    /// Of a life-safety category (or duress).
    pub fn life_safety(&self) -> bool {
        usize::from(self.tier()) < crate::protocol::codes::LIFE_SAFETY.len()
    }

    /// The queue's order: put-aside alarms last; then tier, priority, age, id (the same order
    /// as the server's SQL, [`QUEUE_ORDER`]).
    pub fn queue_key(&self) -> (bool, u8, i64, i64, &str) {
        (
            self.recall_ms.is_some(),
            self.tier(),
            self.priority,
            self.opened_ms,
            &self.id,
        )
    }
}

/// The columns of [`AlarmSummary`], from `alarms a` joined with `sites s` and with the events
/// not yet counted in the alarm's row, `pending p` ([`PENDING_EVENTS`]).
const SUMMARY_COLUMNS: &str = "a.public_id, a.queue, a.priority, ifnull(a.category, ''), a.title, a.account,
     ifnull(s.name || ', ' || s.address, ''), a.state, a.opened_ms, max(a.last_event_ms, ifnull(p.last_ms, 0)),
     a.event_count + ifnull(p.n, 0),
     a.restored_ms IS NOT NULL, a.escalated_ms IS NOT NULL, a.keypad_factor_user, a.keypad_factor_ms,
     a.phone_factor_ms IS NOT NULL, a.duress, a.owner, a.recall_ms, ifnull(s.ref, '')";

/// How many columns [`SUMMARY_COLUMNS`] has.
const SUMMARY_LEN: usize = 20;

/// The queue's order over `alarms a` as SQL: put-aside alarms last, then the tier (life-safety
/// categories first, [`crate::correlate::alarms::queue_tier`]), priority, age and id. The
/// console sorts pushed changes with [`AlarmSummary::queue_key`], the same order.
pub static QUEUE_ORDER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "a.recall_ms IS NOT NULL, {}, a.priority, a.opened_ms, a.id",
        crate::correlate::alarms::queue_tier_sql()
    )
});

/// Where [`changed_since`]'s rows carry the new cursor: after the summary and its ordering
/// columns.
const CHANGED_CURSOR_AT: usize = SUMMARY_LEN + 5;

fn summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlarmSummary> {
    Ok(AlarmSummary {
        id: r.get(0)?,
        queue: r.get(1)?,
        priority: r.get(2)?,
        category: r.get(3)?,
        title: r.get(4)?,
        account: r.get(5)?,
        site: r.get(6)?,
        state: r.get(7)?,
        opened_ms: r.get(8)?,
        last_event_ms: r.get(9)?,
        events: r.get(10)?,
        restored: r.get(11)?,
        escalated: r.get(12)?,
        keypad_factor: r.get(13)?,
        keypad_factor_ms: r.get(14)?,
        phone_factor: r.get(15)?,
        duress: r.get(16)?,
        owner: r.get(17)?,
        recall_ms: r.get(18)?,
        site_ref: r.get(19)?,
    })
}

/// Open alarms in queue order ([`QUEUE_ORDER`]). `supervisor`: include the supervisor queue.
pub fn queue(conn: &Connection, supervisor: bool) -> rusqlite::Result<Vec<AlarmSummary>> {
    let sql = format!(
        "WITH {PENDING_EVENTS}
         SELECT {SUMMARY_COLUMNS} FROM alarms a LEFT JOIN sites s ON s.id = a.site_id LEFT JOIN pending p ON p.alarm_id = a.id
         WHERE a.state <> 'closed' AND (a.queue = 'operator' OR ?1)
         ORDER BY {}",
        *QUEUE_ORDER
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    stmt.query_map(params![supervisor], summary)?.collect()
}

/// Where a queue subscription has got: every change up to here has been pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The newest `alarm_log` entry (openings, operator actions, closings, an alert that
    /// joined an alarm without an event row, ...).
    pub log_id: i64,
    /// The newest event stored. Event ids only grow, so an event linked to an alarm after this
    /// cursor was taken has a larger id, even in the same millisecond or after the clock was set
    /// back.
    pub event_id: i64,
}

/// The cursor's two parts, in [`Cursor`] order, as SQL. Every change of an alarm row is an
/// event linked to it or an entry in its log ([`crate::correlate::alarms::open_or_join`]), so
/// these two find them all.
const CURSOR_COLUMNS: &str = "(SELECT ifnull(max(id), 0) FROM alarm_log), (SELECT ifnull(max(id), 0) FROM events)";

fn cursor_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Cursor> {
    Ok(Cursor {
        log_id: r.get(first)?,
        event_id: r.get(first + 1)?,
    })
}

/// Alarms changed since a cursor: new log entries or new events. Returns the summaries (closed
/// ones included, so a client can drop them) and the new cursor.
///
/// One statement, so the rows and the new cursor come from one snapshot and the events not yet
/// counted into their alarms (`pending`) are gathered once: a subscriber re-reads this after
/// commits under load, and that scan is most of its cost.
pub fn changed_since(
    conn: &Connection,
    cursor: Cursor,
    supervisor: bool,
) -> rusqlite::Result<(Vec<AlarmSummary>, Cursor)> {
    let sql = format!(
        "WITH {PENDING_EVENTS},
         cur AS (SELECT {CURSOR_COLUMNS}),
         changed AS (
             SELECT {SUMMARY_COLUMNS}, a.recall_ms IS NOT NULL AS o_aside, {} AS o_tier, a.priority AS o_priority,
                    a.opened_ms AS o_opened, a.id AS o_id
             FROM alarms a LEFT JOIN sites s ON s.id = a.site_id LEFT JOIN pending p ON p.alarm_id = a.id
             WHERE (a.id IN (SELECT alarm_id FROM alarm_log WHERE id > ?1)
                    OR (a.state <> 'closed' AND (ifnull(a.last_event_id, 0) > ?2 OR ifnull(p.last_id, 0) > ?2)))
               AND (a.queue = 'operator' OR ?3))
         SELECT changed.*, cur.* FROM cur LEFT JOIN changed
         ORDER BY changed.o_aside, changed.o_tier, changed.o_priority, changed.o_opened, changed.o_id",
        crate::correlate::alarms::queue_tier_sql()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![cursor.log_id, cursor.event_id, supervisor])?;
    let (mut changed, mut next) = (Vec::new(), cursor);
    // `cur` has one row, so there is at least one: with no change, its summary columns are NULL.
    while let Some(r) = rows.next()? {
        next = cursor_at(r, CHANGED_CURSOR_AT)?;
        if r.get_ref(0)? != rusqlite::types::ValueRef::Null {
            changed.push(summary(r)?);
        }
    }
    Ok((changed, next))
}

/// The current change cursor.
pub fn cursor(conn: &Connection) -> rusqlite::Result<Cursor> {
    conn.query_row(&format!("SELECT {CURSOR_COLUMNS}"), [], |r| cursor_at(r, 0))
}

/// An event as shown with an alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    /// Received.
    pub received: String,
    /// Received, Unix ms.
    #[serde(default)]
    pub received_ms: i64,
    /// Account.
    pub account: String,
    /// "SIA BA" / "CID 130".
    pub code: String,
    /// new / restore / status.
    pub qualifier: String,
    /// Description.
    pub description: String,
    /// Zone.
    pub zone: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Area.
    pub area: Option<String>,
    /// Received while its account or site was on test (listed with the test, no alarm).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_test: bool,
}

/// The columns [`event_row`] reads, of `events e`.
const EVENT_COLUMNS: &str = "e.received_ms, e.account, e.code_format, e.code, e.qualifier, e.description, e.zone, \
     e.user_no, e.area, EXISTS (SELECT 1 FROM service_period_events t WHERE t.event_id = e.id)";

/// An event row from [`EVENT_COLUMNS`]: `received_ms, account, code_format, code, qualifier,
/// description, zone, user_no, area, on test` (in that order).
fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    let fmt: String = r.get(2)?;
    let received_ms: i64 = r.get(0)?;
    Ok(EventRow {
        received: rfc3339_ms(received_ms),
        received_ms,
        account: r.get(1)?,
        code: format!(
            "{} {}",
            if fmt == "cid" { "CID" } else { "SIA" },
            r.get::<_, String>(3)?
        ),
        qualifier: r.get(4)?,
        description: r.get(5)?,
        zone: r.get(6)?,
        user: r.get(7)?,
        area: r.get(8)?,
        on_test: r.get(9)?,
    })
}

/// A step of the procedure, ticked when done.
pub type StepRow = crate::correlate::alarms::ProcedureStep;

/// An alarm log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    /// When.
    pub at: String,
    /// When, Unix ms.
    #[serde(default)]
    pub at_ms: i64,
    /// Who (operator name, "system", "panel").
    pub actor: String,
    /// What.
    pub action: String,
    /// Detail.
    pub detail: String,
}

/// A call to a contact about this alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRow {
    /// The contact's id.
    pub contact: String,
    /// The number dialled, if given.
    pub phone: Option<String>,
    /// How it went.
    pub outcome: super::protocol::CallOutcome,
    /// When, Unix ms.
    pub at_ms: i64,
    /// By.
    pub operator: String,
}

/// An earlier alarm of the same site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastAlarm {
    /// Its id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Opened, Unix ms.
    pub opened_ms: i64,
    /// Closed, Unix ms (none: still open).
    pub closed_ms: Option<i64>,
    /// How it was closed.
    pub disposition: Option<String>,
    /// By.
    pub closed_by: Option<String>,
}

/// What a panel sent, behind a supervisor item that has no event (an unknown account, input
/// not understood): the frame as stored, from where and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFrame {
    /// Received, Unix ms.
    pub received_ms: i64,
    /// `tcp` or `udp`.
    pub transport: String,
    /// The sender's address.
    pub peer: String,
    /// The bytes, escaped (`\n`, `\xNN`).
    pub raw: String,
    /// What the receiver made of it: the answer it sent and why.
    pub verdict: String,
    /// The frame decoded, when it can be (a DC-09 frame in clear).
    pub decoded: Option<String>,
    /// The account's records as they are now: set once the account has been imported.
    pub imported: Option<String>,
}

/// One line of an alarm's record: an event, or a log entry (note, step, call, verification,
/// state change), with who and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// When, Unix ms.
    pub at_ms: i64,
    /// Who: "panel" for events, else the log's actor.
    pub who: String,
    /// What, short.
    pub what: String,
    /// The rest.
    pub detail: String,
}

/// One alarm with everything an operator needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmDetail {
    /// The summary.
    pub alarm: AlarmSummary,
    /// Zone of the alarm.
    pub zone: Option<String>,
    /// Its description, if the zone is known.
    pub zone_description: Option<String>,
    /// The panel user of the keypad factor, with name and role.
    pub keypad_user: Option<String>,
    /// Customer card (absent for unknown accounts).
    pub customer: Option<CustomerCard>,
    /// Contacts in call order (also inside the card; here for convenience).
    pub contacts: Vec<ContactView>,
    /// Procedure for the alarm's category.
    pub procedure: Vec<StepRow>,
    /// Events of this alarm, newest last (at most the last 200).
    pub events: Vec<EventRow>,
    /// The alarm's log, oldest first: its newest [`LOG_SHOWN`] entries (a panel that keeps
    /// calling adds one per call, [`crate::correlate::alarms::open_or_join`]).
    pub log: Vec<LogRow>,
    /// How many older log entries are not in `log`.
    #[serde(default)]
    pub log_earlier: i64,
    /// Phone cancellation is locked for this customer (too many wrong codes).
    pub phone_locked: bool,
    /// Calls made about this alarm, oldest first.
    #[serde(default)]
    pub calls: Vec<CallRow>,
    /// The site's earlier alarms, newest first (at most [`HISTORY_SHOWN`]).
    #[serde(default)]
    pub history: Vec<PastAlarm>,
    /// The frame behind a supervisor item without events (newest, when it repeats).
    #[serde(default)]
    pub source: Option<SourceFrame>,
    /// A mass-loss alarm's accounts: how many, how many reported again, the first of those
    /// still silent.
    #[serde(default)]
    pub mass_loss: Option<crate::correlate::mass_loss::MassLossView>,
    /// The site's schedule as it stands now (a site with a schedule, or on test or out of
    /// service).
    #[serde(default)]
    pub schedule: Option<ScheduleView>,
}

/// A site's schedule as it stands, for the alarm view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleView {
    /// The site's time zone ("" without a schedule).
    pub time_zone: String,
    /// Open now: inside a window or an extension.
    pub open: bool,
    /// When that changes: the close (plus grace) of the window it is in, or the next opening.
    pub next_change_ms: Option<i64>,
    /// Today's windows in the site's time zone ("08:00-22:00 (grace 15)"), "closed" on a
    /// holiday or an exception without hours.
    pub today: String,
    /// An extension in force: until when, by whom, why.
    pub extension: Option<String>,
    /// The kinds raised now and not restored ("late to close").
    pub late: Vec<String>,
    /// On test or out of service, until (Unix ms).
    pub period: Option<(crate::correlate::service::Mode, i64)>,
}

/// [`ScheduleView`] of a site at `now` (`None`: no schedule and no service period).
pub fn site_schedule(conn: &Connection, site_id: i64, now: i64) -> rusqlite::Result<Option<ScheduleView>> {
    use crate::correlate::schedule::{plan, store};
    let to_sql = |e: crate::store::StoreError| rusqlite::Error::ToSqlConversionFailure(Box::new(e));
    let plan = store::load_plan(conn, site_id, now).map_err(to_sql)?;
    let period = crate::correlate::service::site_period(conn, site_id, now)
        .map_err(to_sql)?
        .map(|p| (p.mode, p.until_ms));
    let Some(plan) = plan else {
        return Ok(period.map(|period| ScheduleView {
            time_zone: String::new(),
            open: false,
            next_change_ms: None,
            today: String::new(),
            extension: None,
            late: Vec::new(),
            period: Some(period),
        }));
    };
    let open_now = plan.open_at(now);
    let next_change_ms = match open_now {
        Some(i) => Some(i.close_ms + i.grace_ms),
        None => plan.next_open(now).map(|i| i.open_ms - i.grace_ms),
    };
    let hm = |ms: i64| {
        plan::local_clock(&plan.tz, ms)
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let mut today = Vec::new();
    if let Some(d) = plan::local_date(&plan.tz, now) {
        plan.instances_on(d, &mut today);
    }
    let today = if today.is_empty() {
        "closed".to_string()
    } else {
        today
            .iter()
            .map(|i| {
                format!(
                    "{}-{}{}",
                    hm(i.open_ms),
                    hm(i.close_ms),
                    if i.grace_ms > 0 {
                        format!(" (grace {})", i.grace_ms / plan::MINUTE_MS)
                    } else {
                        String::new()
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let extension = conn
        .prepare_cached(
            "SELECT until_ms, set_by, reason FROM schedule_extensions WHERE site_id = ?1 AND from_ms <= ?2
               AND until_ms > ?2 ORDER BY until_ms DESC LIMIT 1",
        )?
        .query_row(params![site_id, now], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })
        .optional()?
        .map(|(until, by, reason)| format!("until {} by {by}: {reason}", plan::local_clock(&plan.tz, until)));
    let late = store::raised(conn, site_id)
        .map_err(to_sql)?
        .into_iter()
        .map(|(k, _, _)| k.label().to_string())
        .collect();
    Ok(Some(ScheduleView {
        time_zone: plan.tz.iana_name().unwrap_or_default().to_string(),
        open: open_now.is_some(),
        next_change_ms,
        today,
        extension,
        late,
        period,
    }))
}

/// The schedule tab: sites late now (longest first) and the service periods.
pub fn schedules(conn: &Connection, now: i64) -> rusqlite::Result<super::protocol::SchedulesResult> {
    let late = conn
        .prepare_cached(
            "SELECT s.ref, trim(s.name || ', ' || s.address, ', '), st.kind, st.since_ms,
                    (SELECT a.public_id FROM alarms a WHERE a.id = st.alarm_id AND a.state <> 'closed')
             FROM schedule_state st JOIN sites s ON s.id = st.site_id ORDER BY st.since_ms, s.ref",
        )?
        .query_map([], |r| {
            Ok(super::protocol::LateSite {
                site_ref: r.get(0)?,
                site: r.get(1)?,
                kind: r.get(2)?,
                since_ms: r.get(3)?,
                alarm: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let periods =
        crate::correlate::service::list(conn, now).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    Ok(super::protocol::SchedulesResult { late, periods })
}

/// Most earlier alarms of the site shown with an alarm.
pub const HISTORY_SHOWN: i64 = 10;

impl AlarmDetail {
    /// The alarm's record in time order: its events and its log merged (the log holds the
    /// notes, steps, calls, verifications and state changes, each with who made it).
    pub fn timeline(&self) -> Vec<TimelineEntry> {
        let mut out: Vec<(i64, u8, usize, TimelineEntry)> = Vec::with_capacity(self.events.len() + self.log.len());
        for (i, e) in self.events.iter().enumerate() {
            // A stored description already names its zone, user and area (`Event::describe`):
            // add only what it lacks.
            let mut detail = e.description.clone();
            for (label, v) in [("zone", &e.zone), ("user", &e.user), ("area", &e.area)] {
                if let Some(v) = v {
                    let part = format!(", {label} {v}");
                    if !e.description.contains(&part) {
                        detail.push_str(&part);
                    }
                }
            }
            if e.on_test {
                detail.push_str(" (on test)");
            }
            out.push((
                e.received_ms,
                0,
                i,
                TimelineEntry {
                    at_ms: e.received_ms,
                    who: "panel".into(),
                    what: format!("{} {}", e.code, e.qualifier),
                    detail,
                },
            ));
        }
        for (i, l) in self.log.iter().enumerate() {
            out.push((
                l.at_ms,
                1,
                i,
                TimelineEntry {
                    at_ms: l.at_ms,
                    who: l.actor.clone(),
                    what: l.action.replace('_', " "),
                    detail: l.detail.clone(),
                },
            ));
        }
        out.sort_by_key(|(t, k, i, _)| (*t, *k, *i));
        out.into_iter().map(|x| x.3).collect()
    }

    /// The contacts to call, in call order, with the last outcome of a call to each: the first
    /// not yet answered is the one to call next.
    pub fn call_list(&self) -> Vec<(&ContactView, Option<&CallRow>)> {
        self.contacts
            .iter()
            .map(|c| (c, self.calls.iter().rev().find(|k| k.contact == c.id)))
            .collect()
    }

    /// The contact to call next: the first in call order nobody has reached yet.
    pub fn next_contact(&self) -> Option<&ContactView> {
        self.call_list()
            .into_iter()
            .find(|(_, last)| last.is_none_or(|k| k.outcome != super::protocol::CallOutcome::Answered))
            .map(|(c, _)| c)
    }
}

/// Most log entries an alarm's detail carries (the newest).
pub const LOG_SHOWN: i64 = 200;

/// The row id of an alarm by its public id. Only for tools and tests: the operator API looks
/// alarms up through the authorisation ([`super::server`]).
pub fn alarm_row(conn: &Connection, public_id: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT id FROM alarms WHERE public_id = ?1", params![public_id], |r| {
        r.get(0)
    })
    .optional()
}

/// What [`super::authz::authorize`] needs to know about the alarm with this public id.
pub fn alarm_facts(conn: &Connection, public_id: &str) -> rusqlite::Result<Option<super::authz::AlarmFacts>> {
    conn.prepare_cached(
        "SELECT id, queue, state, owner, duress, ifnull(category, '') FROM alarms WHERE public_id = ?1",
    )?
    .query_row(params![public_id], |r| {
        let duress: bool = r.get(4)?;
        let category: String = r.get(5)?;
        Ok(super::authz::AlarmFacts {
            id: r.get(0)?,
            supervisor_queue: r.get::<_, String>(1)? == "supervisor",
            state: r.get(2)?,
            owner: r.get(3)?,
            duress,
            life_safety: usize::from(crate::correlate::alarms::queue_tier(&category, duress))
                < crate::protocol::codes::LIFE_SAFETY.len(),
        })
    })
    .optional()
}

/// One alarm in full, by public id: for tools and tests (the API authorises first and reads by
/// row id, [`alarm_detail`]).
pub fn alarm_detail_public(conn: &Connection, public_id: &str) -> rusqlite::Result<Option<AlarmDetail>> {
    match alarm_row(conn, public_id)? {
        Some(id) => alarm_detail(conn, id),
        None => Ok(None),
    }
}

/// One alarm in full, by row id (after authorisation), with its site's schedule as it stands
/// at `now`.
pub fn alarm_detail_at(conn: &Connection, id: i64, now: i64) -> rusqlite::Result<Option<AlarmDetail>> {
    let Some(mut d) = alarm_detail(conn, id)? else {
        return Ok(None);
    };
    let site: Option<i64> = conn
        .prepare_cached("SELECT site_id FROM alarms WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))?;
    if let Some(s) = site {
        d.schedule = site_schedule(conn, s, now)?;
    }
    Ok(Some(d))
}

/// One alarm in full, by row id (after authorisation).
pub fn alarm_detail(conn: &Connection, id: i64) -> rusqlite::Result<Option<AlarmDetail>> {
    let sql = format!(
        "WITH {PENDING_EVENTS}
         SELECT {SUMMARY_COLUMNS}, a.site_id, a.zone, s.customer_id
         FROM alarms a LEFT JOIN sites s ON s.id = a.site_id LEFT JOIN pending p ON p.alarm_id = a.id
         WHERE a.id = ?1"
    );
    let head = conn
        .query_row(&sql, params![id], |r| {
            Ok((
                summary(r)?,
                r.get::<_, Option<i64>>(SUMMARY_LEN)?,
                r.get::<_, Option<String>>(SUMMARY_LEN + 1)?,
                r.get::<_, Option<i64>>(SUMMARY_LEN + 2)?,
            ))
        })
        .optional()?;
    let Some((alarm, site_id, zone, customer_id)) = head else {
        return Ok(None);
    };
    let customer = match site_id {
        Some(s) => customer_card(conn, s)?,
        None => None,
    };
    let zone_description = match (site_id, &zone) {
        (Some(s), Some(z)) => conn
            .query_row(
                "SELECT description FROM zones WHERE site_id = ?1 AND number = ?2",
                params![s, z],
                |r| r.get(0),
            )
            .optional()?,
        _ => None,
    };
    let keypad_user = match (site_id, &alarm.keypad_factor) {
        (Some(s), Some(u)) => Some(
            conn.query_row(
                "SELECT name || CASE WHEN role <> '' THEN ' (' || role || ')' ELSE '' END FROM panel_users
                 WHERE site_id = ?1 AND number = ?2",
                params![s, u],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map_or_else(|| format!("user {u}"), |n| format!("user {u}: {n}")),
        ),
        (_, Some(u)) => Some(format!("user {u}")),
        _ => None,
    };
    let contacts = customer.as_ref().map(|c| c.contacts.clone()).unwrap_or_default();
    let procedure = crate::correlate::alarms::procedure(conn, id)?;
    let mut stmt = conn.prepare(
        // The alarm's own events: a chain on the event rows from the newest (the 200 newest
        // are enough), plus the secondary links and those written before schema version 7.
        &format!(
            "WITH RECURSIVE {PENDING_EVENTS}, chain(id, n) AS (
             SELECT head, 1 FROM (
                 SELECT ifnull((SELECT last_id FROM pending WHERE alarm_id = ?1), last_event_id) AS head
                 FROM alarms WHERE id = ?1)
             WHERE head IS NOT NULL
             UNION ALL
             SELECT e.alarm_prev, c.n + 1 FROM chain c JOIN events e ON e.id = c.id AND e.alarm_id = ?1
             WHERE e.alarm_prev IS NOT NULL AND c.n < 200
         )
         SELECT {EVENT_COLUMNS}
         FROM events e
         WHERE e.id IN (SELECT id FROM chain UNION SELECT event_id FROM alarm_events WHERE alarm_id = ?1)
         ORDER BY e.id DESC LIMIT 200"
        ),
    )?;
    let mut events: Vec<EventRow> = stmt.query_map(params![id], event_row)?.collect::<Result<_, _>>()?;
    events.reverse();
    // The count in the same statement, so both come from one snapshot (a commit between two
    // statements would make `log_earlier` wrong).
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, actor, action, detail, (SELECT count(*) FROM alarm_log WHERE alarm_id = ?1)
         FROM alarm_log WHERE alarm_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let mut logged = 0i64;
    let mut log: Vec<LogRow> = stmt
        .query_map(params![id, LOG_SHOWN], |r| {
            logged = r.get(4)?;
            let at_ms: i64 = r.get(0)?;
            Ok(LogRow {
                at: rfc3339_ms(at_ms),
                at_ms,
                actor: r.get(1)?,
                action: r.get(2)?,
                detail: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    log.reverse();
    let phone_locked = match customer_id {
        Some(c) => phone_locked(conn, c)?,
        None => false,
    };
    let calls = conn
        .prepare_cached(
            "SELECT k.public_id, c.phone, c.outcome, c.at_ms, c.operator FROM alarm_calls c
             JOIN contacts k ON k.id = c.contact_id WHERE c.alarm_id = ?1 ORDER BY c.id",
        )?
        .query_map(params![id], |r| {
            let outcome: String = r.get(2)?;
            Ok(CallRow {
                contact: r.get(0)?,
                phone: r.get(1)?,
                outcome: super::protocol::CallOutcome::parse(&outcome)
                    .unwrap_or(super::protocol::CallOutcome::NoAnswer),
                at_ms: r.get(3)?,
                operator: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let history = match site_id {
        Some(s) => conn
            .prepare_cached(
                "SELECT public_id, title, opened_ms, closed_ms, disposition, closed_by FROM alarms
                 WHERE site_id = ?1 AND id <> ?2 ORDER BY opened_ms DESC, id DESC LIMIT ?3",
            )?
            .query_map(params![s, id, HISTORY_SHOWN], |r| {
                Ok(PastAlarm {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    opened_ms: r.get(2)?,
                    closed_ms: r.get(3)?,
                    disposition: r.get(4)?,
                    closed_by: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let source = source_frame(conn, id, &alarm.account)?;
    let mass_loss = crate::correlate::mass_loss::view(conn, id)?;
    Ok(Some(AlarmDetail {
        alarm,
        zone,
        zone_description,
        keypad_user,
        customer,
        contacts,
        procedure,
        events,
        log_earlier: logged - log.len() as i64,
        log,
        phone_locked,
        calls,
        history,
        source,
        mass_loss,
        schedule: None,
    }))
}

/// The stored frame behind an alarm ([`SourceFrame`]), if it has one.
fn source_frame(conn: &Connection, alarm_id: i64, account: &str) -> rusqlite::Result<Option<SourceFrame>> {
    let row: Option<(
        i64,
        String,
        String,
        Vec<u8>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    )> = conn
        .query_row(
            "SELECT f.received_ms, f.transport, f.peer, f.raw, f.outcome, f.reason, f.detail, f.response_kind
             FROM alarms a JOIN frames f ON f.id = a.source_frame_id WHERE a.id = ?1",
            params![alarm_id],
            |r| {
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
            },
        )
        .optional()?;
    let Some((received_ms, transport, peer, raw, outcome, reason, detail, answer)) = row else {
        return Ok(None);
    };
    let decoded = crate::protocol::decode_frame(&raw, &Default::default()).ok().map(|f| {
        let body = match &f.body {
            crate::protocol::Body::Plain(p) => p.data.clone(),
            crate::protocol::Body::Encrypted(c) => format!("(encrypted, {} bytes)", c.len()),
        };
        let account = f.account.number().unwrap_or("(anonymous)");
        format!("{} seq {} account {account}: {body}", f.token.as_str(), f.seq)
    });
    let verdict = [
        Some(outcome),
        answer.map(|a| format!("answered {a}")),
        reason.map(|r| r.replace('_', " ")),
        detail,
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    let imported = if account.is_empty() {
        None
    } else {
        conn.query_row(
            "SELECT 'imported since: site ' || s.ref || ' (' || c.ref || ', ' || c.name || ')'
             FROM accounts a JOIN sites s ON s.id = a.site_id JOIN customers c ON c.id = s.customer_id
             WHERE a.account = ?1 LIMIT 1",
            params![account],
            |r| r.get(0),
        )
        .optional()?
    };
    Ok(Some(SourceFrame {
        received_ms,
        transport,
        peer,
        raw: crate::protocol::escape::escape(&raw),
        verdict,
        decoded,
        imported,
    }))
}

/// Whether phone cancellation is locked for a customer (too many wrong codes; see `verify`).
fn phone_locked(conn: &Connection, customer_id: i64) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM code_lockouts WHERE customer_id = ?1)",
        params![customer_id],
        |r| r.get(0),
    )
}

/// An account path whose reporting deadline has passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverdueAccount {
    /// Account.
    pub account: String,
    /// Path.
    pub path: String,
    /// Site ("" if none).
    pub site: String,
    /// Reporting interval, seconds.
    pub interval_secs: i64,
    /// Last valid traffic, if any.
    pub last_seen: Option<String>,
    /// How long overdue, seconds.
    pub overdue_secs: i64,
}

/// Supervised accounts whose deadline has passed at `now_ms`.
pub fn overdue(conn: &Connection, now_ms: i64) -> rusqlite::Result<Vec<OverdueAccount>> {
    let mut stmt = conn.prepare(&format!(
        "WITH {SEEN_PENDING}
         SELECT a.account, a.path, ifnull(s.name || ', ' || s.address, ''), a.supervision_secs, a.ats_category,
                {SEEN_COLUMN}, a.created_ms
         FROM accounts a LEFT JOIN account_status st ON st.account_id = a.id LEFT JOIN sites s ON s.id = a.site_id
              LEFT JOIN seen_pending sp ON sp.account_id = a.id
         WHERE a.enabled = 1 AND (a.supervision_secs IS NOT NULL OR a.ats_category IS NOT NULL)"
    ))?;
    let mut out = Vec::new();
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, i64>(6)?,
        ))
    })? {
        let (account, path, site, secs, cat, seen, created) = row?;
        let interval = secs.or_else(|| {
            cat.as_deref()
                .and_then(|c| crate::correlate::supervision::ats_reporting_secs(c, path == "secondary"))
                .map(|s| s as i64)
        });
        let Some(interval) = interval else { continue };
        let base = seen.unwrap_or(created);
        let deadline = base + interval * 1000;
        if deadline < now_ms {
            out.push(OverdueAccount {
                account,
                path,
                site,
                interval_secs: interval,
                last_seen: seen.map(rfc3339_ms),
                overdue_secs: (now_ms - deadline) / 1000,
            });
        }
    }
    out.sort_by_key(|o| std::cmp::Reverse(o.overdue_secs));
    Ok(out)
}

/// Past events of an account, newest first.
pub fn events_of_account(conn: &Connection, account: &str, limit: u32) -> rusqlite::Result<Vec<EventRow>> {
    let mut stmt = conn.prepare_cached(&crate::store::heads::search_sql(EVENT_COLUMNS))?;
    stmt.query_map(params![account, limit.clamp(1, 1000)], event_row)?
        .collect()
}

/// `text` as a LIKE pattern that matches it anywhere, literally.
fn contains_pattern(text: &str) -> String {
    let mut p = String::from("%");
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Customers' sites, alarms (open and closed) and an account's events matching `query`: an
/// account number, a customer or site reference, a name, an address or city, or words of an
/// alarm's title. `supervisor`: alarms of the supervisor queue too.
pub fn search(
    conn: &Connection,
    query: &str,
    limit: u32,
    supervisor: bool,
) -> rusqlite::Result<super::protocol::SearchResult> {
    let q = query.trim();
    let limit = limit.clamp(1, 1000);
    let pattern = contains_pattern(q);
    let sites = conn
        .prepare_cached(
            "SELECT c.ref, c.name, s.ref, trim(s.name || ', ' || s.address || ', ' || s.postcode || ' ' || s.city, ', '),
                    ifnull((SELECT group_concat(DISTINCT a.account) FROM accounts a WHERE a.site_id = s.id), '')
             FROM sites s JOIN customers c ON c.id = s.customer_id
             WHERE c.ref LIKE ?1 ESCAPE '\\' OR c.name LIKE ?1 ESCAPE '\\' OR s.ref LIKE ?1 ESCAPE '\\'
                OR s.name LIKE ?1 ESCAPE '\\' OR s.address LIKE ?1 ESCAPE '\\' OR s.city LIKE ?1 ESCAPE '\\'
                OR s.postcode LIKE ?1 ESCAPE '\\'
                OR EXISTS (SELECT 1 FROM accounts a WHERE a.site_id = s.id AND a.account = ?2)
             ORDER BY c.ref, s.ref LIMIT ?3",
        )?
        .query_map(params![pattern, q.to_ascii_uppercase(), limit], |r| {
            let accounts: String = r.get(4)?;
            Ok(super::protocol::SiteHit {
                customer_ref: r.get(0)?,
                customer_name: r.get(1)?,
                site_ref: r.get(2)?,
                site: r.get(3)?,
                accounts: accounts
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let sql = format!(
        "WITH {PENDING_EVENTS}
         SELECT {SUMMARY_COLUMNS} FROM alarms a LEFT JOIN sites s ON s.id = a.site_id LEFT JOIN pending p ON p.alarm_id = a.id
         LEFT JOIN customers c ON c.id = s.customer_id
         WHERE (a.queue = 'operator' OR ?3)
           AND (a.account = ?2 OR a.title LIKE ?1 ESCAPE '\\' OR s.ref LIKE ?1 ESCAPE '\\' OR s.name LIKE ?1 ESCAPE '\\'
                OR s.address LIKE ?1 ESCAPE '\\' OR c.ref LIKE ?1 ESCAPE '\\' OR c.name LIKE ?1 ESCAPE '\\')
         ORDER BY a.opened_ms DESC, a.id DESC LIMIT ?4"
    );
    let alarms = conn
        .prepare_cached(&sql)?
        .query_map(params![pattern, q.to_ascii_uppercase(), supervisor, limit], summary)?
        .collect::<Result<Vec<_>, _>>()?;
    let account = q.to_ascii_uppercase();
    let events = if !account.is_empty() && account.chars().all(|c| c.is_ascii_hexdigit()) {
        events_of_account(conn, &account, limit)?
    } else {
        Vec::new()
    };
    Ok(super::protocol::SearchResult { sites, alarms, events })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timeline said "Burglary alarm, zone 03, area 1, zone 03, area 1": the stored
    /// description already names them.
    #[test]
    fn the_timeline_names_an_events_zone_once() {
        let event = |description: &str| EventRow {
            received: String::new(),
            received_ms: 1,
            account: "1234".into(),
            code: "SIA BA".into(),
            qualifier: "new".into(),
            description: description.into(),
            zone: Some("03".into()),
            user: None,
            area: Some("1".into()),
            on_test: false,
        };
        let summary: AlarmSummary = serde_json::from_value(serde_json::json!({
            "id": "a", "queue": "operator", "priority": 3, "category": "burglary", "title": "t",
            "account": "1234", "site": "", "state": "new", "opened_ms": 1, "last_event_ms": 1,
            "events": 1, "restored": false, "escalated": false, "keypad_factor": null,
            "keypad_factor_ms": null, "phone_factor": false, "duress": false
        }))
        .expect("summary");
        let d = AlarmDetail {
            alarm: summary,
            zone: None,
            zone_description: None,
            keypad_user: None,
            customer: None,
            contacts: vec![],
            procedure: vec![],
            events: vec![event("Burglary alarm, zone 03, area 1"), event("Burglary alarm")],
            log: vec![],
            log_earlier: 0,
            phone_locked: false,
            calls: vec![],
            history: vec![],
            source: None,
            mass_loss: None,
            schedule: None,
        };
        let t = d.timeline();
        assert_eq!(t[0].detail, "Burglary alarm, zone 03, area 1");
        assert_eq!(t[1].detail, "Burglary alarm, zone 03, area 1");
        // An event received on test says so (issue "Schedules": events shown as test).
        let mut d = d;
        d.events[1].on_test = true;
        assert_eq!(d.timeline()[1].detail, "Burglary alarm, zone 03, area 1 (on test)");
    }
}
