//! Outputs to automation software, driven from a durable outbox.
//!
//! | module | what |
//! |---|---|
//! | [`outbox`] | the writer hook that fills the outbox in the event's transaction; rendering; cursors |
//! | [`surgard`] | the Sur-Gard output: meldkamer as a Sur-Gard receiver, client or server, ACK/NAK, heartbeat |
//! | [`stream`] | the JSON Lines event stream: a file, or TCP subscribers |
//!
//! Every event the store commits gets an outbox row in the same transaction ([`wrap_hook`]),
//! so no event can be committed without it, whatever happens to the outputs. Each output reads
//! the outbox in order from its own cursor, which it moves only after the other side
//! acknowledged (the Sur-Gard ACK byte; the file's `fsync`). A pruning task deletes rows every
//! cursor has passed once they are older than the retention.

pub mod outbox;
pub mod stream;
pub mod surgard;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admission::Listener;
use crate::admission::budget::Budget;
use crate::clock::{Clock, unix_ms};
use crate::config::{AutomationMode, Config, EventStreamMode};
use crate::metrics::Metrics;
use crate::protocol::surgard::Header;
use crate::store::writer::{AfterInsert, WriterHandle};

/// True if some output reads the outbox (and so the outbox must be filled).
pub fn enabled(cfg: &Config) -> bool {
    cfg.automation.mode != AutomationMode::Off || cfg.event_stream.mode != EventStreamMode::Off
}

/// The configured Sur-Gard header (validated with the configuration).
pub fn header(cfg: &Config) -> Header {
    Header::new(&cfg.automation.receiver, &cfg.automation.line).unwrap_or_else(|| Header {
        receiver: "01".into(),
        line: "1".into(),
    })
}

/// The writer hook: `hook`, then the outbox when an output is configured.
pub fn wrap_hook(hook: Box<dyn AfterInsert>, cfg: &Config) -> Box<dyn AfterInsert> {
    if enabled(cfg) {
        Box::new(outbox::Chain(
            hook,
            Box::new(outbox::OutboxHook { header: header(cfg) }),
        ))
    } else {
        hook
    }
}

/// Addresses the outputs listen on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bound {
    /// The Sur-Gard output, in server mode.
    pub automation: Option<SocketAddr>,
    /// The event stream, in TCP mode.
    pub stream: Option<SocketAddr>,
}

/// What the outputs share with the daemon.
pub struct Ctx {
    /// The store writer.
    pub writer: WriterHandle,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Bumped after every commit.
    pub changes: watch::Receiver<u64>,
    /// The audit head, whenever it is published (`verify::published`).
    pub audit_heads: watch::Receiver<Option<stream::AuditHead>>,
}

/// Start the configured outputs (listeners are bound before this returns), their connection
/// caps from `budget`.
pub async fn start(
    cfg: &Config,
    ctx: Ctx,
    budget: &Budget,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Bound, (&'static str, SocketAddr, std::io::Error)> {
    let mut bound = Bound::default();
    if !enabled(cfg) {
        return Ok(bound);
    }
    let db = cfg.store.path.clone();
    let busy = Duration::from_millis(cfg.store.busy_timeout_ms);
    let a = &cfg.automation;
    let connector = match a.mode {
        AutomationMode::Off => None,
        AutomationMode::Client => Some(surgard::Connector::Client(a.connect.clone())),
        AutomationMode::Server => {
            let addr: SocketAddr = a.listen.parse().map_err(|_| {
                (
                    "automation",
                    SocketAddr::from(([0, 0, 0, 0], 0)),
                    std::io::ErrorKind::InvalidInput.into(),
                )
            })?;
            let l = TcpListener::bind(addr).await.map_err(|e| ("automation", addr, e))?;
            bound.automation = l.local_addr().ok();
            let (to_output, connector) = surgard::server();
            let admission = budget.admission(Listener::Automation, ctx.metrics.clone());
            tracker.spawn(surgard::listen(
                l,
                admission,
                to_output,
                cancel.clone(),
                tracker.clone(),
            ));
            Some(connector)
        }
    };
    if let Some(connector) = connector {
        let out = surgard::SurgardOutput {
            header: header(cfg),
            db: db.clone(),
            busy,
            writer: ctx.writer.clone(),
            metrics: ctx.metrics.clone(),
            clock: ctx.clock.clone(),
            changes: ctx.changes.clone(),
            heartbeat: (a.heartbeat_secs > 0).then(|| Duration::from_secs(a.heartbeat_secs)),
            ack_timeout: Duration::from_millis(a.ack_timeout_ms),
            nak_retries: a.nak_retries,
        };
        info!(mode = ?a.mode, connect = %a.connect, listen = ?bound.automation, "Sur-Gard automation output");
        tracker.spawn(surgard::run(out, connector, cancel.clone()));
    }
    let e = &cfg.event_stream;
    let sctx = stream::StreamCtx {
        db: db.clone(),
        busy,
        writer: ctx.writer.clone(),
        metrics: ctx.metrics.clone(),
        clock: ctx.clock.clone(),
        changes: ctx.changes.clone(),
        audit_heads: ctx.audit_heads.clone(),
        heartbeat: (e.heartbeat_secs > 0).then(|| Duration::from_secs(e.heartbeat_secs)),
    };
    match e.mode {
        EventStreamMode::Off => {}
        EventStreamMode::File => {
            tracker.spawn(stream::run_file(sctx, e.file.clone(), cancel.clone()));
        }
        EventStreamMode::Tcp => {
            let addr: SocketAddr = e.listen.parse().map_err(|_| {
                (
                    "event stream",
                    SocketAddr::from(([0, 0, 0, 0], 0)),
                    std::io::ErrorKind::InvalidInput.into(),
                )
            })?;
            let l = TcpListener::bind(addr).await.map_err(|x| ("event stream", addr, x))?;
            bound.stream = l.local_addr().ok();
            info!(listen = ?bound.stream, "JSON Lines event stream");
            let admission = budget.admission(Listener::EventStream, ctx.metrics.clone());
            tracker.spawn(stream::run_tcp(sctx, l, admission, cancel.clone(), tracker.clone()));
        }
    }
    let mut sinks = Vec::new();
    if a.mode != AutomationMode::Off {
        sinks.push(outbox::SINK_SURGARD);
    }
    if e.mode == EventStreamMode::File {
        sinks.push(outbox::SINK_FILE);
    }
    tracker.spawn(prune_every(
        ctx.writer.clone(),
        ctx.clock.clone(),
        sinks,
        a.outbox_retention_hours as i64 * 3_600_000,
        cancel,
    ));
    Ok(bound)
}

/// Delete outbox rows every cursor has passed and that are older than the retention, at
/// start and then every ten minutes.
async fn prune_every(
    writer: WriterHandle,
    clock: Arc<dyn Clock>,
    sinks: Vec<&'static str>,
    retention_ms: i64,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let before = unix_ms(clock.now()) - retention_ms;
        let sinks = sinks.clone();
        match writer.run(move |tx| outbox::prune(tx, &sinks, before)).await {
            Ok(0) => {}
            Ok(n) => info!(rows = n, "outbox: delivered rows past the retention deleted"),
            Err(e) => warn!(error = %e, "outbox: pruning failed"),
        }
    }
}

/// The file of the event stream, if it writes one (for tests and the ready line).
pub fn stream_file(cfg: &Config) -> Option<PathBuf> {
    (cfg.event_stream.mode == EventStreamMode::File).then(|| cfg.event_stream.file.clone())
}
