//! Crash consistency: the real binary under load from several panels is killed with SIGKILL at
//! a random moment, restarted on the same database, again and again. Afterwards every event a
//! panel got an ACK for must be stored exactly once, nothing else may be stored, SQLite's
//! integrity check must pass, and after a restart no account's last-seen time may be older than
//! a frame stored from it (supervision would raise a false "communication lost").
//!
//! The panels behave like real ones: one frame at a time, and a frame that got no ACK (because
//! the daemon died) is sent again, with the same sequence number and payload, once the daemon is
//! back. So a frame that was committed just before the kill but never acknowledged comes back
//! as a retransmission after the restart, and must not become a second event.
//!
//! SIGKILL ends the process, not the machine: what was written before the kill is in the page
//! cache and survives. This test therefore checks the order of commit and ACK, WAL recovery and
//! retransmission recognition across restarts, not fsync on power loss.
//!
//! `MELDKAMER_CRASH_CYCLES` sets the number of kill cycles (default 20), `MELDKAMER_CRASH_SEED`
//! the seed of the kill timing (default: from the clock; printed either way).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use meldkamer::protocol::crypto::Key;
use meldkamer::protocol::frame::{Token, decode_frame};
use time::OffsetDateTime;

use crate::common::{encrypted, plain};

const BIN: &str = env!("CARGO_BIN_EXE_meldkamer");
const KEY_HEX: &str = "2B7E151628AED2A6ABF7158809CF4F3C";

/// A small, seeded PRNG (xorshift64*): the kill timing, reproducible from the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// The binary, running.
pub struct Daemon {
    pub child: Child,
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write a configuration for the binary: loopback listeners on free ports, no metrics, the
/// database at `db`.
pub fn write_config(dir: &Path, db: &Path) -> PathBuf {
    let path = dir.join("meldkamer.toml");
    let text = format!(
        "[receiver]\ntcp_listen = \"127.0.0.1:0\"\nudp_listen = \"127.0.0.1:0\"\n\n\
         [store]\npath = {db:?}\nload_demo_data = false\n\n[metrics]\nlisten = \"\"\n\n[log]\nlevel = \"warn\"\n",
        db = db.display().to_string()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// `meldkamer import FILE --config CONFIG`.
pub fn import_with_binary(config: &Path, records: &Path) {
    let out = Command::new(BIN)
        .arg("import")
        .arg(records)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run meldkamer import");
    assert!(
        out.status.success(),
        "meldkamer import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start `meldkamer serve --config CONFIG` and wait for its ready line. Its stderr is appended
/// to `log`.
pub fn start_daemon(config: &Path, log: &Path) -> Daemon {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn meldkamer serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        // Keep draining so the daemon never writes into a closed pipe.
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            panic!("no ready line from meldkamer serve; its log:\n{tail}");
        }
    };
    let field = |name: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {name} address in {line:?}"))
    };
    assert!(line.starts_with("meldkamer ready "), "unexpected first line {line:?}");
    Daemon {
        tcp: field("tcp="),
        udp: field("udp="),
        child,
    }
}

/// An event a panel sends: identified by account and a zone number unique per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Sent {
    seq: u16,
    zone: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Tcp,
    TcpEncrypted,
    Udp,
}

/// One simulated panel; its state survives the daemon's restarts.
struct Panel {
    account: String,
    via: Via,
    key: Option<Key>,
    next_zone: u64,
    /// Sent but not acknowledged: sent again first when the daemon is back.
    pending: Option<Sent>,
    acked: Vec<Sent>,
    sent: HashSet<Sent>,
    retransmissions: u64,
}

enum Reply {
    Ack,
    Other,
}

impl Panel {
    fn new(account: String, via: Via) -> Panel {
        Panel {
            account,
            via,
            key: (via == Via::TcpEncrypted).then(|| Key::from_hex(KEY_HEX).expect("key")),
            next_zone: 1,
            pending: None,
            acked: Vec::new(),
            sent: HashSet::new(),
            retransmissions: 0,
        }
    }

    fn frame(&self, ev: Sent, pad_seed: u64) -> Vec<u8> {
        let data = format!("#{}|Nri1/BA{}", self.account, ev.zone);
        match &self.key {
            Some(k) => encrypted(
                Token::SiaDcs,
                ev.seq,
                &self.account,
                &data,
                k,
                OffsetDateTime::now_utc(),
                pad_seed,
            ),
            None => plain(Token::SiaDcs, ev.seq, &self.account, &data, None),
        }
    }

    fn next_event(&mut self) -> Sent {
        if let Some(p) = self.pending {
            self.retransmissions += 1;
            return p;
        }
        let zone = self.next_zone;
        self.next_zone += 1;
        let ev = Sent {
            seq: (zone % 9999 + 1) as u16,
            zone,
        };
        self.sent.insert(ev);
        self.pending = Some(ev);
        ev
    }

    fn judge(&self, resp: &[u8], ev: Sent) -> Reply {
        match decode_frame(resp, &Default::default()) {
            Ok(f) if f.token == Token::Ack && f.seq == ev.seq && f.account.number() == Some(&self.account) => {
                Reply::Ack
            }
            _ => Reply::Other,
        }
    }

    /// Send events to `d` until `stop` is set or the daemon goes away; `max` bounds the number
    /// of events (for the final flush).
    fn run(&mut self, tcp: SocketAddr, udp: SocketAddr, stop: &AtomicBool, max: Option<usize>) {
        let mut done = 0usize;
        let started = Instant::now();
        match self.via {
            Via::Udp => {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
                s.connect(udp).expect("connect");
                s.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) && max.is_none_or(|m| done < m) {
                    let ev = self.next_event();
                    let _ = s.send(&self.frame(ev, done as u64));
                    let answered = loop {
                        match s.recv(&mut buf) {
                            Ok(n) => match self.judge(&buf[..n], ev) {
                                Reply::Ack => break true,
                                _ => continue,
                            },
                            Err(_) => break false,
                        }
                    };
                    if answered {
                        self.pending = None;
                        self.acked.push(ev);
                        done += 1;
                    } else if max.is_some() && started.elapsed() > Duration::from_secs(20) {
                        panic!("{}: no ACK over UDP for 20 s after the last restart", self.account);
                    }
                }
            }
            Via::Tcp | Via::TcpEncrypted => {
                let mut s = loop {
                    match TcpStream::connect(tcp) {
                        Ok(s) => break s,
                        Err(_) if stop.load(Ordering::Relaxed) => return,
                        Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("connect: {e}"),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                };
                s.set_nodelay(true).expect("nodelay");
                s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
                let mut buf = Vec::with_capacity(256);
                let mut chunk = [0u8; 512];
                while !stop.load(Ordering::Relaxed) && max.is_none_or(|m| done < m) {
                    let ev = self.next_event();
                    if s.write_all(&self.frame(ev, done as u64)).is_err() {
                        return; // killed: the frame stays pending
                    }
                    let acked = 'read: loop {
                        while let Some(start) = buf.iter().position(|b| *b == b'\n') {
                            let Some(len) = buf[start..].iter().position(|b| *b == b'\r') else {
                                break;
                            };
                            let resp: Vec<u8> = buf.drain(..start + len + 1).skip(start).collect();
                            if let Reply::Ack = self.judge(&resp, ev) {
                                break 'read true;
                            }
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => break 'read false,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    if !acked {
                        return; // killed (or no answer): the frame stays pending
                    }
                    self.pending = None;
                    self.acked.push(ev);
                    done += 1;
                }
            }
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn sigkill_under_load_loses_and_duplicates_nothing() {
    let cycles = env_u64("MELDKAMER_CRASH_CYCLES").unwrap_or(20);
    let seed = env_u64("MELDKAMER_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("crash test: {cycles} cycles, MELDKAMER_CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.db");
    let config = write_config(dir.path(), &db);
    let log = dir.path().join("serve.log");
    let records = dir.path().join("accounts.toml");
    std::fs::write(
        &records,
        format!(
            "[[account]]\naccount = \"CC00\"\n\n[[account]]\naccount = \"CC01\"\n\n\
             [[account]]\naccount = \"CC02\"\n\n[[account]]\naccount = \"CC03\"\nkey = \"{KEY_HEX}\"\n\n\
             [[account]]\naccount = \"CC04\"\n"
        ),
    )
    .expect("records");
    import_with_binary(&config, &records);

    let mut panels = vec![
        Panel::new("CC00".into(), Via::Tcp),
        Panel::new("CC01".into(), Via::Tcp),
        Panel::new("CC02".into(), Via::Tcp),
        Panel::new("CC03".into(), Via::TcpEncrypted),
        Panel::new("CC04".into(), Via::Udp),
    ];
    let test_started = Instant::now();
    for cycle in 0..cycles {
        let mut d = start_daemon(&config, &log);
        let stop = Arc::new(AtomicBool::new(false));
        let (tcp, udp) = (d.tcp, d.udp);
        let handles: Vec<_> = std::mem::take(&mut panels)
            .into_iter()
            .map(|mut p| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    p.run(tcp, udp, &stop, None);
                    p
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.range(50, 400)));
        d.child.kill().expect("SIGKILL");
        let status = d.child.wait().expect("wait");
        assert!(!status.success(), "cycle {cycle}: the daemon was killed, not stopped");
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            panels.push(h.join().expect("panel thread"));
        }
    }

    // Back once more: every panel sends what is still pending, and a few new events.
    let mut d = start_daemon(&config, &log);
    let stop = AtomicBool::new(false);
    for p in &mut panels {
        p.run(d.tcp, d.udp, &stop, Some(3));
        assert!(p.pending.is_none(), "{}: the last frame was acknowledged", p.account);
    }
    d.child.kill().expect("SIGKILL");
    let _ = d.child.wait();
    let load_time = test_started.elapsed();
    // A start after the last kill brings the accounts' last-seen times (written in bulk, so
    // possibly behind at the kill) up to every stored frame before it serves.
    let mut d = start_daemon(&config, &log);
    d.child.kill().expect("SIGKILL");
    let _ = d.child.wait();

    let conn = rusqlite::Connection::open(&db).expect("open the database");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok");
    let behind: i64 = conn
        .query_row(
            "SELECT count(*) FROM (SELECT f.account_id, max(f.received_ms) AS heard FROM frames f
                                   WHERE f.account_id IS NOT NULL AND f.outcome IN ('accepted', 'retransmission')
                                   GROUP BY f.account_id) h
             LEFT JOIN account_status st ON st.account_id = h.account_id
             WHERE st.last_seen_ms IS NULL OR st.last_seen_ms < h.heard",
            [],
            |r| r.get(0),
        )
        .expect("last-seen check");
    assert_eq!(behind, 0, "accounts whose last-seen time is older than a stored frame");
    // An alarm's count is in its row up to where the fold has got and in the links after that
    // (folded in slices, so a kill leaves some unfolded, perhaps mid-fold): together exactly its
    // linked events, and the links of each alarm form one chain, newest to oldest, with nothing
    // skipped or shared.
    let linked: i64 = conn
        .query_row("SELECT count(*) FROM events WHERE alarm_id IS NOT NULL", [], |r| {
            r.get(0)
        })
        .expect("links");
    assert!(linked > 0, "the load opened and joined alarms");
    let miscounted: i64 = conn
        .query_row(
            &format!(
                "WITH {}, linked(alarm_id, n) AS (
                     SELECT alarm_id, count(*) FROM events WHERE alarm_id IS NOT NULL GROUP BY alarm_id)
                 SELECT count(*) FROM alarms a LEFT JOIN pending p ON p.alarm_id = a.id
                      LEFT JOIN linked l ON l.alarm_id = a.id
                 WHERE a.event_count + ifnull(p.n, 0) <> ifnull(l.n, 0)",
                meldkamer::correlate::alarms::PENDING_EVENTS
            ),
            [],
            |r| r.get(0),
        )
        .expect("count check");
    assert_eq!(miscounted, 0, "alarms whose event count is not their linked events");
    let broken: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM events e WHERE e.alarm_prev IS NOT NULL AND NOT EXISTS
                        (SELECT 1 FROM events p WHERE p.id = e.alarm_prev AND p.alarm_id = e.alarm_id AND p.id < e.id))
                  + (SELECT count(*) FROM (SELECT alarm_prev FROM events WHERE alarm_prev IS NOT NULL
                                           GROUP BY alarm_prev HAVING count(*) > 1))
                  + (SELECT count(*) FROM (SELECT alarm_id FROM events WHERE alarm_id IS NOT NULL
                                           GROUP BY alarm_id HAVING count(*) FILTER (WHERE alarm_prev IS NULL) <> 1))",
            [],
            |r| r.get(0),
        )
        .expect("chain check");
    assert_eq!(broken, 0, "links that do not chain each alarm's events");
    // Each account's events form one chain (the operator's search walks it), and its head is
    // the newest event: in `account_heads` up to the watermark (written in bulk, so a kill
    // leaves some unwritten), found after it otherwise.
    let unchained: i64 = conn
        .query_row(
            "SELECT count(*) FROM (SELECT account_prev, lag(id) OVER (PARTITION BY account ORDER BY id) AS prev
                                   FROM events)
             WHERE account_prev IS NOT prev",
            [],
            |r| r.get(0),
        )
        .expect("account chain check");
    assert_eq!(unchained, 0, "events whose link is not their account's previous event");
    let headless: i64 = conn
        .query_row(
            "SELECT count(*) FROM (SELECT account, max(id) AS newest FROM events GROUP BY account) n
             LEFT JOIN account_heads h ON h.account = n.account
             WHERE n.newest <> ifnull(h.event_id, 0)
               AND n.newest <= (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'heads_event_id')",
            [],
            |r| r.get(0),
        )
        .expect("heads check");
    assert_eq!(
        headless, 0,
        "accounts whose head before the watermark is not their newest event"
    );
    let mut stored: HashMap<(String, u64), (u16, u64)> = HashMap::new();
    {
        let mut stmt = conn
            .prepare("SELECT account, zone, seq, count(*) FROM events GROUP BY account, zone, seq")
            .expect("query");
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u16>(2)?,
                    r.get::<_, i64>(3)? as u64,
                ))
            })
            .expect("rows");
        for row in rows {
            let (account, zone, seq, n) = row.expect("row");
            let zone: u64 = zone.parse().expect("numeric zone");
            assert!(
                stored.insert((account.clone(), zone), (seq, n)).is_none(),
                "{account} zone {zone} stored under two sequence numbers"
            );
        }
    }
    let mut acked_total = 0usize;
    let (mut lost, mut duplicated) = (Vec::new(), Vec::new());
    for p in &panels {
        for ev in &p.acked {
            acked_total += 1;
            match stored.get(&(p.account.clone(), ev.zone)) {
                None => lost.push((p.account.clone(), *ev)),
                Some((seq, n)) => {
                    assert_eq!(*seq, ev.seq, "{}: sequence number of zone {}", p.account, ev.zone);
                    if *n != 1 {
                        duplicated.push((p.account.clone(), *ev, *n));
                    }
                }
            }
        }
    }
    let dupes_anywhere = stored.values().filter(|(_, n)| *n > 1).count();
    // Every panel's every event was acknowledged in the end, so the database holds exactly the
    // acknowledged events: nothing a panel did not send, nothing twice.
    let acked_keys: HashSet<(String, u64)> = panels
        .iter()
        .flat_map(|p| p.acked.iter().map(move |e| (p.account.clone(), e.zone)))
        .collect();
    let phantom = stored.keys().filter(|k| !acked_keys.contains(*k)).count();
    let retransmissions: u64 = panels.iter().map(|p| p.retransmissions).sum();
    let stored_retransmissions: i64 = conn
        .query_row(
            "SELECT count(*) FROM frames WHERE outcome = 'retransmission'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    println!(
        "crash test: {cycles} kill cycles in {:.1} s; {acked_total} ACKed events checked, {} stored, \
         {} lost, {} duplicated, {phantom} stored but never sent/ACKed; {retransmissions} frames resent \
         (after a kill or a UDP timeout), {stored_retransmissions} recognised as retransmissions of committed frames",
        load_time.as_secs_f64(),
        stored.len(),
        lost.len(),
        duplicated.len() + dupes_anywhere,
    );
    assert!(lost.is_empty(), "ACKed but not stored: {lost:?}");
    assert!(duplicated.is_empty(), "ACKed and stored more than once: {duplicated:?}");
    assert_eq!(dupes_anywhere, 0, "some event is stored more than once");
    assert_eq!(phantom, 0, "events stored that no panel had acknowledged");
    assert_eq!(acked_keys.len(), acked_total, "a panel reused a zone number");
    assert!(
        acked_total >= cycles as usize,
        "the load did run ({acked_total} events)"
    );
    let _ = std::io::stdout().flush();
}
