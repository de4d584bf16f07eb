//! `meldkamer backup` under load: the real binary copies the database while panels send events
//! and operator actions append to the audit log. Every event ACKed before the backup started
//! is in the copy; the copy, restored with its key files beside it, passes `audit verify`
//! against the heads written with it.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meldkamer::protocol::frame::Token;
use meldkamer::verify::audit;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::{ACCOUNTS, T0, TestDaemon, plain, read_frame, token_of, ts};

const BIN: &str = env!("CARGO_BIN_EXE_meldkamer");

fn config_file(dir: &Path, db: &Path) -> std::path::PathBuf {
    let p = dir.join("meldkamer.toml");
    std::fs::write(&p, format!("[store]\npath = {:?}\n", db.display().to_string())).expect("config");
    p
}

fn zones(db: &Path) -> HashSet<u64> {
    let conn = rusqlite::Connection::open(db).expect("db");
    let mut stmt = conn
        .prepare("SELECT zone FROM events WHERE account = '1234'")
        .expect("query");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .map(|z| z.expect("zone").parse().expect("a number"))
        .collect()
}

/// Mutation-checked: a copy of the database file (without what its WAL holds) loses ACKed
/// events here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_has_every_acked_event_and_verifies_after_a_restore() {
    let mut d = TestDaemon::start_with(ACCOUNTS, |c| c.audit.publish_every = 10).await;
    let cfg = d.cfg.clone();
    let tcp = d.tcp();
    let writer = d.running.as_ref().expect("running").shared.writer.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let next_zone = Arc::new(AtomicU64::new(1));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();

    // Four panels, one frame at a time each, every event a zone of its own.
    let mut panels = Vec::new();
    for _ in 0..4 {
        let (stop, next_zone, acked) = (stop.clone(), next_zone.clone(), acked.clone());
        panels.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(tcp).await.expect("connect");
            while !stop.load(Ordering::SeqCst) {
                let zone = next_zone.fetch_add(1, Ordering::SeqCst);
                let f = plain(
                    Token::SiaDcs,
                    (zone % 9999) as u16,
                    "1234",
                    &format!("#1234|Nri1/BA{zone}"),
                    ts(T0),
                );
                s.write_all(&f).await.expect("send");
                let r = read_frame(&mut s, Duration::from_secs(30)).await.expect("an answer");
                assert_eq!(token_of(&r), "ACK");
                acked.lock().expect("lock").push(zone);
            }
        }));
    }
    // Operator actions: audit rows keyed with the daemon's audit key, through its writer.
    let auditing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                writer
                    .run(move |tx| {
                        audit::append(
                            tx,
                            1_000 + n,
                            &audit::AuditRecord {
                                actor: "olga",
                                action: "alarm_note",
                                subject: &format!("alarm:{n}"),
                                detail: "under load",
                                result: "ok",
                                failures: None,
                            },
                        )
                    })
                    .await
                    .expect("audited");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n
        })
    };
    while acked.lock().expect("lock").len() < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let before: Vec<u64> = acked.lock().expect("lock").clone();
    let dir = tempfile::tempdir().expect("dir");
    let config = config_file(dir.path(), &cfg.store.path);
    let dest = dir.path().join("copy.db");
    let (config2, dest2) = (config.clone(), dest.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("backup")
            .arg("--config")
            .arg(&config2)
            .arg(&dest2)
            .output()
            .expect("run meldkamer backup")
    })
    .await
    .expect("join");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    // The load went on during the backup and goes on a little after it.
    let during = acked.lock().expect("lock").len();
    while acked.lock().expect("lock").len() < during + 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for p in panels {
        p.await.expect("panel");
    }
    let audited = auditing.await.expect("auditing");
    assert!(audited > 10, "audit rows were written under load ({audited})");
    d.stop().await;

    assert!(report.contains("quick_check ok"), "{report}");
    assert!(report.contains("back these up apart"), "{report}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).expect("copy").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the copy is owner-only");
    }
    let copied = zones(&dest);
    let missing: Vec<&u64> = before.iter().filter(|z| !copied.contains(z)).collect();
    assert!(missing.is_empty(), "ACKed before the backup, not in it: {missing:?}");
    assert!(
        copied.len() < zones(&cfg.store.path).len(),
        "the copy is a snapshot: later events are not in it"
    );

    // Restore: the copy as the database, the key files from their own backup beside it, the
    // heads written with the copy as the heads file.
    let restored = tempfile::tempdir().expect("dir");
    let db = restored.path().join("m.db");
    std::fs::copy(&dest, &db).expect("restore the copy");
    for suffix in [".pepper", ".keys", ".audit-key"] {
        let from = format!("{}{suffix}", cfg.store.path.display());
        std::fs::copy(&from, format!("{}{suffix}", db.display())).expect("restore a key file");
    }
    std::fs::copy(
        meldkamer::cli::backup::heads_path(&dest),
        format!("{}.audit-heads", db.display()),
    )
    .expect("restore the heads");
    let rconfig = config_file(restored.path(), &db);
    let out = Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(&rconfig)
        .output()
        .expect("audit verify");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("found unchanged"), "{text}");
    // And the restored database opens as the daemon's.
    let conn = meldkamer::store::open_write(&db, Duration::from_secs(5)).expect("the restored database opens");
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(ok, "ok");
}
