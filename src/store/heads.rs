//! Each account's events as a chain, newest first: an event row's `account_prev` is the
//! previous event of the same account (the account as the panel sends it). The writer knows
//! every account's newest event in memory and writes it on the event row it inserts, so storing
//! an event touches no page but the event table's last. The newest event per account goes to
//! `account_heads` in bulk (the store's `bulk` module, as last-seen times do); every event up to
//! the `heads_event_id` watermark is reflected there, and readers look for newer ones after it
//! ([`search_sql`]).
//!
//! This replaces an index on `events (account, id)`: with thousands of accounts sending,
//! every event went to its own account's leaf page, and a commit group wrote about one index
//! page per event: a third of the writer's time at 64 connections (BENCHMARKS.md, series L).

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::{Connection, params};

use super::StoreError;
use super::bulk::{Bulk, set_watermark};

/// `meta` key: every committed event up to this id has its account's head in `account_heads`.
pub const HEADS_WATERMARK: &str = "heads_event_id";

/// Most accounts waiting for the bulk write; past it the next group writes them.
const MAX_PENDING: usize = 1 << 16;

/// An account's events, newest first, at most `?2` (1…1000): found from its head (the newer of
/// `account_heads` and the events after the watermark) along `account_prev`. Parameters:
/// `?1` account, `?2` limit. Selects from `events e`; the caller names the columns in
/// `{cols}`.
pub fn search_sql(cols: &str) -> String {
    format!(
        "WITH RECURSIVE head(id) AS (
             SELECT max(h) FROM (
                 SELECT event_id AS h FROM account_heads WHERE account = ?1
                 UNION ALL
                 SELECT max(id) FROM events
                 WHERE id > (SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{HEADS_WATERMARK}')
                   AND account = ?1)
         ), chain(id, n) AS (
             SELECT id, 1 FROM head WHERE id IS NOT NULL
             UNION ALL
             SELECT e.account_prev, c.n + 1 FROM chain c JOIN events e ON e.id = c.id
             WHERE e.account_prev IS NOT NULL AND c.n < ?2
         )
         SELECT {cols} FROM events e WHERE e.id IN (SELECT id FROM chain) ORDER BY e.id DESC LIMIT ?2"
    )
}

/// The writer's view of every account's newest event.
#[derive(Debug)]
pub struct AccountHeads {
    /// Newest committed event per account.
    heads: HashMap<String, i64>,
    /// Heads of the commit group being written: kept only if it commits.
    group: HashMap<String, i64>,
    /// Committed heads not yet in `account_heads`.
    backlog: Bulk<String>,
}

/// What one part of a bulk write did, applied once its transaction committed.
#[derive(Debug, Clone, Copy)]
pub struct HeadsStep(usize);

impl AccountHeads {
    /// Load the heads: `account_heads`, then the events committed after the watermark (a crash
    /// or kill left them unwritten; they wait for the next bulk write).
    pub fn load(conn: &Connection, every: Duration) -> Result<Self, StoreError> {
        let mut heads: HashMap<String, i64> = HashMap::new();
        let mut stmt = conn.prepare("SELECT account, event_id FROM account_heads")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (a, id) = row?;
            heads.insert(a, id);
        }
        let mut backlog = Bulk::new(every, MAX_PENDING);
        let mut stmt = conn.prepare(&format!(
            "SELECT account, max(id) FROM events
             WHERE id > ifnull((SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{HEADS_WATERMARK}'), 0)
             GROUP BY account"
        ))?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (a, id) = row?;
            let e = heads.entry(a.clone()).or_insert(id);
            *e = (*e).max(id);
            backlog.note(a, id, Some(id));
        }
        Ok(AccountHeads {
            heads,
            group: HashMap::new(),
            backlog,
        })
    }

    /// The newest event of `account` so far, in this group or committed.
    pub fn newest(&self, account: &str) -> Option<i64> {
        self.group.get(account).or_else(|| self.heads.get(account)).copied()
    }

    /// Events of the group being written (in order), once their frame is stored.
    pub fn stage<'a>(&mut self, events: impl IntoIterator<Item = (&'a str, i64)>) {
        for (account, id) in events {
            match self.group.get_mut(account) {
                Some(v) => *v = id,
                None => {
                    self.group.insert(account.to_owned(), id);
                }
            }
        }
    }

    /// The group did not commit: forget what it staged.
    pub fn discard(&mut self) {
        self.group.clear();
    }

    /// The group committed.
    pub fn committed(&mut self) {
        for (account, id) in self.group.drain() {
            match self.heads.get_mut(&account) {
                Some(v) => *v = id,
                None => {
                    self.heads.insert(account.clone(), id);
                }
            }
            self.backlog.note(account, id, Some(id));
        }
    }

    /// Start a bulk write if one is due (or `now`).
    pub fn start(&mut self, now: bool) {
        self.backlog.start(now);
    }

    /// Write the next part of the bulk write under way (`all`: the rest) in the caller's
    /// transaction; the last part moves the watermark.
    pub fn write(&self, tx: &Connection, all: bool) -> Result<Option<HeadsStep>, StoreError> {
        let Some(part) = self.backlog.part(all) else {
            return Ok(None);
        };
        let mut stmt = tx.prepare_cached(
            "INSERT INTO account_heads (account, event_id) VALUES (?1, ?2)
             ON CONFLICT (account) DO UPDATE SET event_id = max(event_id, excluded.event_id)",
        )?;
        for (account, id) in part.rows {
            stmt.execute(params![account, id])?;
        }
        if part.last {
            set_watermark(tx, HEADS_WATERMARK, part.upto)?;
        }
        Ok(Some(HeadsStep(part.end)))
    }

    /// The transaction holding `step` committed.
    pub fn written(&mut self, step: HeadsStep) {
        self.backlog.written(step.0);
    }
}
