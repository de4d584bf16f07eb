//! ARC-scale scenarios of `meldkamer bench` (flags in [`ArcArgs`], flattened into
//! [`super::BenchArgs`]):
//!
//! - `--write-records FILE`: a records file with one customer, one site and one supervised
//!   account per index (`--records N` from `--first-record I`, `supervision_secs =
//!   --supervision-secs`), for `meldkamer import`;
//! - `--poll-accounts N`: a supervision poll load: each of those accounts sends a NULL link test
//!   over UDP every `--poll-interval` seconds, spread evenly (open loop, so a slow answer does
//!   not slow the schedule); the first round is spread over `--poll-warmup` seconds;
//! - `--push-latency SOCKET`: the queue subscription latency: log in to the operator API, subscribe,
//!   then act as panels that each open a new alarm (a record account, so the alarm is in the
//!   operators' queue) and measure from the ACK of the alarm frame to the push that carries it;
//! - `--deadline-latency DB`: from the database, how long after its deadline (last traffic +
//!   interval, as logged in `alarm_log`) each communication-lost alarm was raised.
//!
//! Record accounts are `E{index:07X}` (8 hex digits): they never collide with the
//! `F{conn}{idx}` accounts of the throughput runs, so both sets can be imported together.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};

use super::{BenchArgs, BenchError, BenchEvent, EventKind, Latency, latency};
use crate::protocol::frame::{DecodeOptions, Token, decode_frame};

/// Most record accounts (seven hex digits of index).
pub const MAX_RECORDS: u32 = 0x1000_0000;

/// The ARC-scale flags of `meldkamer bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct ArcArgs {
    /// Write a records file with customers, sites and supervised accounts (see --records,
    /// --first-record, --supervision-secs) for `meldkamer import`, then exit.
    #[arg(long, value_name = "FILE")]
    pub write_records: Option<PathBuf>,
    /// With --write-records: how many customers/sites/accounts.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub records: u32,
    /// Index of the first record account (`E{index:07X}`), for --write-records,
    /// --poll-accounts and --push-latency.
    #[arg(long, default_value_t = 0, value_name = "I")]
    pub first_record: u32,
    /// With --write-records: each account's reporting deadline, seconds.
    #[arg(long, default_value_t = 90, value_name = "S")]
    pub supervision_secs: u64,
    /// With --write-records: give every site a schedule ([`records_toml`]: Monday to
    /// Saturday, opens and closes spread over the minutes of the morning and evening).
    #[arg(long, requires = "write_records")]
    pub schedules: bool,
    /// Poll load: N record accounts send a NULL link test over UDP (TCP with --poll-tcp) every
    /// --poll-interval seconds, spread evenly, over --connections sockets, for --duration seconds.
    #[arg(long, value_name = "N", conflicts_with_all = ["write_records", "push_latency", "deadline_latency"])]
    pub poll_accounts: Option<u32>,
    /// With --poll-accounts: seconds between two polls of one account.
    #[arg(long, default_value_t = 90.0, value_name = "S")]
    pub poll_interval: f64,
    /// With --poll-accounts: poll over TCP (one persistent connection per --connections,
    /// as a communicator that keeps its line open) instead of UDP.
    #[arg(long, requires = "poll_accounts")]
    pub poll_tcp: bool,
    /// With --poll-accounts: spread the first round over this many seconds (default: one
    /// interval). A short warm-up makes every account report soon after the daemon starts.
    #[arg(long, value_name = "S")]
    pub poll_warmup: Option<f64>,
    /// Queue subscription latency against the operator API on this Unix socket: --alarms new
    /// alarms from record accounts at --rate per second (default 5), each measured from its
    /// ACK to the push that carries it.
    #[arg(long, value_name = "SOCKET", conflicts_with_all = ["write_records", "deadline_latency"])]
    pub push_latency: Option<PathBuf>,
    /// With --push-latency: the operator to log in as.
    #[arg(long, value_name = "NAME", default_value = "bench")]
    pub operator: String,
    /// With --push-latency: read the operator's password from the first line of stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// With --push-latency: how many alarms.
    #[arg(long, default_value_t = 300, value_name = "N")]
    pub alarms: u32,
    /// With --push-latency: close each alarm this many seconds after its push, in bulk once a
    /// second (disposition `test`), as an operator floor would, so that a long run keeps a
    /// steady queue. Needs a supervisor login (bulk close is a supervisor's).
    #[arg(long, value_name = "S", requires = "push_latency")]
    pub close_after: Option<f64>,
    /// Report how late each communication-lost alarm in this database was raised after its
    /// deadline (entries whose deadline is at or after --since-ms).
    #[arg(long, value_name = "DB", conflicts_with = "write_records")]
    pub deadline_latency: Option<PathBuf>,
    /// With --deadline-latency: only deadlines at or after this Unix time in ms.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub since_ms: i64,
}

impl ArcArgs {
    /// True if one of these modes was asked for.
    pub fn wanted(&self) -> bool {
        self.write_records.is_some()
            || self.poll_accounts.is_some()
            || self.push_latency.is_some()
            || self.deadline_latency.is_some()
    }
}

/// The account number of record `index`.
pub fn record_account(index: u32) -> String {
    format!("E{index:07X}")
}

/// The records file of `--write-records`: for each index, customer `BC{i}`, site `BS{i}` and
/// account [`record_account`] with `supervision_secs`; with `schedules` each site has a
/// schedule in Europe/Amsterdam, Monday to Saturday, opening at 06:00 + (i mod 240) minutes
/// and closing at 17:00 + (i mod 300) minutes with 15 minutes' grace, so that the edges of
/// 100,000 sites spread over the minutes of the morning and the evening (every minute from
/// 05:45 to 10:14 and from 16:45 to 22:14 is some site's edge); every fourth site is also
/// checked for late to open and early close.
pub fn records_toml(first: u32, n: u32, supervision_secs: u64, schedules: bool) -> String {
    let mut s = String::with_capacity(n as usize * 260);
    s.push_str(&format!(
        "# Generated by `meldkamer bench --write-records`: {n} synthetic customer(s), site(s) and \
         account(s)\n# from index {first}, each supervised every {supervision_secs} s. Import with \
         `meldkamer import FILE`.\n"
    ));
    let range = first..first.saturating_add(n);
    for i in range.clone() {
        s.push_str(&format!(
            "\n[[customer]]\nref = \"BC{i}\"\nname = \"Bench customer {i} (synthetic)\"\n"
        ));
    }
    for i in range.clone() {
        s.push_str(&format!(
            "\n[[site]]\nref = \"BS{i}\"\ncustomer = \"BC{i}\"\nname = \"Bench site {i}\"\n\
             address = \"Benchstraat {i}\"\ncity = \"Benchstad\"\n"
        ));
    }
    for i in range.clone() {
        s.push_str(&format!(
            "\n[[account]]\naccount = \"{}\"\nsite = \"BS{i}\"\nsupervision_secs = {supervision_secs}\n",
            record_account(i)
        ));
    }
    if schedules {
        for i in range {
            let (open, close) = (360 + i % 240, 1020 + i % 300);
            let strict = i % 4 == 0;
            s.push_str(&format!(
                "\n[[schedule]]\nsite = \"BS{i}\"\ntime_zone = \"Europe/Amsterdam\"\n\
                 late_to_open = {strict}\nearly_close = {strict}\n\
                 \n[[schedule_window]]\nsite = \"BS{i}\"\ndays = \"mon-sat\"\n\
                 open = \"{:02}:{:02}\"\nclose = \"{:02}:{:02}\"\ngrace = 15\n",
                open / 60,
                open % 60,
                close / 60,
                close % 60
            ));
        }
    }
    s
}

/// When account `i` of `n` sends its poll number `k`, counted from the start of the load: the
/// first round spread over `warmup`, then every `interval`, spread evenly over the accounts.
/// Two polls of one account are never more than `interval` apart (if `warmup <= interval`).
pub fn poll_due(i: u32, n: u32, k: u64, interval: Duration, warmup: Duration) -> Duration {
    let frac = f64::from(i) / f64::from(n.max(1));
    if k == 0 {
        warmup.mul_f64(frac)
    } else {
        warmup + interval.mul_f64(frac) + interval.mul_f64((k - 1) as f64)
    }
}

/// Result of a poll load.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct PollReport {
    /// Receiver.
    pub target: String,
    /// "udp" or "tcp".
    pub transport: &'static str,
    /// Accounts polling.
    pub accounts: u32,
    /// Seconds between two polls of an account.
    pub interval_s: f64,
    /// The first round's spread, seconds.
    pub warmup_s: f64,
    /// UDP sockets or TCP connections used.
    pub sockets: u32,
    /// TCP: connections lost and made again.
    pub reconnects: u64,
    /// Polls sent a second time (no answer within 2 s, as a panel retries).
    pub resent: u64,
    /// Polls sent.
    pub sent: u64,
    /// Answered ACK.
    pub acked: u64,
    /// Answered DUH (accounts not imported?).
    pub duh: u64,
    /// Answered NAK.
    pub nak: u64,
    /// No answer within the timeout, to the poll and to its one retransmission.
    pub unanswered: u64,
    /// Wall time, seconds.
    pub duration_s: f64,
    /// ACKed polls per second over the run.
    pub acked_per_s: f64,
    /// Send-to-ACK latency.
    pub latency: Latency,
    /// Start of the load, Unix ms.
    pub started_unix_ms: i64,
    /// The last poll sent, Unix ms.
    pub last_sent_unix_ms: i64,
}

/// Result of a push-latency run.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct PushReport {
    /// DC-09 receiver (TCP).
    pub target: String,
    /// Operator API socket.
    pub socket: String,
    /// Alarms sent.
    pub alarms: u32,
    /// Alarm frames ACKed.
    pub acked: u32,
    /// ACKed alarms that arrived in a push.
    pub pushed: u32,
    /// ACKed alarms never pushed (within 5 s of the last ACK).
    pub missing: u32,
    /// Pushes that arrived before the ACK did (counted as 0 in the latency).
    pub push_before_ack: u32,
    /// Alarms per second asked for.
    pub rate: f64,
    /// Push messages received.
    pub pushes: u64,
    /// Alarm summaries in them.
    pub summaries: u64,
    /// ACK-to-push latency.
    pub latency: Latency,
    /// Send-to-ACK latency of the alarm frames.
    pub ack_latency: Latency,
    /// Every push of a communication-lost alarm: (account, Unix ms when it arrived), to match
    /// against the deadlines in the alarm log (when did an operator see a missed deadline?).
    pub comm_lost_pushes: Vec<(String, i64)>,
    /// With --close-after: alarms closed, skipped (not closable in bulk) and bulk closes refused.
    pub closed: u64,
    /// See `closed`.
    pub close_skipped: u64,
    /// See `closed`.
    pub close_refused: u64,
}

/// Result of `--deadline-latency`.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct DeadlineReport {
    /// Database.
    pub db: String,
    /// `deadline_missed` entries considered.
    pub missed: u64,
    /// Of those, the ones that opened their alarm (the rest joined an open one).
    pub opened: u64,
    /// Raised minus deadline, microseconds (the log is in ms).
    pub latency: Latency,
    /// Earliest and latest deadline considered, Unix ms.
    pub first_deadline_ms: Option<i64>,
    /// Latest deadline considered.
    pub last_deadline_ms: Option<i64>,
}

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn default_seed() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn write_err(source: std::io::Error) -> BenchError {
    BenchError::Write {
        what: "the report".into(),
        source,
    }
}

/// Run one of the ARC-scale modes (the caller checked [`ArcArgs::wanted`]).
pub fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    let a = &args.arc;
    if args.threads.is_some() {
        return Err(BenchError::Args(
            "--threads is for the event loads and --idle; the ARC modes run a worker per core".into(),
        ));
    }
    if let Some(path) = &a.write_records {
        if a.records == 0 || u64::from(a.first_record) + u64::from(a.records) > u64::from(MAX_RECORDS) {
            return Err(BenchError::Args(format!(
                "--first-record + --records must be 1…{MAX_RECORDS}"
            )));
        }
        if a.supervision_secs == 0 {
            return Err(BenchError::Args("--supervision-secs must be at least 1".into()));
        }
        std::fs::write(
            path,
            records_toml(a.first_record, a.records, a.supervision_secs, a.schedules),
        )
        .map_err(|source| BenchError::Write {
            what: path.display().to_string(),
            source,
        })?;
        writeln!(
            out,
            "wrote {} customer(s), site(s){} and account(s) ({} … {}, supervision {} s) to {}",
            a.records,
            if a.schedules { " with schedules" } else { "" },
            record_account(a.first_record),
            record_account(a.first_record + a.records - 1),
            a.supervision_secs,
            path.display()
        )
        .map_err(write_err)?;
        return Ok(());
    }
    if let Some(db) = &a.deadline_latency {
        let r = deadline_latency(db, a.since_ms).map_err(|e| BenchError::Args(format!("{}: {e}", db.display())))?;
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&r)?).map_err(write_err)?;
        } else {
            let l = &r.latency;
            writeln!(
                out,
                "deadlines   {} missed deadline(s) in {} ({} opened an alarm)\nlate by     p50 {} ms  p99 {} ms  max {} ms  mean {} ms",
                r.missed,
                r.db,
                r.opened,
                l.p50_us / 1000,
                l.p99_us / 1000,
                l.max_us / 1000,
                l.mean_us / 1000
            )
            .map_err(write_err)?;
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench")
        .build()
        .map_err(BenchError::Runtime)?;
    if let Some(n) = a.poll_accounts {
        if n == 0 || u64::from(a.first_record) + u64::from(n) > u64::from(MAX_RECORDS) {
            return Err(BenchError::Args("--poll-accounts must be at least 1".into()));
        }
        let warmup = a.poll_warmup.unwrap_or(a.poll_interval);
        if !(a.poll_interval.is_finite() && a.poll_interval > 0.0 && warmup.is_finite() && warmup >= 0.0) {
            return Err(BenchError::Args(
                "--poll-interval must be positive and --poll-warmup not negative".into(),
            ));
        }
        let r = rt.block_on(poll_load(args, n, warmup));
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&r)?).map_err(write_err)?;
        } else {
            writeln!(
                out,
                "polls       {} account(s) every {} s (first round over {} s), {} {} socket(s) to {}\n\
                 sent        {} sent, {} sent again, {} ACKed, DUH {}, NAK {}, unanswered {}\n\
                 rate        {:.0} ACKed polls/s over {:.1} s\n\
                 latency     p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
                r.accounts,
                r.interval_s,
                r.warmup_s,
                r.sockets,
                r.transport,
                r.target,
                r.sent,
                r.resent,
                r.acked,
                r.duh,
                r.nak,
                r.unanswered,
                r.acked_per_s,
                r.duration_s,
                r.latency.p50_us as f64 / 1000.0,
                r.latency.p99_us as f64 / 1000.0,
                r.latency.max_us as f64 / 1000.0
            )
            .map_err(write_err)?;
        }
        return Ok(());
    }
    if let Some(socket) = &a.push_latency {
        if a.alarms == 0 || u64::from(a.first_record) + u64::from(a.alarms) > u64::from(MAX_RECORDS) {
            return Err(BenchError::Args("--alarms must be at least 1".into()));
        }
        let password = if a.password_stdin {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| BenchError::Args(format!("reading the password: {e}")))?;
            line.trim_end_matches(['\n', '\r']).to_string()
        } else {
            rpassword::prompt_password("Password: ")
                .map_err(|e| BenchError::Args(format!("reading the password: {e}")))?
        };
        let rate = args.rate.unwrap_or(5.0);
        if !(rate.is_finite() && rate > 0.0) {
            return Err(BenchError::Args("--rate must be a positive number".into()));
        }
        let r = rt
            .block_on(push_latency(args, socket, &password, rate))
            .map_err(BenchError::Args)?;
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&r)?).map_err(write_err)?;
        } else {
            let ms = |us: u64| us as f64 / 1000.0;
            writeln!(
                out,
                "push        {} alarm(s) at {}/s: {} ACKed, {} pushed, {} missing ({} pushed before the ACK)\n\
                 ACK→push    p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n\
                 send→ACK    p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n\
                 pushes      {} push message(s) with {} alarm summaries\n\
                 closed      {} in bulk, {} skipped, {} bulk close(s) refused",
                r.alarms,
                r.rate,
                r.acked,
                r.pushed,
                r.missing,
                r.push_before_ack,
                ms(r.latency.p50_us),
                ms(r.latency.p90_us),
                ms(r.latency.p99_us),
                ms(r.latency.max_us),
                ms(r.ack_latency.p50_us),
                ms(r.ack_latency.p99_us),
                ms(r.ack_latency.max_us),
                r.pushes,
                r.summaries,
                r.closed,
                r.close_skipped,
                r.close_refused
            )
            .map_err(write_err)?;
        }
    }
    Ok(())
}

fn us_since(t: Instant) -> u32 {
    t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32
}

/// The (account, sequence number) an ACK/DUH answers; `None` for a NAK or garbage.
fn answer_of(raw: &[u8]) -> Option<(Token, Option<(String, u16)>)> {
    let f = decode_frame(raw, &DecodeOptions::default()).ok()?;
    let who = f.account.number().map(|a| (a.to_string(), f.seq));
    Some((f.token, who))
}

#[derive(Default)]
struct PollStats {
    sent: u64,
    acked: u64,
    duh: u64,
    nak: u64,
    unanswered: u64,
    resent: u64,
    reconnects: u64,
    latencies_us: Vec<u32>,
    last_sent: Option<Instant>,
}

/// A poll socket's line to the receiver: a connected UDP socket, or a TCP connection with the
/// bytes read that do not yet make a whole answer.
enum PollLine {
    Udp(UdpSocket),
    Tcp(TcpStream, Vec<u8>),
}

impl PollLine {
    async fn open(target: SocketAddr, tcp: bool) -> std::io::Result<Self> {
        if tcp {
            let s = TcpStream::connect(target).await?;
            s.set_nodelay(true)?;
            return Ok(Self::Tcp(s, Vec::with_capacity(4096)));
        }
        let bind: SocketAddr = if target.is_ipv4() {
            ([127, 0, 0, 1], 0).into()
        } else {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        };
        let sock = UdpSocket::bind(bind).await?;
        sock.connect(target).await?;
        Ok(Self::Udp(sock))
    }

    async fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Udp(s) => s.send(frame).await.map(drop),
            Self::Tcp(s, _) => s.write_all(frame).await,
        }
    }

    /// The next answer frame (cancel-safe: a partial TCP answer stays in the buffer).
    async fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Udp(s) => {
                let n = s.recv(buf).await?;
                Ok(buf[..n].to_vec())
            }
            Self::Tcp(s, pending) => loop {
                if let Some(end) = pending.iter().position(|b| *b == b'\r') {
                    let f: Vec<u8> = pending.drain(..=end).collect();
                    let start = f.iter().position(|b| *b == b'\n').unwrap_or(0);
                    return Ok(f[start..].to_vec());
                }
                if s.read_buf(pending).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            },
        }
    }
}

/// The schedule shared by the poll sockets.
#[derive(Debug, Clone, Copy)]
struct PollPlan {
    target: SocketAddr,
    sockets: u32,
    first: u32,
    n: u32,
    interval: Duration,
    warmup: Duration,
    started: Instant,
    end: Duration,
    seed: u64,
    tcp: bool,
}

/// One UDP socket (or TCP connection) of the poll load: accounts `sock_index`, `sock_index + sockets`, ….
async fn poll_socket(plan: PollPlan, sock_index: u32) -> PollStats {
    let PollPlan {
        target,
        sockets,
        first,
        n,
        interval,
        warmup,
        started,
        end,
        seed,
        tcp,
    } = plan;
    let mut st = PollStats::default();
    let Ok(mut line) = PollLine::open(target, tcp).await else {
        return st;
    };
    let timeout = Duration::from_secs(2);
    // Sent, not yet answered: (first sent, last sent, the frame while it may be sent again).
    let mut outstanding: HashMap<(String, u16), (Instant, Instant, Option<Vec<u8>>)> = HashMap::new();
    let mut buf = vec![0u8; 4200];
    let mut k: u64 = 0;
    let mut i = sock_index;
    let mut next = Some((i, k));
    loop {
        let due = next.map(|(i, k)| started + poll_due(i, n, k, interval, warmup));
        if due.is_none() && outstanding.is_empty() {
            break;
        }
        let wake = due.unwrap_or_else(|| Instant::now() + timeout);
        tokio::select! {
            r = line.recv(&mut buf) => {
                let answer = match r {
                    Ok(a) => a,
                    Err(_) if tcp => {
                        // The connection is gone: what was outstanding on it is unanswered.
                        st.unanswered += outstanding.len() as u64;
                        outstanding.clear();
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        match PollLine::open(target, tcp).await {
                            Ok(l) => { line = l; st.reconnects += 1; }
                            Err(_) => break,
                        }
                        continue;
                    }
                    Err(_) => continue,
                };
                match answer_of(&answer) {
                    Some((Token::Ack, Some(who))) => {
                        if let Some((t, _, _)) = outstanding.remove(&who) {
                            st.acked += 1;
                            st.latencies_us.push(us_since(t));
                        }
                    }
                    Some((Token::Duh, Some(who))) if outstanding.remove(&who).is_some() => st.duh += 1,
                    Some((Token::Nak, _)) => st.nak += 1,
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                // No answer in time: send it once more with the same sequence number, as a
                // panel does (the receiver answers a retransmission without counting it
                // again); no answer to that either: unanswered.
                let mut again = Vec::new();
                outstanding.retain(|_, (_, at, frame)| {
                    if now.duration_since(*at) < timeout {
                        return true;
                    }
                    match frame.take() {
                        Some(f) => {
                            again.push(f);
                            *at = now;
                            true
                        }
                        None => {
                            st.unanswered += 1;
                            false
                        }
                    }
                });
                for f in again {
                    if line.send(&f).await.is_ok() {
                        st.resent += 1;
                    }
                }
                let Some((pi, pk)) = next else {
                    // Draining: the loop ends once every poll is answered or twice overdue.
                    continue;
                };
                if now < wake {
                    continue;
                }
                let account = first + pi;
                let ev = BenchEvent {
                    account: record_account(account),
                    seq: ((seed.wrapping_add(u64::from(account)).wrapping_add(pk)) % 9999 + 1) as u16,
                    kind: EventKind::Poll,
                    data: String::new(),
                };
                let frame = ev.encode(None, time::OffsetDateTime::now_utc(), 0);
                if line.send(&frame).await.is_ok() {
                    st.sent += 1;
                    let t = Instant::now();
                    st.last_sent = Some(t);
                    outstanding.insert((ev.account, ev.seq), (t, t, Some(frame)));
                }
                // The next account of this socket; a new round after the last one.
                i = pi + sockets;
                k = pk;
                if i >= n {
                    i = sock_index;
                    k += 1;
                }
                let d = poll_due(i, n, k, interval, warmup);
                next = (i < n && d < end).then_some((i, k));
            }
        }
    }
    st
}

async fn poll_load(args: &BenchArgs, n: u32, warmup_s: f64) -> PollReport {
    let a = &args.arc;
    let sockets = args.connections.clamp(1, n);
    let interval = Duration::from_secs_f64(a.poll_interval);
    let warmup = Duration::from_secs_f64(warmup_s.min(a.poll_interval));
    let end = Duration::from_secs_f64(args.duration.unwrap_or(10.0));
    let seed = args.seed.unwrap_or_else(default_seed);
    let started = Instant::now();
    let started_unix_ms = unix_ms_now();
    let plan = PollPlan {
        target: args.target,
        sockets,
        first: a.first_record,
        n,
        interval,
        warmup,
        started,
        end,
        seed,
        tcp: a.poll_tcp,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..sockets {
        tasks.spawn(poll_socket(plan, s));
    }
    let mut all = PollStats::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(s) = r {
            all.sent += s.sent;
            all.acked += s.acked;
            all.duh += s.duh;
            all.nak += s.nak;
            all.unanswered += s.unanswered;
            all.resent += s.resent;
            all.reconnects += s.reconnects;
            all.latencies_us.extend(s.latencies_us);
            all.last_sent = all.last_sent.max(s.last_sent);
        }
    }
    let duration_s = end.as_secs_f64().min(started.elapsed().as_secs_f64());
    PollReport {
        target: args.target.to_string(),
        transport: if a.poll_tcp { "tcp" } else { "udp" },
        accounts: n,
        interval_s: a.poll_interval,
        warmup_s: warmup.as_secs_f64(),
        sockets,
        reconnects: all.reconnects,
        resent: all.resent,
        sent: all.sent,
        acked: all.acked,
        duh: all.duh,
        nak: all.nak,
        unanswered: all.unanswered,
        duration_s,
        acked_per_s: if duration_s > 0.0 {
            all.acked as f64 / duration_s
        } else {
            0.0
        },
        latency: latency(all.latencies_us),
        started_unix_ms,
        last_sent_unix_ms: all
            .last_sent
            .map_or(0, |t| started_unix_ms + t.duration_since(started).as_millis() as i64),
    }
}

/// One line of the operator API, as JSON.
async fn api_call<R, W>(
    lines: &mut tokio::io::Lines<BufReader<R>>,
    w: &mut W,
    req: serde_json::Value,
) -> Result<serde_json::Value, String>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let id = req.get("id").cloned();
    w.write_all(format!("{req}\n").as_bytes())
        .await
        .map_err(|e| format!("operator API: {e}"))?;
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .map_err(|_| "operator API: no answer in 10 s".to_string())?
            .map_err(|e| format!("operator API: {e}"))?
            .ok_or("operator API closed the connection")?;
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("operator API: {e}"))?;
        if v.get("id") != id.as_ref() {
            continue;
        }
        if v.get("ok") != Some(&serde_json::Value::Bool(true)) {
            return Err(format!("operator API refused {}: {}", req["op"], v["error"]));
        }
        return Ok(v["result"].clone());
    }
}

/// Pushes seen: account → first time an alarm of it was in a push.
#[derive(Default)]
struct Seen {
    first: HashMap<String, Instant>,
    /// Alarm ids in the order of their first push, for --close-after.
    to_close: std::collections::VecDeque<(String, Instant)>,
    /// Answers to the bulk closes: alarms closed, alarms skipped, requests refused.
    closed: u64,
    close_skipped: u64,
    close_refused: u64,
    comm_lost: Vec<(String, i64)>,
    pushes: u64,
    summaries: u64,
}

/// Request ids of the bulk closes (--close-after), above those of the other calls.
const CLOSE_ID_BASE: u64 = 1_000_000;

/// Alarms closed by one `bulk_close` at most (the API takes 1 to 500).
const CLOSE_BATCH: usize = 500;

/// Note the accounts of one API line if it is a queue push.
fn note_push(seen: &mut Seen, line: &str, at: Instant, at_unix_ms: i64) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return;
    };
    if v.get("id").and_then(|i| i.as_u64()).is_some_and(|i| i >= CLOSE_ID_BASE) {
        if v.get("ok") == Some(&serde_json::Value::Bool(true)) {
            let r = &v["result"];
            seen.closed += r["done"].as_array().map_or(0, |a| a.len() as u64);
            seen.close_skipped += r["skipped"].as_array().map_or(0, |a| a.len() as u64);
        } else {
            seen.close_refused += 1;
        }
        return;
    }
    if v.get("push").and_then(|p| p.as_str()) != Some("queue") {
        return;
    }
    seen.pushes += 1;
    for a in v["changed"].as_array().into_iter().flatten() {
        seen.summaries += 1;
        if let Some(acct) = a.get("account").and_then(|x| x.as_str()) {
            if !seen.first.contains_key(acct)
                && let Some(id) = a.get("id").and_then(|x| x.as_str())
            {
                seen.to_close.push_back((id.to_string(), at));
            }
            seen.first.entry(acct.to_string()).or_insert(at);
            let title = a.get("title").and_then(|x| x.as_str()).unwrap_or("");
            if title.starts_with("Communication lost") {
                seen.comm_lost.push((acct.to_string(), at_unix_ms));
            }
        }
    }
}

#[cfg(unix)]
async fn push_latency(args: &BenchArgs, socket: &Path, password: &str, rate: f64) -> Result<PushReport, String> {
    let a = &args.arc;
    let api = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let (r, mut w) = api.into_split();
    let mut lines = BufReader::new(r).lines();
    let login = api_call(
        &mut lines,
        &mut w,
        serde_json::json!({"id": 1, "op": "login", "name": a.operator, "password": password}),
    )
    .await?;
    let token = login["token"].as_str().ok_or("login gave no token")?.to_string();
    api_call(
        &mut lines,
        &mut w,
        serde_json::json!({"id": 2, "token": token, "op": "subscribe"}),
    )
    .await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let at = Instant::now();
                note_push(
                    &mut seen.lock().unwrap_or_else(|p| p.into_inner()),
                    &line,
                    at,
                    unix_ms_now(),
                );
            }
        })
    };
    let closer = a.close_after.map(|after| {
        let (seen, token) = (seen.clone(), token.clone());
        let after = Duration::from_secs_f64(after.max(0.0));
        tokio::spawn(async move {
            let mut n = CLOSE_ID_BASE;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let ids: Vec<String> = {
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    let now = Instant::now();
                    let mut ids = Vec::new();
                    while ids.len() < CLOSE_BATCH
                        && s.to_close
                            .front()
                            .is_some_and(|(_, at)| now.duration_since(*at) >= after)
                    {
                        ids.extend(s.to_close.pop_front().map(|(id, _)| id));
                    }
                    ids
                };
                if ids.is_empty() {
                    continue;
                }
                n += 1;
                let req = serde_json::json!({"id": n, "token": token, "op": "bulk_close", "alarms": ids,
                    "disposition": "test", "reason": "bench: closed by the load generator"});
                if w.write_all(format!("{req}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        })
    });
    let mut tcp = TcpStream::connect(args.target)
        .await
        .map_err(|e| format!("{}: {e}", args.target))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let seed = args.seed.unwrap_or_else(default_seed);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut acks: Vec<(String, Instant)> = Vec::new();
    let mut ack_us = Vec::new();
    let mut buf = Vec::with_capacity(512);
    for k in 0..a.alarms {
        tokio::time::sleep_until((started + interval.mul_f64(f64::from(k))).into()).await;
        let account = record_account(a.first_record + k);
        let ev = BenchEvent {
            data: format!("#{account}|Nri1/BA001"),
            account,
            seq: ((seed.wrapping_add(u64::from(k))) % 9999 + 1) as u16,
            kind: EventKind::Alarm,
        };
        let frame = ev.encode(None, time::OffsetDateTime::now_utc(), 0);
        let sent = Instant::now();
        tcp.write_all(&frame).await.map_err(|e| format!("DC-09: {e}"))?;
        let acked = loop {
            if let Some(end) = buf.iter().position(|b| *b == b'\r') {
                let f: Vec<u8> = buf.drain(..=end).collect();
                let start = f.iter().position(|b| *b == b'\n').unwrap_or(0);
                match answer_of(&f[start..]) {
                    Some((Token::Ack, Some(who))) if who == (ev.account.clone(), ev.seq) => break true,
                    Some((Token::Ack, _)) => continue,
                    _ => break false,
                }
            }
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read_buf(&mut buf))
                .await
                .map_err(|_| "DC-09: no answer in 5 s".to_string())?
                .map_err(|e| format!("DC-09: {e}"))?;
            if n == 0 {
                return Err("DC-09: connection closed".into());
            }
        };
        if acked {
            acks.push((ev.account, Instant::now()));
            ack_us.push(us_since(sent));
        }
    }
    // Wait for the last pushes (at most 5 s).
    let wait_until = Instant::now() + Duration::from_secs(5);
    loop {
        let all = {
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            acks.iter().all(|(acct, _)| s.first.contains_key(acct))
        };
        if all || Instant::now() >= wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(c) = closer {
        c.abort();
    }
    reader.abort();
    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
    let mut lat = Vec::new();
    let mut before = 0u32;
    for (acct, t_ack) in &acks {
        if let Some(t_push) = s.first.get(acct) {
            if t_push < t_ack {
                before += 1;
                lat.push(0);
            } else {
                lat.push(t_push.duration_since(*t_ack).as_micros().min(u128::from(u32::MAX)) as u32);
            }
        }
    }
    Ok(PushReport {
        target: args.target.to_string(),
        socket: socket.display().to_string(),
        alarms: a.alarms,
        acked: acks.len() as u32,
        pushed: lat.len() as u32,
        missing: (acks.len() - lat.len()) as u32,
        push_before_ack: before,
        rate,
        pushes: s.pushes,
        summaries: s.summaries,
        latency: latency(lat),
        ack_latency: latency(ack_us),
        comm_lost_pushes: s.comm_lost.clone(),
        closed: s.closed,
        close_skipped: s.close_skipped,
        close_refused: s.close_refused,
    })
}

#[cfg(not(unix))]
async fn push_latency(_: &BenchArgs, _: &Path, _: &str, _: f64) -> Result<PushReport, String> {
    Err("--push-latency needs a Unix socket".into())
}

/// The deadline in a `deadline_missed` log entry ("no valid message since the deadline
/// 2026-01-15T12:00:00.000Z"), Unix ms.
pub fn deadline_of(detail: &str) -> Option<i64> {
    let text = detail.rsplit(' ').next()?;
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// How late each communication-lost alarm was raised after its deadline.
pub fn deadline_latency(db: &Path, since_ms: i64) -> Result<DeadlineReport, crate::store::StoreError> {
    let conn = crate::store::open_read(db, Duration::from_secs(5))?;
    let mut stmt = conn.prepare(
        "SELECT l.at_ms, l.detail, a.opened_ms FROM alarm_log l JOIN alarms a ON a.id = l.alarm_id
         WHERE l.action = 'deadline_missed'",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
    })?;
    let mut report = DeadlineReport {
        db: db.display().to_string(),
        ..DeadlineReport::default()
    };
    let mut late = Vec::new();
    for row in rows {
        let (at, detail, opened) = row?;
        let Some(deadline) = deadline_of(&detail) else {
            continue;
        };
        if deadline < since_ms {
            continue;
        }
        report.missed += 1;
        report.opened += u64::from(opened == at);
        report.first_deadline_ms = Some(report.first_deadline_ms.map_or(deadline, |d| d.min(deadline)));
        report.last_deadline_ms = Some(report.last_deadline_ms.map_or(deadline, |d| d.max(deadline)));
        late.push(((at - deadline).max(0) * 1000).min(i64::from(u32::MAX)) as u32);
    }
    report.latency = latency(late);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--write-records --schedules` and `--write-accounts --at-record-sites`: every site with
    /// a schedule, the edges spread over the minutes, the load's accounts at those sites.
    #[test]
    fn records_with_schedules_and_load_accounts_at_their_sites_import() {
        let r = crate::records::parse_toml(&records_toml(0, 300, 90, true), "bench").expect("valid");
        let mut conn = rusqlite::Connection::open_in_memory().expect("db");
        crate::store::schema::migrate(&conn).expect("schema");
        let report = crate::records::apply(&mut conn, &r, &crate::store::sealed::test_key()).expect("import");
        assert_eq!((report.sites, report.schedules, report.windows), (300, 300, 300));
        let distinct = |col: &str| -> i64 {
            conn.query_row(
                &format!("SELECT count(DISTINCT {col}) FROM schedule_windows"),
                [],
                |r| r.get(0),
            )
            .expect("count")
        };
        assert_eq!((distinct("open_min"), distinct("close_min")), (240, 300));
        let strict: i64 = conn
            .query_row(
                "SELECT count(*) FROM schedules WHERE late_to_open AND early_close",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(strict, 75);
        let load = crate::loadgen::accounts_toml_at(4, 5, false, true);
        let load = crate::records::parse_toml(&load, "load").expect("valid");
        crate::records::apply(&mut conn, &load, &crate::store::sealed::test_key()).expect("load accounts");
        let at: String = conn
            .query_row(
                "SELECT s.ref FROM accounts a JOIN sites s ON s.id = a.site_id WHERE a.account = ?1",
                [crate::loadgen::account_name(3, 4)],
                |r| r.get(0),
            )
            .expect("the last load account has a site");
        assert_eq!(at, "BS19");
        let none = crate::records::parse_toml(&records_toml(0, 3, 90, false), "bench").expect("valid");
        assert!(none.schedules.is_empty());
    }

    #[test]
    fn records_file_imports_with_sites_and_supervision() {
        let text = records_toml(7, 5, 90, false);
        let r = crate::records::parse_toml(&text, "bench").expect("valid records file");
        assert_eq!((r.customers.len(), r.sites.len(), r.accounts.len()), (5, 5, 5));
        for a in &r.accounts {
            assert_eq!(a.spec.supervision_secs, Some(90));
            assert!(a.spec.key.is_none());
            assert!(a.site.is_some());
        }
        let names: Vec<_> = r.accounts.iter().map(|a| a.spec.account.clone()).collect();
        assert_eq!(names.first().map(String::as_str), Some("E0000007"));
        assert_eq!(names.last().map(String::as_str), Some("E000000B"));
        let mut conn = rusqlite::Connection::open_in_memory().expect("db");
        crate::store::schema::migrate(&conn).expect("schema");
        let report = crate::records::apply(&mut conn, &r, &crate::store::sealed::test_key()).expect("import");
        assert_eq!((report.customers, report.sites, report.accounts), (5, 5, 5));
        let t = crate::store::accounts::load(&conn, &crate::store::sealed::test_key()).expect("load");
        assert!(t.lookup("E0000009", Some("1"), "1").is_some());
        let supervised: i64 = conn
            .query_row(
                "SELECT count(*) FROM accounts WHERE supervision_secs = 90 AND site_id IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(supervised, 5);
    }

    #[test]
    fn record_accounts_are_valid_and_distinct_from_throughput_accounts() {
        for i in [0, 1, MAX_RECORDS - 1] {
            let a = record_account(i);
            assert_eq!(a.len(), 8);
            assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_ne!(a.len(), super::super::account_name(0, 0).len());
        }
        assert_eq!(record_account(100_000), "E00186A0");
    }

    #[test]
    fn polls_are_spread_evenly_and_never_further_apart_than_the_interval() {
        let n = 1000;
        let interval = Duration::from_secs(90);
        for warmup in [Duration::ZERO, Duration::from_secs(20), interval] {
            // Every account: gaps between its polls are at most one interval; from the second
            // round on exactly one interval.
            for i in [0, 1, 499, 999] {
                let d: Vec<_> = (0..4).map(|k| poll_due(i, n, k, interval, warmup)).collect();
                assert!(d[0] <= warmup);
                assert!(d[1] - d[0] <= interval, "{i} {warmup:?}");
                assert_eq!(d[2] - d[1], interval);
                assert_eq!(d[3] - d[2], interval);
            }
            // A steady round sends n polls spread over one interval: n / interval per second.
            let round: Vec<_> = (0..n).map(|i| poll_due(i, n, 2, interval, warmup)).collect();
            assert!(round.windows(2).all(|w| w[0] < w[1]));
            let span = round[n as usize - 1] - round[0];
            assert!(span < interval && span > interval.mul_f64(0.99));
        }
    }

    #[test]
    fn a_poll_frame_is_a_link_test_for_a_record_account() {
        let ev = BenchEvent {
            account: record_account(42),
            seq: 17,
            kind: EventKind::Poll,
            data: String::new(),
        };
        let raw = ev.encode(None, time::macros::datetime!(2026-01-15 12:00:00 UTC), 0);
        let f = decode_frame(&raw, &DecodeOptions::default()).expect("decodes");
        assert_eq!(f.token, Token::Null);
        assert_eq!(f.account.number(), Some("E000002A"));
        // An ACK to it is recognised as answering (account, seq).
        let ack = crate::protocol::response::ack_plain(&f).encode();
        assert_eq!(answer_of(&ack), Some((Token::Ack, Some(("E000002A".to_string(), 17)))));
    }

    #[test]
    fn pushes_are_noted_once_per_account() {
        let mut s = Seen::default();
        let t0 = Instant::now();
        note_push(
            &mut s,
            r#"{"push":"queue","changed":[{"account":"E0000001","title":"x"}]}"#,
            t0,
            1,
        );
        let t1 = t0 + Duration::from_millis(5);
        note_push(
            &mut s,
            r#"{"push":"queue","changed":[{"account":"E0000001"},{"account":"E0000002","title":"Communication lost: account E0000002 (primary path)"}]}"#,
            t1,
            2,
        );
        note_push(&mut s, r#"{"id":3,"ok":true,"result":{}}"#, t1, 3);
        note_push(&mut s, "not json", t1, 4);
        assert_eq!((s.pushes, s.summaries), (2, 3));
        assert_eq!(s.comm_lost, vec![("E0000002".to_string(), 2)]);
        assert_eq!(s.first.get("E0000001"), Some(&t0));
        assert_eq!(s.first.get("E0000002"), Some(&t1));
    }

    #[test]
    fn deadline_latency_reads_the_alarm_log() {
        assert_eq!(
            deadline_of("no valid message since the deadline 2026-01-15T12:00:00.250Z"),
            Some(1_768_478_400_250)
        );
        assert_eq!(deadline_of("something else"), None);
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("d.db");
        let mut conn = crate::store::open_write(&db, Duration::from_secs(1)).expect("db");
        let records = crate::records::parse_toml(&records_toml(0, 3, 5, false), "bench").expect("records");
        crate::records::apply(&mut conn, &records, &crate::store::sealed::test_key()).expect("import");
        let d = 1_768_478_400_000i64;
        let tx = conn.transaction().expect("tx");
        let ids: Vec<i64> = tx
            .prepare("SELECT id FROM accounts ORDER BY id")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("ids");
        for (id, late) in ids.iter().zip([120, 480, 900]) {
            // What supervision writes when a deadline is missed, `late` ms after it.
            crate::correlate::supervision::communication_lost(&tx, *id, d, d + late).expect("lost");
        }
        tx.commit().expect("commit");
        let r = deadline_latency(&db, 0).expect("report");
        assert_eq!((r.missed, r.opened), (3, 3));
        assert_eq!((r.latency.p50_us, r.latency.max_us), (480_000, 900_000));
        assert_eq!(deadline_latency(&db, d + 1).expect("report").missed, 0);
    }
}
