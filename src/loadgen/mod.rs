//! `meldkamer bench`: a load generator that acts as many alarm panels, for measuring a running
//! receiver (throughput, ACK latency, idle connections).
//!
//! Every simulated panel behaves like a real one: it sends one frame, waits for the answer,
//! and only then sends the next. Over TCP each simulated connection is one persistent
//! connection on which several accounts take turns; over UDP it is one socket. A frame that
//! gets no answer within `--timeout-ms` is sent once more with the same sequence number (a
//! retransmission, which the receiver must not store twice); after that the event counts as
//! failed.
//!
//! Accounts are `F{connection:04X}{index:04X}` (9 hex digits): connection `c` uses the
//! accounts `F{c}0000` … `F{c}{K-1}`. Each account counts its own events; the sequence number
//! is `n % 9999 + 1` and the zone/user number `(n / 9999) % 999 + 1`, so the retransmission
//! identity (account, sequence number, payload) of a run repeats only after ~10 million events
//! per account. Runs start at a random `n` (`--seed` fixes it), so that back-to-back runs
//! against the same database are new events rather than retransmissions.
//!
//! Encrypted runs (`--encrypted`) use AES-128 with the synthetic key [`BENCH_KEY_HEX`]
//! (the ASCII text `meldkamer-bench!` as hex). It is public: never give it to a real panel.
//!
//! Before a run, import the accounts it uses:
//!
//! ```text
//! meldkamer bench --connections 64 --write-accounts bench-accounts.toml
//! meldkamer import bench-accounts.toml --config config/bench.toml
//! ```

pub mod arc;
pub mod cid;
pub mod noop;
pub mod rounds;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::protocol::crypto::{Key, SeededPad, encrypt_body};
use crate::protocol::frame::{AccountField, Body, DecodeOptions, Frame, Framing, Plain, Token, decode_frame};
use crate::protocol::timestamp::Timestamp;

/// The synthetic AES-128 key of `--encrypted` runs: `meldkamer-bench!` in hex. Public; for
/// load tests only.
pub const BENCH_KEY_HEX: &str = "6D656C646B616D65722D62656E636821";

/// Most simulated connections (the account number has four hex digits for it).
pub const MAX_CONNECTIONS: u32 = 0x1_0000;

/// Sequence numbers run 1…9999.
const SEQ_CYCLE: u64 = 9999;
/// Zone/user numbers run 1…999.
const ZONE_CYCLE: u64 = 999;

/// `meldkamer bench` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The receiver to load (TCP, or UDP with --udp).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub target: SocketAddr,
    /// Simulated panel connections (TCP connections or UDP sockets), 1…65536.
    #[arg(long, default_value_t = 16)]
    pub connections: u32,
    /// Send this many events in total, then stop (default: run for --duration).
    #[arg(long, conflicts_with = "duration")]
    pub events: Option<u64>,
    /// Run for this many seconds (default 10 when --events is not given).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Send over UDP instead of TCP.
    #[arg(long)]
    pub udp: bool,
    /// Encrypt the frames (AES-128 with the synthetic bench key).
    #[arg(long)]
    pub encrypted: bool,
    /// Mix alarms, restores, openings/closings and NULL link tests (default: alarms only).
    #[arg(long)]
    pub mix: bool,
    /// Total events per second, paced per connection (open loop); default: as fast as the
    /// receiver answers (closed loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Accounts each connection cycles through, 1…65536.
    #[arg(long, default_value_t = 100)]
    pub accounts_per_connection: u32,
    /// Wait this long for an answer before sending the frame again (once).
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Start value of the per-account event counters (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the accounts a run with these flags uses as a records file (for `meldkamer
    /// import`), then exit.
    #[arg(long, value_name = "FILE")]
    pub write_accounts: Option<PathBuf>,
    /// With --write-accounts: the k-th account at site `BS{k}` of --write-records (import
    /// that file first), so that openings and closings (--mix) reach a site and its schedule.
    #[arg(long, requires = "write_accounts", conflicts_with = "cid_ip")]
    pub at_record_sites: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Load generator threads for the event loads and --idle, 1…64 (default 1). One thread
    /// drives all the simulated panels; on the daemon's own machine every further thread
    /// competes with the daemon for the same cores (BENCHMARKS-HISTORY.md, series N). The ARC modes
    /// run a worker per core and refuse this flag. With --noop-receiver: its workers (default:
    /// one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,
    /// Open this many idle TCP connections and hold them (no load) instead of sending events.
    #[arg(long, value_name = "N")]
    pub idle: Option<u32>,
    /// With --idle: hold the connections this many seconds.
    #[arg(long, default_value_t = 10, value_name = "S")]
    pub hold: u64,
    /// The daemon's PID (same machine, Linux): report its resident memory and, for a load,
    /// its CPU time per ACKed event. (`--rss-pid` is the older name.)
    #[arg(long = "daemon-pid", alias = "rss-pid", value_name = "PID")]
    pub daemon_pid: Option<u32>,
    /// The daemon's metrics endpoint: report commit batching and latency during the run.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Load the Contact ID input (`[cid_input]`) instead of DC-09, in this framing: surgard,
    /// lupusec or dc05 (`src/loadgen/cid.rs`). --target is then the Contact ID address.
    #[arg(long, value_name = "FRAMING", value_parser = ["surgard", "lupusec", "dc05"], conflicts_with_all = ["encrypted", "idle"])]
    pub cid_ip: Option<String>,
    /// Serve as a no-op DC-09 receiver on ADDR, TCP and UDP on one port (`src/loadgen/noop.rs`):
    /// answer every frame as the daemon would, store nothing. The ceiling that --baseline
    /// measures against. Prints one line when ready and runs until SIGTERM or SIGINT; --threads
    /// sets its workers (default: one per core, as the daemon).
    #[arg(long, value_name = "ADDR", requires = "noop_accounts",
        conflicts_with_all = ["write_accounts", "idle", "cid_ip", "events", "duration", "json"])]
    pub noop_receiver: Option<SocketAddr>,
    /// With --noop-receiver: the records files the daemon imported (the accounts, their keys
    /// and policies), all of them.
    #[arg(long, value_name = "FILE", num_args = 1.., requires = "noop_receiver")]
    pub noop_accounts: Vec<PathBuf>,
    /// Interleaved rounds against the daemon, an older daemon and the no-op receiver: throughput
    /// as a ratio (`src/loadgen/rounds.rs`).
    #[command(flatten)]
    pub rounds: rounds::RoundsArgs,
    /// ARC-scale scenarios: records files, supervision poll load, queue push latency, deadline
    /// latency (`src/loadgen/arc.rs`).
    #[command(flatten)]
    pub arc: arc::ArcArgs,
}

/// Why a bench run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag value that cannot work.
    #[error("{0}")]
    Args(String),
    /// The tokio runtime could not start.
    #[error("starting the runtime")]
    Runtime(#[source] std::io::Error),
    /// Writing the accounts file or the report failed.
    #[error("writing {what}")]
    Write {
        /// What was written.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The report could not be serialised.
    #[error("serialising the report")]
    Json(#[from] serde_json::Error),
    /// The no-op receiver's records files could not be read.
    #[error(transparent)]
    Records(#[from] crate::records::ImportError),
    /// The no-op receiver's in-memory account table could not be built.
    #[error("building the account table")]
    Store(#[from] crate::store::StoreError),
    /// A listener of the no-op receiver could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Most load generator threads (`--threads`).
pub const MAX_THREADS: u32 = 64;

/// The load generator's runtime: one thread (tokio's current-thread scheduler, every panel task
/// on the calling thread) or `threads` workers.
fn runtime(threads: u32) -> Result<tokio::runtime::Runtime, BenchError> {
    let mut b = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        2..=MAX_THREADS => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(threads as usize);
            b
        }
        _ => return Err(BenchError::Args(format!("--threads must be 1…{MAX_THREADS}"))),
    };
    b.enable_all().thread_name("bench").build().map_err(BenchError::Runtime)
}

/// The threads the load generator runs on (the current runtime's workers; 1 for the
/// current-thread scheduler).
fn generator_threads() -> u32 {
    tokio::runtime::Handle::current().metrics().num_workers() as u32
}

/// The account number of connection `conn`, account `idx`.
pub fn account_name(conn: u32, idx: u32) -> String {
    format!("F{conn:04X}{idx:04X}")
}

/// The synthetic bench key.
pub fn bench_key() -> Key {
    // The constant is 32 hex digits: this cannot fail.
    Key::from_hex(BENCH_KEY_HEX).unwrap_or_else(|_| unreachable!("BENCH_KEY_HEX is a valid key"))
}

fn check_shape(connections: u32, accounts_per_connection: u32) -> Result<(), BenchError> {
    if connections == 0 || connections > MAX_CONNECTIONS {
        return Err(BenchError::Args(format!("--connections must be 1…{MAX_CONNECTIONS}")));
    }
    if accounts_per_connection == 0 || accounts_per_connection > 0x1_0000 {
        return Err(BenchError::Args("--accounts-per-connection must be 1…65536".into()));
    }
    Ok(())
}

/// The records file (TOML, see `meldkamer::records`) with every account a run with these flags
/// uses.
pub fn accounts_toml(connections: u32, accounts_per_connection: u32, encrypted: bool) -> String {
    accounts_toml_at(connections, accounts_per_connection, encrypted, false)
}

/// [`accounts_toml`], and with `at_sites` the `k`-th account (counted over connections, then
/// accounts) at site `BS{k}` of `--write-records` ([`arc::records_toml`]; import that file
/// first), so that the load's openings and closings reach a site and its schedule.
pub fn accounts_toml_at(connections: u32, accounts_per_connection: u32, encrypted: bool, at_sites: bool) -> String {
    let mut s = String::with_capacity(connections as usize * accounts_per_connection as usize * 64);
    s.push_str(&format!(
        "# Generated by `meldkamer bench --write-accounts`: {connections} connection(s) x \
         {accounts_per_connection} account(s){}.\n# Synthetic load-test accounts; import with \
         `meldkamer import FILE`.\n",
        if encrypted {
            ", AES-128 with the public bench key (never use it for a real panel)"
        } else {
            ", plain"
        }
    ));
    for c in 0..connections {
        for i in 0..accounts_per_connection {
            s.push_str("\n[[account]]\naccount = \"");
            s.push_str(&account_name(c, i));
            s.push_str("\"\n");
            if at_sites {
                let k = u64::from(c) * u64::from(accounts_per_connection) + u64::from(i);
                s.push_str(&format!("site = \"BS{k}\"\n"));
            }
            if encrypted {
                s.push_str("key = \"");
                s.push_str(BENCH_KEY_HEX);
                s.push_str("\"\nrequire_encryption = true\n");
            }
        }
    }
    s
}

/// What a simulated panel reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `BA`: burglary alarm on a zone.
    Alarm,
    /// `BR`: burglary restore.
    Restore,
    /// `OP`: disarmed by a user.
    Open,
    /// `CL`: armed by a user.
    Close,
    /// `NULL`: a link test (supervision poll).
    Poll,
}

impl EventKind {
    fn for_index(i: u64, mix: bool) -> EventKind {
        if !mix {
            return EventKind::Alarm;
        }
        match i % 10 {
            0..=3 => EventKind::Alarm,
            4 | 5 => EventKind::Restore,
            6 => EventKind::Open,
            7 => EventKind::Close,
            _ => EventKind::Poll,
        }
    }
}

/// One event of a simulated panel, before encoding (a retry encodes it again with a fresh
/// timestamp but the same sequence number and payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchEvent {
    /// Account number.
    pub account: String,
    /// Sequence number.
    pub seq: u16,
    /// What it reports.
    pub kind: EventKind,
    /// The SIA-DCS data (empty for a link test).
    pub data: String,
}

impl BenchEvent {
    /// The frame for this event, timestamped `now`; `pad_seed` varies the pad of an encrypted
    /// frame.
    pub fn encode(&self, key: Option<&Key>, now: OffsetDateTime, pad_seed: u64) -> Vec<u8> {
        let plain = Plain {
            data: self.data.clone(),
            xdata: Vec::new(),
            timestamp: Some(Timestamp::from_datetime(now)),
        };
        let (encrypted, body) = match key {
            Some(k) => (
                true,
                Body::Encrypted(encrypt_body(k, &plain, false, &mut SeededPad::new(pad_seed))),
            ),
            None => (false, Body::Plain(plain)),
        };
        Frame {
            framing: Framing::default(),
            token: if self.kind == EventKind::Poll {
                Token::Null
            } else {
                Token::SiaDcs
            },
            encrypted,
            seq: self.seq,
            receiver: Some("1".into()),
            line: "1".into(),
            account: AccountField::Number(self.account.clone()),
            body,
        }
        .encode()
    }
}

/// The event source of one simulated connection: its accounts take turns.
#[derive(Debug, Clone)]
pub struct Panel {
    accounts: Vec<String>,
    counters: Vec<u64>,
    next: u64,
    mix: bool,
}

impl Panel {
    /// Connection `conn` with `accounts_per_connection` accounts, counters starting at `start`.
    pub fn new(conn: u32, accounts_per_connection: u32, mix: bool, start: u64) -> Panel {
        Panel {
            accounts: (0..accounts_per_connection).map(|i| account_name(conn, i)).collect(),
            counters: vec![start; accounts_per_connection as usize],
            next: 0,
            mix,
        }
    }

    /// The next event.
    pub fn next_event(&mut self) -> BenchEvent {
        let i = self.next;
        self.next += 1;
        let idx = (i % self.accounts.len() as u64) as usize;
        let n = self.counters[idx];
        self.counters[idx] = n.wrapping_add(1);
        let seq = (n % SEQ_CYCLE + 1) as u16;
        let number = (n / SEQ_CYCLE) % ZONE_CYCLE + 1;
        let kind = EventKind::for_index(i, self.mix);
        let account = self.accounts[idx].clone();
        let data = match kind {
            EventKind::Alarm => format!("#{account}|Nri1/BA{number:03}"),
            EventKind::Restore => format!("#{account}|Nri1/BR{number:03}"),
            EventKind::Open => format!("#{account}|Nri1/OP{number:03}"),
            EventKind::Close => format!("#{account}|Nri1/CL{number:03}"),
            EventKind::Poll => String::new(),
        };
        BenchEvent {
            account,
            seq,
            kind,
            data,
        }
    }
}

/// How a response relates to the frame we wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ack,
    Nak,
    Duh,
    /// Not an answer to this frame (an earlier frame's late answer, or garbage).
    Other,
}

fn classify(resp: &[u8], ev: &BenchEvent) -> Answer {
    let Ok(f) = decode_frame(resp, &DecodeOptions::default()) else {
        return Answer::Other;
    };
    let ours = f.seq == ev.seq && f.account.number() == Some(ev.account.as_str());
    match f.token {
        Token::Ack if ours => Answer::Ack,
        Token::Duh if ours => Answer::Duh,
        // A NAK carries neither sequence number nor account.
        Token::Nak => Answer::Nak,
        _ => Answer::Other,
    }
}

/// Counters of one simulated connection (and, summed, of the run).
#[derive(Debug, Default, Clone)]
struct Stats {
    sent: u64,
    acked: u64,
    nak: u64,
    duh: u64,
    timeouts: u64,
    retries: u64,
    failed: u64,
    mismatched: u64,
    connection_errors: u64,
    latencies_us: Vec<u32>,
    /// Paced runs: from the actual (possibly late) send instead of the scheduled time.
    service_us: Vec<u32>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.nak += o.nak;
        self.duh += o.duh;
        self.timeouts += o.timeouts;
        self.retries += o.retries;
        self.failed += o.failed;
        self.mismatched += o.mismatched;
        self.connection_errors += o.connection_errors;
        self.latencies_us.extend(o.latencies_us);
        self.service_us.extend(o.service_us);
    }
}

/// Response latency, microseconds.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: u64,
}

pub(crate) fn latency(mut v: Vec<u32>) -> Latency {
    if v.is_empty() {
        return Latency::default();
    }
    v.sort_unstable();
    let at = |q: f64| -> u64 {
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        u64::from(v[i])
    };
    Latency {
        p50_us: at(0.50),
        p90_us: at(0.90),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: u64::from(v[v.len() - 1]),
        mean_us: v.iter().map(|x| u64::from(*x)).sum::<u64>() / v.len() as u64,
    }
}

/// The daemon's commit statistics over the run (from its metrics endpoint).
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct CommitStats {
    /// Transactions committed (one fsync each).
    pub commits: u64,
    /// Frames in them.
    pub frames: u64,
    /// Frames per commit, mean.
    pub mean_batch_frames: f64,
    /// Commit time, mean, milliseconds.
    pub mean_commit_ms: f64,
    /// Commit time histogram: (upper bound in ms, commits at or under it), cumulative.
    pub commit_ms_le: Vec<(f64, u64)>,
    /// Batch size histogram: (upper bound in frames, commits at or under it), cumulative.
    pub batch_frames_le: Vec<(f64, u64)>,
}

/// The result of a load run.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct LoadReport {
    /// "tcp" or "udp".
    pub transport: &'static str,
    /// Receiver address.
    pub target: String,
    /// Simulated connections.
    pub connections: u32,
    /// Accounts per connection.
    pub accounts_per_connection: u32,
    /// Load generator threads.
    pub threads: u32,
    /// AES-128 frames.
    pub encrypted: bool,
    /// Mixed event kinds.
    pub mix: bool,
    /// Target rate (events/s), if paced.
    pub rate: Option<f64>,
    /// Events (frames) sent, not counting retries.
    pub sent: u64,
    /// Events acknowledged.
    pub acked: u64,
    /// Events not acknowledged (NAK, DUH, or no answer after the retry).
    pub errors: u64,
    /// Answered NAK.
    pub nak: u64,
    /// Answered DUH (unknown account? run `--write-accounts` and import).
    pub duh: u64,
    /// No answer in time (each attempt counts).
    pub timeouts: u64,
    /// Frames sent again after a timeout or a broken connection.
    pub retries: u64,
    /// Events with no answer even after the retry.
    pub failed: u64,
    /// Responses that answered no frame we were waiting for (wrong sequence number/account).
    pub mismatched: u64,
    /// Connects that failed and connections that broke.
    pub connection_errors: u64,
    /// Wall time of the run, seconds.
    pub duration_s: f64,
    /// Acknowledged events per second.
    pub events_per_s: f64,
    /// Send-to-ACK latency of the acknowledged events (paced runs: from the scheduled send
    /// time, so a stall is not hidden).
    pub latency: Latency,
    /// Paced runs only: the same, from the moment the frame was actually sent. Where this is
    /// much lower than `latency`, the load generator itself fell behind its schedule.
    pub latency_from_send: Option<Latency>,
    /// The daemon's resident memory at the end, KiB (with --daemon-pid).
    pub daemon_rss_kib: Option<u64>,
    /// CPU time per ACKed event during the run (Linux): what an event costs each side. On a
    /// shared machine it moves with the machine's speed, as the throughput does
    /// (BENCHMARKS-HISTORY.md, series P: the daemon's CPU time per second stayed near one core while both moved).
    pub cpu_per_event: Option<CpuPerEvent>,
    /// The daemon's commits during the run (with --metrics).
    pub commit: Option<CommitStats>,
}

/// CPU time (user and system, every thread) per ACKed event, µs.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct CpuPerEvent {
    /// The daemon's (with --daemon-pid).
    pub daemon_us: Option<f64>,
    /// This load generator's.
    pub generator_us: Option<f64>,
}

/// The CPU time of the daemon's threads and of this process's at the start of a load.
pub(crate) struct CpuStart {
    daemon_pid: Option<u32>,
    daemon: Option<ThreadTimes>,
    generator: Option<ThreadTimes>,
}

impl CpuStart {
    pub(crate) fn now(daemon_pid: Option<u32>) -> Self {
        CpuStart {
            daemon_pid,
            daemon: daemon_pid.and_then(thread_times),
            generator: thread_times(std::process::id()),
        }
    }

    /// CPU time since the start per event; `None` without events, and each side `None`
    /// without `/proc`.
    pub(crate) fn per_event(&self, events: u64) -> Option<CpuPerEvent> {
        if events == 0 {
            return None;
        }
        let per = |start: &Option<ThreadTimes>, pid: u32| -> Option<f64> {
            let used = cpu_since(start.as_ref()?, &thread_times(pid)?);
            Some(used as f64 / 1e3 / events as f64)
        };
        Some(CpuPerEvent {
            daemon_us: self.daemon_pid.and_then(|pid| per(&self.daemon, pid)),
            generator_us: per(&self.generator, std::process::id()),
        })
    }
}

/// CPU time each thread of a process has used so far, ns, by thread id.
type ThreadTimes = std::collections::HashMap<u32, u64>;

/// The threads of a process and their CPU time, from Linux `/proc/PID/task/*/schedstat`
/// (nanoseconds, where `/proc/PID/stat` counts 10 ms ticks). `None` when none could be read.
fn thread_times(pid: u32) -> Option<ThreadTimes> {
    let mut times = ThreadTimes::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread that ended after the listing is skipped like one that ended before it.
        let tid = task.file_name().to_str().and_then(|t| t.parse().ok());
        let ns = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| schedstat_ns(&s));
        if let (Some(tid), Some(ns)) = (tid, ns) {
            times.insert(tid, ns);
        }
    }
    (!times.is_empty()).then_some(times)
}

/// CPU time used between two readings: each thread's growth (a thread started since counts
/// from zero). A thread that ended in between is missing from `end` and counts nothing, so
/// short-lived threads are under-counted, never subtracted; the receiver's, the writer's and
/// the generator's threads live as long as the run.
fn cpu_since(start: &ThreadTimes, end: &ThreadTimes) -> u64 {
    end.iter()
        .map(|(tid, ns)| ns.saturating_sub(start.get(tid).copied().unwrap_or(0)))
        .sum()
}

/// The first field of a `schedstat` line: the time the thread ran, ns.
fn schedstat_ns(line: &str) -> Option<u64> {
    line.split_whitespace().next()?.parse().ok()
}

/// The result of an idle-connection run.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct IdleReport {
    /// Receiver address.
    pub target: String,
    /// Connections asked for.
    pub requested: u32,
    /// Connections opened.
    pub opened: u32,
    /// Connects that failed.
    pub failed: u32,
    /// Seconds to open them all.
    pub open_s: f64,
    /// Seconds held.
    pub hold_s: u64,
    /// Connections that still answered a link test at the end of the hold.
    pub alive_after_hold: u32,
    /// Daemon RSS before connecting, KiB.
    pub rss_before_kib: Option<u64>,
    /// Daemon RSS with all connections open, KiB.
    pub rss_holding_kib: Option<u64>,
    /// Daemon RSS at the end of the hold, KiB.
    pub rss_end_kib: Option<u64>,
    /// (holding − before) / opened, bytes.
    pub rss_per_connection_bytes: Option<u64>,
}

/// Run `meldkamer bench`.
pub fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    if let Some(addr) = args.noop_receiver {
        if args.arc.wanted() {
            return Err(BenchError::Args(
                "--noop-receiver serves; it does not run the ARC scenarios".into(),
            ));
        }
        return noop::run(addr, &args.noop_accounts, args.threads, out);
    }
    if args.arc.wanted() {
        if args.rounds.baseline.is_some() {
            return Err(BenchError::Args(
                "--baseline runs the event load; the ARC scenarios have their own".into(),
            ));
        }
        return arc::run(args, out);
    }
    let cid = args.cid_ip.as_deref().map(cid::framing).transpose()?;
    match cid {
        Some(_) => cid::check_shape(args.connections, args.accounts_per_connection)?,
        None => check_shape(args.connections, args.accounts_per_connection)?,
    }
    if let Some(path) = &args.write_accounts {
        let text = match cid {
            Some(_) => cid::accounts_toml(args.connections, args.accounts_per_connection),
            None => accounts_toml_at(
                args.connections,
                args.accounts_per_connection,
                args.encrypted,
                args.at_record_sites,
            ),
        };
        std::fs::write(path, text).map_err(|source| BenchError::Write {
            what: path.display().to_string(),
            source,
        })?;
        let n = u64::from(args.connections) * u64::from(args.accounts_per_connection);
        let _ = writeln!(
            out,
            "wrote {n} account(s) to {}; import them with `meldkamer import {}` before serving",
            path.display(),
            path.display()
        );
        return Ok(());
    }
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(BenchError::Args("--rate must be a positive number".into()));
    }
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0)
    {
        return Err(BenchError::Args(
            "--duration must be a positive number of seconds".into(),
        ));
    }
    if args.events == Some(0) {
        return Err(BenchError::Args("--events must be at least 1".into()));
    }
    let rt = runtime(args.threads.unwrap_or(1))?;
    let write_err = |source| BenchError::Write {
        what: "the report".into(),
        source,
    };
    if let Some(baseline) = args.rounds.baseline {
        let report = rounds::run(args, baseline, &rt, &mut std::io::stderr())?;
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&report)?).map_err(write_err)?;
        } else {
            rounds::write_rounds(&report, out).map_err(write_err)?;
        }
        return Ok(());
    }
    if let Some(n) = args.idle {
        if n == 0 {
            return Err(BenchError::Args("--idle must be at least 1".into()));
        }
        let report = rt.block_on(idle(args, n));
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&report)?).map_err(write_err)?;
        } else {
            write_idle(&report, out).map_err(write_err)?;
        }
        return Ok(());
    }
    let report = match cid {
        Some(f) => rt.block_on(cid::load(args, f)),
        None => rt.block_on(load(args)),
    };
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?).map_err(write_err)?;
    } else {
        write_load(&report, out).map_err(write_err)?;
    }
    Ok(())
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn write_load(r: &LoadReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "target      {} over {}, {} connection(s) x {} account(s), {}{}{}, {} generator thread(s)",
        r.target,
        r.transport,
        r.connections,
        r.accounts_per_connection,
        if r.encrypted { "AES-128" } else { "plain" },
        if r.mix { ", mixed events" } else { ", alarms" },
        r.rate
            .map_or(", closed loop".to_string(), |x| format!(", paced at {x} events/s")),
        r.threads,
    )?;
    writeln!(
        out,
        "events      {} sent, {} ACKed, {} errors (NAK {}, DUH {}, failed {})",
        r.sent, r.acked, r.errors, r.nak, r.duh, r.failed
    )?;
    writeln!(
        out,
        "anomalies   {} timeouts, {} retries, {} mismatched responses, {} connection errors",
        r.timeouts, r.retries, r.mismatched, r.connection_errors
    )?;
    if r.duh > 0 {
        writeln!(
            out,
            "hint        DUH means unknown accounts (or plain frames to keyed ones): write them with \
             --write-accounts FILE (same --connections/--accounts-per-connection/--encrypted) and \
             `meldkamer import FILE`"
        )?;
    }
    writeln!(
        out,
        "throughput  {:.0} ACKed events/s over {:.2} s",
        r.events_per_s, r.duration_s
    )?;
    let l = &r.latency;
    writeln!(
        out,
        "latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        ms(l.mean_us)
    )?;
    if let Some(l) = &r.latency_from_send {
        writeln!(
            out,
            "  from send p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (the send itself was late by the rest)",
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        )?;
    }
    if let Some(kib) = r.daemon_rss_kib {
        writeln!(out, "daemon RSS  {:.1} MiB", kib as f64 / 1024.0)?;
    }
    if let Some(c) = &r.cpu_per_event {
        let us = |v: Option<f64>| v.map_or("n/a".to_string(), |us| format!("{us:.1} µs"));
        writeln!(
            out,
            "cpu/event   daemon {}, generator {}",
            us(c.daemon_us),
            us(c.generator_us)
        )?;
    }
    if let Some(c) = &r.commit {
        writeln!(
            out,
            "commits     {} commits, {} frames, {:.1} frames/commit, {:.3} ms/commit",
            c.commits, c.frames, c.mean_batch_frames, c.mean_commit_ms
        )?;
        let hist = |h: &[(f64, u64)], unit: &str| {
            h.iter()
                .map(|(le, n)| format!("≤{le}{unit}:{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        writeln!(out, "commit time {}", hist(&c.commit_ms_le, "ms"))?;
        writeln!(out, "batch size  {}", hist(&c.batch_frames_le, ""))?;
    }
    Ok(())
}

fn write_idle(r: &IdleReport, out: &mut dyn Write) -> std::io::Result<()> {
    let mib = |k: Option<u64>| k.map_or("n/a".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    writeln!(
        out,
        "idle        {} of {} connection(s) to {} opened in {:.2} s ({} failed), held {} s",
        r.opened, r.requested, r.target, r.open_s, r.failed, r.hold_s
    )?;
    writeln!(
        out,
        "alive       {} answered a link test after the hold",
        r.alive_after_hold
    )?;
    writeln!(
        out,
        "daemon RSS  before {}, holding {}, end {}{}",
        mib(r.rss_before_kib),
        mib(r.rss_holding_kib),
        mib(r.rss_end_kib),
        r.rss_per_connection_bytes
            .map_or(String::new(), |b| format!(" ({b} bytes per connection)"))
    )
}

/// Resident memory of a process, KiB (Linux `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub(crate) async fn fetch_metrics(addr: SocketAddr) -> Option<String> {
    let get = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    tokio::time::timeout(Duration::from_secs(5), get).await.ok().flatten()
}

/// The value of a sample line `name value` in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// `name_bucket{le="X"} N` lines: (X, N), without +Inf.
fn buckets(text: &str, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, n) = rest.split_once("\"} ")?;
            let le: f64 = le.parse().ok()?;
            // +Inf is the count itself.
            le.is_finite().then_some(())?;
            Some((le, n.trim().parse().ok()?))
        })
        .collect()
}

pub(crate) fn commit_stats(before: &str, after: &str) -> CommitStats {
    let d = |name: &str| sample(after, name).unwrap_or(0.0) - sample(before, name).unwrap_or(0.0);
    let commits = d("meldkamer_commit_seconds_count").max(0.0) as u64;
    let frames = d("meldkamer_commit_batch_frames_sum").max(0.0) as u64;
    let secs = d("meldkamer_commit_seconds_sum");
    let delta = |name: &str, scale: f64| -> Vec<(f64, u64)> {
        let b = buckets(before, name);
        buckets(after, name)
            .into_iter()
            .map(|(le, n)| {
                let was = b.iter().find(|(l, _)| *l == le).map_or(0, |(_, n)| *n);
                (le * scale, n.saturating_sub(was))
            })
            .collect()
    };
    CommitStats {
        commits,
        frames,
        mean_batch_frames: if commits > 0 {
            frames as f64 / commits as f64
        } else {
            0.0
        },
        mean_commit_ms: if commits > 0 {
            secs * 1000.0 / commits as f64
        } else {
            0.0
        },
        commit_ms_le: delta("meldkamer_commit_seconds", 1000.0),
        batch_frames_le: delta("meldkamer_commit_batch_frames", 1.0),
    }
}

/// Shared settings of the load tasks.
struct Ctx {
    target: SocketAddr,
    udp: bool,
    key: Option<Key>,
    mix: bool,
    accounts_per_connection: u32,
    start_n: u64,
    timeout: Duration,
    /// Per-connection send interval when paced.
    interval: Option<Duration>,
    connections: u32,
    started: Instant,
    deadline: Option<Instant>,
}

/// The far end of one simulated connection.
enum Link {
    Tcp { stream: Option<TcpStream>, buf: Vec<u8> },
    Udp { socket: Option<UdpSocket>, buf: Vec<u8> },
}

enum Recv {
    Frame(Vec<u8>),
    Timeout,
    Broken,
}

impl Link {
    async fn ensure(&mut self, target: SocketAddr, timeout: Duration) -> std::io::Result<()> {
        match self {
            Link::Tcp { stream, buf } => {
                if stream.is_none() {
                    let s = tokio::time::timeout(timeout, TcpStream::connect(target))
                        .await
                        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
                    s.set_nodelay(true)?;
                    *stream = Some(s);
                    buf.clear();
                }
            }
            Link::Udp { socket, .. } => {
                if socket.is_none() {
                    let bind: SocketAddr = if target.is_ipv4() {
                        ([127, 0, 0, 1], 0).into()
                    } else {
                        (std::net::Ipv6Addr::LOCALHOST, 0).into()
                    };
                    let s = UdpSocket::bind(bind).await?;
                    s.connect(target).await?;
                    *socket = Some(s);
                }
            }
        }
        Ok(())
    }

    fn reset(&mut self) {
        match self {
            Link::Tcp { stream, buf } => {
                *stream = None;
                buf.clear();
            }
            Link::Udp { socket, .. } => *socket = None,
        }
    }

    async fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let not_connected = || std::io::Error::from(std::io::ErrorKind::NotConnected);
        match self {
            Link::Tcp { stream, .. } => stream.as_mut().ok_or_else(not_connected)?.write_all(frame).await,
            Link::Udp { socket, .. } => socket.as_ref().ok_or_else(not_connected)?.send(frame).await.map(|_| ()),
        }
    }

    async fn recv(&mut self, deadline: tokio::time::Instant) -> Recv {
        match self {
            Link::Tcp { stream, buf } => {
                let Some(s) = stream.as_mut() else {
                    return Recv::Broken;
                };
                loop {
                    if let Some(f) = take_frame(buf) {
                        return Recv::Frame(f);
                    }
                    match tokio::time::timeout_at(deadline, s.read_buf(buf)).await {
                        Err(_) => return Recv::Timeout,
                        Ok(Ok(0)) | Ok(Err(_)) => return Recv::Broken,
                        Ok(Ok(_)) => {}
                    }
                }
            }
            Link::Udp { socket, buf } => {
                let Some(s) = socket.as_ref() else {
                    return Recv::Broken;
                };
                buf.resize(4200, 0);
                match tokio::time::timeout_at(deadline, s.recv(buf)).await {
                    Err(_) => Recv::Timeout,
                    Ok(Ok(n)) => Recv::Frame(buf[..n].to_vec()),
                    // ICMP port unreachable (nobody listening) shows up here.
                    Ok(Err(_)) => Recv::Broken,
                }
            }
        }
    }
}

/// Take one LF…CR frame off the front of `buf` (bytes before an LF are dropped).
fn take_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let Some(start) = buf.iter().position(|b| *b == b'\n') else {
        buf.clear();
        return None;
    };
    let end = start + buf[start..].iter().position(|b| *b == b'\r')?;
    let f = buf[start..=end].to_vec();
    buf.drain(..=end);
    Some(f)
}

fn now_utc() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

async fn panel_task(ctx: Arc<Ctx>, conn: u32, quota: Option<u64>) -> Stats {
    let mut panel = Panel::new(conn, ctx.accounts_per_connection, ctx.mix, ctx.start_n);
    let mut link = if ctx.udp {
        Link::Udp {
            socket: None,
            buf: Vec::new(),
        }
    } else {
        Link::Tcp {
            stream: None,
            buf: Vec::with_capacity(512),
        }
    };
    let mut st = Stats::default();
    // Paced connections start spread over one interval.
    let stagger = ctx
        .interval
        .map(|iv| iv.mul_f64(f64::from(conn) / f64::from(ctx.connections)));
    let mut i: u64 = 0;
    let pad_base = u64::from(conn) << 40;
    loop {
        if quota.is_some_and(|q| i >= q) || ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let started = match (ctx.interval, stagger) {
            (Some(iv), Some(s)) => {
                let due = ctx.started + s + iv.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                due
            }
            _ => Instant::now(),
        };
        let ev = panel.next_event();
        st.sent += 1;
        let sent_at = Instant::now();
        let mut answer = None;
        for attempt in 0..2u64 {
            if attempt > 0 {
                st.retries += 1;
            }
            if link.ensure(ctx.target, ctx.timeout).await.is_err() {
                st.connection_errors += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let frame = ev.encode(ctx.key.as_ref(), now_utc(), pad_base ^ (i << 1) ^ attempt);
            if link.send(&frame).await.is_err() {
                st.connection_errors += 1;
                link.reset();
                continue;
            }
            let deadline = tokio::time::Instant::now() + ctx.timeout;
            loop {
                match link.recv(deadline).await {
                    Recv::Frame(f) => match classify(&f, &ev) {
                        Answer::Other => st.mismatched += 1,
                        a => {
                            answer = Some(a);
                            break;
                        }
                    },
                    Recv::Timeout => {
                        st.timeouts += 1;
                        break;
                    }
                    Recv::Broken => {
                        st.connection_errors += 1;
                        link.reset();
                        break;
                    }
                }
            }
            if answer.is_some() {
                break;
            }
        }
        match answer {
            Some(Answer::Ack) => {
                st.acked += 1;
                let us = |t: Instant| t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                st.latencies_us.push(us(started));
                if ctx.interval.is_some() {
                    st.service_us.push(us(sent_at));
                }
            }
            Some(Answer::Nak) => st.nak += 1,
            Some(Answer::Duh) => st.duh += 1,
            _ => st.failed += 1,
        }
        i += 1;
    }
    st
}

fn default_seed() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

async fn load(args: &BenchArgs) -> LoadReport {
    let n = args.connections;
    let start_n = args.seed.unwrap_or_else(default_seed) % (SEQ_CYCLE * ZONE_CYCLE);
    let duration = match (args.events, args.duration) {
        (Some(_), _) => None,
        (None, Some(d)) => Some(Duration::from_secs_f64(d)),
        (None, None) => Some(Duration::from_secs(10)),
    };
    let metrics_before = match args.metrics {
        Some(a) => fetch_metrics(a).await,
        None => None,
    };
    let cpu = CpuStart::now(args.daemon_pid);
    let started = Instant::now();
    let ctx = Arc::new(Ctx {
        target: args.target,
        udp: args.udp,
        key: args.encrypted.then(bench_key),
        mix: args.mix,
        accounts_per_connection: args.accounts_per_connection,
        start_n,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        interval: args.rate.map(|r| Duration::from_secs_f64(f64::from(n) / r)),
        connections: n,
        started,
        deadline: duration.map(|d| started + d),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..n {
        let quota = args
            .events
            .map(|total| total / u64::from(n) + u64::from(u64::from(c) < total % u64::from(n)));
        tasks.spawn(panel_task(ctx.clone(), c, quota));
    }
    let mut all = Stats::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(s) = r {
            all.merge(s);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_per_event = cpu.per_event(all.acked);
    let metrics_after = match (args.metrics, &metrics_before) {
        (Some(a), Some(_)) => fetch_metrics(a).await,
        _ => None,
    };
    LoadReport {
        transport: if args.udp { "udp" } else { "tcp" },
        target: args.target.to_string(),
        connections: n,
        accounts_per_connection: args.accounts_per_connection,
        threads: generator_threads(),
        encrypted: args.encrypted,
        mix: args.mix,
        rate: args.rate,
        sent: all.sent,
        acked: all.acked,
        errors: all.sent - all.acked,
        nak: all.nak,
        duh: all.duh,
        timeouts: all.timeouts,
        retries: all.retries,
        failed: all.failed,
        mismatched: all.mismatched,
        connection_errors: all.connection_errors,
        duration_s: elapsed,
        events_per_s: if elapsed > 0.0 { all.acked as f64 / elapsed } else { 0.0 },
        latency: latency(all.latencies_us),
        latency_from_send: args.rate.map(|_| latency(all.service_us)),
        daemon_rss_kib: args.daemon_pid.and_then(rss_kib),
        cpu_per_event,
        commit: match (metrics_before, metrics_after) {
            (Some(b), Some(a)) => Some(commit_stats(&b, &a)),
            _ => None,
        },
    }
}

async fn idle(args: &BenchArgs, n: u32) -> IdleReport {
    let rss = || args.daemon_pid.and_then(rss_kib);
    let rss_before_kib = rss();
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let gate = gate.clone();
        let target = args.target;
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target))
                .await
                .ok()?
                .ok()
        });
    }
    let mut streams = Vec::with_capacity(n as usize);
    let mut failed = 0u32;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Some(s)) => streams.push(s),
            _ => failed += 1,
        }
    }
    let open_s = started.elapsed().as_secs_f64();
    // Let the daemon finish accepting before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_holding_kib = rss();
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let rss_end_kib = rss();
    // Every connection that is still open answers a link test (DUH if the account is unknown).
    let ev = BenchEvent {
        account: account_name(0, 0),
        seq: 1,
        kind: EventKind::Poll,
        data: String::new(),
    };
    let key = args.encrypted.then(bench_key);
    let mut checks = tokio::task::JoinSet::new();
    for (i, mut s) in streams.into_iter().enumerate() {
        let gate = gate.clone();
        let frame = ev.encode(key.as_ref(), now_utc(), i as u64);
        checks.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            s.write_all(&frame).await.ok()?;
            let mut link = Link::Tcp {
                stream: Some(s),
                buf: Vec::new(),
            };
            match link.recv(tokio::time::Instant::now() + Duration::from_secs(10)).await {
                Recv::Frame(_) => Some(()),
                _ => None,
            }
        });
    }
    let mut alive = 0u32;
    while let Some(r) = checks.join_next().await {
        if matches!(r, Ok(Some(()))) {
            alive += 1;
        }
    }
    let opened = n - failed;
    IdleReport {
        target: args.target.to_string(),
        requested: n,
        opened,
        failed,
        open_s,
        hold_s: args.hold,
        alive_after_hold: alive,
        rss_before_kib,
        rss_holding_kib,
        rss_end_kib,
        rss_per_connection_bytes: match (rss_before_kib, rss_holding_kib) {
            (Some(b), Some(h)) if opened > 0 => Some(h.saturating_sub(b) * 1024 / u64::from(opened)),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::crypto::PadSource;
    use crate::protocol::policy::{AccountPolicy, Verdict, Window, evaluate, response_frame};
    use crate::protocol::response::ResponseKind;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn policies(records: &crate::records::Records) -> std::collections::HashMap<String, AccountPolicy> {
        records
            .accounts
            .iter()
            .map(|a| &a.spec)
            .map(|a| {
                (
                    a.account.clone(),
                    AccountPolicy {
                        key: a.key.clone(),
                        require_encryption: a.require_encryption,
                        quirks: a.quirks,
                        check_plain_timestamp: a.check_plain_timestamp,
                        ack_separator: a.ack_separator,
                    },
                )
            })
            .collect()
    }

    struct ZeroPad;
    impl PadSource for ZeroPad {
        fn fill_pad(&mut self, out: &mut [u8]) {
            out.fill(b'0');
        }
    }

    #[test]
    fn arguments_parse_with_their_defaults() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["bench"]).expect("defaults");
        assert_eq!(c.bench.target, "127.0.0.1:7000".parse().expect("addr"));
        assert_eq!(c.bench.connections, 16);
        assert_eq!(c.bench.accounts_per_connection, 100);
        assert!(!c.bench.udp && !c.bench.encrypted && !c.bench.mix && c.bench.rate.is_none());
        let c = Cli::try_parse_from(["bench", "--events", "10", "--udp", "--rate", "2000"]).expect("flags");
        assert_eq!(c.bench.events, Some(10));
        assert!(Cli::try_parse_from(["bench", "--events", "10", "--duration", "5"]).is_err());
    }

    #[test]
    fn cpu_time_is_each_threads_growth() {
        assert_eq!(schedstat_ns("8123456789 2233 41\n"), Some(8_123_456_789));
        assert_eq!(schedstat_ns(""), None);
        assert_eq!(schedstat_ns("x 1 2"), None);
        // A thread that ended in between counts nothing, a new one from zero: nothing is
        // ever subtracted.
        let start = ThreadTimes::from([(1, 100), (2, 500)]);
        let end = ThreadTimes::from([(1, 160), (3, 40)]);
        assert_eq!(cpu_since(&start, &end), 100);
        // This process as the "daemon": the thread working here is in both figures.
        let cpu = CpuStart::now(Some(std::process::id()));
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {
            std::hint::black_box(0u64);
        }
        let c = cpu.per_event(1).expect("one event");
        assert!(c.daemon_us.is_some_and(|us| us > 0.0), "{c:?}");
        assert!(c.generator_us.is_some_and(|us| us > 0.0), "{c:?}");
        assert_eq!(cpu.per_event(0), None);
        assert_eq!(thread_times(u32::MAX), None);
    }

    #[test]
    fn the_text_report_shows_cpu_per_event() {
        let text = |cpu: CpuPerEvent| {
            let r = LoadReport {
                cpu_per_event: Some(cpu),
                ..LoadReport::default()
            };
            let mut out = Vec::new();
            write_load(&r, &mut out).expect("write");
            String::from_utf8(out).expect("utf-8")
        };
        let t = text(CpuPerEvent {
            daemon_us: Some(22.14),
            generator_us: Some(7.8),
        });
        assert!(t.contains("cpu/event   daemon 22.1 µs, generator 7.8 µs"), "{t}");
        let t = text(CpuPerEvent {
            daemon_us: None,
            generator_us: Some(7.8),
        });
        assert!(t.contains("cpu/event   daemon n/a, generator 7.8 µs"), "{t}");
    }

    #[test]
    fn one_generator_thread_unless_asked_for_more() {
        use tokio::runtime::RuntimeFlavor;
        let c = Cli::try_parse_from(["bench"]).expect("defaults");
        assert_eq!(c.bench.threads, None);
        let rt = runtime(1).expect("one thread");
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        assert_eq!(rt.block_on(async { generator_threads() }), 1);
        let rt = runtime(3).expect("three threads");
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(rt.block_on(async { generator_threads() }), 3);
        assert!(runtime(0).is_err());
        assert!(runtime(MAX_THREADS + 1).is_err());
    }

    #[test]
    fn account_numbers_are_valid_dc09_accounts() {
        assert_eq!(account_name(0, 0), "F00000000");
        assert_eq!(account_name(0xFFFF, 0xFFFF), "FFFFFFFFF");
        assert_eq!(account_name(0x12, 0x3A), "F0012003A");
        for a in [account_name(0, 0), account_name(0xFFFF, 0xFFFF)] {
            assert!((3..=16).contains(&a.len()) && a.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert!(check_shape(0, 1).is_err());
        assert!(check_shape(MAX_CONNECTIONS + 1, 1).is_err());
        assert!(check_shape(MAX_CONNECTIONS, 0x1_0000).is_ok());
        assert!(check_shape(1, 0).is_err());
    }

    #[test]
    fn accounts_file_round_trips_through_the_records_parser() {
        for encrypted in [false, true] {
            let text = accounts_toml(3, 7, encrypted);
            let r = crate::records::parse_toml(&text, "bench").expect("valid records file");
            assert_eq!(r.accounts.len(), 21);
            let names: std::collections::HashSet<_> = r.accounts.iter().map(|a| a.spec.account.clone()).collect();
            for c in 0..3 {
                for i in 0..7 {
                    assert!(names.contains(&account_name(c, i)));
                }
            }
            for a in r.accounts.iter().map(|a| &a.spec) {
                assert_eq!(a.key.is_some(), encrypted);
                assert_eq!(a.require_encryption, encrypted);
                assert!(a.enabled);
            }
        }
        // Importing it works end to end (in memory).
        let mut conn = rusqlite::Connection::open_in_memory().expect("db");
        crate::store::schema::migrate(&conn).expect("schema");
        let r = crate::records::parse_toml(&accounts_toml(2, 3, true), "bench").expect("parse");
        crate::records::apply(&mut conn, &r, &crate::store::sealed::test_key()).expect("import");
        let t = crate::store::accounts::load(&conn, &crate::store::sealed::test_key()).expect("load");
        assert_eq!(t.len(), 6);
        assert!(t.lookup(&account_name(1, 2), Some("1"), "1").is_some());
    }

    #[test]
    fn every_generated_frame_decodes_and_is_acked_by_the_decision_table() {
        let now = time::macros::datetime!(2026-01-15 12:00:00 UTC);
        for encrypted in [false, true] {
            let records = crate::records::parse_toml(&accounts_toml(2, 5, encrypted), "bench").expect("records");
            let policies = policies(&records);
            let key = encrypted.then(bench_key);
            for mix in [false, true] {
                for conn in 0..2 {
                    // Start near the end of a sequence cycle so wrap-around is covered.
                    let mut p = Panel::new(conn, 5, mix, SEQ_CYCLE - 3);
                    let mut kinds = std::collections::HashSet::new();
                    let mut seen = std::collections::HashSet::new();
                    for i in 0..60u64 {
                        let ev = p.next_event();
                        kinds.insert(format!("{:?}", ev.kind));
                        assert!((1..=9999).contains(&ev.seq));
                        assert!(
                            seen.insert((ev.account.clone(), ev.seq, ev.data.clone())),
                            "identity repeats: {ev:?}"
                        );
                        let raw = ev.encode(key.as_ref(), now, i);
                        let opts = DecodeOptions::default();
                        let f = decode_frame(&raw, &opts).unwrap_or_else(|e| panic!("{ev:?}: {e}"));
                        assert_eq!(f.encrypted, encrypted);
                        assert_eq!(f.seq, ev.seq);
                        assert_eq!(f.account.number(), Some(ev.account.as_str()));
                        let policy = policies.get(&ev.account).expect("account is in the file");
                        let v = evaluate(&f, Some(policy), now + time::Duration::seconds(3), Window::default());
                        let Verdict::Accepted(a) = &v else {
                            panic!("{ev:?}: {v:?}")
                        };
                        assert_eq!(a.plain.data, ev.data);
                        if ev.kind != EventKind::Poll {
                            let events = crate::event::events_from(&f, &a.plain).expect("events");
                            assert_eq!(events.len(), 1, "{ev:?}");
                            assert!(events[0].meaning.is_some(), "known code: {ev:?}");
                        }
                        let resp = response_frame(&f, &v, Some(policy), now, &mut ZeroPad).expect("response");
                        assert_eq!(v.response_kind(), Some(ResponseKind::Ack));
                        assert_eq!(resp.token, Token::Ack);
                        assert_eq!(classify(&resp.encode(), &ev), Answer::Ack);
                    }
                    let want = if mix { 5 } else { 1 };
                    assert_eq!(kinds.len(), want, "{kinds:?}");
                }
            }
        }
    }

    #[test]
    fn a_resent_event_keeps_its_retransmission_identity() {
        let mut p = Panel::new(3, 2, true, 0);
        let ev = p.next_event();
        let t = time::macros::datetime!(2026-01-15 12:00:00 UTC);
        let a = decode_frame(&ev.encode(None, t, 0), &DecodeOptions::default()).expect("a");
        let b = decode_frame(
            &ev.encode(None, t + time::Duration::seconds(2), 1),
            &DecodeOptions::default(),
        )
        .expect("b");
        assert_eq!((a.seq, &a.account), (b.seq, &b.account));
        let (Body::Plain(pa), Body::Plain(pb)) = (&a.body, &b.body) else {
            panic!("plain")
        };
        assert_eq!(pa.data, pb.data);
        assert_ne!(pa.timestamp, pb.timestamp, "a resend carries a fresh timestamp");
    }

    #[test]
    fn responses_to_other_frames_are_not_taken_for_ours() {
        let mut p = Panel::new(0, 2, false, 0);
        let a = p.next_event();
        let b = p.next_event();
        let t = time::macros::datetime!(2026-01-15 12:00:00 UTC);
        let fa = decode_frame(&a.encode(None, t, 0), &DecodeOptions::default()).expect("a");
        let ack_a = crate::protocol::response::ack_plain(&fa).encode();
        assert_eq!(classify(&ack_a, &a), Answer::Ack);
        assert_eq!(classify(&ack_a, &b), Answer::Other);
        assert_eq!(classify(&crate::protocol::response::duh(&fa).encode(), &a), Answer::Duh);
        assert_eq!(
            classify(&crate::protocol::response::nak(t, Framing::default()).encode(), &b),
            Answer::Nak
        );
        assert_eq!(classify(b"\nnot a frame\r", &a), Answer::Other);
    }

    #[test]
    fn frames_are_taken_off_a_stream_buffer() {
        let mut buf = b"xx\nABC\r\nDE".to_vec();
        assert_eq!(take_frame(&mut buf).as_deref(), Some(&b"\nABC\r"[..]));
        assert_eq!(take_frame(&mut buf), None);
        buf.extend_from_slice(b"F\r");
        assert_eq!(take_frame(&mut buf).as_deref(), Some(&b"\nDEF\r"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn percentiles_and_metrics_parsing() {
        let l = latency((1..=1000).collect());
        assert_eq!((l.p50_us, l.p99_us, l.max_us), (500, 990, 1000));
        assert_eq!(latency(vec![]), Latency::default());
        let before = "meldkamer_commit_seconds_bucket{le=\"0.001\"} 1\nmeldkamer_commit_seconds_bucket{le=\"+Inf\"} 2\n\
                      meldkamer_commit_seconds_sum 0.5\n\
                      meldkamer_commit_seconds_count 2\nmeldkamer_commit_batch_frames_sum 10\n";
        let after = "meldkamer_commit_seconds_bucket{le=\"0.001\"} 5\nmeldkamer_commit_seconds_bucket{le=\"+Inf\"} 12\n\
                     meldkamer_commit_seconds_sum 0.52\n\
                     meldkamer_commit_seconds_count 12\nmeldkamer_commit_batch_frames_sum 210\n";
        let c = commit_stats(before, after);
        assert_eq!((c.commits, c.frames), (10, 200));
        assert!((c.mean_batch_frames - 20.0).abs() < 1e-9);
        assert!((c.mean_commit_ms - 2.0).abs() < 1e-6);
        assert_eq!(c.commit_ms_le, vec![(1.0, 4)]);
    }

    #[test]
    fn write_accounts_writes_and_exits() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a.toml");
        let mut args = Cli::try_parse_from(["bench", "--connections", "2", "--accounts-per-connection", "3"])
            .expect("args")
            .bench;
        args.write_accounts = Some(path.clone());
        let mut out = Vec::new();
        run(&args, &mut out).expect("run");
        let text = std::fs::read_to_string(&path).expect("file");
        assert_eq!(crate::records::parse_toml(&text, "a").expect("parse").accounts.len(), 6);
        assert!(String::from_utf8_lossy(&out).contains("wrote 6 account(s)"));
    }
}
