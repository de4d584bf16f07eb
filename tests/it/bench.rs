//! `meldkamer bench` against a daemon: the load generator is the measuring instrument of
//! BENCHMARKS.md, so its counts must match what the daemon stored, on one thread or several,
//! over TCP and UDP. The no-op receiver (`--noop-receiver`) must answer as the daemon does, and
//! the interleaved rounds (`--baseline`, `--compare`) must load each receiver with the same load
//! and report the ratios.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use meldkamer::loadgen::{Panel, accounts_toml, bench_key};
use meldkamer::protocol::crypto::{Key, decrypt_body};
use meldkamer::protocol::frame::{Body, DecodeOptions, Frame, decode_frame};
use time::OffsetDateTime;

use crate::common::{TestDaemon, tcp_exchange, token_of, udp_exchange};

const BIN: &str = env!("CARGO_BIN_EXE_meldkamer");

/// Run `meldkamer bench ARGS` to its end.
async fn run_bench<I: IntoIterator<Item = S> + Send + 'static, S: AsRef<std::ffi::OsStr>>(args: I) -> Output {
    tokio::task::spawn_blocking(move || Command::new(BIN).arg("bench").args(args).output())
        .await
        .expect("join")
        .expect("bench runs")
}

/// Run `meldkamer bench ARGS --json` and return its report.
async fn bench(mut args: Vec<String>) -> serde_json::Value {
    args.push("--json".into());
    let out = run_bench(args).await;
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON report")
}

fn args(target: std::net::SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "--target".to_string(),
        target.to_string(),
        "--connections".into(),
        "3".into(),
        "--accounts-per-connection".into(),
        "4".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_counts_what_the_daemon_stored_on_one_thread_or_several() {
    let accounts = meldkamer::loadgen::accounts_toml(3, 4, false);
    let mut d = TestDaemon::start_with(&accounts, |_| {}).await;

    // Default: one generator thread, TCP, closed loop. The daemon runs in this process.
    let pid = std::process::id().to_string();
    let r = bench(args(d.tcp(), &["--events", "120", "--daemon-pid", &pid])).await;
    assert_eq!(r["threads"], 1);
    // CPU time per event, the daemon's and the generator's own (both ran for these events).
    let cpu = &r["cpu_per_event"];
    for who in ["daemon_us", "generator_us"] {
        assert!(cpu[who].as_f64().is_some_and(|us| us > 0.0), "{who}: {r}");
    }
    assert!(r["daemon_rss_kib"].as_u64().is_some_and(|k| k > 0), "{r}");
    assert_eq!(r["transport"], "tcp");
    assert_eq!((r["sent"].as_u64(), r["acked"].as_u64()), (Some(120), Some(120)), "{r}");
    assert_eq!(
        (r["errors"].as_u64(), r["duh"].as_u64(), r["nak"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(r["retries"].as_u64(), Some(0), "nothing resent on loopback: {r}");
    assert_eq!(d.query_i64("SELECT count(*) FROM events"), 120);

    // Three threads (more than this machine may have cores), UDP, paced.
    let r = bench(args(
        d.udp(),
        &[
            "--events",
            "60",
            "--threads",
            "3",
            "--udp",
            "--rate",
            "600",
            "--rss-pid",
            &pid,
        ],
    ))
    .await;
    assert_eq!(r["threads"], 3);
    // The older name of --daemon-pid still works.
    assert!(r["cpu_per_event"]["daemon_us"].as_f64().is_some(), "{r}");
    assert_eq!(r["transport"], "udp");
    assert_eq!((r["sent"].as_u64(), r["acked"].as_u64()), (Some(60), Some(60)), "{r}");
    assert_eq!(r["retries"].as_u64(), Some(0), "nothing resent on loopback: {r}");
    assert_eq!(d.query_i64("SELECT count(*) FROM events"), 180);
    // Every event came from a generated account, one frame each.
    assert_eq!(d.query_i64("SELECT count(DISTINCT frame_id) FROM events"), 180);
    assert_eq!(
        d.query_i64("SELECT count(*) FROM events WHERE account NOT LIKE 'F%'"),
        0
    );

    // A thread count outside 1…64, or one for the ARC modes, is a clear error, not a run.
    for (extra, error) in [
        (["--events", "1", "--threads", "0"], "--threads must be 1…64"),
        (
            ["--poll-accounts", "1", "--threads", "2"],
            "--threads is for the event loads and --idle",
        ),
    ] {
        let out = run_bench(["--target", "127.0.0.1:9"].into_iter().chain(extra)).await;
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(error), "{out:?}");
    }
    d.stop().await;
}

/// `meldkamer bench --noop-receiver 127.0.0.1:0 --noop-accounts FILE` in a process of its own,
/// stopped by its PID.
struct Noop {
    child: Child,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl Noop {
    fn start(accounts: &std::path::Path) -> Noop {
        tokio::task::block_in_place(|| {
            let mut child = Command::new(BIN)
                .args([
                    "bench",
                    "--noop-receiver",
                    "127.0.0.1:0",
                    "--threads",
                    "1",
                    "--noop-accounts",
                ])
                .arg(accounts)
                .stdout(Stdio::piped())
                .spawn()
                .expect("the no-op receiver starts");
            let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
            let mut ready = String::new();
            stdout.read_line(&mut ready).expect("ready line");
            let addr = ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix("tcp="))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address in {ready:?}"));
            assert!(ready.starts_with("meldkamer noop-receiver ready"), "{ready}");
            assert!(
                ready.contains(&format!("udp={addr}")),
                "one port for TCP and UDP: {ready}"
            );
            Noop { child, stdout, addr }
        })
    }

    /// SIGTERM to its PID; what it said when it stopped.
    fn stop(&mut self) -> String {
        tokio::task::block_in_place(|| {
            let pid = self.child.id().to_string();
            let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
            assert!(killed.success());
            let mut rest = String::new();
            self.stdout.read_to_string(&mut rest).expect("stdout");
            assert!(self.child.wait().expect("wait").success(), "{rest}");
            rest
        })
    }
}

impl Drop for Noop {
    fn drop(&mut self) {
        // Only if a test failed before `stop` (a child already waited for is not signalled).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_accounts(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("accounts.toml");
    std::fs::write(&path, text).expect("accounts file");
    path
}

fn decode(raw: &[u8]) -> Frame {
    decode_frame(raw, &DecodeOptions::default()).expect("a response frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_noop_receiver_answers_every_frame_as_the_daemon_does() {
    let accounts = accounts_toml(1, 2, true);
    let mut d = TestDaemon::start_with(&accounts, |_| {}).await;
    // The frames carry the real time, which the daemon checks against its own clock.
    d.clock.set(OffsetDateTime::now_utc());
    let dir = tempfile::tempdir().expect("dir");
    let mut noop = Noop::start(&write_accounts(&dir, &accounts));

    let key = bench_key();
    let other = Key::from_hex("000102030405060708090A0B0C0D0E0F").expect("key");
    let ev = Panel::new(0, 2, false, 0).next_event();
    let stranger = Panel::new(1, 1, false, 0).next_event();
    let now = OffsetDateTime::now_utc();
    for (frame, want) in [
        (ev.encode(Some(&key), now, 1), "*ACK"),
        // Plain to an account that requires encryption; an account not in the file.
        (ev.encode(None, now, 2), "DUH"),
        (stranger.encode(Some(&key), now, 3), "DUH"),
        // Another key.
        (ev.encode(Some(&other), now, 4), "NAK"),
    ] {
        let daemon = tcp_exchange(d.tcp(), &frame).await.expect("the daemon answers");
        let ours = tcp_exchange(noop.addr, &frame)
            .await
            .expect("the no-op receiver answers");
        assert_eq!(token_of(&daemon), want);
        assert_eq!(token_of(&ours), want);
        assert_eq!(ours.len(), daemon.len(), "{want}");
        let (a, b) = (decode(&daemon), decode(&ours));
        assert_eq!(
            (a.seq, &a.receiver, &a.line, &a.account),
            (b.seq, &b.receiver, &b.line, &b.account)
        );
        match (&a.body, &b.body) {
            (Body::Encrypted(x), Body::Encrypted(y)) => {
                // Both encrypted with the account key, each with its own pad and the time.
                let x = decrypt_body(&key, x).expect("the daemon's *ACK decrypts").plain;
                let y = decrypt_body(&key, y).expect("the no-op *ACK decrypts").plain;
                assert_eq!(x.data, y.data);
                assert!(x.timestamp.is_some() && y.timestamp.is_some());
            }
            (Body::Plain(x), Body::Plain(y)) => assert_eq!(x.data, y.data),
            _ => panic!("{want}: one encrypted, one not"),
        }
        if want == "DUH" {
            assert_eq!(ours, daemon, "byte for byte");
        }
    }
    // UDP on the same port.
    let fresh = Panel::new(0, 2, false, 50).next_event();
    let ours = udp_exchange(noop.addr, &fresh.encode(Some(&key), now, 5))
        .await
        .expect("answer");
    assert_eq!(token_of(&ours), "*ACK");

    let said = noop.stop();
    assert!(
        said.contains("stopped after answering 5 frame(s): ACK 2, NAK 1, DUH 2, no answer 0; 2 event(s) in them"),
        "{said}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_rounds_load_each_receiver_alike_and_report_the_ratios() {
    let accounts = accounts_toml(3, 4, false);
    let mut new = TestDaemon::start_with(&accounts, |_| {}).await;
    let mut old = TestDaemon::start_with(&accounts, |_| {}).await;
    let dir = tempfile::tempdir().expect("dir");
    let mut noop = Noop::start(&write_accounts(&dir, &accounts));
    let (compare, baseline) = (old.tcp().to_string(), noop.addr.to_string());

    let r = bench(args(
        new.tcp(),
        &[
            "--compare",
            &compare,
            "--baseline",
            &baseline,
            "--rounds",
            "2",
            "--events",
            "30",
            "--pause",
            "0",
            "--seed",
            "7",
        ],
    ))
    .await;
    assert_eq!(r["rounds"], 2);
    let runs = r["runs"].as_array().expect("runs");
    let order: Vec<(u64, &str)> = runs
        .iter()
        .map(|x| (x["round"].as_u64().expect("round"), x["role"].as_str().expect("role")))
        .collect();
    // The order rotates: no receiver always first.
    assert_eq!(
        order,
        [
            (1, "target"),
            (1, "compare"),
            (1, "baseline"),
            (2, "compare"),
            (2, "baseline"),
            (2, "target")
        ]
    );
    for x in runs {
        let (role, l) = (x["role"].as_str(), &x["report"]);
        let want = match role {
            Some("target") => new.tcp(),
            Some("compare") => old.tcp(),
            _ => noop.addr,
        };
        assert_eq!(l["target"], want.to_string());
        assert_eq!((l["sent"].as_u64(), l["acked"].as_u64()), (Some(30), Some(30)), "{x}");
        assert_eq!(l["connections"], 3);
    }
    assert_eq!(r["unclean_runs"], 0);
    assert_eq!(r["per_round"].as_array().map(Vec::len), Some(2));
    for k in ["target_to_baseline", "compare_to_baseline", "target_to_compare"] {
        let v = r["median"][k].as_f64();
        assert!(v.is_some_and(|v| v.is_finite() && v > 0.0), "{k}: {r}");
    }
    // Each daemon stored its own rounds' events, each run new events (no retransmissions).
    assert_eq!(new.query_i64("SELECT count(*) FROM events"), 60);
    assert_eq!(old.query_i64("SELECT count(*) FROM events"), 60);

    // The text report, without --compare.
    let out = run_bench(args(
        new.tcp(),
        &[
            "--baseline",
            &baseline,
            "--rounds",
            "1",
            "--events",
            "12",
            "--pause",
            "0",
        ],
    ))
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("target/baseline") && !text.contains("target/compare"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("median")), "{text}");
    assert!(text.contains("clean       every run"), "{text}");
    assert_eq!(new.query_i64("SELECT count(*) FROM events"), 72);

    let said = noop.stop();
    assert!(
        said.contains("ACK 72, NAK 0, DUH 0"),
        "the no-op receiver stores nothing but answered: {said}"
    );
    new.stop().await;
    old.stop().await;
}

/// A daemon with `n` record accounts (`bench --write-records`), an operator API and the
/// supervisor "sam".
async fn record_daemon(n: u32) -> TestDaemon {
    let records = meldkamer::loadgen::arc::records_toml(0, n, 90, false);
    let d = TestDaemon::start_with(&records, |c| c.operator.socket = "api.sock".into()).await;
    let conn = rusqlite::Connection::open(d.db_path()).expect("db");
    meldkamer::operator::accounts::add(
        &conn,
        &crate::operator::hasher(&d),
        "sam",
        meldkamer::operator::Role::Supervisor,
        crate::operator::PASSWORD,
        0,
    )
    .expect("add operator");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_load_polls_every_account_over_udp_or_over_kept_tcp_connections() {
    let mut d = record_daemon(40).await;
    for (transport, extra) in [("udp", None), ("tcp", Some("--poll-tcp"))] {
        let target = if extra.is_some() { d.tcp() } else { d.udp() };
        let mut a = vec![
            "--target".to_string(),
            target.to_string(),
            "--poll-accounts".into(),
            "40".into(),
            "--poll-interval".into(),
            "1".into(),
            "--connections".into(),
            "4".into(),
            "--duration".into(),
            "3".into(),
        ];
        a.extend(extra.map(str::to_string));
        let r = bench(a).await;
        assert_eq!(r["transport"], transport);
        // Three rounds of 40 accounts at t = 0, 1 and 2 s (a round is spread over 1 s).
        assert_eq!(r["sent"], 120, "{transport}: {r}");
        assert_eq!(r["acked"], 120, "{transport}: {r}");
        assert_eq!(r["unanswered"], 0, "{transport}: {r}");
        assert_eq!(r["reconnects"], 0, "{transport}: {r}");
    }
    // The daemon counted them all: 240 polls, 6 from each account.
    d.stop().await;
    assert_eq!(
        d.query_i64("SELECT (SELECT coalesce(sum(polls), 0) FROM account_status) + (SELECT count(*) FROM poll_log)"),
        240
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_load_closes_its_alarms_in_bulk_when_asked() {
    let mut d = record_daemon(30).await;
    let socket = crate::operator::socket(&d);
    let target = d.tcp().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .arg("bench")
            .args(["--target", &target, "--push-latency"])
            .arg(&socket)
            .args([
                "--operator",
                "sam",
                "--password-stdin",
                "--alarms",
                "30",
                "--rate",
                "20",
                "--close-after",
                "0.2",
                "--json",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bench starts");
        use std::io::Write;
        writeln!(child.stdin.take().expect("stdin"), "{}", crate::operator::PASSWORD).expect("password");
        child.wait_with_output().expect("bench runs")
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert_eq!(r["acked"], 30, "{r}");
    assert_eq!(r["pushed"], 30, "{r}");
    assert_eq!(r["close_refused"], 0, "{r}");
    // The run ends once the last push is in (after 1.5 s); closes go once a second, so the
    // last alarms may still be open: the database holds what the report says was closed.
    let closed = r["closed"].as_i64().expect("closed");
    assert!(closed >= 10, "the alarms of the first second are closed: {r}");
    assert_eq!(
        d.query_i64("SELECT count(*) FROM alarms WHERE state = 'closed' AND disposition = 'test'"),
        closed
    );
    d.stop().await;
}

/// A poll that gets no answer in time is sent once more with the same sequence number, as a
/// panel retries; the daemon answers the retransmission. Between the load and the daemon, a
/// relay drops the first copy of every datagram.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_load_sends_an_unanswered_poll_once_more() {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    let mut d = record_daemon(5).await;
    let relay = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("relay"));
    let up = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("up"));
    up.connect(d.udp()).await.expect("connect");
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let forward = {
        let (relay, up, client) = (relay.clone(), up.clone(), client.clone());
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = relay.recv_from(&mut buf).await {
                *client.lock().expect("lock") = Some(from);
                if seen.insert(buf[..n].to_vec()) {
                    continue; // the first copy is lost
                }
                let _ = up.send(&buf[..n]).await;
            }
        })
    };
    let back = {
        let (relay, up, client) = (relay.clone(), up.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = up.recv(&mut buf).await {
                let to = *client.lock().expect("lock");
                if let Some(to) = to {
                    let _ = relay.send_to(&buf[..n], to).await;
                }
            }
        })
    };
    let r = bench(vec![
        "--target".into(),
        relay.local_addr().expect("addr").to_string(),
        "--poll-accounts".into(),
        "5".into(),
        "--poll-interval".into(),
        "30".into(),
        "--poll-warmup".into(),
        "0.5".into(),
        "--connections".into(),
        "1".into(),
        "--duration".into(),
        "1".into(),
    ])
    .await;
    forward.abort();
    back.abort();
    assert!(r["sent"].as_u64().expect("sent") >= 5, "{r}");
    assert_eq!(r["resent"], r["sent"], "every first copy was lost: {r}");
    assert_eq!(r["acked"], r["sent"], "every poll answered the second time: {r}");
    assert_eq!(r["unanswered"], 0, "{r}");
    d.stop().await;
}
