//! `meldkamer service test | out-of-service | end | list`: a site or an account number on test
//! or out of service until a time, from the command line (the console's supervisor does the
//! same over the API). Written to the database as the daemon's writer would, audited with
//! `cli:USER`; a running daemon picks the change up within a second (`schedule_changes`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::correlate::service::{self, Mode, ServiceError};

/// `meldkamer service …`.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// Configuration file (for the database path).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: ServiceCommand,
}

/// Which site or account.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A site, by its reference: every account of it.
    #[arg(long)]
    pub site: Option<String>,
    /// An account number: every path of that transmitter.
    #[arg(long)]
    pub account: Option<String>,
}

/// Until when.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Until {
    /// Until this time (RFC 3339, e.g. 2026-01-15T16:00:00+01:00).
    #[arg(long)]
    pub until: Option<String>,
    /// For this long from now: 90m, 2h, 7d.
    #[arg(long = "for", value_name = "DURATION")]
    pub for_: Option<String>,
}

/// The service commands.
#[derive(Debug, clap::Subcommand)]
pub enum ServiceCommand {
    /// Put on test: events are stored and listed, no alarm; a summary when it ends (at most
    /// 7 days; it ends by itself).
    Test {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        until: Until,
        /// Why (audited).
        #[arg(long)]
        reason: String,
    },
    /// Put out of service: events go to the supervisor, no operator alarm (at most 366 days;
    /// it ends by itself).
    OutOfService {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        until: Until,
        /// Why (audited).
        #[arg(long)]
        reason: String,
    },
    /// End the test or out-of-service period of a site or account now.
    End {
        #[command(flatten)]
        target: Target,
    },
    /// The periods under way, and the tests ended in the last day.
    List,
}

/// Errors of `service`.
#[derive(Debug, thiserror::Error)]
pub enum ServiceCmdError {
    /// The database.
    #[error("the database {path}")]
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
    /// Refused.
    #[error("{0}")]
    Refused(#[from] ServiceError),
    /// A time or duration that does not read.
    #[error("{0}")]
    Usage(String),
    /// No database at the configured path (import records first).
    #[error("no database at {0} (import the records first)")]
    NoDatabase(String),
}

/// `90m`, `2h`, `7d` in milliseconds.
pub fn parse_for(s: &str) -> Option<i64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    let ms = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).filter(|x| *x > 0)
}

fn actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

/// Run a service command.
pub fn run(cfg: &Config, args: &ServiceArgs, out: &mut dyn Write) -> Result<(), ServiceCmdError> {
    let path = cfg.store.path.display().to_string();
    let store = |source: crate::store::StoreError| ServiceCmdError::Store {
        path: path.clone(),
        source,
    };
    let now = crate::clock::unix_ms(time::OffsetDateTime::now_utc());
    let busy = Duration::from_millis(cfg.store.busy_timeout_ms);
    if !cfg.store.path.exists() {
        return Err(ServiceCmdError::NoDatabase(path.clone()));
    }
    if let ServiceCommand::List = args.command {
        let conn = crate::store::open_read(&cfg.store.path, busy).map_err(store)?;
        let periods = service::list(&conn, now).map_err(store)?;
        if periods.is_empty() {
            let _ = writeln!(out, "no site or account is on test or out of service");
        }
        for p in periods {
            let target = if p.account.is_empty() {
                format!("site {}", p.site_ref)
            } else {
                format!("account {}", p.account)
            };
            let state = match p.ended_ms {
                Some(e) => format!("ended {}", crate::clock::rfc3339_ms(e)),
                None => format!("until {}", crate::clock::rfc3339_ms(p.until_ms)),
            };
            let _ = writeln!(
                out,
                "{target}: {} {state}, by {}: {} ({} event(s))",
                p.mode.label(),
                p.set_by,
                p.reason,
                p.events
            );
        }
        return Ok(());
    }
    let (target, set) = match &args.command {
        ServiceCommand::Test { target, until, reason } => (target, Some((Mode::Test, until, reason))),
        ServiceCommand::OutOfService { target, until, reason } => (target, Some((Mode::OutOfService, until, reason))),
        ServiceCommand::End { target } => (target, None),
        ServiceCommand::List => return Ok(()),
    };
    let until = match &set {
        Some((_, u, _)) => Some(match (&u.until, &u.for_) {
            (Some(t), _) => time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map(crate::clock::unix_ms)
                .map_err(|e| ServiceCmdError::Usage(format!("--until {t:?} is not an RFC 3339 time: {e}")))?,
            (None, Some(d)) => parse_for(d)
                .and_then(|ms| now.checked_add(ms))
                .ok_or_else(|| ServiceCmdError::Usage(format!("--for {d:?}: 90m, 2h or 7d")))?,
            (None, None) => return Err(ServiceCmdError::Usage("--until or --for".into())),
        }),
        None => None,
    };
    let mut conn = crate::store::open_write(&cfg.store.path, busy).map_err(store)?;
    // The change is audited: the audit rows are keyed.
    crate::verify::audit_key_from_config(cfg)?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| store(e.into()))?;
    let who = actor();
    let found = service::resolve(&tx, target.site.as_deref(), target.account.as_deref()).map_err(store)?;
    let subject = match (&found, &target.site, &target.account) {
        (Some((_, _, name)), _, _) => name.clone(),
        (None, Some(s), _) => format!("site {s} (unknown)"),
        (None, _, a) => format!("account {} (unknown)", a.as_deref().unwrap_or("")),
    };
    let outcome: Result<String, ServiceError> = match (found, set, until) {
        (None, _, _) => Err(ServiceError::NotFound),
        (Some((t, site_id, _)), Some((mode, _, reason)), Some(until)) => {
            service::start(&tx, &t, site_id, mode, until, &who, reason, now).map(|_| {
                format!(
                    "{} until {}: {}",
                    mode.label(),
                    crate::clock::rfc3339_ms(until),
                    reason.trim()
                )
            })
        }
        (Some((t, _, _)), _, _) => service::end_target(&tx, &t, &who, now).map(|_| "period ended".to_string()),
    };
    let action = if set.is_some() { "service" } else { "service_end" };
    let result = match &outcome {
        Ok(what) => format!("ok: {what}"),
        Err(e) => format!("refused: {e}"),
    };
    crate::verify::audit::append(
        &tx,
        now,
        &crate::verify::audit::AuditRecord {
            actor: &who,
            action,
            subject: &subject,
            detail: "",
            result: &result,
            failures: None,
        },
    )
    .map_err(store)?;
    tx.commit().map_err(|e| store(e.into()))?;
    let what = outcome?;
    let _ = writeln!(out, "{subject}: {what}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_for("90m"), Some(90 * 60_000));
        assert_eq!(parse_for("2h"), Some(7_200_000));
        assert_eq!(parse_for("7d"), Some(7 * 86_400_000));
        assert_eq!(parse_for("0h"), None);
        assert_eq!(parse_for("2 weeks"), None);
        assert_eq!(parse_for("h"), None);
    }
}
