//! Phone cancellation codes: the second factor of a cancellation, kept as a write-only secret.
//!
//! A cancellation (stand-down, no dispatch) needs two factors on the alarm: the panel-side
//! factor (a disarm or cancel by a panel user after the alarm, recorded by `correlate`) and a
//! phone cancellation code given by a caller and verified here. The panel's keypad code is a
//! different secret the ARC never sees; nothing here (or anywhere) stores or asks for it.
//!
//! A code can be set, reset, invalidated and checked — never read. Only Argon2id verifiers are
//! stored, keyed with a pepper from a file outside the database.
//!
//! | module | what |
//! |---|---|
//! | [`hash`] | Argon2id PHC verifiers, the pepper file and its rotation, the computation counter |
//! | [`codes`] | the secret [`Code`] type, weak-code rules, generation; set / reset / bulk invalidation |
//! | [`attempt`] | one verification on an open alarm: load, hash (always two), record |
//! | [`lockout`] | persisted counters: per-contact lockout, per-operator supervisor alert |
//! | [`audit`] | the append-only audit log every code and operator action writes, chained with a keyed MAC |
//! | [`published`] | the audit log's head, published (log line, event stream, heads file) so cuts and rewrites show |
//! | [`service`] | the async service for the daemon: hashing off the writer, bounded, serialised per customer |
//!
//! Rules (the project's own requirements; `README.md` and `SECURITY.md` tell the operator's side):
//!
//! - verifiers are Argon2id PHC strings with a 16-byte random salt and a 32-byte tag, at least
//!   m=19456 KiB, t=2, p=1, keyed with the pepper; the pepper id is stored beside each, and a
//!   verifier below the current cost or made with a retired pepper is re-hashed on its next
//!   successful verification;
//! - the pepper file must be owner-only, or nothing starts; nothing starts either while codes in
//!   use were made with a pepper that is not loaded (restore it, or invalidate those codes);
//! - a candidate lives in [`Code`] (no `Debug`, `Display`, `Clone` or `Serialize`; zeroed on
//!   drop) and reaches no log, error, audit record or response; tags are compared in constant
//!   time;
//! - verification exists only for an open alarm of the contact's customer, always computes two
//!   Argon2id hashes, and answers unknown contacts like wrong codes;
//! - five consecutive wrong codes for a contact lock phone cancellation for the customer until
//!   a supervisor resets the code; more than ten wrong codes by one operator within an hour
//!   alert the supervisor; neither ever blocks alarm handling;
//! - a duress code answers like the right code and silently escalates the alarm to a duress
//!   alarm at the top priority, which can never be closed as a cancellation;
//! - every set, reset, invalidation, unlock, re-hash and attempt is in the audit log, never the
//!   candidate, not even hashed.

pub mod attempt;
pub mod audit;
pub mod codes;
pub mod hash;
pub mod lockout;
pub mod published;
pub mod service;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use attempt::{Answer, Verdict, VerifyError, VerifyRequest};
pub use codes::{Code, Kind};
pub use hash::{Cost, Hasher, Pepper, PepperError, PepperRing};
pub use lockout::Limits;
pub use service::{CodeService, ResetError};

/// The name the operator API knows the verification service by.
pub type Verifier = CodeService;

use crate::clock::Clock;
use crate::config::Config;
use crate::store::writer::WriterHandle;

/// Setting up code verification failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The pepper file.
    #[error(transparent)]
    Pepper(#[from] PepperError),
    /// The Argon2id parameters.
    #[error("codes.argon2_*: {0}")]
    Hash(#[from] hash::HashError),
    /// The audit key file.
    #[error(transparent)]
    AuditKey(#[from] audit::AuditKeyError),
    /// The database file cannot be found.
    #[error("the database {path}")]
    Database {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Codes in use are verified with a pepper that is not loaded.
    #[error(
        "{codes} phone code(s) in use are verified with pepper {pepper_ids}, which is not loaded: the pepper file \
         {path} {found}. Restore the pepper file from its backup (or name it in codes.retired_pepper_files); or run \
         `meldkamer code invalidate --all` (every code then answers \"invalidated, use call-back\" until it is set \
         again), after which a new pepper file is made"
    )]
    PepperLost {
        /// The pepper file.
        path: PathBuf,
        /// "is missing", or which pepper it holds.
        found: String,
        /// The ids of the peppers the codes need.
        pepper_ids: String,
        /// Codes that cannot be verified.
        codes: i64,
    },
    /// The database could not be read.
    #[error("opening the database {path}")]
    Store {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::store::StoreError,
    },
}

/// Pepper ids of the codes in use (not invalidated) and how many each, from the database if
/// there is one. Needs no pepper.
fn peppers_in_use(cfg: &Config) -> Result<Vec<(String, i64)>, SetupError> {
    if !cfg.store.path.exists() {
        return Ok(Vec::new());
    }
    let store = |source| SetupError::Store {
        path: cfg.store.path.clone(),
        source,
    };
    let conn =
        crate::store::open_read(&cfg.store.path, Duration::from_millis(cfg.store.busy_timeout_ms)).map_err(store)?;
    let read = || -> Result<Vec<(String, i64)>, rusqlite::Error> {
        let has_table: bool = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'code_verifiers'",
            [],
            |r| r.get(0),
        )?;
        if !has_table {
            return Ok(Vec::new());
        }
        conn.prepare(
            "SELECT pepper_id, count(*) FROM code_verifiers WHERE invalidated_ms IS NULL GROUP BY pepper_id
             ORDER BY pepper_id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
    };
    read().map_err(|e| store(e.into()))
}

/// The hasher for a configuration: loads the pepper (creating it, owner-only, when missing —
/// logged) and the retired peppers. Refuses a pepper file others may read, and refuses to go on
/// (without making a new pepper) while codes in use were made with a pepper that is not loaded:
/// each would answer "rejected", a duress code too, and escalate nothing.
pub fn hasher_from_config(cfg: &Config) -> Result<Hasher, SetupError> {
    let path = cfg.codes.pepper_path(&cfg.store);
    let in_use = peppers_in_use(cfg)?;
    let lost = |found: String, ids: Vec<&(String, i64)>| SetupError::PepperLost {
        path: path.clone(),
        found,
        pepper_ids: ids.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(", "),
        codes: ids.iter().map(|(_, n)| n).sum(),
    };
    let retired = cfg
        .codes
        .retired_pepper_files
        .iter()
        .map(|p| Pepper::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    // A missing pepper file is made only when no code in use needs the pepper it held.
    let uncovered: Vec<&(String, i64)> = in_use
        .iter()
        .filter(|(id, _)| !retired.iter().any(|p| p.id() == id))
        .collect();
    if !uncovered.is_empty() && !crate::keyfile::exists("pepper file", &path).map_err(PepperError::from)? {
        return Err(lost("is missing".into(), uncovered));
    }
    let (pepper, created) = Pepper::load_or_create(&path)?;
    if created {
        tracing::warn!(
            path = %path.display(), pepper_id = pepper.id(),
            "created a new pepper file for phone cancellation codes (owner-only); back it up apart from the database"
        );
    } else {
        tracing::info!(path = %path.display(), pepper_id = pepper.id(), "pepper loaded");
    }
    let current = pepper.id().to_string();
    let mut ring = PepperRing::new(pepper);
    for p in retired {
        ring = ring.with_retired(p);
    }
    let unknown: Vec<&(String, i64)> = in_use.iter().filter(|(id, _)| ring.get(id).is_none()).collect();
    if !unknown.is_empty() {
        return Err(lost(format!("holds pepper {current}"), unknown));
    }
    Ok(Hasher::new(ring, Cost::from_config(&cfg.codes))?)
}

/// The audit key of a configuration's database, registered for it ([`audit::register`]) so
/// that every connection to the database appends keyed rows. Created (owner-only, logged) when
/// missing and no row is keyed yet; refused when rows are keyed and the file is missing or holds
/// another key, or when others may read it. The database must exist.
pub fn audit_key_from_config(cfg: &Config) -> Result<Arc<audit::AuditKey>, SetupError> {
    let store = |source| SetupError::Store {
        path: cfg.store.path.clone(),
        source,
    };
    let conn =
        crate::store::open_read(&cfg.store.path, Duration::from_millis(cfg.store.busy_timeout_ms)).map_err(store)?;
    let path = cfg.audit.key_path(&cfg.store);
    let Some((key, created)) = audit::load_key(&path, &conn, true)? else {
        return Err(store(crate::store::StoreError::NoAuditKey));
    };
    if created {
        tracing::warn!(
            path = %path.display(), key_id = key.id(),
            "created a new audit key file (owner-only); back it up apart from the database"
        );
    } else {
        tracing::debug!(path = %path.display(), key_id = key.id(), "audit key loaded");
    }
    let key = Arc::new(key);
    audit::register(&cfg.store.path, key.clone()).map_err(|source| SetupError::Database {
        path: cfg.store.path.clone(),
        source,
    })?;
    Ok(key)
}

/// The verification service of a daemon.
pub fn service_from_config(cfg: &Config, hasher: Hasher, writer: WriterHandle, clock: Arc<dyn Clock>) -> CodeService {
    CodeService::new(
        Arc::new(hasher),
        Limits::from_config(cfg),
        writer,
        cfg.store.path.clone(),
        Duration::from_millis(cfg.store.busy_timeout_ms),
        clock,
        cfg.codes.max_concurrent_verifications,
    )
}
