//! DC-09 account keys at rest: sealed with AES-256-GCM under a key kept in its own file.
//!
//! A transmitter's AES key (16, 24 or 32 bytes) is stored in `accounts.dc09_key` as
//! `nonce (12 random bytes) ‖ ciphertext ‖ tag (16)`, with `key_sealed = 1`. The associated data
//! binds the ciphertext to its row (account, receiver, line and key format), so a sealed key
//! copied onto another account does not open there. The sealing key is a key file like the
//! pepper (`store.keys_file`, default `<store.path>.keys`, 32 random bytes as hex, owner-only;
//! `crate::keyfile`): a copy of the database alone holds no usable DC-09 key.
//!
//! - The daemon loads the sealing key before the account table, opens every key as the table
//!   loads ([`super::accounts::load`]) and seals the keys an older version stored in plaintext
//!   (schema 14 marks them `key_sealed = 0`) with `secure_delete` on, then truncates the WAL, so
//!   the plaintext is overwritten rather than left in free pages or old WAL frames
//!   ([`seal_plaintext_keys`]).
//! - `meldkamer import` seals as it writes ([`super::accounts::upsert`]).
//! - A missing keys file while sealed keys exist stops the start ([`SealKeyError::Lost`]): a new
//!   file could open none of them. Recovery: restore the file; or, if it is lost,
//!   `meldkamer import --replace-lost-keys FILE…` with the keyed accounts' records: a new keys
//!   file is made, every key that does not open is removed (its account disabled) and the
//!   records seal their keys again ([`forget_unopenable`]).
//!
//! Neither key ever reaches a log, an error or `Debug`: errors name files and accounts only.

use std::path::{Path, PathBuf};

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use zeroize::Zeroizing;

use super::StoreError;
use crate::keyfile::{self, KEY_LEN, KeyFileError};

/// Bytes a sealed key has beyond the key itself (nonce and tag).
pub const OVERHEAD: usize = NONCE_LEN + 16;
const NONCE_LEN: usize = 12;
/// How errors name the keys file.
const WHAT: &str = "keys file";

/// The key that seals the DC-09 account keys. No `Display`, `Clone` or `Serialize`; `Debug`
/// shows the id only; its key schedule is wiped when dropped.
pub struct SealKey {
    id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The associated data of a sealed key: what it belongs to.
pub fn associated_data(account: &str, receiver: &str, line: &str, format: &str) -> Vec<u8> {
    let mut out = b"meldkamer dc09 key v1\0".to_vec();
    for s in [account, receiver, line, format] {
        out.extend_from_slice(&(s.len() as u64).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

impl SealKey {
    /// A sealing key from its bytes.
    pub fn from_bytes(key: &[u8; KEY_LEN]) -> SealKey {
        let id = keyfile::key_id(b"meldkamer keys file id v1\0", key);
        // AES-256 takes exactly 32 bytes: this cannot fail.
        let cipher = match Aes256Gcm::new_from_slice(key) {
            Ok(c) => c,
            Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
        };
        SealKey { id, cipher }
    }

    /// The key's public id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `plain` sealed with a fresh random nonce: nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| StoreError::Seal)?;
        let mut buf = Zeroizing::new(plain.to_vec());
        self.cipher
            .encrypt_in_place(&nonce.into(), aad, &mut *buf)
            .map_err(|_| StoreError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// The plaintext of a sealed value, if it opens with this key and `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (nonce, body) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let mut buf = Zeroizing::new(body.to_vec());
        self.cipher.decrypt_in_place(&nonce.into(), aad, &mut *buf).ok()?;
        Some(buf)
    }
}

/// The sealing key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SealKeyError {
    /// The file is unusable (permissions, format, I/O).
    #[error(transparent)]
    File(#[from] KeyFileError),
    /// The file is gone while keys are sealed with it.
    #[error(
        "keys file {path} is missing, but {sealed} DC-09 account keys in the database are sealed with it: restore the \
         file from its backup; or, if it is lost, import the records of every keyed account again with \
         `meldkamer import --replace-lost-keys FILE…` (a keyed account left out is disabled)"
    )]
    Lost {
        /// The file.
        path: PathBuf,
        /// Keys sealed.
        sealed: i64,
    },
    /// Reading the database failed.
    #[error("reading the accounts")]
    Store(#[from] StoreError),
}

fn sealed_count(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM accounts WHERE key_sealed = 1 AND dc09_key IS NOT NULL",
        [],
        |r| r.get(0),
    )?)
}

/// The sealing key from `path` for the database `conn` is open on: read when the file is there;
/// created (owner-only) when missing and no key is sealed yet, or when `replace_lost`; refused
/// when missing and keys are sealed. The bool: the file was created.
pub fn load_key(path: &Path, conn: &Connection, replace_lost: bool) -> Result<(SealKey, bool), SealKeyError> {
    if !keyfile::exists(WHAT, path)? {
        let sealed = sealed_count(conn)?;
        if sealed > 0 && !replace_lost {
            return Err(SealKeyError::Lost {
                path: path.to_path_buf(),
                sealed,
            });
        }
    }
    let (key, created) = keyfile::read_or_create(WHAT, path)?;
    Ok((SealKey::from_bytes(&key), created))
}

/// [`load_key`] for a configuration, logging a new file.
pub fn key_from_config(
    cfg: &crate::config::Config,
    conn: &Connection,
    replace_lost: bool,
) -> Result<SealKey, SealKeyError> {
    let path = cfg.store.keys_path();
    let (key, created) = load_key(&path, conn, replace_lost)?;
    if created {
        tracing::warn!(
            path = %path.display(), key_id = key.id(),
            "created a new keys file for the DC-09 account keys (owner-only); back it up apart from the database"
        );
    }
    Ok(key)
}

/// Seal every key an older version stored in plaintext. Runs with `secure_delete` on (the old
/// cells are overwritten with zeros) and truncates the WAL afterwards. Returns how many.
pub fn seal_plaintext_keys(conn: &mut Connection, key: &SealKey) -> Result<usize, StoreError> {
    let plain: i64 = conn.query_row(
        "SELECT count(*) FROM accounts WHERE key_sealed = 0 AND dc09_key IS NOT NULL",
        [],
        |r| r.get(0),
    )?;
    if plain == 0 {
        return Ok(0);
    }
    let before: i64 = conn.query_row("PRAGMA secure_delete", [], |r| r.get(0))?;
    conn.pragma_update(None, "secure_delete", 1)?;
    let sealed = (|| -> Result<usize, StoreError> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let rows: Vec<(i64, String, String, String, Zeroizing<Vec<u8>>, String)> = tx
            .prepare(
                "SELECT id, account, receiver, line, dc09_key, key_format FROM accounts
                 WHERE key_sealed = 0 AND dc09_key IS NOT NULL",
            )?
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    Zeroizing::new(r.get(4)?),
                    r.get(5)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        for (id, account, receiver, line, k, format) in &rows {
            let blob = key.seal(k, &associated_data(account, receiver, line, format))?;
            tx.execute(
                "UPDATE accounts SET dc09_key = ?1, key_sealed = 1 WHERE id = ?2",
                params![blob, id],
            )?;
        }
        tx.commit()?;
        Ok(rows.len())
    })();
    let restored = conn.pragma_update(None, "secure_delete", before);
    let n = sealed?;
    restored?;
    // The old pages may sit in the WAL: copy the sealed ones over the database and empty it.
    let _: (i64, i64, i64) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(n)
}

/// Remove every sealed key that does not open with `key` (a lost keys file): the key and the
/// encryption requirement go, and the account is disabled until its records are imported
/// again. Returns the accounts affected.
pub fn forget_unopenable(tx: &Transaction<'_>, key: &SealKey) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(i64, String, String, String, Vec<u8>, String)> = tx
        .prepare(
            "SELECT id, account, receiver, line, dc09_key, key_format FROM accounts
             WHERE key_sealed = 1 AND dc09_key IS NOT NULL",
        )?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut lost = Vec::new();
    for (id, account, receiver, line, blob, format) in rows {
        if key
            .open(&blob, &associated_data(&account, &receiver, &line, &format))
            .is_none()
        {
            tx.execute(
                "UPDATE accounts SET dc09_key = NULL, key_format = NULL, key_sealed = 0, require_encryption = 0,
                     enabled = 0 WHERE id = ?1",
                [id],
            )?;
            lost.push(account);
        }
    }
    Ok(lost)
}

/// The sealed key of one account row, if it has one (for tests and tools).
pub fn stored_blob(conn: &Connection, account: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT dc09_key FROM accounts WHERE account = ?1 AND key_sealed = 1",
            [account],
            |r| r.get(0),
        )
        .optional()?)
}

/// A fixed key for unit tests.
#[cfg(test)]
pub(crate) fn test_key() -> SealKey {
    SealKey::from_bytes(&[0x5e; KEY_LEN])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_with_its_key_and_its_row() {
        let k = SealKey::from_bytes(&[3; KEY_LEN]);
        let aad = associated_data("1234", "", "", "hex");
        let plain = [0x2b_u8; 16];
        let a = k.seal(&plain, &aad).expect("seal");
        let b = k.seal(&plain, &aad).expect("seal");
        assert_eq!(a.len(), 16 + OVERHEAD);
        assert_ne!(a, b, "a fresh nonce every time");
        assert!(!a.windows(16).any(|w| w == plain));
        assert_eq!(k.open(&a, &aad).as_deref().map(Vec::as_slice), Some(&plain[..]));
        assert!(
            k.open(&a, &associated_data("1235", "", "", "hex")).is_none(),
            "another account"
        );
        assert!(
            k.open(&a, &associated_data("1234", "", "", "ascii")).is_none(),
            "another format"
        );
        assert!(
            SealKey::from_bytes(&[4; KEY_LEN]).open(&a, &aad).is_none(),
            "another key"
        );
        let mut flipped = a.clone();
        flipped[20] ^= 1;
        assert!(k.open(&flipped, &aad).is_none(), "a changed byte");
        assert!(k.open(&a[..10], &aad).is_none());
        assert!(!format!("{k:?}").contains("0303"));
    }
}
