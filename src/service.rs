//! The service manager (systemd): readiness, reload and stop notices, and the watchdog.
//!
//! The notices go out with the `sd_notify` protocol (the `sd-notify` crate): one datagram to
//! `$NOTIFY_SOCKET` when it is set, nothing when it is not (started by hand, by a test, by
//! another supervisor), so none of this changes how the daemon runs elsewhere.
//!
//! - `READY=1` is sent by `serve` once [`crate::daemon::start`] has returned: the database is
//!   open and migrated, the writer runs, every configured listener is bound. With `Type=notify`
//!   systemd starts units ordered after ours only then, and `systemctl start` waits for it.
//! - `RELOADING=1` … `READY=1` bracket a `systemctl reload` (SIGHUP, [`crate::reload`]).
//! - `STOPPING=1` when a stop was asked for.
//! - Logs go to the journal as entries with fields (`journalctl -u meldkamer F_ACCOUNT=1234`)
//!   when systemd connected stderr to it ([`journal`]), to stderr otherwise.
//! - `WATCHDOG=1` every half of `$WATCHDOG_USEC` (systemd's `WatchdogSec=`), but only after the
//!   store writer has answered a ping ([`crate::store::writer::WriterHandle::alive`]): a writer
//!   stuck in a commit group (a lock never released, a disk that does not answer) stops the
//!   pings, and systemd restarts the service. Panels meanwhile get no ACK and fail over to
//!   their backup receiver, which is what DC-09 expects of a receiver that cannot store.

use std::time::Duration;

#[cfg(unix)]
use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::store::writer::WriterHandle;

/// Tell the service manager that the daemon is ready, with a one-line status for
/// `systemctl status`.
pub fn ready(status: &str) {
    #[cfg(unix)]
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
    #[cfg(not(unix))]
    let _ = status;
}

/// A reload (SIGHUP) has begun; [`ready`] ends it.
pub fn reloading() {
    #[cfg(unix)]
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A stop has begun.
pub fn stopping() {
    #[cfg(unix)]
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

#[cfg(unix)]
fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify the service manager (NOTIFY_SOCKET)");
    }
}

/// How often to ping the watchdog: half the interval the service manager set
/// (`$WATCHDOG_USEC`, for this process), or `None` when it set none.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero()).map(|d| d / 2)
}

/// Ping the watchdog every `period`, each time only once `writer` has shown that its loop
/// turns. `ping` sends the notice (`WATCHDOG=1` in [`spawn_watchdog`]; a counter in tests).
/// Ends when `cancel` fires or the writer is gone (shutting down).
pub async fn watchdog(writer: WriterHandle, period: Duration, cancel: CancellationToken, mut ping: impl FnMut()) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            alive = writer.alive() => if alive.is_err() { return },
        }
        ping();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Start the watchdog task when the service manager asked for one.
pub fn spawn_watchdog(writer: WriterHandle, cancel: CancellationToken) {
    let Some(period) = watchdog_period() else {
        return;
    };
    tracing::info!(
        every_ms = period.as_millis() as u64,
        "service watchdog: pinging while the store writer answers"
    );
    tokio::spawn(watchdog(writer, period, cancel, || {
        #[cfg(unix)]
        send(&[NotifyState::Watchdog]);
    }));
}

/// The journal, when systemd connected stderr to it (`$JOURNAL_STREAM` names stderr's device
/// and inode, systemd.exec(5)): `Some(Ok)` with a layer that writes entries with the event's
/// fields (`F_` and the name in capitals), its level as `PRIORITY` and no colour codes;
/// `Some(Err)` when the journal's socket cannot be reached (the caller logs to stderr, which
/// systemd still collects); `None` when stderr is not the journal.
#[cfg(unix)]
pub fn journal() -> Option<std::io::Result<tracing_journald::Layer>> {
    let var = std::env::var("JOURNAL_STREAM").ok()?;
    let st = rustix::fs::fstat(std::io::stderr()).ok()?;
    // syslog's levels: info is 6 (tracing-journald would make it 5, "notice").
    let levels = tracing_journald::PriorityMappings {
        info: tracing_journald::Priority::Informational,
        debug: tracing_journald::Priority::Debug,
        ..tracing_journald::PriorityMappings::new()
    };
    stream_is(&var, st.st_dev as u64, st.st_ino as u64).then(|| {
        tracing_journald::layer().map(|l| {
            l.with_syslog_identifier("meldkamer".into())
                .with_priority_mappings(levels)
        })
    })
}

/// `$JOURNAL_STREAM` (`DEVICE:INODE`, decimal) names this device and inode.
#[cfg_attr(not(unix), allow(dead_code))]
fn stream_is(var: &str, dev: u64, ino: u64) -> bool {
    let parsed = var
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)));
    parsed == Some((dev, ino))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::metrics::Metrics;
    use crate::store::writer::{self, NoHook, WriterConfig};

    /// stderr is the journal only when JOURNAL_STREAM names its device and inode: a pipe
    /// or file systemd did not give us (stderr redirected by hand) is not.
    #[test]
    fn journal_stream_names_device_and_inode() {
        assert!(stream_is("8:1234", 8, 1234));
        assert!(!stream_is("8:1234", 8, 1235));
        assert!(!stream_is("9:1234", 8, 1234));
        assert!(!stream_is("8", 8, 1234));
        assert!(!stream_is("", 0, 0));
        assert!(!stream_is("x:y", 0, 0));
    }

    /// Pings while the writer answers, none while a commit group hangs, again after it ends.
    /// The writer is held by a job that blocks inside its transaction until released, as the
    /// writer's own tests hold it. Mutation-checked: a watchdog that pings without asking the
    /// writer fails the middle assertion.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_watchdog_ping_while_the_writer_is_stalled() {
        let dir = tempfile::tempdir().expect("dir");
        let (w, join) = writer::start(
            WriterConfig {
                path: dir.path().join("w.db"),
                queue_depth: 16,
                max_batch: 8,
                busy_timeout: Duration::from_secs(5),
                retransmission_window: Duration::from_secs(60),
                max_dedupe_entries: 100,
                last_seen: None,
                changes: None,
                wal: Default::default(),
                status_flush: writer::STATUS_FLUSH_EVERY,
            },
            0,
            Arc::new(Metrics::default()),
            Box::new(NoHook),
        )
        .expect("writer");
        let pings = Arc::new(AtomicUsize::new(0));
        let cancel = CancellationToken::new();
        let period = Duration::from_millis(20);
        let counted = pings.clone();
        let task = tokio::spawn(watchdog(w.clone(), period, cancel.clone(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        let wait_for = |n: usize| {
            let pings = pings.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(30), async {
                    while pings.load(Ordering::SeqCst) < n {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
                .await
                .expect("pings while the writer answers");
            }
        };
        wait_for(3).await;

        // Hold the writer inside a commit group.
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let held = {
            let w = w.clone();
            tokio::spawn(async move {
                w.run(move |_| {
                    let _ = started_tx.send(());
                    let _ = release_rx.recv();
                    Ok(())
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || started_rx.recv().expect("job runs"))
            .await
            .expect("join");
        // A ping answered just before the hold may still be counted; after that, none.
        tokio::time::sleep(period * 5).await;
        let before = pings.load(Ordering::SeqCst);
        tokio::time::sleep(period * 25).await;
        assert_eq!(
            pings.load(Ordering::SeqCst),
            before,
            "no watchdog ping while the writer is stalled"
        );

        release.send(()).expect("job waits");
        held.await.expect("job").expect("job ran");
        wait_for(before + 2).await;
        cancel.cancel();
        task.await.expect("watchdog ends");
        w.close().await;
        drop(w);
        join.join().expect("writer ends");
    }
}
