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

// --- DC-09 account keys sealed at rest ---------------------------------------------------------

/// The keys of the test accounts as they could appear in a file: raw bytes, hex either case,
/// ASCII.
fn key_forms() -> Vec<Vec<u8>> {
    let hex5678 = "2B7E151628AED2A6ABF7158809CF4F3C";
    vec![
        hex::decode(hex5678).expect("hex"),
        hex5678.as_bytes().to_vec(),
        hex5678.to_ascii_lowercase().into_bytes(),
        b"0123456789abcdef".to_vec(),
        hex::encode(b"0123456789abcdef").into_bytes(),
    ]
}

/// Where in the database file and its WAL a key shows, if anywhere.
fn key_found(db: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for suffix in ["", "-wal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let bytes = std::fs::read(PathBuf::from(&p)).unwrap_or_default();
        for (i, k) in key_forms().iter().enumerate() {
            if bytes.windows(k.len()).any(|w| w == k.as_slice()) {
                found.push(format!("key form {i} in {}", PathBuf::from(&p).display()));
            }
        }
    }
    found
}

fn import_file(cfg: &meldkamer::config::Config, replace_lost_keys: bool) -> String {
    let file = cfg.store.path.with_file_name("accounts.toml");
    std::fs::write(&file, ACCOUNTS).expect("records file");
    let mut out = Vec::new();
    meldkamer::cli::serve::import(cfg, &[file], replace_lost_keys, &mut out).expect("import");
    String::from_utf8(out).expect("utf8")
}

async fn encrypted_frame_is_acked(addr: std::net::SocketAddr, seq: u16) {
    let frame = crate::common::encrypted(
        Token::SiaDcs,
        seq,
        "5678",
        "#5678|Nri1/BA01",
        &crate::common::key_5678(),
        T0,
        u64::from(seq),
    );
    let resp = tcp_exchange(addr, &frame).await.expect("answered");
    assert_eq!(crate::common::token_of(&resp), "*ACK");
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// `meldkamer import` seals the keys: neither the database nor its WAL holds a key in any form,
/// and frames of the encrypted account still decrypt and are acknowledged.
#[tokio::test]
async fn imported_account_keys_are_sealed_and_still_decrypt_frames() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = TestDaemon::config(dir.path());
    import_file(&cfg, false);
    assert_eq!(key_found(&cfg.store.path), Vec::<String>::new());
    let conn = rusqlite::Connection::open(&cfg.store.path).expect("db");
    let (sealed, len): (i64, i64) = conn
        .query_row(
            "SELECT key_sealed, length(dc09_key) FROM accounts WHERE account = '5678'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    assert_eq!((sealed, len), (1, 16 + meldkamer::store::sealed::OVERHEAD as i64));
    drop(conn);
    // `customer show` tells the key's size and nothing of the key.
    for (account, size) in [("5678", "AES-128 (hex key)"), ("2222", "AES-128 (ascii key)")] {
        let mut out = Vec::new();
        meldkamer::cli::customer::show(&cfg, account, true, &mut out).expect("show");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains(size), "{text}");
        for k in key_forms() {
            assert!(!text.contains(&*String::from_utf8_lossy(&k)), "{text}");
        }
    }
    let running = meldkamer::daemon::start(cfg.clone(), Arc::new(ManualClock::new(T0)))
        .await
        .expect("daemon starts");
    encrypted_frame_is_acked(running.tcp_addr.expect("tcp"), 1).await;
    assert_eq!(
        key_found(&cfg.store.path),
        Vec::<String>::new(),
        "nor after the daemon ran"
    );
    running.shutdown();
    running.wait().await;
}

/// Keys an older version stored in plaintext are sealed at the next start, and the plaintext
/// is gone from the database file and the WAL.
#[tokio::test]
async fn plaintext_keys_of_an_older_database_are_sealed_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = TestDaemon::config(dir.path());
    import_file(&cfg, false);
    let conn = rusqlite::Connection::open(&cfg.store.path).expect("db");
    conn.execute_batch(
        "UPDATE accounts SET dc09_key = x'2B7E151628AED2A6ABF7158809CF4F3C', key_sealed = 0 WHERE account = '5678';
         UPDATE accounts SET dc09_key = CAST('0123456789abcdef' AS BLOB), key_sealed = 0 WHERE account = '2222';",
    )
    .expect("as an older version stored them");
    drop(conn);
    assert!(
        !key_found(&cfg.store.path).is_empty(),
        "the test puts plaintext in the file"
    );
    let running = meldkamer::daemon::start(cfg.clone(), Arc::new(ManualClock::new(T0)))
        .await
        .expect("daemon starts");
    let plain: i64 = rusqlite::Connection::open(&cfg.store.path)
        .expect("db")
        .query_row(
            "SELECT count(*) FROM accounts WHERE dc09_key IS NOT NULL AND key_sealed = 0",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(plain, 0);
    assert_eq!(key_found(&cfg.store.path), Vec::<String>::new());
    encrypted_frame_is_acked(running.tcp_addr.expect("tcp"), 2).await;
    running.shutdown();
    running.wait().await;
}

/// With the keys file gone and keys sealed, the daemon does not start (and makes no new file);
/// the message says how to recover. Importing the records again with --replace-lost-keys does.
#[tokio::test]
async fn a_missing_keys_file_stops_the_start_until_keys_are_restored_or_reimported() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = TestDaemon::config(dir.path());
    import_file(&cfg, false);
    let keys = cfg.store.keys_path();
    std::fs::remove_file(&keys).expect("keys file lost");
    let e = match meldkamer::daemon::start(cfg.clone(), Arc::new(ManualClock::new(T0))).await {
        Ok(_) => panic!("the daemon must not start"),
        Err(e) => error_chain(&e),
    };
    assert!(e.contains(&keys.display().to_string()) && e.contains("missing"), "{e}");
    assert!(
        e.contains("restore the file") && e.contains("--replace-lost-keys"),
        "{e}"
    );
    assert!(!keys.exists(), "no new keys file was made");
    // A plain import refuses too: it would seal with a key nobody keeps.
    let file = cfg.store.path.with_file_name("accounts.toml");
    assert!(meldkamer::cli::serve::import(&cfg, &[file], false, &mut Vec::new()).is_err());
    let out = import_file(&cfg, true);
    assert!(out.contains("2 account key(s) did not open"), "{out}");
    assert!(keys.exists());
    let running = meldkamer::daemon::start(cfg.clone(), Arc::new(ManualClock::new(T0)))
        .await
        .expect("starts with the keys imported again");
    encrypted_frame_is_acked(running.tcp_addr.expect("tcp"), 3).await;
    running.shutdown();
    running.wait().await;
}
