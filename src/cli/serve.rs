//! `meldkamer serve`, `print-config`, `check-config`, `import`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::clock::SystemClock;
use crate::config::{Config, DEFAULT_CONFIG, LogFormat};
use crate::daemon;

/// Errors of the daemon commands.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Start-up problem.
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
    /// Runtime problem.
    #[error("starting the runtime")]
    Runtime(#[source] std::io::Error),
    /// Import problem.
    #[error(transparent)]
    Import(#[from] crate::records::ImportError),
    /// The process could not be hardened (core files, dumpable).
    #[error("cannot switch off core dumps")]
    Hardening(#[source] std::io::Error),
    /// `check-config` found the PostgreSQL database unusable.
    #[error("the database check failed ({failed} finding(s) at FAIL above)")]
    DatabaseCheck {
        /// How many.
        failed: usize,
    },
    /// Database problem.
    #[error("opening the database {path}")]
    Store {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: crate::store::StoreError,
    },
}

/// The configuration from `--config`, or the embedded default.
pub fn load_config(path: Option<&Path>) -> Result<Config, ServeError> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::embedded()?,
    })
}

/// Install the tracing subscriber: the journal when systemd gave us one, else human or JSON
/// lines on stderr, with colours only when stderr is a terminal (in a file, a pipe or the
/// journal the escape codes are noise).
pub fn init_logging(cfg: &Config, force_json: bool) {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("meldkamer={}", cfg.log.level)));
    #[cfg(unix)]
    if log_to_journal(filter()) {
        return;
    }
    let filter = filter();
    let json = force_json || cfg.log.format == LogFormat::Json;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // `systemctl reload` may change the level ([`crate::reload`]).
    let _ = if json {
        let b = builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter_reloading();
        let h = b.reload_handle();
        crate::reload::on_log_level(move |f| h.reload(f).map_err(|e| e.to_string()));
        b.try_init()
    } else {
        let b = builder.with_filter_reloading();
        let h = b.reload_handle();
        crate::reload::on_log_level(move |f| h.reload(f).map_err(|e| e.to_string()));
        b.try_init()
    };
}

/// The bound addresses the ready line names.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ready {
    /// DC-09 TCP.
    pub tcp: Option<std::net::SocketAddr>,
    /// DC-09 UDP.
    pub udp: Option<std::net::SocketAddr>,
    /// Metrics.
    pub metrics: Option<std::net::SocketAddr>,
    /// Contact ID input, TCP.
    pub cid_tcp: Option<std::net::SocketAddr>,
    /// Contact ID input, UDP.
    pub cid_udp: Option<std::net::SocketAddr>,
    /// Sur-Gard output (server mode).
    pub automation: Option<std::net::SocketAddr>,
    /// JSON Lines event stream (TCP mode).
    pub event_stream: Option<std::net::SocketAddr>,
    /// Operator API, TLS.
    pub operator_tls: Option<std::net::SocketAddr>,
}

impl Ready {
    /// The addresses a running daemon bound.
    pub fn of(r: &daemon::Running) -> Ready {
        Ready {
            tcp: r.tcp_addr,
            udp: r.udp_addr,
            metrics: r.metrics_addr,
            cid_tcp: r.cid_tcp_addr,
            cid_udp: r.cid_udp_addr,
            automation: r.automation_addr,
            event_stream: r.event_stream_addr,
            operator_tls: r.api_tls_addr,
        }
    }
}

/// The line `serve` prints on stdout once it is ready: `key=value` words, each value a bound
/// address or `off`; an output that is on without a listener says what it does instead
/// (`automation=client:HOST:PORT`, `event_stream=file:PATH`, whitespace in the path escaped
/// as `\xNN` so the line still splits on spaces).
pub fn ready_line(
    ready: &Ready,
    automation: &crate::config::AutomationConfig,
    stream: &crate::config::EventStreamConfig,
) -> String {
    use crate::config::{AutomationMode, EventStreamMode};
    let show = |a: Option<std::net::SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
    let word = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    format!("\\x{:02X}", u32::from(c))
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    let automation = match (automation.mode, ready.automation) {
        (AutomationMode::Client, _) => format!("client:{}", word(&automation.connect)),
        (_, a) => show(a),
    };
    let event_stream = match (stream.mode, ready.event_stream) {
        (EventStreamMode::File, _) => format!("file:{}", word(&stream.file.display().to_string())),
        (_, a) => show(a),
    };
    format!(
        "meldkamer ready tcp={} udp={} metrics={} cid_tcp={} cid_udp={} automation={automation} event_stream={event_stream} operator_tls={}",
        show(ready.tcp),
        show(ready.udp),
        show(ready.metrics),
        show(ready.cid_tcp),
        show(ready.cid_udp),
        show(ready.operator_tls)
    )
}

/// Under systemd with stderr connected to the journal, install a subscriber that writes
/// journal entries ([`crate::service::journal`]) and say so (true). A journal that cannot be
/// reached is said on stderr, which the caller then logs to.
#[cfg(unix)]
fn log_to_journal(filter: EnvFilter) -> bool {
    use tracing_subscriber::layer::SubscriberExt;
    match crate::service::journal() {
        Some(Ok(journal)) => {
            let (filter, h) = tracing_subscriber::reload::Layer::new(filter);
            crate::reload::on_log_level(move |f| h.reload(f).map_err(|e| e.to_string()));
            let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(filter).with(journal));
            true
        }
        Some(Err(e)) => {
            eprintln!("meldkamer: stderr is the journal but its socket cannot be reached ({e}); logging to stderr");
            false
        }
        None => false,
    }
}

/// Run the daemon until SIGTERM or SIGINT.
pub fn serve(cfg: Config) -> Result<(), ServeError> {
    serve_recording(cfg, None)
}

/// [`serve`], writing the traffic as fixture traces when `record` is given (`--record DIR`).
pub fn serve_recording(cfg: Config, record: Option<crate::receiver::record::RecordOptions>) -> Result<(), ServeError> {
    serve_with(cfg, None, record)
}

/// [`serve_recording`] with the configuration read from `config_path` (`--config`), which a
/// reload (SIGHUP) reads again.
pub fn serve_with(
    cfg: Config,
    config_path: Option<&Path>,
    record: Option<crate::receiver::record::RecordOptions>,
) -> Result<(), ServeError> {
    // Refused before anything starts (a PostgreSQL configuration must not fall back to the
    // SQLite file at store.path).
    if cfg.store.backend == crate::config::StoreBackend::Postgres {
        return Err(daemon::DaemonError::PostgresNotBuilt.into());
    }
    // Before any pepper, key or password is loaded: no core file, nobody attaches.
    crate::hardening::no_core_dumps().map_err(ServeError::Hardening)?;
    raise_descriptor_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("meldkamer")
        .build()
        .map_err(ServeError::Runtime)?;
    crate::release::log_status();
    let cfg_in_effect = cfg.clone();
    let r = rt.block_on(async move {
        let outputs = (cfg.automation.clone(), cfg.event_stream.clone());
        let running = daemon::start_recording(cfg, Arc::new(SystemClock), record).await?;
        // One line on stdout when ready, for scripts and tests that start the daemon.
        let ready = ready_line(&Ready::of(&running), &outputs.0, &outputs.1);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{ready}");
        let _ = out.flush();
        drop(out);
        // Listeners bound, store open: now the service manager may count us as started.
        crate::service::ready(&ready);
        let cancel = running.cancel_token();
        crate::service::spawn_watchdog(running.shared.writer.clone(), cancel.clone());
        let reload = crate::reload::Reload::new(config_path, cfg_in_effect, running.reloader());
        tokio::spawn(async move {
            wait_for_signal(reload, &ready).await;
            tracing::info!("shutdown requested");
            crate::service::stopping();
            cancel.cancel();
        });
        running.wait().await;
        Ok(())
    });
    // Blocking work still under way (a load of the account table a shutdown did not wait for)
    // only reads: the process does not wait for it either.
    rt.shutdown_timeout(Duration::from_millis(500));
    r
}

/// Raise the soft descriptor limit to the hard one, and log both: the connection caps are
/// fitted to what it allows ([`crate::admission::budget`]).
fn raise_descriptor_limit() {
    #[cfg(unix)]
    {
        let show = |l: Option<u64>| l.map_or("unlimited".to_string(), |n| n.to_string());
        match crate::admission::budget::raise_nofile_limit() {
            Ok(r) => tracing::info!(
                soft_before = %show(r.soft_before),
                soft = %show(r.soft),
                hard = %show(r.hard),
                "descriptor limit (RLIMIT_NOFILE): soft limit raised to the hard limit"
            ),
            Err(e) => tracing::warn!(error = %e, "descriptor limit (RLIMIT_NOFILE) could not be raised"),
        }
    }
}

/// Until SIGTERM or SIGINT; each SIGHUP (`systemctl reload`) runs `reload`, announced to the
/// service manager (RELOADING=1, then READY=1 with `status`). A stop asked for during a
/// reload is not kept waiting for it.
async fn wait_for_signal(mut reload: crate::reload::Reload, status: &str) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut hup) = match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
            (Ok(t), Ok(h)) => (t, h),
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = tokio::signal::ctrl_c() => return,
                _ = hup.recv() => {
                    crate::service::reloading();
                    tokio::select! {
                        _ = reload.run() => {}
                        _ = term.recv() => return,
                        _ = tokio::signal::ctrl_c() => return,
                    }
                    crate::service::ready(status);
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (&mut reload, status);
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `print-config`: the embedded default, comments included.
pub fn print_config(out: &mut dyn Write) -> std::io::Result<()> {
    out.write_all(DEFAULT_CONFIG.as_bytes())
}

/// `check-config FILE`: the file, and with `[store] backend = "postgres"` the database too
/// (reachable, writable, schema version, what an ACK means there: [`crate::store::pg::check`]).
/// A database finding at FAIL fails the check; a warning is only said.
pub fn check_config(path: &Path, out: &mut dyn Write) -> Result<(), ServeError> {
    let cfg = Config::load(path)?;
    let _ = writeln!(out, "{}: ok", path.display());
    if let (crate::config::StoreBackend::Postgres, Some(url)) = (cfg.store.backend, &cfg.store.url) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let findings = rt.block_on(crate::store::pg::check::check(url));
        let _ = writeln!(out, "database: PostgreSQL at {url}");
        for f in &findings {
            let _ = writeln!(out, "{f}");
        }
        let failed = findings
            .iter()
            .filter(|f| f.level == crate::store::pg::check::Level::Fail)
            .count();
        if failed > 0 {
            return Err(ServeError::DatabaseCheck { failed });
        }
    }
    Ok(())
}

/// `import FILE…`: read and check every file (every problem of all of them, references to
/// the database included), then write them all in one transaction, the account keys sealed with
/// the keys file. A database that does not exist yet is created only when there is something to
/// write. `replace_lost_keys`: the keys file is lost; make a new one, remove (and disable the
/// accounts of) the keys that do not open with it, and seal the imported ones with it.
pub fn import(
    cfg: &Config,
    files: &[std::path::PathBuf],
    replace_lost_keys: bool,
    out: &mut dyn Write,
) -> Result<(), ServeError> {
    let open = || {
        crate::store::open_write(
            &cfg.store.path,
            std::time::Duration::from_millis(cfg.store.busy_timeout_ms),
        )
        .map_err(|source| ServeError::Store {
            path: cfg.store.path.display().to_string(),
            source,
        })
    };
    let existing = if cfg.store.path.exists() { Some(open()?) } else { None };
    let records = crate::records::prepare(existing.as_ref(), files)?;
    let mut conn = match existing {
        Some(c) => c,
        None => open()?,
    };
    let store = |source| ServeError::Store {
        path: cfg.store.path.display().to_string(),
        source,
    };
    let seal = crate::store::sealed::key_from_config(cfg, &conn, replace_lost_keys)
        .map_err(crate::records::ImportError::Keys)?;
    crate::records::bulk_pragmas(&conn).map_err(|e| store(e.into()))?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| store(e.into()))?;
    let lost = if replace_lost_keys {
        crate::store::sealed::forget_unopenable(&tx, &seal).map_err(store)?
    } else {
        Vec::new()
    };
    let report = crate::records::apply_in(
        &tx,
        &records,
        crate::clock::unix_ms(time::OffsetDateTime::now_utc()),
        &seal,
    )?;
    let still_disabled: Vec<&String> = lost
        .iter()
        .filter(|a| {
            !records
                .accounts
                .iter()
                .any(|r| &r.spec.account == *a && r.spec.key.is_some())
        })
        .collect();
    tx.commit().map_err(|e| store(e.into()))?;
    let _ = writeln!(out, "imported {report} into {}", cfg.store.path.display());
    if !lost.is_empty() {
        let _ = writeln!(
            out,
            "{} account key(s) did not open with the keys file and were removed; {} account(s) stay disabled until \
             imported again with their key: {}",
            lost.len(),
            still_disabled.len(),
            still_disabled.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AutomationMode, EventStreamMode};

    /// An output that is on without a listener of its own is not reported `off`: the JSON
    /// stream to a file, the Sur-Gard output connecting out.
    #[test]
    fn the_ready_line_names_outputs_without_a_listener() {
        let addr = |s: &str| Some(s.parse().expect("addr"));
        let ready = Ready {
            tcp: addr("127.0.0.1:7000"),
            udp: addr("127.0.0.1:7000"),
            ..Ready::default()
        };
        let mut cfg = Config::default();
        let off = ready_line(&ready, &cfg.automation, &cfg.event_stream);
        assert_eq!(
            off,
            "meldkamer ready tcp=127.0.0.1:7000 udp=127.0.0.1:7000 metrics=off cid_tcp=off cid_udp=off automation=off event_stream=off operator_tls=off"
        );
        cfg.event_stream.mode = EventStreamMode::File;
        cfg.event_stream.file = "/var/lib/meldkamer/events log.jsonl".into();
        cfg.automation.mode = AutomationMode::Client;
        cfg.automation.connect = "automation.example:1025".into();
        let on = ready_line(&ready, &cfg.automation, &cfg.event_stream);
        assert!(on.contains(" automation=client:automation.example:1025 "), "{on}");
        assert!(
            on.contains(r" event_stream=file:/var/lib/meldkamer/events\x20log.jsonl "),
            "{on}"
        );
        assert_eq!(on.split(' ').count(), off.split(' ').count(), "one word per key");
        // A TCP stream and a server-mode output show their addresses.
        cfg.event_stream.mode = EventStreamMode::Tcp;
        cfg.automation.mode = AutomationMode::Server;
        let bound = Ready {
            automation: addr("127.0.0.1:1025"),
            event_stream: addr("127.0.0.1:7100"),
            ..ready
        };
        let tcp = ready_line(&bound, &cfg.automation, &cfg.event_stream);
        assert!(
            tcp.contains(" automation=127.0.0.1:1025 event_stream=127.0.0.1:7100 "),
            "{tcp}"
        );
    }
}
