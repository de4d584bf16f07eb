//! `meldkamer operator add|disable|enable|list` and `meldkamer console`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::config::Config;
use crate::operator::Role;
use crate::operator::accounts::{self, OperatorError};

/// Errors of the operator commands.
#[derive(Debug, thiserror::Error)]
pub enum OperatorCmdError {
    /// Operator problem.
    #[error(transparent)]
    Operator(#[from] OperatorError),
    /// Database.
    #[error("opening the database {path}")]
    Store {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: crate::store::StoreError,
    },
    /// The audit key.
    #[error("audit log")]
    Audit(#[from] crate::verify::SetupError),
    /// Reading the password.
    #[error("reading the password")]
    Read(#[source] std::io::Error),
    /// The two passwords differ.
    #[error("the passwords do not match")]
    Mismatch,
    /// No terminal to ask the password on.
    #[error(
        "stdin is not a terminal, so the password cannot be asked for: pipe it in with --password-stdin (one line)"
    )]
    NoTerminal,
    /// Console trouble.
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    /// No endpoint.
    #[error("the operator API socket is disabled in the configuration; use --socket or --connect")]
    NoEndpoint,
    /// The pepper could not be loaded.
    #[error("{0}")]
    Setup(String),
    /// --time-zone names no time zone.
    #[error("--time-zone: {0}")]
    TimeZone(#[from] crate::console::localtime::UnknownZone),
}

fn actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

fn open(cfg: &Config) -> Result<rusqlite::Connection, OperatorCmdError> {
    let conn = crate::store::open_write(&cfg.store.path, Duration::from_millis(cfg.store.busy_timeout_ms)).map_err(
        |source| OperatorCmdError::Store {
            path: cfg.store.path.display().to_string(),
            source,
        },
    )?;
    // Operator changes write audit rows: they are keyed.
    crate::verify::audit_key_from_config(cfg)?;
    Ok(conn)
}

fn now_ms() -> i64 {
    crate::clock::unix_ms(time::OffsetDateTime::now_utc())
}

/// Read a password: from stdin (one line) with `from_stdin`, else twice without echo, which
/// needs a terminal (without one, the prompt failed with "No such device or address" or
/// waited where a script did not look).
pub fn read_password(from_stdin: bool) -> Result<Zeroizing<String>, OperatorCmdError> {
    if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(OperatorCmdError::Read)?;
        let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_string());
        return Ok(trimmed);
    }
    if !std::io::stdin().is_terminal() {
        return Err(OperatorCmdError::NoTerminal);
    }
    let a = Zeroizing::new(rpassword::prompt_password("Password: ").map_err(OperatorCmdError::Read)?);
    let b = Zeroizing::new(rpassword::prompt_password("Again: ").map_err(OperatorCmdError::Read)?);
    if a.as_str() != b.as_str() {
        return Err(OperatorCmdError::Mismatch);
    }
    Ok(a)
}

fn audit(conn: &mut rusqlite::Connection, action: &str, subject: &str, result: &str) -> Result<(), OperatorCmdError> {
    let map = |source: crate::store::StoreError| OperatorCmdError::Store {
        path: String::new(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| map(e.into()))?;
    crate::verify::audit::append(
        &tx,
        now_ms(),
        &crate::verify::audit::AuditRecord {
            actor: &actor(),
            action,
            subject,
            detail: "",
            result,
            failures: None,
        },
    )
    .map_err(map)?;
    tx.commit().map_err(|e| map(e.into()))
}

/// `operator add NAME --role ROLE`.
pub fn add(
    cfg: &Config,
    name: &str,
    role: Role,
    password_stdin: bool,
    out: &mut dyn Write,
) -> Result<(), OperatorCmdError> {
    let password = read_password(password_stdin)?;
    let hasher = hasher(cfg)?;
    let mut conn = open(cfg)?;
    let r = accounts::add(&conn, &hasher, name, role, &password, now_ms());
    let result = match &r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    audit(
        &mut conn,
        "operator_add",
        &format!("operator:{name} role:{}", role.as_str()),
        &result,
    )?;
    r?;
    let _ = writeln!(out, "operator {name} added with role {}", role.as_str());
    Ok(())
}

/// Run `f` in one immediate transaction, with its audit record in the same transaction.
fn in_transaction<T>(
    cfg: &Config,
    action: &str,
    subject: &str,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, OperatorError>,
) -> Result<T, OperatorCmdError> {
    let map = |source: crate::store::StoreError| OperatorCmdError::Store {
        path: cfg.store.path.display().to_string(),
        source,
    };
    let mut conn = open(cfg)?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| map(e.into()))?;
    let r = f(&tx);
    let result = match &r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    crate::verify::audit::append(
        &tx,
        now_ms(),
        &crate::verify::audit::AuditRecord {
            actor: &actor(),
            action,
            subject,
            detail: "",
            result: &result,
            failures: None,
        },
    )
    .map_err(map)?;
    tx.commit().map_err(|e| map(e.into()))?;
    Ok(r?)
}

/// `operator disable|enable NAME`. Disabling ends the operator's sessions at once, even while
/// the daemon runs: its next request, and its queue subscription within a second, are refused,
/// and the alarms it handled go back to the queue.
pub fn set_disabled(cfg: &Config, name: &str, disabled: bool, out: &mut dyn Write) -> Result<(), OperatorCmdError> {
    let action = if disabled {
        "operator_disable"
    } else {
        "operator_enable"
    };
    let ended = in_transaction(cfg, action, &format!("operator:{name}"), |tx| {
        accounts::set_disabled(tx, name, disabled, now_ms())
    })?;
    let _ = writeln!(
        out,
        "operator {name} {}{}",
        if disabled { "disabled" } else { "enabled" },
        if ended > 0 {
            format!(" ({ended} session(s) ended)")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The pepper-keyed hasher of the configuration (passwords are peppered like the codes).
fn hasher(cfg: &Config) -> Result<crate::verify::Hasher, OperatorCmdError> {
    crate::verify::hasher_from_config(cfg).map_err(|e| OperatorCmdError::Setup(e.to_string()))
}

/// `operator password NAME`: a new password (read like `operator add`'s); ends the operator's
/// sessions.
pub fn set_password(
    cfg: &Config,
    name: &str,
    password_stdin: bool,
    out: &mut dyn Write,
) -> Result<(), OperatorCmdError> {
    let password = read_password(password_stdin)?;
    let hasher = hasher(cfg)?;
    let ended = in_transaction(cfg, "operator_password", &format!("operator:{name}"), |tx| {
        accounts::set_password(tx, &hasher, name, &password, now_ms())
    })?;
    let _ = writeln!(out, "operator {name} has a new password ({ended} session(s) ended)");
    Ok(())
}

/// `operator role NAME ROLE`: ends the operator's sessions at once (a session carries the role
/// it was opened with).
pub fn set_role(cfg: &Config, name: &str, role: Role, out: &mut dyn Write) -> Result<(), OperatorCmdError> {
    let ended = in_transaction(
        cfg,
        "operator_role",
        &format!("operator:{name} role:{}", role.as_str()),
        |tx| accounts::set_role(tx, name, role, now_ms()),
    )?;
    let _ = writeln!(
        out,
        "operator {name} now has the role {} ({ended} session(s) ended)",
        role.as_str()
    );
    Ok(())
}

/// `operator list`.
pub fn list(cfg: &Config, out: &mut dyn Write) -> Result<(), OperatorCmdError> {
    let conn = open(cfg)?;
    for o in accounts::list(&conn)? {
        let state = if o.disabled {
            "disabled".to_string()
        } else if o.failed_logins > 0 {
            format!("active ({} failed login(s) since the last one)", o.failed_logins)
        } else {
            "active".to_string()
        };
        let _ = writeln!(out, "{:<24} {:<10} {state}", o.name, o.role.as_str());
    }
    Ok(())
}

/// How the console looks, from its command line (over `[console]`).
#[derive(Debug, Clone, Default)]
pub struct ConsoleLook {
    /// `--auto-present`: on even when `[console] auto_present` is off.
    pub auto_present: bool,
    /// `--time-zone`.
    pub time_zone: Option<String>,
}

/// `console`: connect to the socket (default from the configuration) or a TLS address.
pub fn console(
    cfg: &Config,
    socket: Option<PathBuf>,
    connect: Option<String>,
    ca: Option<PathBuf>,
    server_name: Option<String>,
    look: ConsoleLook,
) -> Result<(), OperatorCmdError> {
    use crate::console::client::Endpoint;
    let endpoint = match (socket, connect) {
        (_, Some(addr)) => {
            let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h).to_string();
            Endpoint::Tls {
                server_name: server_name.unwrap_or(host),
                ca: ca.unwrap_or_else(|| PathBuf::from(&cfg.operator.tls_cert)),
                addr,
            }
        }
        (Some(p), None) => Endpoint::Unix(p),
        (None, None) => Endpoint::Unix(cfg.operator_socket().ok_or(OperatorCmdError::NoEndpoint)?),
    };
    let zone = look.time_zone.as_deref().unwrap_or(&cfg.console.time_zone);
    let options = crate::console::app::Options {
        time: crate::console::localtime::LocalTime::named(zone)?,
        auto_present: look.auto_present || cfg.console.auto_present,
    };
    crate::console::run(endpoint, options)?;
    Ok(())
}
