//! Mass loss: many accounts going silent at once is one failure (a network, a provider, a
//! receiver line), not thousands of alarms. When at least [`MassLossConfig::accounts`] accounts
//! lose communication within [`MassLossConfig::window_ms`] of each other, the operators get ONE
//! mass-loss alarm naming the scope (how many accounts, the transport, receiver line and
//! network they last reported over, where known); every account silent in that episode is
//! folded into it instead of getting its own alarm. Each folded account still has its own
//! record (a row in `mass_loss_accounts`: its missed deadline, when it was noticed, its route),
//! listed with the alarm and restored one by one as the accounts report again; the alarm is
//! marked restored when every one of them has.
//!
//! The communication-lost alarms raised one by one in the window before the threshold was
//! reached are folded too if nobody has acknowledged them yet (closed as `duplicate`, logged
//! with the mass-loss alarm's identifier): the queue then holds the one item. An alarm an
//! operator has acknowledged stays theirs.
//!
//! Only communication-lost alarms are folded: an event (fire, duress, hold-up, burglary…)
//! from any account, also one inside a mass loss, opens its own alarm as always.

use std::collections::{BTreeMap, VecDeque};

use rusqlite::{OptionalExtension, Transaction, params};

use super::alarms::{self, AlarmSpec, Queue};
use crate::protocol::codes::Category;
use crate::store::StoreError;
use crate::store::writer::Route;

/// When a loss of communication is a mass loss (`[alarms]` `mass_loss_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MassLossConfig {
    /// This many accounts silent within the window make a mass loss; 0 turns folding off.
    pub accounts: usize,
    /// The window, ms: accounts whose silence was noticed within it of each other count
    /// together, and a mass loss goes on while accounts keep going silent within it.
    pub window_ms: i64,
    /// Priority of the mass-loss alarm.
    pub priority: u8,
}

impl Default for MassLossConfig {
    fn default() -> Self {
        MassLossConfig {
            accounts: 50,
            window_ms: 120_000,
            priority: 3,
        }
    }
}

/// One account whose silence was noticed: its missed deadline and route.
#[derive(Debug, Clone)]
pub struct Lost {
    /// Account row.
    pub account_id: i64,
    /// The deadline it missed.
    pub deadline_ms: i64,
    /// The route it last reported over, if known.
    pub route: Option<Route>,
}

/// What to do with the silences noticed in one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// One alarm per account.
    Individual,
    /// Open a mass-loss alarm and fold them (and the unacknowledged alarms of the window).
    Open,
    /// Fold them into the mass-loss alarm already open (`alarm_id`).
    Join(i64),
}

/// A communication-lost alarm raised one by one, remembered for a window in case a mass loss
/// follows.
#[derive(Debug, Clone, Copy)]
pub struct Raised {
    /// When.
    pub at_ms: i64,
    /// The account.
    pub account_id: i64,
    /// Its alarm.
    pub alarm_id: i64,
    /// The deadline it missed.
    pub deadline_ms: i64,
}

/// The mass-loss state of the supervisor: recent silences and the episode under way.
#[derive(Debug, Default)]
pub struct Watcher {
    cfg: MassLossConfig,
    /// Silences noticed per check, (when, how many), within the window.
    counts: VecDeque<(i64, usize)>,
    /// Alarms raised one by one within the window (fewer than the threshold).
    raised: VecDeque<Raised>,
    /// The episode under way: its alarm, the last silence folded, accounts per route.
    episode: Option<Episode>,
}

#[derive(Debug)]
struct Episode {
    alarm_id: i64,
    since_ms: i64,
    last_ms: i64,
    accounts: usize,
    routes: BTreeMap<Option<Route>, usize>,
}

impl Watcher {
    /// A watcher with these thresholds.
    pub fn new(cfg: MassLossConfig) -> Watcher {
        Watcher {
            cfg,
            ..Watcher::default()
        }
    }

    /// `n` silences noticed at `now_ms`: individual alarms, a new mass loss, or more of the one
    /// under way.
    pub fn decide(&mut self, now_ms: i64, n: usize) -> Decision {
        let w = self.cfg.window_ms;
        while self.counts.front().is_some_and(|(t, _)| now_ms - t > w) {
            self.counts.pop_front();
        }
        while self.raised.front().is_some_and(|r| now_ms - r.at_ms > w) {
            self.raised.pop_front();
        }
        if let Some(e) = &mut self.episode {
            if now_ms - e.last_ms <= w {
                e.last_ms = e.last_ms.max(now_ms);
                return Decision::Join(e.alarm_id);
            }
            self.episode = None;
        }
        if n > 0 {
            self.counts.push_back((now_ms, n));
        }
        let in_window: usize = self.counts.iter().map(|(_, k)| k).sum();
        if self.cfg.accounts > 0 && in_window >= self.cfg.accounts {
            Decision::Open
        } else {
            Decision::Individual
        }
    }

    /// Alarms raised one by one (after [`Decision::Individual`]).
    pub fn raised(&mut self, r: Raised) {
        self.raised.push_back(r);
        // Fewer than the threshold are ever needed; bound it whatever the settings.
        while self.raised.len() > self.cfg.accounts.clamp(1, 100_000) {
            self.raised.pop_front();
        }
    }

    /// The alarms raised one by one within the window, to fold into a new mass loss.
    pub fn take_raised(&mut self) -> Vec<Raised> {
        self.counts.clear();
        self.raised.drain(..).collect()
    }

    /// A mass loss was opened at `now_ms` as `alarm_id`.
    pub fn opened(&mut self, alarm_id: i64, now_ms: i64) {
        self.episode = Some(Episode {
            alarm_id,
            since_ms: now_ms,
            last_ms: now_ms,
            accounts: 0,
            routes: BTreeMap::new(),
        });
    }

    /// Accounts folded into the episode under way at `now_ms`; returns its title now.
    pub fn folded<'a>(&mut self, now_ms: i64, routes: impl Iterator<Item = &'a Option<Route>>) -> Option<String> {
        let e = self.episode.as_mut()?;
        e.last_ms = e.last_ms.max(now_ms);
        for r in routes {
            e.accounts += 1;
            *e.routes.entry(r.clone()).or_default() += 1;
        }
        Some(title(e.accounts, e.since_ms, &e.routes))
    }

    /// The routes of the episode, most accounts first (for its log).
    pub fn breakdown(&self) -> String {
        self.episode.as_ref().map(|e| breakdown(&e.routes)).unwrap_or_default()
    }

    /// The episode's alarm, if one is under way.
    pub fn alarm(&self) -> Option<i64> {
        self.episode.as_ref().map(|e| e.alarm_id)
    }
}

/// The scope of a mass loss: what the accounts whose route is known have in common, or the
/// largest group if nothing.
pub fn scope(routes: &BTreeMap<Option<Route>, usize>) -> String {
    let known: Vec<(&Route, usize)> = routes.iter().filter_map(|(r, n)| r.as_ref().map(|r| (r, *n))).collect();
    let unknown = routes.get(&None).copied().unwrap_or(0);
    let mut parts = Vec::new();
    if let Some((first, _)) = known.first() {
        if known.iter().all(|(r, _)| r.transport == first.transport) {
            parts.push(format!("over {}", first.transport.to_uppercase()));
        }
        if known
            .iter()
            .all(|(r, _)| r.receiver == first.receiver && r.line == first.line)
        {
            parts.push(format!("receiver line {}", first.line_name()));
        }
        if !first.network.is_empty() && known.iter().all(|(r, _)| r.network == first.network) {
            parts.push(format!("network {}", first.network));
        }
        if parts.is_empty() {
            let (top, n) = known.iter().max_by_key(|(_, n)| *n).copied().unwrap_or((first, 0));
            parts.push(format!("several routes, most over {top} ({n})"));
        }
    }
    if unknown > 0 {
        parts.push(format!("route unknown for {unknown}"));
    }
    parts.join(", ")
}

fn title(accounts: usize, since_ms: i64, routes: &BTreeMap<Option<Route>, usize>) -> String {
    format!(
        "Mass communication loss: {accounts} accounts silent since {} ({})",
        crate::clock::rfc3339_ms(since_ms),
        scope(routes)
    )
}

fn breakdown(routes: &BTreeMap<Option<Route>, usize>) -> String {
    let mut v: Vec<(String, usize)> = routes
        .iter()
        .map(|(r, n)| (r.as_ref().map_or("route unknown".into(), Route::to_string), *n))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let shown: Vec<String> = v.iter().take(10).map(|(r, n)| format!("{r}: {n}")).collect();
    let more = v.len().saturating_sub(10);
    if more > 0 {
        format!("{} and {more} more routes", shown.join("; "))
    } else {
        shown.join("; ")
    }
}

/// Open the mass-loss alarm (operator queue, no site); its title is set as accounts fold in.
pub fn open(tx: &Transaction<'_>, priority: u8, now: i64) -> Result<i64, StoreError> {
    let title = "Mass communication loss".to_string();
    let id = alarms::open_or_join(
        tx,
        &AlarmSpec {
            queue: Queue::Operator,
            category: Some(Category::Communication),
            ..AlarmSpec::supervisor("", format!("mass-loss/{now}"), title, priority)
        },
        false,
        now,
    )?
    .id;
    Ok(id)
}

/// Fold accounts into the mass-loss alarm `alarm_id`: one row each, the title updated, one log
/// entry for the lot (which also tells the correlator that the accounts now have something to
/// restore).
pub fn fold(tx: &Transaction<'_>, alarm_id: i64, lost: &[Lost], title: &str, now: i64) -> Result<(), StoreError> {
    let mut ins = tx.prepare_cached(
        "INSERT INTO mass_loss_accounts (alarm_id, account_id, deadline_ms, lost_ms, route)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (alarm_id, account_id) DO UPDATE SET deadline_ms = ?3, lost_ms = ?4, route = ?5,
             restored_ms = NULL",
    )?;
    for l in lost {
        let route = l.route.as_ref().map(Route::to_string).unwrap_or_default();
        ins.execute(params![alarm_id, l.account_id, l.deadline_ms, now, route])?;
    }
    tx.prepare_cached("UPDATE alarms SET title = ?2, last_event_ms = ?3, restored_ms = NULL WHERE id = ?1")?
        .execute(params![alarm_id, title, now])?;
    alarms::log(
        tx,
        alarm_id,
        now,
        "system",
        "accounts_lost",
        &format!("{} more accounts silent; {title}", lost.len()),
    )?;
    Ok(())
}

/// Fold a communication-lost alarm raised on its own before the mass loss was known, if nobody
/// has acknowledged it and its account has not reported since: closed as a duplicate of the
/// mass loss, its account recorded there. Returns whether it was folded.
pub fn fold_raised(
    tx: &Transaction<'_>,
    alarm_id: i64,
    r: &Raised,
    route: Option<&Route>,
    now: i64,
) -> Result<bool, StoreError> {
    let n = tx
        .prepare_cached(
            "UPDATE alarms SET state = 'closed', closed_ms = ?2, closed_by = 'system', disposition = 'duplicate'
             WHERE id = ?1 AND state = 'new' AND restored_ms IS NULL",
        )?
        .execute(params![r.alarm_id, now])?;
    if n == 0 {
        return Ok(false);
    }
    let public: String = tx.query_row("SELECT public_id FROM alarms WHERE id = ?1", [alarm_id], |x| x.get(0))?;
    alarms::log(
        tx,
        r.alarm_id,
        now,
        "system",
        "closed",
        &format!("duplicate: part of the mass communication loss {public}"),
    )?;
    let route = route.map(Route::to_string).unwrap_or_default();
    tx.prepare_cached(
        "INSERT OR IGNORE INTO mass_loss_accounts (alarm_id, account_id, deadline_ms, lost_ms, route)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![alarm_id, r.account_id, r.deadline_ms, r.at_ms, route])?;
    Ok(true)
}

/// Traffic from an account: restore its record in any mass loss; a mass-loss alarm whose every
/// account has reported again is marked restored. Returns how many records were restored.
pub fn restore(tx: &Transaction<'_>, account_id: i64, now: i64) -> Result<usize, StoreError> {
    let alarms_of: Vec<i64> = tx
        .prepare_cached(
            "UPDATE mass_loss_accounts SET restored_ms = ?2 WHERE account_id = ?1 AND restored_ms IS NULL
             RETURNING alarm_id",
        )?
        .query_map(params![account_id, now], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &alarms_of {
        let open: Option<i64> = tx
            .prepare_cached("SELECT 1 FROM mass_loss_accounts WHERE alarm_id = ?1 AND restored_ms IS NULL LIMIT 1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        if open.is_none() {
            let n = tx
                .prepare_cached("UPDATE alarms SET restored_ms = ?2 WHERE id = ?1 AND restored_ms IS NULL")?
                .execute(params![id, now])?;
            if n > 0 {
                alarms::log(
                    tx,
                    *id,
                    now,
                    "system",
                    "restored",
                    "every account of the mass loss reported again",
                )?;
            }
        }
    }
    Ok(alarms_of.len())
}

/// The accounts of a mass-loss alarm, as listed with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MassLossView {
    /// Accounts folded into it.
    pub accounts: i64,
    /// Of those, how many reported again.
    pub restored: i64,
    /// The accounts still silent, the earliest missed deadline first (at most [`SHOWN`]).
    pub silent: Vec<LostAccount>,
}

/// One account of a mass loss.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LostAccount {
    /// Account number.
    pub account: String,
    /// Path (primary, secondary).
    pub path: String,
    /// Its site's reference, if it has a site.
    pub site: Option<String>,
    /// The deadline it missed (RFC 3339).
    pub deadline: String,
    /// The route it last reported over, empty if unknown.
    pub route: String,
}

/// Most silent accounts listed with a mass-loss alarm.
pub const SHOWN: i64 = 200;

/// The mass-loss record of alarm `alarm_id`, if it is a mass-loss alarm.
pub fn view(conn: &rusqlite::Connection, alarm_id: i64) -> rusqlite::Result<Option<MassLossView>> {
    let (accounts, restored): (i64, i64) = conn.query_row(
        "SELECT count(*), count(restored_ms) FROM mass_loss_accounts WHERE alarm_id = ?1",
        [alarm_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if accounts == 0 {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT a.account, a.path, s.ref, m.deadline_ms, m.route
         FROM mass_loss_accounts m JOIN accounts a ON a.id = m.account_id LEFT JOIN sites s ON s.id = a.site_id
         WHERE m.alarm_id = ?1 AND m.restored_ms IS NULL
         ORDER BY m.deadline_ms, a.account LIMIT ?2",
    )?;
    let silent = stmt
        .query_map(params![alarm_id, SHOWN], |r| {
            Ok(LostAccount {
                account: r.get(0)?,
                path: r.get(1)?,
                site: r.get(2)?,
                deadline: crate::clock::rfc3339_ms(r.get(3)?),
                route: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(MassLossView {
        accounts,
        restored,
        silent,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(line: &str, net: &str) -> Option<Route> {
        Some(Route {
            transport: "tcp",
            receiver: "1".into(),
            line: line.into(),
            network: net.into(),
        })
    }

    #[test]
    fn a_mass_loss_starts_at_the_threshold_within_the_window_and_goes_on_while_accounts_keep_going_silent() {
        let mut w = Watcher::new(MassLossConfig {
            accounts: 10,
            window_ms: 60_000,
            priority: 3,
        });
        assert_eq!(w.decide(0, 4), Decision::Individual);
        // 4 + 5 within the window: still below.
        assert_eq!(w.decide(30_000, 5), Decision::Individual);
        // The first 4 are out of the window by now: 5 + 4 = 9.
        assert_eq!(w.decide(61_000, 4), Decision::Individual);
        assert_eq!(w.decide(62_000, 1), Decision::Open);
        w.opened(7, 62_000);
        assert_eq!(w.decide(100_000, 1), Decision::Join(7));
        assert_eq!(w.decide(160_000, 1), Decision::Join(7));
        // A window with no silence ends the episode.
        assert_eq!(w.decide(221_000, 1), Decision::Individual);
    }

    #[test]
    fn folding_can_be_turned_off() {
        let mut w = Watcher::new(MassLossConfig {
            accounts: 0,
            ..MassLossConfig::default()
        });
        assert_eq!(w.decide(0, 100_000), Decision::Individual);
    }

    #[test]
    fn the_scope_names_what_the_accounts_have_in_common() {
        let mut m = BTreeMap::new();
        m.insert(route("1", "10.1.2.0/24"), 30);
        m.insert(route("1", "10.1.2.0/24"), 30);
        assert_eq!(scope(&m), "over TCP, receiver line R1 L1, network 10.1.2.0/24");
        m.insert(route("2", "10.1.2.0/24"), 5);
        m.insert(None, 2);
        assert_eq!(scope(&m), "over TCP, network 10.1.2.0/24, route unknown for 2");
        m.insert(route("3", "192.168.7.0/24"), 40);
        let mut m2 = m.clone();
        m2.insert(
            Some(Route {
                transport: "udp",
                ..route("3", "192.168.7.0/24").expect("r")
            }),
            1,
        );
        assert_eq!(
            scope(&m2),
            "several routes, most over TCP R1 L3 from 192.168.7.0/24 (40), route unknown for 2"
        );
    }
}
