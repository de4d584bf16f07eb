//! `meldkamer backup DEST`: a consistent copy of the live database while the daemon runs
//! ([`crate::store::backup::online`]), and beside it `DEST.audit-heads`, the audit heads that
//! the copy must match (those published up to the copy's last audit row, and that row), for
//! `meldkamer audit verify --heads DEST.audit-heads` after a restore. The live heads file
//! would name rows written after the backup, which a restored copy rightly lacks.
//!
//! The key files are not in the database and so not in the copy; the report names them so
//! they are backed up apart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::store::backup::BackupError;
use crate::verify::published::{HeadsError, read_heads};

/// Errors of `meldkamer backup`.
#[derive(Debug, thiserror::Error)]
pub enum BackupCmdError {
    /// No database to copy.
    #[error("no database at {0}")]
    NoDatabase(String),
    /// The copy failed (nothing is left at the destination).
    #[error("backup of {path} failed")]
    Copy {
        /// The database.
        path: String,
        /// Why.
        #[source]
        source: BackupError,
    },
    /// The live heads file cannot be read.
    #[error(transparent)]
    Heads(#[from] HeadsError),
    /// Reading the copy's audit head failed.
    #[error("reading the copy {0}")]
    Read(String, #[source] crate::store::StoreError),
    /// Writing `DEST.audit-heads` failed.
    #[error("writing {path}")]
    WriteHeads {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The audit heads file written beside a backup `dest`.
pub fn heads_path(dest: &Path) -> PathBuf {
    let mut p = dest.as_os_str().to_owned();
    p.push(".audit-heads");
    PathBuf::from(p)
}

/// Copy the database of `cfg` to `dest`, write its heads file, report.
pub fn run(cfg: &Config, dest: &Path, out: &mut dyn Write) -> Result<(), BackupCmdError> {
    let db = cfg.store.path.display().to_string();
    if !cfg.store.path.exists() {
        return Err(BackupCmdError::NoDatabase(db));
    }
    let busy = Duration::from_millis(cfg.store.busy_timeout_ms);
    let copied = crate::store::backup::online(&cfg.store.path, dest, busy).map_err(|source| BackupCmdError::Copy {
        path: db.clone(),
        source,
    })?;
    let read = |e| BackupCmdError::Read(dest.display().to_string(), e);
    let copy = crate::store::open_read(dest, busy).map_err(read)?;
    let head = crate::verify::audit::head(&copy).map_err(read)?;
    drop(copy);

    // The heads the copy must match: those published up to its last row, then that row.
    let live = cfg.audit.heads_path(&cfg.store);
    let mut text = String::new();
    if let Some((last, hash)) = head {
        for (id, h) in read_heads(&live)?.unwrap_or_default() {
            if id <= last {
                text.push_str(&format!("{id}:{}\n", hex::encode(h)));
            }
        }
        let now = crate::clock::unix_ms(time::OffsetDateTime::now_utc());
        text.push_str(&format!(
            "{last}:{} {} backup\n",
            hex::encode(hash),
            crate::clock::rfc3339_ms(now)
        ));
    }
    let heads = heads_path(dest);
    write_synced(&heads, text.as_bytes()).map_err(|source| BackupCmdError::WriteHeads {
        path: heads.clone(),
        source,
    })?;

    let _ = writeln!(
        out,
        "backup of {db} written to {} ({} pages; {} events, the newest #{}; quick_check ok)",
        dest.display(),
        copied.pages,
        copied.events,
        copied.newest_event.map_or("-".to_string(), |n| n.to_string())
    );
    match head {
        Some((id, hash)) => {
            let _ = writeln!(
                out,
                "audit log up to row #{id}, head {id}:{}; its heads: {} (after a restore: meldkamer audit verify --heads {})",
                hex::encode(hash),
                heads.display(),
                heads.display()
            );
        }
        None => {
            let _ = writeln!(out, "audit log empty");
        }
    }
    let _ = writeln!(
        out,
        "not in the copy, back these up apart (and keep them apart from it): pepper {}, keys file {}, audit key {}",
        cfg.codes.pepper_path(&cfg.store).display(),
        cfg.store.keys_path().display(),
        cfg.audit.key_path(&cfg.store).display()
    );
    Ok(())
}

/// Write `bytes` to a new owner-only file `path` and sync it.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = crate::hardening::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
