//! What the daemon leaves on disk: files owner-only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meldkamer::clock::ManualClock;
use meldkamer::config::EventStreamMode;
use meldkamer::protocol::frame::Token;

use crate::common::{ACCOUNTS, T0, TestDaemon, import, plain, tcp_exchange, ts};

async fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every file and directory under `dir`, with its permission bits.
fn modes(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            let meta = std::fs::symlink_metadata(&p).expect("meta");
            out.push((p.clone(), meta.is_dir(), meta.permissions().mode() & 0o7777));
            if meta.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The database, its WAL and SHM, the pepper, the event stream file and the recorded traffic are
/// all 0600 and the recording directories 0700, with the test process's umask at the usual
/// 0o022: the modes are explicit, not the umask's.
#[tokio::test]
async fn every_file_the_daemon_writes_is_owner_only() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let dir = tempfile::tempdir().expect("dir");
    let mut cfg = TestDaemon::config(dir.path());
    cfg.event_stream.mode = EventStreamMode::File;
    cfg.event_stream.file = dir.path().join("events.jsonl");
    import(&cfg, ACCOUNTS);
    let record = meldkamer::receiver::record::RecordOptions {
        dir: dir.path().join("recorded/traces"),
        anonymise: false,
    };
    let running = meldkamer::daemon::start_recording(cfg.clone(), Arc::new(ManualClock::new(T0)), Some(record))
        .await
        .expect("daemon starts");
    let addr = running.tcp_addr.expect("tcp");
    let resp = tcp_exchange(addr, &plain(Token::SiaDcs, 1, "1234", "#1234|Nri1/BA01", ts(T0))).await;
    assert!(resp.is_some(), "answered");
    let stream = cfg.event_stream.file.clone();
    wait_for(
        || std::fs::read_to_string(&stream).is_ok_and(|s| s.lines().count() == 1),
        "the event in the stream file",
    )
    .await;
    let traces = dir.path().join("recorded/traces");
    wait_for(
        || {
            std::fs::read_dir(&traces)
                .map(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "trace")))
                .unwrap_or(false)
        },
        "the recorded trace",
    )
    .await;
    let found = modes(dir.path());
    let names: Vec<String> = found
        .iter()
        .filter_map(|(p, _, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for want in [
        "test.db",
        "test.db-wal",
        "test.db-shm",
        "test.db.pepper",
        "events.jsonl",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    for (p, is_dir, mode) in &found {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} has mode {mode:04o}", p.display());
    }
    running.shutdown();
    running.wait().await;
}
