//! Helpers shared by the integration tests: an in-process daemon on loopback with a temporary
//! database and a manual clock, a panel that speaks DC-09, and frame builders.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meldkamer::clock::ManualClock;
use meldkamer::config::Config;
use meldkamer::daemon::{self, Running};
use meldkamer::protocol::crypto::{Key, SeededPad, encrypt_body};
use meldkamer::protocol::frame::{AccountField, Body, Frame, Framing, Plain, Token};
use meldkamer::protocol::timestamp::Timestamp;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The fixed "now" of the tests.
pub const T0: OffsetDateTime = time::macros::datetime!(2026-01-15 12:00:00 UTC);

/// Test accounts: plain 1234, encrypted 5678 (required), keyed 2222 (optional), binary-CRC 4321.
pub const ACCOUNTS: &str = r#"
[[account]]
account = "1234"

[[account]]
account = "5678"
key = "2B7E151628AED2A6ABF7158809CF4F3C"
require_encryption = true

[[account]]
account = "2222"
key = "0123456789abcdef"
key_format = "ascii"
require_encryption = false

[[account]]
account = "4321"
quirks = ["crc_binary"]
"#;

pub fn key_5678() -> Key {
    Key::from_hex("2B7E151628AED2A6ABF7158809CF4F3C").expect("key")
}

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub clock: Arc<ManualClock>,
    pub cfg: Config,
}

impl TestDaemon {
    pub fn config(dir: &std::path::Path) -> Config {
        let mut cfg = Config::default();
        cfg.receiver.tcp_listen = "127.0.0.1:0".into();
        cfg.receiver.udp_listen = "127.0.0.1:0".into();
        cfg.metrics.listen = String::new();
        cfg.operator.socket = String::new();
        cfg.store.path = dir.join("test.db");
        cfg.store.load_demo_data = false;
        cfg
    }

    pub async fn start_with(accounts: &str, tweak: impl FnOnce(&mut Config)) -> TestDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Self::config(dir.path());
        tweak(&mut cfg);
        import(&cfg, accounts);
        let clock = Arc::new(ManualClock::new(T0));
        let running = daemon::start(cfg.clone(), clock.clone()).await.expect("daemon starts");
        TestDaemon {
            dir,
            running: Some(running),
            clock,
            cfg,
        }
    }

    pub async fn start() -> TestDaemon {
        Self::start_with(ACCOUNTS, |_| {}).await
    }

    pub fn tcp(&self) -> SocketAddr {
        self.running.as_ref().and_then(|r| r.tcp_addr).expect("tcp")
    }

    pub fn udp(&self) -> SocketAddr {
        self.running.as_ref().and_then(|r| r.udp_addr).expect("udp")
    }

    pub fn db_path(&self) -> PathBuf {
        self.cfg.store.path.clone()
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
            r.wait().await;
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        let running = daemon::start(self.cfg.clone(), self.clock.clone())
            .await
            .expect("restart");
        self.running = Some(running);
    }

    pub fn query_i64(&self, sql: &str) -> i64 {
        let conn = rusqlite::Connection::open(self.db_path()).expect("db");
        conn.query_row(sql, [], |r| r.get(0)).expect("query")
    }
}

/// Import records as `meldkamer import` does (keys sealed with the keys file beside the
/// database, created when missing).
pub fn import(cfg: &Config, toml: &str) {
    let records = meldkamer::records::parse_toml(toml, "test").expect("records");
    let mut conn = meldkamer::store::open_write(&cfg.store.path, Duration::from_secs(5)).expect("db");
    let seal = meldkamer::store::sealed::key_from_config(cfg, &conn, false).expect("keys file");
    meldkamer::records::apply(&mut conn, &records, &seal).expect("import");
}

pub fn ts(t: OffsetDateTime) -> Option<Timestamp> {
    Some(Timestamp::from_datetime(t))
}

/// A plain frame.
pub fn plain(token: Token, seq: u16, account: &str, data: &str, t: Option<Timestamp>) -> Vec<u8> {
    Frame {
        framing: Framing::default(),
        token,
        encrypted: false,
        seq,
        receiver: Some("1".into()),
        line: "1".into(),
        account: AccountField::Number(account.into()),
        body: Body::Plain(Plain {
            data: data.into(),
            xdata: vec![],
            timestamp: t,
        }),
    }
    .encode()
}

/// An encrypted frame.
pub fn encrypted(
    token: Token,
    seq: u16,
    account: &str,
    data: &str,
    key: &Key,
    t: OffsetDateTime,
    seed: u64,
) -> Vec<u8> {
    let p = Plain {
        data: data.into(),
        xdata: vec![],
        timestamp: ts(t),
    };
    let ct = encrypt_body(key, &p, false, &mut SeededPad::new(seed));
    Frame {
        framing: Framing::default(),
        token,
        encrypted: true,
        seq,
        receiver: Some("1".into()),
        line: "1".into(),
        account: AccountField::Number(account.into()),
        body: Body::Encrypted(ct),
    }
    .encode()
}

/// Read one response frame (LF … CR) or time out.
pub async fn read_frame(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut b)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        out.push(b[0]);
        if b[0] == b'\r' && out.first() == Some(&b'\n') {
            return Some(out);
        }
    }
}

/// Send one frame on a new TCP connection and read the response.
pub async fn tcp_exchange(addr: SocketAddr, frame: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(frame).await.expect("write");
    read_frame(&mut s, Duration::from_millis(1500)).await
}

/// Send one datagram and read the response.
pub async fn udp_exchange(addr: SocketAddr, frame: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    s.send_to(frame, addr).await.expect("send");
    let mut buf = [0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_millis(1500), s.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(buf[..n].to_vec())
}

/// The token of a response frame.
pub fn token_of(resp: &[u8]) -> String {
    let f = meldkamer::protocol::frame::decode_frame(resp, &Default::default()).expect("response decodes");
    format!("{}{}", if f.encrypted { "*" } else { "" }, f.token.as_str())
}
