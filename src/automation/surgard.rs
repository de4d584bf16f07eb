//! The Sur-Gard output: meldkamer speaks to automation software as a Sur-Gard receiver does
//! (`protocols/surgard.md`, "meldkamer as a receiver"). Stop-and-wait: one line, then the
//! automation's one-byte answer.
//!
//! - ACK (0x06): the cursor moves past the line (committed before the next line is sent).
//! - NAK (0x15): the line is sent again, up to `nak_retries` times; the NAK after the last
//!   resend (NAK number `nak_retries + 1` in a row: the fourth with the default 3) skips it,
//!   marked `skipped = 'nak'` in the outbox and counted, so that one line the automation cannot
//!   read does not hold back every later alarm (Sur-Gard receivers also give up after a few NAKs).
//! - No answer within `ack_timeout_ms`: sent again; three timeouts in a row close the
//!   connection (client mode reconnects; in server mode the automation must).
//! - Other bytes are ignored. After a line that needed a retransmission got its ACK, a late
//!   second ACK may still be on its way: the output waits 500 ms and discards what arrives, so
//!   that it is not taken as the answer to the next line.
//! - Idle for `heartbeat_secs`: the heartbeat line, answered like any line. Three heartbeats
//!   without an answer close the connection.
//!
//! Where it starts: the cursor in the database, so after a restart of either side the first
//! line is the first one not acknowledged. A line whose ACK arrived but whose cursor commit
//! did not (meldkamer killed in between) is sent again after the restart: the protocol has no
//! sequence number to tell the automation it is a repeat.
//!
//! Server mode: one automation connection at a time; a new connection replaces the old one
//! (an automation that restarts may leave a half-open connection behind).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::outbox::{self, Row, SINK_SURGARD};
use crate::admission::{self, Admission, Admitted};
use crate::clock::{Clock, unix_ms};
use crate::metrics::Metrics;
use crate::protocol::surgard::{ACK, Header, NAK, encode_heartbeat};
use crate::store::writer::WriterHandle;

/// What the output needs.
pub struct SurgardOutput {
    /// Receiver and line of the heartbeat.
    pub header: Header,
    /// The database (read side).
    pub db: PathBuf,
    /// Busy timeout of the read connection.
    pub busy: Duration,
    /// Cursor updates go through the writer.
    pub writer: WriterHandle,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Clock (cursor timestamps).
    pub clock: Arc<dyn Clock>,
    /// Bumped after every commit.
    pub changes: watch::Receiver<u64>,
    /// Idle time before a heartbeat (`None`: no heartbeats).
    pub heartbeat: Option<Duration>,
    /// Wait for ACK/NAK.
    pub ack_timeout: Duration,
    /// Resends of a line after a NAK; the next NAK in a row skips it.
    pub nak_retries: u32,
}

/// Where connections come from.
pub enum Connector {
    /// Connect to host:port, with backoff.
    Client(String),
    /// Connections accepted by [`listen`].
    Server(mpsc::Receiver<Incoming>),
}

/// A connection from the automation software (server mode), with its place under the caps.
pub struct Incoming {
    stream: TcpStream,
    admitted: Admitted,
}

/// Server mode: accept automation connections under `admission`'s caps and hand them to the
/// output (see [`server`]). Waiting connections keep their place, so at most
/// `[automation] max_connections` are open. The output's end of the channel comes back from
/// [`server`].
pub async fn listen(
    listener: TcpListener,
    admission: Admission,
    to_output: mpsc::Sender<Incoming>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    admission::serve(listener, admission, cancel, tracker, move |stream, peer, admitted| {
        let to_output = to_output.clone();
        async move {
            info!(%peer, "automation software connected");
            // Fails only when the output stopped: the connection is then closed.
            let _ = to_output.send(Incoming { stream, admitted }).await;
        }
    })
    .await;
}

/// Server mode: the channel from [`listen`] to the output.
pub fn server() -> (mpsc::Sender<Incoming>, Connector) {
    let (tx, rx) = mpsc::channel(1);
    (tx, Connector::Server(rx))
}

/// How a session ended.
enum End {
    Cancelled,
    Replaced(Incoming),
    Broken,
}

enum Answer {
    Ack,
    Nak,
    Timeout,
    Closed,
    /// A new automation connection arrived while waiting (server mode).
    Replaced(Incoming),
}

/// Rows fetched per database read.
const BATCH: usize = 256;
/// Consecutive timeouts (lines or heartbeats) before the connection is given up.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;
/// After a retransmitted line is ACKed: how long a late answer is waited for and discarded.
const QUIET: Duration = Duration::from_millis(500);

/// Run `f` on a read connection, off the runtime threads.
async fn read_db<T: Send + 'static>(
    db: PathBuf,
    busy: Duration,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Option<T> {
    match tokio::task::spawn_blocking(move || {
        let conn = crate::store::open_read(&db, busy)?;
        f(&conn)
    })
    .await
    {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            warn!(error = %e, "automation output: reading the outbox failed");
            None
        }
        Err(_) => None,
    }
}

impl SurgardOutput {
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Option<T>> + 'static {
        read_db(self.db.clone(), self.busy, f)
    }

    /// Commit the cursor past `id` (and mark `skipped` rows); false if the writer is gone.
    async fn commit(&self, id: i64, skipped: Vec<(i64, &'static str)>) -> bool {
        let now = unix_ms(self.clock.now());
        self.writer
            .run(move |tx| {
                for (row, why) in &skipped {
                    tx.execute(
                        "UPDATE outbox SET skipped = ?2 WHERE id = ?1",
                        rusqlite::params![row, why],
                    )?;
                }
                outbox::advance(tx, SINK_SURGARD, id, now)
            })
            .await
            .is_ok()
    }
}

/// Run the output until `cancel`.
pub async fn run(mut out: SurgardOutput, connector: Connector, cancel: CancellationToken) {
    // Client mode: no connection ever comes in (the sender stays, so the channel stays open).
    let (_no_sender, mut incoming) = mpsc::channel::<Incoming>(1);
    let client_target = match connector {
        Connector::Client(target) => Some(target),
        Connector::Server(rx) => {
            incoming = rx;
            None
        }
    };
    let mut backoff = Duration::from_millis(200);
    let mut next: Option<Incoming> = None;
    loop {
        // Server mode: the connection's place under the caps, held while it is served.
        let (stream, _admitted) = match next.take() {
            Some(i) => (i.stream, Some(i.admitted)),
            None => match &client_target {
                Some(target) => {
                    let connected = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target.as_str())) => r,
                    };
                    match connected {
                        Ok(Ok(s)) => {
                            info!(target = %target, "connected to the automation software");
                            let _ = s.set_nodelay(true);
                            backoff = Duration::from_millis(200);
                            (s, None)
                        }
                        _ => {
                            debug!(target = %target, "automation software not reachable; retrying");
                            tokio::select! {
                                _ = cancel.cancelled() => return,
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                            continue;
                        }
                    }
                }
                None => tokio::select! {
                    _ = cancel.cancelled() => return,
                    s = incoming.recv() => match s {
                        Some(i) => (i.stream, Some(i.admitted)),
                        None => return,
                    },
                },
            },
        };
        out.metrics.automation_connected.set(1);
        let end = session(&mut out, stream, &mut incoming, &cancel).await;
        out.metrics.automation_connected.set(0);
        match end {
            End::Cancelled => return,
            End::Replaced(s) => {
                info!("a new automation connection replaces the old one");
                next = Some(s);
            }
            End::Broken => {
                if client_target.is_some() {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }
}

/// Discard whatever the automation sent that is not an answer to the line about to go out.
/// False if the connection closed.
fn drain(stream: &TcpStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match stream.try_read(&mut b) {
            Ok(0) => return false,
            Ok(n) => debug!(bytes = n, "automation output: stray bytes discarded"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

async fn answer(stream: &mut TcpStream, incoming: &mut mpsc::Receiver<Incoming>, wait: Duration) -> Answer {
    let deadline = tokio::time::Instant::now() + wait;
    let mut b = [0u8; 1];
    loop {
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.read(&mut b)) => r,
            s = incoming.recv() => match s {
                Some(s) => return Answer::Replaced(s),
                None => tokio::time::timeout_at(deadline, stream.read(&mut b)).await,
            },
        };
        match read {
            Err(_) => return Answer::Timeout,
            Ok(Ok(0)) | Ok(Err(_)) => return Answer::Closed,
            Ok(Ok(_)) => match b[0] {
                ACK => return Answer::Ack,
                NAK => return Answer::Nak,
                other => debug!(
                    byte = other,
                    "automation output: byte that is neither ACK nor NAK ignored"
                ),
            },
        }
    }
}

async fn send(stream: &mut TcpStream, line: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.write_all(line)).await,
        Ok(Ok(()))
    )
}

async fn session(
    out: &mut SurgardOutput,
    mut stream: TcpStream,
    incoming: &mut mpsc::Receiver<Incoming>,
    cancel: &CancellationToken,
) -> End {
    let Some(mut cursor) = out.read(|c| outbox::cursor(c, SINK_SURGARD)).await else {
        return End::Broken;
    };
    let heartbeat = encode_heartbeat(&out.header.heartbeat());
    let mut heartbeat_misses = 0u32;
    loop {
        let Some(rows) = out.read(move |c| outbox::rows_after(c, cursor, BATCH)).await else {
            return End::Broken;
        };
        if let Some(n) = out.read(move |c| outbox::count_after(c, cursor)).await {
            out.metrics.automation_backlog.set(n);
        }
        if rows.is_empty() {
            let idle = async {
                match out.heartbeat {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            // Seen but unread changes count: a commit between the read and this wait wakes it.
            tokio::select! {
                _ = cancel.cancelled() => return End::Cancelled,
                s = incoming.recv() => if let Some(s) = s { return End::Replaced(s) },
                _ = out.changes.changed() => {}
                // A safety net: re-read now and then even without a notification.
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                r = stream.readable() => {
                    if r.is_err() || !drain(&stream) {
                        info!("automation software closed the connection");
                        return End::Broken;
                    }
                }
                _ = idle => {
                    if !drain(&stream) || !send(&mut stream, &heartbeat).await {
                        return End::Broken;
                    }
                    match answer(&mut stream, incoming, out.ack_timeout).await {
                        Answer::Replaced(s) => return End::Replaced(s),
                        Answer::Ack | Answer::Nak => {
                            heartbeat_misses = 0;
                            out.metrics.automation.inc("heartbeat");
                        }
                        Answer::Timeout => {
                            heartbeat_misses += 1;
                            out.metrics.automation.inc("heartbeat_timeout");
                            warn!(misses = heartbeat_misses, "automation software did not answer the heartbeat");
                            if heartbeat_misses >= TIMEOUTS_BEFORE_RECONNECT {
                                return End::Broken;
                            }
                        }
                        Answer::Closed => return End::Broken,
                    }
                }
            }
            continue;
        }
        for row in rows {
            match deliver(out, &mut stream, incoming, &row, cancel).await {
                Delivered::No if cancel.is_cancelled() => return End::Cancelled,
                Delivered::Yes(skipped) => {
                    if !out
                        .commit(row.id, skipped.map(|w| (row.id, w)).into_iter().collect())
                        .await
                    {
                        return End::Broken;
                    }
                    cursor = row.id;
                    heartbeat_misses = 0;
                }
                Delivered::No => return End::Broken,
                Delivered::Replaced(s) => return End::Replaced(s),
            }
            if cancel.is_cancelled() {
                return End::Cancelled;
            }
            if let Ok(s) = incoming.try_recv() {
                return End::Replaced(s);
            }
        }
    }
}

enum Delivered {
    /// Past this row (skipped, and why).
    Yes(Option<&'static str>),
    /// The connection is gone.
    No,
    /// A new connection replaces this one; the row is not delivered.
    Replaced(Incoming),
}

async fn deliver(
    out: &SurgardOutput,
    stream: &mut TcpStream,
    incoming: &mut mpsc::Receiver<Incoming>,
    row: &Row,
    cancel: &CancellationToken,
) -> Delivered {
    let Some(line) = &row.surgard else {
        out.metrics.automation.inc("skipped");
        debug!(id = row.id, "event without a Sur-Gard form skipped");
        return Delivered::Yes(Some("unrepresentable"));
    };
    let mut naks = 0u32;
    let mut timeouts = 0u32;
    let mut resent = false;
    loop {
        if !drain(stream) || !send(stream, line).await {
            return Delivered::No;
        }
        match answer(stream, incoming, out.ack_timeout).await {
            Answer::Replaced(s) => return Delivered::Replaced(s),
            Answer::Ack => {
                out.metrics.automation.inc("ack");
                if resent {
                    tokio::time::sleep(QUIET).await;
                    if !drain(stream) {
                        // Delivered all the same; the next session starts after it.
                        return Delivered::Yes(None);
                    }
                }
                return Delivered::Yes(None);
            }
            Answer::Nak => {
                out.metrics.automation.inc("nak");
                naks += 1;
                if naks > out.nak_retries {
                    out.metrics.automation.inc("skipped");
                    warn!(id = row.id, line = %String::from_utf8_lossy(line), naks,
                        "automation software refused a line again and again; skipped (the event stays stored)");
                    return Delivered::Yes(Some("nak"));
                }
                debug!(id = row.id, naks, "NAK: sending the line again");
            }
            Answer::Timeout => {
                out.metrics.automation.inc("timeout");
                timeouts += 1;
                warn!(
                    id = row.id,
                    timeouts, "no answer from the automation software: sending the line again"
                );
                if timeouts >= TIMEOUTS_BEFORE_RECONNECT {
                    return Delivered::No;
                }
            }
            Answer::Closed => return Delivered::No,
        }
        if cancel.is_cancelled() {
            // Shutting down: the line stays unacknowledged and goes first after the restart.
            return Delivered::No;
        }
        resent = true;
    }
}
