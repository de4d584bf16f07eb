//! Published audit heads: the newest row id and hash of the audit log, written where the
//! database's writer cannot take them back, so that rows cut off the end or a whole rewritten
//! chain show (`meldkamer audit verify` checks every head published).
//!
//! The daemon publishes the head at start, at shutdown, and whenever `audit.publish_every` rows
//! were added since the last one (looked at once a second), three ways:
//!
//! - an `info` log line `audit head` with `audit_head_id` and `audit_head` (hex) fields, for a
//!   log shipper to carry to another machine;
//! - a `{"version":1,"type":"audit_head",…}` line in the JSON Lines event stream (through the
//!   sink the daemon gives the publisher);
//! - a line `ID:HASH TIME REASON` appended (and synced) to the owner-only heads file
//!   (`audit.heads_file`), which `meldkamer audit verify` reads by default.
//!
//! A head is only ever read and published, never computed here: whether the chain up to it is
//! sound is `audit verify`'s question. At start the publisher checks the last head in the file
//! against the database and logs an error when it no longer matches.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::audit;
use crate::clock::{Clock, rfc3339_ms, unix_ms};
use crate::config::Config;
use crate::store::StoreError;

/// A published head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The row id.
    pub id: i64,
    /// Its hash (the MAC of a keyed row).
    pub hash: [u8; 32],
    /// When it was published (Unix ms).
    pub at_ms: i64,
}

/// Why a head was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The daemon started.
    Start,
    /// `publish_every` rows since the last one.
    Rows,
    /// The daemon stopped.
    Shutdown,
}

impl Reason {
    /// As written in the heads file.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::Rows => "rows",
            Reason::Shutdown => "shutdown",
        }
    }
}

/// One line of the heads file.
pub fn line(h: &Head, reason: Reason) -> String {
    format!(
        "{}:{} {} {}\n",
        h.id,
        hex::encode(h.hash),
        rfc3339_ms(h.at_ms),
        reason.as_str()
    )
}

/// A heads file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadsError {
    /// Reading failed.
    #[error("reading the audit heads file {path}")]
    Io {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A complete line that is not `ID:HASH …`.
    #[error("audit heads file {path}, line {line}: not ID:SHA256HEX")]
    Line {
        /// File.
        path: PathBuf,
        /// 1-based.
        line: usize,
    },
}

/// Every head in a heads file, in order (`None`: there is no such file). A last line without
/// its newline (a write cut short by a crash) is left out.
pub fn read_heads(path: &Path) -> Result<Option<Vec<(i64, [u8; 32])>>, HeadsError> {
    let io = |source| HeadsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut out = Vec::new();
    let mut r = std::io::BufReader::new(f);
    let mut buf = String::new();
    for n in 1.. {
        buf.clear();
        if r.read_line(&mut buf).map_err(io)? == 0 || !buf.ends_with('\n') {
            break;
        }
        let first = buf.split_whitespace().next().unwrap_or_default();
        if first.is_empty() {
            continue;
        }
        let head = audit::parse_anchor(first).ok_or(HeadsError::Line {
            path: path.to_path_buf(),
            line: n,
        })?;
        out.push(head);
    }
    Ok(Some(out))
}

/// Appends heads to the heads file, the log and a sink (the event stream).
pub struct Publisher {
    db: PathBuf,
    busy: Duration,
    heads_file: PathBuf,
    every: i64,
    clock: Arc<dyn Clock>,
    sink: Box<dyn Fn(&Head) + Send + Sync>,
    /// The last head published and a read connection, kept between looks.
    state: Mutex<(Option<i64>, Option<Connection>)>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("heads_file", &self.heads_file)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher for a configuration; `sink` gets every head published (the event stream).
    pub fn new(cfg: &Config, clock: Arc<dyn Clock>, sink: Box<dyn Fn(&Head) + Send + Sync>) -> Publisher {
        Publisher {
            db: cfg.store.path.clone(),
            busy: Duration::from_millis(cfg.store.busy_timeout_ms),
            heads_file: cfg.audit.heads_path(&cfg.store),
            every: i64::try_from(cfg.audit.publish_every).unwrap_or(i64::MAX),
            clock,
            sink,
            state: Mutex::new((None, None)),
        }
    }

    /// The heads file.
    pub fn heads_file(&self) -> &Path {
        &self.heads_file
    }

    fn current(
        conn: &mut Option<Connection>,
        db: &Path,
        busy: Duration,
    ) -> Result<Option<(i64, [u8; 32])>, StoreError> {
        if conn.is_none() {
            *conn = Some(crate::store::open_read(db, busy)?);
        }
        match conn.as_ref() {
            Some(c) => audit::head(c),
            None => Ok(None),
        }
    }

    /// At start: compare the last head in the file with the database (an error line when it no
    /// longer matches), then publish the current head.
    pub fn start(&self) {
        match read_heads(&self.heads_file) {
            Ok(Some(heads)) => {
                if let Some((id, hash)) = heads.last().copied() {
                    self.check_last(id, hash);
                }
            }
            Ok(None) => {}
            Err(e) => error!(error = %e, "audit heads file unreadable; run meldkamer audit verify"),
        }
        self.publish(Reason::Start, true);
    }

    fn check_last(&self, id: i64, hash: [u8; 32]) {
        let found: Result<Option<Vec<u8>>, StoreError> = crate::store::open_read(&self.db, self.busy).and_then(|c| {
            c.query_row("SELECT row_hash FROM audit_log WHERE id = ?1", [id], |r| r.get(0))
                .optional()
                .map_err(StoreError::from)
        });
        match found {
            Ok(Some(h)) if h == hash => {}
            Ok(_) => error!(
                audit_head_id = id,
                heads_file = %self.heads_file.display(),
                "the audit log no longer holds the last published audit head (cut or rewritten); run meldkamer audit verify"
            ),
            Err(e) => warn!(error = %e, "audit heads: reading the audit log failed"),
        }
    }

    /// Publish the current head when `publish_every` rows were added since the last one.
    pub fn publish_if_due(&self) {
        self.publish(Reason::Rows, false);
    }

    /// At shutdown, after the last row is committed.
    pub fn shutdown(&self) {
        self.publish(Reason::Shutdown, true);
    }

    fn publish(&self, reason: Reason, always: bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, conn) = &mut *st;
        let head = match Self::current(conn, &self.db, self.busy) {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                *conn = None;
                warn!(error = %e, "audit heads: reading the audit log failed");
                return;
            }
        };
        if !always && last.is_some_and(|l| head.0 - l < self.every) {
            return;
        }
        if !always && last.is_none() && head.0 < self.every {
            return;
        }
        let h = Head {
            id: head.0,
            hash: head.1,
            at_ms: unix_ms(self.clock.now()),
        };
        if let Err(e) = self.append(&h, reason) {
            error!(error = %e, heads_file = %self.heads_file.display(), "audit heads file: cannot append the head");
        }
        info!(
            audit_head_id = h.id,
            audit_head = %hex::encode(h.hash),
            reason = reason.as_str(),
            "audit head"
        );
        (self.sink)(&h);
        *last = Some(h.id);
    }

    fn append(&self, h: &Head, reason: Reason) -> std::io::Result<()> {
        let mut f = crate::hardening::private_file()
            .create(true)
            .append(true)
            .open(&self.heads_file)?;
        f.write_all(line(h, reason).as_bytes())?;
        f.sync_data()
    }
}

/// Publish heads as rows come in, until `cancel` (the shutdown head is the caller's, after the
/// writer has stopped: [`Publisher::shutdown`]).
pub async fn run(publisher: Arc<Publisher>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let p = publisher.clone();
        if tokio::task::spawn_blocking(move || p.publish_if_due()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_file_lines_round_trip_and_a_torn_last_line_is_left_out() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("h");
        assert_eq!(read_heads(&p).expect("missing"), None);
        let a = Head {
            id: 7,
            hash: [0xab; 32],
            at_ms: 0,
        };
        let b = Head {
            id: 9,
            hash: [0x01; 32],
            at_ms: 1,
        };
        let text = format!("{}{}12:abc", line(&a, Reason::Start), line(&b, Reason::Rows));
        std::fs::write(&p, text).expect("write");
        assert_eq!(
            read_heads(&p).expect("read"),
            Some(vec![(7, [0xab; 32]), (9, [0x01; 32])])
        );
        std::fs::write(&p, "7:zz start\n").expect("write");
        assert!(matches!(read_heads(&p), Err(HeadsError::Line { line: 1, .. })));
    }
}
