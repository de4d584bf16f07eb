//! `meldkamer audit verify | list`, on SQLite or PostgreSQL (`--db`, or `[store] backend`): check the audit log's chain (with the audit key, against
//! every published head); show recent rows (one line each: control characters in rows written
//! before fields were escaped are escaped here).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::rfc3339_ms;
use crate::config::{Config, StoreBackend};
use crate::store::StoreError;
use crate::store::pg::{DbUrl, PgError};
use crate::verify::audit::{self, Break, ChainReport};
use crate::verify::published::{HeadsError, read_heads};

/// `meldkamer audit …`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Configuration file (for the database path).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// The database instead of the configuration's: a SQLite file, `sqlite:PATH`, or a
    /// `postgres://…` URL.
    #[arg(long, global = true, value_name = "DB")]
    pub db: Option<String>,
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
    /// Reading PostgreSQL failed.
    #[error("reading the database {url}")]
    Pg {
        /// The URL, password starred.
        url: String,
        /// Why.
        #[source]
        source: PgError,
    },
    /// The runtime for PostgreSQL could not start.
    #[error("starting the runtime")]
    Runtime(#[source] std::io::Error),
}

/// The database an audit command reads.
enum Database {
    Sqlite(PathBuf),
    Postgres(DbUrl),
}

/// `--db`, else the configuration's store.
fn database(cfg: &Config, args: &AuditArgs) -> Result<Database, AuditError> {
    match args.db.as_deref() {
        Some(db) if db.starts_with("postgres://") || db.starts_with("postgresql://") => {
            let url = DbUrl::parse(db).map_err(|source| AuditError::Pg {
                url: crate::store::pg::redact(db),
                source,
            })?;
            Ok(Database::Postgres(url))
        }
        Some(db) => Ok(Database::Sqlite(PathBuf::from(
            db.strip_prefix("sqlite:").unwrap_or(db),
        ))),
        None => match (cfg.store.backend, &cfg.store.url) {
            (StoreBackend::Postgres, Some(url)) => Ok(Database::Postgres(url.clone())),
            _ => Ok(Database::Sqlite(cfg.store.path.clone())),
        },
    }
}

/// Run an audit command.
pub fn run(cfg: &Config, args: &AuditArgs, out: &mut dyn Write) -> Result<(), AuditError> {
    match database(cfg, args)? {
        Database::Sqlite(path) => run_sqlite(cfg, &path, args, out),
        Database::Postgres(url) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(AuditError::Runtime)?;
            rt.block_on(run_postgres(cfg, &url, args, out))
        }
    }
}

/// The heads to check: `--anchor` and the heads file. Also the last one published and how many.
type Expected = (Vec<(i64, [u8; 32])>, Option<(i64, [u8; 32])>, usize, PathBuf);

fn expected_heads(cfg: &Config, anchor: &Option<String>, heads: &Option<PathBuf>) -> Result<Expected, AuditError> {
    let mut expected = Vec::new();
    if let Some(a) = anchor {
        expected.push(audit::parse_anchor(a).ok_or(AuditError::Anchor)?);
    }
    let heads_path = heads.clone().unwrap_or_else(|| cfg.audit.heads_path(&cfg.store));
    let published = read_heads(&heads_path)?;
    let last_published = published.as_ref().and_then(|h| h.last().copied());
    let n_published = published.as_ref().map_or(0, Vec::len);
    expected.extend(published.unwrap_or_default());
    Ok((expected, last_published, n_published, heads_path))
}

/// Say what the chain check found; an error when it is broken or unprotected.
fn report(r: ChainReport, expected: &Expected, out: &mut dyn Write) -> Result<(), AuditError> {
    let (_, last_published, n_published, heads_path) = expected;
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

fn list_line(r: &audit::AuditRow, out: &mut dyn Write) {
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

/// The audit commands on PostgreSQL: the same chain check ([`audit::ChainWalk`]) over rows read
/// from there, the same key file and heads.
async fn run_postgres(cfg: &Config, url: &DbUrl, args: &AuditArgs, out: &mut dyn Write) -> Result<(), AuditError> {
    let pg = |source| AuditError::Pg {
        url: url.redacted(),
        source,
    };
    let client = crate::store::pg::connect(url).await.map_err(pg)?;
    match &args.command {
        AuditCommand::Verify { anchor, heads } => {
            let expected = expected_heads(cfg, anchor, heads)?;
            let keyed = crate::store::pg::audit::keyed_rows(&client).await.map_err(pg)?;
            let key = audit::load_key_for(&cfg.audit.key_path(&cfg.store), keyed, false)?.map(|(k, _)| k);
            let r = crate::store::pg::audit::verify(&client, key.as_ref(), &expected.0)
                .await
                .map_err(pg)?;
            report(r, &expected, out)
        }
        AuditCommand::List { last } => {
            let top = crate::store::pg::audit::last_id(&client).await.map_err(pg)?;
            let rows = crate::store::pg::audit::rows(&client, (top - last.max(&0)).max(0), *last)
                .await
                .map_err(pg)?;
            for r in &rows {
                list_line(r, out);
            }
            Ok(())
        }
    }
}

fn run_sqlite(cfg: &Config, db: &Path, args: &AuditArgs, out: &mut dyn Write) -> Result<(), AuditError> {
    let path = db.display().to_string();
    if !db.exists() {
        return Err(AuditError::NoDatabase(path));
    }
    let store = |source| AuditError::Store {
        path: path.clone(),
        source,
    };
    let conn = crate::store::open_read(db, Duration::from_millis(cfg.store.busy_timeout_ms)).map_err(store)?;
    match &args.command {
        AuditCommand::Verify { anchor, heads } => {
            let expected = expected_heads(cfg, anchor, heads)?;
            // Read-only: a missing key file is not created here.
            let key = audit::load_key(&cfg.audit.key_path(&cfg.store), &conn, false)?.map(|(k, _)| k);
            let r = audit::verify(&conn, key.as_ref(), &expected.0).map_err(store)?;
            report(r, &expected, out)
        }
        AuditCommand::List { last } => {
            let top: i64 = conn
                .query_row("SELECT ifnull(max(id), 0) FROM audit_log", [], |r| r.get(0))
                .map_err(|e| store(e.into()))?;
            for r in audit::rows(&conn, (top - last.max(&0)).max(0), *last).map_err(store)? {
                list_line(&r, out);
            }
            Ok(())
        }
    }
}
