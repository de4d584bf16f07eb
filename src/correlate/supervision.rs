//! Supervision: every supervised account path has a reporting deadline; any valid message
//! (NULL poll, periodic test, event) resets it; a missed deadline opens a "communication lost"
//! alarm, and traffic restores it (see [`super::alarms::restore_communication`]).
//!
//! One deadline structure for all accounts ([`super::timers::Timers`], keyed by account, the
//! same structure the schedules use), driven by the injected clock: the task wakes at the next deadline, or every 250 ms at most, so a test
//! that moves a manual clock sees the alarm promptly and a real deadline is noticed within a
//! fraction of a second. Deadlines come from the last traffic stored in the database.
//!
//! Time the daemon was not receiving is not the panels' fault ([`Deadlines::resume`]): a
//! deadline that passed while the daemon was down (from the last moment it was receiving,
//! `meta.receiving_ms`, written about once a second, to its start), or before an account was
//! ever supervised (an account imported while the daemon was down or running), restarts from
//! the moment the daemon receives again: an account that reports within one interval after
//! that raises nothing. The supervisor gets one item per outage saying how long the daemon was
//! not receiving and how many deadlines were moved. A silence already alarmed before the
//! restart (an open or closed communication-lost alarm, or a mass loss, raised after the
//! account's last traffic) stays alarmed: the restart raises nothing again.
//!
//! Many silences at once are one mass-loss alarm ([`super::mass_loss`]). Silences are written
//! in small groups, each its own writer job, checking for shutdown between them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{OptionalExtension, Transaction, params};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::alarms::{self, AlarmSpec, Queue};
use super::mass_loss::{self, Decision, Lost, MassLossConfig, Raised, ReceiverLine, Scope};
use super::timers::Timers;
use crate::clock::{Clock, unix_ms};
use crate::protocol::codes::Category;
use crate::store::StoreError;
use crate::store::writer::{LastSeen, Route, WriterHandle};
use crate::store::writer::{SEEN_COLUMN, SEEN_PENDING};

/// EN 50136-1 reporting times, defined beside the account table that uses them
/// ([`crate::store::accounts`], below this module).
pub use crate::store::accounts::ats_reporting_secs;

#[derive(Debug, Clone, Copy)]
struct Watch {
    interval_ms: i64,
    deadline_ms: i64,
    /// Last traffic seen when the alarm was raised: no new alarm until traffic moves past it.
    alarmed_at_seen: Option<i64>,
    /// Last traffic known when the account was watched.
    seen_ms: i64,
    /// The deadline counts from no earlier than this ([`Deadlines::resume`]).
    from_ms: i64,
}

/// The deadlines of every supervised account.
#[derive(Debug, Default)]
pub struct Deadlines {
    order: Timers<i64>,
    watches: HashMap<i64, Watch>,
}

impl Deadlines {
    /// Watch an account: deadline = last traffic + interval.
    pub fn watch(&mut self, account_id: i64, interval_ms: i64, last_seen_ms: i64) {
        self.unwatch(account_id);
        let w = Watch {
            interval_ms,
            deadline_ms: last_seen_ms.saturating_add(interval_ms),
            alarmed_at_seen: None,
            seen_ms: last_seen_ms,
            from_ms: i64::MIN,
        };
        self.order.set(account_id, w.deadline_ms);
        self.watches.insert(account_id, w);
    }

    /// Stop watching an account.
    pub fn unwatch(&mut self, account_id: i64) {
        if self.watches.remove(&account_id).is_some() {
            self.order.remove(account_id);
        }
    }

    /// Take over from `old`, the set this one replaces, which silences were already alarmed:
    /// an account still silent since the traffic its communication-lost alarm was raised for
    /// is not alarmed again because an import reloaded the deadlines (also when an operator
    /// closed that alarm in the meantime: it is the same silence).
    /// Deadlines moved by [`Self::resume`] stay moved.
    pub fn keep_alarmed(&mut self, old: &Deadlines) {
        for (id, w) in &mut self.watches {
            let Some(o) = old.watches.get(id) else {
                continue;
            };
            if o.alarmed_at_seen == Some(w.seen_ms) {
                w.alarmed_at_seen = Some(w.seen_ms);
            }
            if o.from_ms > w.from_ms {
                w.from_ms = o.from_ms;
                let d = w.seen_ms.max(w.from_ms).saturating_add(w.interval_ms);
                if d != w.deadline_ms {
                    w.deadline_ms = d;
                    self.order.set(*id, d);
                }
            }
        }
    }

    /// The silence of `account_id` was alarmed at `raised_ms` (a communication-lost alarm or a
    /// mass loss, as stored): if that was after its last traffic, it is not alarmed again.
    pub fn alarmed(&mut self, account_id: i64, raised_ms: i64) {
        if let Some(w) = self.watches.get_mut(&account_id)
            && raised_ms >= w.seen_ms
        {
            w.alarmed_at_seen = Some(w.seen_ms);
        }
    }

    /// Time the daemon was not receiving is not the panels' fault: every deadline that passed
    /// after `down_since` (the last moment the daemon was receiving; `None`: not known, the
    /// first start) and by `now_ms`, of an account `moved` selects, restarts from `now_ms`
    /// unless its silence is already alarmed. A deadline that passed while the daemon was still
    /// receiving is left to be alarmed. Returns how many deadlines moved.
    pub fn resume(&mut self, down_since: Option<i64>, now_ms: i64, moved: impl Fn(i64) -> bool) -> usize {
        let mut n = 0;
        for (id, w) in &mut self.watches {
            let passed_while_down = w.deadline_ms <= now_ms && down_since.is_none_or(|d| w.deadline_ms > d);
            if !passed_while_down || w.alarmed_at_seen.is_some() || !moved(*id) {
                continue;
            }
            w.from_ms = now_ms;
            w.deadline_ms = now_ms.saturating_add(w.interval_ms);
            self.order.set(*id, w.deadline_ms);
            n += 1;
        }
        n
    }

    /// The deadlines the previous run moved stay moved: every deadline that had passed by
    /// `since` (the moment the previous run started receiving) counts from `since`, as it did in
    /// that run (where the moves were only in memory), unless its silence is alarmed.
    pub fn carry_over(&mut self, since: i64) {
        for (id, w) in &mut self.watches {
            if w.deadline_ms > since || w.alarmed_at_seen.is_some() {
                continue;
            }
            w.from_ms = since;
            w.deadline_ms = since.saturating_add(w.interval_ms);
            self.order.set(*id, w.deadline_ms);
        }
    }

    fn watches(&self, account_id: i64) -> bool {
        self.watches.contains_key(&account_id)
    }

    /// Accounts watched.
    pub fn len(&self) -> usize {
        self.watches.len()
    }

    /// True if nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<i64> {
        self.order.next()
    }

    /// Accounts whose deadline passed without traffic, each reported once per silence, with the
    /// deadline they missed. Accounts heard from since are re-armed from their last traffic.
    pub fn expired(&mut self, now_ms: i64, last_seen: impl Fn(i64) -> Option<i64>) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        while let Some((_, id)) = self.order.pop_due(now_ms) {
            let Some(w) = self.watches.get_mut(&id) else {
                continue;
            };
            let seen = last_seen(id).unwrap_or(w.seen_ms);
            let start = seen.max(w.from_ms);
            if start + w.interval_ms > now_ms {
                // Heard from in time: the new deadline counts from that traffic.
                w.deadline_ms = start + w.interval_ms;
                w.alarmed_at_seen = None;
            } else {
                if w.alarmed_at_seen != Some(seen) {
                    out.push((id, start + w.interval_ms));
                    w.alarmed_at_seen = Some(seen);
                }
                // Look again one interval later (or when traffic comes back).
                w.deadline_ms = now_ms + w.interval_ms.clamp(1_000, 60_000);
            }
            self.order.set(id, w.deadline_ms);
        }
        out
    }
}

/// Open (or keep) the "communication lost" alarm of an account path.
pub fn communication_lost(
    tx: &Transaction<'_>,
    account_id: i64,
    deadline_ms: i64,
    now: i64,
) -> Result<i64, StoreError> {
    let (account, path, site_id, customer_id): (String, String, Option<i64>, Option<i64>) = tx.query_row(
        "SELECT a.account, a.path, a.site_id, s.customer_id FROM accounts a LEFT JOIN sites s ON s.id = a.site_id
         WHERE a.id = ?1",
        params![account_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let priority = super::priority_for(tx, customer_id, Category::Communication, 5)?;
    // On test or out of service: the supervisor's, under a key of its own (so that a silence
    // after the period opens an operator alarm again).
    let period = super::service::account_period(tx, account_id, now)?;
    let join = match &period {
        Some(p) => format!("path:{account_id}/{}", p.mode.as_str()),
        None => format!("path:{account_id}"),
    };
    let marked = period
        .as_ref()
        .map(|p| format!(" ({})", p.mode.label()))
        .unwrap_or_default();
    let id = alarms::open_or_join(
        tx,
        &AlarmSpec {
            queue: if site_id.is_some() && period.is_none() {
                Queue::Operator
            } else {
                Queue::Supervisor
            },
            site_id,
            account_id: Some(account_id),
            account: account.clone(),
            join_key: if site_id.is_some() {
                join
            } else {
                format!("acct:{account}/{join}")
            },
            category: Some(Category::Communication),
            priority,
            title: format!("Communication lost: account {account} ({path} path){marked}"),
            zone: None,
            area: None,
            duress: false,
            source_frame: None,
        },
        false,
        now,
    )?
    .id;
    alarms::log(
        tx,
        id,
        now,
        "system",
        "deadline_missed",
        &format!(
            "no valid message since the deadline {}",
            crate::clock::rfc3339_ms(deadline_ms)
        ),
    )?;
    Ok(id)
}

/// Build the deadline set from the database: supervised accounts and their last traffic (in
/// `account_status` or still waiting for its bulk write, [`SEEN_PENDING`]; or
/// their creation time if they never reported).
pub fn load(conn: &rusqlite::Connection, last_seen: &LastSeen) -> Result<Deadlines, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "WITH {SEEN_PENDING}
         SELECT a.id, a.supervision_secs, a.ats_category, a.path, a.created_ms, {SEEN_COLUMN}
         FROM accounts a LEFT JOIN account_status st ON st.account_id = a.id
              LEFT JOIN seen_pending sp ON sp.account_id = a.id
         WHERE a.enabled = 1 AND (a.supervision_secs IS NOT NULL OR a.ats_category IS NOT NULL)"
    ))?;
    let mut d = Deadlines::default();
    let mut seen = last_seen.0.lock().unwrap_or_else(|p| p.into_inner());
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<i64>>(5)?,
        ))
    })?;
    for row in rows {
        let (id, secs, cat, path, created, db_seen) = row?;
        let interval = secs
            .map(|s| s as u64)
            .or_else(|| cat.as_deref().and_then(|c| ats_reporting_secs(c, path == "secondary")));
        let Some(interval) = interval else {
            continue;
        };
        let last = seen.get(&id).copied().or(db_seen).unwrap_or(created);
        seen.entry(id).or_insert(last);
        d.watch(id, interval as i64 * 1000, last);
    }
    Ok(d)
}

/// `meta` key: the last moment the daemon was receiving (defined beside the writer, which reads
/// it at its start).
pub use crate::store::writer::RECEIVING_KEY;
/// `meta` key: the moment the running (or last) daemon started receiving, from which its moved
/// deadlines count ([`Deadlines::carry_over`]).
pub const RECEIVING_SINCE_KEY: &str = "receiving_since_ms";

/// Note in the database that the daemon is receiving at `now_ms`.
pub fn set_receiving(tx: &Transaction<'_>, now_ms: i64) -> Result<(), StoreError> {
    set_meta(tx, RECEIVING_KEY, now_ms)
}

fn set_meta(tx: &Transaction<'_>, key: &str, ms: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, CAST(?2 AS TEXT))
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, ms])?;
    Ok(())
}

/// What a start needs to know about the time before it: the last moment the daemon was
/// receiving, and when each account's silence was last alarmed (a communication-lost alarm
/// opened or repeated, a mass loss it was folded into).
#[derive(Debug, Default)]
pub struct BeforeStart {
    /// The last moment the daemon was receiving; `None` on a first start.
    pub down_since: Option<i64>,
    /// When the previous run started receiving.
    pub since: Option<i64>,
    /// (account, when its silence was last alarmed).
    pub alarmed: Vec<(i64, i64)>,
}

/// Read [`BeforeStart`] from the database.
pub fn before_start(conn: &rusqlite::Connection) -> Result<BeforeStart, StoreError> {
    let meta = |key: &str| {
        conn.query_row("SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, i64>(0)
        })
        .optional()
    };
    let down_since = meta(RECEIVING_KEY)?;
    let since = meta(RECEIVING_SINCE_KEY)?;
    let mut stmt = conn.prepare(
        "SELECT account_id, max(opened_ms, ifnull(last_event_ms, 0)) FROM alarms
         WHERE category = 'communication' AND account_id IS NOT NULL AND join_key LIKE '%path:%'
         UNION ALL
         SELECT account_id, lost_ms FROM mass_loss_accounts",
    )?;
    let alarmed = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(BeforeStart {
        down_since,
        since,
        alarmed,
    })
}

/// The supervisor's one item for the time the daemon was not receiving.
pub fn outage_item(
    tx: &Transaction<'_>,
    down_since: Option<i64>,
    now_ms: i64,
    moved: usize,
    priority: u8,
) -> Result<i64, StoreError> {
    let title = outage_title(down_since, now_ms, moved);
    let id = alarms::open_or_join(
        tx,
        &AlarmSpec::supervisor("", format!("receiver/outage/{now_ms}"), title, priority),
        false,
        now_ms,
    )?
    .id;
    Ok(id)
}

/// The title of the outage item: how long, and how many deadlines restart ("no reporting
/// deadline passed meanwhile" when none did, one in the singular).
fn outage_title(down_since: Option<i64>, now_ms: i64, moved: usize) -> String {
    let rfc = crate::clock::rfc3339_ms;
    let from = rfc(now_ms);
    match down_since {
        Some(d) => {
            let moved = match moved {
                0 => "no reporting deadline passed meanwhile".to_string(),
                1 => format!("1 reporting deadline that passed meanwhile restarts from {from}"),
                n => format!("{n} reporting deadlines that passed meanwhile restart from {from}"),
            };
            format!(
                "Receiver not receiving for {} (from {} to {}): {moved}",
                duration_text(now_ms.saturating_sub(d)),
                rfc(d),
                from
            )
        }
        None => match moved {
            0 => "Supervision started: no reporting deadline had passed before the receiver ran".to_string(),
            1 => format!(
                "Supervision started: 1 reporting deadline that had passed before the receiver ran restarts from {from}"
            ),
            n => format!(
                "Supervision started: {n} reporting deadlines that had passed before the receiver ran restart from \
                 {from}"
            ),
        },
    }
}

/// `1 h 2 min 3 s`, `10 min 0 s`, `4.2 s`.
fn duration_text(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{:.1} s", ms.max(0) as f64 / 1000.0),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min {} s", s / 3600, s / 60 % 60, s % 60),
    }
}

/// An outage this long gets the supervisor's item even if it moved no deadline; a shorter one
/// that moved none (a quick restart) is only logged.
pub const OUTAGE_ITEM_MS: i64 = 60_000;

/// Silences logged one line each up to this many per check; more are one line.
const LOG_EACH: usize = 20;
/// Communication-lost alarms written per writer job.
const RAISE_CHUNK: usize = 500;
/// Accounts folded into a mass loss per writer job.
const FOLD_CHUNK: usize = 2_000;

/// Settings of the supervisor beyond its deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Mass loss thresholds.
    pub mass_loss: MassLossConfig,
    /// Priority of supervisor-queue items (the outage item).
    pub supervisor_priority: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mass_loss: MassLossConfig::default(),
            supervisor_priority: 4,
        }
    }
}

/// Supervision, schedule and escalation state, advanced by [`Supervisor::tick`]. The daemon ticks it from
/// a background task; the replay runner ticks it after each step of its virtual clock.
pub struct Supervisor {
    db: std::path::PathBuf,
    writer: WriterHandle,
    last_seen: Arc<LastSeen>,
    deadlines: Deadlines,
    loaded_generation: Option<i64>,
    escalate_after_ms: i64,
    last_escalation: i64,
    /// The first load is done: the daemon receives again, the outage is accounted for.
    resumed: bool,
    settings: Settings,
    mass: mass_loss::Watcher,
    cancel: CancellationToken,
    schedules: super::schedule::timer::ScheduleTimers,
}

impl Supervisor {
    /// A supervisor over the database at `db`; deadlines load on the first tick.
    pub fn new(db: std::path::PathBuf, writer: WriterHandle, last_seen: Arc<LastSeen>, escalate_after_ms: i64) -> Self {
        Supervisor {
            db,
            writer,
            last_seen,
            deadlines: Deadlines::default(),
            loaded_generation: None,
            escalate_after_ms,
            last_escalation: i64::MIN,
            resumed: false,
            settings: Settings::default(),
            mass: mass_loss::Watcher::new(MassLossConfig::default()),
            cancel: CancellationToken::new(),
            schedules: Default::default(),
        }
    }

    /// With these settings.
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self.mass = mass_loss::Watcher::new(settings.mass_loss);
        self
    }

    /// Stop long work (loading, writing many silences) between steps once `cancel` fires.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The earliest deadline: a reporting deadline or a site's schedule edge.
    pub fn next_deadline(&self) -> Option<i64> {
        match (self.deadlines.next_deadline(), self.schedules.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The schedules and when each site is due (the replay runner steps its clock to each).
    pub fn schedules(&self) -> &super::schedule::timer::ScheduleTimers {
        &self.schedules
    }

    /// [`Self::schedules`], to make it read its changes at the next tick.
    pub fn schedules_mut(&mut self) -> &mut super::schedule::timer::ScheduleTimers {
        &mut self.schedules
    }

    async fn reload(&mut self, now_ms: i64) -> Result<(), StoreError> {
        let db = self.db.clone();
        let ls = self.last_seen.clone();
        let first = !self.resumed;
        let loading = tokio::task::spawn_blocking(move || -> Result<(Deadlines, Option<BeforeStart>), StoreError> {
            let conn = crate::store::open_read(&db, Duration::from_secs(5))?;
            let d = load(&conn, &ls)?;
            let before = if first { Some(before_start(&conn)?) } else { None };
            Ok((d, before))
        });
        // A million accounts take seconds to load: a shutdown does not wait for it.
        let (mut d, before) = tokio::select! {
            r = loading => r.map_err(|_| StoreError::WriterGone)??,
            _ = self.cancel.cancelled() => return Err(StoreError::WriterGone),
        };
        info!(accounts = d.len(), "supervision deadlines loaded");
        d.keep_alarmed(&self.deadlines);
        match before {
            Some(b) => {
                for &(id, at) in &b.alarmed {
                    d.alarmed(id, at);
                }
                if let Some(since) = b.since {
                    d.carry_over(since);
                }
                let moved = d.resume(b.down_since, now_ms, |_| true);
                let down_ms = b.down_since.map(|s| now_ms.saturating_sub(s));
                let item = moved > 0 || down_ms.is_some_and(|d| d >= OUTAGE_ITEM_MS);
                if item {
                    info!(
                        down_ms = b.down_since.map(|s| now_ms - s),
                        moved, "time not receiving: deadlines that passed meanwhile restart now"
                    );
                }
                let (down, p) = (b.down_since, self.settings.supervisor_priority);
                self.writer
                    .run(move |tx| {
                        set_receiving(tx, now_ms)?;
                        set_meta(tx, RECEIVING_SINCE_KEY, now_ms)?;
                        if item {
                            outage_item(tx, down, now_ms, moved, p)?;
                        }
                        Ok(())
                    })
                    .await
                    .map_err(|_| StoreError::WriterGone)?;
                if moved == 0 && down_ms.is_some_and(|d| d < OUTAGE_ITEM_MS) {
                    info!(down_ms, "restarted; no reporting deadline passed meanwhile");
                }
                self.resumed = true;
            }
            None => {
                let old = &self.deadlines;
                let moved = d.resume(None, now_ms, |id| !old.watches(id));
                if moved > 0 {
                    info!(
                        accounts = moved,
                        "newly supervised accounts whose deadline had passed: their deadlines count from now"
                    );
                }
            }
        }
        self.deadlines = d;
        Ok(())
    }

    /// Check deadlines and escalations at `now_ms`; `generation` is the accounts generation
    /// (a change reloads the deadline set). Returns the accounts that lost communication.
    pub async fn tick(&mut self, now_ms: i64, generation: i64) -> Vec<i64> {
        if self.loaded_generation != Some(generation) {
            match self.reload(now_ms).await {
                Ok(()) => self.loaded_generation = Some(generation),
                Err(_) if self.cancel.is_cancelled() => return Vec::new(),
                Err(e) => warn!(error = %e, "supervision could not load deadlines; retrying"),
            }
        }
        let ls = self.last_seen.clone();
        let expired = self.deadlines.expired(now_ms, |id| ls.get(id));
        let lost: Vec<i64> = expired.iter().map(|(id, _)| *id).collect();
        if !expired.is_empty() {
            self.raise(expired, now_ms).await;
        }
        if now_ms.saturating_sub(self.last_escalation) >= 1000 && !self.cancel.is_cancelled() {
            self.last_escalation = now_ms;
            let after = self.escalate_after_ms;
            let receiving = self.resumed;
            match self
                .writer
                .run(move |tx| {
                    if receiving {
                        set_receiving(tx, now_ms)?;
                    }
                    alarms::escalate_unacknowledged(tx, now_ms, after)
                })
                .await
            {
                Ok(n) if n > 0 => warn!(alarms = n, "unacknowledged alarms escalated"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "escalation check failed"),
            }
        }
        self.schedules.tick(&self.db, &self.writer, now_ms).await;
        lost
    }

    /// Alarm the silences noticed at `now_ms`: one by one, or folded into a mass loss; in
    /// small writer jobs, stopping between them on shutdown (a silence not written is alarmed
    /// at the next start: its deadline passed while the daemon was receiving).
    async fn raise(&mut self, expired: Vec<(i64, i64)>, now_ms: i64) {
        let n = expired.len();
        if n <= LOG_EACH {
            for (id, deadline) in &expired {
                warn!(
                    account_id = id,
                    late_ms = now_ms - deadline,
                    "reporting deadline missed: communication lost"
                );
            }
        } else {
            warn!(accounts = n, "reporting deadlines missed: communication lost");
        }
        let routes = &self.last_seen.1;
        let lost: Vec<Lost> = expired
            .into_iter()
            .map(|(account_id, deadline_ms)| Lost {
                account_id,
                deadline_ms,
                route: routes.of(account_id),
            })
            .collect();
        let lines: Vec<Option<ReceiverLine>> = lost
            .iter()
            .map(|l| l.route.as_ref().map(Route::receiver_line))
            .collect();
        let totals = if self.settings.mass_loss.line_percent > 0 {
            routes.line_totals()
        } else {
            HashMap::new()
        };
        let decisions = self.mass.decide(now_ms, &lines, &totals);
        let mut individual = Vec::new();
        let mut open: BTreeMap<Scope, Vec<Lost>> = BTreeMap::new();
        let mut join: BTreeMap<i64, Vec<Lost>> = BTreeMap::new();
        for (l, d) in lost.into_iter().zip(decisions) {
            match d {
                Decision::Individual => individual.push(l),
                Decision::Open(scope) => open.entry(scope).or_default().push(l),
                Decision::Join(id) => join.entry(id).or_default().push(l),
            }
        }
        if !self.raise_individual(individual, now_ms).await {
            return;
        }
        for (scope, group) in open {
            self.open_mass_loss(scope, group, now_ms, &totals).await;
        }
        for (id, group) in join {
            self.fold_into(id, group, now_ms, &totals).await;
        }
    }

    /// One communication-lost alarm each, remembered in case a mass loss follows; false when
    /// stopped or failed.
    async fn raise_individual(&mut self, lost: Vec<Lost>, now_ms: i64) -> bool {
        for chunk in lost.chunks(RAISE_CHUNK) {
            if self.cancel.is_cancelled() {
                return false;
            }
            let ids: Vec<(i64, i64)> = chunk.iter().map(|l| (l.account_id, l.deadline_ms)).collect();
            let r = self
                .writer
                .run(move |tx| {
                    set_receiving(tx, now_ms)?;
                    let mut out = Vec::with_capacity(ids.len());
                    for (id, deadline) in ids {
                        out.push(communication_lost(tx, id, deadline, now_ms)?);
                    }
                    Ok(out)
                })
                .await;
            match r {
                Ok(raised) => {
                    for (l, alarm_id) in chunk.iter().zip(raised) {
                        self.mass.raised(Raised {
                            at_ms: now_ms,
                            account_id: l.account_id,
                            alarm_id,
                            deadline_ms: l.deadline_ms,
                            line: l.route.as_ref().map(Route::receiver_line),
                        });
                    }
                }
                Err(e) => {
                    warn!(error = %e, "could not store communication-lost alarms");
                    return false;
                }
            }
        }
        true
    }

    /// Open a mass-loss alarm of `scope` for `lost`, folding the alarms raised one by one in
    /// the window that belong to it.
    async fn open_mass_loss(
        &mut self,
        scope: Scope,
        lost: Vec<Lost>,
        now_ms: i64,
        totals: &HashMap<ReceiverLine, usize>,
    ) {
        let routes = &self.last_seen.1;
        let earlier = self.mass.take_raised(&scope);
        let routes_earlier: Vec<Option<Route>> = earlier.iter().map(|r| routes.of(r.account_id)).collect();
        let priority = self.settings.mass_loss.priority;
        let of = scope.clone();
        let r = self
            .writer
            .run(move |tx| {
                let id = mass_loss::open(tx, &of, priority, now_ms)?;
                let mut folded = Vec::new();
                for (r, route) in earlier.iter().zip(routes_earlier) {
                    if mass_loss::fold_raised(tx, id, r, route.as_ref(), now_ms)? {
                        folded.push(route);
                    }
                }
                Ok((id, folded))
            })
            .await;
        match r {
            Ok((id, folded)) => {
                warn!(
                    accounts = lost.len() + folded.len(),
                    scope = ?scope,
                    "mass communication loss: one alarm for the accounts silent at once"
                );
                self.mass.opened(id, scope, now_ms);
                self.mass.folded(id, now_ms, folded.iter(), totals);
                self.fold_into(id, lost, now_ms, totals).await;
            }
            Err(e) => warn!(error = %e, "could not store the mass-loss alarm"),
        }
    }

    async fn fold_into(&mut self, alarm_id: i64, lost: Vec<Lost>, now_ms: i64, totals: &HashMap<ReceiverLine, usize>) {
        for chunk in lost.chunks(FOLD_CHUNK) {
            if self.cancel.is_cancelled() {
                return;
            }
            let Some(title) = self
                .mass
                .folded(alarm_id, now_ms, chunk.iter().map(|l| &l.route), totals)
            else {
                return;
            };
            let chunk = chunk.to_vec();
            let r = self
                .writer
                .run(move |tx| {
                    set_receiving(tx, now_ms)?;
                    mass_loss::fold(tx, alarm_id, &chunk, &title, now_ms)
                })
                .await;
            if let Err(e) = r {
                warn!(error = %e, "could not store the accounts of the mass loss");
                return;
            }
        }
        info!(routes = %self.mass.breakdown(alarm_id), "mass communication loss: accounts silent per route");
    }
}

/// Run supervision and alarm escalation until `cancel`, on the injected clock.
pub async fn run(
    mut supervisor: Supervisor,
    clock: Arc<dyn Clock>,
    generation: impl Fn() -> i64 + Send + 'static,
    cancel: CancellationToken,
) {
    info!("supervision started");
    loop {
        supervisor.tick(unix_ms(clock.now()), generation()).await;
        let wait = supervisor
            .next_deadline()
            .map_or(250, |d| (d - unix_ms(clock.now())).clamp(1, 250));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outage item says how many deadlines restart, and says so in words when none or
    /// one did ("0 reporting deadlines that passed meanwhile restart" read wrong).
    #[test]
    fn the_outage_item_counts_the_deadlines_in_words() {
        let (down, now) = (Some(0), 600_000);
        let at = "1970-01-01T00:10:00.000Z";
        let t = |down, moved| outage_title(down, now, moved);
        assert_eq!(
            t(down, 0),
            "Receiver not receiving for 10 min 0 s (from 1970-01-01T00:00:00.000Z to 1970-01-01T00:10:00.000Z): \
             no reporting deadline passed meanwhile"
        );
        assert!(
            t(down, 1).ends_with(&format!(
                ": 1 reporting deadline that passed meanwhile restarts from {at}"
            )),
            "{}",
            t(down, 1)
        );
        assert!(
            t(down, 3).ends_with(&format!(
                ": 3 reporting deadlines that passed meanwhile restart from {at}"
            )),
            "{}",
            t(down, 3)
        );
        assert_eq!(
            t(None, 0),
            "Supervision started: no reporting deadline had passed before the receiver ran"
        );
        assert_eq!(
            t(None, 2),
            format!(
                "Supervision started: 2 reporting deadlines that had passed before the receiver ran restart from {at}"
            )
        );
    }

    #[test]
    fn deadline_missed_once_and_rearmed_by_traffic() {
        let mut d = Deadlines::default();
        d.watch(1, 90_000, 0);
        d.watch(2, 90_000, 50_000);
        let mut seen: HashMap<i64, i64> = HashMap::from([(1, 0), (2, 50_000)]);
        assert!(d.expired(89_999, |id| seen.get(&id).copied()).is_empty());
        assert_eq!(d.expired(90_000, |id| seen.get(&id).copied()), vec![(1, 90_000)]);
        // Account 2 polls at 130 s: its deadline moves to 220 s.
        seen.insert(2, 130_000);
        assert!(d.expired(140_000, |id| seen.get(&id).copied()).is_empty());
        // Account 1 is still silent: not reported again.
        assert!(d.expired(200_000, |id| seen.get(&id).copied()).is_empty());
        assert_eq!(d.expired(220_000, |id| seen.get(&id).copied()), vec![(2, 220_000)]);
        // Account 1 comes back at 300 s, then goes silent again: a new alarm one interval later.
        seen.insert(1, 300_000);
        assert!(d.expired(300_500, |id| seen.get(&id).copied()).is_empty());
        assert_eq!(d.expired(390_000, |id| seen.get(&id).copied()), vec![(1, 390_000)]);
    }

    /// An import reloads the deadlines: a silence already alarmed stays alarmed, a new one is
    /// still noticed.
    #[test]
    fn a_reload_keeps_the_silences_already_alarmed() {
        let mut d = Deadlines::default();
        d.watch(1, 90_000, 0);
        d.watch(2, 90_000, 0);
        let mut seen: HashMap<i64, i64> = HashMap::from([(1, 0), (2, 0)]);
        assert_eq!(
            d.expired(90_000, |id| seen.get(&id).copied()),
            vec![(1, 90_000), (2, 90_000)]
        );
        // Account 2 is heard from at 95 s; then the reload.
        seen.insert(2, 95_000);
        let mut r = Deadlines::default();
        r.watch(1, 90_000, 0);
        r.watch(2, 90_000, 95_000);
        r.keep_alarmed(&d);
        assert!(r.expired(100_000, |id| seen.get(&id).copied()).is_empty());
        assert_eq!(r.expired(185_000, |id| seen.get(&id).copied()), vec![(2, 185_000)]);
    }

    #[test]
    fn ats_categories() {
        assert_eq!(ats_reporting_secs("SP5", false), Some(90));
        assert_eq!(ats_reporting_secs("DP4", false), Some(90));
        assert_eq!(ats_reporting_secs("DP4", true), Some(180));
        assert_eq!(ats_reporting_secs("DP2", true), Some(25 * 3600));
        assert_eq!(ats_reporting_secs("XX", false), None);
    }
}
