//! Correlation: turns stored events into alarms an operator can act on, in the same
//! transaction as the event (a crash can never leave an event without its effect).
//!
//! | module | what |
//! |---|---|
//! | [`alarms`] | open / join / restore alarms, the panel-side factor, operator transitions |
//! | [`supervision`] | reporting deadlines per account and path; "communication lost" alarms |
//! | [`schedule`] | open/close windows per site: late to close, unexpected opening, late to open, early close |
//! | [`service`] | sites and accounts on test or out of service |
//! | [`timers`] | the timer structure of supervision and schedules |
//! | [`sources`] | supervisor items about a source address: unreadable frames, repeated CRC/length failures |
//!
//! Rules, per event of an accepted frame:
//! - an alarm or trouble opens an alarm, or joins the open alarm of the same site and zone
//!   (a flood of 1,000 events from one zone is one alarm with 1,000 events);
//! - a restore marks the zone's open alarm restored; an opening (disarm) or cancel by a panel
//!   user after an alarm records the panel-side factor on the site's open alarms and the site's
//!   armed state; a closing arms it;
//! - priority comes from a customer rule, else a global rule, else the code table
//!   (duress 1; hold-up, panic, fire, medical 2; burglary 3; … information 9);
//! - unknown codes, unknown accounts and accounts without a customer record go to the
//!   supervisor queue; so do frames whose header cannot be read, a source that keeps sending
//!   frames failing their CRC or length (both per source address, rate-limited: [`sources`]),
//!   and a key change sent over the air, which is never adopted;
//! - any valid traffic restores an open "communication lost" alarm of that account path;
//! - an account or site on test or out of service raises no operator alarm ([`service`]).

pub mod alarms;
pub mod mass_loss;
pub mod schedule;
pub mod service;
pub mod sources;
pub mod supervision;
pub mod timers;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rusqlite::{OptionalExtension, Transaction, params};

use crate::event::{Event, EventCode};
use crate::protocol::codes::{Category, Kind};
use crate::store::StoreError;
use crate::store::writer::{AfterInsert, AlarmLink, Committed, FrameRecord, Outcome};
use alarms::{AlarmSpec, Queue, Uncounted};

/// Account numbers, zones and users are compared without leading zeros ("003" is zone 3).
pub fn norm_number(s: &str) -> String {
    let t = s.trim().trim_start_matches('0');
    if t.is_empty() && !s.trim().is_empty() {
        "0".to_string()
    } else {
        t.to_string()
    }
}

/// Where an account belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Site, if the account is linked to one.
    pub site_id: Option<i64>,
    /// Customer of the site.
    pub customer_id: Option<i64>,
}

/// The site and customer of an account row.
pub fn owner_of(tx: &Transaction<'_>, account_id: i64) -> Result<Owner, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT a.site_id, s.customer_id FROM accounts a LEFT JOIN sites s ON s.id = a.site_id WHERE a.id = ?1",
    )?;
    let r = stmt
        .query_row(params![account_id], |r| {
            Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .optional()?;
    Ok(match r {
        Some((site_id, customer_id)) => Owner { site_id, customer_id },
        None => Owner {
            site_id: None,
            customer_id: None,
        },
    })
}

/// The priority for a category: customer rule, else global rule, else `default`.
pub fn priority_for(
    tx: &Transaction<'_>,
    customer_id: Option<i64>,
    category: Category,
    default: u8,
) -> Result<u8, StoreError> {
    Ok(rule_for(tx, customer_id, category)?.unwrap_or(default))
}

/// The priority rule for a category: the customer's, else the global one, else none.
fn rule_for(tx: &Transaction<'_>, customer_id: Option<i64>, category: Category) -> Result<Option<u8>, StoreError> {
    // Two lookups on the unique index (ifnull(customer_id, 0), category): the customer's rule,
    // then the global one.
    let mut stmt =
        tx.prepare_cached("SELECT priority FROM priority_rules WHERE ifnull(customer_id, 0) = ?1 AND category = ?2")?;
    for who in [customer_id.unwrap_or(0), 0] {
        let p: Option<i64> = stmt
            .query_row(params![who, category.as_str()], |r| r.get(0))
            .optional()?;
        if let Some(p) = p {
            return Ok(Some(p.clamp(1, 9) as u8));
        }
        if who == 0 {
            break;
        }
    }
    Ok(None)
}

/// Correlation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelateConfig {
    /// Priority of supervisor-queue items (unknown account / code, no customer record).
    pub supervisor_priority: u8,
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        CorrelateConfig { supervisor_priority: 4 }
    }
}

/// What correlation looks up for nearly every frame and only an import changes: an account's
/// site and customer, and the priority rules. Held by the writer (the only writer of alarms)
/// and dropped whenever the accounts generation moved, which every import bumps in its own
/// transaction; so within one of the writer's transactions the cache agrees with the database
/// it reads. Bounded by the number of accounts and rules in the database.
///
/// Profiling the writer at 64 connections showed `owner_of` alone at 16 % of its time (SQLite
/// re-prepared the join on every call), `priority_for` at 1 %.
///
/// It also holds what the writer knows about open alarms, so that an event joining one writes
/// only its own link ([`alarms::link`]) and nothing to the alarm's row: which alarm is open per
/// site and join key (with its priority, unrestored), and each alarm's newest linked event (the
/// chain head). All of it is forgotten ([`Self::forget`]) after every rollback, and the linked
/// events are then counted into their alarms ([`alarms::fold_events`]) before the next link, so
/// nothing remembered outlives what it describes. A job that changed an alarm (jobs are the
/// only other writers of alarms; every change to an alarm is logged) makes only the open
/// alarms and the accounts with nothing to restore wrong ([`Self::forget_open`]): no job links
/// an event or counts one.
#[derive(Debug)]
pub struct RecordCache {
    generation: Option<i64>,
    owners: HashMap<i64, Owner>,
    priorities: HashMap<(i64, Category), Option<u8>>,
    /// The open, unrestored alarm per (site, join key) and its priority.
    open: HashMap<(Option<i64>, String), (i64, u8)>,
    /// Each alarm's newest linked event, for alarms linked since the last time this was
    /// forgotten; an alarm not in here has its newest event in its row.
    heads: HashMap<i64, i64>,
    /// Events must be folded before the next link: `heads` was forgotten while events linked
    /// after the watermark may exist.
    fold_needed: bool,
    /// The next transaction folds everything by a scan ([`alarms::fold_events`]).
    full_fold_due: bool,
    last_fold: Option<Instant>,
    fold_every: Duration,
    /// The links made since the fold under way started (or since the last full fold), per
    /// alarm: exactly the linked events its row does not count yet, apart from the fold's own.
    /// Valid while `fold_needed` is false (no link is made otherwise).
    uncounted: BTreeMap<i64, Uncounted>,
    /// The fold under way: up to which event, and the alarms still to count (ascending).
    folding: Option<(i64, std::vec::IntoIter<(i64, Uncounted)>)>,
    fold_slice: usize,
    fold_within: Duration,
    /// Accounts known to have no unrestored communication-lost alarm: valid traffic restored
    /// them, and nothing since could have opened one (only jobs do, and [`Self::forget_open`]
    /// runs after every job that changed an alarm, [`Self::forget`] after every rollback).
    comm_clear: HashSet<i64>,
    /// Sites and accounts on test or out of service.
    periods: service::PeriodCache,
    /// Per source address: unreadable frames and integrity failures, for rate-limited
    /// supervisor items. Not derived from the database, so a rollback leaves it alone.
    sources: sources::SourceWatch,
}

impl Default for RecordCache {
    fn default() -> Self {
        RecordCache {
            generation: None,
            owners: HashMap::new(),
            priorities: HashMap::new(),
            open: HashMap::new(),
            heads: HashMap::new(),
            // A new writer does not know which events were linked after the watermark.
            fold_needed: true,
            full_fold_due: false,
            last_fold: None,
            fold_every: FOLD_EVERY,
            uncounted: BTreeMap::new(),
            folding: None,
            fold_slice: FOLD_SLICE,
            fold_within: FOLD_WITHIN,
            comm_clear: HashSet::new(),
            periods: service::PeriodCache::default(),
            sources: sources::SourceWatch::default(),
        }
    }
}

/// Most entries in each of the remembered-state maps; past it a map starts over.
const MAX_REMEMBERED: usize = 1 << 18;

/// How often the events linked to alarms are counted into the alarms' rows
/// ([`alarms::fold_slice`]). Readers count the rest from the event rows, so this sets only how
/// much they have to count, never what they see.
pub const FOLD_EVERY: Duration = Duration::from_secs(1);

/// Alarms counted per commit group while a fold is under way. A fold of all alarms in one
/// commit made every frame behind it wait (6,400 flooding alarms: tens of milliseconds on a slow
/// disk, BENCHMARKS.md series M); a slice costs each of its frames about a millisecond at most.
pub const FOLD_SLICE: usize = 64;

/// A fold still under way this long after it started is finished in the next transaction: a
/// quiet writer (no frames, only the supervision check once a second) would otherwise take a
/// second per slice, and readers count what the fold has not reached from the event rows. So
/// readers count at most about `FOLD_EVERY + FOLD_WITHIN` of events; a writer that is that slow
/// to come round has no queue behind it to keep waiting.
pub const FOLD_WITHIN: Duration = Duration::from_secs(1);

impl RecordCache {
    /// Forget everything if an import happened since the last call; count linked events into
    /// their alarms when that is due.
    pub fn refresh(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        self.periods.refresh(tx)?;
        let g = crate::store::accounts::generation(tx)?;
        if self.generation != Some(g) {
            self.owners.clear();
            self.priorities.clear();
            self.generation = Some(g);
        }
        // In slices of alarms, each alarm once per fold: a fold is cheap per event only because
        // it counts many events of each alarm at once. (Folding a flood 1,024 events at a time
        // updated each alarm's row about once per event again: K.1 in BENCHMARKS.md, writer
        // 21 → 26 µs per event.) A transaction starts with no frame half-stored, so every
        // event stored so far that will ever be linked is linked.
        if self.fold_needed || self.full_fold_due {
            self.fold(tx, None)?;
        } else if self.folding.is_some() {
            self.next_slice(tx)?;
        } else if self.last_fold.is_none_or(|t| t.elapsed() >= self.fold_every) {
            let upto = alarms::newest_event(tx)?;
            alarms::begin_fold(tx, upto)?;
            let alarms: Vec<_> = std::mem::take(&mut self.uncounted).into_iter().collect();
            self.folding = Some((upto, alarms.into_iter()));
            self.last_fold = Some(Instant::now());
            self.next_slice(tx)?;
        }
        Ok(())
    }

    /// Count the next slice of the fold under way, or all the rest of it when it has taken
    /// [`FOLD_WITHIN`] already.
    fn next_slice(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let Some((upto, rest)) = self.folding.as_mut() else {
            return Ok(());
        };
        let late = self.last_fold.is_some_and(|t| t.elapsed() >= self.fold_within);
        let take = if late { usize::MAX } else { self.fold_slice };
        let slice: Vec<_> = rest.by_ref().take(take).collect();
        let last = rest.len() == 0;
        alarms::fold_slice(tx, *upto, &slice, last)?;
        if last {
            self.folding = None;
        }
        Ok(())
    }

    /// Count every linked event into its alarm now, by a scan of the events. The chain heads
    /// stay right: each alarm's row now holds the head remembered for it.
    fn fold(&mut self, tx: &Transaction<'_>, upto: Option<i64>) -> Result<(), StoreError> {
        alarms::fold_events(tx, upto)?;
        self.uncounted.clear();
        self.folding = None;
        self.fold_needed = false;
        self.full_fold_due = false;
        self.last_fold = Some(Instant::now());
        if self.heads.len() >= MAX_REMEMBERED {
            self.heads.clear();
        }
        Ok(())
    }

    /// Drop what a committed job that changed an alarm could have made wrong: which alarm is
    /// open per site and join key (the job may have closed it or raised its priority), and
    /// which accounts have nothing to restore (it may have opened a communication-lost alarm).
    /// The chain heads and the links still to count stay: no job links or counts an event, so
    /// a fold under way goes on in slices instead of starting over as one scan.
    pub fn forget_open(&mut self) {
        self.comm_clear.clear();
        self.open.clear();
    }

    /// Drop everything a rollback could have made wrong.
    pub fn forget(&mut self) {
        self.forget_open();
        self.periods.forget();
        self.heads.clear();
        self.uncounted.clear();
        self.folding = None;
        self.fold_needed = true;
    }

    /// Join the open alarm of `a`'s site and join key, or open one; link `event_id` to it.
    /// An event that changes nothing about a remembered alarm (no higher priority, no duress)
    /// writes only its link. `now`: the event's receive time, when there is an event.
    pub fn open_or_join(
        &mut self,
        tx: &Transaction<'_>,
        a: &AlarmSpec,
        event_id: Option<i64>,
        now: i64,
    ) -> Result<i64, StoreError> {
        if let Some(id) = self.join_remembered(
            tx,
            a.site_id,
            &a.join_key,
            a.priority,
            a.duress,
            event_id.map(|e| (e, now)),
        )? {
            return Ok(id);
        }
        self.open_or_join_looked_up(tx, a, event_id, now)
    }

    /// [`Self::open_or_join`] once [`Self::join_remembered`] found nothing to join: through
    /// the alarm's row.
    pub fn open_or_join_looked_up(
        &mut self,
        tx: &Transaction<'_>,
        a: &AlarmSpec,
        event_id: Option<i64>,
        now: i64,
    ) -> Result<i64, StoreError> {
        if let Some(e) = event_id
            && self.fold_needed
        {
            // Mid-frame: the events of this frame from `e` on are stored but not linked yet.
            self.fold(tx, Some(e - 1))?;
        }
        let j = alarms::open_or_join(tx, a, event_id.is_some(), now)?;
        if let Some(e) = event_id {
            let prev = self.heads.get(&j.id).copied().or(j.counted_head);
            alarms::link(tx, j.id, prev, e)?;
            self.linked(j.id, e, now);
        }
        if self.open.len() >= MAX_REMEMBERED {
            self.open.clear();
        }
        self.open.insert((a.site_id, a.join_key.clone()), (j.id, j.priority));
        Ok(j.id)
    }

    /// Link `event` (its id and receive time) to the remembered open alarm of this site and
    /// join key if the event changes nothing about it. `None`: not remembered, or the event
    /// raises the priority, is a duress, or has no event row; the caller goes through
    /// [`Self::open_or_join`].
    pub fn join_remembered(
        &mut self,
        tx: &Transaction<'_>,
        site_id: Option<i64>,
        join_key: &str,
        priority: u8,
        duress: bool,
        event: Option<(i64, i64)>,
    ) -> Result<Option<i64>, StoreError> {
        let Some((e, received_ms)) = event else { return Ok(None) };
        let Some(link) = self.remembered_link(tx, site_id, join_key, priority, duress)? else {
            return Ok(None);
        };
        alarms::link(tx, link.alarm_id, link.prev, e)?;
        self.linked(link.alarm_id, e, received_ms);
        Ok(Some(link.alarm_id))
    }

    /// The link an event would get by joining the remembered alarm as it is (see
    /// [`Self::join_remembered`]), without writing it.
    fn remembered_link(
        &self,
        tx: &Transaction<'_>,
        site_id: Option<i64>,
        join_key: &str,
        priority: u8,
        duress: bool,
    ) -> Result<Option<AlarmLink>, StoreError> {
        if duress || self.fold_needed {
            return Ok(None);
        }
        let Some(&(id, p)) = self.open.get(&(site_id, join_key.to_string())) else {
            return Ok(None);
        };
        if priority < p {
            return Ok(None);
        }
        let prev = match self.heads.get(&id) {
            Some(h) => Some(*h),
            None => tx
                .prepare_cached("SELECT last_event_id FROM alarms WHERE id = ?1")?
                .query_row(params![id], |r| r.get(0))?,
        };
        Ok(Some(AlarmLink { alarm_id: id, prev }))
    }

    /// `event_id` (received at `received_ms`) was linked to `alarm_id`.
    fn linked(&mut self, alarm_id: i64, event_id: i64, received_ms: i64) {
        // Never dropped between folds: an alarm with events after the watermark must be here.
        // Past the bound, the next transaction folds everything and starts over.
        self.heads.insert(alarm_id, event_id);
        self.uncounted
            .entry(alarm_id)
            .and_modify(|u| u.add(event_id, received_ms))
            .or_insert(Uncounted {
                n: 1,
                last_ms: received_ms,
                last_id: event_id,
            });
        if self.heads.len() >= MAX_REMEMBERED || self.uncounted.len() >= MAX_REMEMBERED {
            self.full_fold_due = true;
        }
    }

    /// [`alarms::restore_zone`]; the zone's alarm, if remembered, is no longer unrestored.
    pub fn restore_zone(
        &mut self,
        tx: &Transaction<'_>,
        site_id: Option<i64>,
        join_key: &str,
        event_id: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.open.remove(&(site_id, join_key.to_string()));
        alarms::restore_zone(tx, site_id, join_key, event_id, now)
    }

    /// [`alarms::restore_communication`], skipped for accounts known to have nothing to
    /// restore.
    pub fn restore_communication(&mut self, tx: &Transaction<'_>, account_id: i64, now: i64) -> Result<(), StoreError> {
        if self.comm_clear.contains(&account_id) {
            return Ok(());
        }
        if alarms::restore_communication(tx, account_id, now)? + mass_loss::restore(tx, account_id, now)? > 0 {
            // A restored alarm is no longer one an event may join without a look.
            self.open.clear();
        }
        if self.comm_clear.len() >= MAX_REMEMBERED {
            self.comm_clear.clear();
        }
        self.comm_clear.insert(account_id);
        Ok(())
    }

    /// [`owner_of`], remembered.
    pub fn owner(&mut self, tx: &Transaction<'_>, account_id: i64) -> Result<Owner, StoreError> {
        if let Some(o) = self.owners.get(&account_id) {
            return Ok(*o);
        }
        let o = owner_of(tx, account_id)?;
        self.owners.insert(account_id, o);
        Ok(o)
    }

    /// [`priority_for`], remembered per customer and category.
    pub fn priority(
        &mut self,
        tx: &Transaction<'_>,
        customer_id: Option<i64>,
        category: Category,
        default: u8,
    ) -> Result<u8, StoreError> {
        let k = (customer_id.unwrap_or(0), category);
        let rule = match self.priorities.get(&k) {
            Some(r) => *r,
            None => {
                let r = rule_for(tx, customer_id, category)?;
                self.priorities.insert(k, r);
                r
            }
        };
        Ok(rule.unwrap_or(default))
    }
}

/// The writer hook that correlates each stored frame.
pub struct Correlator {
    /// Settings.
    pub cfg: CorrelateConfig,
    cache: RecordCache,
    /// The newest `alarm_log` row before the running job.
    log_before_job: i64,
    /// The alarm the frame being stored was linked to as its event was inserted
    /// ([`AfterInsert::link_before_insert`]); taken by [`on_frame`].
    prelinked: Option<i64>,
}

impl Correlator {
    /// A correlator with an empty cache.
    pub fn new(cfg: CorrelateConfig) -> Self {
        Correlator {
            cfg,
            cache: RecordCache::default(),
            log_before_job: 0,
            prelinked: None,
        }
    }
}

impl AfterInsert for Correlator {
    fn begin(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        self.cache.refresh(tx)
    }

    fn forget(&mut self) {
        self.prelinked = None;
        self.cache.forget();
    }

    fn before_job(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        self.log_before_job = newest_log_id(tx)?;
        Ok(())
    }

    /// Every change to an alarm is logged, and opening or re-opening a communication-lost
    /// alarm is one: a job that logged nothing (an escalation check that found nothing, an
    /// outbox cursor, an audit row) cannot have made the remembered state wrong. The check
    /// runs every second for escalation; forgetting each time cost every account a probe.
    fn after_job(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        if newest_log_id(tx)? != self.log_before_job {
            self.cache.forget_open();
        }
        Ok(())
    }

    /// The flood case, decided before the event row exists: a frame's only event that joins
    /// its remembered alarm as it is gets its link in its own `INSERT` (one statement fewer
    /// per event). Only when nothing [`on_frame`] does before that event could change the
    /// answer: the account's traffic has nothing to restore.
    fn link_before_insert(&mut self, tx: &Transaction<'_>, r: &FrameRecord) -> Result<Option<AlarmLink>, StoreError> {
        self.prelinked = None;
        let (Some(account_id), [ev]) = (r.account_id, r.events.as_slice()) else {
            return Ok(None);
        };
        if r.outcome != Outcome::Accepted || r.link_test_only || !self.cache.comm_clear.contains(&account_id) {
            return Ok(None);
        }
        let Some(meaning) = ev.meaning.filter(|m| matches!(m.kind, Kind::Alarm | Kind::Trouble)) else {
            return Ok(None);
        };
        let owner = self.cache.owner(tx, account_id)?;
        let account = r.account.as_deref().unwrap_or_default();
        if self
            .cache
            .periods
            .period_for(account, owner.site_id, r.received_ms)
            .is_some()
        {
            return Ok(None);
        }
        let priority = self
            .cache
            .priority(tx, owner.customer_id, meaning.category, meaning.priority)?;
        let account = r.account.as_deref().unwrap_or_default();
        let join_key = join_key(owner.site_id, account, ev, meaning.category);
        let duress = meaning.category == Category::Duress;
        let link = self
            .cache
            .remembered_link(tx, owner.site_id, &join_key, priority, duress)?;
        self.prelinked = link.map(|l| l.alarm_id);
        Ok(link)
    }

    fn after_insert(&mut self, tx: &Transaction<'_>, r: &FrameRecord, c: &Committed) -> Result<(), StoreError> {
        let prelinked = self.prelinked.take();
        on_frame(tx, &self.cfg, &mut self.cache, r, c, prelinked)
    }
}

fn newest_log_id(tx: &Transaction<'_>) -> Result<i64, StoreError> {
    Ok(tx
        .prepare_cached("SELECT ifnull(max(id), 0) FROM alarm_log")?
        .query_row([], |r| r.get(0))?)
}

/// Correlate one stored frame. `cache` must have been refreshed in this transaction.
pub fn on_frame(
    tx: &Transaction<'_>,
    cfg: &CorrelateConfig,
    cache: &mut RecordCache,
    r: &FrameRecord,
    c: &Committed,
    prelinked: Option<i64>,
) -> Result<(), StoreError> {
    let now = r.received_ms;
    match r.outcome {
        Outcome::Refused if r.reason == Some("unknown_account") => {
            let Some(account) = r.account.as_deref() else {
                return Ok(());
            };
            cache.open_or_join(
                tx,
                &AlarmSpec {
                    source_frame: c.frame_id,
                    ..AlarmSpec::supervisor(
                        account,
                        format!("acct:{account}/unknown-account"),
                        format!("Unknown account {account}"),
                        cfg.supervisor_priority,
                    )
                },
                None,
                now,
            )?;
            return Ok(());
        }
        Outcome::Refused if r.reason == Some("unsupported_format") => {
            // A Sur-Gard line of a format meldkamer does not read (ACKed, so the translator
            // goes on with the next): the supervisor looks at the stored raw line.
            cache.open_or_join(
                tx,
                &AlarmSpec {
                    source_frame: c.frame_id,
                    ..AlarmSpec::supervisor(
                        "",
                        "input:unsupported-format",
                        format!(
                            "Contact ID input not understood: {}",
                            r.detail.as_deref().unwrap_or("unsupported format")
                        ),
                        cfg.supervisor_priority,
                    )
                },
                None,
                now,
            )?;
            return Ok(());
        }
        Outcome::Refused if r.reason == Some("unreadable") => {
            // CRC and length right, header unreadable (a non-hex account…): answered DUH; the
            // supervisor sees the frame, its address and what could not be read.
            let source = sources::source_of(&r.peer);
            if cache
                .sources
                .observe(&source, sources::Issue::Unreadable, now)
                .is_some()
            {
                cache.open_or_join(
                    tx,
                    &AlarmSpec {
                        source_frame: c.frame_id,
                        ..AlarmSpec::supervisor(
                            "",
                            format!("source:{source}/unreadable"),
                            format!(
                                "Unreadable DC-09 frame from {source}, answered DUH: {}",
                                r.detail.as_deref().unwrap_or("header not understood")
                            ),
                            cfg.supervisor_priority,
                        )
                    },
                    None,
                    now,
                )?;
            }
            return Ok(());
        }
        Outcome::Silent if matches!(r.reason, Some("crc" | "length")) => {
            // Never answered; one failure is a line glitch, a source that keeps failing is a
            // misconfigured panel (or someone probing) the ARC should know of.
            let source = sources::source_of(&r.peer);
            if let Some(n) = cache.sources.observe(&source, sources::Issue::Integrity, now) {
                cache.open_or_join(
                    tx,
                    &AlarmSpec {
                        source_frame: c.frame_id,
                        ..AlarmSpec::supervisor(
                            "",
                            format!("source:{source}/integrity"),
                            format!(
                                "Frames from {source} keep failing their CRC or length ({n} within {} min), not answered: {}",
                                sources::INTEGRITY_WINDOW_MS / 60_000,
                                r.detail.as_deref().unwrap_or("integrity check failed")
                            ),
                            cfg.supervisor_priority,
                        )
                    },
                    None,
                    now,
                )?;
            }
            return Ok(());
        }
        Outcome::Accepted => {}
        _ => return Ok(()),
    }
    let Some(account_id) = r.account_id else {
        return Ok(());
    };
    // Any valid traffic (polls included) proves the path works again.
    cache.restore_communication(tx, account_id, now)?;
    if c.duplicate_of.is_some() {
        return Ok(());
    }
    if r.reason == Some("key_change_refused") {
        // A `K` field: a new key offered over the air. It is never stored or used (keys come
        // from an import, sealed and audited); the supervisor re-keys the panel by hand.
        let owner = cache.owner(tx, account_id)?;
        let account = r.account.clone().unwrap_or_default();
        cache.open_or_join(
            tx,
            &AlarmSpec {
                site_id: owner.site_id,
                account_id: Some(account_id),
                source_frame: c.frame_id,
                ..AlarmSpec::supervisor(
                    account.as_str(),
                    format!("acct:{account}/key-change"),
                    format!("Key change over the air from account {account} refused: the panel's key was not changed"),
                    cfg.supervisor_priority,
                )
            },
            None,
            now,
        )?;
    }
    if r.link_test_only {
        return Ok(());
    }
    let owner = cache.owner(tx, account_id)?;
    let account = r.account.clone().unwrap_or_default();
    // On test or out of service: stored, no operator alarm (`service`).
    let period = cache.periods.period_for(&account, owner.site_id, now).cloned();
    let on_test = period.as_ref().is_some_and(|p| p.mode == service::Mode::Test);
    if let Some(p) = period.as_ref().filter(|_| on_test) {
        let ids: Vec<i64> = (r.events.iter().zip(&c.event_ids))
            .filter(|(e, _)| e.code != EventCode::LinkTest)
            .map(|(_, id)| *id)
            .collect();
        service::record_test_events(tx, p.id, &ids)?;
    }
    let scope = |key: String| match owner.site_id {
        Some(_) => key,
        None => format!("acct:{account}/{key}"),
    };
    if r.events.is_empty() {
        if let Some(detail) = r.detail.as_ref().filter(|_| r.reason == Some("payload")) {
            // Accepted but not understood: the supervisor looks at it.
            cache.open_or_join(
                tx,
                &AlarmSpec {
                    site_id: owner.site_id,
                    account_id: Some(account_id),
                    source_frame: c.frame_id,
                    ..AlarmSpec::supervisor(
                        account.as_str(),
                        scope("payload".into()),
                        format!("Data not understood from account {account}: {detail}"),
                        cfg.supervisor_priority,
                    )
                },
                None,
                now,
            )?;
        }
        return Ok(());
    }
    for (ev, event_id) in r.events.iter().zip(&c.event_ids) {
        let zone = ev.zone.as_deref().map(norm_number);
        let area = ev.area.as_deref().map(norm_number);
        let Some(meaning) = ev.meaning else {
            if on_test {
                continue;
            }
            let code = match ev.code {
                EventCode::Sia(c) => format!("SIA {c}"),
                EventCode::Cid(c) => format!("Contact ID {c}"),
                EventCode::LinkTest => continue,
            };
            cache.open_or_join(
                tx,
                &AlarmSpec {
                    site_id: owner.site_id,
                    account_id: Some(account_id),
                    zone: zone.clone(),
                    area: area.clone(),
                    ..AlarmSpec::supervisor(
                        account.as_str(),
                        scope(format!("code:{code}")),
                        format!("Unknown code {code} from account {account}"),
                        cfg.supervisor_priority,
                    )
                },
                Some(*event_id),
                now,
            )?;
            continue;
        };
        match meaning.kind {
            Kind::Alarm | Kind::Trouble => {
                if let Some(p) = &period {
                    service::divert(tx, cache, p, owner, account_id, &account, ev, meaning, *event_id, now)?;
                    continue;
                }
                if let Some(alarm_id) = prelinked {
                    // Linked as it was inserted (the frame's only event).
                    cache.linked(alarm_id, *event_id, now);
                    continue;
                }
                let priority = cache.priority(tx, owner.customer_id, meaning.category, meaning.priority)?;
                let join_key = join_key(owner.site_id, &account, ev, meaning.category);
                let duress = meaning.category == Category::Duress;
                // The flood case first: nothing to look up (not even the zone's description
                // for the title) when the event joins the remembered alarm as it is.
                if cache
                    .join_remembered(tx, owner.site_id, &join_key, priority, duress, Some((*event_id, now)))?
                    .is_some()
                {
                    continue;
                }
                let (queue, title) = match owner.site_id {
                    Some(site) => (
                        Queue::Operator,
                        alarms::title_for(tx, site, meaning.description, zone.as_deref())?,
                    ),
                    None => (
                        Queue::Supervisor,
                        format!("{} from account {account} (no customer record)", meaning.description),
                    ),
                };
                cache.open_or_join_looked_up(
                    tx,
                    &AlarmSpec {
                        queue,
                        site_id: owner.site_id,
                        account_id: Some(account_id),
                        account: account.clone(),
                        join_key,
                        category: Some(meaning.category),
                        priority,
                        title,
                        zone: zone.clone(),
                        area: area.clone(),
                        duress,
                        source_frame: None,
                    },
                    Some(*event_id),
                    now,
                )?;
            }
            Kind::Restore | Kind::TroubleRestore => {
                let join_key = join_key(owner.site_id, &account, ev, meaning.category);
                cache.restore_zone(tx, owner.site_id, &join_key, *event_id, now)?;
            }
            Kind::Disarm | Kind::Cancel => {
                if let Some(site) = owner.site_id {
                    let user = ev.user.as_deref().map(norm_number);
                    alarms::set_armed(tx, site, false, user.as_deref(), now)?;
                    alarms::record_keypad_factor(tx, site, user.as_deref(), meaning.kind, *event_id, now)?;
                    schedule::store::on_report(tx, site, *event_id, now, period.is_some())?;
                }
            }
            Kind::Arm => {
                if let Some(site) = owner.site_id {
                    let user = ev.user.as_deref().map(norm_number);
                    alarms::set_armed(tx, site, true, user.as_deref(), now)?;
                    schedule::store::on_report(tx, site, *event_id, now, period.is_some())?;
                }
            }
            Kind::Bypass | Kind::Unbypass | Kind::Test | Kind::Status | Kind::Info => {}
        }
    }
    Ok(())
}

/// The join key of an alarm or restore event: its zone (else its code) and its category;
/// scoped to the account when the account belongs to no site. The category is part of the key
/// so that an event never joins an open alarm of another category: a hold-up in the zone of an
/// open panic alarm opens its own alarm, under the hold-up procedure, instead of folding into
/// the panic alarm and its "call the site" procedure.
fn join_key(site_id: Option<i64>, account: &str, ev: &Event, category: Category) -> String {
    let key = match ev.zone.as_deref().map(norm_number) {
        Some(z) => format!("zone:{z}/{}", category.as_str()),
        None => format!("code:{}/{}", ev.code, category.as_str()),
    };
    match site_id {
        Some(_) => key,
        None => format!("acct:{account}/{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_without_leading_zeros() {
        assert_eq!(norm_number("003"), "3");
        assert_eq!(norm_number("0005"), "5");
        assert_eq!(norm_number("000"), "0");
        assert_eq!(norm_number("12"), "12");
        assert_eq!(norm_number(""), "");
    }

    /// The accounts known to have nothing to restore survive a job that changed no alarm (the
    /// escalation check every second) and are forgotten after one that did (a
    /// communication-lost alarm is opened by a job and logged).
    #[test]
    fn remembered_accounts_survive_only_jobs_that_changed_no_alarm() {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn =
            crate::store::open_write(&dir.path().join("c.db"), std::time::Duration::from_secs(5)).expect("db");
        conn.execute("INSERT INTO accounts (id, account) VALUES (1, 'A1')", [])
            .expect("account");
        let tx = conn.transaction().expect("tx");
        let mut c = Correlator::new(CorrelateConfig::default());
        c.begin(&tx).expect("begin");
        c.cache.restore_communication(&tx, 1, 1_000).expect("probe");
        assert!(c.cache.comm_clear.contains(&1));

        c.before_job(&tx).expect("before");
        c.after_job(&tx).expect("after");
        assert!(c.cache.comm_clear.contains(&1), "a job that logged nothing keeps it");

        c.before_job(&tx).expect("before");
        let id = supervision::communication_lost(&tx, 1, 500, 2_000).expect("comm lost");
        c.after_job(&tx).expect("after");
        assert!(c.cache.comm_clear.is_empty(), "a job that opened an alarm forgets");

        // And the next traffic restores what the job opened.
        c.cache.restore_communication(&tx, 1, 3_000).expect("restore");
        let restored: Option<i64> = tx
            .query_row("SELECT restored_ms FROM alarms WHERE id = ?1", [id], |r| r.get(0))
            .expect("alarm");
        assert_eq!(restored, Some(3_000));
    }

    /// A stored event (and its frame) for the tests below; returns the event's id.
    fn stored_event(tx: &Transaction<'_>, ms: i64) -> i64 {
        tx.execute(
            "INSERT INTO frames (received_ms, transport, peer, raw, outcome) VALUES (?1, 'tcp', 'p', x'', 'accepted')",
            [ms],
        )
        .expect("frame");
        let frame = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO events (frame_id, received_ms, account, seq, code_format, code, qualifier, description)
             VALUES (?1, ?2, 'A1', 1, 'sia', 'BA', 'new', 'Burglary')",
            params![frame, ms],
        )
        .expect("event");
        tx.last_insert_rowid()
    }

    fn flood_spec(priority: u8) -> AlarmSpec {
        AlarmSpec {
            category: Some(Category::Burglary),
            ..AlarmSpec::supervisor("A1", "acct:A1/zone:3", "Burglary, zone 3", priority)
        }
    }

    /// (count and last event time in the alarm's row, as every reader sees them, the events
    /// the alarm's detail lists, by time).
    fn counts(conn: &rusqlite::Connection) -> ((i64, i64), (i64, i64), Vec<String>) {
        let row = conn
            .query_row("SELECT event_count, last_event_ms FROM alarms", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("alarm");
        let q = crate::operator::queries::queue(conn, true).expect("queue");
        assert_eq!(q.len(), 1);
        let d = crate::operator::queries::alarm_detail_public(conn, &q[0].id)
            .expect("detail")
            .expect("alarm");
        let listed = d.events.iter().map(|e| e.received.clone()).collect();
        (row, (q[0].events, q[0].last_event_ms), listed)
    }

    /// Every alarm's count and last event time as the readers see them, and as the event rows
    /// say, by public id.
    fn seen_and_true(conn: &rusqlite::Connection) -> (Vec<(String, i64, i64)>, Vec<(String, i64, i64)>) {
        let mut seen: Vec<_> = crate::operator::queries::queue(conn, true)
            .expect("queue")
            .into_iter()
            .map(|a| (a.id, a.events, a.last_event_ms))
            .collect();
        seen.sort();
        let mut stmt = conn
            .prepare(
                "SELECT a.public_id, count(e.id), ifnull(max(e.received_ms), a.last_event_ms)
                 FROM alarms a LEFT JOIN events e ON e.alarm_id = a.id GROUP BY a.id ORDER BY a.public_id",
            )
            .expect("truth");
        let truth = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        (seen, truth)
    }

    /// An alert without an event row that joins an open alarm is logged each time (that entry
    /// is how a queue subscription finds the change), and the alarm's detail carries only the
    /// newest entries, oldest first, with the number left out.
    #[test]
    fn repeated_alerts_are_logged_and_the_detail_shows_the_newest_entries() {
        use crate::operator::queries::{LOG_SHOWN, alarm_detail_public, queue};
        let dir = tempfile::tempdir().expect("dir");
        let mut conn = crate::store::open_write(&dir.path().join("c.db"), Duration::from_secs(5)).expect("db");
        let spec = AlarmSpec::supervisor("A9", "acct:A9/unknown-account", "Unknown account A9", 4);
        let n = LOG_SHOWN + 50;
        let tx = conn.transaction().expect("tx");
        for k in 0..n {
            alarms::open_or_join(&tx, &spec, false, 1_000 + k).expect("open or join");
        }
        tx.commit().expect("commit");
        let q = queue(&conn, true).expect("queue");
        assert_eq!(q.len(), 1, "one alarm, joined {} times", n - 1);
        assert_eq!(q[0].last_event_ms, 1_000 + n - 1);
        let logged: i64 = conn
            .query_row("SELECT count(*) FROM alarm_log WHERE action = 'repeated'", [], |r| {
                r.get(0)
            })
            .expect("log");
        assert_eq!(logged, n - 1, "every join without an event is logged");
        let d = alarm_detail_public(&conn, &q[0].id).expect("detail").expect("alarm");
        assert_eq!(d.log.len() as i64, LOG_SHOWN);
        assert_eq!(d.log_earlier, 50);
        assert!(
            d.log.iter().all(|l| l.action == "repeated"),
            "the opening is among the older ones"
        );
        assert_eq!(d.log[0].at, crate::clock::rfc3339_ms(1_050));
        assert_eq!(d.log[d.log.len() - 1].at, crate::clock::rfc3339_ms(1_000 + n - 1));

        // A short log is shown whole.
        let few = AlarmSpec::supervisor("A8", "acct:A8/unknown-account", "Unknown account A8", 4);
        let tx = conn.transaction().expect("tx");
        for k in 0..3 {
            alarms::open_or_join(&tx, &few, false, 5_000 + k).expect("open or join");
        }
        tx.commit().expect("commit");
        let q = queue(&conn, true).expect("queue");
        let short = q.iter().find(|a| a.account == "A8").expect("the second alarm");
        let d = alarm_detail_public(&conn, &short.id).expect("detail").expect("alarm");
        let actions: Vec<&str> = d.log.iter().map(|l| l.action.as_str()).collect();
        assert_eq!(actions, ["opened", "repeated", "repeated"]);
        assert_eq!(d.log_earlier, 0);
    }

    /// The writer counts the links it made into the alarms' rows a slice of alarms per
    /// transaction. Whatever the slices have reached, after every commit, after a rollback in
    /// the middle of a fold and after a restart, every reader counts each alarm exactly.
    #[test]
    fn a_fold_in_slices_leaves_every_count_exact_at_every_step() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.db");
        let mut conn = crate::store::open_write(&path, std::time::Duration::from_secs(5)).expect("db");
        let mut c = Correlator::new(CorrelateConfig::default());
        c.cache.fold_every = Duration::ZERO;
        c.cache.fold_slice = 2;
        let mut partial = 0;
        let mut ms = 1_000;
        for round in 0..12 {
            let tx = conn.transaction().expect("tx");
            c.begin(&tx).expect("begin");
            // Seven alarms, each joined by a few events a round (the zones rotate).
            for k in 0..9 {
                ms += 1;
                let e = stored_event(&tx, ms);
                c.cache
                    .open_or_join(&tx, &zone_spec((round + k) % 7), Some(e), ms)
                    .expect("join");
            }
            if round == 7 {
                // A rollback in the middle of a fold: the writer forgets.
                drop(tx);
                c.forget();
                continue;
            }
            tx.commit().expect("commit");
            if fold_done(&conn) > 0 {
                partial += 1;
            }
            let (seen, truth) = seen_and_true(&conn);
            assert_eq!(seen.len(), 7);
            assert_eq!(seen, truth, "round {round}");
        }
        assert!(
            partial >= 3,
            "the folds went in slices ({partial} commits with a fold half done)"
        );

        // A restart in the middle of a fold: the new writer counts what is left by a scan.
        assert!(fold_done(&conn) > 0 || c.cache.folding.is_some() || !c.cache.uncounted.is_empty());
        let mut c = Correlator::new(CorrelateConfig::default());
        let tx = conn.transaction().expect("tx");
        c.begin(&tx).expect("begin");
        tx.commit().expect("commit");
        assert_eq!(fold_done(&conn), 0);
        let (seen, truth) = seen_and_true(&conn);
        assert_eq!(seen, truth);
        let rows: Vec<(String, i64, i64)> = conn
            .prepare("SELECT public_id, event_count, last_event_ms FROM alarms ORDER BY public_id")
            .expect("rows")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows, truth, "after a full fold the rows alone are exact");
    }

    /// A correlator over a fresh database whose fold goes two alarms per transaction and
    /// starts with every transaction; seven alarms with linked events, committed, and a fold
    /// of them started and one slice in, committed. Also returns the last event's time.
    fn fold_under_way(path: &std::path::Path) -> (rusqlite::Connection, Correlator, i64) {
        let mut conn = crate::store::open_write(path, std::time::Duration::from_secs(5)).expect("db");
        let mut c = Correlator::new(CorrelateConfig::default());
        c.cache.fold_every = Duration::ZERO;
        c.cache.fold_slice = 2;
        let mut ms = 1_000;
        let tx = conn.transaction().expect("tx");
        c.begin(&tx).expect("begin");
        for k in 0..9 {
            ms += 1;
            let e = stored_event(&tx, ms);
            c.cache.open_or_join(&tx, &zone_spec(k % 7), Some(e), ms).expect("join");
        }
        tx.commit().expect("commit");
        let tx = conn.transaction().expect("tx");
        c.begin(&tx).expect("begin: the fold starts, one slice");
        tx.commit().expect("commit");
        assert!(fold_done(&conn) > 0, "a fold is under way");
        (conn, c, ms)
    }

    fn zone_spec(z: i64) -> AlarmSpec {
        AlarmSpec {
            category: Some(Category::Burglary),
            ..AlarmSpec::supervisor("A1", format!("acct:A1/zone:{z}"), format!("Burglary, zone {z}"), 3)
        }
    }

    fn fold_done(conn: &rusqlite::Connection) -> i64 {
        conn.query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'alarm_fold_done'",
            [],
            |r| r.get(0),
        )
        .expect("mark")
    }

    /// Links whose alarm_prev does not point at the same alarm's previous event.
    fn broken_chains(conn: &rusqlite::Connection) -> i64 {
        conn.query_row(
            "SELECT count(*) FROM events e WHERE e.alarm_id IS NOT NULL AND e.alarm_prev IS NOT
                 (SELECT max(p.id) FROM events p WHERE p.alarm_id = e.alarm_id AND p.id < e.id)",
            [],
            |r| r.get(0),
        )
        .expect("chains")
    }

    /// An operator's acknowledgement (a job that changed an alarm) drops which alarms are open,
    /// but not the links still to count nor the chain heads: the fold under way goes on a slice
    /// at a time instead of starting over as one scan, and every count and chain stays exact.
    #[test]
    fn a_job_that_changed_an_alarm_leaves_the_fold_under_way_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut conn, mut c, mut ms) = fold_under_way(&dir.path().join("c.db"));
        let tx = conn.transaction().expect("tx");
        c.begin(&tx).expect("begin: the next slice");
        let first: i64 = tx
            .query_row("SELECT min(id) FROM alarms", [], |r| r.get(0))
            .expect("alarm");
        c.before_job(&tx).expect("before");
        alarms::acknowledge(&tx, first, "op1", ms).expect("acknowledge");
        c.after_job(&tx).expect("after");
        assert!(c.cache.open.is_empty(), "the open alarms are looked up again");
        assert!(
            !c.cache.fold_needed && c.cache.folding.is_some(),
            "the fold under way goes on"
        );
        // More events join every alarm, the acknowledged one too, found by a look-up now.
        for k in 0..7 {
            ms += 1;
            let e = stored_event(&tx, ms);
            c.cache.open_or_join(&tx, &zone_spec(k), Some(e), ms).expect("join");
        }
        tx.commit().expect("commit");
        assert!(fold_done(&conn) > 0, "still in slices");
        let (seen, truth) = seen_and_true(&conn);
        assert_eq!(seen, truth);
        assert_eq!(broken_chains(&conn), 0);
        // The fold goes on to its end, and the next one counts the new links.
        for _ in 0..10 {
            let tx = conn.transaction().expect("tx");
            c.begin(&tx).expect("begin");
            tx.commit().expect("commit");
            let (seen, truth) = seen_and_true(&conn);
            assert_eq!(seen, truth);
        }
        let pending: i64 = conn
            .query_row(
                &format!("WITH {} SELECT ifnull(sum(n), 0) FROM pending", alarms::PENDING_EVENTS),
                [],
                |r| r.get(0),
            )
            .expect("pending");
        assert_eq!(pending, 0, "every link counted into the rows");
    }

    /// A fold that has been under way for `fold_within` (a quiet writer comes round once a
    /// second) counts all the rest in the next transaction, so readers never have far to count.
    #[test]
    fn a_fold_that_took_its_time_finishes_in_the_next_transaction() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut conn, mut c, _) = fold_under_way(&dir.path().join("c.db"));
        let watermark = |conn: &rusqlite::Connection| -> i64 {
            conn.query_row(
                "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'alarm_event_id'",
                [],
                |r| r.get(0),
            )
            .expect("mark")
        };
        let before = watermark(&conn);
        c.cache.fold_within = Duration::ZERO;
        c.cache.fold_every = Duration::from_secs(3600);
        let tx = conn.transaction().expect("tx");
        c.begin(&tx).expect("begin");
        tx.commit().expect("commit");
        assert!(c.cache.folding.is_none(), "the fold is done");
        assert_eq!(fold_done(&conn), 0);
        assert!(watermark(&conn) > before, "the watermark moved to the fold's end");
        let (seen, truth) = seen_and_true(&conn);
        assert_eq!(seen, truth);
    }

    /// A flood joins its alarm writing only each event's link; the alarm's row is brought up
    /// to date in bulk. Every reader sees the exact count before that, after it, after a
    /// crash, and after a rollback the writer had to forget.
    #[test]
    fn a_flood_writes_links_only_and_every_reader_counts_it_exactly() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.db");
        let mut conn = crate::store::open_write(&path, std::time::Duration::from_secs(5)).expect("db");
        let mut c = Correlator::new(CorrelateConfig::default());
        c.cache.fold_every = Duration::from_secs(3600);

        let tx = conn.transaction().expect("tx");
        c.begin(&tx).expect("begin");
        let mut alarm = None;
        for i in 0..5 {
            let e = stored_event(&tx, 1_000 + i);
            let id = c
                .cache
                .open_or_join(&tx, &flood_spec(3), Some(e), 1_000 + i)
                .expect("join");
            assert_eq!(*alarm.get_or_insert(id), id, "one alarm");
        }
        tx.commit().expect("commit");
        let (row, seen, listed) = counts(&conn);
        assert_eq!(row, (0, 1_000), "the row is not written per event");
        assert_eq!(seen, (5, 1_004));
        assert_eq!(listed.len(), 5);

        // The bulk update (due once a second; forced here by a new writer, as after a crash).
        let mut c = Correlator::new(CorrelateConfig::default());
        c.cache.fold_every = Duration::from_secs(3600);
        let tx = conn.transaction().expect("tx");
        c.begin(&tx).expect("begin");
        tx.commit().expect("commit");
        assert_eq!(counts(&conn), ((5, 1_004), (5, 1_004), listed.clone()));

        // Two more events, rolled back: the writer forgets, and the next event chains to the
        // newest committed one.
        let tx = conn.transaction().expect("tx");
        c.begin(&tx).expect("begin");
        for i in 0..2 {
            let e = stored_event(&tx, 2_000 + i);
            c.cache
                .open_or_join(&tx, &flood_spec(3), Some(e), 2_000 + i)
                .expect("join");
        }
        drop(tx);
        c.forget();
        let tx = conn.transaction().expect("tx");
        c.begin(&tx).expect("begin");
        let e = stored_event(&tx, 3_000);
        c.cache.open_or_join(&tx, &flood_spec(3), Some(e), 3_000).expect("join");
        // A more urgent event goes through the alarm's row (priority) and is counted alike.
        let e = stored_event(&tx, 3_001);
        c.cache
            .open_or_join(&tx, &flood_spec(2), Some(e), 3_001)
            .expect("raise");
        tx.commit().expect("commit");
        let (row, seen, after) = counts(&conn);
        assert_eq!(row, (5, 1_004));
        assert_eq!(seen, (7, 3_001));
        assert_eq!(after.len(), 7, "the chain skips nothing: {after:?}");
        assert_eq!(after[..5], listed[..]);
        let p: i64 = conn
            .query_row("SELECT priority FROM alarms", [], |r| r.get(0))
            .expect("p");
        assert_eq!(p, 2);

        let tx = conn.transaction().expect("tx");
        c.cache.fold(&tx, None).expect("fold");
        tx.commit().expect("commit");
        assert_eq!(counts(&conn), ((7, 3_001), (7, 3_001), after));
    }

    /// A frame of account A1 (no site) with one SIA event `code` in zone 1, as the receiver
    /// hands it to the writer.
    fn one_event_frame(code: &[u8; 2]) -> FrameRecord {
        let mut r = FrameRecord::new(
            1_000,
            crate::store::writer::Transport::Tcp,
            "p".into(),
            b"x".to_vec(),
            Outcome::Accepted,
        );
        r.account = Some("A1".into());
        r.account_id = Some(1);
        r.events = vec![Event::sia_for_tests("A1", 1, code, "001")];
        assert!(r.events[0].meaning.is_some(), "a known code");
        r
    }

    /// Store `r`'s event as the writer does: the link asked for before the insert goes into
    /// the row, then the frame is correlated. Returns the event id and the link.
    fn store_as_the_writer(tx: &Transaction<'_>, c: &mut Correlator, r: &FrameRecord) -> (i64, Option<AlarmLink>) {
        let link = c.link_before_insert(tx, r).expect("decide");
        tx.execute(
            "INSERT INTO frames (received_ms, transport, peer, raw, outcome) VALUES (1000, 'tcp', 'p', x'', 'accepted')",
            [],
        )
        .expect("frame");
        let frame = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO events (frame_id, received_ms, account, account_id, seq, code_format, code, qualifier,
                                 description, zone, alarm_id, alarm_prev)
             VALUES (?1, 1000, 'A1', 1, 1, 'sia', ?2, 'new', 'x', '001', ?3, ?4)",
            params![
                frame,
                r.events[0].code.to_string(),
                link.map(|l| l.alarm_id),
                link.and_then(|l| l.prev)
            ],
        )
        .expect("event");
        let e = tx.last_insert_rowid();
        let committed = Committed {
            frame_id: Some(frame),
            duplicate_of: None,
            event_ids: vec![e],
            ..Committed::default()
        };
        c.after_insert(tx, r, &committed).expect("correlate");
        (e, link)
    }

    /// A flood event whose alarm is remembered gets its link in its own INSERT: no UPDATE of
    /// the event row, the same chain and count. Not for the first event (nothing remembered,
    /// and the account's traffic may restore something), not for a more urgent event, and
    /// not for a restore.
    #[test]
    fn a_flood_event_is_linked_in_its_insert() {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn =
            crate::store::open_write(&dir.path().join("c.db"), std::time::Duration::from_secs(5)).expect("db");
        conn.execute("INSERT INTO accounts (id, account) VALUES (1, 'A1')", [])
            .expect("account");
        let updates = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = updates.clone();
        conn.update_hook(Some(move |action, _: &str, table: &str, _| {
            if action == rusqlite::hooks::Action::SQLITE_UPDATE && table == "events" {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }))
        .expect("update hook");
        let mut c = Correlator::new(CorrelateConfig::default());
        let tx = conn.transaction().expect("tx");
        c.begin(&tx).expect("begin");
        let (e1, link) = store_as_the_writer(&tx, &mut c, &one_event_frame(b"BA"));
        assert_eq!(link, None, "the first event opens the alarm the usual way");
        let alarm: i64 = tx
            .query_row("SELECT alarm_id FROM events WHERE id = ?1", [e1], |r| r.get(0))
            .expect("linked");
        let before = updates.load(std::sync::atomic::Ordering::Relaxed);
        let (e2, link) = store_as_the_writer(&tx, &mut c, &one_event_frame(b"BA"));
        assert_eq!(
            link,
            Some(AlarmLink {
                alarm_id: alarm,
                prev: Some(e1)
            })
        );
        let (e3, link) = store_as_the_writer(&tx, &mut c, &one_event_frame(b"BA"));
        assert_eq!(
            link,
            Some(AlarmLink {
                alarm_id: alarm,
                prev: Some(e2)
            })
        );
        assert_eq!(
            updates.load(std::sync::atomic::Ordering::Relaxed),
            before,
            "no UPDATE of an event row"
        );
        // More urgent (a panic is priority 1), and a restore: decided after the insert.
        let (_, link) = store_as_the_writer(&tx, &mut c, &one_event_frame(b"PA"));
        assert_eq!(link, None);
        let (_, link) = store_as_the_writer(&tx, &mut c, &one_event_frame(b"BR"));
        assert_eq!(link, None);
        tx.commit().expect("commit");
        let chain: Vec<(i64, Option<i64>)> = conn
            .prepare("SELECT id, alarm_prev FROM events WHERE alarm_id = ?1 ORDER BY id")
            .expect("query")
            .query_map([alarm], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(chain[..3], [(e1, None), (e2, Some(e1)), (e3, Some(e2))]);
    }

    /// The first link after the writer forgot (a fresh writer, a rollback) counts what was
    /// linked before it, in the middle of a frame whose later events are stored but not linked
    /// yet: those must still be counted later.
    #[test]
    fn a_fold_in_the_middle_of_a_frame_leaves_its_unlinked_events_for_later() {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn =
            crate::store::open_write(&dir.path().join("c.db"), std::time::Duration::from_secs(5)).expect("db");
        let mut c = Correlator::new(CorrelateConfig::default());
        c.cache.fold_every = Duration::from_secs(3600);
        let tx = conn.transaction().expect("tx");
        // As the writer does: the frame's events are stored first, then correlated.
        let e1 = stored_event(&tx, 1_000);
        let e2 = stored_event(&tx, 1_000);
        assert!(c.cache.fold_needed, "a new writer folds before its first link");
        c.cache
            .open_or_join(&tx, &flood_spec(3), Some(e1), 1_000)
            .expect("join");
        c.forget();
        c.cache
            .open_or_join(&tx, &flood_spec(3), Some(e2), 1_000)
            .expect("join");
        tx.commit().expect("commit");
        let (_, seen, listed) = counts(&conn);
        assert_eq!(seen, (2, 1_000));
        assert_eq!(listed.len(), 2);
        let tx = conn.transaction().expect("tx");
        c.cache.fold(&tx, None).expect("fold");
        tx.commit().expect("commit");
        assert_eq!(counts(&conn).0, (2, 1_000));
    }
}
