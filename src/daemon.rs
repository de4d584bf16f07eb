//! `meldkamer serve`: wires configuration, store, receiver listeners, the account reloader and
//! the metrics endpoint together, and shuts them down in order.
//!
//! Shutdown order: stop accepting; let each connection answer what is already committed and
//! close; then the writer drains its queue (everything queued is committed and its submitter,
//! if still there, answered) and stops. Nothing uncommitted is ever acknowledged.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::admission::budget::{self, Budget, TooFew, Wanted};
use crate::admission::{self, Admission, Caps, Listener};
use crate::clock::{Clock, unix_ms};
use crate::config::{AutomationMode, Config, EventStreamMode};
use crate::correlate::{CorrelateConfig, Correlator, supervision};
use crate::metrics::Metrics;
use crate::operator::listen;
use crate::operator::server::{ApiSettings, ApiState};
use crate::receiver::{Shared, tcp, udp};
use crate::store::writer::{self, AfterInsert, LastSeen, NoHook, WriterConfig};
use crate::store::{self, StoreError, accounts};

/// Why the daemon could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The database could not be opened or migrated.
    #[error("opening the database {path}")]
    Store {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {what} {addr}{}", low_port_hint(addr, source))]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `[store] backend = "postgres"`: the PostgreSQL store can be checked, migrated and filled
    /// (`check-config`, `store copy`, `audit verify`), but not served from yet.
    #[error(
        "serving from PostgreSQL is not built yet (issue 23): with [store] backend = \"postgres\" only \
         `meldkamer check-config`, `meldkamer store copy` and `meldkamer audit verify` work; serve from SQLite \
         (backend = \"sqlite\") until it is"
    )]
    PostgresNotBuilt,
    /// Loading the demo data failed.
    #[error("loading the demo data")]
    Demo(#[source] crate::records::ImportError),
    /// The recording directory could not be created (`serve --record`).
    #[error("cannot record into {path}")]
    Record {
        /// Directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The operator API socket could not be created.
    #[error("cannot create the operator API socket {path}")]
    BindUnix {
        /// Path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Phone code verification could not be set up (pepper file, parameters).
    #[error("phone cancellation codes: {0}")]
    Codes(String),
    /// Retention could not start (the database for its reads).
    #[error("retention: {0}")]
    Retention(String),
    /// The keys file of the DC-09 account keys is unusable or gone (`store.keys_file`).
    #[error("DC-09 account keys")]
    Keys(#[source] crate::store::sealed::SealKeyError),
    /// The audit key could not be loaded (`[audit]`).
    #[error("audit log")]
    Audit(#[source] crate::verify::SetupError),
    /// The operator API TLS configuration is not usable.
    #[error("operator API TLS: {0}")]
    Tls(String),
    /// The descriptor limit is too low.
    #[error(transparent)]
    Descriptors(#[from] TooFew),
}

/// What to do when a port below 1024 is refused: the unit grants no capability by default.
fn low_port_hint(addr: &SocketAddr, source: &std::io::Error) -> &'static str {
    if source.kind() == std::io::ErrorKind::PermissionDenied && (1..1024).contains(&addr.port()) {
        ": a port below 1024 needs the capability CAP_NET_BIND_SERVICE (under systemd: \
         `systemctl edit meldkamer`, AmbientCapabilities=CAP_NET_BIND_SERVICE and \
         CapabilityBoundingSet=CAP_NET_BIND_SERVICE; README.md, Running in production)"
    } else {
        ""
    }
}

/// A running daemon.
pub struct Running {
    /// Bound TCP address.
    pub tcp_addr: Option<SocketAddr>,
    /// Bound UDP address.
    pub udp_addr: Option<SocketAddr>,
    /// Bound metrics address.
    pub metrics_addr: Option<SocketAddr>,
    /// Bound Contact ID input address, TCP (`[cid_input]`).
    pub cid_tcp_addr: Option<SocketAddr>,
    /// Bound Contact ID input address, UDP.
    pub cid_udp_addr: Option<SocketAddr>,
    /// Bound Sur-Gard output address (`[automation]` in server mode).
    pub automation_addr: Option<SocketAddr>,
    /// Bound JSON Lines event stream address (`[event_stream]` in TCP mode).
    pub event_stream_addr: Option<SocketAddr>,
    /// The operator API socket.
    pub api_socket: Option<std::path::PathBuf>,
    /// The operator API TLS address.
    pub api_tls_addr: Option<SocketAddr>,
    /// The operator API state (sessions, settings).
    pub api: Arc<ApiState>,
    /// Shared state (for tests and the operator API).
    pub shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    writer_join: Option<std::thread::JoinHandle<()>>,
    /// The supervisor, when the caller drives it (replay); `None` when a task runs it.
    pub supervisor: Option<supervision::Supervisor>,
    /// The audit key (for pseudonyms of names that must not be logged verbatim).
    pub audit_key: Arc<crate::verify::audit::AuditKey>,
    /// Publishes the audit head; the last one at shutdown.
    pub audit_heads: Arc<crate::verify::published::Publisher>,
    reloader: Reloader,
}

impl Running {
    /// Begin a graceful shutdown.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// The cancellation token (cancel to shut down).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// What a reload (`systemctl reload`, SIGHUP) acts through.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Wait for the shutdown to finish: connections answered and closed, writer drained. Each
    /// part has a deadline ([`SHUTDOWN_TASKS`], [`SHUTDOWN_WRITER`]), so a SIGTERM stops the
    /// daemon within seconds whatever it is doing: every task checks the cancellation between
    /// small steps, and nothing is ACKed before its commit, so what the writer has not
    /// committed by its deadline was never acknowledged (the panels send it again).
    pub async fn wait(mut self) {
        self.cancel.cancelled().await;
        let started = std::time::Instant::now();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_TASKS, self.tracker.wait()).await.is_err() {
            warn!(
                "connections and tasks did not finish within {} s of shutdown; going on without them",
                SHUTDOWN_TASKS.as_secs()
            );
        }
        if let Some(r) = &self.shared.recorder {
            // Every listener task is done: the last UDP traces can be written.
            r.flush_all();
        }
        let join = self.writer_join.take();
        let heads = self.audit_heads.clone();
        // Every connection is done: nothing more will be submitted. The writer commits what
        // is queued and stops.
        let writer = self.shared.writer.clone();
        // Freeing a million accounts' table (and the rest) took seconds of the stop: it is done
        // aside, and the process's exit does not wait for it.
        let _ = std::thread::Builder::new()
            .name("stop-free".into())
            .spawn(move || drop(self));
        let drained = tokio::time::timeout(SHUTDOWN_WRITER, async move {
            writer.close().await;
            if let Some(j) = join {
                let _ = tokio::task::spawn_blocking(move || j.join()).await;
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                "the writer did not finish within {} s of being asked to stop: stopping without it (everything \
                 acknowledged is committed; the last-seen times not yet written are recovered at the next start)",
                SHUTDOWN_WRITER.as_secs()
            );
        } else {
            // The last audit row is committed: its head is the one to keep.
            let published = tokio::task::spawn_blocking(move || heads.shutdown());
            if tokio::time::timeout(SHUTDOWN_TASKS, published).await.is_err() {
                warn!("the last audit head was not published within the shutdown's deadline");
            }
        }
        info!(ms = started.elapsed().as_millis() as u64, "stopped");
    }
}

/// How long a shutdown waits for connections and tasks to finish.
pub const SHUTDOWN_TASKS: Duration = Duration::from_secs(2);
/// How long a shutdown then waits for the writer to commit what is queued and stop.
pub const SHUTDOWN_WRITER: Duration = Duration::from_secs(2);

/// Prepare the database: migrate, load the keys file and seal keys an older version stored in
/// plaintext, load the demo data into an empty one if configured. Returns the account table
/// and the key it was opened with.
pub fn prepare_database(cfg: &Config) -> Result<(accounts::AccountTable, Arc<store::sealed::SealKey>), DaemonError> {
    let path = cfg.store.path.display().to_string();
    let store_err = |source| DaemonError::Store {
        path: path.clone(),
        source,
    };
    let mut conn =
        store::open_write(&cfg.store.path, Duration::from_millis(cfg.store.busy_timeout_ms)).map_err(store_err)?;
    let seal = store::sealed::key_from_config(cfg, &conn, false).map_err(DaemonError::Keys)?;
    let sealed = store::sealed::seal_plaintext_keys(&mut conn, &seal).map_err(store_err)?;
    if sealed > 0 {
        info!(
            accounts = sealed,
            "sealed the account keys an older version stored in plaintext"
        );
    }
    let count: i64 = conn
        .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
        .map_err(|e| store_err(e.into()))?;
    if count == 0 && cfg.store.load_demo_data {
        let records =
            crate::records::parse_toml(crate::records::DEMO_RECORDS, "demo data").map_err(DaemonError::Demo)?;
        let report = crate::records::apply(&mut conn, &records, &seal).map_err(DaemonError::Demo)?;
        info!(accounts = report.accounts, "empty database: demo data loaded");
    }
    if !cfg.records.files.is_empty() {
        // A records file that does not validate must not keep the receiver down: the records
        // stay as they were, and the log says why.
        match crate::reload::parse_records(&cfg.records.files)
            .and_then(|records| crate::records::apply(&mut conn, &records, &seal))
        {
            Ok(report) => info!(files = cfg.records.files.len(), "records files imported: {report}"),
            Err(e) => error!(
                error = %crate::reload::chain(&e),
                "records files not imported; the records stay as they were"
            ),
        }
    }
    let table = accounts::load(&conn, &seal).map_err(store_err)?;
    Ok((table, Arc::new(seal)))
}

/// Start the daemon with correlation and supervision.
pub async fn start(cfg: Config, clock: Arc<dyn Clock>) -> Result<Running, DaemonError> {
    start_recording(cfg, clock, None).await
}

/// [`start`], writing the traffic as fixture traces when `record` is given (`serve --record`).
pub async fn start_recording(
    cfg: Config,
    clock: Arc<dyn Clock>,
    record: Option<crate::receiver::record::RecordOptions>,
) -> Result<Running, DaemonError> {
    if cfg.store.backend == crate::config::StoreBackend::Postgres {
        return Err(DaemonError::PostgresNotBuilt);
    }
    let recorder = match record {
        Some(o) => {
            info!(dir = %o.dir.display(), anonymise = o.anonymise, "recording traffic as fixture traces");
            let path = o.dir.display().to_string();
            let r = crate::receiver::record::Recorder::new(o, clock.now())
                .map_err(|source| DaemonError::Record { path, source })?;
            Some(Arc::new(r))
        }
        None => None,
    };
    if !cfg.alarms.correlate {
        warn!("alarms.correlate = false: events are stored and acknowledged, but no alarms are raised");
        return start_full(cfg, clock, Box::new(NoHook), false, recorder).await;
    }
    let hook = Box::new(Correlator::new(CorrelateConfig {
        supervisor_priority: cfg.alarms.supervisor_priority,
    }));
    start_full(cfg, clock, hook, true, recorder).await
}

/// Start the receiver alone: events are stored and acknowledged, nothing is correlated (for
/// measuring what correlation costs).
pub async fn start_receiver_only(cfg: Config, clock: Arc<dyn Clock>) -> Result<Running, DaemonError> {
    start_with_hook(cfg, clock, Box::new(NoHook), false).await
}

/// Start the daemon. Listeners are bound before this returns.
pub async fn start_with_hook(
    cfg: Config,
    clock: Arc<dyn Clock>,
    hook: Box<dyn AfterInsert>,
    supervise: bool,
) -> Result<Running, DaemonError> {
    start_full(cfg, clock, hook, supervise, None).await
}

async fn start_full(
    cfg: Config,
    clock: Arc<dyn Clock>,
    hook: Box<dyn AfterInsert>,
    supervise: bool,
    recorder: Option<Arc<crate::receiver::record::Recorder>>,
) -> Result<Running, DaemonError> {
    // The pepper first: an unusable one (readable by others, malformed) stops the start before
    // anything listens or writes.
    let hasher = crate::verify::hasher_from_config(&cfg).map_err(|e| DaemonError::Codes(e.to_string()))?;
    let budget = descriptor_budget(&cfg, budget::nofile_limit())?;
    let (table, seal) = prepare_database(&cfg)?;
    let audit_key = crate::verify::audit_key_from_config(&cfg).map_err(DaemonError::Audit)?;
    let (heads_tx, heads_rx) = tokio::sync::watch::channel(None);
    let audit_heads = Arc::new(crate::verify::published::Publisher::new(
        &cfg,
        clock.clone(),
        Box::new(move |h| {
            heads_tx.send_replace(Some(crate::automation::stream::AuditHead {
                id: h.id,
                hash: h.hash,
                at_ms: h.at_ms,
            }));
        }),
    ));
    let metrics = Arc::new(Metrics::default());
    let last_seen = Arc::new(LastSeen::default());
    let (changes_tx, changes_rx) = tokio::sync::watch::channel(0u64);
    let path = cfg.store.path.display().to_string();
    // The outbox of the automation outputs fills in the event's own transaction.
    let hook = crate::automation::wrap_hook(hook, &cfg);
    let (writer, writer_join) = writer::start(
        WriterConfig {
            path: cfg.store.path.clone(),
            queue_depth: cfg.store.queue_depth,
            max_batch: cfg.store.max_batch,
            busy_timeout: Duration::from_millis(cfg.store.busy_timeout_ms),
            retransmission_window: Duration::from_secs(cfg.receiver.retransmission_window_secs),
            max_dedupe_entries: 4_000_000,
            last_seen: Some(last_seen.clone()),
            changes: Some(changes_tx.clone()),
            wal: Default::default(),
            status_flush: writer::STATUS_FLUSH_EVERY,
            polls: crate::store::retention::poll_policy(&cfg),
        },
        unix_ms(clock.now()),
        metrics.clone(),
        hook,
    )
    .map_err(|source| DaemonError::Store { path, source })?;
    info!(accounts = table.len(), "accounts loaded");
    let shared = Arc::new(Shared {
        accounts: RwLock::new(Arc::new(table)),
        writer,
        metrics: metrics.clone(),
        clock,
        cfg: cfg.receiver.clone(),
        seeded_pad: std::sync::Mutex::new(None),
        recorder,
    });
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();

    let mut tcp_addr = None;
    if let Some(addr) = cfg.tcp_addr() {
        let l = TcpListener::bind(addr).await.map_err(|source| DaemonError::Bind {
            what: "TCP",
            addr,
            source,
        })?;
        tcp_addr = l.local_addr().ok();
        tracker.spawn(tcp::serve(
            l,
            shared.clone(),
            budget.admission(Listener::Dc09, metrics.clone()),
            cancel.clone(),
            tracker.clone(),
        ));
    }
    let mut udp_addr = None;
    if let Some(addr) = cfg.udp_addr() {
        let s = UdpSocket::bind(addr).await.map_err(|source| DaemonError::Bind {
            what: "UDP",
            addr,
            source,
        })?;
        udp_addr = s.local_addr().ok();
        tracker.spawn(udp::serve(s, shared.clone(), cancel.clone(), tracker.clone()));
    }
    let (mut cid_tcp_addr, mut cid_udp_addr) = (None, None);
    let cid_tcp = cfg.cid_input.tcp_listen.parse::<SocketAddr>().ok();
    let cid_udp = cfg.cid_input.udp_listen.parse::<SocketAddr>().ok();
    if cid_tcp.is_some() || cid_udp.is_some() {
        let store_err = |source| DaemonError::Store {
            path: cfg.store.path.display().to_string(),
            source,
        };
        let conn =
            store::open_read(&cfg.store.path, Duration::from_millis(cfg.store.busy_timeout_ms)).map_err(store_err)?;
        let cs = Arc::new(
            crate::receiver::cid_ip::CidShared::new(shared.clone(), cfg.cid_input.clone(), &conn).map_err(store_err)?,
        );
        if let Some(addr) = cid_tcp {
            let l = TcpListener::bind(addr).await.map_err(|source| DaemonError::Bind {
                what: "Contact ID TCP",
                addr,
                source,
            })?;
            cid_tcp_addr = l.local_addr().ok();
            tracker.spawn(crate::receiver::cid_ip::serve_tcp(
                l,
                cs.clone(),
                budget.admission(Listener::ContactId, metrics.clone()),
                cancel.clone(),
                tracker.clone(),
            ));
        }
        if let Some(addr) = cid_udp {
            let s = UdpSocket::bind(addr).await.map_err(|source| DaemonError::Bind {
                what: "Contact ID UDP",
                addr,
                source,
            })?;
            cid_udp_addr = s.local_addr().ok();
            tracker.spawn(crate::receiver::cid_ip::serve_udp(
                s,
                cs,
                cancel.clone(),
                tracker.clone(),
            ));
        }
    }
    let outputs = crate::automation::start(
        &cfg,
        crate::automation::Ctx {
            writer: shared.writer.clone(),
            metrics: shared.metrics.clone(),
            clock: shared.clock.clone(),
            changes: changes_tx.subscribe(),
            audit_heads: heads_rx,
        },
        &budget,
        cancel.clone(),
        &tracker,
    )
    .await
    .map_err(|(what, addr, source)| DaemonError::Bind { what, addr, source })?;
    if cfg.retention.enabled {
        let r = &cfg.retention;
        let pruner = crate::store::retention::Pruner::open(
            &cfg.store.path,
            Duration::from_millis(cfg.store.busy_timeout_ms),
            r.archive_path(&cfg.store),
            crate::store::retention::Periods::from_config(&cfg),
            r.batch_rows,
        )
        .map_err(|e| DaemonError::Retention(e.to_string()))?;
        tracker.spawn(crate::store::retention::run(
            pruner,
            shared.writer.clone(),
            shared.clock.clone(),
            shared.metrics.clone(),
            Duration::from_millis(r.step_pause_ms),
            Duration::from_secs(r.idle_secs),
            cancel.clone(),
        ));
    }
    let mut metrics_addr = None;
    if let Some(addr) = cfg.metrics_addr() {
        let l = TcpListener::bind(addr).await.map_err(|source| DaemonError::Bind {
            what: "metrics",
            addr,
            source,
        })?;
        metrics_addr = l.local_addr().ok();
        let admission = budget.admission(Listener::Metrics, metrics.clone());
        tracker.spawn(serve_metrics(l, metrics, admission, cancel.clone(), tracker.clone()));
    }
    let supervisor = supervision::Supervisor::new(
        cfg.store.path.clone(),
        shared.writer.clone(),
        last_seen,
        cfg.alarms.escalate_after_secs as i64 * 1000,
    )
    .with_settings(supervision::Settings {
        mass_loss: cfg.alarms.mass_loss(),
        supervisor_priority: cfg.alarms.supervisor_priority,
    })
    .with_cancel(cancel.clone());
    let supervisor = if supervise {
        let s = shared.clone();
        tracker.spawn(supervision::run(
            supervisor,
            shared.clock.clone(),
            move || s.accounts().generation,
            cancel.clone(),
        ));
        None
    } else {
        Some(supervisor)
    };
    let verifier = Arc::new(crate::verify::service_from_config(
        &cfg,
        hasher,
        shared.writer.clone(),
        shared.clock.clone(),
    ));
    warn_unusable_passwords(&cfg, verifier.hasher());
    let api = Arc::new(ApiState::new(
        ApiSettings {
            alert_priority: cfg.alarms.supervisor_priority,
            login_timeout: Duration::from_secs(cfg.operator.login_timeout_secs),
            idle_timeout: Duration::from_secs(cfg.operator.idle_timeout_secs),
            ..ApiSettings::new(
                cfg.store.path.clone(),
                cfg.operator.session_ttl_secs as i64 * 1000,
                cfg.alarms.cancel_window_secs as i64 * 1000,
            )
        },
        shared.writer.clone(),
        shared.clock.clone(),
        changes_rx,
        verifier,
    ));
    let mut api_socket = None;
    #[cfg(unix)]
    if let Some(path) = cfg.operator_socket() {
        let l = listen::bind_unix(&path).map_err(|source| DaemonError::BindUnix {
            path: path.display().to_string(),
            source,
        })?;
        tracker.spawn(listen::serve_unix(
            l,
            path.clone(),
            api.clone(),
            budget.admission(Listener::OperatorUnix, shared.metrics.clone()),
            cancel.clone(),
            tracker.clone(),
        ));
        api_socket = Some(path);
    }
    let mut api_tls_addr = None;
    let mut tls_cert = None;
    if let Some(addr) = cfg.operator_tcp_addr() {
        let cert = Arc::new(
            listen::ServerCert::load(
                std::path::Path::new(&cfg.operator.tls_cert),
                std::path::Path::new(&cfg.operator.tls_key),
            )
            .map_err(DaemonError::Tls)?,
        );
        let acceptor = listen::tls_acceptor_with(cert.clone()).map_err(DaemonError::Tls)?;
        tls_cert = Some(cert);
        let l = TcpListener::bind(addr).await.map_err(|source| DaemonError::Bind {
            what: "operator API",
            addr,
            source,
        })?;
        api_tls_addr = l.local_addr().ok();
        tracker.spawn(listen::serve_tls(
            l,
            acceptor,
            api.clone(),
            budget.admission(Listener::OperatorTls, shared.metrics.clone()),
            cancel.clone(),
            tracker.clone(),
        ));
    }
    if let Some(r) = shared.recorder.clone() {
        tracker.spawn(crate::receiver::record::flush_udp_every(r, cancel.clone()));
    }
    tracker.spawn(crate::operator::server::sweep(api.clone(), cancel.clone()));
    audit_heads.start();
    tracker.spawn(crate::verify::published::run(audit_heads.clone(), cancel.clone()));
    let reloader = Reloader {
        shared: shared.clone(),
        seal,
        path: cfg.store.path.clone(),
        busy: Duration::from_millis(cfg.store.busy_timeout_ms),
        tls_cert,
    };
    tracker.spawn(reload_accounts(reloader.clone(), cancel.clone()));
    info!(
        tcp = ?tcp_addr, udp = ?udp_addr, metrics = ?metrics_addr, cid_tcp = ?cid_tcp_addr, cid_udp = ?cid_udp_addr,
        db = %cfg.store.path.display(),
        "meldkamer receiver listening"
    );
    Ok(Running {
        tcp_addr,
        udp_addr,
        metrics_addr,
        cid_tcp_addr,
        cid_udp_addr,
        automation_addr: outputs.automation,
        event_stream_addr: outputs.stream,
        api_socket,
        api_tls_addr,
        api,
        shared,
        cancel,
        tracker,
        writer_join: Some(writer_join),
        supervisor,
        audit_key,
        audit_heads,
        reloader,
    })
}

/// Operators whose password needs a pepper that is not loaded cannot log in: say so at start,
/// with the way out. (Codes in that state stop the start: a duress code must never quietly
/// answer "rejected". A password that cannot be checked only keeps one operator out.)
fn warn_unusable_passwords(cfg: &Config, hasher: &crate::verify::Hasher) {
    let Ok(conn) = store::open_read(&cfg.store.path, Duration::from_millis(cfg.store.busy_timeout_ms)) else {
        return;
    };
    match crate::operator::accounts::unusable_passwords(&conn, hasher) {
        Ok(names) if !names.is_empty() => warn!(
            operators = %names.join(", "),
            "these operators' passwords were hashed with a pepper that is not loaded: they cannot log in until \
             `meldkamer operator password NAME` gives them a new one (or the pepper file is restored)"
        ),
        _ => {}
    }
}

/// What a reload acts through: the account table, the writer, the key that seals account keys.
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
    seal: Arc<store::sealed::SealKey>,
    path: std::path::PathBuf,
    busy: Duration,
    tls_cert: Option<Arc<listen::ServerCert>>,
}

impl Reloader {
    /// The operator API's certificate, when its TLS port is on.
    pub fn tls_cert(&self) -> Option<&listen::ServerCert> {
        self.tls_cert.as_deref()
    }

    /// Load the account table again if an import changed it (its generation moved); returns
    /// the new table's size and generation.
    pub async fn reload_accounts(&self) -> Result<Option<(usize, i64)>, StoreError> {
        let current = self.shared.accounts().generation;
        let (path, seal, busy) = (self.path.clone(), self.seal.clone(), self.busy);
        let loaded = tokio::task::spawn_blocking(move || -> Result<Option<accounts::AccountTable>, StoreError> {
            let conn = store::open_read(&path, busy)?;
            if accounts::generation(&conn)? == current {
                return Ok(None);
            }
            accounts::load(&conn, &seal).map(Some)
        })
        .await
        .map_err(|_| StoreError::WriterGone)??;
        Ok(loaded.map(|t| {
            let done = (t.len(), t.generation);
            info!(accounts = t.len(), generation = t.generation, "accounts reloaded");
            self.shared.set_accounts(t);
            done
        }))
    }

    /// Import records files through the writer, all or none (one savepoint in its
    /// transaction), account keys sealed as `meldkamer import` seals them.
    pub async fn import(
        &self,
        files: &[std::path::PathBuf],
    ) -> Result<crate::records::ImportReport, crate::records::ImportError> {
        let files = files.to_vec();
        let records = tokio::task::spawn_blocking(move || crate::reload::parse_records(&files))
            .await
            .map_err(|_| crate::records::ImportError::Store(StoreError::WriterGone))??;
        let seal = self.seal.clone();
        let now = unix_ms(self.shared.clock.now());
        // The job fails (its savepoint rolled back) with the import's own error kept here.
        let refused = Arc::new(std::sync::Mutex::new(None));
        let slot = refused.clone();
        let r = self
            .shared
            .writer
            .run(move |tx| match crate::records::apply_in(tx, &records, now, &seal) {
                Ok(report) => Ok(report),
                Err(crate::records::ImportError::Store(e)) => Err(e),
                Err(e) => {
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    Err(StoreError::Pragma("records import refused"))
                }
            })
            .await;
        match r {
            Ok(report) => Ok(report),
            Err(e) => Err(refused
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| {
                    crate::records::ImportError::Store(Arc::try_unwrap(e).unwrap_or(StoreError::WriterGone))
                })),
        }
    }
}

/// Reload the account table when an import bumps the generation.
async fn reload_accounts(reloader: Reloader, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A million accounts take seconds to load: a shutdown does not wait for it.
        let loaded = tokio::select! {
            r = reloader.reload_accounts() => r,
            _ = cancel.cancelled() => return,
        };
        if let Err(e) = loaded {
            warn!(error = %e, "account reload failed; keeping the current table");
        }
    }
}

/// The caps of the listeners `cfg` enables: configured, then fitted to `limit` descriptors
/// ([`budget::plan`]). Logs the budget, and warns for every cap it lowered.
fn descriptor_budget(cfg: &Config, limit: usize) -> Result<Budget, TooFew> {
    let caps = |total, per_peer| Caps { total, per_peer };
    let r = &cfg.receiver;
    let c = &cfg.cid_input;
    let o = &cfg.operator;
    let e = &cfg.event_stream;
    let enabled = [
        (
            Listener::Dc09,
            cfg.tcp_addr().is_some(),
            caps(r.max_connections, r.max_connections_per_ip),
        ),
        (
            Listener::ContactId,
            c.tcp_listen.parse::<SocketAddr>().is_ok(),
            caps(c.max_connections, c.max_connections_per_ip),
        ),
        (
            Listener::OperatorUnix,
            cfg!(unix) && cfg.operator_socket().is_some(),
            caps(o.max_connections, o.max_connections_per_peer),
        ),
        (
            Listener::OperatorTls,
            cfg.operator_tcp_addr().is_some(),
            caps(o.max_connections, o.max_connections_per_peer),
        ),
        (
            Listener::Metrics,
            cfg.metrics_addr().is_some(),
            caps(cfg.metrics.max_connections, cfg.metrics.max_connections),
        ),
        (
            Listener::EventStream,
            e.mode == EventStreamMode::Tcp,
            caps(e.max_connections, e.max_connections_per_peer),
        ),
        (
            Listener::Automation,
            cfg.automation.mode == AutomationMode::Server,
            caps(cfg.automation.max_connections, cfg.automation.max_connections),
        ),
    ];
    let wanted: Vec<Wanted> = enabled
        .into_iter()
        .filter(|(_, on, _)| *on)
        .map(|(listener, _, caps)| Wanted { listener, caps })
        .collect();
    let b = budget::plan(limit, &wanted)?;
    info!(
        limit = b.limit,
        overhead = budget::OVERHEAD,
        other_listeners = b.side,
        alarm_reserve = b.alarm_reserve,
        "descriptor budget: {b}"
    );
    for p in b.listeners.iter().filter(|p| p.lowered()) {
        warn!(
            listener = %p.listener,
            configured = p.configured.total,
            effective = p.effective.total,
            lowered_by = p.configured.total - p.effective.total,
            limit = b.limit,
            "connection cap lowered to fit the descriptor limit"
        );
    }
    Ok(b)
}

/// A minimal HTTP/1.0 responder for `GET /metrics` (loopback only by default), under
/// `admission`'s caps (`[metrics] max_connections`).
async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    admission: Admission,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    admission::serve(listener, admission, cancel, tracker, move |mut s, _, admitted| {
        let metrics = metrics.clone();
        async move {
            let _admitted = admitted;
            let mut req = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), s.read(&mut req)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let line = String::from_utf8_lossy(&req[..n]);
            let (status, body) = if line.starts_with("GET /metrics ") || line.starts_with("GET /metrics\r") {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "only /metrics is served here\n".to_string())
            };
            let head = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            // A scraper that does not read its answer does not keep the connection.
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                s.write_all(head.as_bytes()).await?;
                s.write_all(body.as_bytes()).await?;
                s.shutdown().await
            })
            .await;
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused port below 1024 says which capability it needs; other failures do not.
    #[test]
    fn a_refused_low_port_names_the_capability() {
        let bind = |port: u16, kind| {
            DaemonError::Bind {
                what: "TCP",
                addr: SocketAddr::from(([0, 0, 0, 0], port)),
                source: std::io::Error::from(kind),
            }
            .to_string()
        };
        let low = bind(443, std::io::ErrorKind::PermissionDenied);
        assert!(low.starts_with("cannot listen on TCP 0.0.0.0:443: "), "{low}");
        assert!(low.contains("CAP_NET_BIND_SERVICE"), "{low}");
        assert_eq!(
            bind(7000, std::io::ErrorKind::PermissionDenied),
            "cannot listen on TCP 0.0.0.0:7000"
        );
        assert_eq!(
            bind(443, std::io::ErrorKind::AddrInUse),
            "cannot listen on TCP 0.0.0.0:443"
        );
    }
}
