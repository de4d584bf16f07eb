//! Retention: frames, events and closed alarms older than their periods (`[retention]`) are
//! written to the archive ([`super::archive`]) and then deleted, in small steps that never hold
//! the writer: each step reads at most `batch_rows` rows on a read connection, appends them to
//! the archive (on disk, fsync), and deletes them in one short job through the store writer,
//! which checks again that nothing an open alarm references is among them.
//!
//! What is never pruned: anything an open alarm references (its events, by their alarm link
//! or an `alarm_events` row, and its source frame), events whose automation output is not
//! delivered yet (`outbox`), a frame whose events are still kept, and the audit log (append
//! only, its triggers refuse a delete: `meldkamer audit verify` checks the whole chain from its
//! first row, before and after pruning). Deleting an alarm takes its log, calls, procedure
//! steps, code attempts and event links with it.
//!
//! Polls: [`poll_policy`] says which supervision polls the writer stores at all.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::StoreError;
use super::archive::{Archive, ArchiveError, day_of};
use super::writer::{PollPolicy, WriterHandle};
use crate::clock::{Clock, unix_ms};
use crate::config::{AutomationMode, Config, EventStreamMode};
use crate::metrics::Metrics;

const DAY_MS: i64 = 86_400_000;

/// Which polls the writer stores, from `[retention]`: periodic tests count as polls only while
/// nothing forwards every stored event (the Sur-Gard output, the event stream).
pub fn poll_policy(cfg: &Config) -> PollPolicy {
    let forwarding = cfg.automation.mode != AutomationMode::Off || cfg.event_stream.mode != EventStreamMode::Off;
    PollPolicy {
        sample_ms: (cfg.retention.poll_sample_secs as i64).saturating_mul(1000),
        compact_periodic_tests: cfg.retention.compact_periodic_tests && !forwarding,
    }
}

/// Retention failures.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The archive could not be written: nothing was deleted.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The writer refused or failed the delete.
    #[error("deleting archived rows: {0}")]
    Writer(Arc<StoreError>),
}

impl From<rusqlite::Error> for RetentionError {
    fn from(e: rusqlite::Error) -> Self {
        RetentionError::Store(e.into())
    }
}

/// How long each kind of row is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    /// Frames, ms.
    pub frames_ms: i64,
    /// Events, ms.
    pub events_ms: i64,
    /// Closed alarms (after closing), ms.
    pub alarms_ms: i64,
}

impl Periods {
    /// From `[retention]`.
    pub fn from_config(cfg: &Config) -> Self {
        let d = |days: f64| (days * DAY_MS as f64) as i64;
        Periods {
            frames_ms: d(cfg.retention.frames_days),
            events_ms: d(cfg.retention.events_days),
            alarms_ms: d(cfg.retention.alarms_days),
        }
    }
}

/// The tables pruned, in the order a step looks at them (events before the frames they
/// hold on to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `events`.
    Events,
    /// `frames`.
    Frames,
    /// Closed `alarms` with their dependent rows.
    Alarms,
}

impl Table {
    /// The table's name (archive lines, metrics).
    pub fn as_str(&self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Frames => "frames",
            Table::Alarms => "alarms",
        }
    }
}

/// An event an open alarm (or an undelivered automation output) holds on to.
const EVENT_HELD: &str = "(EXISTS (SELECT 1 FROM alarms a WHERE a.id = e.alarm_id AND a.state <> 'closed')
    OR EXISTS (SELECT 1 FROM alarm_events ae JOIN alarms a ON a.id = ae.alarm_id
               WHERE ae.event_id = e.id AND a.state <> 'closed')
    OR EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id))";

/// A frame whose events are still kept, or that an open alarm names as its source.
const FRAME_HELD: &str = "(EXISTS (SELECT 1 FROM events e WHERE e.frame_id = f.id)
    OR EXISTS (SELECT 1 FROM alarms a WHERE a.source_frame_id = f.id AND a.state <> 'closed'))";

/// A frame kept for as long as an open alarm (or an undelivered output row) needs it: the
/// source of an open alarm, or holding an event that is held. A frame whose events are merely
/// not pruned yet waits for them instead (the scan stops there).
const FRAME_PINNED: &str = "(EXISTS (SELECT 1 FROM alarms a WHERE a.source_frame_id = f.id AND a.state <> 'closed')
    OR EXISTS (SELECT 1 FROM events e WHERE e.frame_id = f.id AND {EVENT_HELD}))";

/// Tables whose rows belong to one alarm and go with it.
const ALARM_CHILDREN: &[&str] = &[
    "alarm_log",
    "alarm_calls",
    "procedure_progress",
    "code_attempts",
    "alarm_events",
];

/// Rows chosen by one step: their ids, and their archive lines per day.
#[derive(Debug, Default)]
pub struct Batch {
    /// Which table.
    pub table: Option<Table>,
    /// Row ids (alarm ids for [`Table::Alarms`]).
    pub ids: Vec<i64>,
    /// Archive lines per UTC day.
    pub lines: BTreeMap<String, Vec<String>>,
    /// Nothing was chosen, but the step only passed over held rows and stopped before the
    /// end of what is due: there may be more after them (the next step goes on).
    pub passed_over: bool,
}

/// At most this many batches of held rows are passed over in one step.
const HELD_ROUNDS: usize = 16;

/// A row as a JSON object: integers, reals and text as they are, blobs as hex (a frame's
/// bytes with any key offered in clear starred out once more), `_`-columns left out.
fn row_json(row: &rusqlite::Row<'_>, names: &[String]) -> Result<Map<String, Value>, rusqlite::Error> {
    let mut m = Map::new();
    for (i, n) in names.iter().enumerate() {
        if n.starts_with('_') {
            continue;
        }
        let v = match row.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(x) => Value::from(x),
            ValueRef::Real(x) => Value::from(x),
            ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) if n == "raw" => Value::from(hex::encode(crate::protocol::frame::redact_key_bytes(b))),
            ValueRef::Blob(b) => Value::from(hex::encode(b)),
        };
        m.insert(n.clone(), v);
    }
    Ok(m)
}

fn line(table: &str, row: Map<String, Value>) -> String {
    let mut o = Map::new();
    o.insert("table".into(), Value::from(table));
    o.insert("row".into(), Value::Object(row));
    Value::Object(o).to_string()
}

/// The pruner: a read connection, the archive, the periods, and how far each table's scan
/// got in this pass (rows before it were pruned or are held).
pub struct Pruner {
    conn: Connection,
    archive: Archive,
    periods: Periods,
    batch: usize,
    after: [i64; 2],
    /// The table the next step looks at first: the tables take turns, so events that keep
    /// coming due do not starve the frames they held on to.
    turn: usize,
}

impl Pruner {
    /// A pruner of the database at `db`.
    pub fn open(
        db: &std::path::Path,
        busy: Duration,
        archive: PathBuf,
        periods: Periods,
        batch: usize,
    ) -> Result<Self, RetentionError> {
        Ok(Pruner {
            conn: super::open_read(db, busy)?,
            archive: Archive::new(archive),
            periods,
            batch: batch.max(1),
            after: [0, 0],
            turn: 0,
        })
    }

    /// Start the scans from the oldest rows again (rows held until now may be free).
    pub fn restart_pass(&mut self) {
        self.after = [0, 0];
    }

    /// Choose the next batch of rows due (none left: an empty batch) and write it to the
    /// archive. The rows are deleted by [`delete`], through the writer.
    pub fn prepare(&mut self, now_ms: i64) -> Result<Batch, RetentionError> {
        const TABLES: [Table; 3] = [Table::Events, Table::Frames, Table::Alarms];
        let mut more = None;
        for k in 0..TABLES.len() {
            let i = (self.turn + k) % TABLES.len();
            let b = match TABLES[i] {
                Table::Events => self.scan(0, Table::Events, now_ms)?,
                Table::Frames => self.scan(1, Table::Frames, now_ms)?,
                Table::Alarms => self.alarms(now_ms)?,
            };
            if !b.ids.is_empty() {
                self.archive.append(&b.lines)?;
                self.turn = i + 1;
                return Ok(b);
            }
            if b.passed_over {
                more = more.or(Some(TABLES[i]));
            }
        }
        Ok(Batch {
            table: more,
            passed_over: more.is_some(),
            ..Batch::default()
        })
    }

    /// The oldest rows of `events` or `frames`, from where the scan got, up to the first row
    /// inside the period; held rows are passed over.
    fn scan(&mut self, slot: usize, table: Table, now_ms: i64) -> Result<Batch, RetentionError> {
        let (cutoff, sql) = match table {
            Table::Events => (
                now_ms - self.periods.events_ms,
                format!("SELECT e.*, {EVENT_HELD} AS _held FROM events e WHERE e.id > ?1 ORDER BY e.id LIMIT ?2"),
            ),
            _ => (
                now_ms - self.periods.frames_ms,
                format!(
                    "SELECT f.*, EXISTS (SELECT 1 FROM events e WHERE e.frame_id = f.id) AS _waits,
                            {} AS _held
                     FROM frames f WHERE f.id > ?1 ORDER BY f.id LIMIT ?2",
                    FRAME_PINNED.replace("{EVENT_HELD}", EVENT_HELD)
                ),
            ),
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let names: Vec<String> = stmt.column_names().map(String::from).collect();
        let id_col = names.iter().position(|n| n == "id").unwrap_or(0);
        let time_col = names.iter().position(|n| n == "received_ms").unwrap_or(0);
        let held_col = names.len() - 1;
        let mut batch = Batch {
            table: Some(table),
            ..Batch::default()
        };
        // Held rows are passed over: look further (at most HELD_ROUNDS reads of a batch per
        // step) until rows are found, the period or a waiting frame is reached, or the table
        // ends. A step that only passed over held rows says so (`passed_over`).
        for _ in 0..HELD_ROUNDS {
            let mut rows = stmt.query(params![self.after[slot], self.batch as i64])?;
            let mut read = 0;
            let mut stop = false;
            while let Some(r) = rows.next()? {
                read += 1;
                let id: i64 = r.get(id_col)?;
                let t: i64 = r.get(time_col)?;
                if t >= cutoff {
                    stop = true;
                    break;
                }
                let held = r.get::<_, bool>(held_col)?;
                if !held && table == Table::Frames && r.get::<_, bool>(held_col - 1)? {
                    // Its events are not pruned yet: the frame waits for them.
                    stop = true;
                    break;
                }
                self.after[slot] = id;
                if held {
                    batch.passed_over = true;
                    continue;
                }
                batch.ids.push(id);
                batch
                    .lines
                    .entry(day_of(t))
                    .or_default()
                    .push(line(table.as_str(), row_json(r, &names)?));
            }
            if stop || read < self.batch || !batch.ids.is_empty() {
                batch.passed_over &= !stop && read == self.batch && batch.ids.is_empty();
                return Ok(batch);
            }
        }
        Ok(batch)
    }

    /// Closed alarms closed before the period, each with its dependent rows in one line.
    fn alarms(&mut self, now_ms: i64) -> Result<Batch, RetentionError> {
        let cutoff = now_ms - self.periods.alarms_ms;
        let mut batch = Batch {
            table: Some(Table::Alarms),
            ..Batch::default()
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT * FROM alarms WHERE state = 'closed' AND closed_ms < ?1 ORDER BY closed_ms LIMIT ?2",
        )?;
        let names: Vec<String> = stmt.column_names().map(String::from).collect();
        let mut found = Vec::new();
        let mut rows = stmt.query(params![cutoff, self.batch as i64])?;
        while let Some(r) = rows.next()? {
            let m = row_json(r, &names)?;
            let id = m.get("id").and_then(Value::as_i64).unwrap_or_default();
            let closed = m.get("closed_ms").and_then(Value::as_i64).unwrap_or_default();
            found.push((id, closed, m));
        }
        drop(rows);
        for (id, closed, mut m) in found {
            for child in ALARM_CHILDREN {
                let mut s = self
                    .conn
                    .prepare_cached(&format!("SELECT * FROM {child} WHERE alarm_id = ?1"))?;
                let names: Vec<String> = s.column_names().map(String::from).collect();
                let rows: Vec<Value> = s
                    .query_map([id], |r| row_json(r, &names))?
                    .map(|r| r.map(Value::Object))
                    .collect::<Result<_, _>>()?;
                m.insert((*child).to_string(), Value::Array(rows));
            }
            batch.ids.push(id);
            batch.lines.entry(day_of(closed)).or_default().push(line("alarms", m));
        }
        Ok(batch)
    }
}

/// Delete a batch the archive holds, in the writer's transaction: each row checked again
/// (an alarm may have opened on it since it was read). Returns the rows deleted.
pub fn delete(tx: &rusqlite::Transaction<'_>, table: Table, ids: &[i64]) -> Result<usize, StoreError> {
    let mut n = 0;
    match table {
        Table::Events => {
            let mut held = tx.prepare_cached(&format!("SELECT {EVENT_HELD} FROM events e WHERE e.id = ?1"))?;
            for &id in ids {
                let h: Option<bool> = held.query_row([id], |r| r.get(0)).ok();
                if h != Some(false) {
                    continue;
                }
                tx.prepare_cached("DELETE FROM alarm_events WHERE event_id = ?1")?
                    .execute([id])?;
                n += tx.prepare_cached("DELETE FROM events WHERE id = ?1")?.execute([id])?;
            }
        }
        Table::Frames => {
            let mut held = tx.prepare_cached(&format!("SELECT {FRAME_HELD} FROM frames f WHERE f.id = ?1"))?;
            for &id in ids {
                let h: Option<bool> = held.query_row([id], |r| r.get(0)).ok();
                if h != Some(false) {
                    continue;
                }
                n += tx.prepare_cached("DELETE FROM frames WHERE id = ?1")?.execute([id])?;
            }
        }
        Table::Alarms => {
            for &id in ids {
                let closed: Option<String> = tx
                    .prepare_cached("SELECT state FROM alarms WHERE id = ?1")?
                    .query_row([id], |r| r.get(0))
                    .ok();
                if closed.as_deref() != Some("closed") {
                    continue;
                }
                for child in ALARM_CHILDREN {
                    tx.prepare_cached(&format!("DELETE FROM {child} WHERE alarm_id = ?1"))?
                        .execute([id])?;
                }
                n += tx.prepare_cached("DELETE FROM alarms WHERE id = ?1")?.execute([id])?;
            }
        }
    }
    Ok(n)
}

/// A pruner shared with the blocking task that reads and archives.
pub type SharedPruner = Arc<std::sync::Mutex<Pruner>>;

/// One step: archive the next batch (off the async threads), then delete it through the
/// writer. Returns the table and the rows deleted, or `None` when nothing is due.
pub async fn step(
    pruner: &SharedPruner,
    writer: &WriterHandle,
    now_ms: i64,
) -> Result<Option<(Table, usize)>, RetentionError> {
    let p = pruner.clone();
    let batch = tokio::task::spawn_blocking(move || p.lock().unwrap_or_else(|e| e.into_inner()).prepare(now_ms))
        .await
        .map_err(|_| RetentionError::Writer(Arc::new(StoreError::WriterGone)))??;
    let Some(table) = batch.table else {
        return Ok(None);
    };
    if batch.ids.is_empty() {
        // Only held rows so far: nothing to delete, more to look at.
        return Ok(Some((table, 0)));
    }
    let ids = batch.ids;
    writer
        .run(move |tx| delete(tx, table, &ids))
        .await
        .map(|n| Some((table, n)))
        .map_err(RetentionError::Writer)
}

/// The background task: steps while rows are due (a pause between steps), then a look every
/// `idle`. Stops at `cancel`. An archive that cannot be written stops pruning (logged; tried
/// again after `idle`): nothing is deleted without its copy.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    pruner: Pruner,
    writer: WriterHandle,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    pause: Duration,
    idle: Duration,
    cancel: CancellationToken,
) {
    let dir = pruner.archive.dir().display().to_string();
    let pruner: SharedPruner = Arc::new(std::sync::Mutex::new(pruner));
    let restart = |p: &SharedPruner| p.lock().unwrap_or_else(|e| e.into_inner()).restart_pass();
    let mut total = 0usize;
    let mut pass_started = tokio::time::Instant::now();
    loop {
        if pass_started.elapsed() >= idle {
            // Rows held until now (an alarm since closed) are looked at again, also while
            // rows keep coming due.
            restart(&pruner);
            pass_started = tokio::time::Instant::now();
        }
        let r = step(&pruner, &writer, unix_ms(clock.now())).await;
        let wait = match r {
            Ok(Some((table, n))) => {
                metrics.pruned.add(table.as_str(), n as u64);
                total += n;
                pause
            }
            Ok(None) => {
                if total > 0 {
                    info!(rows = total, archive = %dir, "retention: rows past their period archived and deleted");
                    total = 0;
                }
                restart(&pruner);
                pass_started = tokio::time::Instant::now();
                idle
            }
            Err(e) => {
                warn!(error = %e, archive = %dir, "retention: pruning stopped for now; nothing was deleted without its archive copy");
                restart(&pruner);
                idle
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::{self, NoHook, WriterConfig};
    use crate::verify::audit::{self, AuditKey, AuditRecord};

    const NOW: i64 = 1_800_000_000_000;
    const OLD: i64 = NOW - 500 * DAY_MS;
    const A_KEY: &str = "00112233445566778899AABBCCDDEEFF";

    fn frame(conn: &Connection, at: i64, raw: &str) -> i64 {
        conn.execute(
            "INSERT INTO frames (received_ms, transport, peer, raw, outcome, account) VALUES (?1, 'tcp', 'p', ?2, 'accepted', '1234')",
            params![at, raw.as_bytes()],
        )
        .expect("frame");
        conn.last_insert_rowid()
    }

    fn event(conn: &Connection, frame_id: i64, at: i64, alarm: Option<i64>) -> i64 {
        conn.execute(
            "INSERT INTO events (frame_id, received_ms, account, seq, code_format, code, qualifier, description, alarm_id)
             VALUES (?1, ?2, '1234', 1, 'sia', 'BA', 'new', 'Burglary', ?3)",
            params![frame_id, at, alarm],
        )
        .expect("event");
        conn.last_insert_rowid()
    }

    fn alarm(conn: &Connection, public: &str, closed_ms: Option<i64>, source_frame: Option<i64>) -> i64 {
        conn.execute(
            "INSERT INTO alarms (public_id, queue, account, join_key, priority, title, opened_ms, last_event_ms, state,
                                 closed_ms, source_frame_id)
             VALUES (?1, 'operator', '1234', ?1, 3, 'Burglary', ?2, ?2, ?3, ?4, ?5)",
            params![
                public,
                closed_ms.unwrap_or(NOW) - 1000,
                if closed_ms.is_some() { "closed" } else { "new" },
                closed_ms,
                source_frame
            ],
        )
        .expect("alarm");
        let id = conn.last_insert_rowid();
        conn.execute(
            "INSERT INTO alarm_log (alarm_id, at_ms, actor, action) VALUES (?1, ?2, 'op1', 'opened')",
            params![id, closed_ms.unwrap_or(NOW) - 1000],
        )
        .expect("log");
        id
    }

    fn ids(conn: &Connection, table: &str) -> Vec<i64> {
        let mut s = conn
            .prepare(&format!("SELECT id FROM {table} ORDER BY id"))
            .expect("ids");
        s.query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// Events that keep coming due do not starve the frames: the tables take turns, a frame
    /// waits (the scan stops) while its events are only not pruned yet, and a frame pinned by
    /// an event an open alarm holds is passed over.
    #[test]
    fn frames_get_their_turn_while_events_keep_coming_due() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("r.db");
        let conn = crate::store::open_write(&db, Duration::from_secs(5)).expect("db");
        let open = alarm(&conn, "A-open", None, None);
        let pinned = frame(&conn, OLD, "pinned");
        event(&conn, pinned, OLD, Some(open));
        let junk = frame(&conn, OLD + 1, "junk");
        let with_event = frame(&conn, OLD + 2, "with event");
        let due = event(&conn, with_event, OLD + 2, None);
        let more: Vec<i64> = (3..6)
            .map(|i| {
                let f = frame(&conn, OLD + i, "later");
                event(&conn, f, OLD + i, None)
            })
            .collect();
        let periods = Periods {
            frames_ms: 90 * DAY_MS,
            events_ms: 400 * DAY_MS,
            alarms_ms: 400 * DAY_MS,
        };
        let mut p = Pruner::open(&db, Duration::from_secs(5), dir.path().join("a"), periods, 1).expect("pruner");
        let mut order = Vec::new();
        for _ in 0..3 {
            let b = p.prepare(NOW).expect("prepare");
            let table = b.table.expect("due");
            let tx = rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate).expect("tx");
            assert_eq!(delete(&tx, table, &b.ids).expect("delete"), 1);
            tx.commit().expect("commit");
            order.push((table, b.ids[0]));
        }
        assert_eq!(
            order,
            vec![(Table::Events, due), (Table::Frames, junk), (Table::Events, more[0])],
            "events, then a frame (the pinned one passed over), while events are still due"
        );
        let b = p.prepare(NOW).expect("prepare");
        assert_eq!(
            (b.table, b.ids),
            (Some(Table::Frames), vec![with_event]),
            "its event is gone now"
        );
        // The next frame's event went in the third step; the one after still has its (due)
        // event: the frame scan waits there.
        let b = p.scan(1, Table::Frames, NOW).expect("scan");
        assert_eq!(b.ids.len(), 1);
        let b = p.scan(1, Table::Frames, NOW).expect("scan");
        assert!(b.ids.is_empty() && !b.passed_over, "{:?}", b.ids);
        conn.execute("DELETE FROM events WHERE id = ?1", [more[1]])
            .expect("pruned");
        let b = p.scan(1, Table::Frames, NOW).expect("scan");
        assert_eq!(b.ids.len(), 1, "then it goes");
    }

    /// An alarm that opens on a row between the archive write and the delete keeps it: the
    /// delete checks again in the writer's transaction.
    #[tokio::test]
    async fn a_row_an_alarm_took_after_it_was_archived_is_not_deleted() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("r.db");
        let conn = crate::store::open_write(&db, Duration::from_secs(5)).expect("db");
        let events: Vec<i64> = (0..3)
            .map(|i| {
                let f = frame(&conn, OLD + i, "old");
                event(&conn, f, OLD + i, None)
            })
            .collect();
        let periods = Periods {
            frames_ms: 90 * DAY_MS,
            events_ms: 400 * DAY_MS,
            alarms_ms: 400 * DAY_MS,
        };
        let mut pruner = Pruner::open(&db, Duration::from_secs(5), dir.path().join("a"), periods, 10).expect("pruner");
        let batch = pruner.prepare(NOW).expect("prepare");
        assert_eq!((batch.table, batch.ids.clone()), (Some(Table::Events), events.clone()));
        let open = alarm(&conn, "A-late", None, None);
        conn.execute(
            "UPDATE events SET alarm_id = ?1 WHERE id = ?2",
            params![open, events[1]],
        )
        .expect("joined");
        let tx = rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate).expect("tx");
        assert_eq!(delete(&tx, Table::Events, &batch.ids).expect("delete"), 2);
        tx.commit().expect("commit");
        assert_eq!(ids(&conn, "events"), vec![events[1]]);
    }

    /// Old frames, events and a closed alarm go, in steps of at most the batch, to the archive
    /// and out of the database; what an open alarm references, an undelivered output row and
    /// everything inside its period stays; the archive reads back row for row (with the key
    /// offered in a frame starred out), verifies, and `verify` names a file that was altered
    /// or removed; the audit chain verifies after pruning.
    #[tokio::test]
    async fn pruning_archives_then_deletes_old_rows_in_steps_and_keeps_what_open_alarms_reference() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("r.db");
        let archive_dir = dir.path().join("archive");
        let conn = crate::store::open_write(&db, Duration::from_secs(5)).expect("db");
        let key = AuditKey::from_bytes([7; 32]);
        let tx = rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Deferred).expect("tx");
        for i in 0..3 {
            audit::append_keyed(
                &tx,
                &key,
                OLD + i,
                &AuditRecord {
                    actor: "op1",
                    action: "login",
                    subject: "operator:op1",
                    detail: "",
                    result: "ok",
                    failures: None,
                },
            )
            .expect("audit");
        }
        tx.commit().expect("commit");
        // Old event frames on two days; one offered a key in clear.
        let open = alarm(&conn, "A-open", None, None);
        let mut old_frames = Vec::new();
        let mut old_events = Vec::new();
        for i in 0..10 {
            let at = OLD + i * (DAY_MS / 4);
            let raw = if i == 0 {
                format!("\n0000\"SIA-DCS\"0001L0#1234[#1234|Nri1/BA01][K{A_KEY}]\r")
            } else {
                format!("frame {i}")
            };
            let f = frame(&conn, at, &raw);
            old_frames.push(f);
            old_events.push(event(&conn, f, at, (i == 3).then_some(open)));
        }
        conn.execute(
            "INSERT INTO alarm_events (alarm_id, event_id) VALUES (?1, ?2)",
            params![open, old_events[4]],
        )
        .expect("link");
        conn.execute(
            "UPDATE alarms SET source_frame_id = ?1 WHERE id = ?2",
            params![old_frames[5], open],
        )
        .expect("source");
        conn.execute(
            "INSERT INTO outbox (event_id, created_ms, json) VALUES (?1, ?2, '{}')",
            params![old_events[6], OLD],
        )
        .expect("outbox");
        // Frames without events just past the frame period, and recent traffic.
        let garbage: Vec<i64> = (0..2).map(|i| frame(&conn, NOW - 91 * DAY_MS + i, "junk")).collect();
        let recent_frame = frame(&conn, NOW - DAY_MS, "recent");
        let recent_event = event(&conn, recent_frame, NOW - DAY_MS, None);
        let closed_old = alarm(&conn, "A-closed-old", Some(OLD), None);
        conn.execute(
            "INSERT INTO alarm_events (alarm_id, event_id) VALUES (?1, ?2)",
            params![closed_old, old_events[7]],
        )
        .expect("link");
        let closed_recent = alarm(&conn, "A-closed-recent", Some(NOW - 10 * DAY_MS), None);
        drop(conn);

        let (w, join) = writer::start(
            WriterConfig {
                path: db.clone(),
                queue_depth: 16,
                max_batch: 8,
                busy_timeout: Duration::from_secs(5),
                retransmission_window: Duration::from_secs(600),
                max_dedupe_entries: 100,
                last_seen: None,
                changes: None,
                wal: Default::default(),
                status_flush: writer::STATUS_FLUSH_EVERY,
                polls: PollPolicy::default(),
            },
            NOW,
            Arc::new(Metrics::default()),
            Box::new(NoHook),
        )
        .expect("writer");
        let periods = Periods {
            frames_ms: 90 * DAY_MS,
            events_ms: 400 * DAY_MS,
            alarms_ms: 400 * DAY_MS,
        };
        let pruner: SharedPruner = Arc::new(std::sync::Mutex::new(
            Pruner::open(&db, Duration::from_secs(5), archive_dir.clone(), periods, 2).expect("pruner"),
        ));
        let mut steps = 0;
        let mut deleted = 0;
        while let Some((_, n)) = step(&pruner, &w, NOW).await.expect("step") {
            assert!(n <= 2, "a step deletes at most the batch, {n}");
            deleted += n;
            steps += 1;
            assert!(steps < 100, "pruning ends");
        }
        // 7 events (not 3, 4, 6), 9 frames (not 3, 4, 6 with their events, 5 the source of the
        // open alarm, plus the 2 past the frame period), 1 alarm.
        assert_eq!(deleted, 7 + 8 + 1);
        assert!(steps >= 8, "in steps: {steps}");

        let conn = Connection::open(&db).expect("db");
        assert_eq!(
            ids(&conn, "events"),
            vec![old_events[3], old_events[4], old_events[6], recent_event]
        );
        assert_eq!(
            ids(&conn, "frames"),
            vec![old_frames[3], old_frames[4], old_frames[5], old_frames[6], recent_frame]
        );
        assert_eq!(ids(&conn, "alarms"), vec![open, closed_recent]);
        let logs: i64 = conn
            .query_row(
                "SELECT count(*) FROM alarm_log WHERE alarm_id = ?1",
                [closed_old],
                |r| r.get(0),
            )
            .expect("log");
        assert_eq!(logs, 0, "the closed alarm's log went with it");
        let report = audit::verify(&conn, Some(&key), &[]).expect("verify");
        assert_eq!(
            (report.rows, report.broken.is_none()),
            (3, true),
            "the audit chain holds after pruning"
        );

        // The archive holds exactly what was deleted, and reads back.
        let report = super::super::archive::verify(&archive_dir).expect("verify");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let mut archived: Vec<(String, i64)> = Vec::new();
        let mut first_raw = None;
        for day in super::super::archive::days(&archive_dir).expect("days") {
            for l in super::super::archive::read_day(&archive_dir, &day).expect("read") {
                let v: Value = serde_json::from_str(&l).expect("json");
                let table = v["table"].as_str().expect("table").to_string();
                let id = v["row"]["id"].as_i64().expect("id");
                if table == "frames" && id == old_frames[0] {
                    first_raw = v["row"]["raw"].as_str().map(String::from);
                }
                if table == "alarms" {
                    assert_eq!(v["row"]["alarm_log"].as_array().map(Vec::len), Some(1));
                }
                archived.push((table, id));
            }
        }
        archived.sort();
        let mut expected: Vec<(String, i64)> = old_events
            .iter()
            .enumerate()
            .filter(|(i, _)| ![3, 4, 6].contains(i))
            .map(|(_, &id)| ("events".to_string(), id))
            .chain(
                old_frames
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| ![3, 4, 5, 6].contains(i))
                    .map(|(_, &id)| ("frames".to_string(), id)),
            )
            .chain(garbage.iter().map(|&id| ("frames".to_string(), id)))
            .chain([("alarms".to_string(), closed_old)])
            .collect();
        expected.sort();
        assert_eq!(archived, expected);
        let raw = hex::decode(first_raw.expect("the frame with the key is archived")).expect("hex");
        let raw = String::from_utf8(raw).expect("text");
        assert!(raw.contains("Nri1/BA01") && !raw.contains(A_KEY), "{raw}");

        // An altered byte, then a missing file, are named.
        let days = super::super::archive::days(&archive_dir).expect("days");
        assert!(days.len() >= 3, "{days:?}");
        let victim = archive_dir.join(super::super::archive::data_name(&days[0]));
        let mut bytes = std::fs::read(&victim).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&victim, &bytes).expect("write");
        let report = super::super::archive::verify(&archive_dir).expect("verify");
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(
            report.problems[0].contains(&victim.display().to_string()) && report.problems[0].contains("altered"),
            "{:?}",
            report.problems
        );
        bytes[mid] ^= 1;
        std::fs::write(&victim, &bytes).expect("write");
        let gone = archive_dir.join(super::super::archive::data_name(&days[1]));
        std::fs::remove_file(&gone).expect("remove");
        let report = super::super::archive::verify(&archive_dir).expect("verify");
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(
            report.problems[0].contains(&gone.display().to_string()) && report.problems[0].contains("missing"),
            "{:?}",
            report.problems
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&archive_dir), 0o700);
            assert_eq!(mode(&victim), 0o600);
            assert_eq!(mode(&archive_dir.join(super::super::archive::INDEX)), 0o600);
        }
        w.close().await;
        drop(w);
        join.join().expect("writer ends");
    }
}
