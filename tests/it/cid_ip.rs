//! The Contact ID input (`[cid_input]`): every framing over TCP and UDP, the answer each
//! framing expects, what is stored, retransmissions, split and pipelined messages, limits.

use std::net::SocketAddr;
use std::time::Duration;

use meldkamer::protocol::cid::{CidEvent, CidQualifier};
use meldkamer::protocol::cidip::encode_lupusec;
use meldkamer::protocol::codes::CidCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::common::{ACCOUNTS, TestDaemon};

const ACK: u8 = 0x06;
const NAK: u8 = 0x15;

async fn daemon() -> TestDaemon {
    daemon_with(|_| {}).await
}

async fn daemon_with(tweak: impl FnOnce(&mut meldkamer::config::Config)) -> TestDaemon {
    TestDaemon::start_with(ACCOUNTS, |c| {
        c.cid_input.tcp_listen = "127.0.0.1:0".into();
        c.cid_input.udp_listen = "127.0.0.1:0".into();
        tweak(c);
    })
    .await
}

fn cid_tcp(d: &TestDaemon) -> SocketAddr {
    d.running.as_ref().and_then(|r| r.cid_tcp_addr).expect("cid tcp")
}

fn cid_udp(d: &TestDaemon) -> SocketAddr {
    d.running.as_ref().and_then(|r| r.cid_udp_addr).expect("cid udp")
}

/// Read exactly `n` answer bytes, or what came within `wait`.
async fn answers(s: &mut TcpStream, n: usize, wait: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut b = [0u8; 16];
    while out.len() < n {
        match tokio::time::timeout_at(deadline, s.read(&mut b)).await {
            Ok(Ok(k)) if k > 0 => out.extend_from_slice(&b[..k]),
            _ => break,
        }
    }
    out
}

async fn exchange(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(msg).await.expect("write");
    answers(&mut s, 1, Duration::from_millis(1500)).await
}

async fn silent(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(msg).await.expect("write");
    answers(&mut s, 1, Duration::from_millis(400)).await
}

async fn udp_exchange(addr: SocketAddr, msg: &[u8], n: usize) -> Vec<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    s.send_to(msg, addr).await.expect("send");
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_millis(1500), s.recv_from(&mut buf)).await {
            Ok(Ok((k, _))) => out.push(buf[..k].to_vec()),
            _ => break,
        }
    }
    out
}

fn lupusec(account: &str, q: CidQualifier, code: u16, zone: &str) -> Vec<u8> {
    encode_lupusec(
        account,
        "18",
        &CidEvent {
            qualifier: q,
            code: CidCode(code),
            group: "01".into(),
            zone: zone.into(),
        },
    )
    .expect("frame")
}

/// A raw DC-05 line: the first 15 digits, the check digit, then `end`.
fn dc05(first15: &str, end: &str) -> Vec<u8> {
    let s = meldkamer::protocol::cid::contact_id_checksum(first15).expect("digits");
    format!("{first15}{s}{end}").into_bytes()
}

fn rows(d: &TestDaemon, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(d.db_path()).expect("db");
    let mut stmt = conn.prepare(sql).expect("sql");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn frames(d: &TestDaemon) -> Vec<String> {
    rows(
        d,
        "SELECT ifnull(token,'') || ' ' || outcome || ' ' || ifnull(reason,'') || ' ' || ifnull(hex(response),'') FROM frames ORDER BY id",
    )
}

fn events(d: &TestDaemon) -> Vec<String> {
    rows(
        d,
        "SELECT account || ' ' || code || ' ' || qualifier || ' ' || ifnull(zone,'') || ' ' || ifnull(user_no,'') || ' ' || ifnull(area,'') || ' ' || ifnull(receiver,'') || '/' || ifnull(line,'') FROM events ORDER BY id",
    )
}

#[tokio::test]
async fn every_framing_is_acknowledged_after_commit_and_stored() {
    let mut d = daemon().await;
    let addr = cid_tcp(&d);
    assert_eq!(exchange(addr, b"5011 181234E13001003\x14").await, [ACK]);
    assert_eq!(exchange(addr, b"501100 181234R13001003\x14").await, [ACK]);
    assert_eq!(
        exchange(addr, &lupusec("1234", CidQualifier::New, 401, "012")).await,
        [ACK]
    );
    assert_eq!(exchange(addr, &dc05("123418340101012", "\r\n")).await, [ACK]);
    assert_eq!(exchange(addr, b"S011[#1234|Nri1BA05]\x14").await, [ACK]);
    assert_eq!(
        events(&d),
        [
            "1234 130 new 003  01 01/1",
            "1234 130 restore 003  01 01/100",
            "1234 401 new  012 01 /",
            "1234 401 restore  012 01 /",
            "1234 BA new 05  1 01/1",
        ]
    );
    assert_eq!(
        frames(&d),
        [
            "SG-CID accepted  06",
            "SG-CID accepted  06",
            "LUPUSEC-CID accepted  06",
            "DC05-CID accepted  06",
            "SG-SIA accepted  06",
        ]
    );
    // The alarm opened and its restore marked it restored; the opening and closing reached the
    // supervisor (account without a customer record) only as the burglary alarm.
    assert_eq!(
        d.query_i64("SELECT count(*) FROM alarms WHERE restored_ms IS NOT NULL"),
        1
    );
    let m = &d.running.as_ref().expect("running").shared.metrics;
    assert_eq!(m.cid_messages.get("surgard"), 3);
    assert_eq!((m.cid_messages.get("lupusec"), m.cid_messages.get("dc05")), (1, 1));
    assert_eq!(m.responses.get("ACK"), 5);
    d.stop().await;
}

#[tokio::test]
async fn each_framing_refuses_as_it_expects() {
    let mut d = daemon().await;
    let addr = cid_tcp(&d);
    // Lupusec: a wrong checksum is not answered (the panel sends it again).
    let mut bad = lupusec("1234", CidQualifier::New, 130, "003");
    let n = bad.len();
    bad[n - 2] = if bad[n - 2] == b'0' { b'1' } else { b'0' };
    assert_eq!(silent(addr, &bad).await, Vec::<u8>::new());
    assert_eq!(silent(addr, b"[1234 18113001]").await, Vec::<u8>::new());
    // DC-05: a wrong check digit is NAKed.
    assert_eq!(exchange(addr, b"1234181130010038\r").await, [NAK]);
    // Sur-Gard: a line that is not understood is NAKed.
    assert_eq!(exchange(addr, b"5011 181234X13001003\x14").await, [NAK]);
    assert_eq!(exchange(addr, b"S011[NBA05]\x14").await, [NAK]);
    // Bytes of no framing: nothing.
    assert_eq!(silent(addr, b"\xff\xfe\xfd\r").await, Vec::<u8>::new());
    assert_eq!(events(&d), Vec::<String>::new());
    assert_eq!(
        frames(&d),
        [
            "LUPUSEC-CID silent checksum ",
            "LUPUSEC-CID silent syntax ",
            "DC05-CID refused checksum 15",
            "SG-CID refused syntax 15",
            "SG-SIA refused syntax 15",
            " garbage garbage ",
        ]
    );
    let m = &d.running.as_ref().expect("running").shared.metrics;
    assert_eq!((m.refusals.get("checksum"), m.refusals.get("syntax")), (2, 3));
    assert_eq!(m.responses.get("NAK"), 3);
    d.stop().await;
}

#[tokio::test]
async fn unknown_accounts_are_acknowledged_stored_and_reach_the_supervisor() {
    let mut d = daemon().await;
    let addr = cid_tcp(&d);
    assert_eq!(exchange(addr, b"5011 189999E13001003\x14").await, [ACK]);
    // The real XT2 frame of protocols/surgard.md: its subscriber "CID2" is no account here.
    assert_eq!(exchange(addr, b"[CID2 181401010012843]").await, [ACK]);
    assert_eq!(exchange(addr, &dc05("999918113001003", "\r")).await, [ACK]);
    // An account that requires encrypted DC-09 does not take plain Contact ID.
    assert_eq!(exchange(addr, b"5011 185678E13001003\x14").await, [ACK]);
    // Heartbeats are answered and not stored; other Sur-Gard formats are ACKed and flagged.
    assert_eq!(exchange(addr, b"1011           @    \x14").await, [ACK]);
    assert_eq!(exchange(addr, b"8011A1234 1234 1\x14").await, [ACK]);
    assert_eq!(events(&d), Vec::<String>::new());
    assert_eq!(
        frames(&d),
        [
            "SG-CID refused unknown_account 06",
            "LUPUSEC-CID refused unknown_account 06",
            "DC05-CID refused unknown_account 06",
            "SG-CID refused plain_refused 06",
            "SG-OTHER refused unsupported_format 06",
        ]
    );
    let titles = rows(&d, "SELECT title FROM alarms WHERE queue = 'supervisor' ORDER BY id");
    assert_eq!(
        titles,
        [
            "Unknown account 9999",
            "Unknown account CID2",
            "Contact ID input not understood: Sur-Gard protocol ID '8' is not interpreted",
        ]
    );
    let m = &d.running.as_ref().expect("running").shared.metrics;
    assert_eq!(m.cid_messages.get("heartbeat"), 1);
    d.stop().await;
}

#[tokio::test]
async fn split_and_pipelined_messages_on_tcp() {
    let mut d = daemon().await;
    let addr = cid_tcp(&d);
    // Byte by byte, every framing, on one connection.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let lup = lupusec("1234", CidQualifier::New, 130, "004");
    let d05 = dc05("123418113001002", "\r");
    for msg in [&b"5011 181234E13001001\x14"[..], &lup, &d05] {
        for b in msg {
            s.write_all(&[*b]).await.expect("write");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(answers(&mut s, 1, Duration::from_millis(1500)).await, [ACK]);
    }
    // Pipelined: one write, five messages of three framings; answers in order, NAK included.
    let mut burst = Vec::new();
    burst.extend_from_slice(b"5011 181234E13001006\x14");
    burst.extend_from_slice(b"1234181130010038\r\n");
    burst.extend_from_slice(&lupusec("1234", CidQualifier::Restore, 130, "006"));
    burst.extend_from_slice(b"1011           @    \x14");
    burst.extend_from_slice(b"5011 181234E13001007\x14");
    s.write_all(&burst).await.expect("write");
    assert_eq!(
        answers(&mut s, 5, Duration::from_millis(2000)).await,
        [ACK, NAK, ACK, ACK, ACK]
    );
    // Split across writes at awkward places: in the middle of a terminator pair, and two
    // messages whose boundary falls inside one write.
    s.write_all(b"5011 181234E130010").await.expect("write");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let next = lupusec("1234", CidQualifier::New, 130, "009");
    s.write_all(&[&b"08\x14"[..], &next[..10]].concat())
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.write_all(&next[10..]).await.expect("write");
    assert_eq!(answers(&mut s, 2, Duration::from_millis(2000)).await, [ACK, ACK]);
    let zones = rows(&d, "SELECT zone FROM events ORDER BY id");
    assert_eq!(zones, ["001", "004", "002", "006", "006", "007", "008", "009"]);
    d.stop().await;
}

#[tokio::test]
async fn retransmissions_are_recognised_and_genuine_repeats_are_not() {
    let mut d = daemon().await;
    let addr = cid_tcp(&d);
    let alarm = b"5011 181234E13001003\x14";
    assert_eq!(exchange(addr, alarm).await, [ACK]);
    // No ACK arrived (say): the translator sends the same line again.
    assert_eq!(exchange(addr, alarm).await, [ACK]);
    assert_eq!(events(&d).len(), 1);
    // Alarm, restore, alarm: three events, even within one write and one millisecond.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"5011 181234R13001003\x145011 181234E13001003\x14")
        .await
        .expect("write");
    assert_eq!(answers(&mut s, 2, Duration::from_millis(1500)).await, [ACK, ACK]);
    assert_eq!(events(&d).len(), 3);
    // The same over Lupusec framing after a restart: the memory survives it.
    let lup = lupusec("1234", CidQualifier::New, 130, "005");
    assert_eq!(exchange(addr, &lup).await, [ACK]);
    d.restart().await;
    let addr = cid_tcp(&d);
    assert_eq!(exchange(addr, &lup).await, [ACK]);
    assert_eq!(events(&d).len(), 4);
    assert_eq!(
        d.query_i64("SELECT count(*) FROM frames WHERE outcome = 'retransmission'"),
        2
    );
    // Outside the window the same message is a new event.
    d.clock.advance(time::Duration::seconds(61));
    assert_eq!(exchange(addr, &lup).await, [ACK]);
    assert_eq!(events(&d).len(), 5);
    d.stop().await;
}

#[tokio::test]
async fn udp_datagrams_are_answered_per_message() {
    let mut d = daemon().await;
    let addr = cid_udp(&d);
    assert_eq!(udp_exchange(addr, b"5011 181234E13001003\x14", 1).await, [vec![ACK]]);
    assert_eq!(
        udp_exchange(addr, &lupusec("1234", CidQualifier::New, 130, "004"), 1).await,
        [vec![ACK]]
    );
    // An unterminated DC-05 message: the datagram ends it.
    assert_eq!(udp_exchange(addr, &dc05("123418113001002", ""), 1).await, [vec![ACK]]);
    assert_eq!(udp_exchange(addr, b"1234181130010038\r", 1).await, [vec![NAK]]);
    // Two messages in one datagram, two answers.
    assert_eq!(
        udp_exchange(addr, b"5011 181234E13001006\x145011 181234X\x14", 2).await,
        [vec![ACK], vec![NAK]]
    );
    assert_eq!(
        frames(&d),
        [
            "SG-CID accepted  06",
            "LUPUSEC-CID accepted  06",
            "DC05-CID accepted  06",
            "DC05-CID refused checksum 15",
            "SG-CID accepted  06",
            "SG-CID refused syntax 15",
        ]
    );
    assert_eq!(d.query_i64("SELECT count(*) FROM frames WHERE transport = 'udp'"), 6);
    d.stop().await;
}

#[tokio::test]
async fn limits_hold() {
    let mut d = daemon_with(|c| {
        c.cid_input.max_line_bytes = 64;
        c.cid_input.max_connections_per_ip = 2;
        c.cid_input.idle_timeout_secs = 1;
    })
    .await;
    let addr = cid_tcp(&d);
    // An over-long line is discarded (stored as oversize, not answered); the next message on
    // the same connection is read normally.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut long = vec![b'5'; 200];
    long.push(0x14);
    s.write_all(&long).await.expect("write");
    s.write_all(b"5011 181234E13001003\x14").await.expect("write");
    assert_eq!(answers(&mut s, 1, Duration::from_millis(1500)).await, [ACK]);
    assert_eq!(
        rows(
            &d,
            "SELECT outcome || ' ' || reason || ' ' || length(raw) FROM frames WHERE outcome = 'garbage'"
        ),
        ["garbage oversize 64"]
    );
    // Per-address cap: a third connection is closed at once.
    let _b = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_millis(1000), c.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "third connection should be closed: {r:?}"
    );
    // Idle timeout: the first connection is closed after a second of silence.
    let r = tokio::time::timeout(Duration::from_millis(2500), s.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "idle connection should be closed: {r:?}"
    );
    let m = &d.running.as_ref().expect("running").shared.metrics;
    assert_eq!(m.connections_refused.get("contact_id", "per_peer"), 1);
    assert_eq!(m.refusals.get("oversize"), 1);
    d.stop().await;
}

#[tokio::test]
async fn framings_can_be_switched_off() {
    let mut d = daemon_with(|c| c.cid_input.framings = vec!["surgard".into()]).await;
    let addr = cid_tcp(&d);
    assert_eq!(
        silent(addr, &lupusec("1234", CidQualifier::New, 130, "003")).await,
        Vec::<u8>::new()
    );
    // Without the DC-05 framing a 16-digit line is a Sur-Gard line: protocol ID 1, not a
    // heartbeat, so another format (ACKed, flagged for the supervisor).
    assert_eq!(exchange(addr, b"1234181130010037\r").await, [ACK]);
    assert_eq!(exchange(addr, b"5011 181234E13001003\x14").await, [ACK]);
    assert_eq!(events(&d).len(), 1);
    assert_eq!(
        frames(&d),
        [
            " garbage garbage ",
            "SG-OTHER refused unsupported_format 06",
            "SG-CID accepted  06"
        ]
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_replay_in_process() {
    use meldkamer::replay::suite::{self, Status};
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/cid-ip");
    let files = suite::collect(&[dir]).expect("fixtures");
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        let r = suite::check_in_process(&f, false).await;
        assert_eq!(r.status, Status::Passed, "{}", suite::text(&r));
        // Against a running daemon these traces are skipped: they need the in-process listeners.
        let t = meldkamer::trace::Trace::load(&f).expect("trace");
        assert!(
            meldkamer::replay::target::in_process_only(&t).is_some(),
            "{}",
            f.display()
        );
    }
}

#[test]
fn trace_transports_parse() {
    use meldkamer::trace::{Step, Trace, TraceTransport};
    let t = Trace::parse(
        "@transport cid-tcp\n@transport cid-udp\n@transport automation\n",
        std::path::Path::new("x"),
    )
    .expect("parses");
    let got: Vec<Step> = t.steps.into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        got,
        [
            Step::Transport(TraceTransport::CidTcp),
            Step::Transport(TraceTransport::CidUdp),
            Step::Transport(TraceTransport::Automation)
        ]
    );
    let e = Trace::parse("@transport serial\n", std::path::Path::new("x")).expect_err("unknown");
    assert!(e.problem.contains("cid-tcp"), "{e}");
}
