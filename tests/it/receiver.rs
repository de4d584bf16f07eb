//! The receiver daemon on loopback: every response kind over TCP and UDP, framing on TCP,
//! limits, retransmissions (also across a restart) and graceful shutdown.

use std::time::Duration;

use meldkamer::protocol::crypto::decrypt_body;
use meldkamer::protocol::frame::{Body, Token, decode_frame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::*;

#[tokio::test]
async fn every_response_kind_over_tcp_and_udp() {
    let mut d = TestDaemon::start().await;
    let now = T0;
    let key = key_5678();
    let bad_key = meldkamer::protocol::crypto::Key::from_hex("000102030405060708090A0B0C0D0E0F").expect("key");
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        (
            "plain ACK",
            plain(Token::SiaDcs, 1, "1234", "#1234|Nri1/BA01", ts(now)),
            Some("ACK"),
        ),
        (
            "CID ACK",
            plain(Token::AdmCid, 2, "1234", "#1234|1130 01 003", None),
            Some("ACK"),
        ),
        ("NULL ACK", plain(Token::Null, 0, "1234", "", None), Some("ACK")),
        (
            "encrypted *ACK",
            encrypted(Token::SiaDcs, 3, "5678", "#5678|Nri1/FA02", &key, now, 1),
            Some("*ACK"),
        ),
        (
            "encrypted NULL *ACK",
            encrypted(Token::Null, 0, "5678", "", &key, now, 2),
            Some("*ACK"),
        ),
        (
            "stale NAK",
            encrypted(
                Token::SiaDcs,
                4,
                "5678",
                "#5678|Nri1/BA01",
                &key,
                now - time::Duration::seconds(41),
                3,
            ),
            Some("NAK"),
        ),
        (
            "future NAK",
            encrypted(
                Token::SiaDcs,
                5,
                "5678",
                "#5678|Nri1/BA01",
                &key,
                now + time::Duration::seconds(21),
                4,
            ),
            Some("NAK"),
        ),
        (
            "wrong key NAK",
            encrypted(Token::SiaDcs, 6, "5678", "#5678|Nri1/BA01", &bad_key, now, 5),
            Some("NAK"),
        ),
        (
            "unknown account DUH",
            plain(Token::SiaDcs, 7, "9999", "#9999|Nri1/BA01", None),
            Some("DUH"),
        ),
        (
            "unsupported token DUH",
            plain(Token::Other("SIA-PUL".into()), 8, "1234", "", None),
            Some("DUH"),
        ),
        (
            "no key DUH",
            encrypted(Token::SiaDcs, 9, "1234", "#1234|Nri1/BA01", &key, now, 6),
            Some("DUH"),
        ),
        (
            "downgrade DUH",
            plain(Token::SiaDcs, 10, "5678", "#5678|Nri1/BA01", None),
            Some("DUH"),
        ),
        (
            "unknown code ACK",
            plain(Token::SiaDcs, 11, "1234", "#1234|Nri1/ZX01", None),
            Some("ACK"),
        ),
    ];
    for transport in ["tcp", "udp"] {
        for (name, frame, want) in &cases {
            let resp = if transport == "tcp" {
                tcp_exchange(d.tcp(), frame).await
            } else {
                udp_exchange(d.udp(), frame).await
            };
            let got = resp.as_deref().map(token_of);
            assert_eq!(got.as_deref(), *want, "{transport}: {name}");
            let resp = resp.expect("response");
            if *want == Some("*ACK") {
                let f = decode_frame(&resp, &Default::default()).expect("decodes");
                let Body::Encrypted(ct) = &f.body else {
                    panic!("encrypted ACK")
                };
                let dec = decrypt_body(&key, ct).expect("our *ACK decrypts with the account key");
                assert_eq!(dec.plain.timestamp, ts(now), "{name}: receiver time in *ACK");
            }
            if *want == Some("NAK") {
                let f = decode_frame(&resp, &Default::default()).expect("decodes");
                let Body::Plain(p) = &f.body else {
                    panic!("NAK is never encrypted")
                };
                assert_eq!(p.timestamp, ts(now), "{name}: NAK carries receiver time");
                assert_eq!(f.seq, 0);
            }
        }
        // Bad CRC: no response at all.
        let mut bad = plain(Token::SiaDcs, 12, "1234", "#1234|Nri1/BA01", None);
        bad[1] = if bad[1] == b'0' { b'1' } else { b'0' };
        let resp = if transport == "tcp" {
            tcp_exchange(d.tcp(), &bad).await
        } else {
            udp_exchange(d.udp(), &bad).await
        };
        assert_eq!(resp, None, "{transport}: bad CRC gets no response");
    }
    d.stop().await;
    // Everything a panel sent is stored: accepted frames with events, refusals with reasons.
    assert_eq!(d.query_i64("SELECT count(*) FROM frames WHERE outcome = 'refused'"), 14);
    assert_eq!(
        d.query_i64("SELECT count(*) FROM frames WHERE outcome = 'silent' AND reason = 'crc'"),
        2
    );
    assert_eq!(
        d.query_i64("SELECT count(*) FROM frames WHERE reason = 'unknown_account'"),
        2
    );
    assert_eq!(
        d.query_i64("SELECT count(*) FROM events WHERE code = 'ZX' AND category IS NULL"),
        1
    );
    // The UDP copy of each event is a retransmission of the TCP one (same account, seq, payload).
    assert_eq!(
        d.query_i64("SELECT count(*) FROM frames WHERE outcome = 'retransmission'"),
        4
    );
}

#[tokio::test]
async fn two_frames_in_one_read_and_garbage_between() {
    let mut d = TestDaemon::start().await;
    let a = plain(Token::SiaDcs, 40, "1234", "#1234|Nri1/BA01", None);
    let b = plain(Token::SiaDcs, 41, "1234", "#1234|Nri1/BR01", None);
    let mut all = a.clone();
    all.extend_from_slice(b"\x00\xffgarbage\n123");
    all.extend_from_slice(&b);
    all.extend_from_slice(&a);
    let mut s = TcpStream::connect(d.tcp()).await.expect("connect");
    s.write_all(&all).await.expect("write");
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let r = read_frame(&mut s, Duration::from_secs(2)).await.expect("response");
        let f = decode_frame(&r, &Default::default()).expect("decodes");
        assert_eq!(f.token, Token::Ack);
        seqs.push(f.seq);
    }
    assert_eq!(seqs, vec![40, 41, 40], "ACKs in frame order");
    drop(s);
    d.stop().await;
    assert_eq!(
        d.query_i64("SELECT count(*) FROM events"),
        2,
        "the repeated frame is not a new event"
    );
    assert_eq!(d.query_i64("SELECT count(*) FROM frames WHERE outcome = 'garbage'"), 2);
}

/// A frame longer than the room a connection makes before each read (and than one read of
/// it), carrying many events, followed by a short one in the same write: both are read whole.
#[tokio::test]
async fn a_long_frame_of_many_events_and_a_short_one_in_one_write() {
    let mut d = TestDaemon::start().await;
    let zones: String = (1..=200).map(|z| format!("/BA{z:03}")).collect();
    let long = plain(Token::SiaDcs, 50, "1234", &format!("#1234|Nri1{zones}"), None);
    assert!(long.len() > meldkamer::receiver::READ_RESERVE, "{} bytes", long.len());
    let mut all = long.clone();
    all.extend_from_slice(&plain(Token::SiaDcs, 51, "1234", "#1234|Nri1/BR001", None));
    let mut s = TcpStream::connect(d.tcp()).await.expect("connect");
    s.write_all(&all).await.expect("write");
    for seq in [50, 51] {
        let r = read_frame(&mut s, Duration::from_secs(2)).await.expect("response");
        let f = decode_frame(&r, &Default::default()).expect("decodes");
        assert_eq!((f.token, f.seq), (Token::Ack, seq));
    }
    drop(s);
    d.stop().await;
    assert_eq!(d.query_i64("SELECT count(*) FROM events WHERE seq = 50"), 200);
    assert_eq!(d.query_i64("SELECT count(*) FROM events WHERE seq = 51"), 1);
}

#[tokio::test]
async fn frame_split_over_many_writes() {
    let mut d = TestDaemon::start().await;
    let a = plain(Token::AdmCid, 77, "1234", "#1234|1130 01 003", None);
    let mut s = TcpStream::connect(d.tcp()).await.expect("connect");
    for b in &a {
        s.write_all(&[*b]).await.expect("write");
        s.flush().await.expect("flush");
    }
    let r = read_frame(&mut s, Duration::from_secs(2)).await.expect("response");
    assert_eq!(token_of(&r), "ACK");
    d.stop().await;
}

#[tokio::test]
async fn idle_timeout_closes_the_connection() {
    let mut d = TestDaemon::start_with(ACCOUNTS, |c| c.receiver.idle_timeout_secs = 1).await;
    let mut s = TcpStream::connect(d.tcp()).await.expect("connect");
    let started = std::time::Instant::now();
    let r = read_frame(&mut s, Duration::from_secs(5)).await;
    assert_eq!(r, None, "closed without a response");
    assert!(started.elapsed() < Duration::from_secs(4), "closed by the idle timeout");
    d.stop().await;
}

/// Traffic keeps a connection open past the idle timeout counted from its start (the timer
/// fires at the first deadline and finds a later one), and silence then closes it.
#[tokio::test]
async fn traffic_moves_the_idle_timeout() {
    let mut d = TestDaemon::start_with(ACCOUNTS, |c| c.receiver.idle_timeout_secs = 2).await;
    let mut s = TcpStream::connect(d.tcp()).await.expect("connect");
    for seq in 0..3u16 {
        s.write_all(&plain(Token::SiaDcs, 60 + seq, "1234", "#1234|Nri1/BA01", None))
            .await
            .expect("write");
        let r = read_frame(&mut s, Duration::from_secs(2)).await;
        assert_eq!(r.as_deref().map(token_of).as_deref(), Some("ACK"), "frame {seq}");
        tokio::time::sleep(Duration::from_millis(1_200)).await;
    }
    // 3.6 s after the connection opened, 1.2 s after its last frame: still open.
    s.write_all(&plain(Token::Null, 63, "1234", "", None))
        .await
        .expect("write");
    let r = read_frame(&mut s, Duration::from_secs(2)).await;
    assert_eq!(r.as_deref().map(token_of).as_deref(), Some("ACK"), "link test");
    let quiet = std::time::Instant::now();
    assert_eq!(read_frame(&mut s, Duration::from_secs(6)).await, None, "closed");
    assert!(quiet.elapsed() < Duration::from_secs(5), "closed by the idle timeout");
    d.stop().await;
}

#[tokio::test]
async fn slow_frame_is_cut_off() {
    let mut d = TestDaemon::start_with(ACCOUNTS, |c| {
        c.receiver.frame_timeout_secs = 1;
        c.receiver.idle_timeout_secs = 30;
    })
    .await;
    let mut s = TcpStream::connect(d.tcp()).await.expect("connect");
    let a = plain(Token::SiaDcs, 1, "1234", "#1234|Nri1/BA01", None);
    let started = std::time::Instant::now();
    // Trickle the first half of a frame, one byte every 300 ms: never completes.
    let mut closed = false;
    for b in &a[..a.len() / 2] {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let r = read_frame(&mut s, Duration::from_secs(3)).await;
    assert!(closed || r.is_none());
    assert!(started.elapsed() < Duration::from_secs(8));
    d.stop().await;
    assert_eq!(
        d.query_i64("SELECT count(*) FROM frames WHERE reason = 'frame_timeout'"),
        1
    );
}

#[tokio::test]
async fn connection_caps() {
    let mut d = TestDaemon::start_with(ACCOUNTS, |c| c.receiver.max_connections_per_ip = 2).await;
    let _a = TcpStream::connect(d.tcp()).await.expect("1");
    let _b = TcpStream::connect(d.tcp()).await.expect("2");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = TcpStream::connect(d.tcp()).await.expect("3 connects, then is closed");
    let _ = c
        .write_all(&plain(Token::SiaDcs, 1, "1234", "#1234|Nri1/BA01", None))
        .await;
    assert_eq!(
        read_frame(&mut c, Duration::from_secs(2)).await,
        None,
        "third connection refused"
    );
    drop(_a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = tcp_exchange(d.tcp(), &plain(Token::SiaDcs, 2, "1234", "#1234|Nri1/BA01", None)).await;
    assert_eq!(r.as_deref().map(token_of).as_deref(), Some("ACK"), "a slot freed up");
    let shared = d.running.as_ref().expect("running").shared.clone();
    assert!(shared.metrics.connections_refused.get("dc09", "per_peer") >= 1);
    d.stop().await;

    let mut d = TestDaemon::start_with(ACCOUNTS, |c| c.receiver.max_connections = 1).await;
    let _a = TcpStream::connect(d.tcp()).await.expect("1");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = tcp_exchange(d.tcp(), &plain(Token::SiaDcs, 3, "1234", "#1234|Nri1/BA01", None)).await;
    assert_eq!(r, None, "total cap");
    d.stop().await;
}

#[tokio::test]
async fn retransmission_is_acked_again_but_stored_once_also_after_restart() {
    let mut d = TestDaemon::start().await;
    let key = key_5678();
    let f = plain(Token::SiaDcs, 100, "1234", "#1234|Nri1/BA05", None);
    // An encrypted resend carries a fresh timestamp and pad: still the same event.
    let e1 = encrypted(Token::SiaDcs, 101, "5678", "#5678|Nri1/BA06", &key, T0, 1);
    for _ in 0..2 {
        assert_eq!(
            tcp_exchange(d.tcp(), &f).await.as_deref().map(token_of).as_deref(),
            Some("ACK")
        );
    }
    assert_eq!(
        tcp_exchange(d.tcp(), &e1).await.as_deref().map(token_of).as_deref(),
        Some("*ACK")
    );
    d.clock.advance(time::Duration::seconds(5));
    let e2 = encrypted(
        Token::SiaDcs,
        101,
        "5678",
        "#5678|Nri1/BA06",
        &key,
        T0 + time::Duration::seconds(5),
        2,
    );
    assert_ne!(e1, e2);
    assert_eq!(
        tcp_exchange(d.tcp(), &e2).await.as_deref().map(token_of).as_deref(),
        Some("*ACK")
    );
    d.restart().await;
    d.clock.advance(time::Duration::seconds(60));
    assert_eq!(
        tcp_exchange(d.tcp(), &f).await.as_deref().map(token_of).as_deref(),
        Some("ACK")
    );
    assert_eq!(
        udp_exchange(d.udp(), &f).await.as_deref().map(token_of).as_deref(),
        Some("ACK")
    );
    // A different payload under the same sequence number is a new event.
    let g = plain(Token::SiaDcs, 100, "1234", "#1234|Nri1/BR05", None);
    assert_eq!(
        tcp_exchange(d.tcp(), &g).await.as_deref().map(token_of).as_deref(),
        Some("ACK")
    );
    // After the window the same frame counts as new.
    d.clock.advance(time::Duration::seconds(601));
    assert_eq!(
        tcp_exchange(d.tcp(), &f).await.as_deref().map(token_of).as_deref(),
        Some("ACK")
    );
    d.stop().await;
    assert_eq!(
        d.query_i64("SELECT count(*) FROM events WHERE zone = '05' AND code = 'BA'"),
        2
    );
    assert_eq!(d.query_i64("SELECT count(*) FROM events WHERE zone = '06'"), 1);
    assert_eq!(
        d.query_i64("SELECT count(*) FROM frames WHERE outcome = 'retransmission'"),
        4
    );
}

#[tokio::test]
async fn graceful_shutdown_answers_committed_and_stops_listening() {
    let mut d = TestDaemon::start().await;
    let addr = d.tcp();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&plain(Token::SiaDcs, 1, "1234", "#1234|Nri1/BA01", None))
        .await
        .expect("write");
    let r = read_frame(&mut s, Duration::from_secs(2))
        .await
        .expect("ACK before shutdown");
    assert_eq!(token_of(&r), "ACK");
    let running = d.running.take().expect("running");
    running.shutdown();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("shutdown finishes");
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    assert_eq!(
        read_frame(&mut s, Duration::from_millis(500)).await,
        None,
        "open connection closed"
    );
    assert_eq!(d.query_i64("SELECT count(*) FROM events"), 1);
}

#[tokio::test]
async fn binary_crc_needs_the_account_quirk() {
    let mut d = TestDaemon::start().await;
    let mk = |account: &str| {
        let mut f = meldkamer::protocol::frame::decode_frame(
            &plain(Token::SiaDcs, 5, account, &format!("#{account}|Nri1/BA01"), None),
            &Default::default(),
        )
        .expect("frame");
        f.framing.crc = meldkamer::protocol::frame::CrcFormat::Binary;
        f.encode()
    };
    let r = tcp_exchange(d.tcp(), &mk("4321"))
        .await
        .expect("quirky account gets an ACK");
    assert_eq!(&r[3..7], b"0014", "ACK echoes the binary CRC format");
    assert_eq!(
        tcp_exchange(d.tcp(), &mk("1234")).await,
        None,
        "without the quirk: no response"
    );
    d.stop().await;
    assert_eq!(
        d.query_i64("SELECT count(*) FROM frames WHERE reason = 'quirk_not_enabled'"),
        1
    );
}

#[tokio::test]
async fn metrics_endpoint_serves_prometheus_text() {
    let mut d = TestDaemon::start_with(ACCOUNTS, |c| c.metrics.listen = "127.0.0.1:0".into()).await;
    tcp_exchange(d.tcp(), &plain(Token::SiaDcs, 1, "1234", "#1234|Nri1/BA01", None)).await;
    let addr = d.running.as_ref().and_then(|r| r.metrics_addr).expect("metrics");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.expect("write");
    let mut body = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut body)
        .await
        .expect("read");
    assert!(body.starts_with("HTTP/1.0 200 OK"));
    assert!(body.contains("meldkamer_frames_total{token=\"SIA-DCS\"} 1"), "{body}");
    assert!(body.contains("meldkamer_responses_total{kind=\"ACK\"} 1"), "{body}");
    assert!(body.contains("meldkamer_commit_seconds_count"), "{body}");
    d.stop().await;
}

/// Correlation keeps an account's site and customer and the priority rules in memory; an
/// import while the daemon runs (a new site link, a new rule) must take effect for the next
/// frame, without a restart.
#[tokio::test]
async fn an_import_while_running_changes_correlation_for_the_next_frame() {
    let d = TestDaemon::start().await;
    let alarm = |seq: u16, zone: &str| plain(Token::SiaDcs, seq, "1234", &format!("#1234|Nri1/BA{zone}"), ts(T0));
    let r = tcp_exchange(d.tcp(), &alarm(1, "01")).await.expect("response");
    assert_eq!(token_of(&r), "ACK");
    let queue_of = |zone: &str| {
        let conn = rusqlite::Connection::open(d.db_path()).expect("db");
        conn.query_row(
            "SELECT queue, ifnull(site_id, 0), priority FROM alarms WHERE zone = ?1",
            [zone],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
        )
        .expect("an alarm for the zone")
    };
    let (queue, site, _) = queue_of("1");
    assert_eq!((queue.as_str(), site), ("supervisor", 0), "no customer record yet");

    import(
        &d.cfg,
        r#"
[[customer]]
ref = "C-TEST"
name = "Test customer (synthetic)"

[[site]]
ref = "S-TEST"
customer = "C-TEST"
name = "Test site"
address = "Teststraat 1"

[[account]]
account = "1234"
site = "S-TEST"

[[priority_rule]]
customer = "C-TEST"
category = "burglary"
priority = 7
"#,
    );
    let r = tcp_exchange(d.tcp(), &alarm(2, "02")).await.expect("response");
    assert_eq!(token_of(&r), "ACK");
    let (queue, site, priority) = queue_of("2");
    assert_eq!(queue, "operator", "the new site link is used");
    assert_ne!(site, 0);
    assert_eq!(priority, 7, "the customer's new priority rule is used");
}

/// A frame with a `K` field offers a new key over the air (protocols/dc09.md §15.4): its events
/// are stored and ACKed, the key is neither stored (not in the frame row, not in the events)
/// nor used (the next frame under the old key is accepted, one under the offered key is not),
/// and the supervisor gets one item per account.
#[tokio::test]
async fn a_key_offered_over_the_air_is_neither_stored_nor_used() {
    use meldkamer::protocol::crypto::{SeededPad, encrypt_body};
    use meldkamer::protocol::frame::{AccountField, Frame, Framing, Plain, XData};
    let mut d = TestDaemon::start().await;
    const OFFERED: &str = "00112233445566778899AABBCCDDEEFF";
    let with_k = |account: &str, seq: u16, key: Option<&meldkamer::protocol::crypto::Key>| {
        let plain = Plain {
            data: format!("#{account}|Nri1/RP"),
            xdata: vec![XData {
                id: 'K',
                value: OFFERED.into(),
            }],
            timestamp: ts(T0),
        };
        Frame {
            framing: Framing::default(),
            token: Token::SiaDcs,
            encrypted: key.is_some(),
            seq,
            receiver: Some("1".into()),
            line: "1".into(),
            account: AccountField::Number(account.into()),
            body: match key {
                Some(k) => Body::Encrypted(encrypt_body(k, &plain, false, &mut SeededPad::new(7))),
                None => Body::Plain(plain),
            },
        }
        .encode()
    };
    let resp = tcp_exchange(d.tcp(), &with_k("1234", 70, None)).await;
    assert_eq!(resp.as_deref().map(token_of).as_deref(), Some("ACK"));
    let resp = tcp_exchange(d.tcp(), &with_k("5678", 71, Some(&key_5678()))).await;
    assert_eq!(resp.as_deref().map(token_of).as_deref(), Some("*ACK"));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let conn = rusqlite::Connection::open(d.db_path()).expect("db");
    let stored: Vec<Vec<u8>> = conn
        .prepare("SELECT raw FROM frames WHERE seq IN (70, 71)")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("raw");
    assert_eq!(stored.len(), 2);
    let plain_row = stored
        .iter()
        .find(|r| r.windows(5).any(|w| w == b"[K***"))
        .expect("redacted K");
    assert!(
        decode_frame(plain_row, &Default::default()).is_ok(),
        "the stored frame still decodes"
    );
    for raw in &stored {
        assert!(
            !raw.windows(OFFERED.len()).any(|w| w == OFFERED.as_bytes()),
            "key in a frame row"
        );
    }
    let in_events: i64 = conn
        .query_row(
            "SELECT count(*) FROM events WHERE xdata LIKE ?1",
            [format!("%{OFFERED}%")],
            |r| r.get(0),
        )
        .expect("events");
    assert_eq!(in_events, 0, "key in an event row");
    assert_eq!(
        d.query_i64("SELECT count(*) FROM events WHERE seq IN (70, 71)"),
        2,
        "the events are kept"
    );
    assert_eq!(
        d.query_i64("SELECT count(*) FROM alarms WHERE queue = 'supervisor' AND join_key LIKE '%/key-change'"),
        2
    );

    // The old key still decides.
    let offered = meldkamer::protocol::crypto::Key::from_hex(OFFERED).expect("key");
    let old = encrypted(Token::SiaDcs, 72, "5678", "#5678|Nri1/BA01", &key_5678(), T0, 8);
    assert_eq!(
        tcp_exchange(d.tcp(), &old).await.as_deref().map(token_of).as_deref(),
        Some("*ACK")
    );
    let new = encrypted(Token::SiaDcs, 73, "5678", "#5678|Nri1/BA01", &offered, T0, 9);
    assert_eq!(
        tcp_exchange(d.tcp(), &new).await.as_deref().map(token_of).as_deref(),
        Some("NAK")
    );
    d.stop().await;
}

/// A frame whose CRC and length are right but whose account is not hex (FOCUS FC-7688,
/// pysiaalarm #36) gets a DUH echoing its header, over TCP and UDP, and the supervisor one item
/// for the source that points at the stored frame; the connection goes on.
#[tokio::test]
async fn an_unreadable_header_is_answered_duh_and_shown_to_the_supervisor() {
    use meldkamer::protocol::frame::{Framing, wrap};
    let mut d = TestDaemon::start().await;
    let focus = wrap(b"\"ADM-CID\"6616R0L0#foc7688[#foc7688|1351 01 000]", Framing::default());
    let duh = wrap(b"\"DUH\"6616R0L0#foc7688[]", Framing::default());
    let mut s = TcpStream::connect(d.tcp()).await.expect("connect");
    s.write_all(&focus).await.expect("write");
    assert_eq!(
        read_frame(&mut s, Duration::from_secs(2)).await.as_deref(),
        Some(&duh[..])
    );
    s.write_all(&plain(Token::SiaDcs, 74, "1234", "#1234|Nri1/BA01", None))
        .await
        .expect("write");
    let next = read_frame(&mut s, Duration::from_secs(2)).await;
    assert_eq!(
        next.as_deref().map(token_of).as_deref(),
        Some("ACK"),
        "the connection goes on"
    );
    assert_eq!(udp_exchange(d.udp(), &focus).await.as_deref(), Some(&duh[..]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        d.query_i64("SELECT count(*) FROM frames WHERE outcome = 'refused' AND reason = 'unreadable'"),
        2
    );
    assert_eq!(
        d.query_i64(
            "SELECT count(*) FROM alarms a JOIN frames f ON f.id = a.source_frame_id
             WHERE a.queue = 'supervisor' AND a.join_key = 'source:127.0.0.1/unreadable' AND f.reason = 'unreadable'"
        ),
        1,
        "one item for the source, with its frame"
    );
    assert_eq!(
        d.query_i64(
            "SELECT count(*) FROM alarm_log l JOIN alarms a ON a.id = l.alarm_id
             WHERE a.join_key = 'source:127.0.0.1/unreadable' AND l.action = 'repeated'"
        ),
        0,
        "the second frame within 10 minutes adds nothing (rate-limited per source)"
    );
    d.stop().await;
}
