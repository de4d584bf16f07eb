//! The automation outputs: the outbox filled with the event, the Sur-Gard output as client and
//! as server (ACK, NAK, timeout, heartbeat, skip, replacement), the JSON Lines stream to a file
//! and to TCP subscribers, and the end-to-end run with the real binary: a translator sends
//! Contact ID lines, an automation server receives the Sur-Gard output, and both sides are
//! restarted while events flow.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meldkamer::config::{AutomationMode, Config, EventStreamMode};
use meldkamer::protocol::frame::Token;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{ACCOUNTS, T0, TestDaemon, plain, tcp_exchange, ts};

const ACK: u8 = 0x06;
const NAK: u8 = 0x15;
const DC4: u8 = 0x14;
const BIN: &str = env!("CARGO_BIN_EXE_meldkamer");

/// Read one Sur-Gard line (up to DC4) from the output, or `None` after `wait`.
async fn line(s: &mut TcpStream, buf: &mut Vec<u8>, wait: Duration) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(i) = buf.iter().position(|b| *b == DC4) {
            return Some(buf.drain(..=i).collect());
        }
        let mut b = [0u8; 256];
        match tokio::time::timeout_at(deadline, s.read(&mut b)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&b[..n]),
            _ => return None,
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn cid_line(d: &TestDaemon, msg: &[u8]) {
    let addr = d.running.as_ref().and_then(|r| r.cid_tcp_addr).expect("cid input");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(msg).await.expect("write");
    let mut b = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut b))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(b[0], ACK);
}

fn with_cid(c: &mut Config) {
    c.cid_input.tcp_listen = "127.0.0.1:0".into();
}

#[tokio::test]
async fn the_outbox_fills_with_every_event_in_its_transaction() {
    let mut d = TestDaemon::start_with(ACCOUNTS, |c| {
        with_cid(c);
        c.automation.mode = AutomationMode::Server;
        c.automation.listen = "127.0.0.1:0".into();
    })
    .await;
    // DC-09 SIA and ADM-CID, and the Contact ID input: every event gets a row; link tests,
    // retransmissions and refusals do not.
    let f = plain(Token::SiaDcs, 1, "1234", "#1234|Nri1/BA01", ts(T0));
    assert!(tcp_exchange(d.tcp(), &f).await.is_some());
    assert!(tcp_exchange(d.tcp(), &f).await.is_some(), "retransmission");
    let f = plain(Token::AdmCid, 2, "1234", "#1234|1130 01 003", ts(T0));
    assert!(tcp_exchange(d.tcp(), &f).await.is_some());
    let f = plain(Token::Null, 3, "1234", "", ts(T0));
    assert!(tcp_exchange(d.tcp(), &f).await.is_some());
    cid_line(&d, b"5011 181234R13001003\x14").await;
    cid_line(&d, b"5011 189999E13001003\x14").await;
    let conn = rusqlite::Connection::open(d.db_path()).expect("db");
    let mut stmt = conn
        .prepare("SELECT o.event_id, e.id, o.surgard FROM outbox o JOIN events e ON e.id = o.event_id ORDER BY o.id")
        .expect("sql");
    let rows: Vec<(i64, i64, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("q")
        .collect::<Result<_, _>>()
        .expect("rows");
    let lines: Vec<String> = rows.iter().map(|r| text(&r.2)).collect();
    assert_eq!(
        lines,
        [
            "S011[#1234|Nri1BA01]\x14",
            "5011 181234E13001003\x14",
            "5011 181234R13001003\x14"
        ]
    );
    assert_eq!(d.query_i64("SELECT count(*) FROM events"), 3);
    d.stop().await;
}

/// A daemon whose Sur-Gard output connects to a test automation server.
async fn client_daemon(tweak: impl FnOnce(&mut Config)) -> (TestDaemon, TcpListener) {
    let auto = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = auto.local_addr().expect("addr");
    let d = TestDaemon::start_with(ACCOUNTS, |c| {
        with_cid(c);
        c.automation.mode = AutomationMode::Client;
        c.automation.connect = addr.to_string();
        c.automation.heartbeat_secs = 0;
        c.automation.ack_timeout_ms = 600;
        tweak(c);
    })
    .await;
    (d, auto)
}

#[tokio::test]
async fn client_mode_waits_for_ack_and_retransmits_on_nak_and_timeout() {
    let (mut d, auto) = client_daemon(|_| {}).await;
    for zone in ["001", "002", "003"] {
        cid_line(&d, format!("5011 181234E130010{}\x14", &zone[1..]).as_bytes()).await;
    }
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), auto.accept())
        .await
        .expect("meldkamer connects")
        .expect("accept");
    let mut buf = Vec::new();
    let wait = Duration::from_secs(3);
    let first = line(&mut s, &mut buf, wait).await.expect("line 1");
    assert_eq!(text(&first), "5011 181234E13001001\x14");
    // NAK: the same line again.
    s.write_all(&[NAK]).await.expect("nak");
    assert_eq!(line(&mut s, &mut buf, wait).await.as_deref(), Some(&first[..]));
    s.write_all(&[ACK]).await.expect("ack");
    // No answer: after the timeout, the same line again.
    let second = line(&mut s, &mut buf, wait).await.expect("line 2");
    assert_eq!(text(&second), "5011 181234E13001002\x14");
    let again = line(&mut s, &mut buf, wait).await.expect("line 2 again");
    assert_eq!(again, second);
    s.write_all(&[ACK]).await.expect("ack");
    // Nothing else while the late answer could still come, then the third line.
    let third = line(&mut s, &mut buf, wait).await.expect("line 3");
    assert_eq!(text(&third), "5011 181234E13001003\x14");
    s.write_all(&[ACK]).await.expect("ack");
    // One line at a time: nothing more.
    assert_eq!(line(&mut s, &mut buf, Duration::from_millis(400)).await, None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        d.query_i64("SELECT delivered_id FROM outbox_cursors WHERE sink = 'surgard'"),
        d.query_i64("SELECT max(id) FROM outbox")
    );
    let m = &d.running.as_ref().expect("running").shared.metrics;
    assert_eq!(
        (
            m.automation.get("ack"),
            m.automation.get("nak"),
            m.automation.get("timeout")
        ),
        (3, 1, 1)
    );
    assert_eq!(m.automation_connected.get(), 1);
    d.stop().await;
}

#[tokio::test]
async fn heartbeat_when_idle_and_skip_after_repeated_naks() {
    let (mut d, auto) = client_daemon(|c| {
        c.automation.heartbeat_secs = 1;
        c.automation.nak_retries = 1;
    })
    .await;
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), auto.accept())
        .await
        .expect("meldkamer connects")
        .expect("accept");
    let mut buf = Vec::new();
    let hb = line(&mut s, &mut buf, Duration::from_secs(3)).await.expect("heartbeat");
    assert_eq!(text(&hb), "1011           @    \x14");
    s.write_all(&[ACK]).await.expect("ack");
    cid_line(&d, b"5011 181234E13001001\x14").await;
    cid_line(&d, b"5011 181234E13001002\x14").await;
    let wait = Duration::from_secs(3);
    let first = line(&mut s, &mut buf, wait).await.expect("line");
    s.write_all(&[NAK]).await.expect("nak");
    assert_eq!(line(&mut s, &mut buf, wait).await.as_deref(), Some(&first[..]));
    s.write_all(&[NAK]).await.expect("nak");
    // Refused twice with nak_retries = 1: skipped; the next line follows.
    let second = line(&mut s, &mut buf, wait).await.expect("line 2");
    assert_eq!(text(&second), "5011 181234E13001002\x14");
    s.write_all(&[ACK]).await.expect("ack");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        d.query_i64("SELECT count(*) FROM outbox WHERE skipped = 'nak'"),
        1,
        "the skipped row is marked"
    );
    let m = &d.running.as_ref().expect("running").shared.metrics;
    assert_eq!(m.automation.get("skipped"), 1);
    assert!(m.automation.get("heartbeat") >= 1);
    d.stop().await;
}

/// `nak_retries` counts the resends after a NAK (protocols/surgard.md §4.2): with the default 3
/// a refused line goes out four times, and the fourth NAK in a row skips it.
#[tokio::test]
async fn the_default_three_nak_retries_send_a_refused_line_four_times() {
    let (mut d, auto) = client_daemon(|c| assert_eq!(c.automation.nak_retries, 3, "the default")).await;
    cid_line(&d, b"5011 181234E13001001\x14").await;
    cid_line(&d, b"5011 181234E13001002\x14").await;
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), auto.accept())
        .await
        .expect("meldkamer connects")
        .expect("accept");
    let mut buf = Vec::new();
    let wait = Duration::from_secs(3);
    let first = line(&mut s, &mut buf, wait).await.expect("line");
    assert_eq!(text(&first), "5011 181234E13001001\x14");
    for resend in 1..=3 {
        s.write_all(&[NAK]).await.expect("nak");
        let again = line(&mut s, &mut buf, wait).await;
        assert_eq!(again.as_deref(), Some(&first[..]), "resend {resend} after NAK {resend}");
    }
    s.write_all(&[NAK]).await.expect("nak");
    let next = line(&mut s, &mut buf, wait).await.expect("line 2");
    assert_eq!(text(&next), "5011 181234E13001002\x14", "skipped after the fourth NAK");
    s.write_all(&[ACK]).await.expect("ack");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(d.query_i64("SELECT count(*) FROM outbox WHERE skipped = 'nak'"), 1);
    let m = &d.running.as_ref().expect("running").shared.metrics;
    assert_eq!(m.automation.get("nak"), 4);
    d.stop().await;
}

#[tokio::test]
async fn server_mode_resends_the_unacknowledged_line_to_a_new_connection() {
    let mut d = TestDaemon::start_with(ACCOUNTS, |c| {
        with_cid(c);
        c.automation.mode = AutomationMode::Server;
        c.automation.listen = "127.0.0.1:0".into();
        c.automation.heartbeat_secs = 0;
        c.automation.ack_timeout_ms = 5000;
    })
    .await;
    let addr = d.running.as_ref().and_then(|r| r.automation_addr).expect("listening");
    cid_line(&d, b"5011 181234E13001001\x14").await;
    cid_line(&d, b"5011 181234E13001002\x14").await;
    let mut a = TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    let wait = Duration::from_secs(3);
    let first = line(&mut a, &mut buf, wait).await.expect("line 1");
    a.write_all(&[ACK]).await.expect("ack");
    let second = line(&mut a, &mut buf, wait).await.expect("line 2");
    assert_eq!(text(&second), "5011 181234E13001002\x14");
    // The automation restarts before answering: a new connection replaces the old one and
    // gets the unacknowledged line, not the acknowledged one.
    let mut b = TcpStream::connect(addr).await.expect("connect");
    let mut buf2 = Vec::new();
    assert_eq!(line(&mut b, &mut buf2, wait).await.as_deref(), Some(&second[..]));
    assert_ne!(first, second);
    b.write_all(&[ACK]).await.expect("ack");
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        d.query_i64("SELECT delivered_id FROM outbox_cursors WHERE sink = 'surgard'"),
        2
    );
    d.stop().await;
}

fn stream_file_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

async fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_event_stream_file_holds_every_event_once_across_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("events.jsonl");
    let f2 = file.clone();
    let mut d = TestDaemon::start_with(ACCOUNTS, move |c| {
        with_cid(c);
        c.event_stream.mode = EventStreamMode::File;
        c.event_stream.file = f2;
    })
    .await;
    cid_line(&d, b"5011 181234E13001001\x14").await;
    cid_line(&d, b"5011 181234E13001002\x14").await;
    wait_for(|| stream_file_lines(&file).len() == 2, "two lines").await;
    // A restart: the stream goes on after the last line the file holds.
    d.restart().await;
    cid_line(&d, b"5011 181234E13001003\x14").await;
    wait_for(|| stream_file_lines(&file).len() == 3, "three lines").await;
    let lines = stream_file_lines(&file);
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().expect("seq")).collect();
    assert_eq!(seqs, [1, 2, 3]);
    for l in &lines {
        assert_eq!(l["version"], 1);
        assert_eq!(l["type"], "event");
        assert_eq!(l["event"]["code"], "130");
        assert_eq!(l["event"]["input"], "SG-CID");
    }
    let zones: Vec<&str> = lines
        .iter()
        .map(|l| l["event"]["zone"].as_str().expect("zone"))
        .collect();
    assert_eq!(zones, ["001", "002", "003"]);
    d.stop().await;
}

#[tokio::test]
async fn tcp_subscribers_resume_from_a_sequence_number() {
    let mut d = TestDaemon::start_with(ACCOUNTS, |c| {
        with_cid(c);
        c.event_stream.mode = EventStreamMode::Tcp;
        c.event_stream.listen = "127.0.0.1:0".into();
        c.event_stream.heartbeat_secs = 1;
    })
    .await;
    let addr = d.running.as_ref().and_then(|r| r.event_stream_addr).expect("stream");
    cid_line(&d, b"5011 181234E13001001\x14").await;
    cid_line(&d, b"5011 181234E13001002\x14").await;
    let s = TcpStream::connect(addr).await.expect("connect");
    let (rd, mut wr) = s.into_split();
    wr.write_all(b"{\"from\": 1}\n").await.expect("write");
    let mut rd = TokioBufReader::new(rd);
    let mut next = async || {
        let mut l = String::new();
        tokio::time::timeout(Duration::from_secs(3), rd.read_line(&mut l))
            .await
            .expect("a line in time")
            .expect("read");
        serde_json::from_str::<serde_json::Value>(&l).expect("json")
    };
    let hello = next().await;
    assert_eq!(
        (hello["type"].as_str(), hello["from"].as_i64()),
        (Some("hello"), Some(1))
    );
    let e = next().await;
    assert_eq!((e["seq"].as_i64(), e["event"]["zone"].as_str()), (Some(2), Some("002")));
    // Live: an event stored now arrives at once; idle: heartbeats.
    cid_line(&d, b"5011 181234E13001003\x14").await;
    let e = next().await;
    assert_eq!((e["seq"].as_i64(), e["event"]["zone"].as_str()), (Some(3), Some("003")));
    let hb = next().await;
    assert_eq!(
        (hb["type"].as_str(), hb["last"].as_i64(), hb["version"].as_i64()),
        (Some("heartbeat"), Some(3), Some(1))
    );
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// End to end, with the real binary.

/// The binary, running; killed if the test fails.
struct Serve {
    child: Child,
    cid: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(config: &Path, log: &Path) -> Serve {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log");
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start meldkamer");
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut first)
            .expect("ready line");
        assert!(first.starts_with("meldkamer ready "), "unexpected {first:?}");
        let cid = first
            .split_whitespace()
            .find_map(|w| w.strip_prefix("cid_tcp="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no cid_tcp in {first:?}"));
        Serve { child, cid }
    }

    /// SIGTERM, and wait for the graceful shutdown.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "meldkamer exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "meldkamer did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The automation software: accepts meldkamer's connection, ACKs every line (heartbeats
/// included) and records the event lines it acknowledged. `crash_after`: after that many
/// lines it reads one more, closes without answering, stays away for a second and comes back
/// on the same port.
async fn automation_server(addr: SocketAddr, got: Arc<Mutex<Vec<Vec<u8>>>>, crash_after: usize) {
    let mut crashed = false;
    loop {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let mut buf = Vec::new();
        loop {
            let Some(l) = line(&mut s, &mut buf, Duration::from_secs(30)).await else {
                break; // meldkamer went away (its restart): accept the next connection
            };
            let is_heartbeat = l.starts_with(b"1") && l.contains(&b'@');
            if !is_heartbeat && !crashed && got.lock().expect("lock").len() == crash_after {
                crashed = true;
                drop(s);
                drop(listener);
                tokio::time::sleep(Duration::from_secs(1)).await;
                break;
            }
            if s.write_all(&[ACK]).await.is_err() {
                break;
            }
            if !is_heartbeat {
                got.lock().expect("lock").push(l);
            }
        }
    }
}

/// A translator (Ajax Translator style): one connection, one line at a time, each sent again
/// until it is ACKed, reconnecting to wherever meldkamer listens now.
async fn translator(target: Arc<Mutex<SocketAddr>>, lines: Vec<Vec<u8>>) {
    let mut conn: Option<TcpStream> = None;
    for l in lines {
        loop {
            if conn.is_none() {
                let addr = *target.lock().expect("lock");
                match TcpStream::connect(addr).await {
                    Ok(s) => conn = Some(s),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            let Some(s) = conn.as_mut() else { continue };
            if s.write_all(&l).await.is_err() {
                conn = None;
                continue;
            }
            let mut b = [0u8; 1];
            match tokio::time::timeout(Duration::from_secs(4), s.read(&mut b)).await {
                Ok(Ok(1)) if b[0] == ACK => break,
                _ => {
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write_config(dir: &Path, db: &Path, automation: SocketAddr) -> PathBuf {
    let path = dir.join("meldkamer.toml");
    let text = format!(
        "[receiver]\ntcp_listen = \"\"\nudp_listen = \"\"\n\n\
         [cid_input]\ntcp_listen = \"127.0.0.1:0\"\n\n\
         [automation]\nmode = \"client\"\nconnect = \"{automation}\"\nheartbeat_secs = 1\nack_timeout_ms = 1000\n\n\
         [store]\npath = {db:?}\nload_demo_data = false\n\n[metrics]\nlisten = \"\"\n\n\
         [operator]\nsocket = \"\"\n\n[log]\nlevel = \"info\"\n",
        db = db.display().to_string()
    );
    std::fs::write(&path, text).expect("config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translator_to_automation_exactly_once_in_order_across_both_restarts() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("e2e.db");
    let log = dir.path().join("serve.log");
    let mut cfg = Config::default();
    cfg.store.path = db.clone();
    crate::common::import(
        &cfg,
        "[[account]]\naccount = \"1234\"\n\n[[account]]\naccount = \"5678\"\n",
    );
    // The automation's port, known before meldkamer starts.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    let auto_addr = probe.local_addr().expect("addr");
    drop(probe);
    let config = write_config(dir.path(), &db, auto_addr);

    let got = Arc::new(Mutex::new(Vec::new()));
    let automation = tokio::spawn(automation_server(auto_addr, got.clone(), 8));
    let serve = Serve::start(&config, &log);
    let target = Arc::new(Mutex::new(serve.cid));
    // 30 events from two accounts, alarms and restores, every line different.
    let lines: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            let acct = if i % 2 == 0 { "1234" } else { "5678" };
            let q = if i % 3 == 2 { 'R' } else { 'E' };
            format!("5011 18{acct}{q}13001{:03}\x14", i + 1).into_bytes()
        })
        .collect();
    let expected = lines.clone();
    let sender = tokio::spawn(translator(target.clone(), lines));

    // Restart meldkamer once the automation has taken about half the events.
    let wait_until = |n: usize, what: &'static str| {
        let got = got.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(40);
            while got.lock().expect("lock").len() < n {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_until(15, "15 events at the automation").await;
    tokio::task::spawn_blocking(move || serve.stop()).await.expect("stop");
    let serve = tokio::task::spawn_blocking({
        let config = config.clone();
        let log = log.clone();
        move || Serve::start(&config, &log)
    })
    .await
    .expect("restart");
    *target.lock().expect("lock") = serve.cid;
    tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("the translator got every ACK")
        .expect("translator");
    wait_until(30, "all 30 events at the automation").await;
    // Nothing more arrives: no duplicate after the last one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = got.lock().expect("lock").clone();
    let show = |v: &[Vec<u8>]| v.iter().map(|l| text(l)).collect::<Vec<_>>();
    assert_eq!(show(&got), show(&expected), "every event exactly once, in order");
    automation.abort();
    tokio::task::spawn_blocking(move || serve.stop()).await.expect("stop");
    let conn = rusqlite::Connection::open(&db).expect("db");
    let events: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("q");
    assert_eq!(events, 30, "stored exactly once too");
    let mut logtext = String::new();
    std::fs::File::open(&log)
        .and_then(|mut f| f.read_to_string(&mut logtext))
        .expect("log");
    assert!(!logtext.contains("panicked"), "{logtext}");
    // Both restarts really happened: the output connected three times (start, after the
    // automation came back, after meldkamer's restart).
    let connects = logtext.matches("connected to the automation software").count();
    assert!(connects >= 3, "{connects} connections:\n{logtext}");
    assert_eq!(logtext.matches("shutdown requested").count(), 2, "{logtext}");
}
