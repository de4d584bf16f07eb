//! The JSON Lines event stream, from the outbox: one line per event,
//! `{"version":1,"type":"event","seq":N,"event":{…}}` (schema in `protocols/surgard.md`).
//!
//! - **File**: lines are appended and `fsync`ed, then the cursor moves. At start the file's
//!   last complete line says how far it really got (a torn last line from a crash is cut
//!   off), so every event is in the file exactly once, in `seq` order.
//! - **TCP**: subscribers connect to `listen`. A subscriber may send `{"from": N}` as its
//!   first line within a second to get every event after `seq` N that the outbox still holds
//!   (`outbox_retention_hours`); otherwise it gets events from now on. The first line it
//!   receives is `{"version":1,"type":"hello","from":N,"oldest":M}` (`oldest`: the first
//!   `seq` still held; a subscriber that asked for an older one has missed events). When idle
//!   it gets `{"version":1,"type":"heartbeat","last":N}` every `heartbeat_secs`.
//! - **Audit heads**, both ways: whenever the daemon publishes the audit log's head
//!   (`verify::published`) a line `{"version":1,"type":"audit_head","id":N,"hash":"HEX",
//!   "at":"TIME"}` goes between the event lines (a TCP subscriber also gets the latest one after
//!   `hello`), so a consumer keeps a copy of every head out of the database's reach.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::outbox::{self, SCHEMA_VERSION, SINK_FILE, stream_line};
use crate::admission::{self, Admission};
use crate::clock::{Clock, unix_ms};
use crate::metrics::Metrics;
use crate::store::StoreError;
use crate::store::writer::WriterHandle;

/// What the stream needs.
#[derive(Clone)]
pub struct StreamCtx {
    /// The database (read side).
    pub db: PathBuf,
    /// Busy timeout of read connections.
    pub busy: Duration,
    /// The file sink's cursor goes through the writer.
    pub writer: WriterHandle,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Bumped after every commit.
    pub changes: watch::Receiver<u64>,
    /// The audit head, whenever it is published.
    pub audit_heads: watch::Receiver<Option<AuditHead>>,
    /// Heartbeat period for TCP subscribers.
    pub heartbeat: Option<Duration>,
}

/// A published audit head as the stream carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHead {
    /// The audit row id.
    pub id: i64,
    /// Its hash (MAC).
    pub hash: [u8; 32],
    /// When it was published (Unix ms).
    pub at_ms: i64,
}

impl AuditHead {
    /// `{"version":1,"type":"audit_head","id":N,"hash":"HEX","at":"TIME"}` and a newline.
    pub fn line(&self) -> String {
        format!(
            "{{\"version\":{SCHEMA_VERSION},\"type\":\"audit_head\",\"id\":{},\"hash\":\"{}\",\"at\":\"{}\"}}\n",
            self.id,
            hex::encode(self.hash),
            crate::clock::rfc3339_ms(self.at_ms)
        )
    }
}

/// The next published audit head (pending forever once the publisher is gone).
async fn next_head(rx: &mut watch::Receiver<Option<AuditHead>>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The latest audit head when it is not `sent` yet (and now it is).
fn new_head(rx: &mut watch::Receiver<Option<AuditHead>>, sent: &mut Option<AuditHead>) -> Option<AuditHead> {
    let latest = *rx.borrow_and_update();
    if latest.is_some() && latest != *sent {
        *sent = latest;
        latest
    } else {
        None
    }
}

const BATCH: usize = 512;

impl StreamCtx {
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Option<T> {
        let db = self.db.clone();
        let busy = self.busy;
        match tokio::task::spawn_blocking(move || {
            let conn = crate::store::open_read(&db, busy)?;
            f(&conn)
        })
        .await
        {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                warn!(error = %e, "event stream: reading the outbox failed");
                None
            }
            Err(_) => None,
        }
    }
}

/// The `seq` of the last complete line of a stream file, cutting off a torn last line.
pub fn recover_file(path: &Path) -> std::io::Result<i64> {
    let mut f = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let tail_len = len.min(1 << 20);
    f.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = Vec::with_capacity(tail_len as usize);
    f.read_to_end(&mut tail)?;
    let complete = match tail.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None => 0,
    };
    if complete < tail.len() {
        // A line without its newline was being written when the process died: drop it (its
        // event is written again from the outbox).
        let keep = len - (tail.len() - complete) as u64;
        f.set_len(keep)?;
        f.sync_all()?;
        warn!(path = %path.display(), cut = tail.len() - complete, "event stream file: torn last line removed");
    }
    // The last line with a `seq` (audit head lines have none).
    Ok(tail[..complete]
        .split(|b| *b == b'\n')
        .rev()
        .find_map(|l| {
            serde_json::from_slice::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("seq").and_then(serde_json::Value::as_i64))
        })
        .unwrap_or(0))
}

/// Append the outbox to `path` until `cancel`.
pub async fn run_file(mut ctx: StreamCtx, path: PathBuf, cancel: CancellationToken) {
    let p = path.clone();
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<(i64, std::fs::File)> {
        let seq = recover_file(&p)?;
        let f = crate::hardening::private_file().create(true).append(true).open(&p)?;
        Ok((seq, f))
    })
    .await;
    let (file_seq, file) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            warn!(error = %e, path = %path.display(), "event stream: cannot open the file; stream stopped");
            return;
        }
        Err(_) => return,
    };
    let Some(db_cursor) = ctx.read(|c| outbox::cursor(c, SINK_FILE)).await else {
        return;
    };
    let mut cursor = db_cursor.max(file_seq);
    let mut file = Some(file);
    info!(path = %path.display(), from = cursor, "event stream to file");
    let mut head_sent = None;
    loop {
        if let Some(h) = new_head(&mut ctx.audit_heads, &mut head_sent) {
            let Some(mut f) = file.take() else { return };
            let text = h.line();
            match tokio::task::spawn_blocking(move || {
                let r = f.write_all(text.as_bytes()).and_then(|()| f.sync_data());
                (f, r)
            })
            .await
            {
                Ok((f, r)) => {
                    file = Some(f);
                    if let Err(e) = r {
                        warn!(error = %e, path = %path.display(), "event stream: writing the audit head failed");
                    }
                }
                Err(_) => return,
            }
        }
        let Some(rows) = ctx.read(move |c| outbox::rows_after(c, cursor, BATCH)).await else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        };
        if rows.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ctx.changes.changed() => {}
                _ = next_head(&mut ctx.audit_heads) => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        }
        let last = rows.last().map_or(cursor, |r| r.id);
        let n = rows.len();
        let text: String = rows.iter().map(|r| stream_line(r.id, &r.json)).collect();
        let Some(mut f) = file.take() else { return };
        let written = tokio::task::spawn_blocking(move || {
            let r = f.write_all(text.as_bytes()).and_then(|()| f.sync_data());
            (f, r)
        })
        .await;
        match written {
            Ok((f, Ok(()))) => {
                file = Some(f);
                for _ in 0..n {
                    ctx.metrics.stream_lines.inc("file");
                }
                let now = unix_ms(ctx.clock.now());
                if ctx
                    .writer
                    .run(move |tx| outbox::advance(tx, SINK_FILE, last, now))
                    .await
                    .is_err()
                {
                    return;
                }
                cursor = last;
            }
            Ok((_, Err(e))) => {
                // The file may hold part of the batch: start over from what it says.
                warn!(error = %e, path = %path.display(), "event stream: writing the file failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                let p = path.clone();
                match tokio::task::spawn_blocking(move || -> std::io::Result<(i64, std::fs::File)> {
                    let seq = recover_file(&p)?;
                    Ok((
                        seq,
                        crate::hardening::private_file().create(true).append(true).open(&p)?,
                    ))
                })
                .await
                {
                    Ok(Ok((seq, f))) => {
                        file = Some(f);
                        cursor = cursor.max(seq);
                    }
                    _ => return,
                }
            }
            Err(_) => return,
        }
    }
}

/// Serve TCP subscribers until `cancel`, under `admission`'s caps (`[event_stream]
/// max_connections`, `max_connections_per_peer`).
pub async fn run_tcp(
    ctx: StreamCtx,
    listener: TcpListener,
    admission: Admission,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let c = cancel.clone();
    admission::serve(listener, admission, cancel, tracker, move |stream, peer, admitted| {
        let (ctx, cancel) = (ctx.clone(), c.clone());
        async move {
            let _admitted = admitted;
            ctx.metrics.stream_subscribers.add(1);
            subscriber(ctx.clone(), stream, cancel).await;
            ctx.metrics.stream_subscribers.add(-1);
        }
        .instrument(info_span!("stream", %peer))
    })
    .await;
}

async fn subscriber(mut ctx: StreamCtx, stream: TcpStream, cancel: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut first = String::new();
    let asked = match tokio::time::timeout(Duration::from_secs(1), rd.read_line(&mut first)).await {
        Ok(Ok(n)) if n > 0 => serde_json::from_str::<serde_json::Value>(first.trim())
            .ok()
            .and_then(|v| v.get("from").and_then(serde_json::Value::as_i64)),
        _ => None,
    };
    let Some(bounds) = ctx.read(outbox::bounds).await else {
        return;
    };
    let newest = bounds.map_or(0, |b| b.1);
    let oldest = bounds.map_or(newest + 1, |b| b.0);
    let mut pos = asked.map_or(newest, |n| n.max(0));
    let hello = format!("{{\"version\":{SCHEMA_VERSION},\"type\":\"hello\",\"from\":{pos},\"oldest\":{oldest}}}\n");
    if wr.write_all(hello.as_bytes()).await.is_err() {
        return;
    }
    debug!(from = pos, "subscriber connected");
    let write_timeout = Duration::from_secs(30);
    // The latest head first, then every one published while connected.
    let mut head_sent = None;
    let mut closed = Vec::new();
    loop {
        if let Some(h) = new_head(&mut ctx.audit_heads, &mut head_sent)
            && !matches!(
                tokio::time::timeout(write_timeout, wr.write_all(h.line().as_bytes())).await,
                Ok(Ok(()))
            )
        {
            return;
        }
        let Some(rows) = ctx.read(move |c| outbox::rows_after(c, pos, BATCH)).await else {
            return;
        };
        if rows.is_empty() {
            let hb = ctx.heartbeat;
            let idle = async move {
                match hb {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ctx.changes.changed() => {}
                _ = next_head(&mut ctx.audit_heads) => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                r = rd.read_until(b'\n', &mut closed) => {
                    // Subscribers have nothing more to say; EOF or an error ends the stream.
                    if !matches!(r, Ok(n) if n > 0) {
                        return;
                    }
                    closed.clear();
                }
                _ = idle => {
                    let line = format!("{{\"version\":{SCHEMA_VERSION},\"type\":\"heartbeat\",\"last\":{pos}}}\n");
                    if !matches!(tokio::time::timeout(write_timeout, wr.write_all(line.as_bytes())).await, Ok(Ok(()))) {
                        return;
                    }
                }
            }
            continue;
        }
        let n = rows.len();
        let last = rows.last().map_or(pos, |r| r.id);
        let text: String = rows.iter().map(|r| stream_line(r.id, &r.json)).collect();
        if !matches!(
            tokio::time::timeout(write_timeout, wr.write_all(text.as_bytes())).await,
            Ok(Ok(()))
        ) {
            debug!("subscriber too slow or gone");
            return;
        }
        for _ in 0..n {
            ctx.metrics.stream_lines.inc("tcp");
        }
        pos = last;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_finds_the_last_line_and_cuts_a_torn_one() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("s.jsonl");
        assert_eq!(recover_file(&p).expect("missing file"), 0);
        std::fs::write(&p, "").expect("write");
        assert_eq!(recover_file(&p).expect("empty"), 0);
        let a = stream_line(3, "{}");
        let b = stream_line(4, "{\"x\":1}");
        std::fs::write(&p, format!("{a}{b}{{\"version\":1,\"ty")).expect("write");
        assert_eq!(recover_file(&p).expect("torn"), 4);
        assert_eq!(std::fs::read_to_string(&p).expect("read"), format!("{a}{b}"));
        assert_eq!(recover_file(&p).expect("again"), 4);
        // An audit head after the last event: the event's seq still counts.
        let h = AuditHead {
            id: 9,
            hash: [1; 32],
            at_ms: 0,
        }
        .line();
        std::fs::write(&p, format!("{a}{b}{h}")).expect("write");
        assert_eq!(recover_file(&p).expect("head last"), 4);
        let v: serde_json::Value = serde_json::from_str(h.trim_end()).expect("the head line is JSON");
        assert_eq!((v["type"].as_str(), v["id"].as_i64()), (Some("audit_head"), Some(9)));
    }
}
