//! The real binary under a stand-in for systemd: a Unix datagram socket of the test as
//! `NOTIFY_SOCKET`, and `WATCHDOG_USEC` set. `READY=1` comes only once the listeners are bound
//! and the store is open, never from a start that fails; `WATCHDOG=1` stops while the store
//! writer is stuck in a commit and comes back when it is free.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meldkamer::protocol::frame::Token;

use crate::common::{plain, ts};

const BIN: &str = env!("CARGO_BIN_EXE_meldkamer");

/// The daemon as a child process, killed (by its PID) when dropped.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The service manager's end: what the daemon notifies, datagram by datagram.
pub struct Manager {
    pub sock: UnixDatagram,
    pub path: PathBuf,
}

impl Manager {
    pub fn new(dir: &Path) -> Manager {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        Manager { sock, path }
    }

    /// The next notice within `wait`.
    pub fn next(&self, wait: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Wait for a notice with the line `line`; returns it.
    pub fn wait_for(&self, line: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(n) = self.next(left)
                && n.lines().any(|l| l == line)
            {
                return n;
            }
        }
        panic!("no {line:?} notice within {limit:?}");
    }

    /// Every notice already sent (none waited for).
    pub fn drain(&self) -> Vec<String> {
        let mut all = Vec::new();
        while let Some(n) = self.next(Duration::from_millis(1)) {
            all.push(n);
        }
        all
    }
}

/// A configuration for the binary in `dir`: DC-09 TCP on `tcp`, no UDP, metrics or operator
/// socket, and `extra` appended.
pub fn write_config(dir: &Path, tcp: &str, extra: &str) -> PathBuf {
    let path = dir.join("meldkamer.toml");
    let text = format!(
        "[receiver]\ntcp_listen = \"{tcp}\"\nudp_listen = \"\"\n\n\
         [store]\npath = {db:?}\nload_demo_data = false\nbusy_timeout_ms = 60000\n\n\
         [metrics]\nlisten = \"\"\n\n[operator]\nsocket = \"\"\n\n{extra}",
        db = dir.join("m.db").display().to_string()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Import account 1234 with the binary.
pub fn import_1234(dir: &Path, config: &Path) {
    let records = dir.join("records.toml");
    std::fs::write(&records, "[[account]]\naccount = \"1234\"\n").expect("records");
    crate::crash::import_with_binary(config, &records);
}

/// `meldkamer serve --config CONFIG` with `env`; stdout is read by a thread (the ready line),
/// stderr goes to `dir/daemon.log`.
pub fn spawn(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Daemon {
    let log = std::fs::File::create(dir.join("daemon.log")).expect("log");
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn meldkamer serve");
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    Daemon(child)
}

/// The `tcp=` address in a READY notice's STATUS line.
fn tcp_in(notice: &str) -> SocketAddr {
    notice
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tcp="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no tcp= address in {notice:?}"))
}

/// A link test of account 1234, sent on `s`, its answer read.
fn link_test(s: &mut TcpStream, seq: u16) -> Option<Vec<u8>> {
    let frame = plain(Token::Null, seq, "1234", "", ts(time::OffsetDateTime::now_utc()));
    s.write_all(&frame).expect("send");
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).ok()? == 1 {
        out.push(b[0]);
        if b[0] == b'\r' {
            return Some(out);
        }
    }
    None
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
}

/// READY=1 arrives with the addresses in STATUS, and at that moment the DC-09 port accepts
/// and a frame is answered (so the store writer runs). Mutation-checked: READY sent before
/// `daemon::start` fails the next test (a start that fails sends it), and the connection
/// here is then refused.
#[test]
fn ready_only_once_the_listeners_are_bound_and_the_store_is_open() {
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(dir.path(), "127.0.0.1:0", "");
    import_1234(dir.path(), &config);
    let manager = Manager::new(dir.path());
    let _daemon = spawn(
        dir.path(),
        &config,
        &[("NOTIFY_SOCKET", manager.path.to_str().expect("path"))],
    );
    let ready = manager.wait_for("READY=1", Duration::from_secs(60));
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=meldkamer ready tcp=")),
        "{ready:?}"
    );
    let mut s = TcpStream::connect(tcp_in(&ready)).expect("the DC-09 port is bound at READY");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let answer = link_test(&mut s, 1).expect("an answer");
    assert!(
        String::from_utf8_lossy(&answer).contains("\"ACK\""),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// A start that fails (the DC-09 port is taken) exits with an error and never says READY.
#[test]
fn a_start_that_fails_never_says_ready() {
    let dir = tempfile::tempdir().expect("dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let config = write_config(dir.path(), &addr, "");
    let manager = Manager::new(dir.path());
    let mut daemon = spawn(
        dir.path(),
        &config,
        &[("NOTIFY_SOCKET", manager.path.to_str().expect("path"))],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = daemon.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop: {}",
            log_of(dir.path())
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    assert!(
        log_of(dir.path()).contains("cannot listen on TCP"),
        "{}",
        log_of(dir.path())
    );
    let notices = manager.drain();
    assert!(
        !notices.iter().any(|n| n.lines().any(|l| l == "READY=1")),
        "READY from a failed start: {notices:?}"
    );
}

/// With WATCHDOG_USEC set the daemon pings at half the interval; while another process holds
/// the database's write lock and a frame waits for the writer, the pings stop (systemd would
/// restart the service); once the lock is gone the frame is answered and the pings resume.
/// Mutation-checked: a watchdog that pings without asking the writer fails here.
#[test]
fn the_watchdog_stops_while_the_writer_is_stuck_in_a_commit() {
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(dir.path(), "127.0.0.1:0", "");
    import_1234(dir.path(), &config);
    let manager = Manager::new(dir.path());
    let _daemon = spawn(
        dir.path(),
        &config,
        &[
            ("NOTIFY_SOCKET", manager.path.to_str().expect("path")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let ready = manager.wait_for("READY=1", Duration::from_secs(60));
    for _ in 0..3 {
        manager.wait_for("WATCHDOG=1", Duration::from_secs(30));
    }

    // Another process takes the write lock; a frame then keeps the writer waiting in its
    // commit group (busy_timeout_ms = 60000).
    let lock = rusqlite::Connection::open(dir.path().join("m.db")).expect("db");
    lock.execute_batch("BEGIN IMMEDIATE").expect("write lock");
    let mut s = TcpStream::connect(tcp_in(&ready)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let frame = plain(Token::Null, 2, "1234", "", ts(time::OffsetDateTime::now_utc()));
    s.write_all(&frame).expect("send");
    // A ping answered before the frame reached the writer may still arrive; then none.
    std::thread::sleep(Duration::from_millis(1000));
    manager.drain();
    let stalled = Instant::now();
    let mut during = Vec::new();
    while stalled.elapsed() < Duration::from_millis(2500) {
        if let Some(n) = manager.next(Duration::from_millis(100)) {
            during.push(n);
        }
    }
    assert!(
        !during.iter().any(|n| n.lines().any(|l| l == "WATCHDOG=1")),
        "watchdog pings while the writer is stuck: {during:?}"
    );

    lock.execute_batch("ROLLBACK").expect("release");
    let mut answer = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).expect("the answer") == 1 {
        answer.push(b[0]);
        if b[0] == b'\r' {
            break;
        }
    }
    assert!(String::from_utf8_lossy(&answer).contains("\"ACK\""));
    manager.wait_for("WATCHDOG=1", Duration::from_secs(30));
}
