//! Configuration: a TOML file with every key optional and unknown keys refused. The commented
//! default (`config/meldkamer.toml`) is embedded in the binary and is what `serve` uses when
//! no file is given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The embedded default configuration, comments included.
pub const DEFAULT_CONFIG: &str = include_str!("../config/meldkamer.toml");

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// DC-09 listeners and their limits.
    pub receiver: ReceiverConfig,
    /// The SQLite store.
    pub store: StoreConfig,
    /// Alarm handling.
    pub alarms: AlarmsConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Phone cancellation codes (`src/verify`).
    pub codes: CodesConfig,
    /// The operator API.
    pub operator: OperatorConfig,
    /// Contact ID over IP without DC-09 (Sur-Gard lines, Lupusec frames, raw DC-05).
    pub cid_input: CidInputConfig,
    /// Sur-Gard output to automation software.
    pub automation: AutomationConfig,
    /// The JSON Lines event stream.
    pub event_stream: EventStreamConfig,
    /// The audit log's key and its published heads.
    pub audit: AuditConfig,
    /// The operators' terminal (`meldkamer console`).
    pub console: ConsoleConfig,
    /// How long records are kept, the archive before pruning, and which polls are stored.
    pub retention: RetentionConfig,
    /// Records files the daemon imports at start and at every reload.
    pub records: RecordsConfig,
}

/// `[records]`: records files (`meldkamer import` format) the daemon imports itself.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// TOML or CSV records files, imported all or none at start and at every reload (SIGHUP).
    pub files: Vec<PathBuf>,
}

/// `[retention]`: how long frames, events and alarm records are kept, the archive written
/// before anything is pruned, and which supervision polls are stored (`store::retention`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Prune at all (the archive and the periods below). Poll compaction is separate.
    pub enabled: bool,
    /// Frames (the bytes received) older than this many days are archived and deleted; a
    /// frame whose events are still kept stays with them. Fractions allowed (benchmarks).
    pub frames_days: f64,
    /// Events older than this many days are archived and deleted.
    pub events_days: f64,
    /// Closed alarms (with their log, calls, procedure steps and code attempts) closed more
    /// than this many days ago are archived and deleted.
    pub alarms_days: f64,
    /// Where the archive goes. Empty: beside the database, `<store.path>.archive`.
    pub archive_dir: PathBuf,
    /// Rows archived and deleted per step (one short writer transaction each).
    pub batch_rows: usize,
    /// Pause between two steps while there is work, milliseconds.
    pub step_pause_ms: u64,
    /// Pause once nothing is due, seconds.
    pub idle_secs: u64,
    /// Of an account's clean polls, the first in each period of this many seconds (UTC) is
    /// stored as a frame row, for audit; 0: none for sampling.
    pub poll_sample_secs: u64,
    /// A frame that carries nothing but periodic test reports (Contact ID 602, SIA RP) counts
    /// as a poll and is compacted like one. Never while an automation output or the event
    /// stream is on (they forward every stored event).
    pub compact_periodic_tests: bool,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: true,
            frames_days: 90.0,
            events_days: 400.0,
            alarms_days: 400.0,
            archive_dir: PathBuf::new(),
            batch_rows: 500,
            step_pause_ms: 50,
            idle_secs: 60,
            poll_sample_secs: 86_400,
            compact_periodic_tests: true,
        }
    }
}

impl RetentionConfig {
    /// The archive directory, resolved against the database path when not configured.
    pub fn archive_path(&self, store: &StoreConfig) -> PathBuf {
        beside_database(&self.archive_dir, store, ".archive")
    }
}

/// `[console]`: the operators' terminal.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// The time zone the console shows times in (an IANA name); "" is the system's (`TZ`,
    /// else `/etc/localtime`).
    pub time_zone: String,
    /// Present the next alarm by itself: on the queue with no alarm open, the most urgent
    /// alarm nobody handles is opened and taken.
    pub auto_present: bool,
}

/// `[audit]`: the key of the audit chain and where its heads are published.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The audit key file (owner-only). Empty: beside the database, `<store.path>.audit-key`.
    pub key_file: PathBuf,
    /// The file published heads are appended to. Empty: `<store.path>.audit-heads`.
    pub heads_file: PathBuf,
    /// Publish the head at least once every this many rows (and at start and shutdown).
    pub publish_every: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            key_file: PathBuf::new(),
            heads_file: PathBuf::new(),
            publish_every: 100,
        }
    }
}

/// `path`, or the database path with `suffix` appended when `path` is empty.
fn beside_database(path: &Path, store: &StoreConfig, suffix: &str) -> PathBuf {
    if path.as_os_str().is_empty() {
        let mut p = store.path.clone().into_os_string();
        p.push(suffix);
        PathBuf::from(p)
    } else {
        path.to_path_buf()
    }
}

impl AuditConfig {
    /// The audit key file, resolved against the database path when not configured.
    pub fn key_path(&self, store: &StoreConfig) -> PathBuf {
        beside_database(&self.key_file, store, ".audit-key")
    }

    /// The heads file, resolved against the database path when not configured.
    pub fn heads_path(&self, store: &StoreConfig) -> PathBuf {
        beside_database(&self.heads_file, store, ".audit-heads")
    }
}

/// `[operator]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorConfig {
    /// Unix socket path ("" disables; relative to the database's directory).
    pub socket: String,
    /// TCP listen address for TLS ("" disables).
    pub tcp_listen: String,
    /// PEM certificate chain.
    pub tls_cert: String,
    /// PEM private key.
    pub tls_key: String,
    /// Session lifetime.
    pub session_ttl_secs: u64,
    /// Open API connections per listener (the Unix socket and the TLS port each), in total.
    pub max_connections: usize,
    /// Open API connections per listener from one peer (TLS: IP address; Unix socket: user id).
    pub max_connections_per_peer: usize,
    /// A connection that has not logged in within this many seconds is closed.
    pub login_timeout_secs: u64,
    /// A connection that sends no request for this many seconds is closed.
    pub idle_timeout_secs: u64,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            socket: "meldkamer.sock".into(),
            tcp_listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            session_ttl_secs: 36000,
            max_connections: 64,
            max_connections_per_peer: 16,
            login_timeout_secs: 10,
            idle_timeout_secs: 900,
        }
    }
}

impl Config {
    /// The operator API socket path, if enabled (relative paths are relative to the database).
    pub fn operator_socket(&self) -> Option<PathBuf> {
        if self.operator.socket.is_empty() {
            return None;
        }
        let p = PathBuf::from(&self.operator.socket);
        if p.is_absolute() {
            return Some(p);
        }
        let base = self
            .store
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Some(base.join(p))
    }

    /// The operator API TLS address, if enabled.
    pub fn operator_tcp_addr(&self) -> Option<SocketAddr> {
        self.operator.tcp_listen.parse().ok()
    }
}

/// `[codes]`: phone cancellation codes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CodesConfig {
    /// The pepper file (owner-only permissions). Empty: beside the database, `<store.path>.pepper`.
    pub pepper_file: PathBuf,
    /// Earlier pepper files, still accepted for codes hashed with them (rehashed on success).
    pub retired_pepper_files: Vec<PathBuf>,
    /// Argon2id memory cost in KiB.
    pub argon2_memory_kib: u32,
    /// Argon2id passes.
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    pub argon2_parallelism: u32,
    /// Consecutive rejected codes of one contact that lock phone cancellation for the customer.
    pub lockout_after: u32,
    /// Rejected codes per operator per hour, across customers, above which the supervisor is alerted.
    pub operator_alert_rejects_per_hour: u32,
    /// Verifications per operator per hour, across customers, beyond which more are refused.
    pub operator_max_verifications_per_hour: u32,
    /// Verifications hashing at once (each holds `argon2_memory_kib` of memory).
    pub max_concurrent_verifications: usize,
}

impl CodesConfig {
    /// The pepper file, resolved against the database path when not configured.
    pub fn pepper_path(&self, store: &StoreConfig) -> PathBuf {
        beside_database(&self.pepper_file, store, ".pepper")
    }
}

impl Default for CodesConfig {
    fn default() -> Self {
        CodesConfig {
            pepper_file: PathBuf::new(),
            retired_pepper_files: Vec::new(),
            argon2_memory_kib: 32768,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            lockout_after: 5,
            operator_alert_rejects_per_hour: 10,
            operator_max_verifications_per_hour: 30,
            max_concurrent_verifications: 4,
        }
    }
}

/// `[receiver]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// TCP listen address, empty to disable.
    pub tcp_listen: String,
    /// UDP listen address, empty to disable.
    pub udp_listen: String,
    /// Largest frame, LF and CR included.
    pub max_frame_bytes: usize,
    /// Open TCP connections, in total.
    pub max_connections: usize,
    /// Open TCP connections per source address.
    pub max_connections_per_ip: usize,
    /// Idle TCP connections are closed after this many seconds.
    pub idle_timeout_secs: u64,
    /// A started frame must end within this many seconds.
    pub frame_timeout_secs: u64,
    /// Frames per TCP connection awaiting commit before reading pauses.
    pub max_inflight_per_connection: usize,
    /// UDP datagrams in process at once.
    pub max_udp_inflight: usize,
    /// Timestamp window, behind.
    pub timestamp_behind_secs: i64,
    /// Timestamp window, ahead.
    pub timestamp_ahead_secs: i64,
    /// Retransmission window.
    pub retransmission_window_secs: u64,
    /// Garbage runs stored per connection before they are only counted.
    pub max_garbage_records_per_connection: usize,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Database file.
    pub path: PathBuf,
    /// Writer queue depth.
    pub queue_depth: usize,
    /// Frames per transaction, at most.
    pub max_batch: usize,
    /// SQLite busy timeout.
    pub busy_timeout_ms: u64,
    /// Load the demo data set into an empty database.
    pub load_demo_data: bool,
    /// The file with the key that seals the DC-09 account keys (owner-only). Empty: beside the
    /// database, `<store.path>.keys`.
    pub keys_file: PathBuf,
    /// Which database: the SQLite file at `path` (the default), or PostgreSQL at `url`.
    pub backend: StoreBackend,
    /// The PostgreSQL URL (backend `postgres`): printed with its password starred.
    pub url: Option<crate::store::pg::DbUrl>,
}

/// `[store] backend`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// One SQLite file (`[store] path`).
    #[default]
    Sqlite,
    /// A PostgreSQL database (`[store] url`); issue 23.
    Postgres,
}

impl StoreConfig {
    /// The keys file, resolved against the database path when not configured.
    pub fn keys_path(&self) -> PathBuf {
        beside_database(&self.keys_file, self, ".keys")
    }
}

/// `[alarms]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmsConfig {
    /// Escalate unacknowledged alarms after this many seconds.
    pub escalate_after_secs: u64,
    /// Both cancellation factors within this many seconds of each other.
    pub cancel_window_secs: u64,
    /// Priority of supervisor-queue items.
    pub supervisor_priority: u8,
    /// Correlate events into alarms and supervise accounts (off only to measure the receiver
    /// alone).
    pub correlate: bool,
    /// A mass loss: this many accounts losing communication within `mass_loss_window_secs` of
    /// each other get one mass-loss alarm instead of one alarm each (0: never fold).
    pub mass_loss_accounts: usize,
    /// The window of a mass loss, seconds.
    pub mass_loss_window_secs: u64,
    /// Priority of the mass-loss alarm (1–9).
    pub mass_loss_priority: u8,
    /// A mass loss of one receiver line: this share (percent) of the accounts last heard over
    /// a line losing communication within `mass_loss_window_secs` (0: off)...
    pub mass_loss_line_percent: u8,
    /// ... and at least this many of them (at least 2).
    pub mass_loss_line_min_accounts: usize,
}

impl AlarmsConfig {
    /// The mass-loss thresholds.
    pub fn mass_loss(&self) -> crate::correlate::mass_loss::MassLossConfig {
        crate::correlate::mass_loss::MassLossConfig {
            accounts: self.mass_loss_accounts,
            window_ms: i64::try_from(self.mass_loss_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            priority: self.mass_loss_priority,
            line_percent: self.mass_loss_line_percent,
            line_min_accounts: self.mass_loss_line_min_accounts,
        }
    }
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig {
            correlate: true,
            escalate_after_secs: 120,
            cancel_window_secs: 900,
            supervisor_priority: 4,
            mass_loss_accounts: 50,
            mass_loss_window_secs: 120,
            mass_loss_priority: 3,
            mass_loss_line_percent: 20,
            mass_loss_line_min_accounts: 5,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Listen address, empty to disable.
    pub listen: String,
    /// Open connections, in total and from one address.
    pub max_connections: usize,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Format.
    pub format: LogFormat,
    /// Default level filter.
    pub level: String,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            tcp_listen: "127.0.0.1:7000".into(),
            udp_listen: "127.0.0.1:7000".into(),
            max_frame_bytes: 2048,
            max_connections: 16384,
            max_connections_per_ip: 2048,
            idle_timeout_secs: 120,
            frame_timeout_secs: 10,
            max_inflight_per_connection: 32,
            max_udp_inflight: 4096,
            timestamp_behind_secs: 40,
            timestamp_ahead_secs: 20,
            retransmission_window_secs: 600,
            max_garbage_records_per_connection: 16,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("meldkamer.db"),
            queue_depth: 8192,
            max_batch: 32,
            busy_timeout_ms: 5000,
            load_demo_data: true,
            keys_file: PathBuf::new(),
            backend: StoreBackend::Sqlite,
            url: None,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9464".into(),
            max_connections: 8,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// `[cid_input]`: Contact ID over IP without DC-09 (`src/receiver/cid_ip.rs`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CidInputConfig {
    /// TCP listen address, empty to disable.
    pub tcp_listen: String,
    /// UDP listen address, empty to disable.
    pub udp_listen: String,
    /// Accepted framings, detected per message: "surgard", "lupusec", "dc05".
    pub framings: Vec<String>,
    /// Longest message, terminator included.
    pub max_line_bytes: usize,
    /// Open TCP connections, in total.
    pub max_connections: usize,
    /// Open TCP connections per source address.
    pub max_connections_per_ip: usize,
    /// Idle TCP connections are closed after this many seconds.
    pub idle_timeout_secs: u64,
    /// A started message must end within this many seconds.
    pub line_timeout_secs: u64,
    /// A message equal to the previous one of the same account within this window is a
    /// retransmission (0: never).
    pub retransmission_window_secs: u64,
}

impl Default for CidInputConfig {
    fn default() -> Self {
        CidInputConfig {
            tcp_listen: String::new(),
            udp_listen: String::new(),
            framings: vec!["surgard".into(), "lupusec".into(), "dc05".into()],
            max_line_bytes: 256,
            max_connections: 1024,
            max_connections_per_ip: 256,
            idle_timeout_secs: 300,
            line_timeout_secs: 10,
            retransmission_window_secs: 60,
        }
    }
}

/// Who opens the automation connection.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AutomationMode {
    /// No Sur-Gard output.
    Off,
    /// meldkamer connects to `connect`.
    Client,
    /// The automation software connects to `listen`.
    Server,
}

/// `[automation]`: every stored event to automation software, as a Sur-Gard receiver sends it
/// (`src/automation/`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AutomationConfig {
    /// off, client or server.
    pub mode: AutomationMode,
    /// host:port of the automation software (client mode).
    pub connect: String,
    /// Listen address (server mode).
    pub listen: String,
    /// Receiver number in every line: two hex characters.
    pub receiver: String,
    /// Line number in every line: 1–7 hex characters (its length is the header width).
    pub line: String,
    /// Heartbeat after this many idle seconds (0: none).
    pub heartbeat_secs: u64,
    /// Wait this long for ACK/NAK before sending the message again.
    pub ack_timeout_ms: u64,
    /// Resends of a message after a NAK: it is sent at most `nak_retries + 1` times, and the NAK
    /// after the last resend skips it (logged, counted).
    pub nak_retries: u32,
    /// Delivered outbox rows are kept this long (TCP subscribers of the event stream can resume
    /// within it), then deleted.
    pub outbox_retention_hours: u64,
    /// Server mode: open connections, in total and from one address.
    pub max_connections: usize,
}

impl Default for AutomationConfig {
    fn default() -> Self {
        AutomationConfig {
            mode: AutomationMode::Off,
            connect: String::new(),
            listen: String::new(),
            receiver: "01".into(),
            line: "1".into(),
            heartbeat_secs: 30,
            ack_timeout_ms: 4000,
            nak_retries: 3,
            outbox_retention_hours: 168,
            max_connections: 4,
        }
    }
}

/// Where the JSON Lines event stream goes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventStreamMode {
    /// No stream.
    Off,
    /// Appended to `file`.
    File,
    /// To TCP subscribers of `listen`.
    Tcp,
}

/// `[event_stream]`: every stored event as one JSON object per line.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventStreamConfig {
    /// off, file or tcp.
    pub mode: EventStreamMode,
    /// The file (file mode).
    pub file: PathBuf,
    /// Listen address (tcp mode).
    pub listen: String,
    /// A heartbeat line to TCP subscribers after this many idle seconds (0: none).
    pub heartbeat_secs: u64,
    /// TCP subscribers at once, in total.
    pub max_connections: usize,
    /// TCP subscribers at once from one address.
    pub max_connections_per_peer: usize,
}

impl Default for EventStreamConfig {
    fn default() -> Self {
        EventStreamConfig {
            mode: EventStreamMode::Off,
            file: PathBuf::new(),
            listen: String::new(),
            heartbeat_secs: 30,
            max_connections: 64,
            max_connections_per_peer: 16,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or an unknown key, or a wrong type.
    #[error("{origin}: {message}")]
    Syntax {
        /// File name or "embedded default".
        origin: String,
        /// toml's message, with line and column.
        message: String,
    },
    /// Parsed, but a value is not usable.
    #[error("{origin}: {key}: {problem}")]
    Invalid {
        /// File name or "embedded default".
        origin: String,
        /// The key, dotted.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

fn parse_addr(origin: &str, key: &'static str, s: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| ConfigError::Invalid {
        origin: origin.to_string(),
        key,
        problem: format!("{s:?} is not an address:port (e.g. \"127.0.0.1:7000\")"),
    })
}

impl Config {
    /// Parse and validate configuration text.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// The embedded default.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::from_toml(DEFAULT_CONFIG, "embedded default")
    }

    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, problem: &str| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            problem: problem.to_string(),
        };
        match (self.store.backend, &self.store.url) {
            (StoreBackend::Postgres, None) => {
                return Err(invalid(
                    "store.url",
                    "backend \"postgres\" needs url = \"postgres://USER@HOST:PORT/DATABASE\"",
                ));
            }
            (StoreBackend::Postgres, Some(url)) => {
                if let Err(e) = crate::store::pg::DbUrl::parse(url.expose()) {
                    return Err(invalid("store.url", &e.to_string()));
                }
            }
            (StoreBackend::Sqlite, Some(_)) => {
                return Err(invalid(
                    "store.url",
                    "is set, but backend is \"sqlite\": set backend = \"postgres\" to use it, or remove url",
                ));
            }
            (StoreBackend::Sqlite, None) => {}
        }
        let r = &self.retention;
        for (key, days) in [
            ("retention.frames_days", r.frames_days),
            ("retention.events_days", r.events_days),
            ("retention.alarms_days", r.alarms_days),
        ] {
            if !(days > 0.0 && days <= 36_500.0) {
                return Err(invalid(key, "must be more than 0 and at most 36500 days"));
            }
        }
        if r.batch_rows == 0 || r.batch_rows > 10_000 {
            return Err(invalid("retention.batch_rows", "must be 1 to 10000"));
        }
        if r.idle_secs == 0 {
            return Err(invalid("retention.idle_secs", "must be greater than 0"));
        }
        parse_addr(origin, "receiver.tcp_listen", &self.receiver.tcp_listen)?;
        parse_addr(origin, "receiver.udp_listen", &self.receiver.udp_listen)?;
        parse_addr(origin, "metrics.listen", &self.metrics.listen)?;
        if parse_addr(origin, "operator.tcp_listen", &self.operator.tcp_listen)?.is_some()
            && (self.operator.tls_cert.is_empty() || self.operator.tls_key.is_empty())
        {
            return Err(invalid(
                "operator.tcp_listen",
                "the operator API over TCP needs TLS: set operator.tls_cert and operator.tls_key",
            ));
        }
        let o = &self.operator;
        for (key, v) in [
            ("operator.session_ttl_secs", o.session_ttl_secs),
            ("operator.max_connections", o.max_connections as u64),
            ("operator.max_connections_per_peer", o.max_connections_per_peer as u64),
            ("operator.login_timeout_secs", o.login_timeout_secs),
            ("operator.idle_timeout_secs", o.idle_timeout_secs),
            ("metrics.max_connections", self.metrics.max_connections as u64),
            ("automation.max_connections", self.automation.max_connections as u64),
            ("event_stream.max_connections", self.event_stream.max_connections as u64),
            (
                "event_stream.max_connections_per_peer",
                self.event_stream.max_connections_per_peer as u64,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        let r = &self.receiver;
        if !(64..=crate::protocol::frame::MAX_FRAME_LEN).contains(&r.max_frame_bytes) {
            return Err(invalid("receiver.max_frame_bytes", "must be between 64 and 4105"));
        }
        let positive: [(&'static str, u64); 7] = [
            ("receiver.max_connections", r.max_connections as u64),
            ("receiver.max_connections_per_ip", r.max_connections_per_ip as u64),
            ("receiver.idle_timeout_secs", r.idle_timeout_secs),
            ("receiver.frame_timeout_secs", r.frame_timeout_secs),
            (
                "receiver.max_inflight_per_connection",
                r.max_inflight_per_connection as u64,
            ),
            ("receiver.max_udp_inflight", r.max_udp_inflight as u64),
            ("store.queue_depth", self.store.queue_depth as u64),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if !(1..=9).contains(&self.alarms.mass_loss_priority) {
            return Err(invalid("alarms.mass_loss_priority", "must be between 1 and 9"));
        }
        if self.alarms.mass_loss_window_secs == 0 || self.alarms.mass_loss_window_secs > 86_400 {
            return Err(invalid(
                "alarms.mass_loss_window_secs",
                "must be between 1 and 86400 seconds",
            ));
        }
        if self.alarms.mass_loss_line_percent > 100 {
            return Err(invalid(
                "alarms.mass_loss_line_percent",
                "must be between 0 (off) and 100",
            ));
        }
        if self.alarms.mass_loss_line_min_accounts < 2 {
            return Err(invalid(
                "alarms.mass_loss_line_min_accounts",
                "must be at least 2 (one silent account is never a mass loss)",
            ));
        }
        if !(1..=9).contains(&self.alarms.supervisor_priority) {
            return Err(invalid("alarms.supervisor_priority", "must be between 1 and 9"));
        }
        if self.alarms.escalate_after_secs == 0 {
            return Err(invalid("alarms.escalate_after_secs", "must be greater than 0"));
        }
        if self.store.max_batch == 0 {
            return Err(invalid("store.max_batch", "must be greater than 0"));
        }
        if r.timestamp_behind_secs < 0 || r.timestamp_ahead_secs < 0 {
            return Err(invalid("receiver.timestamp_*_secs", "must not be negative"));
        }
        if self.store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must not be empty"));
        }
        // The zone the console shows times in ("" is the system's): checked against the bundled
        // zone database here, below the console that uses it.
        let zone = &self.console.time_zone;
        if !zone.trim().is_empty() && jiff::tz::TimeZone::get(zone).is_err() {
            return Err(invalid(
                "console.time_zone",
                &format!(
                    "unknown time zone {zone:?} (an IANA name such as \"Europe/Amsterdam\", or \"\" for the system's)"
                ),
            ));
        }
        let c = &self.codes;
        if c.argon2_memory_kib < 19456 || c.argon2_iterations < 2 || c.argon2_parallelism < 1 {
            return Err(invalid(
                "codes.argon2_*",
                "below the floor of 19456 KiB memory, 2 iterations, 1 lane",
            ));
        }
        if c.argon2_memory_kib > 1024 * 1024 || c.argon2_iterations > 64 || c.argon2_parallelism > 64 {
            return Err(invalid(
                "codes.argon2_*",
                "above 1048576 KiB (1 GiB) memory, 64 iterations or 64 lanes",
            ));
        }
        if !(1..=100).contains(&c.lockout_after) {
            return Err(invalid("codes.lockout_after", "must be between 1 and 100"));
        }
        if c.operator_alert_rejects_per_hour == 0 {
            return Err(invalid(
                "codes.operator_alert_rejects_per_hour",
                "must be greater than 0",
            ));
        }
        if c.operator_max_verifications_per_hour == 0 {
            return Err(invalid(
                "codes.operator_max_verifications_per_hour",
                "must be greater than 0",
            ));
        }
        if c.max_concurrent_verifications == 0 {
            return Err(invalid("codes.max_concurrent_verifications", "must be greater than 0"));
        }
        if !(1..=1_000_000).contains(&self.audit.publish_every) {
            return Err(invalid("audit.publish_every", "must be between 1 and 1000000"));
        }
        self.validate_cid_automation(origin)?;
        if tracing_level_ok(&self.log.level).is_none() {
            return Err(invalid("log.level", "must be one of error, warn, info, debug, trace"));
        }
        Ok(())
    }

    fn validate_cid_automation(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, problem: &str| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            problem: problem.to_string(),
        };
        let c = &self.cid_input;
        parse_addr(origin, "cid_input.tcp_listen", &c.tcp_listen)?;
        parse_addr(origin, "cid_input.udp_listen", &c.udp_listen)?;
        if c.framings.is_empty() {
            return Err(invalid(
                "cid_input.framings",
                "name at least one of surgard, lupusec, dc05",
            ));
        }
        for (i, f) in c.framings.iter().enumerate() {
            if crate::protocol::cidip::Framing::parse(f).is_none() {
                return Err(invalid(
                    "cid_input.framings",
                    &format!("{f:?} is not one of surgard, lupusec, dc05"),
                ));
            }
            if c.framings[..i].contains(f) {
                return Err(invalid("cid_input.framings", &format!("{f:?} is named twice")));
            }
        }
        if !(32..=4096).contains(&c.max_line_bytes) {
            return Err(invalid("cid_input.max_line_bytes", "must be between 32 and 4096"));
        }
        for (key, v) in [
            ("cid_input.max_connections", c.max_connections as u64),
            ("cid_input.max_connections_per_ip", c.max_connections_per_ip as u64),
            ("cid_input.idle_timeout_secs", c.idle_timeout_secs),
            ("cid_input.line_timeout_secs", c.line_timeout_secs),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if c.retransmission_window_secs > self.receiver.retransmission_window_secs {
            return Err(invalid(
                "cid_input.retransmission_window_secs",
                "must not exceed receiver.retransmission_window_secs (the store remembers retransmissions that long)",
            ));
        }
        let a = &self.automation;
        match a.mode {
            AutomationMode::Off => {}
            AutomationMode::Client => {
                let ok = a
                    .connect
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !ok {
                    return Err(invalid(
                        "automation.connect",
                        "client mode needs host:port of the automation software",
                    ));
                }
            }
            AutomationMode::Server => {
                if parse_addr(origin, "automation.listen", &a.listen)?.is_none() {
                    return Err(invalid("automation.listen", "server mode needs a listen address"));
                }
            }
        }
        if crate::protocol::surgard::Header::new(&a.receiver, &a.line).is_none() {
            return Err(invalid(
                "automation.receiver",
                "receiver must be 2 and line 1 to 7 upper-case hex characters (e.g. \"01\" and \"1\" or \"001\")",
            ));
        }
        if !(100..=60_000).contains(&a.ack_timeout_ms) {
            return Err(invalid("automation.ack_timeout_ms", "must be between 100 and 60000"));
        }
        if a.heartbeat_secs > 3600 {
            return Err(invalid("automation.heartbeat_secs", "must be 0 (off) to 3600"));
        }
        if a.nak_retries > 100 {
            return Err(invalid("automation.nak_retries", "must be 0 to 100"));
        }
        if a.outbox_retention_hours == 0 {
            return Err(invalid("automation.outbox_retention_hours", "must be greater than 0"));
        }
        let e = &self.event_stream;
        match e.mode {
            EventStreamMode::Off => {}
            EventStreamMode::File => {
                if e.file.as_os_str().is_empty() {
                    return Err(invalid("event_stream.file", "file mode needs a file"));
                }
            }
            EventStreamMode::Tcp => {
                if parse_addr(origin, "event_stream.listen", &e.listen)?.is_none() {
                    return Err(invalid("event_stream.listen", "tcp mode needs a listen address"));
                }
            }
        }
        if e.heartbeat_secs > 3600 {
            return Err(invalid("event_stream.heartbeat_secs", "must be 0 (off) to 3600"));
        }
        Ok(())
    }

    /// TCP listen address (validated).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.receiver.tcp_listen.parse().ok()
    }

    /// UDP listen address (validated).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.receiver.udp_listen.parse().ok()
    }

    /// Metrics listen address (validated).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.listen.parse().ok()
    }
}

fn tracing_level_ok(s: &str) -> Option<()> {
    matches!(s, "error" | "warn" | "info" | "debug" | "trace").then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[store] backend`: sqlite by default; postgres needs a URL that parses; a URL without
    /// the postgres backend is a mistake said, not ignored; no error shows the password.
    #[test]
    fn the_store_backend_and_its_url_are_checked_without_showing_the_password() {
        let cfg = Config::from_toml("", "t").expect("defaults");
        assert_eq!(
            (cfg.store.backend, cfg.store.url.is_none()),
            (StoreBackend::Sqlite, true)
        );
        let cfg = Config::from_toml(
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://arc:s3cret@db1,db2/m?target_session_attrs=read-write\"\n",
            "t",
        )
        .expect("a postgres store");
        assert_eq!(cfg.store.backend, StoreBackend::Postgres);
        assert!(!format!("{cfg:?}").contains("s3cret"), "Debug stars the password");
        for (text, says) in [
            ("[store]\nbackend = \"postgres\"\n", "needs url"),
            (
                "[store]\nurl = \"postgres://arc:s3cret@db1/m\"\n",
                "backend is \"sqlite\"",
            ),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://arc:s3cret@db1:x/m\"\n",
                "arc:***@db1:x/m",
            ),
            ("[store]\nbackend = \"mysql\"\n", "unknown variant"),
        ] {
            let e = Config::from_toml(text, "t").expect_err(text).to_string();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains("s3cret"), "{text}: {e}");
        }
    }

    #[test]
    fn embedded_default_equals_code_default() {
        // The commented file and the Default impls must say the same thing.
        assert_eq!(Config::embedded().expect("embedded config is valid"), Config::default());
    }

    #[test]
    fn shipped_example_configs_parse() {
        for dir in ["/config", "/dist"] {
            let dir = format!("{}{dir}", env!("CARGO_MANIFEST_DIR"));
            for entry in std::fs::read_dir(&dir).expect("config dir") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "toml") {
                    Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
            }
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::from_toml("[receiver]\ntcp_lissen = \"x\"\n", "t").expect_err("unknown key");
        assert!(e.to_string().contains("tcp_lissen"), "{e}");
        let e = Config::from_toml("[recevier]\n", "t").expect_err("unknown table");
        assert!(e.to_string().contains("recevier"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::from_toml("[receiver]\ntcp_listen = \"localhost\"\n", "t").expect_err("bad addr");
        assert!(e.to_string().contains("receiver.tcp_listen"), "{e}");
        let e = Config::from_toml("[receiver]\nmax_connections = 0\n", "t").expect_err("zero");
        assert!(e.to_string().contains("receiver.max_connections"), "{e}");
        for key in [
            "max_connections",
            "max_connections_per_peer",
            "login_timeout_secs",
            "idle_timeout_secs",
        ] {
            let e = Config::from_toml(&format!("[operator]\n{key} = 0\n"), "t").expect_err("zero");
            assert!(e.to_string().contains(&format!("operator.{key}")), "{e}");
        }
        let e = Config::from_toml("[console]\ntime_zone = \"Europe/Amsterdm\"\n", "t").expect_err("zone");
        assert!(e.to_string().contains("console.time_zone"), "{e}");
        let c = Config::from_toml(
            "[console]\ntime_zone = \"Europe/Amsterdam\"\nauto_present = true\n",
            "t",
        )
        .expect("a zone");
        assert!(c.console.auto_present);
        let ok = Config::from_toml("[receiver]\nudp_listen = \"\"\n", "t").expect("disable udp");
        assert_eq!(ok.udp_addr(), None);
    }

    /// A share over 100 % can never be reached, and a minimum of one would make one silent
    /// panel of a line of two a mass loss.
    #[test]
    fn mass_loss_of_a_line_needs_a_share_and_a_minimum_of_two() {
        for (key, value) in [("mass_loss_line_percent", 101), ("mass_loss_line_min_accounts", 1)] {
            let e = Config::from_toml(&format!("[alarms]\n{key} = {value}\n"), "t").expect_err(key);
            assert!(e.to_string().contains(&format!("alarms.{key}")), "{e}");
        }
        let c = Config::from_toml(
            "[alarms]\nmass_loss_line_percent = 0\nmass_loss_line_min_accounts = 2\n",
            "t",
        )
        .expect("off, and the least minimum");
        let m = c.alarms.mass_loss();
        assert_eq!((m.line_percent, m.line_min_accounts), (0, 2));
    }
}
