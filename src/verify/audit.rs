//! The audit log: who did what to which subject, when, with what result. Append-only (SQLite
//! triggers refuse UPDATE and DELETE) and chained: each row stores
//! `HMAC-SHA256(audit key, domain ‖ id ‖ time ‖ actor ‖ action ‖ subject ‖ detail ‖ result ‖
//! failures ‖ previous row's hash)` and the id of the key. The audit key is a file outside the
//! database ([`AuditKey`], managed like the pepper), so someone who can write the database but
//! does not have the key can neither recompute a changed row nor forge a new chain.
//! [`verify`] recomputes the chain and names the first row that does not fit.
//!
//! Rows written before the chain was keyed (schema version 13) carry a plain
//! `SHA-256(domain v1 ‖ …)` and no key id. They stay verifiable as a prefix: the first keyed row
//! chains to the last of them, and after a keyed row an unkeyed one is a break.
//!
//! Every text field is stored escaped (control characters, DEL, C1, line separators and
//! bidirectional controls become `\n`, `\e`, `\x07`, `\u{202e}`…; a backslash becomes `\\`)
//! and capped ([`MAX_FIELD`], [`MAX_DETAIL`] characters, a cut marked `…[N more characters cut]`),
//! so `meldkamer audit list` can never print a forged line and one huge field cannot bloat the
//! log. The MAC covers the stored text. A name that may be a secret typed in the wrong field (an
//! unknown login name) goes in as its [`pseudonym`].
//!
//! Generic on purpose: code operations and verification attempts use it, and so does every
//! operator action. Callers never put a secret in it — not a code, not a candidate, not even
//! a hash of one (a short code's hash can be brute-forced).
//!
//! What a chain cannot show by itself: rows cut off at the end, or a whole chain rewritten
//! (with plain hashes, or with another key). For that the daemon publishes the head
//! (`verify::published`: a log line, the event stream, the heads file) and [`verify`] checks
//! every published head: still there, unchanged. The two triggers are checked by their full
//! text, not by name (a do-nothing trigger of the same name does not pass), and no other
//! trigger may sit on the table (a `RAISE(IGNORE)` one would drop rows silently).
//!
//! The key reaches [`append`] through the database: [`register`] records the key loaded for a
//! database file, and every connection to that file finds it ([`key_for`]). So the writer and
//! every command that opens the database append keyed rows without passing the key around.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use hmac::{KeyInit, Mac};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::keyfile::{self, KEY_LEN, KeyFileError};
use crate::store::StoreError;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The hash before the first row.
pub const GENESIS: [u8; 32] = [0; 32];

/// Longest actor, action, subject or result stored, in characters (after escaping).
pub const MAX_FIELD: usize = 128;
/// Longest detail stored, in characters (after escaping).
pub const MAX_DETAIL: usize = 1024;

/// The escape of a character that must not reach a terminal or a log line as itself: control
/// characters (C0, DEL, C1), line and paragraph separators, and the bidirectional formatting
/// characters that reorder what a reader sees. `None`: the character stands for itself.
fn escape_char(c: char) -> Option<String> {
    match c {
        '\n' => Some("\\n".into()),
        '\r' => Some("\\r".into()),
        '\t' => Some("\\t".into()),
        '\u{1b}' => Some("\\e".into()),
        '\0'..='\u{1f}' | '\u{7f}' => Some(format!("\\x{:02x}", u32::from(c))),
        '\u{80}'..='\u{9f}'
        | '\u{2028}'
        | '\u{2029}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => Some(format!("\\u{{{:04x}}}", u32::from(c))),
        _ => None,
    }
}

/// The stored form of one input character: itself, or an escape.
fn piece(c: char) -> Option<String> {
    if c == '\\' { Some("\\\\".into()) } else { escape_char(c) }
}

fn cut_marker(left: usize) -> String {
    format!("…[{left} more characters cut]")
}

/// A field as it is stored: every control character escaped (a backslash too, so the escapes
/// are unambiguous), at most `cap` characters, a cut marked visibly with how many input
/// characters were left out. An escape is never cut in half.
pub fn clean(s: &str, cap: usize) -> String {
    let width = |c: char| piece(c).map_or(1, |p| p.chars().count());
    let mut n = 0usize;
    let mut total = 0usize;
    for c in s.chars() {
        n += 1;
        total += width(c);
    }
    // The marker for the most that could be cut is the longest, so the cut below always fits.
    let budget = if total <= cap {
        usize::MAX
    } else {
        cap.saturating_sub(cut_marker(n).chars().count())
    };
    let mut out = String::with_capacity(s.len().min(cap.saturating_mul(4)));
    let (mut used, mut kept) = (0usize, 0usize);
    for c in s.chars() {
        let w = width(c);
        if used + w > budget {
            break;
        }
        match piece(c) {
            Some(p) => out.push_str(&p),
            None => out.push(c),
        }
        used += w;
        kept += 1;
    }
    if kept < n {
        out.push_str(&cut_marker(n - kept));
    }
    out
}

/// Control characters of a stored field escaped for showing (rows written before fields were
/// cleaned may hold them); backslashes stay as they are.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| escape_char(c).is_some()) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match escape_char(c) {
            Some(p) => out.push_str(&p),
            None => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// One audit entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRecord<'a> {
    /// Who: an operator id, `cli:USER`, `system`.
    pub actor: &'a str,
    /// What: `code_set`, `code_verify`, `alarm_close`, …
    pub action: &'a str,
    /// On what: `contact:REF`, `customer:REF`, `alarm:PUBLIC_ID`, …
    pub subject: &'a str,
    /// Context, never a secret.
    pub detail: &'a str,
    /// `ok`, `refused`, or the verification verdict.
    pub result: &'a str,
    /// A failure counter after the action, where there is one.
    pub failures: Option<i64>,
}

/// The key of the audit chain: 32 secret bytes and their public id. No `Display`, `Clone` or
/// `Serialize`; `Debug` shows the id only; zeroed when dropped.
pub struct AuditKey {
    id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// How errors name the audit key file.
const WHAT: &str = "audit key file";

impl AuditKey {
    /// A key from its bytes.
    pub fn from_bytes(key: [u8; KEY_LEN]) -> AuditKey {
        let key = Zeroizing::new(key);
        let id = keyfile::key_id(b"meldkamer audit key id v1\0", &key);
        AuditKey { id, key }
    }

    /// The id stored beside each row it keyed.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length: this cannot fail.
        match <HmacSha256 as KeyInit>::new_from_slice(self.key.as_slice()) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts 32-byte keys"),
        }
    }
}

/// The audit key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditKeyError {
    /// The file is unusable (permissions, format, I/O).
    #[error(transparent)]
    File(#[from] KeyFileError),
    /// The file is gone while rows are keyed with it.
    #[error(
        "audit key file {path} is missing, but {rows} audit rows are keyed with audit key {key_id}: restore the file \
         from its backup (a new key could neither check those rows nor extend their chain)"
    )]
    Lost {
        /// The file.
        path: PathBuf,
        /// Rows keyed so far.
        rows: i64,
        /// The id of their key.
        key_id: String,
    },
    /// The file holds another key than the one the rows were keyed with.
    #[error(
        "audit key file {path} holds key {found}, but the audit rows are keyed with {expected}: restore the right file"
    )]
    Other {
        /// The file.
        path: PathBuf,
        /// The key in the file.
        found: String,
        /// The key of the newest keyed row.
        expected: String,
    },
    /// Reading the database failed.
    #[error("reading the audit log")]
    Store(#[from] StoreError),
}

/// The key of the newest keyed row and how many rows are keyed.
fn keyed_rows(conn: &Connection) -> Result<Option<(String, i64)>, StoreError> {
    let last: Option<String> = conn
        .query_row(
            "SELECT key_id FROM audit_log WHERE key_id IS NOT NULL ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = last else { return Ok(None) };
    let n: i64 = conn.query_row("SELECT count(*) FROM audit_log WHERE key_id IS NOT NULL", [], |r| {
        r.get(0)
    })?;
    Ok(Some((id, n)))
}

/// The audit key of the database `conn` is open on, from `path`. A missing file is created
/// (owner-only) when `create` and no row is keyed yet; with keyed rows a missing file, or a file
/// with another key, is refused. `Ok(None)`: no file and not created (a reader of a log with no
/// keyed rows). The bool: the file was created.
pub fn load_key(path: &Path, conn: &Connection, create: bool) -> Result<Option<(AuditKey, bool)>, AuditKeyError> {
    load_key_for(path, keyed_rows(conn)?, create)
}

/// [`load_key`] for a database of any backend: `keyed` is the key id of its newest keyed row
/// and how many rows are keyed (`None`: no keyed row).
pub fn load_key_for(
    path: &Path,
    keyed: Option<(String, i64)>,
    create: bool,
) -> Result<Option<(AuditKey, bool)>, AuditKeyError> {
    if !keyfile::exists(WHAT, path)? {
        return match keyed {
            Some((key_id, rows)) => Err(AuditKeyError::Lost {
                path: path.to_path_buf(),
                rows,
                key_id,
            }),
            None if create => {
                let (k, created) = keyfile::read_or_create(WHAT, path)?;
                Ok(Some((AuditKey::from_bytes(*k), created)))
            }
            None => Ok(None),
        };
    }
    let key = AuditKey::from_bytes(*keyfile::read(WHAT, path)?);
    if let Some((expected, _)) = keyed
        && expected != key.id
    {
        return Err(AuditKeyError::Other {
            path: path.to_path_buf(),
            found: key.id.clone(),
            expected,
        });
    }
    Ok(Some((key, false)))
}

/// Audit keys by database file (canonical path), as loaded by the daemon and the commands.
fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<AuditKey>>> {
    static KEYS: OnceLock<Mutex<HashMap<PathBuf, Arc<AuditKey>>>> = OnceLock::new();
    KEYS.get_or_init(Default::default)
}

/// Record `key` as the audit key of the database file `db` (which must exist): every
/// connection to that file appends and verifies with it from now on.
pub fn register(db: &Path, key: Arc<AuditKey>) -> std::io::Result<()> {
    let path = std::fs::canonicalize(db)?;
    registry().lock().unwrap_or_else(|p| p.into_inner()).insert(path, key);
    Ok(())
}

/// The audit key registered for the database `conn` is open on.
pub fn key_for(conn: &Connection) -> Option<Arc<AuditKey>> {
    let path = conn.path().filter(|p| !p.is_empty())?;
    let path = std::fs::canonicalize(path).ok()?;
    registry().lock().unwrap_or_else(|p| p.into_inner()).get(&path).cloned()
}

/// A name that must not reach the permanent log verbatim (an unknown login name may be a
/// password typed into the wrong field), as `name#` and 16 hex digits of a keyed hash: the same
/// name gives the same pseudonym, so repeated attempts still line up, and without the audit key
/// nobody can test guesses against it.
pub fn pseudonym(key: &AuditKey, name: &str) -> String {
    let mut m = key.mac();
    m.update(b"meldkamer audit pseudonym v1\0");
    m.update(name.as_bytes());
    let tag = m.finalize().into_bytes();
    format!("name#{}", hex::encode(&tag[..8]))
}

/// A stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the chain (1, 2, 3, … without gaps).
    pub id: i64,
    /// Unix ms.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub subject: String,
    /// Context.
    pub detail: String,
    /// Result.
    pub result: String,
    /// Failure counter.
    pub failures: Option<i64>,
    /// The previous row's hash.
    pub prev_hash: Vec<u8>,
    /// This row's hash (a MAC for keyed rows).
    pub row_hash: Vec<u8>,
    /// The id of the key of a keyed row; `None` for a row from before the chain was keyed.
    pub key_id: Option<String>,
}

/// The serialised content of a row, chained to `prev`, fed to `update`.
fn feed(mut update: impl FnMut(&[u8]), domain: &[u8], id: i64, at_ms: i64, r: &AuditRecord<'_>, prev: &[u8]) {
    update(domain);
    update(&id.to_be_bytes());
    update(&at_ms.to_be_bytes());
    for s in [r.actor, r.action, r.subject, r.detail, r.result] {
        update(&(s.len() as u64).to_be_bytes());
        update(s.as_bytes());
    }
    match r.failures {
        Some(n) => {
            update(&[1]);
            update(&n.to_be_bytes());
        }
        None => update(&[0]),
    }
    update(&(prev.len() as u64).to_be_bytes());
    update(prev);
}

/// The plain hash of a row from before the chain was keyed (version 1).
pub fn row_hash(id: i64, at_ms: i64, r: &AuditRecord<'_>, prev: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    feed(|b| h.update(b), b"meldkamer audit v1\0", id, at_ms, r, prev);
    h.finalize().into()
}

/// The MAC of a keyed row.
pub fn row_mac(key: &AuditKey, id: i64, at_ms: i64, r: &AuditRecord<'_>, prev: &[u8]) -> [u8; 32] {
    let mut m = key.mac();
    feed(|b| m.update(b), b"meldkamer audit v2\0", id, at_ms, r, prev);
    m.finalize().into_bytes().into()
}

/// Append a record inside the caller's transaction (so the action and its record commit
/// together), keyed with the audit key registered for the database ([`register`]). Returns the
/// row id. Without a registered key nothing is written: the caller's transaction fails.
pub fn append(tx: &Transaction<'_>, at_ms: i64, r: &AuditRecord<'_>) -> Result<i64, StoreError> {
    let key = key_for(tx).ok_or(StoreError::NoAuditKey)?;
    append_keyed(tx, &key, at_ms, r)
}

/// [`append`] with the key given.
///
/// Every text field is stored [`clean`]ed (control characters escaped, length capped: a log
/// line read back can never hold a second, forged line) and the MAC is over the stored text.
pub fn append_keyed(tx: &Transaction<'_>, key: &AuditKey, at_ms: i64, r: &AuditRecord<'_>) -> Result<i64, StoreError> {
    let (actor, action, subject, detail, result) = (
        clean(r.actor, MAX_FIELD),
        clean(r.action, MAX_FIELD),
        clean(r.subject, MAX_FIELD),
        clean(r.detail, MAX_DETAIL),
        clean(r.result, MAX_FIELD),
    );
    let r = &AuditRecord {
        actor: &actor,
        action: &action,
        subject: &subject,
        detail: &detail,
        result: &result,
        failures: r.failures,
    };
    let last: Option<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT id, row_hash FROM audit_log ORDER BY id DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let (id, prev) = match last {
        Some((id, h)) => (id + 1, h),
        None => (1, GENESIS.to_vec()),
    };
    let mac = row_mac(key, id, at_ms, r, &prev);
    let stored = tx
        .prepare_cached(
            "INSERT INTO audit_log (id, at_ms, actor, action, subject, detail, result, failures, prev_hash, row_hash, key_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            id,
            at_ms,
            r.actor,
            r.action,
            r.subject,
            r.detail,
            r.result,
            r.failures,
            prev,
            mac.to_vec(),
            key.id()
        ])?;
    if stored != 1 {
        // A trigger swallowed the row (RAISE(IGNORE)): the action must not commit unrecorded.
        return Err(StoreError::AuditNotStored);
    }
    Ok(id)
}

/// Rows in order, from `after` (exclusive).
pub fn rows(conn: &Connection, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, at_ms, actor, action, subject, detail, result, failures, prev_hash, row_hash, key_id
         FROM audit_log WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let v = stmt
        .query_map(params![after, limit], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                subject: r.get(4)?,
                detail: r.get(5)?,
                result: r.get(6)?,
                failures: r.get(7)?,
                prev_hash: r.get(8)?,
                row_hash: r.get(9)?,
                key_id: r.get(10)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(v)
}

/// The newest row and its hash.
pub fn head(conn: &Connection) -> Result<Option<(i64, [u8; 32])>, StoreError> {
    let last: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT id, row_hash FROM audit_log ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(last.and_then(|(id, h)| <[u8; 32]>::try_from(h.as_slice()).ok().map(|h| (id, h))))
}

/// Why a row breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    /// Ids are not consecutive.
    #[error("row #{id} follows row #{previous}: rows in between are missing")]
    Gap {
        /// This row.
        id: i64,
        /// The row before it.
        previous: i64,
    },
    /// The row's content does not match its hash.
    #[error("row #{id}: its content does not match its hash (the row was changed, or rehashed without the audit key)")]
    Content {
        /// The row.
        id: i64,
    },
    /// The row does not chain to the one before it.
    #[error("row #{id}: it does not chain to the row before it (a row before it was changed, removed or inserted)")]
    Link {
        /// The row.
        id: i64,
    },
    /// An unkeyed row after a keyed one.
    #[error("row #{id}: a plain-hashed row after keyed rows (the chain was rewritten without the audit key)")]
    Unkeyed {
        /// The row.
        id: i64,
    },
    /// A row keyed with another key than the audit key.
    #[error("row #{id}: keyed with key {key_id}, not with the audit key (the chain was rewritten with another key)")]
    OtherKey {
        /// The row.
        id: i64,
        /// The key it names.
        key_id: String,
    },
    /// A keyed row, and no audit key to check it with.
    #[error("row #{id} is keyed, but no audit key is loaded to check it")]
    NoKey {
        /// The row.
        id: i64,
    },
    /// An anchor or a published head is not in the chain as recorded.
    #[error("row #{id} does not have the hash published for it (the log was rewritten)")]
    Anchor {
        /// The anchored row.
        id: i64,
    },
    /// The log ends before a published head.
    #[error("the log ends at row #{last}, but head #{head} was published: rows were cut off the end")]
    Cut {
        /// The published head.
        head: i64,
        /// The last row there is (0: none).
        last: i64,
    },
}

impl Break {
    /// The row named.
    pub fn row(&self) -> i64 {
        match self {
            Break::Gap { id, .. }
            | Break::Content { id }
            | Break::Link { id }
            | Break::Unkeyed { id }
            | Break::OtherKey { id, .. }
            | Break::NoKey { id }
            | Break::Anchor { id } => *id,
            Break::Cut { head, .. } => *head,
        }
    }
}

/// The outcome of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Rows checked.
    pub rows: u64,
    /// The last row and its hash.
    pub head: Option<(i64, [u8; 32])>,
    /// The first row that breaks the chain.
    pub broken: Option<Break>,
    /// The UPDATE/DELETE triggers are in place, exactly as created, and no other.
    pub triggers_intact: bool,
    /// The first keyed row (rows before it carry plain hashes).
    pub keyed_from: Option<i64>,
    /// Published heads and anchors found in the chain as recorded.
    pub heads_matched: usize,
}

impl ChainReport {
    /// Intact: no break and the triggers in place.
    pub fn ok(&self) -> bool {
        self.broken.is_none() && self.triggers_intact
    }
}

/// The triggers that make the table append-only, as created (whitespace normalised).
const TRIGGERS: [(&str, &str); 2] = [
    (
        "audit_log_no_update",
        "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    ),
    (
        "audit_log_no_delete",
        "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    ),
];

fn normalise_sql(sql: &str) -> String {
    sql.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(';')
        .trim_end()
        .to_string()
}

/// Exactly the two triggers, each with its full text as created, and no other trigger on the
/// table.
pub fn triggers_intact(conn: &Connection) -> Result<bool, StoreError> {
    let found: Vec<(String, Option<String>)> = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND (tbl_name = 'audit_log' OR name IN (?1, ?2))")?
        .query_map([TRIGGERS[0].0, TRIGGERS[1].0], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if found.len() != TRIGGERS.len() {
        return Ok(false);
    }
    Ok(TRIGGERS.iter().all(|(name, sql)| {
        found
            .iter()
            .any(|(n, s)| n == name && s.as_deref().map(normalise_sql).as_deref() == Some(*sql))
    }))
}

/// Recompute the chain from the first row with the audit key registered for this database
/// ([`key_for`]); stop at the first break. `anchor`: an earlier head that must still be there.
pub fn verify_chain(conn: &Connection, anchor: Option<(i64, [u8; 32])>) -> Result<ChainReport, StoreError> {
    let key = key_for(conn);
    verify(conn, key.as_deref(), anchor.as_slice())
}

/// Recompute the chain from the first row; stop at the first break. Plain-hashed rows are
/// accepted only before the first keyed row; keyed rows must carry the id of `key` and its MAC.
/// `heads`: published heads and anchors (row id, hash), each of which must still be there,
/// unchanged; one beyond the last row means rows were cut off.
pub fn verify(conn: &Connection, key: Option<&AuditKey>, heads: &[(i64, [u8; 32])]) -> Result<ChainReport, StoreError> {
    let mut walk = ChainWalk::new(key, heads, triggers_intact(conn)?);
    loop {
        let batch = rows(conn, walk.after(), 1000)?;
        if batch.is_empty() || !walk.push_all(batch) {
            break;
        }
    }
    Ok(walk.finish())
}

/// The walk along the chain, fed rows in id order by whoever reads them (SQLite here,
/// PostgreSQL in `store::pg::audit`): one check of the chain for every backend.
#[derive(Debug)]
pub struct ChainWalk<'k> {
    key: Option<&'k AuditKey>,
    wanted: HashMap<i64, Vec<[u8; 32]>>,
    prev_id: i64,
    prev_hash: Vec<u8>,
    report: ChainReport,
}

impl<'k> ChainWalk<'k> {
    /// A walk from the genesis, checking keyed rows with `key` and every head in `heads`;
    /// `triggers_intact`: what the backend found of the table's append-only protection.
    pub fn new(key: Option<&'k AuditKey>, heads: &[(i64, [u8; 32])], triggers_intact: bool) -> ChainWalk<'k> {
        let mut wanted: HashMap<i64, Vec<[u8; 32]>> = HashMap::new();
        for (id, h) in heads {
            wanted.entry(*id).or_default().push(*h);
        }
        ChainWalk {
            key,
            wanted,
            prev_id: 0,
            prev_hash: GENESIS.to_vec(),
            report: ChainReport {
                rows: 0,
                head: None,
                broken: None,
                triggers_intact,
                keyed_from: None,
                heads_matched: 0,
            },
        }
    }

    /// The id of the last row taken: read the next rows after it.
    pub fn after(&self) -> i64 {
        self.prev_id
    }

    /// Take the next row. False: the chain broke here (the report names it); stop feeding.
    pub fn push(&mut self, r: AuditRow) -> bool {
        if self.report.broken.is_some() {
            return false;
        }
        let report = &mut self.report;
        report.rows += 1;
        if let Some(b) = check_row(&r, self.prev_id, &self.prev_hash, self.key, report.keyed_from.is_some()) {
            report.broken = Some(b);
            return false;
        }
        if r.key_id.is_some() && report.keyed_from.is_none() {
            report.keyed_from = Some(r.id);
        }
        if let Some(hs) = self.wanted.remove(&r.id) {
            for h in hs {
                if !bool::from(h.as_slice().ct_eq(&r.row_hash)) {
                    report.broken = Some(Break::Anchor { id: r.id });
                    return false;
                }
                report.heads_matched += 1;
            }
        }
        self.prev_id = r.id;
        self.prev_hash = r.row_hash;
        report.head = <[u8; 32]>::try_from(self.prev_hash.as_slice()).ok().map(|h| (r.id, h));
        true
    }

    /// [`ChainWalk::push`] each row of a batch; false once the chain broke.
    pub fn push_all(&mut self, rows: impl IntoIterator<Item = AuditRow>) -> bool {
        rows.into_iter().all(|r| self.push(r))
    }

    /// The report, after the last row: a published head beyond it means rows were cut off the
    /// end (the last one published is named).
    pub fn finish(mut self) -> ChainReport {
        if self.report.broken.is_none()
            && let Some(head) = self.wanted.keys().copied().max()
        {
            self.report.broken = Some(Break::Cut {
                head,
                last: self.prev_id,
            });
        }
        self.report
    }
}

/// The break `r` makes after the row `prev_id` with hash `prev_hash`, if any.
fn check_row(r: &AuditRow, prev_id: i64, prev_hash: &[u8], key: Option<&AuditKey>, keyed_seen: bool) -> Option<Break> {
    if r.id != prev_id + 1 {
        return Some(Break::Gap {
            id: r.id,
            previous: prev_id,
        });
    }
    let rec = AuditRecord {
        actor: &r.actor,
        action: &r.action,
        subject: &r.subject,
        detail: &r.detail,
        result: &r.result,
        failures: r.failures,
    };
    let expect = match (&r.key_id, key) {
        (None, _) if keyed_seen => return Some(Break::Unkeyed { id: r.id }),
        (None, _) => row_hash(r.id, r.at_ms, &rec, &r.prev_hash),
        (Some(_), None) => return Some(Break::NoKey { id: r.id }),
        (Some(k), Some(key)) if k != key.id() => {
            return Some(Break::OtherKey {
                id: r.id,
                key_id: k.clone(),
            });
        }
        (Some(_), Some(key)) => row_mac(key, r.id, r.at_ms, &rec, &r.prev_hash),
    };
    if !bool::from(expect.as_slice().ct_eq(&r.row_hash)) {
        return Some(Break::Content { id: r.id });
    }
    if !bool::from(r.prev_hash.as_slice().ct_eq(prev_hash)) {
        return Some(Break::Link { id: r.id });
    }
    None
}

/// Parse an anchor `ID:HEX`.
pub fn parse_anchor(s: &str) -> Option<(i64, [u8; 32])> {
    let (id, h) = s.split_once(':')?;
    let id: i64 = id.trim().trim_start_matches('#').parse().ok()?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(h.trim(), &mut out).ok()?;
    Some((id, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::from_bytes([5; KEY_LEN])
    }

    fn db_with(n: usize) -> Connection {
        let mut conn = Connection::open_in_memory().expect("db");
        crate::store::schema::migrate(&conn).expect("schema");
        let tx = conn.transaction().expect("tx");
        for i in 0..n {
            append_keyed(
                &tx,
                &key(),
                1000 + i as i64,
                &AuditRecord {
                    actor: "op1",
                    action: "test",
                    subject: &format!("thing:{i}"),
                    detail: "",
                    result: "ok",
                    failures: (i % 2 == 0).then_some(i as i64),
                },
            )
            .expect("append");
        }
        tx.commit().expect("commit");
        conn
    }

    #[test]
    fn an_intact_chain_verifies_and_reports_its_head() {
        let conn = db_with(5);
        let k = key();
        let r = verify(&conn, Some(&k), &[]).expect("verify");
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.rows, r.keyed_from), (5, Some(1)));
        let (id, h) = r.head.expect("head");
        assert_eq!(id, 5);
        assert!(verify(&conn, Some(&k), &[(id, h)]).expect("anchor").ok());
        assert_eq!(
            verify(&conn, Some(&k), &[(3, h)]).expect("anchor").broken,
            Some(Break::Anchor { id: 3 })
        );
        assert_eq!(
            verify(&conn, Some(&k), &[(9, h)]).expect("anchor").broken,
            Some(Break::Cut { head: 9, last: 5 })
        );
        let empty = db_with(0);
        assert!(verify(&empty, Some(&k), &[]).expect("verify").ok());
        assert_eq!(
            verify(&conn, None, &[]).expect("no key").broken,
            Some(Break::NoKey { id: 1 })
        );
        let other = AuditKey::from_bytes([6; KEY_LEN]);
        assert!(matches!(
            verify(&conn, Some(&other), &[]).expect("other key").broken,
            Some(Break::OtherKey { id: 1, .. })
        ));
    }

    /// Rows from before the chain was keyed verify as a prefix; the first keyed row chains to
    /// the last of them; after a keyed row a plain one is a break.
    #[test]
    fn plain_rows_verify_as_a_prefix_and_never_after_a_keyed_one() {
        let mut conn = Connection::open_in_memory().expect("db");
        crate::store::schema::migrate(&conn).expect("schema");
        let rec = AuditRecord {
            actor: "op1",
            action: "test",
            subject: "s",
            detail: "",
            result: "ok",
            failures: None,
        };
        let mut prev = GENESIS.to_vec();
        for id in 1..=3 {
            let h = row_hash(id, 10, &rec, &prev);
            conn.execute(
                "INSERT INTO audit_log (id, at_ms, actor, action, subject, detail, result, prev_hash, row_hash)
                 VALUES (?1, 10, 'op1', 'test', 's', '', 'ok', ?2, ?3)",
                params![id, prev, h.to_vec()],
            )
            .expect("a version 1 row");
            prev = h.to_vec();
        }
        let tx = conn.transaction().expect("tx");
        append_keyed(&tx, &key(), 11, &rec).expect("keyed");
        tx.commit().expect("commit");
        let r = verify(&conn, Some(&key()), &[]).expect("verify");
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.keyed_from, Some(4));
        let stored_prev: Vec<u8> = conn
            .query_row("SELECT prev_hash FROM audit_log WHERE id = 4", [], |r| r.get(0))
            .expect("row 4");
        assert_eq!(stored_prev, prev, "the first keyed row commits to the plain head");
        // A plain row after it, however well-formed, breaks the chain.
        let head = r.head.expect("head").1;
        let h = row_hash(5, 12, &rec, &head);
        conn.execute(
            "INSERT INTO audit_log (id, at_ms, actor, action, subject, detail, result, prev_hash, row_hash)
             VALUES (5, 12, 'op1', 'test', 's', '', 'ok', ?1, ?2)",
            params![head.to_vec(), h.to_vec()],
        )
        .expect("a plain row");
        assert_eq!(
            verify(&conn, Some(&key()), &[]).expect("verify").broken,
            Some(Break::Unkeyed { id: 5 })
        );
    }

    #[test]
    fn pseudonyms_are_keyed_stable_and_hide_the_name() {
        let a = pseudonym(&key(), "hunter2");
        assert_eq!(a, pseudonym(&key(), "hunter2"));
        assert!(a.starts_with("name#") && a.len() == 5 + 16, "{a}");
        assert!(a[5..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!a.contains("hunter2"));
        assert_ne!(a, pseudonym(&key(), "hunter3"));
        assert_ne!(a, pseudonym(&AuditKey::from_bytes([6; KEY_LEN]), "hunter2"));
        assert!(!format!("{:?}", key()).contains("0505"), "Debug shows the id only");
    }

    #[test]
    fn triggers_refuse_update_and_delete() {
        let conn = db_with(2);
        let e = conn
            .execute("UPDATE audit_log SET result = 'x' WHERE id = 1", [])
            .expect_err("no update");
        assert!(e.to_string().contains("append-only"), "{e}");
        conn.execute("DELETE FROM audit_log WHERE id = 2", [])
            .expect_err("no delete");
        assert!(triggers_intact(&conn).expect("check"));
    }

    /// A trigger that drops new rows silently must not let an action commit unrecorded.
    #[test]
    fn a_trigger_that_swallows_rows_fails_the_append_and_the_check() {
        let mut conn = db_with(1);
        conn.execute_batch(
            "CREATE TRIGGER audit_log_quiet BEFORE INSERT ON audit_log BEGIN SELECT RAISE(IGNORE); END;",
        )
        .expect("trigger");
        assert!(!triggers_intact(&conn).expect("check"), "another trigger on the table");
        let tx = conn.transaction().expect("tx");
        let e = append_keyed(
            &tx,
            &key(),
            1,
            &AuditRecord {
                actor: "op1",
                action: "alarm_close",
                subject: "alarm:x",
                detail: "",
                result: "ok",
                failures: None,
            },
        )
        .expect_err("not stored");
        assert!(matches!(e, StoreError::AuditNotStored), "{e}");
    }

    #[test]
    fn clean_escapes_every_control_character_and_backslashes() {
        assert_eq!(clean("op1", MAX_FIELD), "op1");
        assert_eq!(clean("a\nb\rc\td\u{1b}[2K", MAX_FIELD), "a\\nb\\rc\\td\\e[2K");
        assert_eq!(clean("\0\u{7}\u{7f}", MAX_FIELD), "\\x00\\x07\\x7f");
        assert_eq!(
            clean("\u{85}\u{9b}\u{2028}\u{202e}\u{2066}", MAX_FIELD),
            "\\u{0085}\\u{009b}\\u{2028}\\u{202e}\\u{2066}"
        );
        assert_eq!(
            clean("C:\\x\\n", MAX_FIELD),
            "C:\\\\x\\\\n",
            "a typed backslash-n is not an escape"
        );
        assert_eq!(clean("zoë ☃", MAX_FIELD), "zoë ☃");
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            assert!(!clean(&c.to_string(), MAX_FIELD).chars().any(char::is_control), "{c:?}");
        }
    }

    #[test]
    fn clean_caps_with_a_counted_marker_and_never_cuts_an_escape() {
        let exact = "x".repeat(MAX_FIELD);
        assert_eq!(clean(&exact, MAX_FIELD), exact, "exactly the cap is kept whole");
        let over = "x".repeat(MAX_FIELD + 1);
        let c = clean(&over, MAX_FIELD);
        assert!(c.chars().count() <= MAX_FIELD);
        let kept = c.chars().take_while(|c| *c == 'x').count();
        assert_eq!(
            c,
            format!("{}…[{} more characters cut]", "x".repeat(kept), MAX_FIELD + 1 - kept)
        );
        // Escapes: each is kept whole or left out whole.
        let c = clean(&"\u{1b}".repeat(200), MAX_FIELD);
        assert!(c.chars().count() <= MAX_FIELD);
        let head = c.split('…').next().unwrap_or_default();
        assert_eq!(head.len() % 2, 0, "{c}");
        assert!(
            head.chars().collect::<Vec<_>>().chunks(2).all(|p| p == ['\\', 'e']),
            "{c}"
        );
        assert!(
            c.ends_with(&format!("[{} more characters cut]", 200 - head.len() / 2)),
            "{c}"
        );
        // Multi-byte characters count as one.
        let snow = "☃".repeat(MAX_FIELD);
        assert_eq!(clean(&snow, MAX_FIELD), snow);
        assert!(clean(&"☃".repeat(70_000), MAX_DETAIL).chars().count() <= MAX_DETAIL);
    }

    #[test]
    fn anchor_round_trips() {
        let h = [0xab; 32];
        assert_eq!(parse_anchor(&format!("7:{}", hex::encode(h))), Some((7, h)));
        assert_eq!(parse_anchor("7:zz"), None);
    }
}
