//! `meldkamer audit verify | list`: check the audit log's chain (with the audit key, against
//! every published head); show recent rows (one line each: control characters in rows written
//! before fields were escaped are escaped here).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::clock::rfc3339_ms;
use crate::config::Config;
use crate::store::StoreError;
use crate::verify::audit::{self, Break};
use crate::verify::published::{HeadsError, read_heads};

/// `meldkamer audit …`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Configuration file (for the database path).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// The audit commands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute the chain with the audit key; check every head in the heads file (and
    /// --anchor); name the first broken row (exit status 1 if any). Prints the head to copy to
    /// a separate system.
    Verify {
        /// An earlier head, `ID:SHA256HEX`, that must still be in the chain unchanged.
        #[arg(long)]
        anchor: Option<String>,
        /// The published heads to check (default: `[audit] heads_file`).
        #[arg(long, value_name = "FILE")]
        heads: Option<PathBuf>,
    },
    /// Show the most recent rows.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        last: i64,
    },
}

/// Errors of the audit commands.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// No database.
    #[error("no database at {0}")]
    NoDatabase(String),
    /// Reading failed.
    #[error("reading the database {path}")]
    Store {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// A bad anchor argument.
    #[error("--anchor must be ID:SHA256HEX (64 hex digits)")]
    Anchor,
    /// The chain is broken.
    #[error("audit log broken: {0}")]
    Broken(Break),
    /// The append-only triggers were removed, altered, or joined by others.
    #[error(
        "audit log not protected: the triggers refusing UPDATE and DELETE are missing or altered, or another trigger \
         sits on the table"
    )]
    Triggers,
    /// The audit key file is unusable.
    #[error(transparent)]
    Key(#[from] audit::AuditKeyError),
    /// The heads file is unreadable.
    #[error(transparent)]
    Heads(#[from] HeadsError),
}

/// Run an audit command.
pub fn run(cfg: &Config, args: &AuditArgs, out: &mut dyn Write) -> Result<(), AuditError> {
    let path = cfg.store.path.display().to_string();
    if !cfg.store.path.exists() {
        return Err(AuditError::NoDatabase(path));
    }
    let store = |source| AuditError::Store {
        path: path.clone(),
        source,
    };
    let conn =
        crate::store::open_read(&cfg.store.path, Duration::from_millis(cfg.store.busy_timeout_ms)).map_err(store)?;
    match &args.command {
        AuditCommand::Verify { anchor, heads } => {
            let mut expected = Vec::new();
            if let Some(a) = anchor {
                expected.push(audit::parse_anchor(a).ok_or(AuditError::Anchor)?);
            }
            let heads_path = heads.clone().unwrap_or_else(|| cfg.audit.heads_path(&cfg.store));
            let published = read_heads(&heads_path)?;
            let last_published = published.as_ref().and_then(|h| h.last().copied());
            let n_published = published.as_ref().map_or(0, Vec::len);
            expected.extend(published.unwrap_or_default());
            // Read-only: a missing key file is not created here.
            let key = audit::load_key(&cfg.audit.key_path(&cfg.store), &conn, false)?.map(|(k, _)| k);
            let r = audit::verify(&conn, key.as_ref(), &expected).map_err(store)?;
            if let Some(b) = r.broken {
                let _ = writeln!(out, "audit log BROKEN at row #{}: {b}", b.row());
                if let (Break::Cut { .. } | Break::Anchor { .. }, Some((id, h))) = (&b, last_published) {
                    let _ = writeln!(
                        out,
                        "last published head: {id}:{} (in {})",
                        hex::encode(h),
                        heads_path.display()
                    );
                }
                return Err(AuditError::Broken(b));
            }
            if !r.triggers_intact {
                return Err(AuditError::Triggers);
            }
            match last_published {
                Some((id, _)) => {
                    let _ = writeln!(
                        out,
                        "{n_published} published heads in {} found unchanged, the last row #{id}",
                        heads_path.display()
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "no published heads in {}: rows cut off the end or a rewritten chain cannot show",
                        heads_path.display()
                    );
                }
            }
            match r.head {
                Some((id, h)) => {
                    let keyed = match r.keyed_from {
                        Some(1) => " (all keyed)".to_string(),
                        Some(k) => format!(" (rows before #{k} plain-hashed, keyed from #{k})"),
                        None => " (none keyed)".to_string(),
                    };
                    let _ = writeln!(out, "audit log intact: {} rows{keyed}", r.rows);
                    let _ = writeln!(
                        out,
                        "head {id}:{}  (copy this elsewhere; check later with --anchor)",
                        hex::encode(h)
                    );
                }
                None => {
                    let _ = writeln!(out, "audit log intact: empty");
                }
            }
            Ok(())
        }
        AuditCommand::List { last } => {
            let top: i64 = conn
                .query_row("SELECT ifnull(max(id), 0) FROM audit_log", [], |r| r.get(0))
                .map_err(|e| store(e.into()))?;
            for r in audit::rows(&conn, (top - last.max(&0)).max(0), *last).map_err(store)? {
                let _ = writeln!(
                    out,
                    "#{} {} {} {} {} [{}]{}{}",
                    r.id,
                    rfc3339_ms(r.at_ms),
                    audit::printable(&r.actor),
                    audit::printable(&r.action),
                    audit::printable(&r.subject),
                    audit::printable(&r.result),
                    r.failures.map_or(String::new(), |f| format!(" failures={f}")),
                    if r.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", audit::printable(&r.detail))
                    }
                );
            }
            Ok(())
        }
    }
}
