//! Transmitter accounts: the table the receiver consults for every frame (key, encryption
//! policy, quirks), held in memory and reloaded when an import bumps the generation counter.
//! Keys are stored sealed under the keys file ([`super::sealed`]) and opened as the table loads.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::sealed::{SealKey, associated_data};
use crate::protocol::crypto::{Key, KeyFormat};
use crate::protocol::frame::Quirks;
use crate::protocol::policy::AccountPolicy;

/// One account as the receiver needs it. `Debug` never shows the key (see [`Key`]).
#[derive(Debug, Clone)]
pub struct AccountEntry {
    /// Row id.
    pub id: i64,
    /// Account number as configured.
    pub account: String,
    /// Receiver number, or empty for any.
    pub receiver: String,
    /// Line prefix, or empty for any.
    pub line: String,
    /// What the decision table needs.
    pub policy: AccountPolicy,
    /// The supervision interval (configured, or from the EN 50136 category), if supervised.
    pub supervision_ms: Option<i64>,
}

/// All enabled accounts, indexed by account number.
#[derive(Debug, Default)]
pub struct AccountTable {
    by_account: HashMap<String, Vec<Arc<AccountEntry>>>,
    /// The `accounts_generation` this table was loaded at.
    pub generation: i64,
    /// Every quirk some account has enabled (the framer needs to know about binary CRCs).
    pub quirks_in_use: Quirks,
}

impl AccountTable {
    /// The best matching account: exact receiver and line first, then wildcards.
    pub fn lookup(&self, account: &str, receiver: Option<&str>, line: &str) -> Option<&Arc<AccountEntry>> {
        let candidates = self.by_account.get(account)?;
        let receiver = receiver.unwrap_or("");
        let score = |e: &AccountEntry| -> Option<u8> {
            let r = if e.receiver.is_empty() {
                0
            } else if e.receiver == receiver {
                2
            } else {
                return None;
            };
            let l = if e.line.is_empty() {
                0
            } else if e.line == line {
                1
            } else {
                return None;
            };
            Some(r + l)
        };
        candidates
            .iter()
            .filter_map(|e| score(e).map(|s| (s, e)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, e)| e)
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.by_account.values().map(Vec::len).sum()
    }

    /// True if there are no accounts.
    pub fn is_empty(&self) -> bool {
        self.by_account.is_empty()
    }
}

/// EN 50136-1 reporting time for a category and path, in seconds (a configured
/// `supervision_secs` overrides it). Single-path SP1…SP6; dual-path DP1…DP4 with the
/// primary and secondary path values.
pub fn ats_reporting_secs(category: &str, secondary: bool) -> Option<u64> {
    const H: u64 = 3600;
    Some(match (category, secondary) {
        ("SP1", _) => 32 * 24 * H,
        ("SP2", _) => 25 * H,
        ("SP3", _) => 30 * 60,
        ("SP4", _) => 3 * 60,
        ("SP5", _) => 90,
        ("SP6", _) => 20,
        ("DP1", _) => 25 * H,
        ("DP2", false) => 30 * 60,
        ("DP2", true) => 25 * H,
        ("DP3", false) => 3 * 60,
        ("DP3", true) => 25 * H,
        ("DP4", false) => 90,
        ("DP4", true) => 3 * 60,
        _ => return None,
    })
}

/// The current accounts generation.
pub fn generation(conn: &Connection) -> Result<i64, StoreError> {
    // Cached: the writer asks once per commit group.
    let v: Option<String> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'accounts_generation'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// Bump the generation so running daemons reload.
pub fn bump_generation(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'accounts_generation'",
        [],
    )?;
    Ok(())
}

/// Load every enabled account, opening each sealed key with `seal`. A key that does not open
/// (another keys file, an altered row) fails the whole load: a daemon must not run on with an
/// encrypted account it cannot decrypt.
pub fn load(conn: &Connection, seal: &SealKey) -> Result<AccountTable, StoreError> {
    let generation = generation(conn)?;
    let mut stmt = conn.prepare(
        "SELECT id, account, receiver, line, dc09_key, key_format, require_encryption, quirk_crc_binary,
                quirk_cr_in_crc, quirk_trailing_nul, check_plain_timestamp, ack_separator, key_sealed,
                supervision_secs, ats_category, path
         FROM accounts WHERE enabled = 1",
    )?;
    let mut table = AccountTable {
        generation,
        ..AccountTable::default()
    };
    let rows = stmt.query_map([], |r| {
        let account: String = r.get(1)?;
        let receiver: String = r.get(2)?;
        let line: String = r.get(3)?;
        let key_bytes: Option<Vec<u8>> = r.get(4)?;
        let key_format: Option<String> = r.get(5)?;
        let sealed: bool = r.get(12)?;
        let supervision_secs: Option<i64> = r.get(13)?;
        let ats_category: Option<String> = r.get(14)?;
        let path: String = r.get(15)?;
        let supervision_ms = supervision_secs
            .or_else(|| {
                ats_category
                    .as_deref()
                    .and_then(|c| ats_reporting_secs(c, path == "secondary"))
                    .map(|s| s as i64)
            })
            .map(|s| s.saturating_mul(1000));
        let format = match key_format.as_deref() {
            Some("ascii") => KeyFormat::Ascii,
            _ => KeyFormat::Hex,
        };
        let key = match (key_bytes, key_format.as_deref()) {
            (Some(b), Some(f)) if sealed => match seal.open(&b, &associated_data(&account, &receiver, &line, f)) {
                Some(plain) => Key::from_bytes(&plain, format).ok(),
                None => return Ok(Err(account)),
            },
            // Stored in plaintext by an older version, not sealed yet.
            (Some(b), Some(_)) => Key::from_bytes(&b, format).ok(),
            _ => None,
        };
        Ok(Ok(AccountEntry {
            id: r.get(0)?,
            policy: AccountPolicy {
                key,
                require_encryption: r.get(6)?,
                quirks: Quirks {
                    crc_binary: r.get(7)?,
                    cr_in_crc: r.get(8)?,
                    trailing_nul: r.get(9)?,
                },
                check_plain_timestamp: r.get(10)?,
                ack_separator: r.get(11)?,
            },
            supervision_ms,
            account,
            receiver,
            line,
        }))
    })?;
    for row in rows {
        let e = row?.map_err(|account| StoreError::AccountKey { account })?;
        table.quirks_in_use = table.quirks_in_use.union(e.policy.quirks);
        table.by_account.entry(e.account.clone()).or_default().push(Arc::new(e));
    }
    Ok(table)
}

/// An account as imported.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSpec {
    /// Account number (3–16 hex digits).
    pub account: String,
    /// Receiver number or empty.
    pub receiver: String,
    /// Line or empty.
    pub line: String,
    /// Key, if any.
    pub key: Option<Key>,
    /// Refuse plain frames.
    pub require_encryption: bool,
    /// Quirks accepted.
    pub quirks: Quirks,
    /// Check timestamps of plain frames.
    pub check_plain_timestamp: bool,
    /// `pad|]` in encrypted ACKs.
    pub ack_separator: bool,
    /// Enabled.
    pub enabled: bool,
    /// The site this transmitter path belongs to.
    pub site_id: Option<i64>,
    /// Path name ("primary", "secondary"), for dual-path supervision.
    pub path: String,
    /// EN 50136 ATS category (SP1…SP6, DP1…DP4) for the default reporting deadline.
    pub ats_category: Option<String>,
    /// Reporting deadline in seconds (overrides the category).
    pub supervision_secs: Option<u64>,
    /// When the account was first imported (Unix ms); kept on update.
    pub created_ms: i64,
}

impl AccountSpec {
    /// A plain account on any receiver and line, with nothing else set.
    pub fn plain(account: &str) -> AccountSpec {
        AccountSpec {
            account: account.to_string(),
            receiver: String::new(),
            line: String::new(),
            key: None,
            require_encryption: false,
            quirks: Quirks::NONE,
            check_plain_timestamp: false,
            ack_separator: false,
            enabled: true,
            site_id: None,
            path: "primary".to_string(),
            ats_category: None,
            supervision_secs: None,
            created_ms: 0,
        }
    }
}

/// Insert or update an account by (account, receiver, line), its key sealed with `seal`;
/// returns its id.
pub fn upsert(conn: &Connection, a: &AccountSpec, seal: &SealKey) -> Result<i64, StoreError> {
    Upsert::new(conn)?.run(a, a.site_id, a.created_ms, seal)
}

/// Account upserts with their statements prepared once (an import of a million accounts).
pub struct Upsert<'c> {
    conn: &'c Connection,
    insert: rusqlite::CachedStatement<'c>,
    find: rusqlite::CachedStatement<'c>,
}

impl<'c> Upsert<'c> {
    /// Prepare the statements on `conn`.
    pub fn new(conn: &'c Connection) -> Result<Self, StoreError> {
        Ok(Upsert {
            conn,
            insert: conn.prepare_cached(
                "INSERT INTO accounts (account, receiver, line, dc09_key, key_format, require_encryption,
                                       quirk_crc_binary, quirk_cr_in_crc, quirk_trailing_nul, check_plain_timestamp,
                                       ack_separator, enabled, site_id, path, ats_category, supervision_secs,
                                       created_ms, key_sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
                 ON CONFLICT (account, receiver, line) DO UPDATE SET
                     dc09_key = excluded.dc09_key, key_format = excluded.key_format, key_sealed = excluded.key_sealed,
                     require_encryption = excluded.require_encryption, quirk_crc_binary = excluded.quirk_crc_binary,
                     quirk_cr_in_crc = excluded.quirk_cr_in_crc, quirk_trailing_nul = excluded.quirk_trailing_nul,
                     check_plain_timestamp = excluded.check_plain_timestamp, ack_separator = excluded.ack_separator,
                     enabled = excluded.enabled, site_id = excluded.site_id, path = excluded.path,
                     ats_category = excluded.ats_category, supervision_secs = excluded.supervision_secs",
            )?,
            find: conn.prepare_cached("SELECT id FROM accounts WHERE account = ?1 AND receiver = ?2 AND line = ?3")?,
        })
    }

    /// [`upsert`] with the site and the creation time given apart from the spec (an import
    /// resolves the site and stamps the time for each account without copying it).
    pub fn run(
        &mut self,
        a: &AccountSpec,
        site_id: Option<i64>,
        created_ms: i64,
        seal: &SealKey,
    ) -> Result<i64, StoreError> {
        let (key, fmt): (Option<Vec<u8>>, Option<&str>) = match &a.key {
            Some(k) => {
                let fmt = match k.format() {
                    KeyFormat::Hex => "hex",
                    KeyFormat::Ascii => "ascii",
                };
                let aad = associated_data(&a.account, &a.receiver, &a.line, fmt);
                (Some(seal.seal(k.expose_bytes(), &aad)?), Some(fmt))
            }
            None => (None, None),
        };
        // Not `RETURNING id`: a statement with `RETURNING` keeps a statement journal (several
        // page copies per row, a third of a million-account import). An insert moves the last
        // inserted row id; an update leaves it, and the row is found by its key.
        let before = self.conn.last_insert_rowid();
        self.insert.execute(params![
            a.account,
            a.receiver,
            a.line,
            key,
            fmt,
            a.require_encryption,
            a.quirks.crc_binary,
            a.quirks.cr_in_crc,
            a.quirks.trailing_nul,
            a.check_plain_timestamp,
            a.ack_separator,
            a.enabled,
            site_id,
            a.path,
            a.ats_category,
            a.supervision_secs.map(|s| s as i64),
            created_ms,
            key.is_some()
        ])?;
        let id = self.conn.last_insert_rowid();
        if id != before {
            return Ok(id);
        }
        Ok(self
            .find
            .query_row(params![a.account, a.receiver, a.line], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(account: &str, receiver: &str, line: &str) -> AccountSpec {
        AccountSpec {
            receiver: receiver.into(),
            line: line.into(),
            ..AccountSpec::plain(account)
        }
    }

    #[test]
    fn lookup_prefers_exact_receiver_and_line() {
        let conn = Connection::open_in_memory().expect("db");
        super::super::schema::migrate(&conn).expect("schema");
        let any = upsert(&conn, &spec("1234", "", ""), &crate::store::sealed::test_key()).expect("any");
        let exact = upsert(&conn, &spec("1234", "1", "1"), &crate::store::sealed::test_key()).expect("exact");
        let line_only = upsert(&conn, &spec("1234", "", "7"), &crate::store::sealed::test_key()).expect("line");
        assert_eq!(
            upsert(&conn, &spec("1234", "1", "1"), &crate::store::sealed::test_key()).expect("again"),
            exact,
            "idempotent"
        );
        let t = load(&conn, &crate::store::sealed::test_key()).expect("load");
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup("1234", Some("1"), "1").map(|e| e.id), Some(exact));
        assert_eq!(t.lookup("1234", Some("2"), "1").map(|e| e.id), Some(any));
        assert_eq!(t.lookup("1234", None, "7").map(|e| e.id), Some(line_only));
        assert!(t.lookup("9999", None, "0").is_none());
    }

    #[test]
    fn keys_survive_storage_and_require_encryption_needs_a_key() {
        let conn = Connection::open_in_memory().expect("db");
        super::super::schema::migrate(&conn).expect("schema");
        let mut s = spec("1234", "", "");
        s.key = Some(Key::from_ascii("0123456789abcdef").expect("key"));
        s.require_encryption = true;
        upsert(&conn, &s, &crate::store::sealed::test_key()).expect("insert");
        let t = load(&conn, &crate::store::sealed::test_key()).expect("load");
        let e = t.lookup("1234", None, "0").expect("found");
        assert_eq!(e.policy.key.as_ref().map(|k| k.format()), Some(KeyFormat::Ascii));
        let mut bad = spec("5678", "", "");
        bad.require_encryption = true;
        assert!(upsert(&conn, &bad, &crate::store::sealed::test_key()).is_err());
    }
}
