//! Records files: what `meldkamer import` reads (TOML), validated completely before anything is
//! written, then applied in one transaction (all or nothing) and idempotently (re-import
//! updates rows, never duplicates them). Errors name the line and the field.

use std::ops::Range;

use rusqlite::Connection;
use serde::Deserialize;

use crate::protocol::crypto::{Key, KeyFormat};
use crate::protocol::frame::Quirks;
use crate::store::StoreError;
use crate::store::accounts::{self, AccountSpec};

/// An import that cannot be applied. Never contains a key or code.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the file failed.
    #[error("cannot read {path}")]
    Read {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML or an unknown field.
    #[error("{origin}: {message}")]
    Syntax {
        /// File.
        origin: String,
        /// Parser message with line and column.
        message: String,
    },
    /// A value is not acceptable.
    #[error("{origin}, line {line}: {what}: {field}: {problem}")]
    Invalid {
        /// File.
        origin: String,
        /// 1-based line of the entry.
        line: usize,
        /// Which entry, e.g. `account 1234`.
        what: String,
        /// Field name.
        field: &'static str,
        /// What is wrong (no secret values).
        problem: String,
    },
    /// The database refused.
    #[error("writing to the database")]
    Store(#[from] StoreError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    account: Vec<toml::Spanned<AccountRow>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountRow {
    account: String,
    #[serde(default)]
    receiver: String,
    #[serde(default)]
    line: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_format: Option<String>,
    /// Default: true when a key is given (a keyed account refuses plain frames unless this is
    /// explicitly false, e.g. during a migration window).
    #[serde(default)]
    require_encryption: Option<bool>,
    #[serde(default)]
    quirks: Vec<String>,
    #[serde(default)]
    check_plain_timestamp: bool,
    #[serde(default)]
    ack_separator: bool,
    #[serde(default = "yes")]
    enabled: bool,
}

// The key must never show up in a Debug print of a row.
impl std::fmt::Debug for AccountRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRow")
            .field("account", &self.account)
            .field("receiver", &self.receiver)
            .field("line", &self.line)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

fn yes() -> bool {
    true
}

/// Validated contents of a records file.
#[derive(Debug, Default)]
pub struct Records {
    /// Accounts.
    pub accounts: Vec<AccountSpec>,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Accounts written (inserted or updated).
    pub accounts: usize,
}

fn line_of(text: &str, span: Range<usize>) -> usize {
    text[..span.start.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parse and validate a TOML records file.
pub fn parse_toml(text: &str, origin: &str) -> Result<Records, ImportError> {
    let file: File = toml::from_str(text).map_err(|e| ImportError::Syntax {
        origin: origin.to_string(),
        message: e.to_string(),
    })?;
    let mut out = Records::default();
    let mut seen = std::collections::HashSet::new();
    for item in file.account {
        let line = line_of(text, item.span());
        let row = item.into_inner();
        let invalid = |field: &'static str, problem: String| ImportError::Invalid {
            origin: origin.to_string(),
            line,
            what: format!("account {}", row.account),
            field,
            problem,
        };
        if !(3..=16).contains(&row.account.len()) || !is_hex(&row.account) {
            return Err(invalid("account", "must be 3 to 16 hex digits (0-9, A-F)".into()));
        }
        if !row.receiver.is_empty() && (row.receiver.len() > 6 || !is_hex(&row.receiver)) {
            return Err(invalid(
                "receiver",
                "must be 1 to 6 hex digits, or empty for any".into(),
            ));
        }
        if !row.line.is_empty() && (row.line.len() > 6 || !is_hex(&row.line)) {
            return Err(invalid("line", "must be 1 to 6 hex digits, or empty for any".into()));
        }
        let format = match row.key_format.as_deref() {
            None | Some("hex") => KeyFormat::Hex,
            Some("ascii") => KeyFormat::Ascii,
            Some(other) => return Err(invalid("key_format", format!("{other:?} is not \"hex\" or \"ascii\""))),
        };
        let key = match &row.key {
            Some(k) => Some(Key::parse(k, format).map_err(|e| invalid("key", e.to_string()))?),
            None if row.key_format.is_some() => return Err(invalid("key_format", "given without a key".into())),
            None => None,
        };
        let require_encryption = row.require_encryption.unwrap_or(key.is_some());
        if require_encryption && key.is_none() {
            return Err(invalid("require_encryption", "needs a key".into()));
        }
        let mut quirks = Quirks::NONE;
        for q in &row.quirks {
            match q.as_str() {
                "crc_binary" => quirks.crc_binary = true,
                "cr_in_crc" => quirks.cr_in_crc = true,
                "trailing_nul" => quirks.trailing_nul = true,
                other => {
                    return Err(invalid(
                        "quirks",
                        format!("unknown quirk {other:?} (known: crc_binary, cr_in_crc, trailing_nul)"),
                    ));
                }
            }
        }
        if !seen.insert((row.account.clone(), row.receiver.clone(), row.line.clone())) {
            return Err(invalid(
                "account",
                "listed twice with the same receiver and line".into(),
            ));
        }
        out.accounts.push(AccountSpec {
            account: row.account,
            receiver: row.receiver,
            line: row.line,
            key,
            require_encryption,
            quirks,
            check_plain_timestamp: row.check_plain_timestamp,
            ack_separator: row.ack_separator,
            enabled: row.enabled,
        });
    }
    Ok(out)
}

/// Apply validated records in one transaction and bump the accounts generation so running
/// daemons reload.
pub fn apply(conn: &mut Connection, records: &Records) -> Result<ImportReport, ImportError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(StoreError::from)?;
    for a in &records.accounts {
        accounts::upsert(&tx, a)?;
    }
    accounts::bump_generation(&tx)?;
    tx.commit().map_err(StoreError::from)?;
    Ok(ImportReport {
        accounts: records.accounts.len(),
    })
}

/// The demo data set loaded into an empty database on first start.
pub const DEMO_RECORDS: &str = include_str!("../../fixtures/demo/records.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_records_are_valid() {
        let r = parse_toml(DEMO_RECORDS, "demo").expect("demo records parse");
        assert!(!r.accounts.is_empty());
    }

    #[test]
    fn errors_name_line_and_field_without_the_key() {
        let text = "[[account]]\naccount = \"1234\"\n\n[[account]]\naccount = \"5678\"\nkey = \"00112233\"\n";
        let e = parse_toml(text, "f.toml").expect_err("short key");
        let msg = e.to_string();
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("account 5678"), "{msg}");
        assert!(msg.contains("key"), "{msg}");
        assert!(!msg.contains("00112233"), "the key must not be echoed: {msg}");
        let e = parse_toml("[[account]]\naccount = \"12\"\n", "f").expect_err("short account");
        assert!(e.to_string().contains("3 to 16 hex"));
        let e = parse_toml("[[account]]\naccount = \"1234\"\nquirk = []\n", "f").expect_err("unknown field");
        assert!(e.to_string().contains("quirk"));
    }

    #[test]
    fn import_is_atomic_and_idempotent() {
        let mut conn = Connection::open_in_memory().expect("db");
        crate::store::schema::migrate(&conn).expect("schema");
        let r = parse_toml(
            "[[account]]\naccount = \"1234\"\n[[account]]\naccount = \"5678\"\n",
            "f",
        )
        .expect("ok");
        apply(&mut conn, &r).expect("first");
        apply(&mut conn, &r).expect("second");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 2);
        assert_eq!(crate::store::accounts::generation(&conn).expect("gen"), 2);
    }
}
