//! `meldkamer replay FILE_OR_DIR… [--target HOST:PORT] [--udp-target HOST:PORT] [--bless]
//! [--json | --junit FILE]`: run fixture traces and say, byte for byte, where behaviour changed.
//!
//! Without `--target` every trace runs in-process on a fresh temporary database and the virtual
//! clock (deterministic), and both the responses and the outcome file (`NAME.outcome.json`) are
//! compared. With `--target` the panel bytes go to a running daemon (TCP, and UDP for
//! `@transport udp`), re-stamped to the real clock, and only the responses are compared.
//! The format is described in `fixtures/README.md`.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use crate::replay::suite::{self, Summary, TraceReport};
use crate::replay::target::Target;

/// What `replay` was asked.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Trace files, or directories searched recursively for *.trace.
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    pub paths: Vec<PathBuf>,
    /// Replay against a running daemon at HOST:PORT (TCP) instead of in-process. Import the
    /// traces' records into it first (`meldkamer import fixtures/records/*.toml`).
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    /// The daemon's UDP address for `@transport udp` traces (default: the --target address).
    #[arg(long, value_name = "HOST:PORT", requires = "target")]
    pub udp_target: Option<String>,
    /// Rewrite the `<` lines and the outcome files with what actually happened (in-process only).
    #[arg(long, conflicts_with = "target")]
    pub bless: bool,
    /// Print a JSON report on stdout instead of text.
    #[arg(long, conflicts_with = "junit")]
    pub json: bool,
    /// Also write a JUnit XML report to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Traces run at the same time (default: 2 in-process, 1 against a target).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

/// Errors of the `replay` command.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No trace found, or a path does not exist.
    #[error("{0}")]
    Input(String),
    /// An address does not resolve.
    #[error("{flag} {addr:?}: not a HOST:PORT address")]
    Address {
        /// The option.
        flag: &'static str,
        /// What was given.
        addr: String,
    },
    /// The runtime could not start.
    #[error("starting the runtime")]
    Runtime(#[source] std::io::Error),
    /// The JUnit file could not be written.
    #[error("writing {path}")]
    Junit {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Some trace did not match or could not run (the report says which).
    #[error("{0}")]
    Mismatch(String),
}

fn resolve(flag: &'static str, addr: &str) -> Result<SocketAddr, ReplayError> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ReplayError::Address {
            flag,
            addr: addr.to_string(),
        })
}

/// Run `replay`: reports on `out` (text or JSON), progress on stderr. Returns an error when any
/// trace failed or could not run.
pub fn run(args: &ReplayArgs, out: &mut dyn Write) -> Result<Summary, ReplayError> {
    let files = suite::collect(&args.paths).map_err(|e| ReplayError::Input(e.to_string()))?;
    if files.is_empty() {
        return Err(ReplayError::Input("no *.trace files found".into()));
    }
    let target = match &args.target {
        Some(t) => {
            let tcp = resolve("--target", t)?;
            let udp = match &args.udp_target {
                Some(u) => resolve("--udp-target", u)?,
                None => tcp,
            };
            Some(Target { tcp, udp })
        }
        None => None,
    };
    let jobs = args.jobs.unwrap_or(if target.is_some() { 1 } else { 2 }).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ReplayError::Runtime)?;

    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(files.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    });
    let text_out = !args.json;
    let reports = rt.block_on(run_all(&files, target, args.bless, jobs, |r| {
        if let Some(b) = &bar {
            b.inc(1);
            b.set_message(r.trace.clone());
        }
        if text_out {
            let line = suite::text(r);
            match &bar {
                Some(b) => b.suspend(|| {
                    let _ = writeln!(out, "{line}");
                }),
                None => {
                    let _ = writeln!(out, "{line}");
                }
            }
        } else if bar.is_none() {
            eprintln!("{} {}", r.status.as_str(), r.trace);
        }
    }));
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let summary = Summary::of(&reports);
    let mode = if target.is_some() { "target" } else { "in-process" };
    if args.json {
        let doc = suite::json(mode, args.target.as_deref(), &reports);
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        );
    } else {
        let _ = writeln!(
            out,
            "replay ({mode}): {} passed, {} failed, {} skipped, {} errors{}",
            summary.passed,
            summary.failed,
            summary.skipped,
            summary.errors,
            if summary.blessed > 0 {
                format!(", {} blessed", summary.blessed)
            } else {
                String::new()
            }
        );
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, suite::junit(&format!("meldkamer replay ({mode})"), &reports)).map_err(|source| {
            ReplayError::Junit {
                path: path.display().to_string(),
                source,
            }
        })?;
    }
    if summary.ok() {
        Ok(summary)
    } else {
        Err(ReplayError::Mismatch(format!(
            "{} trace(s) failed, {} could not run",
            summary.failed, summary.errors
        )))
    }
}

/// Run every trace, `jobs` at a time; `done` sees each report as it finishes. Reports come
/// back in the order of `files`.
pub async fn run_all(
    files: &[PathBuf],
    target: Option<Target>,
    bless: bool,
    jobs: usize,
    mut done: impl FnMut(&TraceReport),
) -> Vec<TraceReport> {
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (i, f) in files.iter().enumerate() {
        let f = f.clone();
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = match target {
                Some(t) => suite::check_target(&f, t).await,
                None => suite::check_in_process(&f, bless).await,
            };
            (i, r)
        });
    }
    // Reports are passed to `done` in the order of `files`, as soon as all before them are in.
    let mut out: Vec<Option<TraceReport>> = vec![None; files.len()];
    let mut next = 0;
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            out[i] = Some(r);
        }
        while let Some(Some(r)) = out.get(next) {
            done(r);
            next += 1;
        }
    }
    let mut reports = Vec::with_capacity(files.len());
    for (i, (r, f)) in out.into_iter().zip(files).enumerate() {
        let r = r.unwrap_or_else(|| suite::TraceReport::failed_to_run(f, "the run panicked"));
        if i >= next {
            done(&r);
        }
        reports.push(r);
    }
    reports
}
