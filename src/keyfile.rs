//! Key files: 32 random bytes as 64 hex digits on one line, in a file only its owner may read.
//! The pepper of the phone codes, the audit key and the key that seals the DC-09 account keys
//! are each kept like this, outside the database, so a copy of the database alone reveals none
//! of what they protect.
//!
//! - A key file group or others may access is refused (nothing starts), as is one that is not
//!   a regular file or does not hold exactly 64 hex digits. Errors name the file, never its
//!   content.
//! - [`read_or_create`] makes a missing file: 32 bytes from the operating system, written with
//!   `create_new` and mode 0600, synced. Whether a missing file may be made is the caller's
//!   decision: a file that protects data already stored (sealed keys, keyed audit rows,
//!   verifiers) must be restored, not replaced.
//! - The bytes live in [`Zeroizing`] buffers: wiped when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Bytes in a key.
pub const KEY_LEN: usize = 32;

/// A key file that cannot be used. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or creating failed.
    #[error("{what} {path}")]
    Io {
        /// Which key.
        what: &'static str,
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read or write it.
    #[error("{what} {path} has permissions {mode:04o}: it must be readable by its owner only (chmod 600 or 400)")]
    Permissions {
        /// Which key.
        what: &'static str,
        /// File.
        path: PathBuf,
        /// The mode bits found.
        mode: u32,
    },
    /// Not a regular file.
    #[error("{what} {path} is not a regular file")]
    NotAFile {
        /// Which key.
        what: &'static str,
        /// File.
        path: PathBuf,
    },
    /// Not 64 hex digits.
    #[error("{what} {path} does not hold 64 hex digits (32 bytes)")]
    Format {
        /// Which key.
        what: &'static str,
        /// File.
        path: PathBuf,
    },
}

/// Whether a key file is there (a dangling symbolic link counts as there: it is refused when
/// read, never replaced).
pub fn exists(what: &'static str, path: &Path) -> Result<bool, KeyFileError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(KeyFileError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Read a key file; refuse one that group or others may access.
pub fn read(what: &'static str, path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyFileError> {
    let io = |source| KeyFileError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile {
            what,
            path: path.to_path_buf(),
        });
    }
    if let Some(mode) = crate::hardening::others_may_use(&meta) {
        return Err(KeyFileError::Permissions {
            what,
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = Zeroizing::new(std::fs::read(path).map_err(io)?);
    let trimmed = text.trim_ascii();
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if trimmed.len() != 2 * KEY_LEN || hex::decode_to_slice(trimmed, key.as_mut_slice()).is_err() {
        return Err(KeyFileError::Format {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(key)
}

/// Read the key file, creating it (owner-only, 32 random bytes) when it does not exist.
/// Returns whether it was created.
pub fn read_or_create(what: &'static str, path: &Path) -> Result<(Zeroizing<[u8; KEY_LEN]>, bool), KeyFileError> {
    if exists(what, path)? {
        return Ok((read(what, path)?, false));
    }
    let io = |source| KeyFileError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(key.as_mut_slice())
        .map_err(|_| io(std::io::Error::other("no randomness from the operating system")))?;
    let mut f = match crate::hardening::private_file().write(true).create_new(true).open(path) {
        Ok(f) => f,
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok((read(what, path)?, false)),
        Err(source) => return Err(io(source)),
    };
    let mut text = Zeroizing::new(hex::encode(key.as_slice()));
    text.push('\n');
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(io)?;
    drop(f);
    Ok((read(what, path)?, true))
}

/// A public id for a key: the first 8 bytes of a SHA-256 over `domain` and the key, hex. Tells
/// nothing of the key; lets a stored item name the key it needs.
pub fn key_id(domain: &[u8], key: &[u8; KEY_LEN]) -> String {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(key);
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_owner_only_then_read_and_refused_when_others_may_read() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("k");
        assert!(!exists("test key", &p).expect("exists"));
        let (a, created) = read_or_create("test key", &p).expect("create");
        assert!(created);
        let (b, created) = read_or_create("test key", &p).expect("read");
        assert!(!created);
        assert_eq!(a.as_slice(), b.as_slice());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o604)).expect("chmod");
            let e = read("test key", &p).expect_err("refused");
            assert!(matches!(e, KeyFileError::Permissions { mode: 0o604, .. }), "{e}");
            assert!(e.to_string().starts_with("test key "), "{e}");
        }
        let bad = dir.path().join("bad");
        crate::hardening::write_private_atomically(&bad, b"0123 not hex").expect("write");
        let e = read("test key", &bad).expect_err("refused");
        assert!(matches!(e, KeyFileError::Format { .. }));
        assert!(!e.to_string().contains("0123"));
        assert_eq!(key_id(b"d", &[1; 32]).len(), 16);
        assert_ne!(key_id(b"d", &[1; 32]), key_id(b"e", &[1; 32]));
    }
}
