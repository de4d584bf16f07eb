//! `meldkamer bench` against a daemon: the load generator is the measuring instrument of
//! BENCHMARKS.md, so its counts must match what the daemon stored, on one thread or several,
//! over TCP and UDP.

use std::process::{Command, Output};

use crate::common::TestDaemon;

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
