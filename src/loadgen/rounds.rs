//! Throughput as a ratio, measured in one run: `meldkamer bench --baseline ADDR [--compare
//! ADDR2] --rounds N` (flags in [`RoundsArgs`]).
//!
//! On two cores shared with the load generator, an absolute events/s figure cannot be told apart
//! from the generator's own cost and the machine's speed of the hour. So the same load runs, in
//! each round, against the daemon (`--target`), against an older daemon if given (`--compare`),
//! and against the no-op receiver (`--baseline`, [`super::noop`]), one after the other; the
//! order rotates from round to round, so that no receiver always runs first or last. Each
//! round gives the ratios target ÷ baseline, compare ÷ baseline and target ÷ compare, and the
//! report quotes the median of each ratio over the rounds (not a ratio of medians): a slow
//! stretch of the machine slows the runs of one round together and cancels out of its ratios.
//!
//! Each run draws its own start for the event counters (from `--seed` plus the run's index
//! times [`RUN_STRIDE`], or at random), so that a daemon never sees a later run's events as
//! retransmissions of an earlier one's.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::{BenchArgs, BenchError, LoadReport};

/// Rounds when `--rounds` is not given.
pub const DEFAULT_ROUNDS: u32 = 5;

/// Seconds to wait before each run when `--pause` is not given.
pub const DEFAULT_PAUSE_S: f64 = 1.0;

/// How far apart the `--seed`s of two runs are: room for 100,000 events per account in a run.
pub const RUN_STRIDE: u64 = 100_000;

/// The flags of the interleaved mode.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RoundsArgs {
    /// Interleaved rounds: the same load against --target, then against this receiver (the
    /// no-op receiver, see --noop-receiver), --rounds times; report the target's events/s as
    /// a ratio to it (the median of the rounds' ratios).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["write_accounts", "idle", "cid_ip", "noop_receiver"])]
    pub baseline: Option<SocketAddr>,
    /// With --baseline: a second daemon (say, the older commit), loaded in every round too;
    /// report its ratio to the baseline and the target's to it.
    #[arg(long, value_name = "ADDR", requires = "baseline")]
    pub compare: Option<SocketAddr>,
    /// With --baseline: how many rounds (default 5).
    #[arg(long, value_name = "N", requires = "baseline")]
    pub rounds: Option<u32>,
    /// With --baseline: seconds to wait before each run, for the receivers to settle
    /// (default 1).
    #[arg(long, value_name = "S", requires = "baseline")]
    pub pause: Option<f64>,
    /// With --compare: that daemon's PID, as --daemon-pid is the target's.
    #[arg(long, value_name = "PID", requires = "compare")]
    pub compare_pid: Option<u32>,
    /// With --compare: that daemon's metrics endpoint, as --metrics is the target's.
    #[arg(long, value_name = "ADDR", requires = "compare")]
    pub compare_metrics: Option<SocketAddr>,
    /// With --baseline: the no-op receiver's PID (its CPU time per event).
    #[arg(long, value_name = "PID", requires = "baseline")]
    pub baseline_pid: Option<u32>,
}

/// Which receiver a run loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `--target`: the daemon under test.
    Target,
    /// `--compare`: the daemon it is compared with.
    Compare,
    /// `--baseline`: the no-op receiver.
    Baseline,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Target => "target",
            Role::Compare => "compare",
            Role::Baseline => "baseline",
        }
    }
}

/// One receiver of the rounds: where it is and what is known of its process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Leg {
    role: Role,
    addr: SocketAddr,
    pid: Option<u32>,
    metrics: Option<SocketAddr>,
}

fn legs(args: &BenchArgs, baseline: SocketAddr) -> Vec<Leg> {
    let r = &args.rounds;
    let mut legs = vec![Leg {
        role: Role::Target,
        addr: args.target,
        pid: args.daemon_pid,
        metrics: args.metrics,
    }];
    if let Some(addr) = r.compare {
        legs.push(Leg {
            role: Role::Compare,
            addr,
            pid: r.compare_pid,
            metrics: r.compare_metrics,
        });
    }
    legs.push(Leg {
        role: Role::Baseline,
        addr: baseline,
        pid: r.baseline_pid,
        metrics: None,
    });
    legs
}

/// The order of the receivers in round `round` (from 0): rotated by one each round, so in
/// every `n` rounds each receiver runs once in each position.
fn order<T: Copy>(round: u32, items: &[T]) -> Vec<T> {
    let mut v = items.to_vec();
    if !v.is_empty() {
        let k = round as usize % v.len();
        v.rotate_left(k);
    }
    v
}

/// The arguments of one run: the common load against one receiver.
fn run_args(args: &BenchArgs, leg: &Leg, run_index: u32) -> BenchArgs {
    let mut a = args.clone();
    a.target = leg.addr;
    a.daemon_pid = leg.pid;
    a.metrics = leg.metrics;
    a.seed = args
        .seed
        .map(|s| s.wrapping_add(u64::from(run_index).wrapping_mul(RUN_STRIDE)));
    a
}

/// One run of the rounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Run {
    /// Round, from 1.
    pub round: u32,
    /// Which receiver.
    pub role: Role,
    /// The load generator's report of it.
    pub report: LoadReport,
}

impl Run {
    /// Every event ACKed, no timeout, retry, stray answer or connection error: a run whose
    /// throughput means what it says.
    pub fn clean(&self) -> bool {
        let r = &self.report;
        r.errors == 0 && r.timeouts == 0 && r.retries == 0 && r.mismatched == 0 && r.connection_errors == 0
    }
}

/// The figures of one round, or the medians over the rounds.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Figures {
    /// The round (from 1); 0 for the medians.
    pub round: u32,
    /// The target's ACKed events/s.
    pub target_events_per_s: f64,
    /// The compared daemon's.
    pub compare_events_per_s: Option<f64>,
    /// The baseline's (the no-op receiver's).
    pub baseline_events_per_s: f64,
    /// Target ÷ baseline: the figure BENCHMARKS.md quotes.
    pub target_to_baseline: Option<f64>,
    /// Compare ÷ baseline.
    pub compare_to_baseline: Option<f64>,
    /// Target ÷ compare: the new commit against the old, in one run.
    pub target_to_compare: Option<f64>,
    /// The target's 99th percentile ACK latency, µs.
    pub target_p99_us: u64,
    /// The compared daemon's.
    pub compare_p99_us: Option<u64>,
    /// The baseline's.
    pub baseline_p99_us: u64,
}

/// `a / b`, if `b` is not zero.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// The median (the mean of the middle two for an even count); `None` for no values.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The figures of each round (in round order) and their medians. Every ratio is taken within a
/// round; the median ratio is the median of those, not a ratio of medians.
pub fn summarise(runs: &[Run]) -> (Vec<Figures>, Figures) {
    let mut rounds: Vec<u32> = runs.iter().map(|r| r.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    let per_round: Vec<Figures> = rounds
        .iter()
        .map(|&round| {
            let of = |role| {
                runs.iter()
                    .find(|r| r.round == round && r.role == role)
                    .map(|r| &r.report)
            };
            let eps = |role| of(role).map(|r| r.events_per_s);
            let p99 = |role| of(role).map(|r| r.latency.p99_us);
            let (t, c, b) = (eps(Role::Target), eps(Role::Compare), eps(Role::Baseline));
            let both = |x: Option<f64>, y: Option<f64>| x.zip(y).and_then(|(x, y)| ratio(x, y));
            Figures {
                round,
                target_events_per_s: t.unwrap_or(0.0),
                compare_events_per_s: c,
                baseline_events_per_s: b.unwrap_or(0.0),
                target_to_baseline: both(t, b),
                compare_to_baseline: both(c, b),
                target_to_compare: both(t, c),
                target_p99_us: p99(Role::Target).unwrap_or(0),
                compare_p99_us: p99(Role::Compare),
                baseline_p99_us: p99(Role::Baseline).unwrap_or(0),
            }
        })
        .collect();
    let med = |f: &dyn Fn(&Figures) -> Option<f64>| median(per_round.iter().filter_map(f).collect());
    let med_us = |f: &dyn Fn(&Figures) -> Option<u64>| {
        median(per_round.iter().filter_map(f).map(|us| us as f64).collect()).map(|us| us.round() as u64)
    };
    let medians = Figures {
        round: 0,
        target_events_per_s: med(&|f| Some(f.target_events_per_s)).unwrap_or(0.0),
        compare_events_per_s: med(&|f| f.compare_events_per_s),
        baseline_events_per_s: med(&|f| Some(f.baseline_events_per_s)).unwrap_or(0.0),
        target_to_baseline: med(&|f| f.target_to_baseline),
        compare_to_baseline: med(&|f| f.compare_to_baseline),
        target_to_compare: med(&|f| f.target_to_compare),
        target_p99_us: med_us(&|f| Some(f.target_p99_us)).unwrap_or(0),
        compare_p99_us: med_us(&|f| f.compare_p99_us),
        baseline_p99_us: med_us(&|f| Some(f.baseline_p99_us)).unwrap_or(0),
    };
    (per_round, medians)
}

/// The result of the interleaved rounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoundsReport {
    /// The daemon under test.
    pub target: String,
    /// The daemon it is compared with.
    pub compare: Option<String>,
    /// The no-op receiver.
    pub baseline: String,
    /// Rounds run.
    pub rounds: u32,
    /// Seconds waited before each run.
    pub pause_s: f64,
    /// Every run, in the order they ran.
    pub runs: Vec<Run>,
    /// The figures of each round.
    pub per_round: Vec<Figures>,
    /// Their medians (`round` 0).
    pub median: Figures,
    /// Runs that were not clean (an event not ACKed, a timeout, a retry, a stray answer or a
    /// connection error): the ratios of their rounds are suspect.
    pub unclean_runs: u32,
}

/// Run the rounds on `rt`, telling `progress` (stderr) about each run as it ends.
pub(super) fn run(
    args: &BenchArgs,
    baseline: SocketAddr,
    rt: &tokio::runtime::Runtime,
    progress: &mut dyn Write,
) -> Result<RoundsReport, BenchError> {
    let r = &args.rounds;
    let rounds = r.rounds.unwrap_or(DEFAULT_ROUNDS);
    if rounds == 0 {
        return Err(BenchError::Args("--rounds must be at least 1".into()));
    }
    let pause_s = r.pause.unwrap_or(DEFAULT_PAUSE_S);
    if !(pause_s.is_finite() && pause_s >= 0.0) {
        return Err(BenchError::Args(
            "--pause must be zero or a positive number of seconds".into(),
        ));
    }
    let legs = legs(args, baseline);
    let mut runs = Vec::with_capacity(rounds as usize * legs.len());
    for round in 0..rounds {
        for leg in order(round, &legs) {
            let a = run_args(args, &leg, runs.len() as u32);
            let report = rt.block_on(async {
                tokio::time::sleep(Duration::from_secs_f64(pause_s)).await;
                super::load(&a).await
            });
            // Progress only: a failed write to stderr does not stop the measurement.
            let _ = writeln!(
                progress,
                "round {}/{rounds}  {:<8} {:<21} {:>9} events/s  p99 {}  errors {}",
                round + 1,
                leg.role.name(),
                leg.addr,
                thousands(report.events_per_s),
                super::ms(report.latency.p99_us),
                report.errors
            );
            runs.push(Run {
                round: round + 1,
                role: leg.role,
                report,
            });
        }
    }
    let (per_round, median) = summarise(&runs);
    Ok(RoundsReport {
        target: args.target.to_string(),
        compare: r.compare.map(|a| a.to_string()),
        baseline: baseline.to_string(),
        rounds,
        pause_s,
        unclean_runs: runs.iter().filter(|r| !r.clean()).count() as u32,
        runs,
        per_round,
        median,
    })
}

/// `45123.4` as `45,123`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut s = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            s.push(',');
        }
        s.push(c);
    }
    s
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{r:.3}"))
}

/// The text report.
pub fn write_rounds(r: &RoundsReport, out: &mut dyn Write) -> std::io::Result<()> {
    let compare = r.compare.is_some();
    let mut receivers = format!("target {}", r.target);
    if let Some(c) = &r.compare {
        receivers.push_str(&format!(", compare {c}"));
    }
    receivers.push_str(&format!(", baseline {}", r.baseline));
    writeln!(
        out,
        "rounds      {} round(s), the order rotating each round; {receivers}; {:.1} s pause before each run",
        r.rounds, r.pause_s
    )?;
    if let Some(first) = r.runs.first() {
        let l = &first.report;
        writeln!(
            out,
            "load        {} connection(s) x {} account(s) over {}, {}{}{}, {} generator thread(s), {}",
            l.connections,
            l.accounts_per_connection,
            l.transport,
            if l.encrypted { "AES-128" } else { "plain" },
            if l.mix { ", mixed events" } else { ", alarms" },
            l.rate
                .map_or(", closed loop".to_string(), |x| format!(", paced at {x} events/s")),
            l.threads,
            r.runs
                .iter()
                .find(|x| x.role == Role::Target)
                .map_or(String::new(), |x| format!("{:.1} s per run", x.report.duration_s)),
        )?;
    }
    let mut head = format!("{:<8}{:<26}{:>11}", "round", "order", "target/s");
    if compare {
        head.push_str(&format!("{:>11}", "compare/s"));
    }
    head.push_str(&format!("{:>12}{:>17}", "baseline/s", "target/baseline"));
    if compare {
        head.push_str(&format!("{:>18}{:>16}", "compare/baseline", "target/compare"));
    }
    writeln!(out, "{head}")?;
    let line = |label: String, order: String, f: &Figures| {
        let mut s = format!("{label:<8}{order:<26}{:>11}", thousands(f.target_events_per_s));
        if compare {
            s.push_str(&format!("{:>11}", thousands(f.compare_events_per_s.unwrap_or(0.0))));
        }
        s.push_str(&format!(
            "{:>12}{:>17}",
            thousands(f.baseline_events_per_s),
            ratio_text(f.target_to_baseline)
        ));
        if compare {
            s.push_str(&format!(
                "{:>18}{:>16}",
                ratio_text(f.compare_to_baseline),
                ratio_text(f.target_to_compare)
            ));
        }
        s
    };
    for f in &r.per_round {
        let order: Vec<&str> = r
            .runs
            .iter()
            .filter(|x| x.round == f.round)
            .map(|x| x.role.name())
            .collect();
        writeln!(out, "{}", line(f.round.to_string(), order.join(" "), f))?;
    }
    writeln!(out, "{}", line("median".into(), String::new(), &r.median))?;
    let m = &r.median;
    let mut p99 = format!("target {}", super::ms(m.target_p99_us));
    if let Some(us) = m.compare_p99_us {
        p99.push_str(&format!(", compare {}", super::ms(us)));
    }
    p99.push_str(&format!(", baseline {}", super::ms(m.baseline_p99_us)));
    writeln!(out, "p99         {p99} (medians of the rounds)")?;
    let cpu: Vec<String> = [Role::Target, Role::Compare, Role::Baseline]
        .into_iter()
        .filter_map(|role| {
            let of_role = || r.runs.iter().filter(move |x| x.role == role);
            let daemon = median(
                of_role()
                    .filter_map(|x| x.report.cpu_per_event.as_ref()?.daemon_us)
                    .collect(),
            )?;
            let generator = median(
                of_role()
                    .filter_map(|x| x.report.cpu_per_event.as_ref()?.generator_us)
                    .collect(),
            );
            Some(format!(
                "{} {daemon:.1} µs (generator {})",
                role.name(),
                generator.map_or("n/a".into(), |g| format!("{g:.1} µs"))
            ))
        })
        .collect();
    if !cpu.is_empty() {
        writeln!(out, "cpu/event   {} (medians of the rounds)", cpu.join(", "))?;
    }
    if r.unclean_runs == 0 {
        writeln!(
            out,
            "clean       every run: every event ACKed; no timeout, retry, stray answer or connection error"
        )?;
    } else {
        let which: Vec<String> = r
            .runs
            .iter()
            .filter(|x| !x.clean())
            .map(|x| {
                let l = &x.report;
                format!(
                    "round {} {} (errors {}, timeouts {}, retries {}, mismatched {}, connection errors {})",
                    x.round,
                    x.role.name(),
                    l.errors,
                    l.timeouts,
                    l.retries,
                    l.mismatched,
                    l.connection_errors
                )
            })
            .collect();
        writeln!(
            out,
            "NOT CLEAN   {} run(s): {}; the ratios of those rounds do not measure throughput alone",
            r.unclean_runs,
            which.join("; ")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(extra: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(["bench"].iter().chain(extra)).map(|c| c.bench)
    }

    fn ran(round: u32, role: Role, events_per_s: f64, p99_us: u64) -> Run {
        Run {
            round,
            role,
            report: LoadReport {
                events_per_s,
                latency: super::super::Latency {
                    p99_us,
                    ..Default::default()
                },
                ..LoadReport::default()
            },
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0]), Some(3.0));
        assert_eq!(median(vec![5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn the_order_rotates_so_each_receiver_runs_in_each_place() {
        let roles = [Role::Target, Role::Compare, Role::Baseline];
        assert_eq!(order(0, &roles), roles);
        assert_eq!(order(1, &roles), [Role::Compare, Role::Baseline, Role::Target]);
        assert_eq!(order(2, &roles), [Role::Baseline, Role::Target, Role::Compare]);
        assert_eq!(order(3, &roles), roles);
        for place in 0..3 {
            let mut seen: Vec<Role> = (0..3).map(|r| order(r, &roles)[place]).collect();
            seen.dedup();
            assert_eq!(seen.len(), 3, "place {place}: {seen:?}");
        }
        assert_eq!(
            order(1, &[Role::Target, Role::Baseline]),
            [Role::Baseline, Role::Target]
        );
    }

    #[test]
    fn ratios_are_taken_within_a_round_and_their_median_reported() {
        // Round 2 ran on a slow stretch: every receiver at half speed. Its ratios are those
        // of round 1; a ratio of the medians would not be.
        let runs = vec![
            ran(1, Role::Target, 40_000.0, 3_000),
            ran(1, Role::Compare, 50_000.0, 2_000),
            ran(1, Role::Baseline, 100_000.0, 500),
            ran(2, Role::Compare, 25_000.0, 4_000),
            ran(2, Role::Baseline, 50_000.0, 900),
            ran(2, Role::Target, 20_000.0, 6_000),
            ran(3, Role::Baseline, 80_000.0, 700),
            ran(3, Role::Target, 36_000.0, 3_500),
            ran(3, Role::Compare, 40_000.0, 2_500),
        ];
        let (per_round, m) = summarise(&runs);
        assert_eq!(per_round.len(), 3);
        let r2 = &per_round[1];
        assert_eq!(r2.round, 2);
        assert_eq!(r2.target_to_baseline, Some(0.4));
        assert_eq!(r2.compare_to_baseline, Some(0.5));
        assert_eq!(r2.target_to_compare, Some(0.8));
        assert_eq!(
            (r2.target_p99_us, r2.compare_p99_us, r2.baseline_p99_us),
            (6_000, Some(4_000), 900)
        );
        // Ratios 0.4 / 0.4 / 0.45 → 0.4; events/s medians per receiver.
        assert_eq!(m.round, 0);
        assert_eq!(m.target_to_baseline, Some(0.4));
        assert_eq!(m.compare_to_baseline, Some(0.5));
        assert_eq!(m.target_to_compare, Some(0.8));
        assert_eq!(m.target_events_per_s, 36_000.0);
        assert_eq!(m.baseline_events_per_s, 80_000.0);
        assert_eq!(m.target_p99_us, 3_500);
        // Without --compare there is no compare figure, and a baseline at 0 gives no ratio.
        let (per_round, m) = summarise(&[ran(1, Role::Target, 10.0, 1), ran(1, Role::Baseline, 0.0, 1)]);
        assert_eq!(per_round[0].compare_events_per_s, None);
        assert_eq!((m.target_to_baseline, m.target_to_compare), (None, None));
    }

    #[test]
    fn each_run_loads_its_receiver_with_its_own_seed() {
        let args = parse(&[
            "--target",
            "127.0.0.1:7000",
            "--daemon-pid",
            "11",
            "--metrics",
            "127.0.0.1:9464",
            "--baseline",
            "127.0.0.1:7100",
            "--compare",
            "127.0.0.1:7030",
            "--compare-pid",
            "22",
            "--baseline-pid",
            "33",
            "--seed",
            "5",
        ])
        .expect("args");
        let legs = legs(&args, args.rounds.baseline.expect("baseline"));
        let roles: Vec<Role> = legs.iter().map(|l| l.role).collect();
        assert_eq!(roles, [Role::Target, Role::Compare, Role::Baseline]);
        let a = run_args(&args, &legs[1], 4);
        assert_eq!(a.target, "127.0.0.1:7030".parse().expect("addr"));
        assert_eq!((a.daemon_pid, a.metrics), (Some(22), None));
        assert_eq!(a.seed, Some(5 + 4 * RUN_STRIDE));
        let a = run_args(&args, &legs[2], 0);
        assert_eq!((a.target, a.daemon_pid, a.seed), (legs[2].addr, Some(33), Some(5)));
        let a = run_args(&args, &legs[0], 1);
        assert_eq!(a.metrics, Some("127.0.0.1:9464".parse().expect("addr")));
        assert_eq!(a.daemon_pid, Some(11));
        // Without --seed every run draws its own start.
        let args = parse(&["--baseline", "127.0.0.1:7100"]).expect("args");
        assert_eq!(run_args(&args, &legs[0], 3).seed, None);
        assert_eq!(super::legs(&args, legs[2].addr).len(), 2, "no compare leg");
    }

    #[test]
    fn the_flags_that_need_a_baseline_say_so() {
        for extra in [
            &["--compare", "127.0.0.1:7030"][..],
            &["--rounds", "3"],
            &["--pause", "0"],
            &["--baseline-pid", "1"],
        ] {
            assert!(parse(extra).is_err(), "{extra:?}");
        }
        assert!(parse(&["--baseline", "127.0.0.1:1", "--compare-pid", "1"]).is_err());
        assert!(parse(&["--baseline", "127.0.0.1:1", "--idle", "10"]).is_err());
        assert!(parse(&["--baseline", "127.0.0.1:1", "--noop-receiver", "127.0.0.1:2"]).is_err());
        let a = parse(&["--baseline", "127.0.0.1:1", "--compare", "127.0.0.1:2", "--rounds", "3"]).expect("ok");
        assert_eq!(a.rounds.rounds, Some(3));
    }

    #[test]
    fn the_text_report_gives_the_ratios_and_names_unclean_runs() {
        let mut runs = vec![
            ran(1, Role::Target, 45_000.0, 3_000),
            ran(1, Role::Compare, 43_000.0, 3_100),
            ran(1, Role::Baseline, 90_000.0, 900),
        ];
        let (per_round, median) = summarise(&runs);
        let mut report = RoundsReport {
            target: "127.0.0.1:7000".into(),
            compare: Some("127.0.0.1:7030".into()),
            baseline: "127.0.0.1:7100".into(),
            rounds: 1,
            pause_s: 1.0,
            runs: runs.clone(),
            per_round,
            median,
            unclean_runs: 0,
        };
        let text = |r: &RoundsReport| {
            let mut out = Vec::new();
            write_rounds(r, &mut out).expect("write");
            String::from_utf8(out).expect("utf-8")
        };
        let t = text(&report);
        assert!(t.contains("target/baseline"), "{t}");
        let median_line = t.lines().find(|l| l.starts_with("median")).expect("median line");
        for want in ["45,000", "43,000", "90,000", "0.500", "0.478", "1.047"] {
            assert!(median_line.contains(want), "{want}: {t}");
        }
        assert!(t.contains("1       target compare baseline"), "{t}");
        assert!(
            t.contains("p99         target 3.000 ms, compare 3.100 ms, baseline 0.900 ms"),
            "{t}"
        );
        assert!(t.contains("clean       every run"), "{t}");
        runs[1].report.timeouts = 2;
        report.unclean_runs = 1;
        report.runs = runs;
        let t = text(&report);
        assert!(
            t.contains("NOT CLEAN   1 run(s): round 1 compare (errors 0, timeouts 2"),
            "{t}"
        );
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
