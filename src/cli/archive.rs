//! `meldkamer archive verify DIR | cat DIR`: check the retention archive (every day's file
//! against its manifest, every listed day present) and read it back as JSON Lines.

use std::io::Write;
use std::path::PathBuf;

use crate::store::archive::{self, ArchiveError};

/// `meldkamer archive …`.
#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ArchiveCommand,
}

/// The archive commands.
#[derive(Debug, clap::Subcommand)]
pub enum ArchiveCommand {
    /// Check every day in the archive directory against its manifest (length, SHA-256 and row
    /// count of each part) and that no listed day's file or manifest is missing; name each file
    /// that is altered or missing (exit status 1 if any).
    Verify {
        /// The archive directory (`[retention] archive_dir`).
        dir: PathBuf,
    },
    /// Print the archived rows as JSON Lines, `{"table": …, "row": {…}}`, oldest day first.
    Cat {
        /// The archive directory.
        dir: PathBuf,
        /// Only this UTC day (YYYY-MM-DD); repeatable.
        #[arg(long)]
        day: Vec<String>,
    },
}

/// Errors of the archive commands.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveCliError {
    /// Reading failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// Writing the output failed.
    #[error("writing the output")]
    Output(#[from] std::io::Error),
    /// Verification found problems.
    #[error("the archive does not verify: {0} problem(s)")]
    Broken(usize),
}

/// Run an archive command.
pub fn run(args: &ArchiveArgs, out: &mut dyn Write) -> Result<(), ArchiveCliError> {
    match &args.command {
        ArchiveCommand::Verify { dir } => {
            let report = archive::verify(dir)?;
            for p in &report.problems {
                writeln!(out, "FAILED {p}")?;
            }
            writeln!(
                out,
                "{} day(s) verified, {} row(s); {} problem(s)",
                report.days_ok,
                report.rows,
                report.problems.len()
            )?;
            if report.problems.is_empty() {
                Ok(())
            } else {
                Err(ArchiveCliError::Broken(report.problems.len()))
            }
        }
        ArchiveCommand::Cat { dir, day } => {
            let days = if day.is_empty() {
                archive::days(dir)?
            } else {
                day.clone()
            };
            for d in days {
                for line in archive::read_day(dir, &d)? {
                    writeln!(out, "{line}")?;
                }
            }
            Ok(())
        }
    }
}
