//! `meldkamer code set | reset | invalidate | calibrate`: the write-only administration of
//! phone cancellation codes. No command prints, lists or exports a stored code; the only code
//! ever printed is one the system has just generated (`set --generate`), once.
//!
//! These commands write to the database with their own connection, like `import`: SQLite's
//! WAL lets them run beside a daemon, whose writer holds the write lock only for the moment
//! of each commit.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::store::StoreError;
use crate::verify::audit::{self, AuditRecord};
use crate::verify::codes::{self, Code, ContactRef, Kind, Selector, Weakness};
use crate::verify::hash::{Cost, HashError, Hasher, Pepper, PepperRing};

/// `meldkamer code …`.
#[derive(Debug, clap::Args)]
pub struct CodeArgs {
    /// Configuration file (for the database and the pepper file).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Who does this, for the audit log (default: cli:$USER).
    #[arg(long, global = true)]
    pub by: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: CodeCommand,
}

/// The code commands.
#[derive(Debug, clap::Subcommand)]
pub enum CodeCommand {
    /// Set a contact's phone cancellation code (or duress code). Without --stdin or
    /// --generate the code is read twice from the terminal, without echo.
    Set {
        /// The contact's reference.
        #[arg(long)]
        contact: String,
        /// Set the duress code instead of the cancellation code.
        #[arg(long)]
        duress: bool,
        /// Generate a random 6-digit code and print it once.
        #[arg(long, conflicts_with = "stdin")]
        generate: bool,
        /// Read the code from one line of standard input.
        #[arg(long)]
        stdin: bool,
    },
    /// Remove a contact's codes and lift the customer's lockout if this contact caused it
    /// (a supervisor action). Set a new code afterwards.
    Reset {
        /// The contact's reference.
        #[arg(long)]
        contact: String,
    },
    /// Invalidate codes in bulk after a suspected exposure: every affected code answers
    /// "invalidated, use call-back" until it is set again.
    #[command(group(clap::ArgGroup::new("selector").required(true).args(["all", "customer", "account"])))]
    Invalidate {
        /// Every code.
        #[arg(long)]
        all: bool,
        /// The codes of one customer's contacts (customer reference).
        #[arg(long)]
        customer: Option<String>,
        /// The codes of the contacts of the customer(s) with this transmitter account.
        #[arg(long)]
        account: Option<String>,
    },
    /// Measure the Argon2id cost on this machine (to choose codes.argon2_*).
    Calibrate,
}

/// Errors of the code commands. None contains a code.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// No database file.
    #[error("no database at {0}")]
    NoDatabase(String),
    /// The database failed.
    #[error("database {path}")]
    Store {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// No such contact.
    #[error("no contact {0}")]
    NoContact(String),
    /// The contact may not cancel by phone.
    #[error("contact {0} may not cancel alarms by phone (may_cancel is false in the records)")]
    MayNotCancel(String),
    /// No such customer.
    #[error("no customer {0}")]
    NoCustomer(String),
    /// No such account.
    #[error("no transmitter account {0}")]
    NoAccount(String),
    /// The code is too weak.
    #[error("code refused: {0}")]
    Weak(Weakness),
    /// The two entries differ.
    #[error("the two entries differ; nothing was set")]
    Mismatch,
    /// The duress and cancellation codes would be equal.
    #[error("code refused: the duress code and the cancellation code must differ")]
    SameAsOther,
    /// No input.
    #[error("no code given")]
    Empty,
    /// Reading the code failed.
    #[error("reading the code (no terminal? use --stdin or --generate)")]
    Read(#[source] std::io::Error),
    /// Pepper or parameters.
    #[error(transparent)]
    Setup(#[from] crate::verify::SetupError),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
}

fn actor(by: Option<&str>) -> String {
    match by.map(str::trim).filter(|s| !s.is_empty()) {
        Some(b) => b.to_string(),
        None => {
            let user = std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "unknown".into());
            format!("cli:{user}")
        }
    }
}

fn now_ms() -> i64 {
    crate::clock::unix_ms(time::OffsetDateTime::now_utc())
}

fn open(cfg: &Config) -> Result<Connection, CodeError> {
    let path = &cfg.store.path;
    if !path.exists() {
        return Err(CodeError::NoDatabase(path.display().to_string()));
    }
    let conn = crate::store::open_write(path, Duration::from_millis(cfg.store.busy_timeout_ms)).map_err(|source| {
        CodeError::Store {
            path: path.display().to_string(),
            source,
        }
    })?;
    // Every code command writes audit rows: they are keyed.
    crate::verify::audit_key_from_config(cfg)?;
    Ok(conn)
}

/// Run a code command. `stdin` is read by `set --stdin` only.
pub fn run(cfg: &Config, args: &CodeArgs, out: &mut dyn Write, stdin: &mut dyn BufRead) -> Result<(), CodeError> {
    let who = actor(args.by.as_deref());
    match &args.command {
        CodeCommand::Set {
            contact,
            duress,
            generate,
            stdin: from_stdin,
        } => {
            let kind = if *duress { Kind::Duress } else { Kind::Cancel };
            let source = if *generate {
                Source::Generate
            } else if *from_stdin {
                Source::Stdin(stdin)
            } else {
                Source::Terminal
            };
            set(cfg, contact, kind, source, &who, out)
        }
        CodeCommand::Reset { contact } => reset(cfg, contact, &who, out),
        CodeCommand::Invalidate { all, customer, account } => {
            let sel = match (all, customer, account) {
                (true, _, _) => Selector::All,
                (_, Some(c), _) => Selector::Customer(c.clone()),
                (_, _, Some(a)) => Selector::Account(a.clone()),
                _ => Selector::All,
            };
            invalidate(cfg, &sel, &who, out)
        }
        CodeCommand::Calibrate => calibrate(cfg, out),
    }
}

/// Where `set` takes the code from.
pub enum Source<'a> {
    /// Generated by the system, printed once.
    Generate,
    /// One line of this input.
    Stdin(&'a mut dyn BufRead),
    /// Twice from the terminal, without echo.
    Terminal,
}

fn with_tx<T>(
    conn: &mut Connection,
    cfg: &Config,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, CodeError> {
    let store = |source| CodeError::Store {
        path: cfg.store.path.display().to_string(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| store(e.into()))?;
    let v = f(&tx).map_err(store)?;
    tx.commit().map_err(|e| store(e.into()))?;
    Ok(v)
}

fn refuse(
    conn: &mut Connection,
    cfg: &Config,
    who: &str,
    action: &str,
    subject: &str,
    why: &str,
) -> Result<(), CodeError> {
    let subject = subject.to_string();
    let (who, action, why) = (who.to_string(), action.to_string(), why.to_string());
    with_tx(conn, cfg, move |tx| {
        audit::append(
            tx,
            now_ms(),
            &AuditRecord {
                actor: &who,
                action: &action,
                subject: &subject,
                detail: &why,
                result: "refused",
                failures: None,
            },
        )
        .map(|_| ())
    })
}

fn contact(
    conn: &mut Connection,
    cfg: &Config,
    who: &str,
    action: &str,
    reference: &str,
) -> Result<ContactRef, CodeError> {
    let store = |source| CodeError::Store {
        path: cfg.store.path.display().to_string(),
        source,
    };
    match codes::contact_by_ref(conn, reference).map_err(store)? {
        Some(c) => Ok(c),
        None => {
            refuse(
                conn,
                cfg,
                who,
                action,
                &format!("contact:{reference}"),
                "no such contact",
            )?;
            Err(CodeError::NoContact(reference.to_string()))
        }
    }
}

fn read_code(source: Source<'_>, accounts: &[String]) -> Result<Code, CodeError> {
    match source {
        Source::Generate => Ok(Code::generate(codes::GENERATED_DIGITS, accounts)?),
        Source::Stdin(input) => {
            let mut line = Zeroizing::new(String::new());
            input.read_line(&mut line).map_err(CodeError::Read)?;
            let code = Code::new(line.trim_end_matches(['\r', '\n']));
            if code.is_empty() {
                return Err(CodeError::Empty);
            }
            Ok(code)
        }
        Source::Terminal => {
            let first = Code::new(rpassword::prompt_password("New code: ").map_err(CodeError::Read)?);
            if first.is_empty() {
                return Err(CodeError::Empty);
            }
            let second = Code::new(rpassword::prompt_password("Again: ").map_err(CodeError::Read)?);
            if !first.same_as(&second) {
                return Err(CodeError::Mismatch);
            }
            Ok(first)
        }
    }
}

/// `code set`.
pub fn set(
    cfg: &Config,
    reference: &str,
    kind: Kind,
    source: Source<'_>,
    who: &str,
    out: &mut dyn Write,
) -> Result<(), CodeError> {
    let mut conn = open(cfg)?;
    let action = "code_set";
    let c = contact(&mut conn, cfg, who, action, reference)?;
    let subject = format!("contact:{}", c.reference);
    if !c.may_cancel {
        refuse(&mut conn, cfg, who, action, &subject, "contact may not cancel by phone")?;
        return Err(CodeError::MayNotCancel(c.reference));
    }
    let store = |source| CodeError::Store {
        path: cfg.store.path.display().to_string(),
        source,
    };
    let accounts = codes::accounts_of_customer(&conn, c.customer_id).map_err(store)?;
    let hasher = crate::verify::hasher_from_config(cfg)?;
    let generated = matches!(source, Source::Generate);
    let code = read_code(source, &accounts)?;
    if let Some(w) = codes::weakness(&code, &accounts) {
        refuse(&mut conn, cfg, who, action, &subject, &format!("weak code: {w}"))?;
        return Err(CodeError::Weak(w));
    }
    // The other code of the same contact must differ (one Argon2id computation; nothing read).
    let other = codes::stored(&conn, c.id, kind.other()).map_err(store)?;
    if other.is_some() && hasher.check(other.as_ref(), &code).matched() {
        refuse(
            &mut conn,
            cfg,
            who,
            action,
            &subject,
            "the duress and cancellation codes must differ",
        )?;
        return Err(CodeError::SameAsOther);
    }
    let v = hasher.hash(&code)?;
    let how = if generated { "generated" } else { "entered" };
    let (c2, who2) = (c.clone(), who.to_string());
    with_tx(&mut conn, cfg, move |tx| {
        codes::store_verifier(tx, &c2, kind, &v, &who2, how, now_ms())
    })?;
    tracing::info!(contact = %c.reference, kind = kind.as_str(), "phone code set");
    let what = match kind {
        Kind::Cancel => "phone cancellation code",
        Kind::Duress => "duress code",
    };
    if generated {
        let _ = writeln!(
            out,
            "new {what} for contact {} (customer {}): {}",
            c.reference,
            c.customer,
            code.reveal_generated()
        );
        let _ = writeln!(
            out,
            "shown once: hand it to the keyholder now; it cannot be shown again"
        );
    } else {
        let _ = writeln!(out, "{what} set for contact {} (customer {})", c.reference, c.customer);
    }
    Ok(())
}

/// `code reset`.
pub fn reset(cfg: &Config, reference: &str, who: &str, out: &mut dyn Write) -> Result<(), CodeError> {
    let mut conn = open(cfg)?;
    let c = contact(&mut conn, cfg, who, "code_reset", reference)?;
    let (c2, who2) = (c.clone(), who.to_string());
    let r = with_tx(&mut conn, cfg, move |tx| codes::reset(tx, &c2, &who2, now_ms()))?;
    tracing::info!(contact = %c.reference, removed = r.removed, unlocked = r.unlocked, "phone codes reset");
    let _ = writeln!(
        out,
        "removed {} code(s) of contact {} (customer {})",
        r.removed, c.reference, c.customer
    );
    if r.unlocked {
        let _ = writeln!(out, "phone cancellation for customer {} is unlocked", c.customer);
    }
    if let Some(other) = r.still_locked_by {
        let _ = writeln!(
            out,
            "phone cancellation for customer {} stays locked: reset contact {other}",
            c.customer
        );
    }
    let _ = writeln!(out, "set a new code with: meldkamer code set --contact {}", c.reference);
    Ok(())
}

/// `code invalidate`.
pub fn invalidate(cfg: &Config, sel: &Selector, who: &str, out: &mut dyn Write) -> Result<(), CodeError> {
    let mut conn = open(cfg)?;
    let store = |source| CodeError::Store {
        path: cfg.store.path.display().to_string(),
        source,
    };
    let exists = |sql: &str, v: &str| -> Result<bool, CodeError> {
        conn.query_row(sql, [v], |_| Ok(())).map(|_| true).or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(false),
            e => Err(store(e.into())),
        })
    };
    let missing = match sel {
        Selector::Customer(c) if !exists("SELECT 1 FROM customers WHERE ref = ?1", c)? => {
            Some(CodeError::NoCustomer(c.clone()))
        }
        Selector::Account(a)
            if !exists(
                "SELECT 1 FROM accounts WHERE account = ?1",
                &crate::correlate::norm_number(a),
            )? =>
        {
            Some(CodeError::NoAccount(a.clone()))
        }
        _ => None,
    };
    if let Some(e) = missing {
        refuse(
            &mut conn,
            cfg,
            who,
            "code_bulk_invalidate",
            &sel.to_string(),
            "no such customer or account",
        )?;
        return Err(e);
    }
    let (sel2, who2) = (sel.clone(), who.to_string());
    let r = with_tx(&mut conn, cfg, move |tx| codes::invalidate(tx, &sel2, &who2, now_ms()))?;
    tracing::warn!(selector = %sel, codes = r.codes, contacts = r.contacts, "phone codes invalidated");
    let _ = writeln!(
        out,
        "invalidated {} code(s) of {} contact(s) ({sel}); each answers \"invalidated, use call-back\" until it is set again",
        r.codes, r.contacts
    );
    Ok(())
}

/// `code calibrate`: time one Argon2id computation at a few costs, and a verification (two
/// computations) at the configured cost.
pub fn calibrate(cfg: &Config, out: &mut dyn Write) -> Result<(), CodeError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|_| HashError::Random)?;
    let configured = Cost::from_config(&cfg.codes);
    let mut costs = vec![
        Cost::FLOOR,
        Cost {
            memory_kib: 32768,
            iterations: 2,
            parallelism: 1,
        },
        Cost {
            memory_kib: 47104,
            iterations: 2,
            parallelism: 1,
        },
        Cost {
            memory_kib: 65536,
            iterations: 2,
            parallelism: 1,
        },
        Cost {
            memory_kib: 65536,
            iterations: 3,
            parallelism: 1,
        },
    ];
    if !costs.contains(&configured) {
        costs.push(configured);
    }
    let _ = writeln!(out, "Argon2id, one computation (median of 7), this machine:");
    let code = Code::new("583947");
    for cost in costs {
        let h = Hasher::new(PepperRing::new(Pepper::from_bytes(key)), cost)?;
        let v = h.hash(&code)?;
        let stored = crate::verify::hash::Stored {
            phc: v.phc,
            pepper_id: v.pepper_id,
        };
        let mut times: Vec<Duration> = (0..7)
            .map(|_| {
                let t = Instant::now();
                h.check(Some(&stored), &code);
                t.elapsed()
            })
            .collect();
        times.sort();
        let mark = if cost == configured { "  <- configured" } else { "" };
        let _ = writeln!(
            out,
            "  {cost:<20} {:>7.1} ms   verification (2 hashes) ≈ {:>6.1} ms{mark}",
            times[3].as_secs_f64() * 1000.0,
            times[3].as_secs_f64() * 2000.0
        );
    }
    let _ = writeln!(
        out,
        "memory per running verification: {} MiB; at most {} at once",
        configured.memory_kib / 1024,
        cfg.codes.max_concurrent_verifications
    );
    match end_to_end(configured, key) {
        Ok((right, wrong)) => {
            let _ = writeln!(
                out,
                "whole verification at the configured cost (read, 2 hashes, record and commit), median of 9: \
                 right code {:.1} ms, wrong code {:.1} ms",
                right.as_secs_f64() * 1000.0,
                wrong.as_secs_f64() * 1000.0
            );
        }
        Err(e) => {
            let _ = writeln!(out, "whole verification not measured: {e}");
        }
    }
    Ok(())
}

/// Median time of a whole verification (right and wrong code) on a scratch database in the
/// temporary directory, removed afterwards.
fn end_to_end(cost: Cost, key: [u8; 32]) -> Result<(Duration, Duration), String> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("meldkamer-calibrate-{}", hex::encode(raw)));
    std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
    let r = end_to_end_in(&dir, cost, key);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn end_to_end_in(dir: &std::path::Path, cost: Cost, key: [u8; 32]) -> Result<(Duration, Duration), String> {
    use crate::correlate::alarms::{self, AlarmSpec, Queue};
    use crate::verify::attempt::{VerifyRequest, verify_blocking};
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let db = dir.join("calibrate.db");
    let mut conn = crate::store::open_write(&db, Duration::from_secs(5)).map_err(|x| e(&x))?;
    // A throwaway database: throwaway keys, never written anywhere.
    let mut keys = [[0u8; 32]; 2];
    for k in &mut keys {
        getrandom::fill(k).map_err(|x| e(&x))?;
    }
    let seal = crate::store::sealed::SealKey::from_bytes(&keys[0]);
    audit::register(&db, std::sync::Arc::new(audit::AuditKey::from_bytes(keys[1]))).map_err(|x| e(&x))?;
    let records = crate::records::parse_toml(
        "[[customer]]\nref = \"CAL\"\nname = \"Calibration (synthetic)\"\n\
         [[site]]\nref = \"CAL-S\"\ncustomer = \"CAL\"\naddress = \"x\"\n\
         [[contact]]\nref = \"CAL-K\"\ncustomer = \"CAL\"\nname = \"x\"\nmay_cancel = true\n",
        "calibration",
    )
    .map_err(|x| e(&x))?;
    crate::records::apply(&mut conn, &records, &seal).map_err(|x| e(&x))?;
    let hasher = Hasher::new(PepperRing::new(Pepper::from_bytes(key)), cost).map_err(|x| e(&x))?;
    let contact = codes::contact_by_ref(&conn, "CAL-K")
        .map_err(|x| e(&x))?
        .ok_or("no contact")?;
    let v = hasher.hash(&Code::new("583947")).map_err(|x| e(&x))?;
    let now = now_ms();
    let tx = conn.transaction().map_err(|x| e(&x))?;
    codes::store_verifier(&tx, &contact, Kind::Cancel, &v, "calibrate", "entered", now).map_err(|x| e(&x))?;
    let site: i64 = tx
        .query_row("SELECT id FROM sites WHERE ref = 'CAL-S'", [], |r| r.get(0))
        .map_err(|x| e(&x))?;
    let alarm_id = alarms::open_or_join(
        &tx,
        &AlarmSpec {
            queue: Queue::Operator,
            site_id: Some(site),
            account_id: None,
            account: "0000".into(),
            join_key: "calibrate".into(),
            category: None,
            priority: 3,
            title: "Calibration".into(),
            zone: None,
            area: None,
            duress: false,
            source_frame: None,
        },
        false,
        now,
    )
    .map_err(|x| e(&x))?
    .id;
    let (alarm, contact_pid): (String, String) = tx
        .query_row(
            "SELECT (SELECT public_id FROM alarms WHERE id = ?1), (SELECT public_id FROM contacts WHERE ref = 'CAL-K')",
            [alarm_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|x| e(&x))?;
    tx.commit().map_err(|x| e(&x))?;
    let req = VerifyRequest {
        alarm,
        contact: contact_pid,
        operator: "calibrate".into(),
    };
    // Never reach the lockout: the limit is above the number of wrong codes tried.
    let limits = crate::verify::Limits {
        lockout_after: 100,
        operator_alert_per_hour: 1000,
        operator_max_per_hour: u32::MAX,
        alert_priority: 4,
    };
    let mut right = Vec::new();
    let mut wrong = Vec::new();
    for _ in 0..9 {
        for (candidate, times) in [("583947", &mut right), ("583948", &mut wrong)] {
            let t = Instant::now();
            verify_blocking(&mut conn, &hasher, &limits, &req, Code::new(candidate), now_ms()).map_err(|x| e(&x))?;
            times.push(t.elapsed());
        }
    }
    right.sort();
    wrong.sort();
    Ok((right[4], wrong[4]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_defaults_to_the_os_user() {
        assert_eq!(actor(Some("sup1")), "sup1");
        assert!(actor(None).starts_with("cli:"));
        assert!(actor(Some("  ")).starts_with("cli:"));
    }
}
