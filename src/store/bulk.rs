//! "Durable now, summed later": values the writer keeps in memory and writes to a summary table
//! in bulk, part by part over consecutive commit groups. The rows they summarise (frames,
//! events, polls) are committed with each group, so a crash loses nothing: the next start
//! rebuilds the summary from the rows after the summary's watermark.
//!
//! Used for the last-seen times (`account_status`, [`super::writer`]) and for the newest event
//! of each account (`account_heads`, [`super::heads`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use super::StoreError;

/// Rows of a bulk write per commit group: the write is spread over consecutive groups, so no
/// commit (and no ACK waiting for it) waits for all of it. Measured: 6,400 `account_status`
/// rows in one commit held up the frames behind it by tens of ms.
pub(crate) const CHUNK: usize = 512;

/// Record in `meta` that every source row up to `id` is summarised (the last part of a bulk
/// write, or a recovery).
pub(crate) fn set_watermark(conn: &Connection, key: &str, id: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, id.to_string()])?;
    Ok(())
}

/// Values waiting for a bulk write, per key, and the bulk write under way.
#[derive(Debug)]
pub(crate) struct Bulk<K> {
    /// How often a bulk write starts.
    pub every: Duration,
    /// Past this many waiting keys the next group starts one anyway.
    pub max_pending: usize,
    /// Per key the largest value noted since the last bulk write started.
    pending: HashMap<K, i64>,
    /// The newest source row (frame or event id) whose value is in `pending`.
    newest: i64,
    started_at: Option<Instant>,
    /// The bulk write under way, if any.
    pub flushing: Option<Rows<K>>,
}

/// A bulk write: the values as they were when it started, sorted by key (neighbouring keys
/// share pages), written part by part.
#[derive(Debug)]
pub(crate) struct Rows<K> {
    pub rows: Vec<(K, i64)>,
    /// Rows before this one are committed.
    pub next: usize,
    /// The watermark once all rows are written: every source row up to it is summarised.
    pub upto: i64,
}

/// One part of a bulk write: the rows to write now, and whether they are the last.
pub(crate) struct Part<'a, K> {
    pub rows: &'a [(K, i64)],
    pub end: usize,
    pub last: bool,
    pub upto: i64,
}

impl<K: Hash + Eq + Ord> Bulk<K> {
    pub fn new(every: Duration, max_pending: usize) -> Self {
        Bulk {
            every,
            max_pending,
            pending: HashMap::new(),
            newest: 0,
            started_at: None,
            flushing: None,
        }
    }

    /// A committed value for `key` (the larger one wins), from source row `source` if any.
    pub fn note(&mut self, key: K, value: i64, source: Option<i64>) {
        let e = self.pending.entry(key).or_insert(value);
        *e = (*e).max(value);
        if let Some(s) = source {
            self.newest = self.newest.max(s);
        }
    }

    fn due(&self) -> bool {
        !self.pending.is_empty()
            && (self.pending.len() >= self.max_pending || self.started_at.is_none_or(|t| t.elapsed() >= self.every))
    }

    /// Start a bulk write of what waits so far, if one is due (or `now`) and none is under
    /// way; later values wait for the next.
    pub fn start(&mut self, now: bool) {
        if self.flushing.is_some() || self.pending.is_empty() || !(now || self.due()) {
            return;
        }
        let mut rows: Vec<(K, i64)> = self.pending.drain().collect();
        rows.sort_unstable();
        self.flushing = Some(Rows {
            rows,
            next: 0,
            upto: self.newest,
        });
        self.started_at = Some(Instant::now());
    }

    /// The next part of the bulk write under way (`all`: the rest).
    pub fn part(&self, all: bool) -> Option<Part<'_, K>> {
        let b = self.flushing.as_ref()?;
        let end = if all {
            b.rows.len()
        } else {
            (b.next + CHUNK).min(b.rows.len())
        };
        Some(Part {
            rows: &b.rows[b.next..end],
            end,
            last: end == b.rows.len(),
            upto: b.upto,
        })
    }

    /// The transaction holding the rows before `end` committed.
    pub fn written(&mut self, end: usize) {
        if let Some(b) = &mut self.flushing {
            if end >= b.rows.len() {
                self.flushing = None;
            } else {
                b.next = end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_write_goes_out_in_parts_and_later_values_wait_for_the_next() {
        let mut b: Bulk<i64> = Bulk::new(Duration::from_secs(3600), 1 << 16);
        for k in (0..(CHUNK as i64 + 10)).rev() {
            b.note(k, 100 + k, Some(k));
        }
        b.note(3, 50, None);
        b.start(false);
        let p = b.part(false).expect("first start is due");
        assert_eq!(p.rows.len(), CHUNK);
        assert_eq!(p.rows[0], (0, 100), "sorted by key");
        assert_eq!(p.rows[3], (3, 103), "the larger value wins");
        assert!(!p.last);
        assert_eq!(p.upto, CHUNK as i64 + 9);
        let end = p.end;
        b.note(7, 1_000, Some(5_000));
        b.start(true);
        b.written(end);
        let p = b.part(false).expect("second part");
        assert_eq!(p.rows.len(), 10);
        assert!(p.last);
        assert_eq!(p.upto, CHUNK as i64 + 9, "a value noted meanwhile is not covered");
        let end = p.end;
        b.written(end);
        assert!(b.part(false).is_none());
        b.start(false);
        assert!(b.part(false).is_none(), "the next write waits for its time");
        b.start(true);
        let p = b.part(true).expect("forced");
        assert_eq!((p.rows, p.upto), (&[(7, 1_000)][..], 5_000));
    }
}
