//! `meldkamer store copy --from sqlite:PATH --to postgres://…`: move an installation to
//! PostgreSQL ([`crate::store::pg::copy`]).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use crate::config::Config;
use crate::store::pg::DbUrl;
use crate::store::pg::copy::{CopyError, CopyOptions, CopyReport, Progress};

/// `meldkamer store …`.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// The store commands.
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy everything from a SQLite database into PostgreSQL (the schema is created or
    /// upgraded first), ids kept, in batches of one transaction each. Reads the SQLite file
    /// read-only, as one snapshot, so it may run while the daemon does. Idempotent: run it
    /// again to copy what is new or changed since (a run with nothing new says so); stop the
    /// daemon before the last run.
    Copy {
        /// The SQLite database: `sqlite:PATH` (or a plain path).
        #[arg(long, value_name = "sqlite:PATH")]
        from: String,
        /// The PostgreSQL URL, `postgres://USER[:PASSWORD]@HOST[:PORT][,HOST2…]/DB[?…]`
        /// (default: `[store] url` of --config; a password in the configuration file stays
        /// off the command line and out of the process list).
        #[arg(long, value_name = "postgres://…")]
        to: Option<String>,
        /// Configuration file (for `[store] url` when --to is not given).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Rows per batch (one transaction each).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        batch_rows: u32,
    },
}

/// Errors of the store commands.
#[derive(Debug, thiserror::Error)]
pub enum StoreCliError {
    /// No target named.
    #[error("name the PostgreSQL database with --to postgres://…, or with [store] url in --config")]
    NoTarget,
    /// The URL does not parse.
    #[error(transparent)]
    Url(crate::store::pg::PgError),
    /// The configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The copy failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// The runtime could not start.
    #[error("starting the runtime")]
    Runtime(#[source] std::io::Error),
}

/// Run a store command.
pub fn run(args: &StoreArgs, out: &mut dyn Write) -> Result<(), StoreCliError> {
    match &args.command {
        StoreCommand::Copy {
            from,
            to,
            config,
            batch_rows,
        } => {
            let url = match (to, config) {
                (Some(to), _) => DbUrl::parse(to).map_err(StoreCliError::Url)?,
                (None, Some(path)) => Config::load(path)?.store.url.ok_or(StoreCliError::NoTarget)?,
                (None, None) => return Err(StoreCliError::NoTarget),
            };
            let from = PathBuf::from(from.strip_prefix("sqlite:").unwrap_or(from));
            let opts = CopyOptions {
                batch_rows: *batch_rows as usize,
                progress: if std::io::stderr().is_terminal() {
                    Progress::Bar
                } else {
                    Progress::Lines
                },
            };
            copy(&from, &url, opts, out).map(|_| ())
        }
    }
}

/// [`crate::store::pg::copy::copy`] on a runtime of its own.
pub fn copy(
    from: &std::path::Path,
    to: &DbUrl,
    opts: CopyOptions,
    out: &mut dyn Write,
) -> Result<CopyReport, StoreCliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StoreCliError::Runtime)?;
    Ok(rt.block_on(crate::store::pg::copy::copy(from, to, opts, out))?)
}
