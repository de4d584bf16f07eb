//! Supervision: every supervised account path has a reporting deadline; any valid message
//! (NULL poll, periodic test, event) resets it; a missed deadline opens a "communication lost"
//! alarm, and traffic restores it (see [`super::alarms::restore_communication`]).
//!
//! One deadline structure for all accounts ([`super::timers::Timers`], keyed by account, the
//! same structure the schedules use), driven by the injected clock: the task wakes at the next deadline, or every 250 ms at most, so a test
//! that moves a manual clock sees the alarm promptly and a real deadline is noticed within a
//! fraction of a second. Deadlines come from the last traffic stored in the database, so a
//! panel that went silent while the daemon was down is noticed right after it starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Transaction, params};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::alarms::{self, AlarmSpec, Queue};
use super::timers::Timers;
use crate::clock::{Clock, unix_ms};
use crate::protocol::codes::Category;
use crate::store::StoreError;
use crate::store::writer::{LastSeen, WriterHandle};
use crate::store::writer::{SEEN_COLUMN, SEEN_PENDING};

/// EN 50136-1 reporting time for a category and path, in seconds (a configured
/// `supervision_secs` overrides it). Single-path SP1…SP6; dual-path DP1…DP4 with the
/// primary and secondary path values.
pub fn ats_reporting_secs(category: &str, secondary: bool) -> Option<u64> {
    const H: u64 = 3600;
    Some(match (category, secondary) {
        ("SP1", _) => 32 * 24 * H,
        ("SP2", _) => 25 * H,
        ("SP3", _) => 30 * 60,
        ("SP4", _) => 3 * 60,
        ("SP5", _) => 90,
        ("SP6", _) => 20,
        ("DP1", _) => 25 * H,
        ("DP2", false) => 30 * 60,
        ("DP2", true) => 25 * H,
        ("DP3", false) => 3 * 60,
        ("DP3", true) => 25 * H,
        ("DP4", false) => 90,
        ("DP4", true) => 3 * 60,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy)]
struct Watch {
    interval_ms: i64,
    deadline_ms: i64,
    /// Last traffic seen when the alarm was raised: no new alarm until traffic moves past it.
    alarmed_at_seen: Option<i64>,
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
    pub fn keep_alarmed(&mut self, old: &Deadlines) {
        for (id, w) in &mut self.watches {
            let seen = w.deadline_ms - w.interval_ms;
            if let Some(o) = old.watches.get(id)
                && o.alarmed_at_seen == Some(seen)
            {
                w.alarmed_at_seen = Some(seen);
            }
        }
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
        while let Some((deadline, id)) = self.order.pop_due(now_ms) {
            let Some(w) = self.watches.get_mut(&id) else {
                continue;
            };
            let seen = last_seen(id).unwrap_or(deadline - w.interval_ms);
            if seen + w.interval_ms > now_ms {
                // Heard from in time: the new deadline counts from that traffic.
                w.deadline_ms = seen + w.interval_ms;
                w.alarmed_at_seen = None;
            } else {
                if w.alarmed_at_seen != Some(seen) {
                    out.push((id, seen + w.interval_ms));
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
            schedules: Default::default(),
        }
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

    async fn reload(&mut self) -> Result<(), StoreError> {
        let db = self.db.clone();
        let ls = self.last_seen.clone();
        let mut d = tokio::task::spawn_blocking(move || -> Result<Deadlines, StoreError> {
            let conn = crate::store::open_read(&db, Duration::from_secs(5))?;
            load(&conn, &ls)
        })
        .await
        .map_err(|_| StoreError::WriterGone)??;
        info!(accounts = d.len(), "supervision deadlines loaded");
        d.keep_alarmed(&self.deadlines);
        self.deadlines = d;
        Ok(())
    }

    /// Check deadlines and escalations at `now_ms`; `generation` is the accounts generation
    /// (a change reloads the deadline set). Returns the accounts that lost communication.
    pub async fn tick(&mut self, now_ms: i64, generation: i64) -> Vec<i64> {
        if self.loaded_generation != Some(generation) {
            match self.reload().await {
                Ok(()) => self.loaded_generation = Some(generation),
                Err(e) => warn!(error = %e, "supervision could not load deadlines; retrying"),
            }
        }
        let ls = self.last_seen.clone();
        let expired = self.deadlines.expired(now_ms, |id| ls.get(id));
        let lost: Vec<i64> = expired.iter().map(|(id, _)| *id).collect();
        if !expired.is_empty() {
            for (id, deadline) in &expired {
                warn!(
                    account_id = id,
                    late_ms = now_ms - deadline,
                    "reporting deadline missed: communication lost"
                );
            }
            let r = self
                .writer
                .run(move |tx| {
                    for (id, deadline) in expired {
                        communication_lost(tx, id, deadline, now_ms)?;
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = r {
                warn!(error = %e, "could not store communication-lost alarms");
            }
        }
        if now_ms.saturating_sub(self.last_escalation) >= 1000 {
            self.last_escalation = now_ms;
            let after = self.escalate_after_ms;
            match self
                .writer
                .run(move |tx| alarms::escalate_unacknowledged(tx, now_ms, after))
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
