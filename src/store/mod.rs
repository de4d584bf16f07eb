//! SQLite storage (and, being built, PostgreSQL: [`pg`]): schema and migrations, the single writer task with group commit, the read
//! side for everyone else, and the DC-09 account keys sealed at rest ([`sealed`]).
//!
//! Durability: every connection runs `journal_mode=WAL` and `synchronous=FULL`, so a committed
//! transaction survives a crash or power loss on storage that honours fsync. The writer owns the
//! only write connection; receivers send it frames over a bounded channel and wait for the
//! commit before they acknowledge.

pub mod accounts;
pub mod archive;
pub mod backup;
mod bulk;
pub mod checkpoint;
pub mod heads;
pub mod pg;
pub mod retention;
pub mod schema;
pub mod sealed;
pub mod writer;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer meldkamer.
    #[error("database schema version {found} is newer than this program supports ({supported})")]
    TooNew {
        /// In the file.
        found: i64,
        /// Known here.
        supported: i64,
    },
    /// The database file could not be created.
    #[error("cannot create the database file {path}")]
    Create {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An audit row was to be written, but no audit key is loaded for this database.
    #[error("no audit key is loaded for this database (the audit log is keyed); nothing was written")]
    NoAuditKey,
    /// An audit row was not stored (a trigger swallowed it).
    #[error("the audit row was not stored (is a trigger on audit_log dropping rows?); nothing was written")]
    AuditNotStored,
    /// Sealing a DC-09 key failed (no randomness).
    #[error("sealing an account key failed")]
    Seal,
    /// A sealed DC-09 key does not open.
    #[error(
        "the DC-09 key of account {account} does not open with the keys file (another keys file, or the row was \
         altered): restore the right keys file, or import the account's records again with \
         `meldkamer import --replace-lost-keys`"
    )]
    AccountKey {
        /// The account number.
        account: String,
    },
    /// The writer is gone (shutting down).
    #[error("the store writer has stopped")]
    WriterGone,
    /// A pragma did not take.
    #[error("could not set {0}")]
    Pragma(&'static str),
    /// A schema upgrade found the database other than it expects.
    #[error("schema upgrade to version {version}: {why}")]
    Migration {
        /// The version the step produces.
        version: i64,
        /// What was wrong.
        why: String,
    },
}

/// Apply the connection settings every connection uses.
fn configure(conn: &Connection, busy_timeout: Duration) -> Result<(), StoreError> {
    conn.busy_timeout(busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Pragma("journal_mode=WAL"));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if sync != 2 {
        return Err(StoreError::Pragma("synchronous=FULL"));
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Open (creating if needed) the database for writing and bring its schema up to date. A new
/// database file is created owner-only (0600) before SQLite opens it; SQLite gives its `-wal`
/// and `-shm` the same mode.
pub fn open_write(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    crate::hardening::precreate_private(path).map_err(|source| StoreError::Create {
        path: path.display().to_string(),
        source,
    })?;
    let conn = Connection::open(path)?;
    configure(&conn, busy_timeout)?;
    // The writer cycles through a few dozen statements (frames, events, correlation, jobs):
    // keep them all prepared.
    conn.set_prepared_statement_cache_capacity(128);
    schema::migrate(&conn)?;
    Ok(conn)
}

/// Open the database for reading only (it must exist and be migrated).
pub fn open_read(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}
