//! SIGTERM on the real binary with many accounts, in the middle of a mass loss: it exits (with
//! success), and every event a panel got an ACK for is stored. How fast it exits is measured
//! for BENCHMARKS.md with a million accounts, never asserted here.
//!
//! 20,000 accounts with a 2 s deadline are imported, the daemon starts (their deadlines, passed
//! during the import, restart at the start), 8 panels keep sending events over TCP for 8 of the
//! accounts, and the other 19,992 go silent: 2 s after the start the supervisor folds them into
//! a mass loss, in writer jobs of 2,000. The SIGTERM comes as soon as that begins.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meldkamer::protocol::frame::{Token, decode_frame};

use crate::common::plain;
use crate::crash::{import_with_binary, start_daemon, write_config};

const BIN: &str = env!("CARGO_BIN_EXE_meldkamer");
const ACCOUNTS: usize = 20_000;
const PANELS: usize = 8;

/// One panel: events for `account` over one TCP connection, one at a time, until the daemon
/// closes it. Returns the zones it got an ACK for.
fn panel(tcp: SocketAddr, account: String, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut acked = Vec::new();
    let Ok(mut s) = TcpStream::connect(tcp) else {
        return acked;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    for zone in 1u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let seq = (zone % 9999 + 1) as u16;
        let frame = plain(Token::SiaDcs, seq, &account, &format!("#{account}|Nri1/BA{zone}"), None);
        if s.write_all(&frame).is_err() {
            break;
        }
        let answer = loop {
            if let Some(end) = buf.iter().position(|b| *b == b'\r') {
                let f: Vec<u8> = buf.drain(..=end).collect();
                break Some(f);
            }
            match s.read(&mut chunk) {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => break None,
            }
        };
        let Some(answer) = answer else {
            break;
        };
        let start = answer.iter().position(|b| *b == b'\n').unwrap_or(0);
        match decode_frame(&answer[start..], &Default::default()) {
            Ok(f) if f.token == Token::Ack && f.seq == seq => acked.push(zone),
            _ => break,
        }
    }
    acked
}

#[test]
fn sigterm_in_a_mass_loss_with_many_accounts_exits_and_keeps_everything_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("many.db");
    let config = write_config(dir.path(), &db);
    let records = dir.path().join("records.toml");
    let out = Command::new(BIN)
        .args(["bench", "--write-records"])
        .arg(&records)
        .args(["--records", &ACCOUNTS.to_string(), "--supervision-secs", "2"])
        .output()
        .expect("bench --write-records");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    import_with_binary(&config, &records);

    let log = dir.path().join("serve.log");
    let mut d = start_daemon(&config, &log);
    let stop = Arc::new(AtomicBool::new(false));
    let panels: Vec<_> = (0..PANELS)
        .map(|i| {
            let (tcp, stop) = (d.tcp, stop.clone());
            let account = format!("E{i:07X}");
            std::thread::spawn(move || (account.clone(), panel(tcp, account, stop)))
        })
        .collect();

    // Wait (at most two minutes, so that a broken build cannot hang the suite) for the mass loss
    // to begin, then SIGTERM.
    let begun = (0..1200).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("mass communication loss"))
    });
    assert!(
        begun,
        "no mass loss: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let killed = Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    // The same bound against hanging: the figure itself is in BENCHMARKS.md.
    let status = (0..1200).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        d.child.try_wait().expect("wait")
    });
    stop.store(true, Ordering::Relaxed);
    let status =
        status.unwrap_or_else(|| panic!("still running: {}", std::fs::read_to_string(&log).unwrap_or_default()));
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let acked: Vec<(String, Vec<u64>)> = panels.into_iter().map(|p| p.join().expect("panel")).collect();
    let total: usize = acked.iter().map(|(_, z)| z.len()).sum();
    assert!(total > 0, "the panels got no ACK at all");

    let conn = rusqlite::Connection::open(&db).expect("db");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity");
    assert_eq!(check, "ok");
    let mut stmt = conn
        .prepare("SELECT count(*) FROM events WHERE account = ?1 AND zone = ?2")
        .expect("query");
    for (account, zones) in &acked {
        for z in zones {
            let n: i64 = stmt
                .query_row(rusqlite::params![account, z.to_string()], |r| r.get(0))
                .expect("count");
            assert_eq!(n, 1, "{account} zone {z} was ACKed: stored exactly once");
        }
    }
    let mass: i64 = conn
        .query_row(
            "SELECT count(*) FROM alarms WHERE title LIKE 'Mass communication loss%'",
            [],
            |r| r.get(0),
        )
        .expect("mass loss");
    assert_eq!(mass, 1, "one mass-loss alarm");
    let alone: i64 = conn
        .query_row(
            "SELECT count(*) FROM alarms WHERE title LIKE 'Communication lost%'",
            [],
            |r| r.get(0),
        )
        .expect("alarms");
    assert_eq!(alone, 0, "no account of the mass loss has an alarm of its own");
}
