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

use std::collections::{BTreeMap, HashMap, VecDeque};

use rusqlite::{OptionalExtension, Transaction, params};

use super::alarms::{self, AlarmSpec, Queue};
use crate::protocol::codes::Category;
use crate::store::StoreError;
pub use crate::store::writer::ReceiverLine;
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
    /// A mass loss of one receiver line: this share (percent) of the accounts last heard over
    /// the line silent within the window; 0 turns it off.
    pub line_percent: u8,
    /// ... and at least this many accounts (a line of two is not a mass loss when one is
    /// silent).
    pub line_min_accounts: usize,
}

impl Default for MassLossConfig {
    fn default() -> Self {
        MassLossConfig {
            accounts: 50,
            window_ms: 120_000,
            priority: 3,
            line_percent: 20,
            line_min_accounts: 5,
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

/// What a mass loss covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Many accounts, whatever their line (`mass_loss_accounts`).
    All,
    /// A share of the accounts of one receiver line (`mass_loss_line_percent`).
    Line(ReceiverLine),
}

/// What to do with the silence of one account noticed in a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Its own alarm.
    Individual,
    /// Open a mass-loss alarm of this scope and fold it (and the unacknowledged alarms of the
    /// window in that scope) into it.
    Open(Scope),
    /// Fold it into the mass-loss alarm already open (`alarm_id`).
    Join(i64),
}

/// A communication-lost alarm raised one by one, remembered for a window in case a mass loss
/// follows.
#[derive(Debug, Clone)]
pub struct Raised {
    /// When.
    pub at_ms: i64,
    /// The account.
    pub account_id: i64,
    /// Its alarm.
    pub alarm_id: i64,
    /// The deadline it missed.
    pub deadline_ms: i64,
    /// The receiver line it was last heard over, if known.
    pub line: Option<ReceiverLine>,
}

/// The mass-loss state of the supervisor: recent silences and the episodes under way.
#[derive(Debug, Default)]
pub struct Watcher {
    cfg: MassLossConfig,
    /// Silences noticed within the window and not folded: (when, receiver line, how many).
    recent: VecDeque<(i64, Option<ReceiverLine>, usize)>,
    /// Alarms raised one by one within the window.
    raised: VecDeque<Raised>,
    /// The episodes under way: at most one of all lines, one per receiver line.
    episodes: Vec<Episode>,
}

#[derive(Debug)]
struct Episode {
    alarm_id: i64,
    scope: Scope,
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

    /// Silences noticed at `now_ms`, of accounts last heard over `lines` (one each): for each,
    /// its own alarm, a new mass loss, or one under way. `totals`: the accounts last heard over
    /// each receiver line ([`crate::store::writer::Routes::line_totals`]).
    pub fn decide(
        &mut self,
        now_ms: i64,
        lines: &[Option<ReceiverLine>],
        totals: &HashMap<ReceiverLine, usize>,
    ) -> Vec<Decision> {
        let w = self.cfg.window_ms;
        self.recent.retain(|(t, _, _)| now_ms - t <= w);
        self.raised.retain(|r| now_ms - r.at_ms <= w);
        self.episodes.retain(|e| now_ms - e.last_ms <= w);
        let mut out = vec![Decision::Individual; lines.len()];
        let mut pending = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            // The episode of its line first, then the one of all lines.
            let of_line = line
                .as_ref()
                .and_then(|l| self.episodes.iter().position(|e| e.scope == Scope::Line(l.clone())));
            let episode = of_line.or_else(|| self.episodes.iter().position(|e| e.scope == Scope::All));
            match episode.and_then(|k| self.episodes.get_mut(k)) {
                Some(e) => {
                    e.last_ms = e.last_ms.max(now_ms);
                    out[i] = Decision::Join(e.alarm_id);
                }
                None => pending.push(i),
            }
        }
        if pending.is_empty() {
            return out;
        }
        let mut per_line: BTreeMap<Option<&ReceiverLine>, usize> = BTreeMap::new();
        for &i in &pending {
            *per_line.entry(lines[i].as_ref()).or_default() += 1;
        }
        for (line, n) in &per_line {
            self.recent.push_back((now_ms, line.cloned(), *n));
        }
        let in_window: usize = self.recent.iter().map(|(_, _, n)| n).sum();
        if self.cfg.accounts > 0 && in_window >= self.cfg.accounts {
            for &i in &pending {
                out[i] = Decision::Open(Scope::All);
            }
            return out;
        }
        if self.cfg.line_percent == 0 {
            return out;
        }
        for line in per_line.keys().flatten() {
            let silent: usize = self
                .recent
                .iter()
                .filter(|(_, l, _)| l.as_ref() == Some(*line))
                .map(|(_, _, n)| n)
                .sum();
            let total = totals.get(*line).copied().unwrap_or(0).max(silent);
            if silent >= self.cfg.line_min_accounts.max(1)
                && silent.saturating_mul(100) >= usize::from(self.cfg.line_percent).saturating_mul(total)
            {
                for &i in &pending {
                    if lines[i].as_ref() == Some(*line) {
                        out[i] = Decision::Open(Scope::Line((*line).clone()));
                    }
                }
            }
        }
        out
    }

    /// Alarms raised one by one (after [`Decision::Individual`]).
    pub fn raised(&mut self, r: Raised) {
        self.raised.push_back(r);
        // Fewer than the threshold are ever needed; bound it whatever the settings.
        while self.raised.len() > self.cfg.accounts.clamp(1, 100_000) {
            self.raised.pop_front();
        }
    }

    /// The alarms raised one by one within the window that a new mass loss of `scope` takes
    /// (all of them, or those of its line); the silences it counted are forgotten.
    pub fn take_raised(&mut self, scope: &Scope) -> Vec<Raised> {
        match scope {
            Scope::All => {
                self.recent.clear();
                self.raised.drain(..).collect()
            }
            Scope::Line(line) => {
                self.recent.retain(|(_, l, _)| l.as_ref() != Some(line));
                let (taken, kept): (Vec<Raised>, Vec<Raised>) =
                    self.raised.drain(..).partition(|r| r.line.as_ref() == Some(line));
                self.raised = kept.into();
                taken
            }
        }
    }

    /// A mass loss of `scope` was opened at `now_ms` as `alarm_id`.
    pub fn opened(&mut self, alarm_id: i64, scope: Scope, now_ms: i64) {
        self.episodes.push(Episode {
            alarm_id,
            scope,
            since_ms: now_ms,
            last_ms: now_ms,
            accounts: 0,
            routes: BTreeMap::new(),
        });
    }

    /// Accounts folded into the episode of `alarm_id` at `now_ms`; returns its title now.
    pub fn folded<'a>(
        &mut self,
        alarm_id: i64,
        now_ms: i64,
        routes: impl Iterator<Item = &'a Option<Route>>,
        totals: &HashMap<ReceiverLine, usize>,
    ) -> Option<String> {
        let e = self.episodes.iter_mut().find(|e| e.alarm_id == alarm_id)?;
        e.last_ms = e.last_ms.max(now_ms);
        for r in routes {
            e.accounts += 1;
            *e.routes.entry(r.clone()).or_default() += 1;
        }
        Some(title(e, totals))
    }

    /// The routes of the episode of `alarm_id`, most accounts first (for its log).
    pub fn breakdown(&self, alarm_id: i64) -> String {
        self.episodes
            .iter()
            .find(|e| e.alarm_id == alarm_id)
            .map(|e| breakdown(&e.routes))
            .unwrap_or_default()
    }
}

/// `8 of 10 accounts (80 %)`: `n` of the `total` accounts last heard over a line.
fn share(n: usize, total: usize) -> String {
    let total = total.max(n);
    format!("{n} of {total} accounts ({} %)", n * 100 / total.max(1))
}

/// The scope of a mass loss: what the accounts whose route is known have in common, or the
/// largest group if nothing. A receiver line they all share is named with the share of its
/// accounts that are silent (`totals`: the accounts last heard over each line), unless the
/// title names it already (`line_named`).
pub fn scope(
    routes: &BTreeMap<Option<Route>, usize>,
    totals: &HashMap<ReceiverLine, usize>,
    line_named: bool,
) -> String {
    let known: Vec<(&Route, usize)> = routes.iter().filter_map(|(r, n)| r.as_ref().map(|r| (r, *n))).collect();
    let unknown = routes.get(&None).copied().unwrap_or(0);
    let mut parts = Vec::new();
    if let Some((first, _)) = known.first() {
        if known.iter().all(|(r, _)| r.transport == first.transport) {
            parts.push(format!("over {}", first.transport.to_uppercase()));
        }
        let one_line = known
            .iter()
            .all(|(r, _)| r.receiver == first.receiver && r.line == first.line);
        if one_line && !line_named {
            let line = first.receiver_line();
            let n: usize = known.iter().map(|(_, n)| n).sum();
            match totals.get(&line) {
                Some(&total) => parts.push(format!("receiver line {line}: {}", share(n, total))),
                None => parts.push(format!("receiver line {line}")),
            }
        }
        if !first.network.is_empty() && known.iter().all(|(r, _)| r.network == first.network) {
            parts.push(format!("network {}", first.network));
        }
        if parts.is_empty() && !one_line {
            let (top, n) = known.iter().max_by_key(|(_, n)| *n).copied().unwrap_or((first, 0));
            parts.push(format!("several routes, most over {top} ({n})"));
        }
    }
    if unknown > 0 {
        parts.push(format!("route unknown for {unknown}"));
    }
    parts.join(", ")
}

fn title(e: &Episode, totals: &HashMap<ReceiverLine, usize>) -> String {
    let since = crate::clock::rfc3339_ms(e.since_ms);
    match &e.scope {
        Scope::All => format!(
            "Mass communication loss: {} accounts silent since {since} ({})",
            e.accounts,
            scope(&e.routes, totals, false)
        ),
        Scope::Line(line) => {
            let total = totals.get(line).copied().unwrap_or(e.accounts);
            let rest = scope(&e.routes, totals, true);
            format!(
                "Mass communication loss on receiver line {line}: {} silent since {since}{}",
                share(e.accounts, total),
                if rest.is_empty() {
                    String::new()
                } else {
                    format!(" ({rest})")
                }
            )
        }
    }
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

/// Open the mass-loss alarm of `scope` (operator queue, no site); its title is set as accounts
/// fold in.
pub fn open(tx: &Transaction<'_>, scope: &Scope, priority: u8, now: i64) -> Result<i64, StoreError> {
    let (title, key) = match scope {
        Scope::All => ("Mass communication loss".to_string(), format!("mass-loss/{now}")),
        Scope::Line(line) => (
            format!("Mass communication loss on receiver line {line}"),
            format!("mass-loss/{now}/line/{}/{}", line.receiver, line.line),
        ),
    };
    let id = alarms::open_or_join(
        tx,
        &AlarmSpec {
            queue: Queue::Operator,
            category: Some(Category::Communication),
            ..AlarmSpec::supervisor("", key, title, priority)
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

    fn line(l: &str) -> Option<ReceiverLine> {
        Some(ReceiverLine {
            receiver: "1".into(),
            line: l.into(),
        })
    }

    /// `n` silences, all of accounts last heard over `l`.
    fn on(l: &str, n: usize) -> Vec<Option<ReceiverLine>> {
        vec![line(l); n]
    }

    fn cfg(accounts: usize, line_percent: u8) -> MassLossConfig {
        MassLossConfig {
            accounts,
            window_ms: 60_000,
            priority: 3,
            line_percent,
            line_min_accounts: 5,
        }
    }

    #[test]
    fn a_mass_loss_starts_at_the_threshold_within_the_window_and_goes_on_while_accounts_keep_going_silent() {
        let mut w = Watcher::new(cfg(10, 0));
        let none = HashMap::new();
        let all = |d: Vec<Decision>| {
            let first = d[0].clone();
            assert!(d.iter().all(|x| *x == first), "{d:?}");
            first
        };
        assert_eq!(all(w.decide(0, &on("1", 4), &none)), Decision::Individual);
        // 4 + 5 within the window: still below.
        assert_eq!(all(w.decide(30_000, &on("2", 5), &none)), Decision::Individual);
        // The first 4 are out of the window by now: 5 + 4 = 9.
        assert_eq!(all(w.decide(61_000, &on("1", 4), &none)), Decision::Individual);
        assert_eq!(all(w.decide(62_000, &[None], &none)), Decision::Open(Scope::All));
        w.opened(7, Scope::All, 62_000);
        assert_eq!(all(w.decide(100_000, &on("3", 1), &none)), Decision::Join(7));
        assert_eq!(all(w.decide(160_000, &on("1", 1), &none)), Decision::Join(7));
        // A window with no silence ends the episode.
        assert_eq!(all(w.decide(221_000, &on("1", 1), &none)), Decision::Individual);
    }

    /// A receiver line with few accounts never reaches the count of a mass loss; a share of
    /// its accounts does, and only its accounts are folded.
    #[test]
    fn a_share_of_one_receiver_line_is_a_mass_loss_of_that_line() {
        let totals: HashMap<ReceiverLine, usize> = [(line("1"), 100), (line("2"), 10), (line("3"), 2)]
            .into_iter()
            .filter_map(|(l, n)| Some((l?, n)))
            .collect();
        let mut w = Watcher::new(cfg(50, 20));
        // 4 of the 10 of line 2: a share, but fewer than the minimum of 5.
        assert!(
            w.decide(0, &on("2", 4), &totals)
                .iter()
                .all(|d| *d == Decision::Individual)
        );
        // 9 of the 100 of line 1 (under 20 %), and the fifth of line 2 (5 of 10, 50 %) at once.
        let mut lines = on("1", 9);
        lines.push(line("2"));
        let d = w.decide(1_000, &lines, &totals);
        assert!(d[..9].iter().all(|d| *d == Decision::Individual), "{d:?}");
        assert_eq!(d[9], Decision::Open(Scope::Line(line("2").expect("line"))));
        // The alarms raised one by one on line 2 go with it, those of line 1 stay.
        for (i, l) in [(1, "2"), (2, "1"), (3, "2")] {
            w.raised(Raised {
                at_ms: 0,
                account_id: i,
                alarm_id: 100 + i,
                deadline_ms: 0,
                line: line(l),
            });
        }
        let taken: Vec<i64> = w
            .take_raised(&Scope::Line(line("2").expect("line")))
            .iter()
            .map(|r| r.account_id)
            .collect();
        assert_eq!(taken, [1, 3]);
        w.opened(8, Scope::Line(line("2").expect("line")), 1_000);
        let title = w
            .folded(8, 1_000, vec![route("2", "10.9.8.0/24"); 5].iter(), &totals)
            .expect("episode");
        assert_eq!(
            title,
            "Mass communication loss on receiver line R1 L2: 5 of 10 accounts (50 %) silent since \
             1970-01-01T00:00:01.000Z (over TCP, network 10.9.8.0/24)"
        );
        // More of line 2 join it; line 1 is still counted on its own.
        let d = w.decide(2_000, &[line("2"), line("1")], &totals);
        assert_eq!(d, [Decision::Join(8), Decision::Individual]);
        // Both of a line of 2 are not a mass loss: the minimum.
        assert!(
            w.decide(3_000, &on("3", 2), &totals)
                .iter()
                .all(|d| *d == Decision::Individual)
        );
        // Off: never by share.
        let mut off = Watcher::new(cfg(50, 0));
        assert!(
            off.decide(0, &on("2", 10), &totals)
                .iter()
                .all(|d| *d == Decision::Individual)
        );
    }

    /// The title of a mass loss of all lines names the share of a line they all share.
    #[test]
    fn a_mass_loss_of_one_line_names_its_share() {
        let totals: HashMap<ReceiverLine, usize> = [(line("1").expect("line"), 1200)].into_iter().collect();
        let mut w = Watcher::new(cfg(10, 20));
        w.opened(9, Scope::All, 0);
        let title = w
            .folded(9, 0, vec![route("1", "127.0.0.0/24"); 1001].iter(), &totals)
            .expect("episode");
        assert_eq!(
            title,
            "Mass communication loss: 1001 accounts silent since 1970-01-01T00:00:00.000Z (over TCP, receiver line \
             R1 L1: 1001 of 1200 accounts (83 %), network 127.0.0.0/24)"
        );
    }

    #[test]
    fn folding_can_be_turned_off() {
        let mut w = Watcher::new(MassLossConfig {
            accounts: 0,
            line_percent: 0,
            ..MassLossConfig::default()
        });
        assert!(
            w.decide(0, &vec![None; 100_000], &HashMap::new())
                .iter()
                .all(|d| *d == Decision::Individual)
        );
    }

    #[test]
    fn the_scope_names_what_the_accounts_have_in_common() {
        let mut m = BTreeMap::new();
        m.insert(route("1", "10.1.2.0/24"), 30);
        m.insert(route("1", "10.1.2.0/24"), 30);
        let none = HashMap::new();
        assert_eq!(
            scope(&m, &none, false),
            "over TCP, receiver line R1 L1, network 10.1.2.0/24"
        );
        m.insert(route("2", "10.1.2.0/24"), 5);
        m.insert(None, 2);
        assert_eq!(
            scope(&m, &none, false),
            "over TCP, network 10.1.2.0/24, route unknown for 2"
        );
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
            scope(&m2, &none, false),
            "several routes, most over TCP R1 L3 from 192.168.7.0/24 (40), route unknown for 2"
        );
    }
}
