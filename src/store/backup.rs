//! Online backup: a consistent copy of the live database while the daemon runs.
//!
//! SQLite's online backup API copies every page of the database in one step, inside one read
//! transaction on a connection of its own. In WAL mode a reader neither blocks the writer nor
//! is blocked by it, and sees the database as of the moment its transaction began: every
//! transaction committed before then (so every event acknowledged before the backup started)
//! is in the copy, nothing of a later one is. (Copied in several steps, the API would start
//! over whenever the writer commits in between, which under load may be forever.)
//!
//! The copy is written beside its destination as `DEST.part`, owner-only, checked with
//! `PRAGMA quick_check`, synced, and only then renamed to `DEST` (and the directory synced), so
//! a `DEST` that exists is a whole, checked copy. The key files (pepper, keys file, audit key)
//! are never in the database and so never in the copy: they are backed up apart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// What a finished backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Pages copied.
    pub pages: i64,
    /// Events in the copy.
    pub events: i64,
    /// The newest event's id, if any.
    pub newest_event: Option<i64>,
}

/// Why a backup failed. Nothing is left at the destination.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination exists: a backup never overwrites one.
    #[error("{0} exists; a backup never overwrites a file")]
    Exists(PathBuf),
    /// Writing the copy failed.
    #[error("writing the copy {path}")]
    Io {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading the database or writing the copy failed in SQLite.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The copy does not pass `PRAGMA quick_check`.
    #[error("the copy failed its check: {0}")]
    Check(String),
}

/// Copy the database at `src` to `dest` (which must not exist) while others write to it.
pub fn online(src: &Path, dest: &Path, busy_timeout: Duration) -> Result<Copied, BackupError> {
    if dest.exists() {
        return Err(BackupError::Exists(dest.to_path_buf()));
    }
    let mut part = dest.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Io { path, source }
    };
    // A `.part` left by a backup that was killed is ours to replace.
    match std::fs::remove_file(&part) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&part)(e)),
        _ => {}
    }
    crate::hardening::precreate_private(&part).map_err(io(&part))?;
    let result = copy_and_check(src, &part, busy_timeout);
    let copied = match result {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::File::open(&part)
        .and_then(|f| f.sync_all())
        .map_err(io(&part))?;
    std::fs::rename(&part, dest).map_err(io(dest))?;
    sync_dir(dest).map_err(io(dest))?;
    Ok(copied)
}

fn copy_and_check(src: &Path, part: &Path, busy_timeout: Duration) -> Result<Copied, BackupError> {
    let from = super::open_read(src, busy_timeout)?;
    let mut to = Connection::open(part).map_err(StoreError::from)?;
    let pages = {
        let backup = rusqlite::backup::Backup::new(&from, &mut to).map_err(StoreError::from)?;
        // One step: one read transaction, one consistent snapshot (see the module comment).
        backup.step(-1).map_err(StoreError::from)?;
        i64::from(backup.progress().pagecount)
    };
    drop(to);
    drop(from);
    let copy = Connection::open_with_flags(part, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(StoreError::from)?;
    let check: String = copy
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(StoreError::from)?;
    if check != "ok" {
        return Err(BackupError::Check(check));
    }
    let (events, newest_event) = copy
        .query_row("SELECT count(*), max(id) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(StoreError::from)?;
    // The copy is in WAL mode like its source: fold what checking it wrote back into the file,
    // so DEST is one file.
    copy.pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .map_err(StoreError::from)?;
    drop(copy);
    Ok(Copied {
        pages,
        events,
        newest_event,
    })
}

/// Sync the directory holding `path`, so a rename into it survives a crash.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
