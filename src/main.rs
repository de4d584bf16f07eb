//! The `meldkamer` command line. Argument parsing only; the work is in `meldkamer::cli`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meldkamer::cli;
use meldkamer::protocol::{KeyFormat, Quirks};

#[derive(Parser)]
#[command(
    name = "meldkamer",
    version = meldkamer::release::version(),
    about = "Event-processing daemon for alarm receiving centres"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the receiver daemon until SIGTERM or SIGINT.
    Serve {
        /// Configuration file (default: the embedded configuration, see print-config).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log JSON lines instead of human-readable lines.
        #[arg(long)]
        log_json: bool,
        /// Write every TCP connection and UDP peer as a fixture trace into DIR.
        #[arg(long, value_name = "DIR")]
        record: Option<PathBuf>,
        /// With --record: synthetic account numbers and keys instead of the real ones.
        #[arg(long, requires = "record")]
        anonymise: bool,
    },
    /// Print the embedded default configuration, with its comments.
    PrintConfig,
    /// Validate a configuration file (unknown keys are errors).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Import customer records (TOML, or CSV named after the kind), all files or nothing.
    ///
    /// Every file is checked before anything is written. When anything is wrong, nothing is
    /// imported and every problem of every file is listed, one per line as
    /// FILE:LINE: ENTRY: FIELD: PROBLEM, sorted by file and line, then their number (exit
    /// status 1). The format and every CSV column: fixtures/records/README.md in the source.
    Import {
        /// The records files: .toml, or customers.csv, sites.csv, accounts.csv, zones.csv,
        /// users.csv, contacts.csv, procedures.csv, priority_rules.csv.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Configuration file (for the database path).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The keys file is lost: make a new one, remove the account keys that do not open with
        /// it (disabling their accounts) and seal the imported keys with it.
        #[arg(long)]
        replace_lost_keys: bool,
    },
    /// Load generator: act as many panels against a running receiver and measure it.
    Bench(Box<meldkamer::loadgen::BenchArgs>),
    /// Replay fixture traces in-process (deterministic) or against a daemon (--target).
    Replay(cli::replay::ReplayArgs),
    /// Act as a panel: send one DC-09 frame and wait for the answer.
    Send(cli::send::SendArgs),
    /// Phone cancellation codes: set, reset, bulk-invalidate (write-only: never shown again).
    Code(cli::code::CodeArgs),
    /// The audit log: verify its hash chain, list recent rows.
    Audit(cli::audit::AuditArgs),
    /// The database itself: copy a SQLite installation into PostgreSQL.
    Store(cli::store::StoreArgs),
    /// The retention archive: verify it against its manifests, read it back.
    Archive(cli::archive::ArchiveArgs),
    /// Copy the database while the daemon runs: a consistent, checked copy at DEST and its audit
    /// heads at DEST.audit-heads (the key files are not in it: back them up apart).
    Backup {
        /// Where to write the copy (must not exist).
        dest: PathBuf,
        /// Configuration file (for the database and key file paths).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Operator accounts for the console.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
        /// Configuration file (for the database path).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// The operators' terminal console.
    Console {
        /// The operator API socket (default: from the configuration).
        #[arg(long, conflicts_with = "connect")]
        socket: Option<PathBuf>,
        /// host:port of the operator API over TLS.
        #[arg(long)]
        connect: Option<String>,
        /// PEM certificate(s) to trust for --connect (default: the configured tls_cert).
        #[arg(long, requires = "connect")]
        ca: Option<PathBuf>,
        /// Name to expect in the server certificate (default: the host of --connect).
        #[arg(long, requires = "connect")]
        server_name: Option<String>,
        /// Present the next alarm by itself (default: [console] auto_present).
        #[arg(long)]
        auto_present: bool,
        /// Show times in this time zone, e.g. Europe/Amsterdam (default: [console] time_zone,
        /// else the system's).
        #[arg(long)]
        time_zone: Option<String>,
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Customer records.
    Customer {
        #[command(subcommand)]
        command: CustomerCommand,
    },
    /// A site or an account on test or out of service until a time (audited; ends by itself).
    Service(cli::service::ServiceArgs),
    /// Decode one DC-09 frame: print it as JSON with the verdict and the response bytes.
    Parse {
        /// The frame, with \n \r \xNN escapes, or - to read it from stdin.
        frame: String,
        /// Account key as hex digits (32/48/64).
        #[arg(long, conflicts_with = "key_ascii")]
        key: Option<String>,
        /// Account key as ASCII characters (16/24/32).
        #[arg(long)]
        key_ascii: Option<String>,
        /// Receiver time (RFC 3339), default now.
        #[arg(long)]
        now: Option<String>,
        /// Treat the account as requiring encryption.
        #[arg(long)]
        require_encryption: bool,
        /// Accept the field quirks (binary CRC, CR inside CRC, trailing NULs).
        #[arg(long)]
        quirks: bool,
        /// Seed for the pad of an encrypted ACK, for reproducible output.
        #[arg(long, default_value_t = 0)]
        pad_seed: u64,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Add an operator (the password is asked twice on the terminal, without echo; without a
    /// terminal, give it with --password-stdin).
    Add {
        /// Login name.
        name: String,
        /// operator, supervisor or admin.
        #[arg(long, value_parser = ["operator", "supervisor", "admin"])]
        role: String,
        /// Read the password from stdin (one line) instead of the terminal: for scripts, and
        /// needed when stdin is not a terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an operator: logins refused, and live sessions end at once (their alarms go
    /// back to the queue).
    Disable {
        /// Login name.
        name: String,
    },
    /// Give an operator a new password (read twice without echo, or once from stdin); live
    /// sessions end at once.
    Password {
        /// Login name.
        name: String,
        /// Read the password from stdin (one line) instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Give an operator another role; live sessions end at once (log in again for the new role).
    Role {
        /// Login name.
        name: String,
        /// operator, supervisor or admin.
        #[arg(value_parser = ["operator", "supervisor", "admin"])]
        role: String,
    },
    /// Enable a disabled operator.
    Enable {
        /// Login name.
        name: String,
    },
    /// List operators.
    List,
}

#[derive(Subcommand)]
enum CustomerCommand {
    /// Show the customer, site, transmitters, zones, users, contacts and procedures of an account.
    Show {
        /// Account number.
        account: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Configuration file (for the database path).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Whatever a command creates (and does not create with an explicit mode) is owner-only.
    meldkamer::hardening::restrict_umask();
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Serve {
            config,
            log_json,
            record,
            anonymise,
        } => (|| {
            let cfg = cli::serve::load_config(config.as_deref())?;
            cli::serve::init_logging(&cfg, log_json);
            let record = record.map(|dir| meldkamer::receiver::record::RecordOptions { dir, anonymise });
            cli::serve::serve_with(cfg, config.as_deref(), record)?;
            Ok(())
        })(),
        Command::Operator { command, config } => (|| {
            let cfg = cli::serve::load_config(config.as_deref())?;
            let out = &mut std::io::stdout().lock();
            match command {
                OperatorCommand::Add {
                    name,
                    role,
                    password_stdin,
                } => {
                    let role = meldkamer::operator::Role::parse(&role).ok_or("unknown role")?;
                    cli::operator::add(&cfg, &name, role, password_stdin, out)?
                }
                OperatorCommand::Disable { name } => cli::operator::set_disabled(&cfg, &name, true, out)?,
                OperatorCommand::Password { name, password_stdin } => {
                    cli::operator::set_password(&cfg, &name, password_stdin, out)?
                }
                OperatorCommand::Role { name, role } => {
                    let role = meldkamer::operator::Role::parse(&role).ok_or("unknown role")?;
                    cli::operator::set_role(&cfg, &name, role, out)?
                }
                OperatorCommand::Enable { name } => cli::operator::set_disabled(&cfg, &name, false, out)?,
                OperatorCommand::List => cli::operator::list(&cfg, out)?,
            }
            Ok(())
        })(),
        Command::Console {
            socket,
            connect,
            ca,
            server_name,
            auto_present,
            time_zone,
            config,
        } => (|| {
            let cfg = cli::serve::load_config(config.as_deref())?;
            let look = cli::operator::ConsoleLook {
                auto_present,
                time_zone,
            };
            cli::operator::console(&cfg, socket, connect, ca, server_name, look)?;
            Ok(())
        })(),
        Command::Customer {
            command: CustomerCommand::Show { account, json, config },
        } => (|| {
            let cfg = cli::serve::load_config(config.as_deref())?;
            cli::customer::show(&cfg, &account, json, &mut std::io::stdout().lock())?;
            Ok(())
        })(),
        Command::Service(args) => (|| {
            let cfg = cli::serve::load_config(args.config.as_deref())?;
            cli::service::run(&cfg, &args, &mut std::io::stdout().lock())?;
            Ok(())
        })(),
        Command::PrintConfig => cli::serve::print_config(&mut std::io::stdout().lock()).map_err(Into::into),
        Command::CheckConfig { file } => {
            cli::serve::check_config(&file, &mut std::io::stdout().lock()).map_err(Into::into)
        }
        Command::Import {
            files,
            config,
            replace_lost_keys,
        } => (|| {
            let cfg = cli::serve::load_config(config.as_deref())?;
            cli::serve::import(&cfg, &files, replace_lost_keys, &mut std::io::stdout().lock())?;
            Ok(())
        })(),
        Command::Code(args) => (|| {
            let cfg = cli::serve::load_config(args.config.as_deref())?;
            cli::serve::init_logging(&cfg, false);
            cli::code::run(&cfg, &args, &mut std::io::stdout().lock(), &mut std::io::stdin().lock())?;
            Ok(())
        })(),
        Command::Audit(args) => (|| {
            let cfg = cli::serve::load_config(args.config.as_deref())?;
            cli::audit::run(&cfg, &args, &mut std::io::stdout().lock())?;
            Ok(())
        })(),
        Command::Store(args) => cli::store::run(&args, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::Archive(args) => cli::archive::run(&args, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::Backup { dest, config } => (|| {
            let cfg = cli::serve::load_config(config.as_deref())?;
            cli::backup::run(&cfg, &dest, &mut std::io::stdout().lock())?;
            Ok(())
        })(),
        Command::Bench(args) => meldkamer::loadgen::run(&args, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::Replay(args) => cli::replay::run(&args, &mut std::io::stdout().lock())
            .map(|_| ())
            .map_err(Into::into),
        Command::Send(args) => cli::send::run(&args, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::Parse {
            frame,
            key,
            key_ascii,
            now,
            require_encryption,
            quirks,
            pad_seed,
        } => (|| {
            let now = match now {
                Some(s) => time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| format!("--now {s:?} is not an RFC 3339 time: {e}"))?,
                None => time::OffsetDateTime::now_utc(),
            };
            let key = match (key, key_ascii) {
                (Some(k), _) => Some((k, KeyFormat::Hex)),
                (None, Some(k)) => Some((k, KeyFormat::Ascii)),
                _ => None,
            };
            let args = cli::parse::ParseArgs {
                frame,
                key,
                now,
                require_encryption,
                quirks: if quirks { Quirks::ALL } else { Quirks::NONE },
                pad_seed,
            };
            cli::parse::run(&args, &mut std::io::stdout().lock())?;
            Ok(())
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::from(1)
        }
    }
}
