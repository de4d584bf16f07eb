//! Every stream listener accepts through one path with connection caps (`src/admission/`,
//! invariant 3).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use meldkamer::config::{AutomationMode, EventStreamMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::common::*;

/// A self-signed certificate and key for the operator API over TLS, written into `dir`.
fn tls_files(dir: &Path) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let (cert, key) = (dir.join("api.crt"), dir.join("api.key"));
    std::fs::write(&cert, ck.cert.pem()).expect("cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("key");
    (cert.display().to_string(), key.display().to_string())
}

/// True if the peer closed `s` (end of stream or reset) within `wait`.
async fn closed<S: AsyncRead + Unpin>(s: &mut S, wait: Duration) -> bool {
    let mut b = [0u8; 256];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A listener may greet first (the event stream's hello, a Sur-Gard heartbeat).
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Every stream listener with caps of one connection: a second connection is closed at once
/// and counted under its listener, while the first is held. (DC-09 and Contact ID: the
/// `connection_caps` and `limits_hold` tests.)
#[tokio::test]
async fn every_listener_closes_and_counts_a_connection_over_its_cap() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = tls_files(dir.path());
    let sock = dir.path().join("api.sock");
    let s = sock.display().to_string();
    let mut d = TestDaemon::start_with(ACCOUNTS, move |c| {
        c.metrics.listen = "127.0.0.1:0".into();
        c.metrics.max_connections = 1;
        c.operator.socket = s;
        c.operator.tcp_listen = "127.0.0.1:0".into();
        c.operator.tls_cert = cert;
        c.operator.tls_key = key;
        c.operator.max_connections = 1;
        c.event_stream.mode = EventStreamMode::Tcp;
        c.event_stream.listen = "127.0.0.1:0".into();
        c.event_stream.max_connections = 1;
        c.automation.mode = AutomationMode::Server;
        c.automation.listen = "127.0.0.1:0".into();
        c.automation.max_connections = 1;
    })
    .await;
    let r = d.running.as_ref().expect("running");
    let metrics = r.shared.metrics.clone();
    let tcp = [
        ("metrics", r.metrics_addr),
        ("operator_tls", r.api_tls_addr),
        ("event_stream", r.event_stream_addr),
        ("automation", r.automation_addr),
    ];
    let mut held = Vec::new();
    for (listener, addr) in tcp {
        let addr = addr.unwrap_or_else(|| panic!("{listener} listens"));
        held.push(TcpStream::connect(addr).await.expect("first"));
        let mut second = TcpStream::connect(addr).await.expect("second connects, then is closed");
        assert!(closed(&mut second, Duration::from_secs(4)).await, "{listener}: closed");
        assert_eq!(metrics.connections_refused.get(listener, "total"), 1, "{listener}");
    }
    let _first = UnixStream::connect(&sock).await.expect("first");
    let mut second = UnixStream::connect(&sock).await.expect("second");
    assert!(
        closed(&mut second, Duration::from_secs(4)).await,
        "operator_unix: closed"
    );
    assert_eq!(metrics.connections_refused.get("operator_unix", "total"), 1);
    for l in ["dc09", "contact_id"] {
        assert_eq!(metrics.connections_refused.get(l, "total"), 0, "{l}");
    }
    drop(held);
    d.stop().await;
}

/// The metrics endpoint accepts through the shared path: over its cap a scrape is closed at
/// once (a connection that never sends its request no longer holds it for 5 s plus), and when
/// the slot is free again a scrape shows the refusal.
#[tokio::test]
async fn the_metrics_listener_is_capped_and_counts_its_refusals() {
    let mut d = TestDaemon::start_with(ACCOUNTS, |c| {
        c.metrics.listen = "127.0.0.1:0".into();
        c.metrics.max_connections = 1;
    })
    .await;
    let addr = d.running.as_ref().and_then(|r| r.metrics_addr).expect("metrics");
    let silent = TcpStream::connect(addr).await.expect("first");
    let mut second = TcpStream::connect(addr).await.expect("second");
    assert!(closed(&mut second, Duration::from_secs(4)).await, "refused at once");
    drop(silent);
    let text = scrape(addr).await;
    assert!(
        text.contains("meldkamer_connections_refused_total{listener=\"metrics\",cap=\"total\"} 1"),
        "{text}"
    );
    d.stop().await;
}

/// `GET /metrics`, retried while the slot of a just-closed connection is given back.
async fn scrape(addr: SocketAddr) -> String {
    for _ in 0..50 {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        if text.starts_with("HTTP/1.0 200") {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no answer from the metrics endpoint at {addr}");
}
