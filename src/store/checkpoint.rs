//! WAL checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the commit that pushes the WAL past 1,000 pages:
//! that commit (and every ACK waiting on it) also copies the WAL into the database file and
//! flushes it. Profiling the writer at 64 connections put the checkpoint at 11–12 % of its
//! time, in one commit out of every few dozen. Here the writer's commit only nudges a
//! checkpointer thread with its own connection, which runs `PASSIVE` checkpoints (they never
//! block the writer). Under continuous writes a background checkpoint rarely finishes exactly
//! when the writer is between transactions, which is when SQLite may start the WAL over; so
//! past a hard bound the writer checkpoints the (by then small) remainder itself, as SQLite
//! would have, and the WAL starts over at its next transaction. The WAL stays bounded by
//! [`WalLimits::foreground_pages`] plus what one commit adds.

use std::ffi::c_int;
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::hooks::Wal;

use super::StoreError;

/// When checkpoints run, in WAL pages (frames) after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalLimits {
    /// From this size on, each commit nudges the background checkpointer.
    pub background_pages: u32,
    /// From this size on, the writer checkpoints itself after its commit.
    pub foreground_pages: u32,
}

impl Default for WalLimits {
    fn default() -> Self {
        // SQLite's own default threshold for the background; 64 MiB of 4 KiB pages as the bound.
        WalLimits {
            background_pages: 1_000,
            foreground_pages: 16_384,
        }
    }
}

/// Install the commit hook on the writer's connection and start the checkpointer thread. The
/// thread ends once the hook is removed (`conn.wal_hook(None)`) or the connection is closed;
/// join it then.
pub fn install(
    conn: &mut Connection,
    path: &Path,
    busy_timeout: Duration,
    limits: WalLimits,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let ckpt = Connection::open(path)?;
    super::configure(&ckpt, busy_timeout)?;
    let (nudge, wake) = sync_channel::<()>(1);
    let join = std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || {
            while wake.recv().is_ok() {
                let r = ckpt.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                });
                if let Err(e) = r {
                    tracing::warn!(error = %e, "background checkpoint failed; the writer's bound still holds");
                }
            }
        })
        .map_err(|_| StoreError::WriterGone)?;
    let mut nudged_at = 0;
    conn.wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
        on_commit(wal, pages, limits, &nudge, &mut nudged_at);
        // Never an error: the commit has happened; a checkpoint that could not run now runs
        // at a later commit.
        Ok(())
    }))?;
    Ok(join)
}

/// `nudged_at`: the WAL size at the last nudge. A nudge goes out each time the WAL grew by
/// `background_pages` since, so each background pass copies about that many new pages (as
/// SQLite's own automatic checkpoint would), not a few pages and a flush after every commit.
fn on_commit(wal: &mut Wal, pages: c_int, limits: WalLimits, nudge: &SyncSender<()>, nudged_at: &mut u32) {
    let pages = u32::try_from(pages).unwrap_or(0);
    if pages < *nudged_at {
        // The WAL started over.
        *nudged_at = 0;
    }
    if pages >= limits.foreground_pages {
        // PASSIVE: copies what it can without waiting; BUSY (the background holds the
        // checkpoint lock) just means the next commit tries again.
        let _ = wal.checkpoint();
    } else if pages >= *nudged_at + limits.background_pages {
        *nudged_at = pages;
        match nudge.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                // The checkpointer is gone: do what SQLite's automatic checkpoint would.
                let _ = wal.checkpoint();
            }
        }
    }
}
