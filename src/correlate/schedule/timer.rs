//! When to look at a site again: every site with a schedule is in the timer structure
//! ([`crate::correlate::timers::Timers`], the one supervision uses) at the next edge of its
//! schedule ([`Plan::next_edge`]). The supervision task ticks this on the injected clock.
//!
//! At an edge the due sites' armed states and raised kinds are read in bulk on a read
//! connection and their conditions computed there; only a site whose conditions differ from
//! what is raised goes to the writer, which reconciles it in its own transaction
//! ([`super::store::reconcile`], which decides again on what it reads itself). At 22:15 on a
//! weekday most of 100,000 shops are armed: they cost a read each, not a write.
//!
//! Plans are loaded at the first tick (every site is then due at once: what changed while the
//! daemon was down is raised or restored now), and again for what `schedule_changes` names
//! (an import: every site; an extension or a service period: one site), at most once a
//! second of the clock.
//!
//! The open test and out-of-service periods ([`crate::correlate::service`]) are in the same
//! timer structure at their end: a period ends by itself there (a test with its summary), and
//! its site is looked at again at once (what the period held back is raised now).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, params};
use tracing::{info, warn};

use super::plan::{Kinds, Lateness, Plan};
use super::store;
use crate::correlate::timers::Timers;
use crate::store::StoreError;
use crate::store::writer::WriterHandle;

/// How often (of the injected clock) `schedule_changes` is read.
const CHECK_EVERY_MS: i64 = 1_000;

/// Sites reconciled per writer job.
const PER_JOB: usize = 256;

/// Sites read per statement.
const PER_READ: usize = 500;

/// What is due: a site's next edge, or the end of a service period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Due {
    /// A site (row id).
    Site(i64),
    /// A service period (row id).
    Period(i64),
}

/// The schedules of every site and when to look at each again.
#[derive(Default)]
pub struct ScheduleTimers {
    plans: HashMap<i64, Arc<Plan>>,
    timers: Timers<Due>,
    /// The open service periods in `timers`.
    periods: Vec<i64>,
    /// The newest `schedule_changes` row read; `None` before the first load.
    cursor: Option<i64>,
    last_check_ms: Option<i64>,
    /// The read connection, between looks (a mutex only so that the supervisor is `Sync`).
    conn: std::sync::Mutex<Option<Connection>>,
}

/// Plans read for a reload.
enum Loaded {
    Nothing,
    All(HashMap<i64, Arc<Plan>>),
    Sites(HashMap<i64, Option<Arc<Plan>>>),
}

/// What a look at due sites found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    /// Sites looked at.
    pub due: usize,
    /// Service periods ended.
    pub periods_ended: usize,
    /// Sites whose conditions differed from what was raised (reconciled by the writer).
    pub reconciled: usize,
}

/// A site's plan, armed state and raised kinds, as read for a look.
fn mismatched(
    conn: &Connection,
    due: &[(i64, Arc<Plan>)],
    now: i64,
) -> Result<(Vec<i64>, Vec<(i64, i64)>), StoreError> {
    let mut differ = Vec::new();
    let mut next = Vec::with_capacity(due.len());
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.armed_state, s.armed_changed_ms,
                (SELECT group_concat(st.kind) FROM schedule_state st WHERE st.site_id = s.id)
         FROM sites s WHERE s.id IN (SELECT value FROM json_each(?1))",
    )?;
    for chunk in due.chunks(PER_READ) {
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
        let json = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
        let mut found: HashMap<i64, (Option<super::plan::Armed>, Kinds)> = HashMap::with_capacity(ids.len());
        let rows = stmt.query_map(params![json], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        for row in rows {
            let (id, state, at, kinds) = row?;
            let raised: Kinds = kinds
                .as_deref()
                .unwrap_or("")
                .split(',')
                .filter_map(Lateness::parse)
                .collect();
            found.insert(id, (store::armed_from(Some((state, at))), raised));
        }
        for (id, plan) in chunk {
            let (armed, raised) = found.get(id).copied().unwrap_or((None, Kinds::NONE));
            if plan.conditions(armed, now) != raised {
                differ.push(*id);
            }
            next.push((*id, plan.next_edge(now)));
        }
    }
    Ok((differ, next))
}

impl ScheduleTimers {
    /// The earliest time a site is due.
    pub fn next_due(&self) -> Option<i64> {
        self.timers.next()
    }

    /// Read `schedule_changes` at the next tick, whenever it comes (after a change made outside
    /// the writer's frames: an operator's extension, a service period).
    pub fn check_now(&mut self) {
        self.last_check_ms = None;
    }

    /// Sites with a schedule.
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    /// True when no site has a schedule.
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// The plan of a site, as loaded.
    pub fn plan(&self, site_id: i64) -> Option<&Arc<Plan>> {
        self.plans.get(&site_id)
    }

    /// Run `f` on the read connection (opened on first use), off the async threads.
    async fn with_conn<T: Send + 'static>(
        &mut self,
        db: &Path,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        let db: PathBuf = db.to_path_buf();
        let (conn, r) = tokio::task::spawn_blocking(move || {
            let conn = match conn {
                Some(c) => c,
                None => match crate::store::open_read(&db, Duration::from_secs(5)) {
                    Ok(c) => c,
                    Err(e) => return (None, Err(e)),
                },
            };
            let r = f(&conn);
            (Some(conn), r)
        })
        .await
        .map_err(|_| StoreError::WriterGone)?;
        *self.conn.get_mut().unwrap_or_else(|p| p.into_inner()) = conn;
        r
    }

    /// Load what `schedule_changes` names since the last look (everything at the first).
    async fn reload(&mut self, db: &Path, now: i64) -> Result<(), StoreError> {
        let cursor = self.cursor;
        let (newest, loaded, periods) = self
            .with_conn(
                db,
                move |c| -> Result<(i64, Loaded, Option<Vec<(i64, i64)>>), StoreError> {
                    let newest: i64 =
                        c.query_row("SELECT ifnull(max(id), 0) FROM schedule_changes", [], |r| r.get(0))?;
                    if cursor == Some(newest) {
                        return Ok((newest, Loaded::Nothing, None));
                    }
                    let periods = crate::correlate::service::open(c)?
                        .into_iter()
                        .map(|(p, _, _)| (p.id, p.until_ms))
                        .collect();
                    let (n, l) = load_changed(c, cursor, newest, now)?;
                    Ok((n, l, Some(periods)))
                },
            )
            .await?;
        self.cursor = Some(newest);
        if let Some(periods) = periods {
            for id in self.periods.drain(..) {
                self.timers.remove(Due::Period(id));
            }
            for (id, until) in periods {
                self.timers.set(Due::Period(id), until);
                self.periods.push(id);
            }
        }
        self.apply(loaded, now);
        Ok(())
    }

    fn apply(&mut self, loaded: Loaded, now: i64) {
        match loaded {
            Loaded::Nothing => {}
            Loaded::All(plans) => {
                for site in self.plans.keys() {
                    self.timers.remove(Due::Site(*site));
                }
                for site in plans.keys() {
                    self.timers.set(Due::Site(*site), now);
                }
                self.plans = plans;
                info!(sites = self.plans.len(), "schedules loaded");
            }
            Loaded::Sites(plans) => {
                for (site, plan) in plans {
                    match plan {
                        Some(p) => {
                            self.plans.insert(site, p);
                            self.timers.set(Due::Site(site), now);
                        }
                        None => {
                            self.plans.remove(&site);
                            self.timers.remove(Due::Site(site));
                        }
                    }
                }
            }
        }
    }

    /// End the service periods due by `now` (in one writer job); their sites are loaded again
    /// and looked at in the same tick.
    async fn end_periods(&mut self, db: &Path, writer: &WriterHandle, ids: Vec<i64>, now: i64) -> usize {
        let n = ids.len();
        let retry = ids.clone();
        let r = writer
            .run(move |tx| {
                for id in ids {
                    crate::correlate::service::end(tx, id, "system", now, "ended by itself at its end time")?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            warn!(error = %e, "could not end service periods; trying again in a second");
            for id in retry {
                self.timers.set(Due::Period(id), now + CHECK_EVERY_MS);
            }
            return 0;
        }
        if let Err(e) = self.reload(db, now).await {
            warn!(error = %e, "schedules could not be loaded; retrying");
        }
        n
    }

    /// Look at every site due by `now`: reconcile those whose conditions changed, and set each
    /// at its next edge. End the service periods due.
    pub async fn tick(&mut self, db: &Path, writer: &WriterHandle, now: i64) -> TickReport {
        if self.last_check_ms.is_none_or(|t| now - t >= CHECK_EVERY_MS || now < t) {
            match self.reload(db, now).await {
                Ok(()) => self.last_check_ms = Some(now),
                Err(e) => warn!(error = %e, "schedules could not be loaded; retrying"),
            }
        }
        let mut report = TickReport::default();
        let mut due = self.timers.drain_due(now);
        let ended: Vec<i64> = due
            .iter()
            .filter_map(|(_, d)| match d {
                Due::Period(id) => Some(*id),
                Due::Site(_) => None,
            })
            .collect();
        if !ended.is_empty() {
            self.periods.retain(|p| !ended.contains(p));
            report.periods_ended = self.end_periods(db, writer, ended, now).await;
            due.extend(self.timers.drain_due(now));
        }
        let due: Vec<(i64, Arc<Plan>)> = due
            .into_iter()
            .filter_map(|(_, d)| match d {
                Due::Site(site) => self.plans.get(&site).map(|p| (site, p.clone())),
                Due::Period(_) => None,
            })
            .collect();
        if due.is_empty() {
            return report;
        }
        report.due = due.len();
        let sites: Vec<i64> = due.iter().map(|(s, _)| *s).collect();
        let looked = self.with_conn(db, move |c| mismatched(c, &due, now)).await;
        let (differ, next) = match looked {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "schedules: reading the due sites failed; looking again in a second");
                for s in sites {
                    self.timers.set(Due::Site(s), now + CHECK_EVERY_MS);
                }
                return report;
            }
        };
        for (site, at) in next {
            self.timers.set(Due::Site(site), at);
        }
        for chunk in differ.chunks(PER_JOB) {
            let retry = chunk.to_vec();
            let chunk = chunk.to_vec();
            let n = chunk.len();
            let r = writer
                .run(move |tx| {
                    for site in chunk {
                        store::reconcile(tx, site, now, None, false)?;
                    }
                    Ok(())
                })
                .await;
            match r {
                Ok(()) => report.reconciled += n,
                Err(e) => {
                    warn!(error = %e, "schedules: could not store schedule alarms; looking again in a second");
                    for s in retry {
                        self.timers.set(Due::Site(s), now + CHECK_EVERY_MS);
                    }
                }
            }
        }
        report
    }
}

/// The plans `schedule_changes` names after `cursor` (all of them at the first load, or when a
/// change names no site: an import).
fn load_changed(c: &Connection, cursor: Option<i64>, newest: i64, now: i64) -> Result<(i64, Loaded), StoreError> {
    let sites: Vec<Option<i64>> = match cursor {
        None => vec![None],
        Some(from) => c
            .prepare_cached("SELECT DISTINCT site_id FROM schedule_changes WHERE id > ?1 AND id <= ?2")?
            .query_map(params![from, newest], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
    };
    if sites.iter().any(Option::is_none) {
        return Ok((newest, Loaded::All(store::load_all(c, now)?)));
    }
    let mut out = HashMap::new();
    for s in sites.into_iter().flatten() {
        out.insert(s, store::load_plan(c, s, now)?.map(Arc::new));
    }
    Ok((newest, Loaded::Sites(out)))
}
