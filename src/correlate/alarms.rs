//! Alarms: opened by events, joined by more events of the same site and zone, restored,
//! escalated when nobody acknowledges them, and moved by operators through
//! new → acknowledged → in progress → closed (with a disposition). Every change is logged with
//! who made it and when.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use crate::protocol::codes::{Category, Kind};
use crate::store::StoreError;

/// Which queue an alarm is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Queue {
    /// The operators' alarm queue.
    Operator,
    /// The supervisor's queue: unknown accounts and codes, missing customer records.
    Supervisor,
}

impl Queue {
    fn as_str(&self) -> &'static str {
        match self {
            Queue::Operator => "operator",
            Queue::Supervisor => "supervisor",
        }
    }
}

/// An alarm's tier in the queue (lower first): duress, hold-up, panic, fire and medical alarms
/// in that order (0 to 4), every other category after them (5). The queue's order is tier,
/// then priority (1 first; escalation lowers the number), then the oldest first: escalating an
/// alarm of another category raises its priority but never its tier, so no number of escalated
/// burglaries can bury a hold-up. `duress` (a duress code given by phone on any alarm) counts
/// as the duress category.
pub fn queue_tier(category: &str, duress: bool) -> u8 {
    if duress {
        return 0;
    }
    Category::parse(category)
        .and_then(|c| c.life_safety_rank())
        .unwrap_or(crate::protocol::codes::LIFE_SAFETY.len() as u8)
}

/// [`queue_tier`] as SQL over the alarm row `a`.
pub fn queue_tier_sql() -> String {
    let mut sql = String::from("CASE WHEN a.duress THEN 0");
    for (i, c) in crate::protocol::codes::LIFE_SAFETY.iter().enumerate() {
        sql.push_str(&format!(" WHEN a.category = '{}' THEN {i}", c.as_str()));
    }
    sql.push_str(&format!(" ELSE {} END", crate::protocol::codes::LIFE_SAFETY.len()));
    sql
}

/// What an event contributes to an alarm.
#[derive(Debug, Clone)]
pub struct AlarmSpec {
    /// Queue.
    pub queue: Queue,
    /// Site.
    pub site_id: Option<i64>,
    /// Account row.
    pub account_id: Option<i64>,
    /// Account number (display).
    pub account: String,
    /// Join key: one open alarm per site and key.
    pub join_key: String,
    /// Category.
    pub category: Option<Category>,
    /// Priority 1–9.
    pub priority: u8,
    /// Title.
    pub title: String,
    /// Zone.
    pub zone: Option<String>,
    /// Area.
    pub area: Option<String>,
    /// Duress: the top of the queue, never cancellable.
    pub duress: bool,
    /// The stored frame behind an item that has no event row (an unknown account, input not
    /// understood): the supervisor sees what was sent, from where and when.
    pub source_frame: Option<i64>,
}

impl AlarmSpec {
    /// A supervisor-queue item with no site, account row, category, zone or area (unknown
    /// accounts, input not understood, operator alerts); callers set what they know more.
    pub fn supervisor(
        account: impl Into<String>,
        join_key: impl Into<String>,
        title: impl Into<String>,
        priority: u8,
    ) -> AlarmSpec {
        AlarmSpec {
            queue: Queue::Supervisor,
            site_id: None,
            account_id: None,
            account: account.into(),
            join_key: join_key.into(),
            category: None,
            priority,
            title: title.into(),
            zone: None,
            area: None,
            duress: false,
            source_frame: None,
        }
    }
}

/// A random 128-bit identifier for the API (never a sequential row id).
pub fn public_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness is a broken system; still never hand out a guessable id quietly.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = t.to_le_bytes();
    }
    hex::encode(b)
}

/// Append to an alarm's log.
pub fn log(
    tx: &Transaction<'_>,
    alarm_id: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    detail: &str,
) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached("INSERT INTO alarm_log (alarm_id, at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    stmt.execute(params![alarm_id, at_ms, actor, action, detail])?;
    Ok(())
}

/// "Burglary alarm, zone 3: Back door, ground floor".
pub fn title_for(
    tx: &Transaction<'_>,
    site_id: i64,
    description: &str,
    zone: Option<&str>,
) -> Result<String, StoreError> {
    let Some(z) = zone else {
        return Ok(description.to_string());
    };
    let mut stmt = tx.prepare_cached("SELECT description FROM zones WHERE site_id = ?1 AND number = ?2")?;
    let d: Option<String> = stmt.query_row(params![site_id, z], |r| r.get(0)).optional()?;
    Ok(match d {
        Some(d) => format!("{description}, zone {z}: {d}"),
        None => format!("{description}, zone {z}"),
    })
}

/// A common table expression `pending(alarm_id, n, last_ms, last_id)`: the events linked to
/// each alarm that its row does not count yet. An alarm's event count is `event_count + n`, its
/// last event time `max(last_event_ms, last_ms)`, its newest event `ifnull(last_id,
/// last_event_id)`. A range scan of at most about two seconds of events (`FOLD_EVERY` between
/// folds, `FOLD_WITHIN` for a fold in slices, in `correlate`).
///
/// What the rows count (`meta`): every linked event up to `alarm_event_id`; while a fold goes
/// through the alarms in slices ([`fold_slice`]), also every one up to `alarm_fold_upto` of the
/// alarms up to `alarm_fold_done` (0 when no slice is done).
pub const PENDING_EVENTS: &str = "pending(alarm_id, n, last_ms, last_id) AS MATERIALIZED (
    SELECT alarm_id, count(*), max(received_ms), max(id) FROM events
    WHERE id > (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'alarm_event_id') AND alarm_id IS NOT NULL
      AND (alarm_id > (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'alarm_fold_done')
           OR id > (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'alarm_fold_upto'))
    GROUP BY alarm_id)";

/// Count every linked event not counted yet, up to event `upto` (default: every event stored
/// so far), into its alarm's row, and move the watermark to `upto` (ending a sliced fold under
/// way). Returns how many alarms were updated. `upto` must not leave out an event that is
/// linked already, nor take in one that will be linked later (between a frame's insert and its
/// correlation: the event before the one about to be linked).
///
/// A joined event writes nothing to its alarm's row: its link on its own event row is the
/// record, and the writer counts the links into the rows about once a second, so a flood
/// touches each alarm's row once per second instead of once per event. The writer knows the
/// links it made and counts those in slices ([`fold_slice`]); this scan is for when it does
/// not know them (after a start or a rollback, or past the bound on what it remembers). A
/// crash between two folds loses nothing: the links are committed with their events, and
/// readers count them through [`PENDING_EVENTS`].
pub fn fold_events(tx: &Transaction<'_>, upto: Option<i64>) -> Result<usize, StoreError> {
    let upto = match upto {
        Some(u) => u,
        None => newest_event(tx)?,
    };
    let n = tx
        .prepare_cached(
            "WITH p(alarm_id, n, last_ms, last_id) AS MATERIALIZED (
                 SELECT alarm_id, count(*), max(received_ms), max(id) FROM events
                 WHERE id > (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'alarm_event_id') AND id <= ?1
                   AND alarm_id IS NOT NULL
                   AND (alarm_id > (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'alarm_fold_done')
                        OR id > (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'alarm_fold_upto'))
                 GROUP BY alarm_id)
             UPDATE alarms SET event_count = event_count + p.n, last_event_ms = max(last_event_ms, p.last_ms),
                               last_event_id = p.last_id
             FROM p WHERE alarms.id = p.alarm_id",
        )?
        .execute([upto])?;
    set_fold_marks(tx, Some(upto), 0)?;
    Ok(n)
}

/// The newest stored event (0: none).
pub fn newest_event(tx: &Transaction<'_>) -> Result<i64, StoreError> {
    Ok(tx
        .prepare_cached("SELECT ifnull(max(id), 0) FROM events")?
        .query_row([], |r| r.get(0))?)
}

/// The events linked to one alarm that its row does not count yet, as the writer collected
/// them while linking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uncounted {
    /// How many.
    pub n: i64,
    /// The latest receive time among them.
    pub last_ms: i64,
    /// The newest of them.
    pub last_id: i64,
}

impl Uncounted {
    /// One more linked event.
    pub fn add(&mut self, event_id: i64, received_ms: i64) {
        self.n += 1;
        self.last_ms = self.last_ms.max(received_ms);
        self.last_id = self.last_id.max(event_id);
    }
}

/// One slice of a fold: count `slice` (alarms in ascending id order, each with its uncounted
/// events up to `upto`) into the alarms' rows. With `last`, the fold is complete: the
/// watermark moves to `upto`; else the alarms up to the slice's last are marked done.
///
/// Each alarm's row is written once per fold as with [`fold_events`], but a fold of thousands
/// of alarms no longer makes one commit that every frame queued behind it waits for.
pub fn fold_slice(tx: &Transaction<'_>, upto: i64, slice: &[(i64, Uncounted)], last: bool) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE alarms SET event_count = event_count + ?2, last_event_ms = max(last_event_ms, ?3), last_event_id = ?4
         WHERE id = ?1",
    )?;
    for (id, u) in slice {
        stmt.execute(params![id, u.n, u.last_ms, u.last_id])?;
    }
    match (last, slice.last()) {
        (true, _) => set_fold_marks(tx, Some(upto), 0),
        (false, Some((done, _))) => set_fold_marks(tx, None, *done),
        (false, None) => Ok(()),
    }
}

/// Start a sliced fold of the events up to `upto` (nothing counted by it yet).
pub fn begin_fold(tx: &Transaction<'_>, upto: i64) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE meta SET value = CAST(?1 AS TEXT) WHERE key = 'alarm_fold_upto'")?
        .execute([upto])?;
    set_fold_marks(tx, None, 0)
}

/// Move the watermark (if given) and set how far the slices have gone.
fn set_fold_marks(tx: &Transaction<'_>, watermark: Option<i64>, done: i64) -> Result<(), StoreError> {
    if let Some(w) = watermark {
        tx.prepare_cached("UPDATE meta SET value = CAST(?1 AS TEXT) WHERE key = 'alarm_event_id'")?
            .execute([w])?;
    }
    tx.prepare_cached("UPDATE meta SET value = CAST(?1 AS TEXT) WHERE key = 'alarm_fold_done'")?
        .execute([done])?;
    Ok(())
}

/// An open alarm as [`open_or_join`] left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// Row id.
    pub id: i64,
    /// Its priority now.
    pub priority: u8,
    /// Its newest event as counted in its row (`last_event_id`); events linked after the
    /// watermark may be newer.
    pub counted_head: Option<i64>,
}

/// Open an alarm, or join the open one with the same site and join key (clearing its
/// restored mark, raising its priority if the event is more urgent).
///
/// `with_event`: an event row will be linked to the alarm by the caller ([`link`]); it is
/// counted from that link (see [`fold_events`]). Without, the alarm's last event time is set
/// here (an unknown account's frame, a supervision or lockout alert), and a join is logged
/// (`repeated`): that log entry is the alarm's record of the alert, and how a queue
/// subscription finds the change ([`crate::operator::queries::changed_since`]; every other
/// change of an alarm row is an event link or a log entry too).
pub fn open_or_join(tx: &Transaction<'_>, a: &AlarmSpec, with_event: bool, now: i64) -> Result<Joined, StoreError> {
    let existing: Option<(i64, u8, Option<i64>)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, priority, last_event_id FROM alarms
             WHERE ifnull(site_id, -1) = ifnull(?1, -1) AND join_key = ?2 AND state <> 'closed'",
        )?;
        stmt.query_row(params![a.site_id, a.join_key], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?
    };
    let last_ms = if with_event { None } else { Some(now) };
    match existing {
        Some((id, priority, head)) if a.priority >= priority && !a.duress => {
            // Nothing about the alarm changes but its time (without an event) or its restored
            // mark. Setting only those leaves the indexes on priority and category alone
            // (SQLite rewrites an index entry when its column is in the SET list).
            let mut stmt = tx.prepare_cached(
                "UPDATE alarms SET last_event_ms = max(last_event_ms, ifnull(?2, last_event_ms)), restored_ms = NULL
                 WHERE id = ?1 AND (restored_ms IS NOT NULL OR ?2 IS NOT NULL)",
            )?;
            stmt.execute(params![id, last_ms])?;
            if let Some(f) = a.source_frame {
                set_source_frame(tx, id, f)?;
            }
            if !with_event {
                log(tx, id, now, "system", "repeated", &a.title)?;
            }
            Ok(Joined {
                id,
                priority,
                counted_head: head,
            })
        }
        Some((id, priority, head)) => {
            let mut stmt = tx.prepare_cached(
                "UPDATE alarms SET last_event_ms = max(last_event_ms, ifnull(?2, last_event_ms)), restored_ms = NULL,
                        duress = max(duress, ?3),
                        category = CASE WHEN ?4 < priority THEN ?5 ELSE category END,
                        title = CASE WHEN ?4 < priority THEN ?6 ELSE title END,
                        priority = min(priority, ?4)
                 WHERE id = ?1",
            )?;
            stmt.execute(params![
                id,
                last_ms,
                a.duress,
                a.priority,
                a.category.map(|c| c.as_str()),
                a.title,
            ])?;
            if let Some(f) = a.source_frame {
                set_source_frame(tx, id, f)?;
            }
            if a.priority < priority {
                log(
                    tx,
                    id,
                    now,
                    "system",
                    "priority_raised",
                    &format!("{priority} -> {}: {}", a.priority, a.title),
                )?;
            } else if !with_event {
                log(tx, id, now, "system", "repeated", &a.title)?;
            }
            Ok(Joined {
                id,
                priority: priority.min(a.priority),
                counted_head: head,
            })
        }
        None => {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO alarms (public_id, queue, site_id, account_id, account, join_key, category, priority, title,
                                     zone, area, state, opened_ms, last_event_ms, event_count, duress, source_frame_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'new', ?12, ?12, 0, ?13, ?14)",
            )?;
            stmt.execute(params![
                public_id(),
                a.queue.as_str(),
                a.site_id,
                a.account_id,
                a.account,
                a.join_key,
                a.category.map(|c| c.as_str()),
                a.priority,
                a.title,
                a.zone,
                a.area,
                now,
                a.duress,
                a.source_frame,
            ])?;
            let id = tx.last_insert_rowid();
            log(tx, id, now, "system", "opened", &a.title)?;
            Ok(Joined {
                id,
                priority: a.priority,
                counted_head: None,
            })
        }
    }
}

fn set_source_frame(tx: &Transaction<'_>, alarm_id: i64, frame_id: i64) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE alarms SET source_frame_id = ?2 WHERE id = ?1")?
        .execute(params![alarm_id, frame_id])?;
    Ok(())
}

/// Record that `event_id` belongs to `alarm_id`, on the event row: the row was written in this
/// transaction, so its page is already dirty. `prev` is the alarm's newest event before it (the
/// chain that [`crate::operator::queries`] walks). This link is also what counts the event in
/// the alarm ([`fold_events`]).
pub fn link(tx: &Transaction<'_>, alarm_id: i64, prev: Option<i64>, event_id: i64) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached("UPDATE events SET alarm_id = ?1, alarm_prev = ?2 WHERE id = ?3")?;
    stmt.execute(params![alarm_id, prev, event_id])?;
    Ok(())
}

/// Mark the open alarm for this zone restored.
pub fn restore_zone(
    tx: &Transaction<'_>,
    site_id: Option<i64>,
    join_key: &str,
    event_id: i64,
    now: i64,
) -> Result<(), StoreError> {
    let id: Option<i64> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id FROM alarms WHERE ifnull(site_id, -1) = ifnull(?1, -1) AND join_key = ?2 AND state <> 'closed'",
        )?;
        stmt.query_row(params![site_id, join_key], |r| r.get(0)).optional()?
    };
    if let Some(id) = id {
        let mut stmt = tx.prepare_cached("UPDATE alarms SET restored_ms = ?2 WHERE id = ?1")?;
        stmt.execute(params![id, now])?;
        let mut stmt = tx.prepare_cached("INSERT OR IGNORE INTO alarm_events (alarm_id, event_id) VALUES (?1, ?2)")?;
        stmt.execute(params![id, event_id])?;
        log(tx, id, now, "system", "restored", "")?;
    }
    Ok(())
}

/// Traffic from an account path: restore its open "communication lost" alarm. Returns how
/// many were restored.
pub fn restore_communication(tx: &Transaction<'_>, account_id: i64, now: i64) -> Result<usize, StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE alarms SET restored_ms = ?2
         WHERE account_id = ?1 AND state <> 'closed' AND category = 'communication' AND restored_ms IS NULL
         RETURNING id",
    )?;
    let ids: Vec<i64> = stmt
        .query_map(params![account_id, now], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        log(tx, *id, now, "system", "restored", "traffic received again")?;
    }
    Ok(ids.len())
}

/// Set a site's armed state.
pub fn set_armed(
    tx: &Transaction<'_>,
    site_id: i64,
    armed: bool,
    user: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached("UPDATE sites SET armed_state = ?2, armed_changed_ms = ?3, armed_by_user = ?4 WHERE id = ?1")?;
    stmt.execute(params![site_id, if armed { "armed" } else { "disarmed" }, now, user])?;
    Ok(())
}

/// A disarm or cancel at the panel by a user, after an alarm: the panel-side factor of a
/// cancellation, recorded on every open alarm of the site that opened before it.
pub fn record_keypad_factor(
    tx: &Transaction<'_>,
    site_id: i64,
    user: Option<&str>,
    kind: Kind,
    event_id: i64,
    now: i64,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE alarms SET keypad_factor_ms = ?2, keypad_factor_user = ?3
         WHERE site_id = ?1 AND state <> 'closed' AND queue = 'operator' AND opened_ms <= ?2
         RETURNING id",
    )?;
    let ids: Vec<i64> = stmt
        .query_map(params![site_id, now, user], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in ids {
        let mut link = tx.prepare_cached("INSERT OR IGNORE INTO alarm_events (alarm_id, event_id) VALUES (?1, ?2)")?;
        link.execute(params![id, event_id])?;
        let what = if kind == Kind::Cancel { "cancel" } else { "disarm" };
        log(
            tx,
            id,
            now,
            "panel",
            "keypad_factor",
            &format!("{what} at the panel by user {}", user.unwrap_or("?")),
        )?;
    }
    Ok(())
}

/// Escalate alarms nobody acknowledged within `after_ms`: one priority level up (not above 1),
/// logged. Returns how many.
pub fn escalate_unacknowledged(tx: &Transaction<'_>, now: i64, after_ms: i64) -> Result<usize, StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE alarms SET escalated_ms = ?1, priority = max(1, priority - 1)
         WHERE state = 'new' AND escalated_ms IS NULL AND opened_ms <= ?1 - ?2
         RETURNING id",
    )?;
    let ids: Vec<i64> = stmt
        .query_map(params![now, after_ms], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        log(tx, *id, now, "system", "escalated", "not acknowledged in time")?;
    }
    Ok(ids.len())
}

/// How an alarm was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Stand-down: cancelled by the customer (needs both factors).
    CancelledByCustomer,
    /// Guard, police or fire brigade dispatched.
    Dispatched,
    /// A technical fault, handed to the installer.
    TechnicalFault,
    /// A test.
    Test,
    /// A false alarm established otherwise (e.g. by the responder on site).
    FalseAlarm,
    /// Handled with another alarm.
    Duplicate,
    /// Anything else (see the notes).
    Other,
}

impl Disposition {
    /// Stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Disposition::CancelledByCustomer => "cancelled_by_customer",
            Disposition::Dispatched => "dispatched",
            Disposition::TechnicalFault => "technical_fault",
            Disposition::Test => "test",
            Disposition::FalseAlarm => "false_alarm",
            Disposition::Duplicate => "duplicate",
            Disposition::Other => "other",
        }
    }

    /// Parse the stable name.
    pub fn parse(s: &str) -> Option<Disposition> {
        [
            Disposition::CancelledByCustomer,
            Disposition::Dispatched,
            Disposition::TechnicalFault,
            Disposition::Test,
            Disposition::FalseAlarm,
            Disposition::Duplicate,
            Disposition::Other,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// An operator action that cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// No such alarm.
    #[error("no such alarm")]
    NotFound,
    /// The alarm is closed.
    #[error("the alarm is already closed")]
    Closed,
    /// The transition is not allowed from the current state.
    #[error("cannot {action} an alarm that is {state}")]
    State {
        /// Attempted.
        action: &'static str,
        /// Current state.
        state: String,
    },
    /// A customer cancellation needs both factors.
    #[error("cannot close as cancelled by customer: missing {}", missing.join(" and "))]
    MissingFactor {
        /// Which factors are missing.
        missing: Vec<&'static str>,
    },
    /// A duress alarm is never a cancellation.
    #[error("a duress alarm can never be closed as cancelled by customer")]
    Duress,
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// This disposition needs a note.
    #[error("closing as {0} needs a note saying what happened")]
    NoteRequired(&'static str),
    /// Mandatory procedure steps are open.
    #[error(
        "mandatory procedure step(s) {} not done: tick them, or give the reason they were not done",
        open.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    )]
    MandatorySteps {
        /// The open steps.
        open: Vec<u32>,
    },
    /// The contact is not one of the alarm customer's.
    #[error("no such contact for this alarm")]
    NoContact,
    /// Database failure.
    #[error("database error: {0}")]
    Store(String),
}

impl From<rusqlite::Error> for ActionError {
    fn from(e: rusqlite::Error) -> Self {
        ActionError::Store(e.to_string())
    }
}

impl From<StoreError> for ActionError {
    fn from(e: StoreError) -> Self {
        ActionError::Store(e.to_string())
    }
}

/// The two factors of a cancellation as they stand on an alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Factors {
    /// Panel disarm/cancel by a user after the alarm: when, which user.
    pub keypad: Option<(i64, Option<String>)>,
    /// Accepted phone cancellation code: when, which contact (row id).
    pub phone: Option<(i64, Option<i64>)>,
    /// Duress was signalled.
    pub duress: bool,
}

impl Factors {
    /// Which factors are missing for a cancellation within `window_ms` of each other.
    pub fn missing(&self, window_ms: i64) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.keypad.is_none() {
            m.push("the panel disarm by a user (keypad factor)");
        }
        if self.phone.is_none() {
            m.push("a verified phone cancellation code");
        }
        if let (Some((k, _)), Some((p, _))) = (&self.keypad, &self.phone)
            && (k - p).abs() > window_ms
        {
            m.push("both factors within the cancellation window");
        }
        m
    }
}

fn state_of(tx: &Transaction<'_>, alarm_id: i64) -> Result<String, ActionError> {
    tx.query_row("SELECT state FROM alarms WHERE id = ?1", params![alarm_id], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or(ActionError::NotFound)
}

/// The factors on an alarm.
pub fn factors(tx: &rusqlite::Connection, alarm_id: i64) -> Result<Factors, ActionError> {
    tx.query_row(
        "SELECT keypad_factor_ms, keypad_factor_user, phone_factor_ms, phone_factor_contact, duress FROM alarms WHERE id = ?1",
        params![alarm_id],
        |r| {
            let k: Option<i64> = r.get(0)?;
            let p: Option<i64> = r.get(2)?;
            Ok(Factors {
                keypad: k.map(|k| (k, r.get(1).ok().flatten())),
                phone: p.map(|p| (p, r.get(3).ok().flatten())),
                duress: r.get(4)?,
            })
        },
    )
    .optional()?
    .ok_or(ActionError::NotFound)
}

/// new → acknowledged.
pub fn acknowledge(tx: &Transaction<'_>, alarm_id: i64, operator: &str, now: i64) -> Result<(), ActionError> {
    match state_of(tx, alarm_id)?.as_str() {
        "new" => {}
        "closed" => return Err(ActionError::Closed),
        s => {
            return Err(ActionError::State {
                action: "acknowledge",
                state: s.into(),
            });
        }
    }
    tx.execute(
        "UPDATE alarms SET state = 'acknowledged', acknowledged_ms = ?2, acknowledged_by = ?3 WHERE id = ?1",
        params![alarm_id, now, operator],
    )?;
    log(tx, alarm_id, now, operator, "acknowledged", "")?;
    Ok(())
}

/// Who acts on an alarm: an operator, and the session that holds it (none for tools and
/// tests that act outside a session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handler<'a> {
    /// Operator name.
    pub name: &'a str,
    /// Session row.
    pub session: Option<i64>,
}

impl<'a> Handler<'a> {
    /// An operator acting outside a session.
    pub fn named(name: &'a str) -> Handler<'a> {
        Handler { name, session: None }
    }
}

/// Take the alarm: it becomes in progress with `h` as its one handler (acknowledged on the way
/// if it was new). `how` is logged ("started", "taken over: REASON", ...). The authorisation
/// (who may take it from whom) is the caller's: [`crate::operator::authz`].
pub fn take(tx: &Transaction<'_>, alarm_id: i64, h: Handler<'_>, how: &str, now: i64) -> Result<(), ActionError> {
    match state_of(tx, alarm_id)?.as_str() {
        "new" => acknowledge(tx, alarm_id, h.name, now)?,
        "acknowledged" | "in_progress" => {}
        _ => return Err(ActionError::Closed),
    }
    tx.execute(
        "UPDATE alarms SET state = 'in_progress', in_progress_ms = ?2, in_progress_by = ?3, owner = ?3,
                owner_session = ?4, recall_ms = NULL, recall_note = NULL
         WHERE id = ?1",
        params![alarm_id, now, h.name, h.session],
    )?;
    log(tx, alarm_id, now, h.name, "in_progress", how)?;
    Ok(())
}

/// acknowledged (or new) → in progress, with `h` as its handler.
pub fn start_handling(tx: &Transaction<'_>, alarm_id: i64, h: Handler<'_>, now: i64) -> Result<(), ActionError> {
    if state_of(tx, alarm_id)? == "in_progress" && owner_of(tx, alarm_id)?.as_deref() == Some(h.name) {
        return Err(ActionError::State {
            action: "start handling",
            state: "in progress with you already".into(),
        });
    }
    take(tx, alarm_id, h, "started", now)
}

/// Give the alarm back to the queue (acknowledged, nobody handling it).
pub fn release(tx: &Transaction<'_>, alarm_id: i64, by: &str, now: i64) -> Result<(), ActionError> {
    let owner = owner_of(tx, alarm_id)?;
    tx.execute(
        "UPDATE alarms SET owner = NULL, owner_session = NULL,
                state = CASE WHEN state = 'in_progress' THEN 'acknowledged' ELSE state END
         WHERE id = ?1 AND state <> 'closed'",
        params![alarm_id],
    )?;
    let detail = match owner {
        Some(o) if o != by => format!("back in the queue (was handled by {o})"),
        _ => "back in the queue".to_string(),
    };
    log(tx, alarm_id, now, by, "released", &detail)?;
    Ok(())
}

fn owner_of(tx: &Transaction<'_>, alarm_id: i64) -> Result<Option<String>, ActionError> {
    Ok(tx
        .query_row("SELECT owner FROM alarms WHERE id = ?1", params![alarm_id], |r| {
            r.get(0)
        })
        .optional()?
        .flatten())
}

/// Longest note, in bytes.
pub const MAX_NOTE: usize = 4000;

fn check_note(text: &str) -> Result<&str, ActionError> {
    let t = text.trim();
    if t.is_empty() || t.len() > MAX_NOTE {
        return Err(ActionError::Invalid(format!("a note is 1 to {MAX_NOTE} characters")));
    }
    Ok(t)
}

/// A free-text note.
pub fn note(tx: &Transaction<'_>, alarm_id: i64, operator: &str, text: &str, now: i64) -> Result<(), ActionError> {
    let text = check_note(text)?;
    state_of(tx, alarm_id)?;
    log(tx, alarm_id, now, operator, "note", text)?;
    Ok(())
}

/// Put an alarm aside for `minutes`: nobody handles it, it leaves the queue, and at the time
/// it comes back by itself ([`recall_due`]). Logged with who and why.
pub fn recall(
    tx: &Transaction<'_>,
    alarm_id: i64,
    operator: &str,
    minutes: u32,
    note: Option<&str>,
    now: i64,
) -> Result<i64, ActionError> {
    if !(1..=1440).contains(&minutes) {
        return Err(ActionError::Invalid("recall in 1 to 1440 minutes".into()));
    }
    let note = note.map(check_note).transpose()?;
    if state_of(tx, alarm_id)? == "closed" {
        return Err(ActionError::Closed);
    }
    let at = now + i64::from(minutes) * 60_000;
    tx.execute(
        "UPDATE alarms SET recall_ms = ?2, recall_note = ?3, owner = NULL, owner_session = NULL,
                state = CASE WHEN state = 'new' THEN 'acknowledged' WHEN state = 'in_progress' THEN 'acknowledged' ELSE state END,
                acknowledged_ms = ifnull(acknowledged_ms, ?4), acknowledged_by = ifnull(acknowledged_by, ?5)
         WHERE id = ?1",
        params![alarm_id, at, note, now, operator],
    )?;
    log(
        tx,
        alarm_id,
        now,
        operator,
        "recall_set",
        &format!(
            "put aside for {minutes} min by {operator}{}",
            note.map(|n| format!(": {n}")).unwrap_or_default()
        ),
    )?;
    Ok(at)
}

/// Bring back every put-aside alarm whose time has come. Returns how many.
pub fn recall_due(tx: &Transaction<'_>, now: i64) -> Result<usize, StoreError> {
    let due: Vec<(i64, Option<String>)> = tx
        .prepare_cached("SELECT id, recall_note FROM alarms WHERE recall_ms <= ?1 AND state <> 'closed'")?
        .query_map(params![now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, note) in &due {
        tx.prepare_cached("UPDATE alarms SET recall_ms = NULL, recall_note = NULL WHERE id = ?1")?
            .execute(params![id])?;
        log(
            tx,
            *id,
            now,
            "system",
            "recalled",
            &format!(
                "back in the queue{}",
                note.as_deref().map(|n| format!(": {n}")).unwrap_or_default()
            ),
        )?;
    }
    Ok(due.len())
}

/// Log a call to a contact of the alarm's customer. Refuses a contact of anyone else.
pub fn record_call(
    tx: &Transaction<'_>,
    alarm_id: i64,
    contact_public_id: &str,
    phone: Option<&str>,
    outcome: &str,
    operator: &str,
    now: i64,
) -> Result<(), ActionError> {
    let contact: Option<(i64, String, String)> = tx
        .query_row(
            "SELECT k.id, k.name, k.phones FROM contacts k JOIN sites s ON s.customer_id = k.customer_id
             JOIN alarms a ON a.site_id = s.id WHERE a.id = ?1 AND k.public_id = ?2",
            params![alarm_id, contact_public_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((contact_id, name, phones)) = contact else {
        return Err(ActionError::NoContact);
    };
    let phones: Vec<String> = serde_json::from_str(&phones).unwrap_or_default();
    if let Some(p) = phone
        && !phones.iter().any(|x| x == p)
    {
        return Err(ActionError::Invalid("that number is not one of the contact's".into()));
    }
    if state_of(tx, alarm_id)? == "closed" {
        return Err(ActionError::Closed);
    }
    tx.execute(
        "INSERT INTO alarm_calls (alarm_id, contact_id, phone, outcome, at_ms, operator) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![alarm_id, contact_id, phone, outcome, now, operator],
    )?;
    let number = phone.map(|p| format!(" on {p}")).unwrap_or_default();
    log(
        tx,
        alarm_id,
        now,
        operator,
        "call",
        &format!("called {name}{number}: {}", outcome.replace('_', " ")),
    )?;
    Ok(())
}

/// A step of an alarm's procedure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProcedureStep {
    /// 1-based.
    pub number: u32,
    /// Instruction.
    pub instruction: String,
    /// Must be done (or the reason given) before a close.
    #[serde(default)]
    pub mandatory: bool,
    /// Done by (operator), when ticked.
    pub done_by: Option<String>,
}

/// The procedure of an alarm: its customer's own for its category, else the default set;
/// with what has been ticked.
pub fn procedure(conn: &rusqlite::Connection, alarm_id: i64) -> rusqlite::Result<Vec<ProcedureStep>> {
    let mut stmt = conn.prepare_cached(
        "WITH a AS (SELECT a.id, a.category, s.customer_id FROM alarms a LEFT JOIN sites s ON s.id = a.site_id
                    WHERE a.id = ?1),
              own AS (SELECT p.* FROM procedure_steps p, a WHERE p.customer_id = a.customer_id AND p.category = a.category)
         SELECT p.step, p.instruction, p.mandatory, g.done_by
         FROM (SELECT * FROM own
               UNION ALL
               SELECT p.* FROM procedure_steps p, a WHERE p.customer_id IS NULL AND p.category = a.category
                 AND NOT EXISTS (SELECT 1 FROM own)) p
         LEFT JOIN procedure_progress g ON g.alarm_id = ?1 AND g.step = p.step
         ORDER BY p.step",
    )?;
    let steps = stmt
        .query_map(params![alarm_id], |r| {
            Ok(ProcedureStep {
                number: r.get(0)?,
                instruction: r.get(1)?,
                mandatory: r.get(2)?,
                done_by: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(steps)
}

/// What a close says besides its disposition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Closing<'a> {
    /// A note: required for `other` and `false_alarm`.
    pub note: Option<&'a str>,
    /// Why mandatory steps were not done: required while some are open.
    pub skipped_reason: Option<&'a str>,
}

/// Close with a disposition. A customer cancellation needs the panel-side factor and a
/// verified phone code within `cancel_window_ms` of each other, and is never possible for a
/// duress alarm; `other` and `false_alarm` need a note; the procedure's mandatory steps must be
/// ticked, or the reason they were not given.
pub fn close(
    tx: &Transaction<'_>,
    alarm_id: i64,
    operator: &str,
    disposition: Disposition,
    closing: Closing<'_>,
    now: i64,
    cancel_window_ms: i64,
) -> Result<(), ActionError> {
    if state_of(tx, alarm_id)? == "closed" {
        return Err(ActionError::Closed);
    }
    if disposition == Disposition::CancelledByCustomer {
        let f = factors(tx, alarm_id)?;
        if f.duress {
            return Err(ActionError::Duress);
        }
        let missing = f.missing(cancel_window_ms);
        if !missing.is_empty() {
            return Err(ActionError::MissingFactor { missing });
        }
    }
    let note = closing.note.map(check_note).transpose()?;
    if matches!(disposition, Disposition::Other | Disposition::FalseAlarm) && note.is_none() {
        return Err(ActionError::NoteRequired(disposition.as_str()));
    }
    let open: Vec<u32> = procedure(tx, alarm_id)?
        .into_iter()
        .filter(|s| s.mandatory && s.done_by.is_none())
        .map(|s| s.number)
        .collect();
    let skipped = closing.skipped_reason.map(check_note).transpose()?;
    if !open.is_empty() && skipped.is_none() {
        return Err(ActionError::MandatorySteps { open });
    }
    if let Some(n) = note {
        log(tx, alarm_id, now, operator, "note", n)?;
    }
    if let (false, Some(why)) = (open.is_empty(), skipped) {
        let steps = open.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        log(
            tx,
            alarm_id,
            now,
            operator,
            "steps_skipped",
            &format!("mandatory step(s) {steps} not done: {why}"),
        )?;
    }
    tx.execute(
        "UPDATE alarms SET state = 'closed', closed_ms = ?2, closed_by = ?3, disposition = ?4, owner = NULL,
                owner_session = NULL, recall_ms = NULL
         WHERE id = ?1",
        params![alarm_id, now, operator, disposition.as_str()],
    )?;
    log(tx, alarm_id, now, operator, "closed", disposition.as_str())?;
    Ok(())
}

/// Tick (or untick) a procedure step on an alarm.
pub fn tick_step(
    tx: &Transaction<'_>,
    alarm_id: i64,
    step: u32,
    done: bool,
    operator: &str,
    now: i64,
) -> Result<(), ActionError> {
    if state_of(tx, alarm_id)? == "closed" {
        return Err(ActionError::Closed);
    }
    let steps = procedure(tx, alarm_id)?;
    let Some(s) = steps.iter().find(|s| s.number == step) else {
        return Err(ActionError::Invalid(format!(
            "the procedure has no step {step} (it has {})",
            steps.len()
        )));
    };
    if done {
        tx.execute(
            "INSERT INTO procedure_progress (alarm_id, step, done_by, done_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (alarm_id, step) DO UPDATE SET done_by = excluded.done_by, done_ms = excluded.done_ms",
            params![alarm_id, step, operator, now],
        )?;
    } else {
        tx.execute(
            "DELETE FROM procedure_progress WHERE alarm_id = ?1 AND step = ?2",
            params![alarm_id, step],
        )?;
    }
    log(
        tx,
        alarm_id,
        now,
        operator,
        if done { "step_done" } else { "step_undone" },
        &format!("step {step}: {}", s.instruction),
    )?;
    Ok(())
}

/// Record an accepted phone code on an alarm (the phone factor). Used by the verification
/// module only.
pub fn record_phone_factor(tx: &Transaction<'_>, alarm_id: i64, contact_id: i64, now: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE alarms SET phone_factor_ms = ?2, phone_factor_contact = ?3 WHERE id = ?1",
        params![alarm_id, now, contact_id],
    )?;
    log(
        tx,
        alarm_id,
        now,
        "system",
        "phone_factor",
        "phone cancellation code verified",
    )?;
    Ok(())
}

/// A duress code was given: the alarm silently becomes a top-priority duress alarm.
pub fn raise_duress(tx: &Transaction<'_>, alarm_id: i64, now: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE alarms SET duress = 1, priority = 1, category = 'duress' WHERE id = ?1",
        params![alarm_id],
    )?;
    log(
        tx,
        alarm_id,
        now,
        "system",
        "duress",
        "duress code given by phone: dispatch",
    )?;
    Ok(())
}
