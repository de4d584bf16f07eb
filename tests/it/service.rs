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

/// Whether this test may make a private mount namespace (root, as in CI).
fn can_unshare() -> bool {
    Command::new("unshare")
        .args(["-m", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Under systemd (JOURNAL_STREAM names stderr) the daemon writes journal entries, with the
/// event's fields and its priority and no colour codes, and nothing to stderr. The journal is
/// a socket of the test, mounted at /run/systemd/journal/socket in a private mount namespace
/// of the daemon (`unshare -m`, root only; elsewhere the test says it is skipped).
/// Mutation-checked: ignoring JOURNAL_STREAM fails it.
#[test]
fn logs_go_to_the_journal_under_systemd() {
    if !can_unshare() {
        eprintln!("SKIPPED logs_go_to_the_journal_under_systemd: `unshare -m` is not permitted here (needs root)");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(dir.path(), "127.0.0.1:0", "");
    import_1234(dir.path(), &config);
    let manager = Manager::new(dir.path());
    let jdir = dir.path().join("journal");
    std::fs::create_dir(&jdir).expect("journal dir");
    let journal = UnixDatagram::bind(jdir.join("socket")).expect("journal socket");
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr");
    let meta = stderr.metadata().expect("stat");
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let mut daemon = Daemon(
        Command::new("unshare")
            .args(["-m", "sh", "-c"])
            .arg(
                "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
                 mount --bind \"$0\" /run/systemd/journal && exec \"$@\"",
            )
            .arg(&jdir)
            .arg(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .env("NOTIFY_SOCKET", &manager.path)
            .env("JOURNAL_STREAM", &stream)
            .env_remove("WATCHDOG_USEC")
            .env_remove("RUST_LOG")
            .spawn()
            .expect("spawn"),
    );
    manager.wait_for("READY=1", Duration::from_secs(60));
    let mut entries: Vec<Vec<(String, String)>> = Vec::new();
    let started = |entries: &[Vec<(String, String)>]| {
        entries.iter().position(|e| {
            e.iter()
                .any(|(k, v)| k == "MESSAGE" && v == "meldkamer receiver listening")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline && started(&entries).is_none() {
        if let Ok(n) = journal.recv(&mut buf) {
            entries.push(journal_fields(&buf[..n]));
        }
    }
    let _ = daemon.0.kill();
    let _ = daemon.0.wait();
    let listening =
        &entries[started(&entries).unwrap_or_else(|| panic!("no journal entry for the start; got {entries:?}"))];
    let has = |k: &str, v: &str| listening.iter().any(|(kk, vv)| kk == k && vv == v);
    assert!(has("PRIORITY", "6"), "info is priority 6: {listening:?}");
    assert!(has("SYSLOG_IDENTIFIER", "meldkamer"), "{listening:?}");
    assert!(
        has("F_DB", &dir.path().join("m.db").display().to_string()),
        "the db field as its own journal field: {listening:?}"
    );
    assert!(
        entries.iter().flatten().all(|(_, v)| !v.contains('\u{1b}')),
        "no colour codes in the journal"
    );
    let on_stderr = std::fs::read_to_string(&stderr_path).expect("stderr");
    assert!(
        !on_stderr.contains("receiver listening"),
        "logged to stderr as well: {on_stderr}"
    );
}

/// The fields of one entry in the journal's native protocol: `KEY=value` lines, or `KEY`, a
/// newline, the value's length (64-bit little endian), the value and a newline.
fn journal_fields(mut b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            b = &b[(nl + 1).min(b.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &b[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().expect("length")) as usize;
            out.push((key, String::from_utf8_lossy(&rest[8..8 + len]).into_owned()));
            b = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    out
}

/// The log without colour codes.
fn plain_log(dir: &Path) -> String {
    let log = log_of(dir);
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ … final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn hup(daemon: &Daemon) {
    let ok = Command::new("kill")
        .arg("-HUP")
        .arg(daemon.0.id().to_string())
        .status()
        .expect("kill");
    assert!(ok.success());
}

/// One frame of `account` on a new connection; the answer's token.
fn answer_of(addr: SocketAddr, account: &str, seq: u16) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let data = format!("#{account}|Nri1/BA1");
    let frame = plain(Token::SiaDcs, seq, account, &data, ts(time::OffsetDateTime::now_utc()));
    s.write_all(&frame).expect("send");
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).expect("answer") == 1 {
        out.push(b[0]);
        if b[0] == b'\r' {
            break;
        }
    }
    crate::common::token_of(&out)
}

/// `systemctl reload` (SIGHUP) under the stand-in: RELOADING=1 then READY=1; the records file
/// is imported again (a new account is answered ACK instead of DUH); the log level changes
/// live; a listener setting is named as needing a restart; a records file that does not
/// validate and a configuration that does not validate are each named and change nothing.
/// Mutation-checked: a reload that skips the records, or that calls every change live, fails.
#[test]
fn reload_rereads_the_records_and_the_live_settings_and_names_the_rest() {
    let dir = tempfile::tempdir().expect("dir");
    let records = dir.path().join("records.toml");
    std::fs::write(&records, "[[account]]\naccount = \"1234\"\n").expect("records");
    let records_cfg = format!("[records]\nfiles = [{:?}]\n", records.display().to_string());
    let config = write_config(
        dir.path(),
        "127.0.0.1:0",
        &format!("{records_cfg}\n[log]\nlevel = \"warn\"\n"),
    );
    let manager = Manager::new(dir.path());
    let daemon = spawn(
        dir.path(),
        &config,
        &[("NOTIFY_SOCKET", manager.path.to_str().expect("path"))],
    );
    let ready = manager.wait_for("READY=1", Duration::from_secs(60));
    let tcp = tcp_in(&ready);
    assert_eq!(answer_of(tcp, "1234", 1), "ACK", "imported at start");
    assert_eq!(answer_of(tcp, "9999", 2), "DUH", "not a known account yet");
    assert!(
        !plain_log(dir.path()).contains("reload requested"),
        "info is off (level warn)"
    );

    std::fs::write(
        &records,
        "[[account]]\naccount = \"1234\"\n\n[[account]]\naccount = \"9999\"\n",
    )
    .expect("records");
    write_config(
        dir.path(),
        "127.0.0.1:0",
        &format!("{records_cfg}\n[log]\nlevel = \"info\"\n"),
    );
    // The same file, with the level and one listener setting changed.
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("udp_listen = \"\"\n", "udp_listen = \"\"\nmax_frame_bytes = 4096\n");
    std::fs::write(&config, text).expect("config");
    hup(&daemon);
    manager.wait_for("RELOADING=1", Duration::from_secs(30));
    manager.wait_for("READY=1", Duration::from_secs(60));
    let log = plain_log(dir.path());
    let line = |needle: &str| -> String {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{log}"))
            .to_string()
    };
    let applied = line("setting changed, applied");
    assert!(
        applied.contains("key=log.level") && applied.contains("to=\"info\""),
        "{applied}"
    );
    let restart = line("setting changed, needs a restart");
    assert!(
        restart.contains("key=receiver.max_frame_bytes") && restart.contains("to=4096"),
        "{restart}"
    );
    assert!(line("records re-read").contains("2 account(s)"), "{log}");
    let done = line("reload done");
    assert!(done.contains("applied=1") && done.contains("need_restart=1"), "{done}");
    assert_eq!(answer_of(tcp, "9999", 3), "ACK", "the new account, without a restart");

    // A records file that does not validate: named, and the records stay.
    std::fs::write(&records, "[[account]]\naccount = \n").expect("records");
    hup(&daemon);
    manager.wait_for("RELOADING=1", Duration::from_secs(30));
    manager.wait_for("READY=1", Duration::from_secs(60));
    let log = plain_log(dir.path());
    let refused = log
        .lines()
        .find(|l| l.contains("records not re-read"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(refused.contains("records.toml"), "names the file: {refused}");
    assert_eq!(answer_of(tcp, "9999", 4), "ACK", "the records stay as they were");

    // A configuration that does not validate: named, and nothing of it is taken.
    std::fs::write(&config, "[receiver]\ntcp_lissen = \"x\"\n").expect("config");
    hup(&daemon);
    manager.wait_for("RELOADING=1", Duration::from_secs(30));
    manager.wait_for("READY=1", Duration::from_secs(60));
    let log = plain_log(dir.path());
    let at = log
        .find("configuration not reloaded")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(log[at..].contains("tcp_lissen"), "names the key: {log}");
    assert_eq!(answer_of(tcp, "1234", 5), "ACK", "still running");
}

/// A TLS handshake with the operator API trusting only `ca` (a self-signed certificate, PEM).
async fn handshake(addr: SocketAddr, ca: &str) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).expect("pem"))
        .expect("root");
    let cfg =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A renewed certificate at the same paths is presented after a reload, without a restart;
/// a certificate and key that do not match leave the one in use. Mutation-checked: a reload
/// that does not read the certificate files again fails here.
#[tokio::test]
async fn reload_presents_a_renewed_tls_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("api.crt"), dir.path().join("api.key"));
    let issue = || rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let first = issue();
    std::fs::write(&cert, first.cert.pem()).expect("cert");
    std::fs::write(&key, first.signing_key.serialize_pem()).expect("key");
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let mut d = crate::common::TestDaemon::start_with(crate::common::ACCOUNTS, move |cfg| {
        cfg.operator.tcp_listen = "127.0.0.1:0".into();
        cfg.operator.tls_cert = c;
        cfg.operator.tls_key = k;
    })
    .await;
    let running = d.running.as_ref().expect("running");
    let addr = running.api_tls_addr.expect("TLS port");
    let mut reload = meldkamer::reload::Reload::new(None, d.cfg.clone(), running.reloader());
    handshake(addr, &first.cert.pem()).await.expect("the first certificate");

    let renewed = issue();
    std::fs::write(&cert, renewed.cert.pem()).expect("cert");
    std::fs::write(&key, renewed.signing_key.serialize_pem()).expect("key");
    assert!(
        handshake(addr, &renewed.cert.pem()).await.is_err(),
        "not before the reload"
    );
    reload.run().await;
    handshake(addr, &renewed.cert.pem())
        .await
        .expect("the renewed certificate after the reload");
    assert!(handshake(addr, &first.cert.pem()).await.is_err());

    // A certificate with another certificate's key: refused, the renewed one stays.
    std::fs::write(&cert, issue().cert.pem()).expect("cert");
    reload.run().await;
    handshake(addr, &renewed.cert.pem())
        .await
        .expect("the one in use stays");
    d.stop().await;
}

/// As an unprivileged user, a DC-09 port below 1024 is refused and the error names the
/// capability the unit must be given. Needs root to start the daemon as nobody (skipped, and
/// said, elsewhere).
#[test]
fn a_refused_low_port_names_the_capability() {
    let unprivileged_from: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n");
    if !root || unprivileged_from < 1024 {
        eprintln!("SKIPPED a_refused_low_port_names_the_capability: needs root, and ports below 1024 privileged");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let config = write_config(dir.path(), "127.0.0.1:1023", "");
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "cannot listen on TCP 127.0.0.1:1023: a port below 1024 needs the capability CAP_NET_BIND_SERVICE"
        ),
        "{err}"
    );
}
